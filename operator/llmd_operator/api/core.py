"""Kubernetes core shapes that LLMDeployment embeds: tolerations, resources, affinity, conditions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from .base import ApiModel
from .units import Quantity

PRESERVE_UNKNOWN = {"x-kubernetes-preserve-unknown-fields": True, "type": "object"}


class Toleration(ApiModel):
    """A Kubernetes toleration, copied onto the model-server pods as written."""

    key: str | None = None
    """Taint key to tolerate; empty with operator Exists tolerates every taint."""
    operator: Literal["Equal", "Exists"] | None = None
    """Equal (default) matches key and value; Exists matches the key alone."""
    value: str | None = None
    """Taint value to match when operator is Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""


class ResourcePolicies(ApiModel):
    """How the operator may trade cost against availability for this deployment."""

    cost_optimization: Literal["aggressive", "balanced", "conservative"] | None = None
    """aggressive: spot-first and tight packing; balanced: the default; conservative: on-demand only."""
    spot_preference: Literal["required", "preferred", "never"] | None = None
    """required: every replica on spot; preferred: up to maxSpotRatio of the replicas on spot, the rest on-demand; never: on-demand only."""
    max_spot_ratio: float | None = Field(default=None, ge=0, le=1)
    """Largest share of replicas (0..1) placed on spot capacity when spotPreference is preferred (default 0.8, or the scheduler's spotInstancePolicy.maxSpotRatio)."""
    utilization_target: float | None = Field(default=None, gt=0, le=1)
    """Target GPU utilization (0..1) the SLO loop aims for when it has headroom."""


GPU_REQUEST_RULES = [
    {
        "rule": "!has(self.requests) || !has(self.limits) || !('nvidia.com/gpu' in self.requests) || !('nvidia.com/gpu' in self.limits) || string(self.requests['nvidia.com/gpu']) == string(self.limits['nvidia.com/gpu'])",
        "message": "resources: nvidia.com/gpu requests must equal limits (GPUs cannot be overcommitted)",
    },
]


class Resources(ApiModel):
    """Compute resources per model-server replica, as in a Pod's resources, plus cost policies."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": GPU_REQUEST_RULES})

    requests: dict[str, Quantity] | None = None
    """Requested resources, e.g. nvidia.com/gpu: "1", memory: "16Gi", cpu: "4". The GPU count is a floor: the planner raises it when the model needs tensor parallelism."""
    limits: dict[str, Quantity] | None = None
    """Resource limits, e.g. memory: "24Gi"."""
    policies: ResourcePolicies | None = None
    """Cost and placement policies."""


Affinity = dict[str, Any]
"""A Kubernetes affinity (nodeAffinity, podAffinity, podAntiAffinity), merged with the operator's GPU and capacity-type rules."""


def affinity_field(description: str):
    return Field(default=None, description=description, json_schema_extra=PRESERVE_UNKNOWN)


class Condition(ApiModel):
    """A status condition, Kubernetes style."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None
