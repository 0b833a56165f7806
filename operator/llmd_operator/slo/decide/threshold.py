"""The seed's threshold policy, as the seed describes it (InferenceScheduler sloPolicy).

    violation(objective) = (actual - target) / target          # SLOMonitor.evaluate_slos
    weighted = sum(violation * weight)                          # CostAwareScaler.should_scale
    scaleUpConditions   (highest sloViolation threshold exceeded wins):
        sloViolation 0.05 urgency normal -> add_replicas        (+1 replica)
        sloViolation 0.15 urgency high   -> add_replicas_fast   (+50% of current, at least +2)
        costPerRequest 0.005 urgency low -> optimize_batching   (no replica change; reported)
      ... and only while current_cost < max_cost_budget (maxCostPerHour); else optimize_efficiency
    scaleDownConditions (each must hold continuously for its minIdleTime):
        sloViolation -0.1, minIdleTime 5m -> remove_replicas    (-1 replica)
        utilizationBelow 0.4, minIdleTime 2m -> consolidate_workloads (-1 replica)

Reading of the sign for objectives whose target is a floor (throughput): the seed's formula gives a
positive value when throughput is ABOVE target, which would add replicas when things go well; we
flip it for `direction: floor` objectives so that positive always means "worse than target" (see
docs/scaling-policies.md). Ceiling objectives (latency, utilisation, cost) use the formula as written.
The policy is deployment-wide: every pool of the deployment moves by the same rule.
"""

from __future__ import annotations

import math

from ..profiles import CapacityProfile
from .common import finish, hold
from .types import FleetObservation, Objective, PolicySpec, PolicyState, _finite

NAME = "threshold"


def default_objectives(spec: PolicySpec) -> tuple[Objective, ...]:
    """When the scheduler names no objectives: TTFT p95 and ITL p95 against the SLO, equal weights."""
    return (Objective("ttft_p95", spec.slo.ttft_p95_s, 0.5, "ceiling", "ttft_p95"),
            Objective("itl_p95", spec.slo.itl_p95_s, 0.5, "ceiling", "itl_p95"))


_LATENCY = {"ttft_p95", "ttft", "itl_p95", "itl", "latency_p95", "weighted_latency"}
# measured per request: with no requests there is nothing to measure, and nothing is violated
_PER_REQUEST = _LATENCY | {"cost_per_request"}


def current_cost_per_hour(obs: FleetObservation, spec: PolicySpec) -> float:
    """What the fleet costs now: the caller's figure when it has one, else replicas x prices."""
    if _finite(obs.cost_per_hour):
        return obs.cost_per_hour
    return sum(p.replicas_on_demand * spec.prices.on_demand_per_hour
               + p.replicas_spot * (spec.prices.spot_per_hour or spec.prices.on_demand_per_hour) for p in obs.pools)


def _cost_per_request(cost_per_hour: float | None, request_rate: float | None) -> float | None:
    """Dollars per request as the seed's cost objective and costPerRequest condition read it: the fleet's
    $/hour over its requests per hour; None with no requests."""
    if _finite(cost_per_hour) and _finite(request_rate) and request_rate > 0:
        return cost_per_hour / (request_rate * 3600.0)
    return None


def _measured(obs: FleetObservation, o: Objective, cost_per_hour: float | None) -> float | None:
    given = dict(obs.objective_values)
    if o.name in given:
        return given[o.name]
    metric = o.metric or o.name
    pools = obs.pools
    if metric == "cost_per_request":
        return _cost_per_request(cost_per_hour, obs.request_rate)
    if metric in ("ttft_p95", "ttft"):
        return obs.ttft_p95_s
    if metric in ("itl_p95", "itl"):
        return obs.itl_p95_s
    if metric in ("latency_p95", "weighted_latency"):
        if _finite(obs.ttft_p95_s) and _finite(obs.itl_p95_s) and _finite(obs.mean_output_tokens):
            return obs.ttft_p95_s + obs.itl_p95_s * obs.mean_output_tokens
        return None
    if metric in ("tokens_per_s", "throughput"):
        return obs.tokens_per_s
    if metric in ("gpu_util", "gpu_utilization"):
        vals = [p.gpu_util for p in pools if _finite(p.gpu_util)]
        return sum(vals) / len(vals) if vals else None
    if metric == "kv_usage":
        vals = [p.kv_usage for p in pools if _finite(p.kv_usage)]
        return sum(vals) / len(vals) if vals else None
    return None


def slo_scores(obs: FleetObservation, objectives: tuple[Objective, ...],
               cost_per_hour: float | None = None) -> dict[str, float] | None:
    """Violation per objective, (actual - target) / target (sign flipped for floors); None when one
    has no measured value. `cost_per_hour` is what the fleet costs now (cost_per_request objectives)."""
    scores = {}
    idle = _finite(obs.request_rate) and obs.request_rate == 0
    for o in objectives:
        actual = _measured(obs, o, cost_per_hour)
        if actual is None and idle and (o.metric or o.name) in _PER_REQUEST:
            actual = 0.0          # no requests: no latency, no cost per request (NaN is not missing data here)
        if not _finite(actual) or o.target == 0:
            return None
        v = (actual - o.target) / o.target
        scores[o.name] = -v if o.direction == "floor" else v
    return scores


def _held_for(state: PolicyState, key: str, active: bool, now: float) -> float:
    """Seconds the condition `key` has held continuously (0 when it does not hold now)."""
    if not active:
        state.condition_since_s.pop(key, None)
        return 0.0
    since = state.condition_since_s.setdefault(key, now)
    return now - since


REQUIRED_METRICS: tuple[str, ...] = ()  # the dispatcher holds when these are missing


def decide(obs: FleetObservation, spec: PolicySpec, profile: CapacityProfile | None,
           state: PolicyState) -> tuple:
    objectives = spec.threshold.objectives or default_objectives(spec)
    cur_cost = current_cost_per_hour(obs, spec)
    scores = slo_scores(obs, objectives, cur_cost)
    if scores is None:
        return hold(obs, NAME, state, "an SLO objective has no measured value")
    weighted = sum(scores[o.name] * o.weight for o in objectives)
    now = obs.time_s
    rules = spec.threshold
    c = spec.constraints
    cost_per_request = _cost_per_request(cur_cost, obs.request_rate)

    # scale up: the highest sloViolation threshold exceeded
    ups = sorted((u for u in rules.scale_up if u.slo_violation is not None),
                 key=lambda u: u.slo_violation, reverse=True)
    hit = next((u for u in ups if weighted > u.slo_violation), None)
    targets = {p.role: p.replicas for p in obs.pools}
    reasons, actions = {}, {}
    extra = ""
    if hit is not None:
        # conditions of the other direction are interrupted
        for k in list(state.condition_since_s):
            state.condition_since_s.pop(k)
        budget = c.max_cost_per_hour
        if budget is not None and not cur_cost < budget:
            extra = (f"optimize_efficiency: weighted SLO violation {weighted:+.3f} > {hit.slo_violation:g} "
                     f"but cost ${cur_cost:.2f}/h >= maxCostPerHour ${budget:.2f}/h")
            d, st = finish(obs, spec, state, NAME, targets, {}, {p.role: "optimize_efficiency" for p in obs.pools},
                           slo_scores=scores, extra_reason=extra)
            from dataclasses import replace
            return replace(d, budget_limited=True, budget_message=extra), st
        for p in obs.pools:
            n = p.replicas
            add = max(2, math.ceil(n * rules.high_urgency_factor)) if hit.urgency == "high" else 1
            targets[p.role] = n + add
            actions[p.role] = hit.action
            reasons[p.role] = (f"{p.role} {n}->{n + add}: weighted SLO violation {weighted:+.3f} > "
                               f"{hit.slo_violation:g} ({hit.urgency} urgency, {hit.action})")
        return finish(obs, spec, state, NAME, targets, reasons, actions, slo_scores=scores)

    # low-urgency cost condition: report, change nothing
    for u in rules.scale_up:
        if u.cost_per_request is not None and cost_per_request is not None and cost_per_request > u.cost_per_request:
            extra = (f"{u.action}: cost per request ${cost_per_request:.4f} > ${u.cost_per_request:g} "
                     f"({u.urgency} urgency; no replica change)")

    # scale down: each condition must hold for its minIdleTime
    gpu = [p.gpu_util for p in obs.pools if _finite(p.gpu_util)]
    util = sum(gpu) / len(gpu) if gpu else None
    for i, dcond in enumerate(rules.scale_down):
        key = f"down{i}"
        if dcond.slo_violation is not None:
            active = weighted < dcond.slo_violation
            what = f"weighted SLO violation {weighted:+.3f} < {dcond.slo_violation:g}"
        elif dcond.utilization_below is not None:
            active = util is not None and util < dcond.utilization_below
            what = f"GPU utilization {util if util is not None else float('nan'):.2f} < {dcond.utilization_below:g}"
        else:
            continue
        held = _held_for(state, key, active, now)
        if active and held >= dcond.min_idle_time_s:
            for p in obs.pools:
                if p.replicas > c.min_for(p.role):
                    targets[p.role] = p.replicas - 1
                    actions[p.role] = dcond.action
                    reasons[p.role] = (f"{p.role} {p.replicas}->{p.replicas - 1}: {what} for {held:.0f} s "
                                       f">= {dcond.min_idle_time_s:.0f} s ({dcond.action})")
            state.condition_since_s[key] = now   # the next step needs another minIdleTime
            break
    return finish(obs, spec, state, NAME, targets, reasons, actions, slo_scores=scores, extra_reason=extra)
