"""The operator's own Prometheus metrics, served on --metrics-port at /metrics."""

from __future__ import annotations

import threading
import time

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

RECONCILES = Counter("llmd_reconcile_total", "Reconciles by kind and result", ["kind", "result"])
RECONCILE_SECONDS = Histogram("llmd_reconcile_duration_seconds", "Time to reconcile one object")
DECISIONS = Counter("llmd_scaling_decisions_total", "Scaling decisions the SLO loop acted on",
                    ["namespace", "deployment", "pool", "direction"])
SLO_SCORE = Gauge("llmd_slo_score", "Violation per objective: (actual - target) / target, negative when met",
                  ["namespace", "deployment", "objective"])
OWNER_QUEUE_DEPTH = Gauge("llmd_owner_queue_depth",
                          "LLMDeployments waiting for a reconcile because one of their children changed")
POOL_REPLICAS = Gauge("llmd_pool_replicas", "Desired replicas per pool and capacity type",
                      ["namespace", "deployment", "pool", "capacity_type"])


class CostTotal:
    """llm_cost_total: dollars spent per deployment, integrated from its $/hour over time.

    Kept as (dollars so far, current $/hour, since when) and evaluated at scrape time, so no timer has
    to tick it and a standby replica, which reconciles nothing, reports nothing.
    """

    def __init__(self, registry=REGISTRY):
        self._lock = threading.Lock()
        self._state: dict[tuple[str, str], list[float]] = {}  # (namespace, deployment) -> [dollars, $/h, t]
        registry.register(self)

    @staticmethod
    def _spent(entry: list[float], now: float) -> float:
        dollars, rate, since = entry
        return dollars + rate * (now - since) / 3600

    def set_rate(self, namespace: str, deployment: str, dollars_per_hour: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._state.get((namespace, deployment), [0.0, 0.0, now])
            self._state[(namespace, deployment)] = [self._spent(entry, now), dollars_per_hour, now]

    def stop(self, namespace: str, deployment: str, now: float | None = None) -> None:
        """Keep the dollars counted so far and add no more until the next set_rate (the price is unknown)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if (namespace, deployment) in self._state:
                self._state[(namespace, deployment)] = [self._spent(self._state[(namespace, deployment)], now), 0.0, now]

    def value(self, namespace: str, deployment: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            return self._spent(self._state.get((namespace, deployment), [0.0, 0.0, now]), now)

    def forget(self, namespace: str, deployment: str) -> None:
        with self._lock:
            self._state.pop((namespace, deployment), None)

    def clear(self) -> None:
        with self._lock:
            self._state.clear()

    def collect(self):
        family = CounterMetricFamily("llm_cost", "Dollars spent on GPU replicas since the operator started",
                                     labels=["namespace", "deployment"])
        now = time.monotonic()
        with self._lock:  # one consistent reading: a deployment forgotten meanwhile is not read as $0
            spent = {key: self._spent(entry, now) for key, entry in self._state.items()}
        for (namespace, deployment), dollars in spent.items():
            family.add_metric([namespace, deployment], dollars)
        yield family


COST_TOTAL = CostTotal()
COST_PER_HOUR = Gauge("llmd_cost_per_hour_usd", "Current cost of the desired replicas, USD per hour",
                      ["namespace", "deployment"])
BUDGET_LIMITED = Gauge("llmd_budget_limited", "1 when a cost constraint holds a deployment below what its SLO needs",
                       ["namespace", "deployment"])
SLO_ATTAINMENT = Gauge("llmd_slo_attainment", "Share of objectives met at the last evaluation (0..1)",
                       ["namespace", "deployment"])
METRICS_AVAILABLE = Gauge("llmd_metrics_available",
                          "1 when the SLO loop read current vLLM metrics for a deployment at its last tick, 0 while "
                          "it holds replicas for lack of them", ["namespace", "deployment"])


def record_pools(namespace: str, name: str, pools: list[dict], cost_per_hour: float | None) -> None:
    for pool in pools:
        POOL_REPLICAS.labels(namespace, name, pool["role"], "spot").set(pool["spotReplicas"])
        POOL_REPLICAS.labels(namespace, name, pool["role"], "on-demand").set(pool["onDemandReplicas"])
    for role in {"monolithic", "prefill", "decode"} - {pool["role"] for pool in pools}:
        # a pool the plan no longer has (monolithic <-> disaggregated) runs nothing
        POOL_REPLICAS.remove_by_labels({"namespace": namespace, "deployment": name, "pool": role})
    if cost_per_hour is not None:
        COST_PER_HOUR.labels(namespace, name).set(cost_per_hour)
        COST_TOTAL.set_rate(namespace, name, cost_per_hour)
    else:
        # no price for its GPU (status.costPerHour is empty too): unknown is not the last known price, so
        # the gauge goes and llm_cost_total keeps what was spent without counting on at an old rate
        _remove((COST_PER_HOUR,), namespace, name)
        COST_TOTAL.stop(namespace, name)


def record_readings(namespace: str, name: str, scores: dict[str, float], budget_limited: bool,
                    metrics_available: bool) -> None:
    """One SLO loop tick's readings. Scores come for every objective or for none: without current
    metrics the score and attainment series go (llmd_metrics_available says why), so burn-rate alerts
    and dashboards average only what was measured, never a value frozen at the last good reading."""
    METRICS_AVAILABLE.labels(namespace, name).set(1 if metrics_available else 0)
    BUDGET_LIMITED.labels(namespace, name).set(1 if budget_limited else 0)
    # set first, then drop what is no longer scored: a scrape in between sees no gap
    for objective, value in scores.items():
        SLO_SCORE.labels(namespace, name, objective).set(value)
    for labels in _label_sets(SLO_SCORE):
        if (labels["namespace"], labels["deployment"]) == (namespace, name) and labels["objective"] not in scores:
            SLO_SCORE.remove(namespace, name, labels["objective"])
    if scores:
        SLO_ATTAINMENT.labels(namespace, name).set(sum(1 for v in scores.values() if v <= 0) / len(scores))
    else:
        _remove((SLO_ATTAINMENT,), namespace, name)


PER_DEPLOYMENT = (DECISIONS, SLO_SCORE, POOL_REPLICAS, COST_PER_HOUR, BUDGET_LIMITED, SLO_ATTAINMENT,
                  METRICS_AVAILABLE)
LOOP_READINGS = (SLO_SCORE, SLO_ATTAINMENT, BUDGET_LIMITED, METRICS_AVAILABLE)


def forget(namespace: str, name: str) -> None:
    """A deleted LLMDeployment: its series go, and llm_cost stops counting dollars for it."""
    _remove(PER_DEPLOYMENT, namespace, name)
    COST_TOTAL.forget(namespace, name)


def forget_loop_readings(namespace: str, name: str) -> None:
    """A deployment the SLO loop no longer sizes: its scores and budget flag go, so no alert fires on the
    values they froze at."""
    _remove(LOOP_READINGS, namespace, name)


def keep_loop_readings_of(deployments: set[tuple[str, str]]) -> None:
    """The SLO loop's readings only for the (namespace, deployment)s it sizes now: one deleted or handed
    back while a tick was recording it loses its series at the next tick instead of keeping them."""
    for family in LOOP_READINGS:
        gone = {(labels["namespace"], labels["deployment"]) for labels in _label_sets(family)} - deployments
        for namespace, name in gone:
            _remove((family,), namespace, name)


def _remove(families, namespace: str, name: str) -> None:
    """Every series of one deployment in these families."""
    for family in families:
        family.remove_by_labels({"namespace": namespace, "deployment": name})


def _label_sets(family) -> list[dict[str, str]]:
    """The label sets a metric family exports now (a copy: removing series while reading them is safe)."""
    return [sample.labels for metric in family.collect() for sample in metric.samples]


def forget_all_deployments() -> None:
    """A replica that stops being the active peer reports nothing per deployment: the active one does,
    and dashboards and alerts take the max over replicas."""
    for family in PER_DEPLOYMENT:
        family.clear()
    COST_TOTAL.clear()
