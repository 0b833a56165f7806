"""InferenceScheduler (scheduler.llm-d.io/v1alpha1): a shared SLO, spot, batching and routing policy."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from .base import ApiModel
from .core import Condition
from .slo import Objectives
from .units import Duration

GROUP = "scheduler.llm-d.io"
VERSION = "v1alpha1"
KIND = "InferenceScheduler"
PLURAL = "inferenceschedulers"

ONE_TRIGGER_RULE = {
    "rule": "[has(self.sloViolation), has(self.costPerRequest), has(self.utilizationBelow)].filter(x, x).size() == 1",
    "message": "each condition sets exactly one trigger: sloViolation, costPerRequest or utilizationBelow",
}


class ScaleUpCondition(ApiModel):
    """When to add capacity. Conditions are checked in order of urgency: high, normal, low."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [ONE_TRIGGER_RULE]})

    slo_violation: float | None = None
    """Trigger when the weighted SLO violation exceeds this (0.05 = 5% worse than target)."""
    cost_per_request: float | None = Field(default=None, gt=0)
    """Trigger when the cost per request (USD) exceeds this."""
    utilization_below: float | None = Field(default=None, ge=0, le=1)
    """Not used for scale-up; present so both condition lists share one shape."""
    urgency: Literal["low", "normal", "high"] = "normal"
    """normal adds one replica per pool that misses its SLO; high adds half the current replicas (at least one); low changes no replicas."""
    action: Literal["add_replicas", "add_replicas_fast", "optimize_batching"] = "add_replicas"
    """add_replicas, add_replicas_fast, or optimize_batching (raise the batch size instead of adding replicas)."""


class ScaleDownCondition(ApiModel):
    """When to remove capacity."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [ONE_TRIGGER_RULE]})

    slo_violation: float | None = None
    """Trigger when the weighted SLO violation is below this (-0.1 = every objective 10% better than target)."""
    cost_per_request: float | None = Field(default=None, gt=0)
    """Not used for scale-down; present so both condition lists share one shape."""
    utilization_below: float | None = Field(default=None, ge=0, le=1)
    """Trigger when the average GPU utilization (0..1) is below this."""
    min_idle_time: Duration = "5m"
    """How long the trigger must hold before replicas are removed."""
    action: Literal["remove_replicas", "consolidate_workloads"] = "remove_replicas"
    """remove_replicas removes one replica; consolidate_workloads removes one and moves the rest to the cheapest capacity type."""


class SchedulerScaling(ApiModel):
    """How the SLO loop sizes the pools of every deployment that uses this scheduler."""

    algorithm: str = "default"
    """Scaling policy: default (model-based and cost-aware; cost_aware_proportional is the same), threshold (the scaleUp/scaleDown conditions below, evaluated as written), hpa (utilization target)."""
    interval: Duration = "30s"
    """How often the loop observes and decides."""
    scale_down_cooldown: Duration = "5m"
    """Least time between a scaling action and the next scale-down."""
    burst_hold: Duration = "15m"
    """Default policy: on on/off load (its busiest interval carries >= 1.5x the mean rate of this window), keep the capacity of the window's busiest burst this long, so that a burst that comes back finds its replicas ready; 0s turns the rule off."""
    demand_query: str | None = Field(default=None, max_length=4096)
    """PromQL whose value above 0 wakes a deployment scaled to zero (e.g. the gateway's queue for it); $namespace and $deployment are replaced. A deployment's inline sloPolicy may set its own; default: the operator's --demand-query."""
    scale_up_conditions: list[ScaleUpCondition] | None = Field(default=None, max_length=16)
    """Scale-up triggers (threshold algorithm)."""
    scale_down_conditions: list[ScaleDownCondition] | None = Field(default=None, max_length=16)
    """Scale-down triggers (threshold algorithm)."""


class SchedulerSloPolicy(ApiModel):
    """SLO objectives and scaling rules."""

    enabled: bool = True
    """Run the SLO loop for the deployments that use this scheduler."""
    objectives: Objectives = Field(default_factory=list)
    """Objectives with targets and weights."""
    scaling: SchedulerScaling | None = None
    """Scaling rules."""


class Interruption(ApiModel):
    """What to do when a spot node is reclaimed."""

    drain_timeout: Duration = "60s"
    """Grace period for in-flight requests on an interrupted replica (pod terminationGracePeriodSeconds)."""
    migration_policy: Literal["cost_aware", "same_capacity", "on_demand"] = "on_demand"
    """Where the replicas of a drained or deleted spot node go: on_demand (on-demand replacements, as fallbackStrategy says); cost_aware (the cheapest capacity with room: other spot nodes of the pool's GPU when their free GPUs hold every displaced replica, else on-demand); same_capacity (other spot nodes whether or not they show room now, for a node provisioner to add one; replicas that stay Unschedulable then fall back as fallbackStrategy says)."""


class SpotInstancePolicy(ApiModel):
    """How much of each pool may run on spot capacity."""

    enabled: bool = True
    """Place replicas on spot capacity."""
    max_spot_ratio: float = Field(default=0.8, ge=0, le=1)
    """Largest share (0..1) of each pool's replicas on spot."""
    fallback_strategy: Literal["graceful_migration", "immediate", "none"] = "graceful_migration"
    """When spot capacity is lost: graceful_migration orders on-demand replacements at once and removes spot replicas that still serve only as the replacements become ready; immediate removes them in the same step; none keeps the replicas on spot until it returns."""
    interruption: Interruption | None = None
    """Interruption handling."""


class DynamicSizing(ApiModel):
    """Batch size that follows the queue."""

    enabled: bool = False
    """Let the batch size follow the queue between minBatch and maxBatch."""
    queue_depth_threshold: int | None = Field(default=None, ge=0)
    """Queue depth per replica above which the batch size grows."""
    cost_efficiency_target: float | None = Field(default=None, ge=0, le=1)
    """Share of the cost-optimal batch size to aim for."""


class BatchSizing(ApiModel):
    """Bounds for the batch size (vLLM --max-num-seqs)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": "!has(self.minBatch) || !has(self.maxBatch) || self.minBatch <= self.maxBatch",
        "message": "batchSizing: minBatch must be less than or equal to maxBatch",
    }]})

    min_batch: int | None = Field(default=None, ge=1)
    """Smallest batch size (concurrent sequences per replica)."""
    max_batch: int | None = Field(default=None, ge=1)
    """Largest batch size (concurrent sequences per replica)."""
    target_cost_per_token: float | None = Field(default=None, gt=0)
    """USD per token to aim for."""
    dynamic_sizing: DynamicSizing | None = None
    """Batch size that follows the queue."""


class BatchingPolicy(ApiModel):
    """Batching policy."""

    algorithm: str | None = None
    """Batching algorithm, e.g. cost_aware_batching."""
    batch_sizing: BatchSizing | None = None
    """Bounds for the batch size."""


class Route(ApiModel):
    """A complexity class of requests and the deployment that serves it."""

    name: str
    """Route name."""
    complexity: Literal["low", "medium", "high", "critical"]
    """Request complexity class this route serves."""
    target_model: str
    """Name of the LLMDeployment (or model variant) that serves this class."""
    cost_target: float | None = Field(default=None, gt=0)
    """USD per request to aim for."""
    sla_override: bool = False
    """Allow a higher cost than costTarget to hold the SLO."""


class RoutingPolicy(ApiModel):
    """Routing of requests to deployments by complexity, published for the request scheduler."""

    algorithm: str | None = None
    """Routing algorithm, e.g. cost_complexity_routing."""
    routes: list[Route] | None = Field(default=None, max_length=32)
    """Routes by complexity class."""


class CostOptimization(ApiModel):
    """Cost strategies."""

    enabled: bool = True
    """Apply these strategies to the deployments that use this scheduler."""
    spot_instance_policy: SpotInstancePolicy | None = None
    """Spot share and interruption handling."""
    batching_policy: BatchingPolicy | None = None
    """Batching policy, published for the request scheduler."""
    routing_policy: RoutingPolicy | None = None
    """Routing by request complexity, published for the request scheduler."""


class InferenceSchedulerSpec(ApiModel):
    """Desired state of an InferenceScheduler."""

    slo_policy: SchedulerSloPolicy | None = None
    """SLO objectives and scaling rules."""
    cost_optimization: CostOptimization | None = None
    """Spot, batching and routing policies."""


class InferenceSchedulerStatus(ApiModel):
    """Observed state of an InferenceScheduler."""

    observed_generation: int | None = None
    """The spec generation this status describes."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready."""
    deployments: int = 0
    """LLMDeployments that use this scheduler."""
    deployment_names: list[str] = Field(default_factory=list)
    """Those deployments, as namespace/name."""


class InferenceScheduler(ApiModel):
    """A shared SLO, spot, batching and routing policy for LLMDeployments."""

    api_version: Literal["scheduler.llm-d.io/v1alpha1"] = "scheduler.llm-d.io/v1alpha1"
    kind: Literal["InferenceScheduler"] = "InferenceScheduler"
    metadata: dict = Field(default_factory=dict)
    spec: InferenceSchedulerSpec
    status: InferenceSchedulerStatus | None = None
