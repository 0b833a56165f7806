"""The seed's threshold policy, table by table, as the seed describes it."""

import pytest

from llmd_operator.slo.decide import (Constraints, FleetObservation, Objective, PolicySpec, PolicyState,
                                      PoolObservation, Prices, SLOTargets, ThresholdRules, decide)

SLO = SLOTargets(ttft_p95_s=0.5, itl_p95_s=0.05)


def o(t=0.0, ttft=0.5, itl=0.05, n=4, util=0.6, rate=10.0, cost=None, roles=("monolithic",)):
    pools = tuple(PoolObservation(role=r, replicas_on_demand=n, ready_on_demand=n, queue_depth=0.0, running=10.0,
                                  kv_usage=0.3, gpu_util=util) for r in roles)
    return FleetObservation(time_s=t, pools=pools, request_rate=rate, mean_input_tokens=1000.0,
                            mean_output_tokens=200.0, ttft_p95_s=ttft, itl_p95_s=itl, cost_per_hour=cost)


def spec(**c):
    return PolicySpec(slo=SLO, constraints=Constraints(**c), prices=Prices(6.88, 2.5))


@pytest.mark.parametrize("ttft,itl,expected,action", [
    (0.5, 0.05, 4, "hold"),                 # violation 0: nothing
    (0.54, 0.05, 4, "hold"),                # weighted 0.04: not > 0.05
    (0.6, 0.05, 5, "add_replicas"),         # weighted 0.10 > 0.05: normal, +1
    (0.6, 0.06, 6, "add_replicas_fast"),    # weighted 0.20 > 0.15: high, +50% (>= +2)
    (1.0, 0.1, 6, "add_replicas_fast"),
])
def test_scale_up_by_weighted_violation_and_urgency(ttft, itl, expected, action):
    d, _ = decide("threshold", o(ttft=ttft, itl=itl), spec(), None, PolicyState())
    p = d.pools[0]
    assert p.target == expected
    assert p.action == action
    assert dict(d.slo_scores)["ttft_p95"] == pytest.approx((ttft - 0.5) / 0.5)


def test_high_urgency_adds_half_the_fleet():
    d, _ = decide("threshold", o(ttft=1.0, itl=0.1, n=10), spec(), None, PolicyState())
    assert d.pools[0].target == 15


def test_every_pool_of_a_disaggregated_deployment_moves():
    d, _ = decide("threshold", o(ttft=0.6, itl=0.05, roles=("prefill", "decode")), spec(), None, PolicyState())
    assert [p.target for p in d.pools] == [5, 5]


def test_over_budget_optimizes_efficiency_instead_of_scaling():
    d, _ = decide("threshold", o(ttft=0.6, cost=40.0), spec(max_cost_per_hour=30.0), None, PolicyState())
    assert d.pools[0].target == 4
    assert d.budget_limited and "optimize_efficiency" in d.budget_message and "$40.00/h" in d.budget_message


def test_cost_per_request_reports_optimize_batching_without_replica_change():
    # 4 x $6.88/h at 1 req/s = $0.0076 per request > $0.005
    d, _ = decide("threshold", o(rate=1.0), spec(), None, PolicyState())
    assert d.pools[0].target == 4
    assert "optimize_batching" in d.reason and "0.0076" in d.reason


def test_scale_down_after_five_minutes_of_overperformance_one_replica_at_a_time():
    st = PolicyState()
    targets = []
    for t in range(0, 660, 30):
        d, st = decide("threshold", o(t=float(t), ttft=0.4, itl=0.04, util=0.6), spec(), None, st)
        targets.append(d.pools[0].target)
    first = targets.index(3)
    assert first * 30 >= 300                       # minIdleTime 5m
    assert targets[first - 1] == 4


def test_overperformance_interrupted_restarts_the_clock():
    st = PolicyState()
    seq = [0.4] * 8 + [0.5] + [0.4] * 8           # one normal interval at 240 s
    for i, ttft in enumerate(seq):
        d, st = decide("threshold", o(t=i * 30.0, ttft=ttft, itl=0.04 if ttft < 0.5 else 0.05), spec(), None, st)
        assert d.pools[0].target == 4


def test_low_utilization_consolidates_after_two_minutes():
    st = PolicyState()
    targets, actions = [], []
    for t in range(0, 180, 30):
        d, st = decide("threshold", o(t=float(t), util=0.3), spec(), None, st)
        targets.append(d.pools[0].target)
        actions.append(d.pools[0].action)
    assert targets == [4, 4, 4, 4, 3, 4]          # held 120 s at t=120; the next step needs another 2m
    assert actions[4] == "consolidate_workloads"


def test_floor_objectives_flip_the_sign():
    rules = ThresholdRules(objectives=(Objective("throughput", 1000.0, 1.0, "floor", "tokens_per_s"),))
    s = PolicySpec(slo=SLO, threshold=rules, prices=Prices(6.88, 2.5))
    low = FleetObservation(time_s=0, pools=o().pools, request_rate=10.0, tokens_per_s=800.0)
    d, _ = decide("threshold", low, s, None, PolicyState())
    assert dict(d.slo_scores)["throughput"] == pytest.approx(0.2)
    assert d.pools[0].target == 6


def test_objective_values_from_the_caller_win():
    rules = ThresholdRules(objectives=(Objective("weighted_latency", 0.5, 0.4), Objective("gpu_cost_efficiency", 0.7, 0.3)))
    s = PolicySpec(slo=SLO, threshold=rules, prices=Prices(6.88, 2.5))
    ob = FleetObservation(time_s=0, pools=o().pools, request_rate=10.0,
                          objective_values=(("weighted_latency", 0.6), ("gpu_cost_efficiency", 0.7)))
    d, _ = decide("threshold", ob, s, None, PolicyState())
    assert sum(v * w for v, w in zip(dict(d.slo_scores).values(), (0.3, 0.4))) == pytest.approx(0.08)
    assert d.pools[0].target == 5


def test_an_objective_without_a_value_holds():
    rules = ThresholdRules(objectives=(Objective("custom", 1.0, 1.0),))
    s = PolicySpec(slo=SLO, threshold=rules)
    d, _ = decide("threshold", o(), s, None, PolicyState())
    assert d.held_for_missing_metrics


def test_no_traffic_counts_as_no_latency_not_missing_data():
    st = PolicyState()
    n, targets = 4, []
    for t in range(0, 900, 30):
        pools = (PoolObservation(role="monolithic", replicas_on_demand=n, ready_on_demand=n, gpu_util=0.0),)
        ob = FleetObservation(time_s=float(t), pools=pools, request_rate=0.0)
        d, st = decide("threshold", ob, spec(), None, st)
        assert not d.held_for_missing_metrics
        n = d.pools[0].target
        targets.append(n)
    assert targets[-1] < 4


def _seed_inline_policy(catalog):
    """The seed's llama-3.1-8b-optimized: an inline sloPolicy whose objectives include cost_per_request."""
    from llmd_operator.api.llmdeployment import LLMDeployment
    from llmd_operator.planning.plan import PlanOptions, plan_deployment
    from llmd_operator.slo import policy_inputs
    from tests.conftest import seed_documents
    body = next(d.body for d in seed_documents()
                if d.body["kind"] == "LLMDeployment" and d.body["metadata"]["name"] == "llama-3.1-8b-optimized")
    deployment = LLMDeployment.model_validate(body)
    plan = plan_deployment(deployment, catalog, PlanOptions())
    return policy_inputs.policy_spec(deployment, None, plan, spot_available=False, interval_s=30)


def _seed_load(rate, t=600.0, replicas=2, tokens_per_s=400.0):
    pools = tuple(PoolObservation(role=r, replicas_on_demand=replicas, ready_on_demand=replicas, queue_depth=0.0,
                                  running=4.0, kv_usage=0.2, gpu_util=0.5) for r in ("monolithic",))
    return FleetObservation(time_s=t, pools=pools, request_rate=rate, mean_input_tokens=500.0,
                            mean_output_tokens=10.0, ttft_p50_s=0.1, ttft_p95_s=0.2, itl_p50_s=0.02,
                            itl_p95_s=0.03, tokens_per_s=tokens_per_s)


def test_the_seeds_cost_per_request_objective_is_measured_and_acted_on(catalog):
    spec = _seed_inline_policy(catalog)
    assert "cost_per_request" in [o.name for o in spec.threshold.objectives]
    per_hour = 2 * spec.prices.on_demand_per_hour
    # 0.2 req/s on two replicas: dollars per request far above the $0.002 target
    d, _ = decide("threshold", _seed_load(rate=0.2), spec, None, PolicyState())
    assert not d.held_for_missing_metrics
    assert dict(d.slo_scores)["cost_per_request"] == pytest.approx((per_hour / (0.2 * 3600) - 0.002) / 0.002)
    # the default policy reports the same score in status
    d_default, _ = decide("default", _seed_load(rate=0.2), spec, None, PolicyState())
    assert dict(d_default.slo_scores)["cost_per_request"] == pytest.approx(dict(d.slo_scores)["cost_per_request"])
    # 20 req/s: cheap per request, fast, above the throughput floor: the seed's scale-down condition
    # (weighted violation below -0.1 for 5 minutes) removes a replica
    state = PolicyState()
    d, state = decide("threshold", _seed_load(rate=20.0), spec, None, state)
    assert dict(d.slo_scores)["cost_per_request"] == pytest.approx((per_hour / (20 * 3600) - 0.002) / 0.002)
    assert d.pools[0].target == 2
    d, state = decide("threshold", _seed_load(rate=20.0, t=900.0), spec, None, state)
    assert d.pools[0].target == 1 and d.pools[0].action == "remove_replicas"


def test_an_idle_deployment_has_no_cost_per_request_to_violate(catalog):
    spec = _seed_inline_policy(catalog)
    d, _ = decide("threshold", _seed_load(rate=0.0, tokens_per_s=0.0), spec, None, PolicyState())
    assert not d.held_for_missing_metrics
    assert dict(d.slo_scores)["cost_per_request"] == -1.0
