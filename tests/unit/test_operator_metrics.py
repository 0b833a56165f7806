"""The values of the operator's own metrics, as the dashboards and alerts read them.

The module's gauges live in the default registry: every test uses its own deployment names, reads back
with REGISTRY.get_sample_value, and forgets what it recorded.
"""

from __future__ import annotations

import itertools
import time

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from llmd_operator.controller import metrics
from llmd_operator.controller.metrics import CostTotal

H100_ON_DEMAND, H100_SPOT = 6.88, 2.50
_names = itertools.count()


@pytest.fixture
def deployment():
    """A (namespace, name) no other test uses; its series are dropped afterwards."""
    made = []

    def new(namespace: str = "metrics-ns", name: str | None = None) -> tuple[str, str]:
        made.append((namespace, name or f"metrics-{next(_names)}"))
        return made[-1]

    yield new
    for namespace, name in made:
        metrics.forget(namespace, name)


def sample(name: str, namespace: str, deployment: str, **labels) -> float | None:
    return REGISTRY.get_sample_value(name, {"namespace": namespace, "deployment": deployment, **labels})


def replicas(namespace: str, name: str) -> dict[tuple[str, str], float]:
    """llmd_pool_replicas of one deployment: (pool, capacity type) -> value."""
    return {(s.labels["pool"], s.labels["capacity_type"]): s.value
            for family in REGISTRY.collect() if family.name == "llmd_pool_replicas"
            for s in family.samples if (s.labels["namespace"], s.labels["deployment"]) == (namespace, name)}


def series_of(namespace: str, name: str) -> set[str]:
    """Every sample name the default registry exports for one deployment (counters' _created aside)."""
    return {s.name for family in REGISTRY.collect() for s in family.samples
            if (s.labels.get("namespace"), s.labels.get("deployment")) == (namespace, name)
            and not s.name.endswith("_created")}


def readings(namespace: str, name: str, scores: dict[str, float] | None = None, budget_limited: bool = False) -> None:
    metrics.record_readings(namespace, name, {"ttft_p95": -0.2} if scores is None else scores, budget_limited, True)


def pools(spot: int, on_demand: int, role: str = "monolithic") -> list[dict]:
    return [{"role": role, "spotReplicas": spot, "onDemandReplicas": on_demand}]


# --------------------------------------------------------------------------------- llm_cost_total ---

def test_cost_grows_by_dollars_per_hour_times_hours_and_keeps_counting_across_a_rate_change():
    cost = CostTotal(CollectorRegistry())
    cost.set_rate("team", "chat", H100_ON_DEMAND, now=0.0)           # one H100 on-demand
    assert cost.value("team", "chat", now=0.0) == 0.0
    assert cost.value("team", "chat", now=1800.0) == pytest.approx(3.44)
    assert cost.value("team", "chat", now=3600.0) == pytest.approx(6.88)
    cost.set_rate("team", "chat", 2 * H100_ON_DEMAND, now=3600.0)    # scaled to two after an hour
    assert cost.value("team", "chat", now=3600.0) == pytest.approx(6.88)   # no jump, no reset
    assert cost.value("team", "chat", now=5400.0) == pytest.approx(6.88 + 6.88)
    cost.set_rate("team", "chat", 2 * H100_ON_DEMAND, now=5400.0)    # the same rate again: nothing lost
    cost.set_rate("team", "chat", 0.0, now=7200.0)                   # scaled to zero
    assert cost.value("team", "chat", now=7200.0) == pytest.approx(6.88 + 13.76)
    assert cost.value("team", "chat", now=99_999.0) == pytest.approx(6.88 + 13.76)
    cost.stop("team", "other", now=7200.0)                           # stopping what never counted adds nothing
    assert cost.value("team", "other", now=7200.0) == 0.0


def test_a_scrape_reads_what_was_spent_up_to_the_scrape():
    registry = CollectorRegistry()
    cost = CostTotal(registry)
    started = time.monotonic()
    cost.set_rate("team", "chat", H100_ON_DEMAND, now=started - 3 * 3600)  # two hours at one replica
    cost.set_rate("team", "chat", 2 * H100_ON_DEMAND, now=started - 3600)  # then one hour at two
    read = registry.get_sample_value("llm_cost_total", {"namespace": "team", "deployment": "chat"})
    assert read == pytest.approx(2 * 6.88 + 13.76, abs=0.01)
    assert registry.get_sample_value("llm_cost_total", {"namespace": "team", "deployment": "other"}) is None
    cost.forget("team", "chat")
    assert registry.get_sample_value("llm_cost_total", {"namespace": "team", "deployment": "chat"}) is None


# ----------------------------------------------------------------------------------- record_pools ---

def test_replicas_per_pool_and_capacity_type_and_cost_per_hour(deployment):
    namespace, name = deployment()
    cost = 3 * H100_SPOT + 1 * H100_ON_DEMAND
    metrics.record_pools(namespace, name, pools(spot=3, on_demand=1), cost)
    assert replicas(namespace, name) == {("monolithic", "spot"): 3.0, ("monolithic", "on-demand"): 1.0}
    assert sample("llmd_cost_per_hour_usd", namespace, name) == pytest.approx(14.38)
    now = time.monotonic()
    assert metrics.COST_TOTAL.value(namespace, name, now=now + 3600) - metrics.COST_TOTAL.value(namespace, name, now=now) \
        == pytest.approx(14.38)

    metrics.record_pools(namespace, name, pools(spot=0, on_demand=4), 4 * H100_ON_DEMAND)   # spot fallback
    assert replicas(namespace, name) == {("monolithic", "spot"): 0.0, ("monolithic", "on-demand"): 4.0}
    assert sample("llmd_cost_per_hour_usd", namespace, name) == pytest.approx(27.52)


def test_a_pool_the_plan_no_longer_has_loses_its_series(deployment):
    namespace, name = deployment()
    metrics.record_pools(namespace, name, pools(spot=1, on_demand=1), 9.38)
    split = pools(spot=2, on_demand=0, role="prefill") + pools(spot=0, on_demand=3, role="decode")
    metrics.record_pools(namespace, name, split, 2 * H100_SPOT + 3 * H100_ON_DEMAND)   # now disaggregated
    assert replicas(namespace, name) == {("prefill", "spot"): 2.0, ("prefill", "on-demand"): 0.0,
                                         ("decode", "spot"): 0.0, ("decode", "on-demand"): 3.0}


def test_a_deployment_without_a_price_exports_no_cost_per_hour_and_stops_counting_dollars(deployment):
    """A GPU the price table lacks: status.costPerHour is empty, so is the gauge, and llm_cost_total keeps
    what was spent but does not go on at the old price (the anomaly alert would read a made-up spend)."""
    namespace, name = deployment()
    metrics.record_pools(namespace, name, pools(spot=0, on_demand=1), H100_ON_DEMAND)
    metrics.record_pools(namespace, name, pools(spot=0, on_demand=1), None)
    assert sample("llmd_cost_per_hour_usd", namespace, name) is None
    now = time.monotonic()
    spent = metrics.COST_TOTAL.value(namespace, name, now=now)
    assert metrics.COST_TOTAL.value(namespace, name, now=now + 3600) == pytest.approx(spent)
    assert sample("llm_cost_total", namespace, name) == pytest.approx(spent, abs=0.001)
    assert replicas(namespace, name) == {("monolithic", "spot"): 0.0, ("monolithic", "on-demand"): 1.0}


# -------------------------------------------------------------------------------- record_readings ---

def test_scores_attainment_budget_and_metrics_available(deployment):
    namespace, name = deployment()
    metrics.record_readings(namespace, name, {"ttft_p95": -0.25, "itl_p95": 0.4, "e2e_p50": 0.0, "tps": -1.0},
                            budget_limited=True, metrics_available=True)
    for objective, value in {"ttft_p95": -0.25, "itl_p95": 0.4, "e2e_p50": 0.0, "tps": -1.0}.items():
        assert sample("llmd_slo_score", namespace, name, objective=objective) == value
    assert sample("llmd_slo_attainment", namespace, name) == 0.75   # on target (0) counts as met
    assert sample("llmd_budget_limited", namespace, name) == 1.0
    assert sample("llmd_metrics_available", namespace, name) == 1.0

    metrics.record_readings(namespace, name, {"ttft_p95": 0.1, "itl_p95": 0.4}, budget_limited=False,
                            metrics_available=True)
    assert sample("llmd_slo_attainment", namespace, name) == 0.0
    assert sample("llmd_budget_limited", namespace, name) == 0.0
    assert sample("llmd_slo_score", namespace, name, objective="e2e_p50") is None   # no longer scored

    metrics.record_readings(namespace, name, {}, budget_limited=False, metrics_available=False)
    assert sample("llmd_metrics_available", namespace, name) == 0.0
    assert sample("llmd_slo_attainment", namespace, name) is None
    assert sample("llmd_slo_score", namespace, name, objective="ttft_p95") is None


def test_readings_of_one_deployment_leave_the_others_alone(deployment):
    namespace, a = deployment()
    _, b = deployment()
    metrics.record_readings(namespace, a, {"ttft_p95": -0.5}, False, True)
    metrics.record_readings(namespace, b, {"ttft_p95": 0.5, "itl_p95": 0.5}, True, True)
    metrics.record_readings(namespace, a, {}, False, False)
    assert sample("llmd_slo_score", namespace, b, objective="ttft_p95") == 0.5
    assert sample("llmd_slo_attainment", namespace, b) == 0.0
    assert sample("llmd_budget_limited", namespace, b) == 1.0


# ---------------------------------------------------------------------- decisions (SLO loop acts) ---

def test_each_scale_of_a_pool_deployment_counts_one_decision(deployment, monkeypatch):
    from llmd_operator.render import labels
    from llmd_operator.slo import loop
    from llmd_operator.slo.decide import Decision, PoolDecision

    namespace, name = deployment()
    monkeypatch.setattr(loop.kube, "scale", lambda *args: None)
    workloads = [{"metadata": {"name": labels.workload_name(name, "decode", c)}, "spec": {"replicas": n}}
                 for c, n in (("spot", 3), ("on-demand", 1))]
    to_on_demand = Decision(time_s=0.0, policy="default", reason="spot is gone",
                            pools=(PoolDecision("decode", 4, 4, 0, "spot is gone", "scale_up"),))
    loop._actuate(namespace, name, to_on_demand, workloads)
    assert sample("llmd_scaling_decisions_total", namespace, name, pool="decode", direction="up") == 1.0
    assert sample("llmd_scaling_decisions_total", namespace, name, pool="decode", direction="down") == 1.0
    loop._actuate(namespace, name, to_on_demand, workloads)
    assert sample("llmd_scaling_decisions_total", namespace, name, pool="decode", direction="up") == 2.0


# ------------------------------------------------------------------------------ forgetting series ---

def _everything(namespace: str, name: str) -> None:
    metrics.record_pools(namespace, name, pools(spot=1, on_demand=1), H100_SPOT + H100_ON_DEMAND)
    metrics.record_readings(namespace, name, {"ttft_p95": -0.2, "itl_p95": 0.1}, True, True)
    metrics.DECISIONS.labels(namespace, name, "monolithic", "up").inc()


ALL = {"llmd_pool_replicas", "llmd_cost_per_hour_usd", "llm_cost_total", "llmd_slo_score", "llmd_slo_attainment",
       "llmd_budget_limited", "llmd_metrics_available", "llmd_scaling_decisions_total"}
LOOP = {"llmd_slo_score", "llmd_slo_attainment", "llmd_budget_limited", "llmd_metrics_available"}


def test_forget_drops_every_series_of_that_deployment_and_nothing_else(deployment):
    gone, kept = deployment("team-a"), deployment("team-a")
    same_name_elsewhere = deployment("team-b", gone[1])
    for d in (gone, kept, same_name_elsewhere):
        _everything(*d)
    assert series_of(*gone) == ALL
    metrics.forget(*gone)
    assert series_of(*gone) == set()
    assert metrics.COST_TOTAL.value(*gone) == 0.0
    assert series_of(*kept) == ALL and series_of(*same_name_elsewhere) == ALL
    assert sample("llmd_slo_score", *kept, objective="itl_p95") == 0.1


def test_forget_loop_readings_keeps_replicas_cost_and_decisions(deployment):
    handed_back, sized = deployment(), deployment()
    for d in (handed_back, sized):
        _everything(*d)
    metrics.forget_loop_readings(*handed_back)
    assert series_of(*handed_back) == ALL - LOOP
    assert replicas(*handed_back) == {("monolithic", "spot"): 1.0, ("monolithic", "on-demand"): 1.0}
    assert sample("llmd_cost_per_hour_usd", *handed_back) == pytest.approx(9.38)
    assert series_of(*sized) == ALL


def test_keep_loop_readings_of_drops_the_readings_of_deployments_the_loop_no_longer_sizes(deployment):
    a, b, c = deployment(), deployment(), deployment("other-ns")
    for d in (a, b, c):
        _everything(*d)
    metrics.keep_loop_readings_of({a, c})
    assert series_of(*a) == ALL and series_of(*c) == ALL
    assert series_of(*b) == ALL - LOOP   # its replicas and cost are the reconcile's, not the loop's


def test_a_replica_that_stops_leading_reports_no_deployment(deployment):
    d = deployment()
    _everything(*d)
    metrics.RECONCILES.labels(kind="LLMDeployment", result="ok").inc()
    metrics.forget_all_deployments()
    assert series_of(*d) == set()
    assert REGISTRY.get_sample_value("llmd_reconcile_total", {"kind": "LLMDeployment", "result": "ok"}) >= 1.0
