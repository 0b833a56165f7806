"""The monolithic replica's capacity model (slo/decide/capacity.py) against the simulated replica it
sizes: the mean inter-token time the model predicts at a load is what one replica serving that load
shows, for chat loads and for prefill-heavy loads (long prompts, short answers) alike."""

import statistics
from dataclasses import replace

import pytest

from llmd_operator.sim.fleet import SimConfig, simulate_fleet
from llmd_operator.slo.decide import capacity
from llmd_operator.slo.decide.types import SLOTargets, Tuning
from llmd_operator.slo.profiles import default_profile
from tests.conftest import poisson_trace

PROFILE = default_profile("llama-3.1-8b", "NVIDIA-H100-80GB-HBM3", "fp8")
FIXED_LENGTHS = replace(Tuning(), prompt_cv2=0.0)   # the traces below have one prompt length


class OneReplica:
    name = "one-replica"

    def initial(self, cfg):
        return {"monolithic": (1, 0)}

    def decide(self, obs):
        return self.initial(None)


@pytest.mark.parametrize("inp,out,rate", [
    (2048, 28, 8.0),        # code completion: the chunk-carrying steps dominate
    (2048, 28, 14.0),
    (2048, 28, 18.0),       # near the busy cap
    (4000, 50, 5.0),
    (1000, 200, 10.0),      # chat
    (1000, 200, 20.0),
])
def test_modelled_inter_token_time_matches_a_simulated_replica(inp, out, rate):
    step_ms, _, _ = capacity.monolithic_steady_state(PROFILE, rate, inp, out, FIXED_LENGTHS)
    res = simulate_fleet(poisson_trace(rate, 600.0, inp, out), PROFILE, SimConfig(), OneReplica())
    simulated_ms = 1000.0 * statistics.mean(res.itls)
    assert simulated_ms == pytest.approx(step_ms, rel=0.25)


def test_chunk_overhead_counts_only_while_the_decode_step_is_cheaper_than_a_chunk_step():
    small_batch = PROFILE.decode_step_ms(4, 2048)
    assert small_batch < PROFILE.prefill_c
    steps = 2048 / (FIXED_LENGTHS.chunk_tokens - 4) + 0.5
    assert capacity.mixed_step_overhead_ms(PROFILE, 2048, 4, small_batch, FIXED_LENGTHS) == pytest.approx(
        (PROFILE.prefill_c - small_batch) * steps)
    large_batch = PROFILE.decode_step_ms(200, 1200)
    assert large_batch > PROFILE.prefill_c
    assert capacity.mixed_step_overhead_ms(PROFILE, 1200, 200, large_batch, FIXED_LENGTHS) == 0.0


def test_prefill_heavy_load_gets_fewer_requests_per_replica_than_its_compute_alone_allows():
    slo = SLOTargets(0.5, 0.05)
    rate = capacity.monolithic_rate_per_replica(PROFILE, 2048, 28, slo, FIXED_LENGTHS)
    compute_only = Tuning().max_utilization * 1000.0 / capacity.mean_prefill_compute_ms(
        PROFILE, 2048, FIXED_LENGTHS)
    assert 0 < rate < 0.85 * compute_only


def test_a_smaller_batch_context_speeds_decode_but_never_loosens_the_kv_bound():
    slo = SLOTargets(5.0, 0.05)
    full = capacity.decode_rate_per_replica(PROFILE, 15000, 150, slo, Tuning())
    half = capacity.decode_rate_per_replica(PROFILE, 15000, 150, slo, Tuning(), context_scale=0.5)
    assert half > full
    # the KV cache bounds the batch at mean input + output / 2 tokens per sequence whatever the scale
    kv_bound = int(PROFILE.kv_capacity_tokens / capacity.decode_context(15000, 150))
    b = PROFILE.max_decode_batch(capacity.decode_context(15000, 150, 0.5), 0.05 * Tuning().itl_margin,
                                 capacity.kv_context(15000, 150, 0.5))
    assert b <= kv_bound
    assert capacity.kv_context(15000, 150, 1.4) == pytest.approx(capacity.decode_context(15000, 150, 1.4))
