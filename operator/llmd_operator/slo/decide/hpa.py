"""A utilization-target policy in the style of the Kubernetes HorizontalPodAutoscaler (autoscaling/v2):

    desired = ceil(current * utilization / target)        # per pool
    |utilization / target - 1| <= tolerance (0.1)  -> no change
    scale-down stabilization: the highest recommendation of the last 300 s wins
    scale-up: at most max(+100%, +4 pods) per decision (HPA's default scaleUp policies)

Utilization is read from the pool observation: gpu_util (DCGM), kv_usage, or concurrency
((running + waiting) per ready replica / concurrency_per_replica).
"""

from __future__ import annotations

import math

from ..profiles import CapacityProfile
from .common import finish, hold
from .types import FleetObservation, PolicySpec, PolicyState, PoolObservation, _finite

NAME = "hpa"


def utilization(p: PoolObservation, spec: PolicySpec) -> float | None:
    m = spec.hpa.metric
    if m == "gpu_util":
        return p.gpu_util
    if m == "kv_usage":
        return p.kv_usage
    if m == "concurrency":
        if not (_finite(p.running) and _finite(p.queue_depth)) or p.ready <= 0:
            return None
        full = dict(spec.hpa.concurrency_by_role).get(p.role, spec.hpa.concurrency_per_replica)
        return (p.running + p.queue_depth) / p.ready / full
    raise ValueError(f"unknown HPA metric {m!r}")


REQUIRED_METRICS: tuple[str, ...] = ()  # the dispatcher holds when these are missing


def decide(obs: FleetObservation, spec: PolicySpec, profile: CapacityProfile | None,
           state: PolicyState) -> tuple:
    h = spec.hpa
    now = obs.time_s
    targets, reasons, actions = {}, {}, {}
    recs = state.extra.setdefault("hpa_recs", {})
    for p in obs.pools:
        u = utilization(p, spec)
        if not _finite(u):
            return hold(obs, NAME, state, f"{p.role}: {h.metric} missing")
        cur = p.replicas
        ratio = u / h.target
        if abs(ratio - 1.0) <= h.tolerance or p.ready == 0:
            desired = cur
        else:
            desired = math.ceil(cur * ratio - 1e-9)
        desired = min(desired, max(2 * cur, cur + 4))
        if p.role not in recs:   # first sight: as if the current size had been recommended all along
            recs[p.role] = [[now, cur]]
        hist = [r for r in recs.get(p.role, []) if r[0] > now - h.scale_down_stabilization_s]
        hist.append([now, desired])
        recs[p.role] = hist
        stabilized = max(r[1] for r in hist) if desired < cur else desired
        targets[p.role] = min(cur, stabilized) if desired < cur else desired
        if targets[p.role] != cur:
            reasons[p.role] = (f"{p.role} {cur}->{targets[p.role]}: {h.metric} {u:.2f} vs target "
                               f"{h.target:.2f}")
            actions[p.role] = "scale_up" if targets[p.role] > cur else "scale_down"
    return finish(obs, spec, state, NAME, targets, reasons, actions)
