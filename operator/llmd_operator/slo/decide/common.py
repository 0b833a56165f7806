"""Pieces every policy shares: metric checks, constraints (min/max, budget), spot split, scale to zero,
and the words of a decision."""

from __future__ import annotations

import math
import re

from .types import (Constraints, Decision, FleetObservation, PolicySpec, PolicyState, PoolDecision,
                    PoolObservation, Prices, _finite)


def metrics_problem(obs: FleetObservation, need: tuple[str, ...] = ("request_rate",)) -> str:
    """'' when the observation can be acted on, else why not (missing, stale or NaN)."""
    if not obs.metrics_fresh:
        return obs.metrics_note or "metrics are stale or Prometheus is unreachable"
    bad = [n for n in need if not _finite(getattr(obs, n))]
    if bad:
        return "metrics missing or NaN: " + ", ".join(bad)
    return ""


def hold(obs: FleetObservation, policy: str, state: PolicyState, why: str) -> tuple[Decision, PolicyState]:
    pools = tuple(PoolDecision(p.role, p.replicas, p.replicas, p.replicas_spot,
                               f"{p.role}: holding {p.replicas} ({why})", "hold") for p in obs.pools)
    return Decision(time_s=obs.time_s, policy=policy, pools=pools,
                    reason=f"holding all pools: {why}", held_for_missing_metrics=True), state


def spot_split(total: int, prices: Prices, max_spot_ratio: float) -> int:
    """Spot replicas out of `total`: as many as max_spot_ratio allows when spot is cheaper per token
    (a replica serves the same tokens on either capacity type, so $/token follows $/hour)."""
    if total <= 0 or not prices.spot_available or prices.spot_per_hour is None:
        return 0
    if prices.spot_per_hour >= prices.on_demand_per_hour:
        return 0
    return max(0, min(total, math.floor(total * max(0.0, min(1.0, max_spot_ratio)) + 1e-9)))


def cost_per_hour(targets: dict[str, int], spots: dict[str, int], prices: Prices) -> float:
    c = 0.0
    for role, n in targets.items():
        s = spots.get(role, 0)
        c += (n - s) * prices.on_demand_per_hour + s * (prices.spot_per_hour or prices.on_demand_per_hour)
    return c


def clamp_min_max(role: str, n: int, c: Constraints) -> int:
    """Within [min, max]; never 0 here: only the idle timer (scale_to_zero) takes a pool to zero."""
    return max(c.min_for(role), 1, min(c.max_for(role), n))


def apply_budget(targets: dict[str, int], current: dict[str, int], obs: FleetObservation,
                 spec: PolicySpec) -> tuple[dict[str, int], dict[str, int], str]:
    """Cap scale-ups by maxCostPerHour and maxCostPerRequest. Returns (targets, spot split, message);
    message is '' when no budget binds. Never cuts below min replicas or below what runs now."""
    c, prices = spec.constraints, spec.prices

    def split(t: dict[str, int]) -> dict[str, int]:
        return {r: spot_split(n, prices, c.max_spot_ratio) for r, n in t.items()}

    spots = split(targets)
    wanted_cost = cost_per_hour(targets, spots, prices)
    caps: list[tuple[float, str]] = []   # ($/hour allowed, the constraint in words, in $/hour where it is not)
    if c.max_cost_per_hour is not None:
        caps.append((c.max_cost_per_hour, f"maxCostPerHour ${c.max_cost_per_hour:.2f}/h"))
    rate = obs.request_rate if _finite(obs.request_rate) else None
    if c.max_cost_per_request is not None and rate and rate > 0:
        per_hour = c.max_cost_per_request * rate * 3600.0
        caps.append((per_hour, f"maxCostPerRequest ${c.max_cost_per_request:g} at {rate:.2f} req/s (${per_hour:.2f}/h)"))
    if not caps:
        return targets, spots, ""
    cap, what = min(caps, key=lambda x: x[0])
    if wanted_cost <= cap + 1e-9:
        return targets, spots, ""
    capped = dict(targets)
    floors = {r: max(c.min_for(r), min(current.get(r, 0), targets[r])) for r in targets}
    # remove one replica at a time from the pool with the most replicas above its floor
    while cost_per_hour(capped, split(capped), prices) > cap + 1e-9:
        room = [(capped[r] - floors[r], r) for r in capped if capped[r] > floors[r]]
        if not room:
            break
        _, r = max(room)
        capped[r] -= 1
    spots = split(capped)
    got = cost_per_hour(capped, spots, prices)
    wanted = sum(targets.values())
    msg = (f"budget limited: wanted {wanted} replicas (${wanted_cost:.2f}/h) > {what}; "
           f"holding {sum(capped.values())} (${got:.2f}/h)")
    return capped, spots, msg


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.1f}M"
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}" if x >= 10 else f"{x:.2f}"


def current_counts(obs: FleetObservation) -> dict[str, int]:
    return {p.role: p.replicas for p in obs.pools}


def idle_now(obs: FleetObservation) -> bool:
    """Known to be idle: a current, finite request rate of 0 and nothing running or queued. Missing,
    stale or NaN metrics are not idleness: a loop that cannot see must not scale to zero."""
    if not obs.metrics_fresh or not _finite(obs.request_rate):
        return False
    busy = sum((p.running or 0) + (p.queue_depth or 0) for p in obs.pools)
    return obs.request_rate <= 0 and busy <= 0


def scale_to_zero(obs: FleetObservation, spec: PolicySpec, state: PolicyState,
                  policy: str) -> tuple[Decision, PolicyState] | None:
    """Scale-to-zero and wake-up, shared by every policy. None when neither applies."""
    c = spec.constraints
    total = sum(p.replicas for p in obs.pools)
    allowed = c.scale_to_zero_idle_s is not None and all(c.min_for(p.role) == 0 for p in obs.pools)
    if total == 0:
        demand = (obs.demand_signal or 0) > 0 or (_finite(obs.request_rate) and obs.request_rate > 0)
        if demand:
            state.idle_since_s = None
            pools = tuple(PoolDecision(p.role, 0, max(1, c.min_for(p.role)), 0,
                                       f"{p.role} 0->{max(1, c.min_for(p.role))}: demand while scaled to zero "
                                       f"(signal {obs.demand_signal:g})", "scale_up") for p in obs.pools)
            for p in obs.pools:
                state.last_scale_up_s[p.role] = obs.time_s
            return Decision(obs.time_s, policy, pools, "waking from zero on demand"), state
        if allowed:
            pools = tuple(PoolDecision(p.role, 0, 0, 0, f"{p.role}: idle, staying at zero", "hold")
                          for p in obs.pools)
            return Decision(obs.time_s, policy, pools, "idle at zero"), state
        return None
    if not allowed:
        state.idle_since_s = None
        return None
    if idle_now(obs):
        if state.idle_since_s is None:
            state.idle_since_s = obs.time_s
        idle_for = obs.time_s - state.idle_since_s
        if idle_for >= c.scale_to_zero_idle_s:
            pools = tuple(PoolDecision(p.role, p.replicas, 0, 0,
                                       f"{p.role} {p.replicas}->0: idle for {idle_for:.0f} s "
                                       f">= {c.scale_to_zero_idle_s:.0f} s", "scale_down") for p in obs.pools)
            for p in obs.pools:
                state.last_scale_down_s[p.role] = obs.time_s
            return Decision(obs.time_s, policy, pools, "scaled to zero after idle time"), state
    else:
        state.idle_since_s = None
    return None


def finish(obs: FleetObservation, spec: PolicySpec, state: PolicyState, policy: str,
           targets: dict[str, int], reasons: dict[str, str], actions: dict[str, str],
           predicted: dict[str, float] | None = None,
           slo_scores: dict[str, float] | None = None, extra_reason: str = "") -> tuple[Decision, PolicyState]:
    """Clamp to min/max, apply budgets and the spot split, record scale times, build the Decision."""
    c = spec.constraints
    current = current_counts(obs)
    asked = dict(targets)
    clamped = {r: clamp_min_max(r, n, c) for r, n in targets.items()}
    targets, spots, budget_msg = apply_budget(clamped, current, obs, spec)
    pools = []
    for p in obs.pools:
        t = targets.get(p.role, p.replicas)
        reason = reasons.get(p.role, "")
        if p.role in asked and t != asked[p.role] and reason:
            bound = (f"minReplicas {t}" if clamped[p.role] > asked[p.role] else
                     f"maxReplicas {clamped[p.role]}" if clamped[p.role] < asked[p.role] else "")
            budget = "the budget below" if t != clamped[p.role] else ""
            reason = bounded_reason(p.role, p.replicas, t, reason,
                                    f"the load asks for {asked[p.role]}; " + ", then ".join(x for x in (bound, budget) if x))
        action = actions.get(p.role, "hold")
        if t > p.replicas:
            action = "scale_up" if action in ("hold", "scale_down") else action
            state.last_scale_up_s[p.role] = obs.time_s
        elif t < p.replicas:
            action = "scale_down" if action in ("hold", "scale_up") else action
            state.last_scale_down_s[p.role] = obs.time_s
        elif action in ("scale_up", "scale_down"):
            action = "hold"
        if t != p.replicas and not reason.startswith(p.role):
            reason = f"{p.role} {p.replicas}->{t}: {reason}"
        pools.append(PoolDecision(p.role, p.replicas, t, spots.get(p.role, 0), reason, action))
        state.last_targets[p.role] = t
    cost = cost_per_hour({pd.role: pd.target for pd in pools}, {pd.role: pd.target_spot for pd in pools},
                         spec.prices)
    words = "; ".join(pd.reason for pd in pools if pd.reason)
    if budget_msg:
        words = f"{words}; {budget_msg}" if words else budget_msg
    if extra_reason:
        words = f"{words}; {extra_reason}" if words else extra_reason
    return Decision(time_s=obs.time_s, policy=policy, pools=tuple(pools), reason=words,
                    budget_limited=bool(budget_msg), budget_message=budget_msg, cost_per_hour=cost,
                    predicted=tuple(sorted((predicted or {}).items())),
                    slo_scores=tuple(sorted((slo_scores or {}).items()))), state


_ARROW = re.compile(r"^\S+ \d+->\d+: ")


def bounded_reason(role: str, current: int, final: int, reason: str, why: str) -> str:
    """A policy's reason for a size the constraints changed: the arrow says what happens, `why` why not
    what the load asked for ("monolithic: holding 2: ... (the load asks for 1; minReplicas 2)")."""
    body = _ARROW.sub("", reason, count=1)
    head = f"{role} {current}->{final}" if final != current else f"{role}: holding {current}"
    return f"{head}: {body} ({why})"


def pool_obs(obs: FleetObservation, role: str) -> PoolObservation:
    p = obs.pool(role)
    return p if p is not None else PoolObservation(role=role)
