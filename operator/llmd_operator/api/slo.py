"""SLO objectives, shared by the InferenceScheduler and an LLMDeployment's inline sloPolicy."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import ApiModel
from .units import Target

# Objectives the operator measures itself from vLLM and DCGM metrics; any other name needs a calculator.
BUILTIN_OBJECTIVES = (
    "ttft_p95",
    "itl_p95",
    "request_latency_p95",
    "tokens_per_second",
    "cost_per_request",
    "gpu_utilization",
    "queue_depth",
)


class Objective(ApiModel):
    """One SLO objective: a measured value, its target and its weight in the combined SLO score."""

    name: str = Field(min_length=1, max_length=63)
    """Objective name. Built-in (measured by the operator): ttft_p95, itl_p95, request_latency_p95, tokens_per_second, cost_per_request, gpu_utilization, queue_depth. Any other name needs a calculator."""
    description: str | None = Field(default=None, max_length=1024)
    """What the objective means, for people."""
    target: Target
    """Target value: a duration ("500ms") for latencies, a number ("75000", "0.7") otherwise."""
    weight: float = Field(default=1.0, ge=0, le=1)
    """Weight (0..1) of this objective's violation in the combined SLO violation."""
    calculator: str | None = Field(default=None, max_length=4096)
    """PromQL that computes the objective's current value. $namespace, $deployment and $pool are replaced by the deployment's labels; lines starting with # are comments."""


OBJECTIVES_NEED_CALCULATOR_RULE = {
    "rule": "self.all(o, o.name in " + str(list(BUILTIN_OBJECTIVES)) + " || has(o.calculator))",
    "message": "an objective whose name is not built-in (ttft_p95, itl_p95, request_latency_p95, tokens_per_second, cost_per_request, gpu_utilization, queue_depth) needs a calculator (PromQL)",
}
OBJECTIVE_NAMES_UNIQUE_RULE = {
    "rule": "self.all(o, self.exists_one(p, p.name == o.name))",
    "message": "objective names must be unique",
}

Objectives = Annotated[
    list[Objective],
    Field(max_length=16, json_schema_extra={"x-kubernetes-validations": [OBJECTIVES_NEED_CALCULATOR_RULE, OBJECTIVE_NAMES_UNIQUE_RULE]}),
]
"""SLO objectives with targets and weights; names are unique, and only built-in names may omit a calculator."""
