"""The prefill pool's capacity model (slo/decide/capacity.py): one M/G/c queue, table-tested."""

import math
from dataclasses import replace

import pytest

from llmd_operator.slo.decide import capacity
from llmd_operator.slo.decide.types import SLOTargets, Tuning
from llmd_operator.slo.profiles import default_profile

PROFILE = default_profile("llama-3.1-8b", "NVIDIA-H100-80GB-HBM3", "fp8")
TN = Tuning()
SLO = SLOTargets(5.0, 0.05)        # Mooncake-like: 15k-token prompts, 5 s TTFT
MEAN_IN = 15000.0


@pytest.mark.parametrize("servers,offered,expected", [
    (1, 0.5, 0.5),                 # M/M/1: P(wait) = rho
    (1, 0.9, 0.9),
    (2, 1.0, 1 / 3),               # M/M/2 at rho 0.5: rho^2 * 2 / (1 + rho) = 1/3
    (3, 0.0, 0.0),
    (3, 3.0, 1.0),                 # unstable
    (4, 5.0, 1.0),
    (0, 0.5, 1.0),
])
def test_erlang_c(servers, offered, expected):
    assert capacity.erlang_c(servers, offered) == pytest.approx(expected)


def test_erlang_c_falls_with_pooling_at_the_same_utilization():
    probs = [capacity.erlang_c(c, 0.8 * c) for c in (1, 2, 5, 10, 50)]
    assert probs == sorted(probs, reverse=True) and probs[-1] < 0.2


@pytest.mark.parametrize("servers,offered,service,cv2,expected", [
    (1, 0.5, 1.0, 1.0, 2.0 * math.log(10.0)),    # M/M/1: wait | wait ~ Exp(mean S / (1 - rho))
    (1, 0.5, 1.0, 3.0, 4.0 * math.log(10.0)),    # Allen-Cunneen (1 + cs^2) / 2 = 2
    (1, 0.04, 1.0, 1.0, 0.0),                    # P(wait) <= 5%: the p95 arrival does not wait
    (2, 2.0, 1.0, 1.0, math.inf),
])
def test_wait_quantile(servers, offered, service, cv2, expected):
    assert capacity.mgc_wait_quantile_s(servers, offered, service, cv2) == pytest.approx(expected)


@pytest.mark.parametrize("cv2,k,expected", [(1.0, 1, 10.0), (1.0, 2, 200.0), (1.0, 4, 24e4), (0.0, 3, 1e3),
                                            (0.5, 2, 150.0)])
def test_gamma_prompt_length_moments(cv2, k, expected):
    assert capacity.prompt_length_moment(10.0, cv2, k) == pytest.approx(expected)


def test_service_cv2_exceeds_length_cv2_with_the_quadratic_term():
    cv2 = capacity.prefill_service_cv2(PROFILE, MEAN_IN, TN)
    linear = capacity.prefill_service_cv2(replace(PROFILE, prefill_a=0.0), MEAN_IN, TN)
    assert linear == pytest.approx(TN.prompt_cv2)
    assert cv2 > TN.prompt_cv2


def test_batched_work_per_prompt_is_at_most_the_prompt_alone():
    alone, work, _, budget = capacity.prefill_pool_terms(PROFILE, 3000.0, SLO, TN)
    assert work < alone        # a loaded replica shares each step's fixed cost across prompts
    assert budget == pytest.approx(5.0 * TN.ttft_margin - alone - capacity.kv_transfer_s(
        PROFILE, 3000.0, TN.kv_transfer_bytes_per_s))


@pytest.mark.parametrize("servers", [2, 3, 5, 10, 20])
def test_a_pool_serves_more_than_its_replicas_apart(servers):
    one = capacity.prefill_pool_capacity(PROFILE, 1, MEAN_IN, SLO, TN)
    pool = capacity.prefill_pool_capacity(PROFILE, servers, MEAN_IN, SLO, TN)
    assert pool > servers * one


def test_pool_capacity_rises_with_servers_and_is_capped_by_utilization():
    caps = [capacity.prefill_pool_capacity(PROFILE, c, MEAN_IN, SLO, TN) for c in range(0, 30)]
    assert caps[0] == 0.0 and all(b > a for a, b in zip(caps, caps[1:]))
    _, work, _, _ = capacity.prefill_pool_terms(PROFILE, MEAN_IN, SLO, TN)
    assert all(c * work <= TN.prefill_max_utilization * n + 1e-9 for n, c in enumerate(caps))
    assert caps[29] * work == pytest.approx(TN.prefill_max_utilization * 29)   # large pools: the cap binds


@pytest.mark.parametrize("rate", [0.3, 1.0, 2.5, 5.0, 12.0, 40.0])
def test_replicas_are_the_smallest_pool_that_serves_the_rate(rate):
    need = capacity.prefill_replicas(PROFILE, rate, MEAN_IN, SLO, TN)
    n = math.ceil(need - 1e-9)
    assert capacity.prefill_pool_capacity(PROFILE, n, MEAN_IN, SLO, TN) >= rate * (1 - 1e-9)
    assert capacity.prefill_pool_capacity(PROFILE, n - 1, MEAN_IN, SLO, TN) < rate


def test_replicas_rise_monotonically_and_continuously_with_rate():
    rates = [0.05 * i for i in range(1, 600)]
    need = [capacity.prefill_replicas(PROFILE, r, MEAN_IN, SLO, TN) for r in rates]
    assert all(b >= a for a, b in zip(need, need[1:]))
    assert max(b - a for a, b in zip(need, need[1:])) < 0.2      # no jumps


def test_pooled_model_needs_fewer_replicas_than_separate_queues_at_load():
    one = capacity.prefill_rate_per_replica(PROFILE, MEAN_IN, SLO, TN)
    for rate in (5.0, 10.0, 30.0):
        assert capacity.prefill_replicas(PROFILE, rate, MEAN_IN, SLO, TN) < rate / one


@pytest.mark.parametrize("rate,mean_in,ttft,expected", [
    (0.0, MEAN_IN, 5.0, 0.0),
    (-1.0, MEAN_IN, 5.0, 0.0),
    (1.0, MEAN_IN, 0.2, math.inf),      # one prompt alone takes longer than the target
    (math.inf, MEAN_IN, 5.0, math.inf),
])
def test_replicas_edge_cases(rate, mean_in, ttft, expected):
    assert capacity.prefill_replicas(PROFILE, rate, mean_in, SLOTargets(ttft, 0.05), TN) == expected


def test_replicas_for_load_uses_the_pooled_prefill_model():
    need = capacity.replicas_for_load(PROFILE, "disaggregated", 10.0, MEAN_IN, 500.0, SLO, TN)
    assert need["prefill"] == pytest.approx(capacity.prefill_replicas(PROFILE, 10.0, MEAN_IN, SLO, TN))
    assert capacity.prefill_rate_per_replica(PROFILE, MEAN_IN, SLOTargets(0.2, 0.05), TN) == 0.0


def test_correction_slows_the_pool():
    fast = capacity.prefill_replicas(PROFILE, 10.0, MEAN_IN, SLO, TN, 1.0)
    slow = capacity.prefill_replicas(PROFILE, 10.0, MEAN_IN, SLO, TN, 1.3)
    assert slow > fast * 1.25
