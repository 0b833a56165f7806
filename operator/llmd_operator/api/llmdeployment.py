"""LLMDeployment (inference.llm-d.io/v1alpha1): one served model and how it is served."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from .base import ApiModel
from .core import Affinity, Condition, Resources, Toleration, affinity_field
from .slo import Objectives
from .units import Duration, Target

GROUP = "inference.llm-d.io"
VERSION = "v1alpha1"
KIND = "LLMDeployment"
PLURAL = "llmdeployments"

QuantizationType = Literal["fp16", "bf16", "fp8", "int8", "int4", "mixed"]


def min_le_max(what: str) -> dict:
    return {
        "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
        "message": f"{what}: minReplicas must be less than or equal to maxReplicas",
    }


SPEC_RULES = [
    {
        "rule": "!(has(self.autoscaling) && self.autoscaling.enabled && has(self.scaling) && self.scaling.mode == 'scheduler_managed')",
        "message": "autoscaling.enabled and scaling.mode scheduler_managed both claim the replica count: pick one",
    },
    {
        "rule": "!(has(self.autoscaling) && self.autoscaling.enabled && has(self.scheduling) && has(self.scheduling.sloPolicy) && self.scheduling.sloPolicy.enabled)",
        "message": "autoscaling.enabled and scheduling.sloPolicy both claim the replica count: pick one",
    },
    {
        "rule": "!(has(self.scaling) && self.scaling.mode == 'hpa') || (has(self.autoscaling) && self.autoscaling.enabled)",
        "message": "scaling.mode hpa needs autoscaling.enabled: true",
    },
    {
        "rule": "!(has(self.scaling) && self.scaling.mode == 'scheduler_managed') || has(self.schedulerName) || (has(self.scheduling) && has(self.scheduling.sloPolicy))",
        "message": "scaling.mode scheduler_managed needs schedulerName or scheduling.sloPolicy",
    },
    {
        # a monolithic deployment has one pool: per-pool bounds there would be silently ignored
        "rule": "!has(self.scaling) || !has(self.scaling.constraints) || (!has(self.scaling.constraints.prefill) && !has(self.scaling.constraints.decode)) || (has(self.serving) && has(self.serving.mode) && self.serving.mode == 'disaggregated')",
        "message": "scaling.constraints.prefill and scaling.constraints.decode apply only with serving.mode: disaggregated; set serving.mode: disaggregated, or bound the single pool with scaling.constraints.minReplicas and maxReplicas",
    },
]
SERVING_RULES = [
    {
        "rule": "self.mode == 'disaggregated' || (!has(self.prefill) && !has(self.decode))",
        "message": "serving.prefill and serving.decode apply only with serving.mode: disaggregated",
    },
]


class ModelArchitecture(ApiModel):
    """The architecture of a model the catalog does not know. Values are in the model's config.json."""

    parameters: int = Field(gt=0)
    """Total parameter count, e.g. 8030261248. For mixture-of-experts models, all experts."""
    layers: int = Field(gt=0)
    """Transformer layers (num_hidden_layers)."""
    hidden_size: int = Field(gt=0)
    """Hidden size (hidden_size)."""
    attention_heads: int = Field(gt=0)
    """Query heads (num_attention_heads)."""
    kv_heads: int = Field(gt=0)
    """Key/value heads (num_key_value_heads); fewer than attention heads with grouped-query attention."""
    head_dim: int | None = Field(default=None, gt=0)
    """Head dimension; default hiddenSize / attentionHeads."""
    max_context: int = Field(gt=0)
    """Longest context the model supports, in tokens (max_position_embeddings)."""
    intermediate_size: int | None = Field(default=None, gt=0)
    """MLP width (intermediate_size), used by the profiler to build the model."""
    vocab_size: int | None = Field(default=None, gt=0)
    """Vocabulary size."""
    experts: int | None = Field(default=None, gt=0)
    """Experts per MoE layer; leave out for dense models."""
    experts_per_token: int | None = Field(default=None, gt=0)
    """Experts routed per token in an MoE layer."""
    tied_embeddings: bool = False
    """The LM head shares the input embedding's weights (tie_word_embeddings)."""
    attention_bias: bool = False
    """The q, k and v projections have biases (Qwen2)."""


class QuantizationPrecision(ApiModel):
    """Per-tensor precision details, as recorded by the quantization tool that produced the checkpoint."""

    format: str | None = None
    """Overall format, e.g. int8, int4, mixed."""
    weight_dtype: str | None = None
    """Weight data type, e.g. int8, int4, float16."""
    activation_dtype: str | None = None
    """Activation data type: int8 means W8A8 kernels, float16 means weight-only quantization."""
    group_size: int | None = Field(default=None, gt=0)
    """Weights per quantization group for group-wise schemes (int4 usually 128); each group stores a 16-bit scale."""
    calibration_dataset: str | None = None
    """Dataset the checkpoint was calibrated on, e.g. c4."""
    calibration_samples: int | None = Field(default=None, gt=0)
    """Calibration sample count."""
    attention_dtype: str | None = None
    """Mixed precision: data type of the attention projections."""
    mlp_dtype: str | None = None
    """Mixed precision: data type of the MLP projections."""
    embedding_dtype: str | None = None
    """Mixed precision: data type of the embeddings and LM head."""


class Quantization(ApiModel):
    """How the model's weights (and optionally its KV cache) are stored on the GPU."""

    type: QuantizationType = "bf16"
    """fp16/bf16: full 16-bit weights; fp8: 8-bit float, quantized online by vLLM from a 16-bit checkpoint (Hopper/Ada GPUs); int8: W8A8 from a pre-quantized checkpoint; int4: W4A16 with group scales (AWQ/GPTQ) from a pre-quantized checkpoint; mixed: 16-bit attention, int8 MLP."""
    precision: QuantizationPrecision | None = None
    """Details of the quantized tensors."""
    checkpoint: str | None = Field(default=None, max_length=512)
    """Pre-quantized checkpoint to serve (Hugging Face id or path), needed for int8, int4 and mixed when the catalog has none for this model."""
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    """KV cache element type: auto (the model's dtype) or fp8 (half the KV memory; Hopper/Ada GPUs)."""


class ModelSpec(ApiModel):
    """The model to serve."""

    name: str = Field(min_length=1, max_length=128)
    """Model name from the catalog (e.g. llama-3.1-8b, llama-3.1-70b, mistral-7b, codellama-13b), or any name when architecture is given."""
    source: str | None = Field(default=None, max_length=512)
    """Checkpoint to load (Hugging Face id, s3:// or pvc:// URI); default the catalog's checkpoint for the quantization."""
    architecture: ModelArchitecture | None = None
    """Architecture of a model the catalog does not know, or an override of the catalog's."""
    quantization: Quantization | None = None
    """Weight and KV-cache precision; leave out to serve the 16-bit checkpoint."""


class PoolSpec(ApiModel):
    """A pool of model-server replicas for one phase (prefill or decode) of disaggregated serving."""

    replicas: int | None = Field(default=None, ge=0)
    """Replicas when neither an HPA nor the SLO loop owns this pool's size (default 1)."""
    resources: Resources | None = None
    """Resources per replica of this pool; default the deployment's."""
    node_selector: dict[str, str] | None = Field(default=None, max_length=32)
    """Node labels this pool's pods require, merged with the deployment's and the operator's."""
    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    """Tolerations added to this pool's pods."""
    affinity: Affinity | None = affinity_field("Affinity for this pool's pods, merged with the operator's GPU and capacity-type rules.")
    batch_size: int | None = Field(default=None, gt=0, le=4096)
    """Concurrent sequences per replica (vLLM --max-num-seqs)."""
    max_sequence_length: int | None = Field(default=None, gt=0)
    """Longest prompt plus output, in tokens (vLLM --max-model-len)."""
    max_tokens_per_request: int | None = Field(default=None, gt=0)
    """Cap on generated tokens per request, enforced by the router; sizes the decode KV budget."""


class ServingSpec(ApiModel):
    """How replicas serve the model."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": SERVING_RULES})

    mode: Literal["monolithic", "disaggregated"] = "monolithic"
    """monolithic: each replica runs prefill and decode; disaggregated: separate prefill and decode pools exchange KV caches over NIXL."""
    protocol: Literal["http", "grpc"] = "http"
    """Serving protocol of the model-server port."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Container port of the OpenAI-compatible API."""
    batch_size: int | None = Field(default=None, gt=0, le=4096)
    """Concurrent sequences per replica (vLLM --max-num-seqs); default 256."""
    max_sequence_length: int | None = Field(default=None, gt=0)
    """Longest prompt plus output in tokens (vLLM --max-model-len); default min(model context, 8192)."""
    image: str | None = Field(default=None, max_length=512)
    """Model-server image; default the operator's --model-server-image."""
    engine: Literal["vllm"] = "vllm"
    """Inference engine."""
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=0.99)
    """Share of GPU memory vLLM may use for weights, activations and KV cache (default 0.90)."""
    extra_args: list[Annotated[str, Field(description="One engine argument, e.g. --enable-prefix-caching.")]] | None = Field(default=None, max_length=64)
    """Extra engine arguments appended after the planned ones."""
    prefill: PoolSpec | None = None
    """Prefill pool (mode disaggregated): throughput-oriented, large batches."""
    decode: PoolSpec | None = None
    """Decode pool (mode disaggregated): latency-oriented."""


class PoolScaling(ApiModel):
    """Autoscaling bounds and targets for one pool."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [min_le_max("autoscaling pool")]})

    min_replicas: int | None = Field(default=None, ge=0)
    """Fewest replicas; 0 allows scale to zero."""
    max_replicas: int | None = Field(default=None, ge=1)
    """Most replicas."""
    target_gpu_utilization: int | None = Field(default=None, ge=1, le=100, alias="targetGPUUtilization")
    """Average GPU utilization (percent) the HPA aims for (DCGM_FI_DEV_GPU_UTIL through a custom-metrics adapter)."""
    target_latency: Duration | None = None
    """Inter-token latency the HPA aims for (p95, through a custom-metrics adapter)."""
    scale_up_delay: Duration | None = None
    """How long a higher recommendation must hold before scaling up (HPA scaleUp stabilization window)."""
    scale_down_delay: Duration | None = None
    """How long a lower recommendation must hold before scaling down (HPA scaleDown stabilization window)."""


class AutoscalingSpec(PoolScaling):
    """Horizontal Pod Autoscaler per pool. The HPA then owns the replica count.

    The bounds and targets here apply to a monolithic deployment; prefillScaling and decodeScaling to the
    pools of a disaggregated one. minReplicas 0 means scale to zero, which only the SLO loop performs.
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [min_le_max("autoscaling")]})

    enabled: bool = False
    """Create HPAs for the pools."""
    prefill_scaling: PoolScaling | None = None
    """Bounds and targets for the prefill pool (mode disaggregated)."""
    decode_scaling: PoolScaling | None = None
    """Bounds and targets for the decode pool (mode disaggregated)."""


class LoopPoolBounds(ApiModel):
    """Replica bounds the SLO loop keeps one pool within. A bound left out falls back on the deployment-wide one."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [min_le_max("scaling.constraints pool")]})

    min_replicas: int | None = Field(default=None, ge=0)
    """Fewest replicas of this pool; 0 allows scale to zero."""
    max_replicas: int | None = Field(default=None, ge=1)
    """Most replicas of this pool."""


class ScalingConstraints(ApiModel):
    """Limits the SLO loop respects when it sizes the pools."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [min_le_max("scaling.constraints")]})

    min_replicas: int | None = Field(default=None, ge=0)
    """Fewest replicas of each pool (monolithic, or prefill and decode each), unless the pool's own block (prefill, decode) gives its own; 0 allows scale to zero. Default scheduling.sloPolicy.scaling.minReplicas, else 1."""
    max_replicas: int | None = Field(default=None, ge=1)
    """Most replicas of each pool (monolithic, or prefill and decode each), unless the pool's own block (prefill, decode) gives its own. Default scheduling.sloPolicy.scaling.maxReplicas, else the larger of the minimum and the replicas the spec asks for."""
    prefill: LoopPoolBounds | None = None
    """Bounds for the prefill pool (serving.mode disaggregated); a bound left out falls back on minReplicas/maxReplicas here."""
    decode: LoopPoolBounds | None = None
    """Bounds for the decode pool (serving.mode disaggregated); a bound left out falls back on minReplicas/maxReplicas here."""
    max_cost_per_hour: float | None = Field(default=None, gt=0)
    """Budget in USD per hour for all replicas; the loop never exceeds it and says BudgetLimited when it binds."""
    max_cost_per_request: float | None = Field(default=None, gt=0)
    """Most USD per request at the current load; BudgetLimited when it binds."""
    max_latency_p95: Duration | None = None
    """Request latency (p95) the loop must hold."""
    min_throughput: Target | None = None
    """Output tokens per second the deployment must be able to serve at all times."""


class ScalingSpec(ApiModel):
    """Who owns the replica counts."""

    mode: Literal["static", "hpa", "scheduler_managed"] = "static"
    """static: spec replicas; hpa: see autoscaling; scheduler_managed: the SLO loop of the referenced InferenceScheduler sizes the pools."""
    constraints: ScalingConstraints | None = None
    """Limits for the SLO loop."""


class SchedulerConfig(ApiModel):
    """Hints for the request scheduler (router)."""

    batching_policy: str | None = None
    """Batching policy name, e.g. cost_aware."""
    queue_management: str | None = None
    """Queue discipline, e.g. priority_cost."""
    preemption: Literal["enabled", "disabled"] | None = None
    """Whether lower-priority requests may be preempted."""


class InlineSloScaling(ApiModel):
    """Scaling rules of an inline SLO policy."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [min_le_max("sloPolicy.scaling")]})

    algorithm: str | None = None
    """Scaling policy: default (model-based, cost-aware), threshold (weighted SLO violation), hpa."""
    scale_up_threshold: float | None = Field(default=None, ge=0)
    """Scale up when the weighted SLO violation (each objective's relative miss of its target times its weight, summed; positive = worse than target) exceeds this (0.05 = 5% worse)."""
    scale_down_threshold: float | None = Field(default=None, ge=0, le=1)
    """Scale down when the weighted SLO violation is below -(1 - this) (0.9 = below -0.1: the objectives met with 10% to spare)."""
    min_replicas: int | None = Field(default=None, ge=0)
    """Fewest replicas of each pool where spec.scaling.constraints does not say; 0 allows scale to zero."""
    max_replicas: int | None = Field(default=None, ge=1)
    """Most replicas of each pool where spec.scaling.constraints does not say."""
    interval: Duration = "30s"
    """How often the loop observes and decides."""
    scale_down_cooldown: Duration = "2m"
    """Least time between a scaling action and the next scale-down."""
    burst_hold: Duration = "15m"
    """Default policy: on on/off load (its busiest interval carries >= 1.5x the mean rate of this window), keep the capacity of the window's busiest burst this long, so that a burst that comes back finds its replicas ready; 0s turns the rule off."""
    demand_query: str | None = Field(default=None, max_length=4096)
    """PromQL whose value above 0 wakes this deployment when scaled to zero (e.g. the gateway's queue for it); $namespace and $deployment are replaced. Default: the scheduler's demandQuery, else the operator's --demand-query."""
    scheduler_config: SchedulerConfig | None = None
    """Hints for the request scheduler."""


class InlineSloPolicy(ApiModel):
    """An SLO policy for this deployment alone, instead of a referenced InferenceScheduler."""

    enabled: bool = True
    """Run the SLO loop for this deployment."""
    objectives: Objectives = Field(default_factory=list)
    """SLO objectives with targets and weights."""
    scaling: InlineSloScaling | None = None
    """Scaling rules."""


class SchedulingSpec(ApiModel):
    """Request scheduling and SLO-driven scaling."""

    scheduler: str | None = Field(default=None, max_length=253)
    """Name of the request scheduler (endpoint picker) that routes to this deployment; added as label llm-d.ai/scheduler."""
    slo_policy: InlineSloPolicy | None = None
    """Inline SLO policy; the loop sizes the pools to meet it."""


class PrefillRouting(ApiModel):
    """Which requests go through the prefill pool."""

    min_prompt_length: int | None = Field(default=None, ge=0)
    """Prompts shorter than this (tokens) are prefilled on the decode pool."""
    max_prompt_length: int | None = Field(default=None, gt=0)
    """Longest prompt (tokens) routed to the prefill pool."""
    batching_timeout: Duration | None = None
    """How long the router may hold a prompt to build a larger prefill batch."""


class DecodeRouting(ApiModel):
    """How the router spreads decode work."""

    max_batch_size: int | None = Field(default=None, gt=0)
    """Most concurrent sequences the router sends to one decode replica."""
    target_latency: Duration | None = None
    """Inter-token latency the router protects when it picks a replica."""


class RoutingSpec(ApiModel):
    """Routing between prefill and decode pools, published for the request scheduler in a ConfigMap."""

    strategy: Literal["adaptive", "round_robin", "least_loaded", "prefix_aware"] = "adaptive"
    """Routing strategy."""
    prefill_routing: PrefillRouting | None = None
    """Prefill routing rules."""
    decode_routing: DecodeRouting | None = None
    """Decode routing rules."""


ProfileFormat = Annotated[Literal["bf16", "fp8", "int8", "int4"], Field(description="A weight format: bf16, fp8, int8 or int4.")]


class ProfilingSpec(ApiModel):
    """Measure the model's memory and speed on its own GPU product with a Job, before the SLO loop sizes it."""

    enabled: bool = False
    """Run the profiler Job when ConfigMap <name>-capacity-profile does not exist yet."""
    formats: list[ProfileFormat] = Field(default_factory=lambda: ["bf16", "int8", "int4"], max_length=4)
    """Weight formats to measure."""
    image: str | None = Field(default=None, max_length=512)
    """Profiler image (the operator with its profile extra, on a CUDA base)."""
    gpu_product: str | None = Field(default=None, max_length=128)
    """GPU product to profile on; default the plan's."""


class LLMDeploymentSpec(ApiModel):
    """Desired state of an LLMDeployment."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": SPEC_RULES})

    model: ModelSpec
    """The model and its quantization."""
    replicas: int | None = Field(default=None, ge=0)
    """Replicas (monolithic) when neither an HPA nor the SLO loop owns the count; the initial count otherwise (default 1)."""
    resources: Resources | None = None
    """Resources per replica and cost policies."""
    node_selector: dict[str, str] | None = Field(default=None, max_length=32)
    """Node labels the pods require, merged with the operator's GPU and capacity-type rules."""
    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    """Tolerations added to the pods (the operator adds its own for GPU and spot taints)."""
    affinity: Affinity | None = affinity_field("Affinity for the pods, merged with the operator's GPU and capacity-type rules.")
    serving: ServingSpec | None = None
    """Serving mode, engine settings and pools."""
    autoscaling: AutoscalingSpec | None = None
    """HPA-based autoscaling."""
    scaling: ScalingSpec | None = None
    """Who owns the replica counts, and the SLO loop's constraints."""
    scheduler_name: str | None = Field(default=None, max_length=253)
    """InferenceScheduler whose SLO and cost policies apply: looked up in this namespace first, then in the operator's home namespace."""
    scheduling: SchedulingSpec | None = None
    """Request scheduler and inline SLO policy."""
    routing: RoutingSpec | None = None
    """Routing between prefill and decode pools."""
    profiling: ProfilingSpec | None = None
    """In-cluster profiling of memory and throughput; its result becomes the SLO loop's capacity profile."""


class Pool(ApiModel):
    """Observed state of one pool."""

    role: Literal["monolithic", "prefill", "decode"]
    desired_replicas: int = 0
    """Replicas the owner of the count wants."""
    replicas: int = 0
    """Pods that exist."""
    ready_replicas: int = 0
    """Pods ready to serve."""
    spot_replicas: int = 0
    """Desired replicas placed on spot capacity."""
    on_demand_replicas: int = 0
    """Desired replicas placed on on-demand capacity."""
    replicas_owner: Literal["spec", "hpa", "slo-loop"] = "spec"
    """Who sets this pool's replica count."""
    deployments: list[str] = Field(default_factory=list)
    """The pool's Deployments."""


class PlanSummary(ApiModel):
    """What the planner chose."""

    gpu_product: str
    """GPU product (nvidia.com/gpu.product) the pods run on."""
    gpus_per_replica: int
    tensor_parallel_size: int
    quantization: str
    kv_cache_dtype: str
    weights_gib: float
    """Model weights per replica, GiB."""
    weights_per_gpu_gib: float
    """Weights per GPU after tensor parallelism, GiB."""
    kv_cache_gib_per_gpu: float
    """Memory left for the KV cache per GPU, GiB."""
    kv_bytes_per_token: int
    kv_capacity_tokens: int
    """Tokens of KV cache one replica holds."""
    max_model_len: int
    max_num_seqs: int
    checkpoint: str


class Decision(ApiModel):
    """The SLO loop's last scaling decision."""

    time: str
    pool: str
    from_replicas: int
    to_replicas: int
    reason: str


class LLMDeploymentStatus(ApiModel):
    """Observed state of an LLMDeployment, written by the operator."""

    observed_generation: int | None = None
    """The spec generation this status describes."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Planned, MetricsAvailable, BudgetLimited, SpotFallback."""
    mode: str | None = None
    """Serving mode in force."""
    ready: str | None = None
    """Ready replicas over desired replicas, e.g. 3/4."""
    ready_replicas: int | None = None
    replicas: int | None = None
    cost_per_hour: float | None = None
    """Current cost of the desired replicas in USD per hour."""
    plan: PlanSummary | None = None
    pools: list[Pool] = Field(default_factory=list)
    scheduler: str | None = None
    """The InferenceScheduler in force (namespace/name), or inline."""
    capacity_profile: str | None = None
    """The capacity profile the SLO loop uses."""
    last_decision: Decision | None = None
    slo_scores: dict[str, float] | None = None
    """Violation per objective at the last decision: (actual - target) / target, negative when met."""
    policy_state: dict[str, Any] | None = Field(default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "type": "object"})
    """Where earlier versions of the operator kept the SLO loop's memory; it now lives in ConfigMap <name>-slo-memory, and the loop moves it there and clears this field."""


class LLMDeployment(ApiModel):
    """An LLM served on GPU nodes at the least cost that meets its SLOs."""

    api_version: Literal["inference.llm-d.io/v1alpha1"] = "inference.llm-d.io/v1alpha1"
    kind: Literal["LLMDeployment"] = "LLMDeployment"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: LLMDeploymentSpec
    status: LLMDeploymentStatus | None = None
