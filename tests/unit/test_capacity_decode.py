"""The decode pool's capacity model (slo/decide/capacity.py): the ITL bound and room in the KV caches."""

from dataclasses import replace

import pytest

from llmd_operator.slo.decide import capacity
from llmd_operator.slo.decide.types import SLOTargets, Tuning
from llmd_operator.slo.profiles import default_profile

PROFILE = default_profile("llama-3.1-8b", "NVIDIA-H100-80GB-HBM3", "fp8")
SLO = SLOTargets(5.0, 0.05)
# Mooncake's conversation trace: 12k-token prompts, 343-token answers
MEAN_IN, MEAN_OUT = 12035.0, 343.0


def _mean_only_rate(tn: Tuning) -> float:
    """The request rate at which one decode replica is full by the mean context alone."""
    return capacity.decode_rate_per_replica(PROFILE, MEAN_IN, MEAN_OUT, SLO, tn)


def test_one_replica_full_by_the_mean_context_alone_gets_a_second_for_the_spread():
    """Sized for the mean, one replica takes the whole load while its KV cache is nearly full, and a few
    long prompts at once stop admission; the spread of the contexts it holds asks for a second."""
    rate = 0.9 * _mean_only_rate(Tuning())
    without_spread = capacity.decode_replicas(PROFILE, rate, MEAN_IN, MEAN_OUT, SLO, replace(Tuning(), kv_z=0.0))
    with_spread = capacity.decode_replicas(PROFILE, rate, MEAN_IN, MEAN_OUT, SLO, Tuning())
    assert without_spread == pytest.approx(0.9)
    assert 1.0 < with_spread < 1.3


def test_the_spread_weighs_less_the_more_the_pool_holds():
    """Relative room shrinks as sqrt(held) / held: a large pool needs little beyond its mean."""
    tn = Tuning()
    per = _mean_only_rate(tn)
    extra = [capacity.decode_replicas(PROFILE, n * per, MEAN_IN, MEAN_OUT, SLO, tn) / n - 1 for n in (1, 4, 16)]
    assert extra == sorted(extra, reverse=True)
    assert extra[-1] < 0.1


def test_short_contexts_are_bound_by_itl_not_kv():
    """Chat-length contexts fill a replica's batch long before its KV cache: no room term applies."""
    tn = Tuning()
    rate = 10.0
    assert capacity.decode_replicas(PROFILE, rate, 500.0, 200.0, SLO, tn) == pytest.approx(
        capacity.decode_replicas(PROFILE, rate, 500.0, 200.0, SLO, replace(tn, kv_z=0.0)))
