"""Pure: map an LLMDeployment, its scheduler, its plan and a Prometheus snapshot onto the policies' inputs."""

from __future__ import annotations

from dataclasses import replace

from ..api.inferencescheduler import InferenceScheduler
from ..api.llmdeployment import LLMDeployment
from ..api.units import parse_duration, parse_target
from ..planning.placement import node_matches, scheduler_spot_policy
from ..planning.plan import ENGINE, DeploymentPlan
from ..planning.scheduler_ref import slo_policy_in_force
from ..render import labels
from .decide import (Constraints, FleetObservation, Objective, PolicySpec, PoolObservation, Prices,
                     ScaleCondition, SLOTargets, ThresholdRules, Tuning)
from .decide.types import SEED_SCALE_DOWN, SEED_SCALE_UP
from .observe import Snapshot

GPU_RESOURCE = "nvidia.com/gpu"

SCALE_TO_ZERO = "cost-optimization.llm-d.io/scale-to-zero"
MAX_IDLE_MINUTES = "cost-optimization.llm-d.io/max-idle-minutes"
DEFAULT_IDLE_S = 300.0
# Objectives where more is better: their violation is (target - actual) / target.
FLOOR_OBJECTIVES = {"tokens_per_second", "cost_efficient_throughput", "throughput"}
OBJECTIVE_METRICS = {"ttft_p95": "ttft_p95", "itl_p95": "itl_p95", "request_latency_p95": "latency_p95",
                     "tokens_per_second": "tokens_per_s", "gpu_utilization": "gpu_util"}


def slo_policy(llmd: LLMDeployment, scheduler: InferenceScheduler | None):
    """(objectives, scaling block, algorithm) in force: inline sloPolicy first, else the scheduler's."""
    return slo_policy_in_force(llmd, scheduler.spec if scheduler else None)


def policy_spec(llmd: LLMDeployment, scheduler: InferenceScheduler | None, plan: DeploymentPlan,
                spot_available: bool, interval_s: float) -> PolicySpec:
    objectives, scaling, _ = slo_policy(llmd, scheduler)
    targets = {o.name: parse_target(o.target) for o in objectives}
    slo = SLOTargets(ttft_p95_s=targets.get("ttft_p95", SLOTargets.ttft_p95_s),
                     itl_p95_s=targets.get("itl_p95", SLOTargets.itl_p95_s))
    limits = llmd.spec.scaling.constraints if llmd.spec.scaling and llmd.spec.scaling.constraints else None
    pools = {p.role: p for p in plan.pools}
    annotations = llmd.metadata.get("annotations") or {}
    idle = None
    if annotations.get(SCALE_TO_ZERO) == "true":
        idle = float(annotations.get(MAX_IDLE_MINUTES, DEFAULT_IDLE_S / 60)) * 60
    elif any(p.min_replicas == 0 for p in plan.pools):
        idle = DEFAULT_IDLE_S
    constraints = Constraints(
        min_replicas=tuple((role, p.min_replicas) for role, p in pools.items()),
        max_replicas=tuple((role, p.max_replicas) for role, p in pools.items()),
        max_cost_per_hour=limits.max_cost_per_hour if limits else None,
        max_cost_per_request=limits.max_cost_per_request if limits else None,
        max_latency_p95_s=parse_duration(limits.max_latency_p95) if limits and limits.max_latency_p95 else None,
        min_throughput_tokens_per_s=parse_target(limits.min_throughput) if limits and limits.min_throughput else None,
        max_spot_ratio=min(p.spot.max_spot_ratio for p in plan.pools),
        scale_to_zero_idle_s=idle,
    )
    per_replica = plan.tensor_parallel_size
    prices = Prices(on_demand_per_hour=per_replica * (plan.price_on_demand or 0.0),
                    spot_per_hour=per_replica * plan.price_spot if plan.price_spot is not None else None,
                    spot_available=spot_available)
    # the step token budgets the engines run with (the plan renders them as --max-num-batched-tokens)
    budgets = {}
    if "monolithic" in pools:
        budgets["chunk_tokens"] = pools["monolithic"].max_num_batched_tokens
    if "prefill" in pools:
        budgets["prefill_chunk_tokens"] = pools["prefill"].max_num_batched_tokens
    tuning = Tuning(interval_s=interval_s, **budgets)
    if scaling is not None and getattr(scaling, "scale_down_cooldown", None):
        tuning = replace(tuning, scale_down_cooldown_s=parse_duration(scaling.scale_down_cooldown))
    if scaling is not None and getattr(scaling, "burst_hold", None) is not None:
        tuning = replace(tuning, bursty_window_s=parse_duration(scaling.burst_hold))
    return PolicySpec(slo=slo, constraints=constraints, prices=prices, tuning=tuning,
                      threshold=threshold_rules(objectives, scaling))


def threshold_rules(objectives, scaling) -> ThresholdRules:
    """The seed's threshold policy, read from the scheduler's conditions or the inline thresholds."""
    rules = tuple(
        Objective(name=o.name, target=parse_target(o.target), weight=o.weight,
                  direction="floor" if o.name in FLOOR_OBJECTIVES else "ceiling",
                  metric=OBJECTIVE_METRICS.get(o.name, ""))
        for o in objectives
    )
    up, down = SEED_SCALE_UP, SEED_SCALE_DOWN
    if scaling is not None and getattr(scaling, "scale_up_conditions", None):
        up = tuple(ScaleCondition(slo_violation=c.slo_violation, cost_per_request=c.cost_per_request,
                                  urgency=c.urgency, action=c.action) for c in scaling.scale_up_conditions)
    if scaling is not None and getattr(scaling, "scale_down_conditions", None):
        down = tuple(ScaleCondition(slo_violation=c.slo_violation, utilization_below=c.utilization_below,
                                    min_idle_time_s=parse_duration(c.min_idle_time), action=c.action)
                     for c in scaling.scale_down_conditions)
    if scaling is not None and getattr(scaling, "scale_up_threshold", None) is not None:
        up = (ScaleCondition(slo_violation=scaling.scale_up_threshold, urgency="normal"),)
    if scaling is not None and getattr(scaling, "scale_down_threshold", None) is not None:
        # the seed's "scale down if <10% SLO violation" at 0.90: its over-performing rule, violation < -0.1
        down = (ScaleCondition(slo_violation=-(1 - scaling.scale_down_threshold), min_idle_time_s=300.0,
                               action="remove_replicas"),)
    return ThresholdRules(objectives=rules, scale_up=up, scale_down=down)


STALE_AFTER_INTERVALS = 3  # a deployment's newest sample older than this many intervals is stale


def observation(snapshot: Snapshot, namespace: str, name: str, plan: DeploymentPlan, workloads: list[dict],
                now_s: float, interval_s: float, objective_values: dict[str, float], demand: float) -> FleetObservation:
    """The deployment as the policies see it: live replicas from its Deployments, load from Prometheus."""
    dep = snapshot.deployment.get((namespace, name), {})
    pools = []
    for pool in plan.pools:
        mine = [w for w in workloads if w["metadata"]["labels"].get(labels.ROLE_LABEL) == pool.role]
        counts = {c: 0 for c in labels.CAPACITY_TYPES}
        ready = {c: 0 for c in labels.CAPACITY_TYPES}
        for w in mine:
            capacity = w["metadata"]["labels"].get(labels.CAPACITY_LABEL, "on-demand")
            counts[capacity] += w["spec"].get("replicas") or 0
            ready[capacity] += (w.get("status") or {}).get("readyReplicas") or 0
        values = snapshot.pool.get((namespace, name, pool.role), {})
        pools.append(PoolObservation(
            role=pool.role, replicas_on_demand=counts["on-demand"], replicas_spot=counts["spot"],
            ready_on_demand=ready["on-demand"], ready_spot=ready["spot"],
            queue_depth=values.get("queue_depth"), running=values.get("running"), kv_usage=values.get("kv_usage"),
            gpu_util=values.get("gpu_util"),
            tokens_per_s=values.get("pool_prompt_tokens_per_s" if pool.role == "prefill" else "pool_generation_tokens_per_s"),
        ))
    running = sum(p.replicas for p in pools)
    last = dep.get("last_sample_s")
    fresh = snapshot.ok and (
        running == 0  # nothing runs, so nothing to observe: that is not missing data
        or (last is not None and snapshot.evaluated_at - last <= STALE_AFTER_INTERVALS * interval_s
            and "request_rate" in dep)
    )
    note = "" if fresh or not snapshot.ok else stale_metrics_note(last, snapshot, interval_s, "request_rate" in dep)
    return FleetObservation(
        time_s=now_s, pools=tuple(pools), request_rate=dep.get("request_rate"),
        mean_input_tokens=dep.get("mean_input_tokens"), mean_output_tokens=dep.get("mean_output_tokens"),
        prompt_tokens_p95=dep.get("prompt_tokens_p95"),
        ttft_p50_s=dep.get("ttft_p50_s"), ttft_p95_s=dep.get("ttft_p95_s"), itl_p50_s=dep.get("itl_p50_s"),
        itl_p95_s=dep.get("itl_p95_s"), tokens_per_s=dep.get("tokens_per_s"), demand_signal=demand,
        metrics_fresh=bool(fresh), metrics_note=note, objective_values=tuple(sorted(objective_values.items())),
    )


def stale_metrics_note(last_sample_s: float | None, snapshot: Snapshot, interval_s: float, has_rate: bool) -> str:
    """Why a running deployment's metrics cannot be acted on, in words that point at the fix."""
    names = ENGINE["vllm_metrics"]
    if last_sample_s is None:
        return (f"Prometheus has no {names['requests_running'][0]} samples for this deployment: is a PodMonitor "
                f"(or scrape config) selecting its model-server pods?")
    age = snapshot.evaluated_at - last_sample_s
    if age > STALE_AFTER_INTERVALS * interval_s:
        return (f"the newest model-server sample is {age:.0f} s old (more than {STALE_AFTER_INTERVALS} "
                f"intervals of {interval_s:g} s)")
    if not has_rate:
        # the loop has already widened the window up to observe.WIDER_WINDOW_FACTORS x the interval
        return (f"no request rate over the {snapshot.window or 'metrics'} window: rate() needs two samples of "
                f"{names['request_success_total'][0]} in it; check that the model servers export it and are "
                f"scraped at least twice per window, or give a longer --metrics-window")
    return "metrics are stale"


def _draining(node: dict, interruption_taints: list[str]) -> str | None:
    if node["metadata"].get("deletionTimestamp"):
        return "is being deleted"
    for taint in node["spec"].get("taints") or []:
        if taint["key"] in interruption_taints:
            return f"is being drained ({taint['key']})"
    return None


def spot_health(pods: list[dict], nodes: dict[str, dict], interruption_taints: list[str], now_s: float,
                pending_grace_s: float = 0.0, spot_node_expressions: list[dict] | None = None) -> tuple[bool, str]:
    """(spot capacity usable, why not): no schedulable spot node for the pool's GPU, or a spot pod's node
    going away, at once; a spot pod unschedulable once it has waited `pending_grace_s` (--spot-pending-grace:
    the time a node provisioner takes to add a spot node; 0, the default, falls back at the first sight)."""
    if spot_node_expressions is not None:
        if not usable_spot_nodes(nodes, spot_node_expressions, interruption_taints):
            candidates = [n for n in nodes.values()
                          if node_matches(n["metadata"].get("labels") or {}, spot_node_expressions)]
            reasons = sorted({f"{n['metadata']['name']} {_draining(n, interruption_taints)}" for n in candidates})
            return False, ("no schedulable spot node for this GPU" + (": " + "; ".join(reasons[:3]) if reasons else ""))
    for pod in pods:
        if pod["metadata"]["labels"].get(labels.CAPACITY_LABEL) != "spot":
            continue
        node_name = pod["spec"].get("nodeName")
        if node_name:
            node = nodes.get(node_name)
            if node is None:
                return False, f"node {node_name} of spot pod {pod['metadata']['name']} is gone"
            draining = _draining(node, interruption_taints)
            if draining:
                return False, f"spot node {node_name} {draining}"
            continue
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
                since = _epoch(cond.get("lastTransitionTime"))
                waited = None if since is None else now_s - since
                if pending_grace_s <= 0 or (waited is not None and waited >= pending_grace_s):
                    how_long = "" if waited is None else f" for {waited:.0f}s"
                    return False, (f"spot pod {pod['metadata']['name']} unschedulable{how_long}: "
                                   f"{cond.get('message', '')[:160]}")
    return True, ""


# after a fallback, spot must stay usable this long before replicas go back to it: with the spot pods
# gone, a full spot node pool looks usable at once, and going straight back would flap every minute
SPOT_RETURN_HOLD_S = 300.0


def spot_in_force(usable_now: bool, why: str, fallback: dict, now_s: float,
                  hold_s: float = SPOT_RETURN_HOLD_S) -> tuple[bool, str]:
    """(spot usable, why not), given spot_health now and the SpotFallback condition as it stands
    (`fallback`: {} or the condition). A fallback ends `hold_s` after it began, if spot is usable then."""
    if not usable_now:
        return False, why
    if fallback.get("status") == "True":
        since = _epoch(fallback.get("lastTransitionTime"))
        if since is not None and now_s - since < hold_s:
            return False, (f"spot looks usable again; back to spot {hold_s - (now_s - since):.0f} s from now, "
                           f"{hold_s:.0f} s after the fallback began, if it stays so")
    return True, ""


def fallback_strategy(scheduler: InferenceScheduler | None) -> str:
    """The scheduler's spotInstancePolicy.fallbackStrategy; its default (graceful_migration) without one."""
    policy = scheduler_spot_policy(scheduler.spec if scheduler else None)
    return policy.fallback_strategy if policy else "graceful_migration"


def migration_policy(scheduler: InferenceScheduler | None) -> str:
    """The scheduler's spotInstancePolicy.interruption.migrationPolicy; on_demand without one."""
    policy = scheduler_spot_policy(scheduler.spec if scheduler else None)
    return policy.interruption.migration_policy if policy and policy.interruption else "on_demand"


def displaced_spot_pods(pods: list[dict], nodes: dict[str, dict], interruption_taints: list[str]) -> tuple[list[dict], str]:
    """Spot pods whose node is being drained, being deleted or gone, and the first such reason in words."""
    displaced, why = [], ""
    for pod in pods:
        node_name = pod["spec"].get("nodeName")
        if pod["metadata"].get("labels", {}).get(labels.CAPACITY_LABEL) != "spot" or not node_name:
            continue
        node = nodes.get(node_name)
        going = "is gone" if node is None else _draining(node, interruption_taints)
        if going:
            displaced.append(pod)
            why = why or f"spot node {node_name} {going}"
    return displaced, why


def free_gpus(node: dict, pods_on_node: list[dict]) -> int:
    """A node's allocatable nvidia.com/gpu less what the pods bound to it that have not finished request."""
    allocatable = int(((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, 0))
    used = 0
    for pod in pods_on_node:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for container in pod["spec"].get("containers") or []:
            used += int(((container.get("resources") or {}).get("requests") or {}).get(GPU_RESOURCE, 0))
    return allocatable - used


def fits(free_per_node: list[int], gpus_per_replica: list[int]) -> bool:
    """Whether replicas of these GPU counts fit on nodes with this many free GPUs (first fit, largest first:
    a replica's GPUs must sit on one node)."""
    free = sorted(free_per_node, reverse=True)
    for need in sorted(gpus_per_replica, reverse=True):
        slot = next((i for i, f in enumerate(free) if f >= need), None)
        if slot is None:
            return False
        free[slot] -= need
    return True


def usable_spot_nodes(nodes: dict[str, dict], spot_node_expressions: list[dict], interruption_taints: list[str]) -> list[dict]:
    """Spot nodes for the pool's GPU that are not going away."""
    return [n for n in nodes.values() if node_matches(n["metadata"].get("labels") or {}, spot_node_expressions)
            and _draining(n, interruption_taints) is None]


def serving_spot_pods(pods: list[dict], nodes: dict[str, dict]) -> dict[str, int]:
    """Ready spot pods per pool role whose node still exists: those still serving, on a node with an
    interruption notice or not. Pods pending or on a vanished node serve nothing."""
    serving: dict[str, int] = {}
    for pod in pods:
        pod_labels = pod["metadata"].get("labels") or {}
        if pod_labels.get(labels.CAPACITY_LABEL) != "spot" or pod["spec"].get("nodeName") not in nodes:
            continue
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (pod.get("status") or {}).get("conditions") or [])
        if ready and not pod["metadata"].get("deletionTimestamp"):
            role = pod_labels.get(labels.ROLE_LABEL, "monolithic")
            serving[role] = serving.get(role, 0) + 1
    return serving


def spot_kept_while_migrating(current_spot: int, wanted_spot: int, serving_spot: int, on_demand_ready: int,
                              wanted_on_demand: int) -> int:
    """graceful_migration: spot replicas that still serve (on a node with an interruption notice, say)
    are removed only as ready on-demand replicas replace them; removing them first would leave a gap of
    a model server's start-up. Those that serve nothing go at once."""
    if wanted_spot >= current_spot:
        return wanted_spot
    not_yet_ready = max(0, wanted_on_demand - on_demand_ready)
    return max(wanted_spot, min(current_spot, serving_spot, not_yet_ready))


def _epoch(stamp) -> float | None:
    from datetime import datetime
    if not stamp:
        return None
    if hasattr(stamp, "timestamp"):
        return stamp.timestamp()
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
