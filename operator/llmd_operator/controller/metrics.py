"""The operator's own Prometheus metrics, served on --metrics-port at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("llmd_reconcile_total", "Reconciles by kind and result", ["kind", "result"])
RECONCILE_SECONDS = Histogram("llmd_reconcile_duration_seconds", "Time to reconcile one object")
DECISIONS = Counter("llmd_scaling_decisions_total", "Scaling decisions the SLO loop acted on",
                    ["namespace", "deployment", "pool", "direction"])
SLO_SCORE = Gauge("llmd_slo_score", "Violation per objective: (actual - target) / target, negative when met",
                  ["namespace", "deployment", "objective"])
POOL_REPLICAS = Gauge("llmd_pool_replicas", "Desired replicas per pool and capacity type",
                      ["namespace", "deployment", "pool", "capacity_type"])
COST_TOTAL = Counter("llm_cost_total", "Dollars spent on GPU replicas since the operator started",
                     ["namespace", "deployment"])
COST_PER_HOUR = Gauge("llmd_cost_per_hour_usd", "Current cost of the desired replicas, USD per hour",
                      ["namespace", "deployment"])
BUDGET_LIMITED = Gauge("llmd_budget_limited", "1 when a cost constraint holds a deployment below what its SLO needs",
                       ["namespace", "deployment"])
SLO_ATTAINMENT = Gauge("llmd_slo_attainment", "Share of objectives met at the last evaluation (0..1)",
                       ["namespace", "deployment"])


def record_pools(namespace: str, name: str, pools: list[dict], cost_per_hour: float | None) -> None:
    for pool in pools:
        POOL_REPLICAS.labels(namespace, name, pool["role"], "spot").set(pool["spotReplicas"])
        POOL_REPLICAS.labels(namespace, name, pool["role"], "on-demand").set(pool["onDemandReplicas"])
    if cost_per_hour is not None:
        COST_PER_HOUR.labels(namespace, name).set(cost_per_hour)
