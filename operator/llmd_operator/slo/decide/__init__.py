"""Pure scaling policies: (observation, spec, capacity profile, remembered state) -> (Decision, state).

    from llmd_operator.slo.decide import decide, PolicyState
    decision, state = decide("default", observation, spec, profile, state)

No I/O, no clock: time comes in `FleetObservation.time_s`. The same functions run in the operator's
live loop and in the simulator. See docs/scaling-policies.md.
"""

from __future__ import annotations

from dataclasses import replace

from ..profiles import CapacityProfile
from . import hpa, model_based, threshold
from .common import hold, metrics_problem, scale_to_zero
from .types import (ROLES, Constraints, Decision, FleetObservation, HPASpec, Objective, PolicySpec,
                    PolicyState, PoolDecision, PoolObservation, Prices, ScaleCondition, SLOTargets,
                    ThresholdRules, Tuning)

MODULES = {"default": model_based, "threshold": threshold, "hpa": hpa}
POLICIES = {name: module.decide for name, module in MODULES.items()}
# the seed's `scaling.algorithm` values and other spellings
ALIASES = {"cost_aware_proportional": "default", "model_based": "default", "": "default",
           "slo_threshold": "threshold", "seed": "threshold", "utilization": "hpa"}


def policy_name(algorithm: str | None) -> str:
    """The policy an InferenceScheduler's `spec.sloPolicy.scaling.algorithm` selects; unknown or
    absent values select the default."""
    a = (algorithm or "").strip().lower()
    a = ALIASES.get(a, a)
    return a if a in POLICIES else "default"


def decide(algorithm: str | None, observation: FleetObservation, spec: PolicySpec,
           profile: CapacityProfile | None, state: PolicyState | None = None) -> tuple[Decision, PolicyState]:
    """Run the named policy. Returns the decision and the updated state (persist `state.to_json()`)."""
    name = policy_name(algorithm)
    state = (state or PolicyState()).copy()  # the caller's state is never changed in place
    woken_or_slept = scale_to_zero(observation, spec, state, name)
    if woken_or_slept is not None:
        return woken_or_slept
    why = metrics_problem(observation, MODULES[name].REQUIRED_METRICS)
    if why:
        return hold(observation, name, state, why)  # never scale on missing, stale or NaN metrics
    decision, state = MODULES[name].decide(observation, spec, profile, state)
    if not decision.slo_scores:
        # every policy reports how far each objective is from its target, not only the one that
        # decides with those scores: status and the llmd_slo_score metric read them
        scores = threshold.slo_scores(observation, spec.threshold.objectives or threshold.default_objectives(spec),
                                      threshold.current_cost_per_hour(observation, spec))
        if scores:
            decision = replace(decision, slo_scores=tuple(sorted(scores.items())))
    return decision, state


__all__ = ["decide", "policy_name", "POLICIES", "ROLES", "Constraints", "Decision", "FleetObservation",
           "HPASpec", "Objective", "PolicySpec", "PolicyState", "PoolDecision", "PoolObservation", "Prices",
           "ScaleCondition", "SLOTargets", "ThresholdRules", "Tuning"]
