"""Behaviour every scaling policy shares: missing metrics hold, min/max, budget, spot, scale to zero,
state survives a JSON round trip, algorithm names map to policies."""

import json
import math
from dataclasses import replace

import pytest

from llmd_operator.slo.decide import (Constraints, FleetObservation, PolicySpec, PolicyState, PoolObservation,
                                      Prices, SLOTargets, decide, policy_name)
from llmd_operator.slo.profiles import default_profile

PROFILE = default_profile("llama-3.1-8b", "NVIDIA-H100-80GB-HBM3", "fp8")
POLICIES = ["default", "threshold", "hpa"]


def pool(n=2, role="monolithic", spot=0, running=20.0, queue=0.0, util=0.6, kv=0.3):
    return PoolObservation(role=role, replicas_on_demand=n - spot, replicas_spot=spot, ready_on_demand=n - spot,
                           ready_spot=spot, queue_depth=queue, running=running, kv_usage=kv, gpu_util=util,
                           tokens_per_s=1000.0)


def obs(t=1000.0, rate=10.0, n=2, ttft=0.2, itl=0.02, pools=None, **kw):
    return FleetObservation(time_s=t, pools=pools or (pool(n),), request_rate=rate, mean_input_tokens=1000.0,
                            mean_output_tokens=200.0, ttft_p50_s=ttft and ttft / 2, ttft_p95_s=ttft, itl_p50_s=itl and itl / 2,
                            itl_p95_s=itl, tokens_per_s=rate * 200, **kw)


def spec(**constraints):
    return PolicySpec(slo=SLOTargets(0.5, 0.05), constraints=Constraints(**constraints),
                      prices=Prices(on_demand_per_hour=6.88, spot_per_hour=2.5))


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("bad", [
    {"metrics_fresh": False},
    {"request_rate": float("nan")},
    {"request_rate": None},
])
def test_missing_stale_or_nan_metrics_hold_and_say_so(policy, bad):
    o = replace(obs(rate=500.0, ttft=5.0, itl=0.5), **bad)   # would scale up if the data were trusted
    if policy != "default" and "request_rate" in bad:
        o = replace(o, ttft_p95_s=float("nan"), itl_p95_s=None, pools=(replace(pool(2), gpu_util=None, running=None),))
    d, _ = decide(policy, o, spec(), PROFILE, PolicyState())
    assert d.held_for_missing_metrics
    assert [p.target for p in d.pools] == [2]


@pytest.mark.parametrize("policy", POLICIES)
def test_never_above_max_under_overload(policy):
    o = obs(rate=5000.0, n=3, ttft=9.0, itl=0.4, pools=(pool(3, running=900, queue=500, util=1.0, kv=1.0),))
    d, _ = decide(policy, o, spec(default_max_replicas=4), PROFILE, PolicyState())
    assert d.pools[0].target <= 4
    assert d.pools[0].target > 3


@pytest.mark.parametrize("policy", POLICIES)
def test_never_below_min_when_idle(policy):
    st = PolicyState()
    n = 5
    for t in range(0, 3600, 30):
        o = obs(t=float(t), rate=0.01, n=n, ttft=0.05, itl=0.006,
                pools=(pool(n, running=0.0, util=0.0, kv=0.0),))
        d, st = decide(policy, o, spec(default_min_replicas=2), PROFILE, st)
        n = d.pools[0].target
        assert n >= 2
    assert n == 2


def test_a_size_the_constraints_changed_says_what_the_load_asked_for():
    st = PolicyState()
    for t in range(0, 300, 30):        # past the cooldown: the load alone would shrink the pool to 1
        d, st = decide("default", obs(t=float(t), rate=0.5, n=2), spec(default_min_replicas=2), PROFILE, st)
    assert d.pools[0].target == 2
    assert d.pools[0].reason.startswith("monolithic: holding 2: ")
    assert d.pools[0].reason.endswith("(the load asks for 1; minReplicas 2)")
    o = obs(rate=5000.0, n=3, ttft=9.0, itl=0.4, pools=(pool(3, running=900, queue=500, util=1.0, kv=1.0),))
    d, _ = decide("default", o, spec(default_max_replicas=4), PROFILE, PolicyState())
    assert d.pools[0].reason.startswith("monolithic 3->4: ") and "; maxReplicas 4)" in d.pools[0].reason


@pytest.mark.parametrize("value,words", [(3.456, "3.46"), (47.2, "47"), (9712.0, "9.7k"), (1_101_300.0, "1.1M")])
def test_rates_read_in_few_digits(value, words):
    from llmd_operator.slo.decide.common import fmt_rate
    assert fmt_rate(value) == words


def test_the_reason_names_the_latency_that_is_over_its_target():
    d, _ = decide("default", obs(rate=60.0, n=2, ttft=1.5, itl=0.02), spec(), PROFILE, PolicyState())
    assert "TTFT p95 1500 ms > 500 ms target" in d.pools[0].reason
    d, _ = decide("default", obs(rate=60.0, n=2, ttft=0.2, itl=0.02), spec(), PROFILE, PolicyState())
    assert "ITL p95 20 ms <= 50 ms target" in d.pools[0].reason


@pytest.mark.parametrize("policy", ["default", "threshold"])
def test_budget_binding_sets_budget_limited_with_numbers(policy):
    o = obs(rate=200.0, n=4, ttft=2.0, itl=0.2, pools=(pool(4, running=800, queue=100, util=1.0),))
    d, _ = decide(policy, o, spec(max_cost_per_hour=30.0), PROFILE, PolicyState())
    assert d.budget_limited
    assert "> maxCostPerHour $30.00/h; holding" in d.budget_message   # the cap said once, in $/hour
    assert d.cost_per_hour <= 30.0 or d.pools[0].target == 4


def test_max_cost_per_request_caps_scale_up_with_numbers():
    o = obs(rate=50.0, n=1, ttft=2.0, itl=0.2)
    d, _ = decide("default", o, spec(max_cost_per_request=0.0001), PROFILE, PolicyState())
    assert d.budget_limited and "maxCostPerRequest $0.0001 at 50.00 req/s ($18.00/h); holding" in d.budget_message
    assert d.cost_per_hour <= 0.0001 * 50 * 3600 + 6.88


@pytest.mark.parametrize("policy", POLICIES)
def test_scale_to_zero_after_idle_time_and_back_on_demand(policy):
    s = spec(default_min_replicas=0, scale_to_zero_idle_s=300.0)
    st = PolicyState()
    idle = dict(rate=0.0, ttft=0.05, itl=0.006)
    targets = []
    for t in (0, 120, 240, 330):
        d, st = decide(policy, obs(t=float(t), n=1, pools=(pool(1, running=0.0, util=0.0),), **idle), s, PROFILE, st)
        targets.append(d.pools[0].target)
    assert targets[:3] == [1, 1, 1] and targets[3] == 0
    zero = obs(t=400.0, n=0, pools=(pool(0, running=0.0, util=0.0),), rate=0.0, ttft=None, itl=None)
    d, st = decide(policy, zero, s, PROFILE, st)
    assert d.pools[0].target == 0
    d, st = decide(policy, replace(zero, time_s=430.0, demand_signal=3.0),
                   s, PROFILE, st)
    assert d.pools[0].target == 1 and "demand" in d.reason


@pytest.mark.parametrize("policy", POLICIES)
def test_a_loop_that_cannot_see_never_scales_to_zero(policy):
    """Prometheus unreachable: no rate, nothing running reported. That is not idleness."""
    s = spec(default_min_replicas=0, scale_to_zero_idle_s=300.0)
    st = PolicyState()
    for t in (0, 120, 240, 330, 600):
        blind = obs(t=float(t), n=2, pools=(pool(2, running=None, queue=None, util=None, kv=None),),
                    rate=math.nan, ttft=None, itl=None, metrics_fresh=False)
        d, st = decide(policy, blind, s, PROFILE, st)
        assert d.pools[0].target == 2 and d.held_for_missing_metrics


@pytest.mark.parametrize("ratio,expected_spot", [(0.0, 0), (0.5, 3), (0.8, 5), (1.0, 7)])
def test_spot_share_respects_max_spot_ratio(ratio, expected_spot):
    o = obs(rate=130.0, n=7, ttft=0.2, itl=0.03, pools=(pool(7, running=200),))
    d, _ = decide("default", o, spec(max_spot_ratio=ratio), PROFILE, PolicyState())
    p = d.pools[0]
    assert p.target_spot == expected_spot * p.target // 7 or p.target_spot == math.floor(p.target * ratio)
    assert p.target_spot <= math.floor(p.target * ratio + 1e-9)


def test_no_spot_when_spot_is_unavailable_or_not_cheaper():
    o = obs(rate=100.0, n=6)
    s = spec(max_spot_ratio=0.8)
    d, _ = decide("default", o, replace(s, prices=Prices(6.88, 2.5, spot_available=False)), PROFILE, PolicyState())
    assert d.pools[0].target_spot == 0
    d, _ = decide("default", o, replace(s, prices=Prices(2.0, 2.5)), PROFILE, PolicyState())
    assert d.pools[0].target_spot == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_state_round_trips_through_json(policy):
    st = PolicyState()
    for t, r in ((0, 10.0), (30, 40.0), (60, 80.0)):
        d, st = decide(policy, obs(t=float(t), rate=r, itl=0.06, ttft=0.6), spec(), PROFILE, st)
    text = st.to_json()
    json.loads(text)
    back = PolicyState.from_json(text)
    assert back.to_json() == text
    d1, s1 = decide(policy, obs(t=90.0, rate=80.0), spec(), PROFILE, st)
    d2, s2 = decide(policy, obs(t=90.0, rate=80.0), spec(), PROFILE, back)
    assert d1 == d2 and s1.to_json() == s2.to_json()
    assert PolicyState.from_json(None).to_json() == PolicyState().to_json()


@pytest.mark.parametrize("algorithm,name", [
    ("cost_aware_proportional", "default"), (None, "default"), ("", "default"), ("nonsense", "default"),
    ("default", "default"), ("threshold", "threshold"), ("hpa", "hpa"), ("THRESHOLD", "threshold"),
])
def test_algorithm_names(algorithm, name):
    assert policy_name(algorithm) == name


def test_decide_is_pure():
    st = PolicyState()
    before = st.to_json()
    o = obs(rate=100.0)
    d1, _ = decide("default", o, spec(), PROFILE, st)
    d2, _ = decide("default", o, spec(), PROFILE, st)
    assert st.to_json() == before and d1 == d2


def test_spot_pools_keep_a_spare_replica():
    o = obs(rate=200.0, n=2)
    on_demand, _ = decide("default", o, spec(max_spot_ratio=0.0), PROFILE, PolicyState())
    spot, _ = decide("default", o, spec(max_spot_ratio=0.8), PROFILE, PolicyState())
    assert spot.pools[0].target == on_demand.pools[0].target + 1
    assert spot.pools[0].target_spot >= 1
