"""Simulator sanity: what a user of `simulate` would notice."""

import json

import pytest
from click.testing import CliRunner

from llmd_operator.sim.baselines import POLICY_NAMES
from llmd_operator.cli_params import parse_duration
from llmd_operator.sim.command import simulate
from llmd_operator.sim.fleet import SimConfig, histogram_quantile, simulate_fleet
from llmd_operator.sim.run import config_for, run_policy
from llmd_operator.sim.trace import Request, Trace
from llmd_operator.slo.profiles import default_profile
from tests.conftest import poisson_trace

GPU = "NVIDIA-H100-80GB-HBM3"
PROFILE = default_profile("llama-3.1-8b", GPU, "fp8")


class Static:
    name = "static"

    def __init__(self, sizes, spot=0):
        self.sizes = sizes
        self.spot = spot

    def initial(self, cfg):
        return {r: (n, min(self.spot, n)) for r, n in self.sizes.items()}

    def decide(self, obs):
        return self.initial(None)


class Recorder(Static):
    """A static fleet that keeps every observation the policy is given."""

    def __init__(self, sizes):
        super().__init__(sizes)
        self.seen = []

    def decide(self, obs):
        self.seen.append(obs)
        return self.initial(None)


TRACE = poisson_trace(30.0, 300)


def test_one_request_on_an_idle_replica_takes_the_profile_times():
    tr = Trace("one", "test", (Request(0.0, 1000, 101),))
    res = simulate_fleet(tr, PROFILE, SimConfig(), Static({"monolithic": 1}))
    assert res.ttfts[0] == pytest.approx(PROFILE.prefill_step_ms(1000) / 1000)
    assert res.itls[0] == pytest.approx(PROFILE.decode_step_ms(1, 1050) / 1000, rel=0.01)


@pytest.mark.parametrize("arrival", [0.0, 25.0])
def test_a_lone_prompt_hands_over_to_decode_when_its_prefill_ends_not_at_the_next_tick(arrival):
    tr = Trace("one", "test", (Request(arrival, 8000, 100),))
    cfg = SimConfig(mode="disaggregated", ttft_slo_s=5.0)
    res = simulate_fleet(tr, PROFILE, cfg, Static({"prefill": 1, "decode": 1}))
    alone = (PROFILE.prompt_prefill_ms(8000, cfg.prefill_chunk_tokens) / 1000
             + PROFILE.kv_bytes_per_token * 8000 / cfg.kv_transfer_bytes_per_s)
    assert alone < res.ttfts[0] < alone + 0.02


def test_a_prompt_that_finished_first_is_handed_over_first():
    """A 100k-token prompt's long KV transfer is still under way when a short prompt on another prefill
    replica finishes: the short one reaches the decode pool at its own time, not after the long one."""
    cfg = SimConfig(mode="disaggregated", ttft_slo_s=5.0)
    long_ready = PROFILE.prompt_prefill_ms(100_000, cfg.prefill_chunk_tokens) / 1000
    short_alone = (PROFILE.prompt_prefill_ms(8000, cfg.prefill_chunk_tokens) / 1000
                   + PROFILE.kv_bytes_per_token * 8000 / cfg.kv_transfer_bytes_per_s)
    # the short prompt arrives just after the long one finished prefill (the arrival that finds it done)
    tr = Trace("two", "test", (Request(0.0, 100_000, 50), Request(long_ready + 0.01, 8000, 50)))
    res = simulate_fleet(tr, PROFILE, cfg, Static({"prefill": 2, "decode": 1}))
    assert res.completed == 2
    ttfts = sorted(res.ttfts)
    assert short_alone < ttfts[0] < short_alone + 0.02


def test_a_fleet_far_too_small_misses_the_slo_and_a_big_one_meets_it():
    small = simulate_fleet(TRACE, PROFILE, SimConfig(), Static({"monolithic": 1}))
    big = simulate_fleet(TRACE, PROFILE, SimConfig(), Static({"monolithic": 6}))
    assert small.met / small.requests < 0.5
    assert big.met / big.requests > 0.99
    assert big.completed == big.requests


def test_attainment_after_warm_up_scores_only_the_later_requests():
    # a burst of 300 prompts in the first seconds (one replica queues them for far past the TTFT
    # target), then one request a second, which it serves with ease
    burst = [Request(k / 100, 1000, 50) for k in range(300)]
    calm = [Request(300.0 + k, 1000, 50) for k in range(600)]
    tr = Trace("burst-then-calm", "test", tuple(burst + calm))
    res = simulate_fleet(tr, PROFILE, SimConfig(warmup_s=300.0), Static({"monolithic": 1}))
    assert res.met / res.requests < 0.75
    assert res.completed_after_warmup == 600 and res.met_after_warmup == 600
    late = simulate_fleet(tr, PROFILE, SimConfig(warmup_s=1200.0), Static({"monolithic": 1}))
    assert late.completed_after_warmup == 0


def test_prompts_no_replica_prefills_in_time_set_the_ceiling_and_the_oracle_stops_at_it():
    """One prompt in 50 is 110k tokens, over 6 s of prefill on an idle H100 against a 5 s TTFT target:
    the run says 98% is the most any fleet attains, and the oracle does not buy replicas for them."""
    reqs = tuple(Request(k * 0.5, 110_000 if k % 50 == 0 else 8000, 200) for k in range(400))
    tr = Trace("long-prompts", "test", reqs)
    cfg = config_for(PROFILE, GPU, mode="disaggregated", ttft_slo_s=5.0, itl_slo_s=0.05)
    oracle = run_policy("oracle", tr, PROFILE, cfg)
    assert oracle["attainable_share"] == pytest.approx(0.98)
    assert oracle["slo_attainment"] <= 0.98 and oracle["slo_attainment_of_attainable"] >= 0.99
    assert oracle["oracle_factor"] < 2


def test_static_fleet_gpu_hours_are_replicas_times_time():
    res = simulate_fleet(TRACE, PROFILE, SimConfig(), Static({"monolithic": 4}))
    assert res.gpu_hours == pytest.approx(4 * res.end_s / 3600, rel=1e-6)
    assert res.cost_usd == pytest.approx(res.gpu_hours * SimConfig().price_on_demand)


def test_spot_is_billed_at_the_spot_price_and_interruptions_retry_requests():
    cfg = SimConfig(spot_interruptions_per_hour=60.0, seed=2)
    res = simulate_fleet(TRACE, PROFILE, cfg, Static({"monolithic": 5}, spot=5))
    assert res.interruptions > 0 and res.retries > 0
    assert res.completed == res.requests            # retried requests still finish


def test_disaggregated_mode_runs_and_charges_kv_transfer():
    tr = poisson_trace(5.0, 200, inp=8000, out=100)
    slow = SimConfig(mode="disaggregated", ttft_slo_s=3.0, kv_transfer_bytes_per_s=1e9)
    fast = SimConfig(mode="disaggregated", ttft_slo_s=3.0, kv_transfer_bytes_per_s=50e9)
    a = simulate_fleet(tr, PROFILE, slow, Static({"prefill": 3, "decode": 1}))
    b = simulate_fleet(tr, PROFILE, fast, Static({"prefill": 3, "decode": 1}))
    assert a.completed == a.requests == b.completed
    assert a.kv_transfer_gb == pytest.approx(len(tr.requests) * 8000 * PROFILE.kv_bytes_per_token / 1e9)
    xfer = 8000 * PROFILE.kv_bytes_per_token / 1e9          # seconds at 1 GB/s
    assert sorted(a.ttfts)[len(a.ttfts) // 2] > sorted(b.ttfts)[len(b.ttfts) // 2] + 0.8 * xfer
    assert set(a.gpu_hours_by_pool) == {"prefill", "decode"}


def test_scale_up_pays_for_startup_before_serving():
    class Grow(Static):
        def decide(self, obs):
            return {"monolithic": (2, 0)}
    tr = Trace("t", "test", (Request(0.0, 100, 10), Request(600.0, 100, 10)))
    res = simulate_fleet(tr, PROFILE, SimConfig(startup_delay_s=90), Grow({"monolithic": 1}))
    # replica 2 created at the first tick (30 s), billed from then on although ready only at 120 s
    assert res.gpu_hours == pytest.approx((600.0 + (600.0 - 30.0)) / 3600, rel=0.01)


@pytest.mark.parametrize("window, rates", [
    (None, [1.0, 0.0, 0.0, 0.0, 0.0]),          # the operator's default: one interval
    (120.0, [1.0, 0.5, 0.333, 0.25, 0.0]),      # --metrics-window 2m: the burst fades over four ticks
])
def test_the_policy_sees_rates_over_the_loops_metrics_window(window, rates):
    burst = Trace("t", "test", tuple(Request(i + 0.5, 100, 10) for i in range(30)) + (Request(170.0, 100, 10),))
    rec = Recorder({"monolithic": 1})
    simulate_fleet(burst, PROFILE, SimConfig(metrics_window_s=window), rec)
    assert [round(o.request_rate, 3) for o in rec.seen[:5]] == rates


@pytest.mark.parametrize("values, q, expected", [
    ([0.3] * 20, 0.95, 0.25 + 0.25 * 0.95),          # all in (0.25, 0.5]: interpolated, not 0.3
    ([0.1, 0.2], 0.5, 0.25 * 0.5),                   # the first bucket starts at 0
    ([0.5] * 19 + [3.0], 0.95, 0.5),                 # a value on a bound counts in that bucket
    ([10.0] * 5, 0.95, 5.0),                         # past the last bound: the last bound
    ([], 0.95, None),
])
def test_histogram_quantile_reads_as_prometheus_does(values, q, expected):
    got = histogram_quantile(q, values, [0.25, 0.5, 0.75, 1.0, 2.5, 5.0])
    assert got == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize("reading", ["histogram", "exact"])
def test_the_policy_reads_latency_quantiles_as_the_loop_does_unless_told_exact(reading):
    """By default the policy sees what the operator can see: a p95 interpolated in vLLM's TTFT bucket."""
    # one short prompt a second on an idle replica: every request has the same TTFT
    steady = Trace("t", "test", tuple(Request(i + 0.5, 100, 10) for i in range(60)))
    rec = Recorder({"monolithic": 1})
    res = simulate_fleet(steady, PROFILE, SimConfig(latency_quantiles=reading), rec)
    ttft = res.ttfts[0]
    assert max(res.ttfts) == pytest.approx(ttft) and 0.01 < ttft < 0.02
    expected = ttft if reading == "exact" else 0.01 + 0.01 * 0.95    # vLLM's TTFT bucket (0.01, 0.02]
    assert rec.seen[0].ttft_p95_s == pytest.approx(expected)


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_every_policy_runs(policy):
    cfg = config_for(PROFILE, GPU)
    s = run_policy(policy, TRACE, PROFILE, cfg)
    for k in ("policy", "requests", "gpu_hours", "cost_usd", "slo_attainment", "ttft_p95_s", "itl_p95_s",
              "scale_events"):
        assert k in s
    assert 0 <= s["slo_attainment"] <= 1 and s["requests"] == len(TRACE.requests)


def ramp_trace(seconds=2400, low=10.0, high=70.0, seed=4):
    """low for a quarter, ramps up over a quarter, high for a quarter, back to low."""
    import random
    rng = random.Random(seed)
    q = seconds / 4

    def rate(t):
        if t < q:
            return low
        if t < 2 * q:
            return low + (high - low) * (t - q) / q
        return high if t < 3 * q else low

    t, reqs = 0.0, []
    while t < seconds:   # thinning
        t += rng.expovariate(high)
        if rng.random() < rate(t) / high:
            reqs.append(Request(t, 1000, 200))
    return Trace("ramp", "test", tuple(reqs))


def test_default_policy_meets_the_slo_with_fewer_gpu_hours_than_static_peak_on_a_ramp():
    tr = ramp_trace()
    cfg = config_for(PROFILE, GPU)
    ours = run_policy("default", tr, PROFILE, cfg)
    peak = run_policy("static-peak", tr, PROFILE, cfg)
    assert ours["slo_attainment"] >= 0.99
    assert ours["gpu_hours"] < 0.9 * peak["gpu_hours"]


def test_cli_prints_one_json_object(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps({"timestamp": int(r.arrival_s * 1000), "input_length": 500,
                                       "output_length": 50}) for r in TRACE.requests[:300]))
    out = CliRunner().invoke(simulate, ["--trace", str(p), "--policy", "default", "--rate-multiplier", "2",
                                        "--ttft-slo", "0.5s", "--itl-slo", "50ms", "--model", "llama-3.1-8b",
                                        "--quantization", "fp8", "--output", "json"])
    assert out.exit_code == 0, out.output
    s = json.loads(out.output)
    assert s["policy"] == "default" and s["requests"] == 300 and "compressed 2x" in s["rate_note"]
    assert s["slo"] == {"ttft_p95_s": 0.5, "itl_p95_s": 0.05}


def test_cli_replays_a_window_of_a_long_trace(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps({"timestamp": k * 10_000, "input_length": 500, "output_length": 50})
                           for k in range(1080)))                 # one request every 10 s for 3 hours
    out = CliRunner().invoke(simulate, ["--trace", str(p), "--start", "1h", "--duration", "30m",
                                        "--policy", "static-peak"])
    assert out.exit_code == 0, out.output
    s = json.loads(out.output)
    assert s["requests"] == 180 and s["trace_start_s"] == 3600 and s["trace_span_s"] == 10790
    assert s["gpu_hours"] == pytest.approx(0.5, rel=0.05)        # one replica for the half hour, not 3 h
    bad = CliRunner().invoke(simulate, ["--trace", str(p), "--start", "4h", "--duration", "1h"])
    assert bad.exit_code != 0 and "no requests between 14400 s and 18000 s" in bad.output


def test_cli_refuses_a_bad_trace(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("x,y\n1,2\n")
    out = CliRunner().invoke(simulate, ["--trace", str(p)])
    assert out.exit_code != 0 and "unknown trace format" in out.output


@pytest.mark.parametrize("text,seconds", [("500ms", 0.5), ("0.5s", 0.5), ("90", 90.0), ("2m", 120.0), ("2d", 172800.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


def test_moving_a_pool_to_spot_surges_instead_of_dropping_capacity():
    class ToSpot(Static):
        def decide(self, obs):
            return {"monolithic": (4, 3)}
    res = simulate_fleet(TRACE, PROFILE, SimConfig(), ToSpot({"monolithic": 4}))
    assert res.met / res.requests > 0.99           # the on-demand pods drain only once spot ones are ready
    assert res.gpu_hours_spot > 0
    ready = [e["ready"]["monolithic"] for e in res.timeline]
    assert min(ready) >= 4


def test_kv_usage_reports_the_tokens_held_not_the_answer_reserved_at_admission():
    tr = Trace("one", "test", (Request(0.0, 1000, 3000),))
    rec = Recorder({"monolithic": 1})
    simulate_fleet(tr, PROFILE, SimConfig(interval_s=5.0), rec)
    first = rec.seen[0].pool("monolithic")
    held = first.kv_usage * PROFILE.kv_capacity_tokens
    generated = 5.0 / (PROFILE.decode_step_ms(1, 1500) / 1000.0)
    assert first.running == 1.0 and first.queue_depth == 0.0
    assert held == pytest.approx(1000 + generated, rel=0.1)      # reserved would be 4000


def test_the_live_simulator_batches_each_pod_with_its_engine_budget():
    """A pod whose engine runs --max-num-batched-tokens 1024 (say, from extraArgs) prefills in 1024-token
    chunks in the live simulator too; a pod without the flag gets the pool's default."""
    from prometheus_client import CollectorRegistry

    from llmd_operator.sim.live import LiveFleet

    def pod(name, args):
        return {"metadata": {"name": name, "namespace": "team", "labels": {}},
                "spec": {"containers": [{"name": "vllm", "args": args}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}}

    fleet = LiveFleet(PROFILE, SimConfig(), CollectorRegistry())
    fleet.sync_pods([pod("a", ["serve", "m", "--max-num-batched-tokens", "2048", "--max-num-batched-tokens=1024"]),
                     pod("b", ["serve", "m"])], now=0.0)
    assert fleet.by_pod["a"].chunk == 1024
    assert fleet.by_pod["b"].chunk == SimConfig().chunk_tokens


def test_the_live_simulator_exports_each_requests_time_per_output_token_as_vllm_does():
    """vLLM's per-request TPOT histogram (what the SLO loop reads as ITL): one observation per finished
    request, its decode time over its output tokens after the first."""
    from prometheus_client import CollectorRegistry

    from llmd_operator.sim.engine import SimRequest
    from llmd_operator.sim.live import LiveFleet

    registry = CollectorRegistry()
    fleet = LiveFleet(PROFILE, SimConfig(), registry)
    fleet.sync_pods([{"metadata": {"name": "a", "namespace": "team", "labels": {}},
                      "spec": {"containers": [{"name": "vllm", "args": ["serve", "m"]}]},
                      "status": {"conditions": [{"type": "Ready", "status": "True"}]}}], now=0.0)
    request = SimRequest(0, 0.0, 1000, 101)
    fleet.route(request, "monolithic", 0.0)
    fleet.by_pod["a"].advance(10.0, fleet)
    samples = {s.name: s for metric in registry.collect() for s in metric.samples if s.labels.get("pod") == "a"}
    count = samples["vllm:request_time_per_output_token_seconds_count"].value
    total = samples["vllm:request_time_per_output_token_seconds_sum"].value
    assert request.finish > 0 and count == 1
    assert total == pytest.approx((request.finish - request.first_token) / 100)
    assert total == pytest.approx(PROFILE.decode_step_ms(1, 1050) / 1000, rel=0.05)   # one sequence decoding


@pytest.mark.parametrize("lengths_at, seen", [
    ("completion", [None, 1000.0, 100.0]),     # as the loop reads vLLM's length histograms: once finished
    ("arrival", [1000.0, 1000.0, 100.0]),
])
def test_the_policy_learns_a_requests_lengths_when_it_finishes_as_the_loop_does(lengths_at, seen):
    # ~35 s of decoding, done after the first tick; then a short request after the second
    long_answer = Trace("t", "test", (Request(0.5, 1000, 6000), Request(65.0, 100, 10)))
    rec = Recorder({"monolithic": 1})
    simulate_fleet(long_answer, PROFILE, SimConfig(lengths_at=lengths_at), rec)
    assert [o.mean_input_tokens for o in rec.seen[:3]] == seen


@pytest.mark.parametrize("reading, expected", [
    ("histogram", 2000 + 3000 * (0.95 * 20 - 10) / 10),   # Prometheus's interpolation in vLLM's (2k, 5k] bucket
    ("exact", 4000.0),
])
def test_the_policy_reads_the_p95_prompt_as_the_loop_does(reading, expected):
    """The p95 prompt bounds the TTFT any fleet can give (model_based.ttft_floor_s): by default read
    from vLLM's prompt-token histogram, as the loop's query does."""
    prompts = Trace("t", "test", tuple(Request(i + 0.5, 1000 if i % 2 else 4000, 5) for i in range(20)))
    rec = Recorder({"monolithic": 2})
    simulate_fleet(prompts, PROFILE, SimConfig(latency_quantiles=reading), rec)
    assert rec.seen[0].prompt_tokens_p95 == pytest.approx(expected)
