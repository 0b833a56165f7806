"""The plan for an LLMDeployment: GPUs, parallelism, weight scheme, engine arguments, replicas, cost."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..api.core import Resources, Toleration
from ..api.inferencescheduler import InferenceSchedulerSpec
from ..api.llmdeployment import LLMDeployment, PoolSpec
from ..api.units import parse_quantity
from ..catalog import Catalog, CatalogError, GpuProduct, ModelArchitecture, WeightScheme
from ..catalog.loader import DATA
from . import memory, throughput
from .placement import SpotSplit, allowed_gpus, integer_bounds, offered_products, scheduler_spot_policy, spot_split
from .scheduler_ref import slo_policy_in_force

ENGINE = yaml.safe_load((DATA / "engine.yaml").read_text())
TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)
GIB = memory.GIB


class PlanError(ValueError):
    """A spec that cannot be served as written, with the numbers and the ways out."""


@dataclass(frozen=True)
class PlanOptions:
    """Operator-wide settings the plan depends on."""

    provider: str | None = None
    capacity_convention: str = "karpenter"
    model_server_image: str = ENGINE["image"]
    scheduler: InferenceSchedulerSpec | None = None
    scheduler_ref: str | None = None
    # labels of the cluster's GPU nodes; None offline. Where nodes match a pool's nodeSelector, the GPU
    # product is chosen among theirs: a selector such as `cost-tier: spot` says nothing of the product
    gpu_nodes: tuple[dict[str, str], ...] | None = field(default=None, compare=False)
    # the product the deployment runs on now (status.plan.gpuProduct): kept while no node offers a choice,
    # so that losing the nodes of one capacity type for a while does not move every replica to another GPU
    current_gpu_product: str | None = None


@dataclass(frozen=True)
class PoolPlan:
    role: str  # monolithic | prefill | decode
    replicas: int
    min_replicas: int
    max_replicas: int
    replicas_owner: str  # spec | hpa | slo-loop
    spot: SpotSplit
    spot_replicas: int
    on_demand_replicas: int
    gpus_per_replica: int
    max_num_seqs: int
    max_model_len: int
    max_num_batched_tokens: int
    kv_capacity_tokens: int
    engine_args: list[str]
    resources: Resources | None
    node_selector: dict[str, str]
    tolerations: list[Toleration]
    affinity: dict[str, Any] | None
    cost_per_hour: float | None
    scaling: Any = None  # PoolScaling / AutoscalingSpec for HPA-owned pools

    def to_dict(self) -> dict:
        return {
            "role": self.role,
            "replicas": self.replicas,
            "replicas_owner": self.replicas_owner,
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "spot_replicas": self.spot_replicas,
            "on_demand_replicas": self.on_demand_replicas,
            "spot_reason": self.spot.why,
            "gpus_per_replica": self.gpus_per_replica,
            "max_num_seqs": self.max_num_seqs,
            "max_model_len": self.max_model_len,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "kv_capacity_tokens": self.kv_capacity_tokens,
            "cost_per_hour_usd": self.cost_per_hour,
            "engine_args": self.engine_args,
        }


@dataclass(frozen=True)
class DeploymentPlan:
    name: str
    namespace: str
    model: ModelArchitecture
    mode: str
    gpu: GpuProduct
    tensor_parallel_size: int
    scheme: WeightScheme
    kv_cache_dtype: str
    checkpoint: str
    fit: memory.MemoryFit
    image: str
    pools: list[PoolPlan]
    price_on_demand: float | None
    price_spot: float | None
    price_note: str
    notes: list[str] = field(default_factory=list)

    @property
    def cost_per_hour(self) -> float | None:
        costs = [p.cost_per_hour for p in self.pools]
        return None if any(c is None for c in costs) else round(sum(costs), 4)

    @property
    def sized_by_slo_loop(self) -> bool:
        """The SLO loop owns the replica count of at least one pool."""
        return any(p.replicas_owner == "slo-loop" for p in self.pools)

    def to_dict(self) -> dict:
        """The plan as `plan --output json` prints it; scripts rely on these keys."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "model": self.model.name,
            "mode": self.mode,
            "quantization": self.scheme.quantization,
            "weight_scheme": self.scheme.name,
            "kv_cache_dtype": self.kv_cache_dtype,
            "checkpoint": self.checkpoint,
            "cost_per_hour_usd": self.cost_per_hour,
            "price": {"on_demand": self.price_on_demand, "spot": self.price_spot, "source": self.price_note},
            "notes": self.notes,
            "pools": [
                {
                    **pool.to_dict(),
                    "gpu_product": self.gpu.product,
                    "tensor_parallel_size": self.tensor_parallel_size,
                    "weights_bytes": self.fit.weights_bytes,
                    "kv_bytes_per_token": self.fit.kv_bytes_per_token,
                }
                for pool in self.pools
            ],
        }


def _gpu_request(resources: Resources | None) -> int | None:
    for block in (resources.limits, resources.requests) if resources else ():
        if block and "nvidia.com/gpu" in block:
            return int(parse_quantity(block["nvidia.com/gpu"]))
    return None


def resolve_model(spec_model, catalog: Catalog) -> ModelArchitecture:
    """The catalog's architecture, overlaid with spec.model.architecture when given."""
    given = spec_model.architecture
    try:
        base = catalog.model(spec_model.name)
    except CatalogError:
        if given is None:
            raise
        base = None
    if given is None:
        return base
    fields = given.model_dump(exclude_none=True)
    fields.setdefault("head_dim", fields["hidden_size"] // fields["attention_heads"])
    if base is not None:
        return ModelArchitecture(**{**base.__dict__, **fields})
    return ModelArchitecture(name=spec_model.name, **fields)


def weight_schemes(quantization: str, precision, catalog: Catalog) -> list[WeightScheme]:
    """Schemes that serve a quantization type, best kernel first."""
    by_type = {
        "bf16": ["bf16", "fp16"],
        "fp16": ["fp16"],
        "fp8": ["fp8", "fp8-marlin"],
        "int8": ["int8-w8a8", "int8-gptq"],
        "int4": ["int4-w4a16", "int4-awq", "int4-gptq"],
        "mixed": ["mixed"],
    }[quantization]
    if quantization == "int8" and precision is not None and precision.activation_dtype in ("float16", "bfloat16"):
        by_type = ["int8-gptq"]  # weight-only int8
    return [catalog.schemes[name] for name in by_type]


def checkpoint_for(model: ModelArchitecture, scheme: WeightScheme, spec_model) -> str | None:
    """The checkpoint to load: the user's, else the catalog's for this scheme."""
    quantization = spec_model.quantization
    if quantization and quantization.checkpoint:
        return quantization.checkpoint
    if scheme.online or scheme.quantization in ("bf16", "fp16"):
        return spec_model.source or model.checkpoints.get("bf16") or spec_model.name
    return model.checkpoints.get(scheme.name)


@dataclass(frozen=True)
class _PoolRequest:
    role: str
    pool: PoolSpec | None
    resources: Resources | None
    node_selector: dict[str, str]
    tolerations: list[Toleration]
    affinity: dict | None
    affinity_notes: tuple[str, ...]
    max_num_seqs: int
    max_model_len: int
    batch_requested: bool


def _pool_requests(llmd: LLMDeployment, model: ModelArchitecture) -> list[_PoolRequest]:
    spec = llmd.spec
    serving = spec.serving
    mode = serving.mode if serving else "monolithic"
    base_seqs = serving.batch_size if serving and serving.batch_size else None
    base_len = serving.max_sequence_length if serving and serving.max_sequence_length else None
    requests = []
    roles = ["prefill", "decode"] if mode == "disaggregated" else ["monolithic"]
    for role in roles:
        pool = getattr(serving, role, None) if mode == "disaggregated" else None
        seqs = (pool.batch_size if pool and pool.batch_size else None) or base_seqs
        length = (pool.max_sequence_length if pool and pool.max_sequence_length else None) or base_len
        affinity, affinity_notes = integer_bounds((pool.affinity if pool and pool.affinity else None) or spec.affinity)
        requests.append(_PoolRequest(
            role=role,
            pool=pool,
            resources=(pool.resources if pool and pool.resources else None) or spec.resources,
            node_selector={**(spec.node_selector or {}), **((pool.node_selector if pool else None) or {})},
            tolerations=[*(spec.tolerations or []), *((pool.tolerations if pool else None) or [])],
            affinity=affinity,
            affinity_notes=tuple(affinity_notes),
            max_num_seqs=seqs or ENGINE["default_max_num_seqs"],
            max_model_len=length or min(model.max_context, ENGINE["default_max_model_len"]),
            batch_requested=seqs is not None,
        ))
    return requests


def _kv_tokens_needed(request: _PoolRequest) -> int:
    """KV tokens a replica must hold: the requested batch at full length, else one full-length sequence."""
    return request.max_model_len * (request.max_num_seqs if request.batch_requested else 1)


def plan_deployment(
    llmd: LLMDeployment, catalog: Catalog, options: PlanOptions = PlanOptions(), search_ways_out: bool = True
) -> DeploymentPlan:
    """Choose GPU product, tensor parallelism and weight scheme for every pool, then replicas and cost.

    Raises PlanError naming the numbers and the ways out when nothing fits.
    """
    spec = llmd.spec
    name = llmd.metadata.get("name", "")
    namespace = llmd.metadata.get("namespace", "default")
    try:
        model = resolve_model(spec.model, catalog)
    except CatalogError as error:
        raise PlanError(f"spec.model.name: {error}") from None
    quantization = spec.model.quantization.type if spec.model.quantization else "bf16"
    precision = spec.model.quantization.precision if spec.model.quantization else None
    kv_dtype = spec.model.quantization.kv_cache_dtype if spec.model.quantization else "auto"
    utilization = (spec.serving.gpu_memory_utilization if spec.serving else None) or ENGINE["default_gpu_memory_utilization"]
    requests = _pool_requests(llmd, model)
    if any(r.max_model_len > model.max_context for r in requests):
        longest = max(r.max_model_len for r in requests)
        raise PlanError(f"maxSequenceLength {longest} exceeds {model.name}'s context of {model.max_context} tokens; lower it")

    products, constraint = allowed_gpus(catalog, requests[0].node_selector)
    if not products:
        raise PlanError(f"nodeSelector {constraint} names no GPU product in the catalog ({', '.join(catalog.gpus)})")
    splits = [spot_split(catalog, r.resources, r.node_selector, r.tolerations, scheduler_spot_policy(options.scheduler)) for r in requests]
    offered = offered_products(catalog, options.capacity_convention, options.gpu_nodes,
                               [(r.node_selector, split) for r, split in zip(requests, splits)])
    on_nodes = [p for p in products if p.product in offered]
    running = [p for p in products if p.product == options.current_gpu_product]
    inventory_note = None
    if on_nodes and len(on_nodes) < len(products):
        products = on_nodes
        selectors = "; ".join(dict.fromkeys(_labels(r.node_selector) for r in requests if r.node_selector))
        inventory_note = (f"GPU products limited to those the cluster's nodes offer for nodeSelector "
                          f"{selectors or '(none)'} and the spot split: {', '.join(sorted(offered))}")
    elif not on_nodes and running and len(products) > 1:
        products = running
        inventory_note = (f"no GPU node offers every pool now; keeping {options.current_gpu_product}, "
                          f"the product it runs on")
    fixed_tp = _gpu_request(requests[0].resources)
    sizes = [fixed_tp] if fixed_tp else [tp for tp in TENSOR_PARALLEL_SIZES if model.attention_heads % tp == 0]
    needed = max(_kv_tokens_needed(r) for r in requests)
    element_bytes = catalog.kv_cache_bytes[kv_dtype]
    workload = throughput.planning_workload(slo_policy_in_force(llmd, options.scheduler)[0])
    spot_ratio = splits[0].max_spot_ratio
    chunk_tokens = ENGINE["max_num_batched_tokens"][requests[0].role]

    candidates, misses, missing_checkpoints = [], [], []
    for gpu in products:
        price = catalog.price(gpu.product, options.provider)
        if price is None and constraint is None and inventory_note is None:
            continue  # unpriced products are chosen only when the user or the cluster's nodes name them
        scheme = next((s for s in weight_schemes(quantization, precision, catalog)
                       if gpu.compute_capability >= s.min_compute_capability
                       and checkpoint_for(model, s, spec.model)), None)
        if scheme is None:
            missing_checkpoints.append(gpu)
            continue
        for tp in sizes:
            layout = memory.fit(model, scheme, element_bytes, gpu, tp, utilization, catalog)
            if layout.kv_capacity_tokens >= needed:
                cost = (price.on_demand if price else math.inf) * tp
                per_token, rate = throughput.cost_per_token(model, gpu.product, scheme, tp, price, spot_ratio,
                                                           workload, chunk_tokens)
                candidates.append((per_token, cost, tp, gpu.memory_bytes, gpu, scheme, layout, price, rate))
                break
            misses.append(layout)
    if not candidates and constraint and missing_checkpoints and not misses and quantization not in ("bf16", "fp16"):
        # The user pinned a GPU that cannot run this weight format: serve 16-bit on it rather than nothing.
        fallback = _with_quantization(llmd, "bf16")
        try:
            found = plan_deployment(fallback, catalog, options, search_ways_out=False)
        except PlanError:
            found = None
        if found is not None:
            gpu = found.gpu
            found.notes.insert(0, (
                f"quantization fallback: {quantization} cannot run on {gpu.product} (compute capability "
                f"{gpu.compute_capability}) with a checkpoint the catalog knows; serving {found.scheme.name} instead "
                f"(same GPUs, {found.fit.weights_bytes / GIB:.1f} GiB of weights). Set spec.model.quantization.checkpoint "
                f"to a checkpoint this GPU runs, or drop nodeSelector {constraint}"))
            return found
    if not candidates:
        reasons = _why_not(model, quantization, needed, misses, missing_checkpoints, utilization)
        ways = [] if not search_ways_out else _ways_out(llmd, catalog, options, quantization, kv_dtype, fixed_tp, constraint)
        raise PlanError(reasons + (". Ways out that fit: " + "; ".join(ways) if ways else ". No single change makes it fit"))
    # cheapest per token at the SLO first; products without a capacity profile after, by $/hour
    candidates.sort(key=lambda c: c[:4])
    _, _, tp, _, gpu, scheme, layout, price, _ = candidates[0]
    checkpoint = checkpoint_for(model, scheme, spec.model)
    notes = [_gpu_choice_note(candidates, workload, spot_ratio)] if len(candidates) > 1 else []
    if inventory_note and (any(r.node_selector for r in requests) or not offered):
        notes.insert(0, inventory_note)
    if scheme.weight_only and quantization == "fp8":
        notes.append(f"{gpu.product} has no FP8 tensor cores: fp8 runs weight-only (memory saving, no speed-up)")
    for request in requests:
        notes += [n for n in request.affinity_notes if n not in notes]
    if price and price.spot_estimated:
        notes.append(f"spot price for {gpu.product} is an estimate ({price.spot}/GPU-h = on-demand x spot_estimate_ratio)")
    pools = [
        _plan_pool(llmd, r, split, model, gpu, tp, scheme, kv_dtype, element_bytes, utilization, checkpoint, price,
                   catalog, options, notes)
        for r, split in zip(requests, splits)
    ]
    return DeploymentPlan(
        name=name, namespace=namespace, model=model, mode=requests[0].role if requests[0].role == "monolithic" else "disaggregated",
        gpu=gpu, tensor_parallel_size=tp, scheme=scheme, kv_cache_dtype=kv_dtype, checkpoint=checkpoint, fit=layout,
        image=(spec.serving.image if spec.serving and spec.serving.image else options.model_server_image),
        pools=pools,
        price_on_demand=price.on_demand if price else None,
        price_spot=price.spot if price else None,
        price_note=f"{price.provider}, {price.date}: {price.source}" if price else f"no price for {gpu.product}",
        notes=notes,
    )


def _labels(selector: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _gpu_choice_note(candidates, workload, spot_ratio) -> str:
    """Why this GPU product: each candidate's cost per token, cheapest first."""
    parts = []
    for per_token, cost, tp, _, gpu, scheme, _, _, rate in candidates[:5]:
        what = f"{gpu.product} x{tp} {scheme.name}"
        if math.isfinite(per_token):
            parts.append(f"{what} ${per_token:.2f}/M output tokens ({rate:.1f} req/s per replica)")
        elif rate == 0 and math.isfinite(cost):
            parts.append(f"{what} misses the targets or has no capacity profile (${cost:.2f}/h)")
        else:
            parts.append(f"{what} unpriced")
    spot = f", {spot_ratio:.0%} on spot" if spot_ratio > 0 else ""
    return f"GPU product chosen by cost per token at the SLO ({workload.describe()}{spot}): " + "; ".join(parts)


def _with_quantization(llmd: LLMDeployment, quantization: str) -> LLMDeployment:
    spec = llmd.spec.model_dump(by_alias=True, exclude_none=True)
    spec["model"]["quantization"] = {**spec["model"].get("quantization", {}), "type": quantization}
    spec["model"]["quantization"].pop("precision", None)
    return LLMDeployment.model_validate({"metadata": llmd.metadata, "spec": spec})


def _why_not(model, quantization, needed, misses, missing_checkpoints, utilization) -> str:
    lines = []
    if misses:
        best = max(misses, key=lambda m: (m.kv_per_gpu_bytes, -m.tensor_parallel_size))
        lines.append(
            f"{model.name} in {quantization} does not fit on {best.tensor_parallel_size} x {best.gpu.product}: "
            f"weights {best.weights_bytes / GIB:.1f} GiB ({best.weights_per_gpu_bytes / GIB:.1f} GiB per GPU) + overhead "
            f"{best.overhead_per_gpu_bytes / GIB:.1f} GiB per GPU + KV cache for {needed} tokens "
            f"({needed * best.kv_bytes_per_token / best.tensor_parallel_size / GIB:.1f} GiB per GPU) > "
            f"{best.usable_per_gpu_bytes / GIB:.1f} GiB usable per GPU ({utilization:.2f} of {best.gpu.memory_bytes / GIB:.0f} GiB)"
        )
    for gpu in missing_checkpoints:
        lines.append(
            f"{quantization} on {gpu.product} (compute capability {gpu.compute_capability}) needs a pre-quantized "
            f"checkpoint the catalog does not have for {model.name}: set spec.model.quantization.checkpoint"
        )
    return "; ".join(lines) or f"no priced GPU product can serve {model.name}"


def _ways_out(llmd, catalog, options, quantization, kv_dtype, fixed_tp, constraint) -> list[str]:
    """Single changes to the spec that make the plan fit, each checked by planning it."""
    spec = llmd.spec.model_dump(by_alias=True, exclude_none=True)
    attempts = []
    if fixed_tp:
        for gpus in (2, 4, 8):
            if gpus > fixed_tp:
                changed = copy.deepcopy(spec)
                for block in ("requests", "limits"):
                    if "nvidia.com/gpu" in changed.get("resources", {}).get(block, {}):
                        changed["resources"][block]["nvidia.com/gpu"] = str(gpus)
                attempts.append((f"resources nvidia.com/gpu: {gpus} (tensor parallelism)", changed))
    for other in ("fp8", "int8", "int4", "bf16"):
        if other != quantization:
            changed = copy.deepcopy(spec)
            changed["model"].setdefault("quantization", {})["type"] = other
            changed["model"]["quantization"].pop("precision", None)
            attempts.append((f"quantization.type: {other}", changed))
    if kv_dtype == "auto":
        changed = copy.deepcopy(spec)
        changed["model"].setdefault("quantization", {})["kvCacheDtype"] = "fp8"
        attempts.append(("quantization.kvCacheDtype: fp8", changed))
    if constraint:
        label = constraint.split("=")[0]
        changed = copy.deepcopy(spec)
        changed.get("nodeSelector", {}).pop(label, None)
        for role in ("prefill", "decode"):
            changed.get("serving", {}).get(role, {}).get("nodeSelector", {}).pop(label, None)
        attempts.append((f"drop nodeSelector {constraint}", changed))
    ways, kinds_found = [], set()
    for label, changed in attempts:
        kind = label.split(":")[0]
        if kind in kinds_found:
            continue  # the smallest change of each kind is enough
        try:
            alternative = LLMDeployment.model_validate({"metadata": llmd.metadata, "spec": changed})
            found = plan_deployment(alternative, catalog, options, search_ways_out=False)
        except (PlanError, ValueError):
            continue
        cost = f", ${found.cost_per_hour:.2f}/h" if found.cost_per_hour is not None else ""
        ways.append(f"{label} ({found.tensor_parallel_size} x {found.gpu.product}, {found.scheme.name}{cost})")
        kinds_found.add(kind)
    return ways


def may_be_loop_owned(spec: dict) -> bool:
    """A cheap look at a raw spec. False means no pool of it can be sized by the SLO loop: every way to
    hand pools to the loop (`_replica_bounds`) goes through one of these fields."""
    return bool(spec.get("scaling") or spec.get("scheduling") or spec.get("schedulerName"))


def _replica_bounds(llmd: LLMDeployment, request: _PoolRequest, options: PlanOptions):
    """(owner, initial replicas, min, max, HPA scaling block) for one pool."""
    spec = llmd.spec
    pool = request.pool
    static = (pool.replicas if pool and pool.replicas is not None else None)
    if static is None:
        static = spec.replicas if spec.replicas is not None else 1
    autoscaling = spec.autoscaling
    if autoscaling and autoscaling.enabled:
        block = getattr(autoscaling, f"{request.role}_scaling", None) if request.role != "monolithic" else None
        block = block or autoscaling
        low = block.min_replicas if block.min_replicas is not None else 1
        high = block.max_replicas if block.max_replicas is not None else max(low, static, 1)
        return "hpa", min(max(static, low), high), low, high, block
    loop_owned = (spec.scaling and spec.scaling.mode == "scheduler_managed") or (
        spec.scheduling and spec.scheduling.slo_policy and spec.scheduling.slo_policy.enabled
    ) or (spec.scheduler_name and options.scheduler and options.scheduler.slo_policy and options.scheduler.slo_policy.enabled)
    if loop_owned:
        low, high = _loop_bounds(llmd, request.role, static)
        return "slo-loop", min(max(static, low), high), low, high, None
    return "spec", static, static, static, None


def _loop_bounds(llmd: LLMDeployment, role: str, static: int) -> tuple[int, int]:
    """(min, max) replicas of one loop-owned pool. Each bound falls back on its own: the pool's block
    (scaling.constraints.prefill/decode), the deployment-wide constraints, the inline sloPolicy.scaling,
    then 1 and the larger of the minimum and the spec's replicas."""
    spec = llmd.spec
    sources = []  # (field path, object holding minReplicas/maxReplicas), most specific first
    constraints = spec.scaling.constraints if spec.scaling else None
    if constraints:
        block = getattr(constraints, role, None) if role in ("prefill", "decode") else None
        if block:
            sources.append((f"spec.scaling.constraints.{role}", block))
        sources.append(("spec.scaling.constraints", constraints))
    if spec.scheduling and spec.scheduling.slo_policy and spec.scheduling.slo_policy.scaling:
        sources.append(("spec.scheduling.sloPolicy.scaling", spec.scheduling.slo_policy.scaling))
    low, low_from = next(((s.min_replicas, f"{path}.minReplicas") for path, s in sources
                          if s.min_replicas is not None), (1, "the default"))
    high, high_from = next(((s.max_replicas, f"{path}.maxReplicas") for path, s in sources
                            if s.max_replicas is not None), (max(low, static, 1), "the default"))
    if low > high:
        # Only fields cross: the default maximum is at least the minimum, and the default minimum 1 is at
        # most any maxReplicas the schema allows.
        fix = f"lower {low_from} to at most {high}, or raise {high_from} to at least {low}"
        own = f"spec.scaling.constraints.{role}"
        if role in ("prefill", "decode") and not (low_from.startswith(own) and high_from.startswith(own)):
            fix += f", or give the {role} pool its own minReplicas and maxReplicas in {own}"
        raise PlanError(f"the {role} pool's minimum, {low_from} {low}, is more than its maximum, {high_from} {high}: "
                        f"the SLO loop cannot size it; {fix}")
    return low, high


def _plan_pool(llmd, request, split, model, gpu, tp, scheme, kv_dtype, element_bytes, utilization, checkpoint, price,
               catalog, options, notes) -> PoolPlan:
    owner, replicas, low, high, scaling = _replica_bounds(llmd, request, options)
    spot, on_demand = split.split(replicas)
    if owner == "hpa" and 0 < high and low == 0:
        notes.append(f"{request.role}: an HPA keeps at least 1 replica; scale to zero needs scaling.mode scheduler_managed")
    layout = memory.fit(model, scheme, element_bytes, gpu, tp, utilization, catalog)
    args = engine_args(llmd, request, model, scheme, kv_dtype, tp, utilization, checkpoint)
    cost = None
    if price:
        cost = round(tp * (spot * price.spot + on_demand * price.on_demand), 4)
    return PoolPlan(
        role=request.role, replicas=replicas, min_replicas=low, max_replicas=high, replicas_owner=owner,
        spot=split, spot_replicas=spot, on_demand_replicas=on_demand, gpus_per_replica=tp,
        max_num_seqs=request.max_num_seqs, max_model_len=request.max_model_len,
        max_num_batched_tokens=batched_tokens(args, request), kv_capacity_tokens=layout.kv_capacity_tokens,
        engine_args=args, resources=request.resources,
        node_selector=request.node_selector, tolerations=request.tolerations, affinity=request.affinity,
        cost_per_hour=cost, scaling=scaling,
    )


def engine_args(llmd, request, model, scheme, kv_dtype, tp, utilization, checkpoint) -> list[str]:
    """vLLM command line for a pool: `vllm serve CHECKPOINT ...`."""
    serving = llmd.spec.serving
    args = [
        "serve", checkpoint,
        "--served-model-name", llmd.spec.model.name,
        "--port", str(serving.port if serving else 8000),
        "--tensor-parallel-size", str(tp),
        "--max-model-len", str(request.max_model_len),
        "--max-num-seqs", str(request.max_num_seqs),
        "--gpu-memory-utilization", f"{utilization:.2f}",
        "--max-num-batched-tokens", str(_planned_budget(request)),
    ]
    if scheme.dtype:
        args += ["--dtype", scheme.dtype]
    if scheme.vllm_quantization:
        args += ["--quantization", scheme.vllm_quantization]
    if kv_dtype == "fp8":
        args += ["--kv-cache-dtype", "fp8"]
    if request.role in ("prefill", "decode"):
        args += ["--kv-transfer-config", ENGINE["kv_transfer_config"]]
    if serving and serving.extra_args:
        args += list(serving.extra_args)
    return args


def _planned_budget(request: _PoolRequest) -> int:
    """engine.yaml's step token budget for the pool's role, raised to --max-num-seqs: a step carries at
    least one token of every running sequence, and vLLM refuses to start with a smaller budget."""
    return max(ENGINE["max_num_batched_tokens"][request.role], request.max_num_seqs)


def batched_tokens(args: list[str], request: _PoolRequest) -> int:
    """The step token budget vLLM runs with: the last --max-num-batched-tokens in its arguments (vLLM
    takes the last value given, so one in spec.serving.extraArgs overrides the planned one)."""
    value = last_flag_value(args, "--max-num-batched-tokens") or str(_planned_budget(request))
    if not value.isdigit() or int(value) < request.max_num_seqs:
        raise PlanError(f"spec.serving.extraArgs: --max-num-batched-tokens {value!r} must be a whole number of "
                        f"tokens of at least the {request.role} pool's --max-num-seqs ({request.max_num_seqs}, "
                        f"batchSize), or vLLM will not start; e.g. --max-num-batched-tokens "
                        f"{_planned_budget(request)}")
    return int(value)


def last_flag_value(args: list[str], flag: str) -> str | None:
    """The value the engine takes for `flag` (`--flag V` or `--flag=V`): argparse keeps the last one."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value
