"""The SLO loop's queries, evaluated by Prometheus's own engine (`promtool test rules`) on series shaped as
vLLM and the NVIDIA DCGM exporter publish them. Needs Prometheus's promtool (`e2e/ensure-prometheus.sh`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from llmd_operator.slo import observe

POD = 'namespace="team", pod="chat-decode-7d9f"'
OURS = 'llm_d_deployment="chat", llm_d_role="decode"'
PODS = {  # two decode pods with two GPUs each (tensor parallel 2); one prefill pod of another deployment
    "chat-decode-7d9f": ("chat", "decode", ["80", "60"]),
    "chat-decode-x2k4": ("chat", "decode", ["40", "20"]),
    "chat-prefill-a1b2": ("chat", "prefill", ["90"]),
    "other-decode-q8w7": ("other", "decode", ["10"]),
}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found: install Prometheus with e2e/ensure-prometheus.sh (make test does)"
    return found


def evaluate(tmp_path: Path, series: list[dict], checks: list[dict]) -> subprocess.CompletedProcess:
    (tmp_path / "rules.yml").write_text("groups: []\n")
    (tmp_path / "test.yml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yml"], "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": checks}],
    }, sort_keys=False))
    return subprocess.run([promtool(), "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True)


def histogram_series(name: str, labels: str, observed: list[float], bounds: list[float]) -> list[dict]:
    """A vLLM histogram's cumulative `_bucket` series when the same `observed` values arrive every 15 s."""
    return [{"series": f'{name}_bucket{{{labels}, le="{le}"}}',
             "values": f"0+{sum(1 for v in observed if le == '+Inf' or v <= le)}x20"} for le in [*bounds, "+Inf"]]


def test_gpu_utilization_reaches_each_pool_from_dcgm_series_that_only_name_the_pod(tmp_path):
    series = []
    for pod, (deployment, role, gpus) in PODS.items():
        # DCGM exporter: one series per GPU, labelled with the pod it is allocated to, none of our labels.
        series += [{"series": f'DCGM_FI_DEV_GPU_UTIL{{gpu="{i}", namespace="team", pod="{pod}", Hostname="node-1"}}',
                    "values": f"{util}x20"} for i, util in enumerate(gpus)]
        series.append({"series": f'vllm:num_requests_running{{namespace="team", pod="{pod}", '
                                 f'llm_d_deployment="{deployment}", llm_d_role="{role}", llm_d_capacity_type="spot"}}',
                       "values": "3x20"})
    query = observe.queries("2m")["gpu_util"][0]
    result = evaluate(tmp_path, series, [{"expr": query, "eval_time": "4m", "exp_samples": [
        {"labels": '{namespace="team", llm_d_deployment="chat", llm_d_role="decode"}', "value": 0.5},   # (80+60+40+20)/4
        {"labels": '{namespace="team", llm_d_deployment="chat", llm_d_role="prefill"}', "value": 0.9},
        {"labels": '{namespace="team", llm_d_deployment="other", llm_d_role="decode"}', "value": 0.1},
    ]}])
    assert result.returncode == 0, result.stdout + result.stderr


def test_kv_cache_usage_reads_the_older_vllm_name_too(tmp_path):
    series = [
        {"series": f'vllm:kv_cache_usage_perc{{{POD}, {OURS}}}', "values": "0.25x20"},
        {"series": 'vllm:gpu_cache_usage_perc{namespace="team", pod="legacy-0", llm_d_deployment="legacy", llm_d_role="decode"}',
         "values": "0.75x20"},
    ]
    result = evaluate(tmp_path, series, [{"expr": observe.queries("2m")["kv_usage"][0], "eval_time": "4m", "exp_samples": [
        {"labels": f'{{namespace="team", {OURS}}}', "value": 0.25},
        {"labels": '{namespace="team", llm_d_deployment="legacy", llm_d_role="decode"}', "value": 0.75},
    ]}])
    assert result.returncode == 0, result.stdout + result.stderr


def test_request_rate_counts_completed_requests_on_the_entry_pools_only(tmp_path):
    series = [  # 2 requests/s finish on decode; the prefill pool's counter must not be added to it
        {"series": f'vllm:request_success_total{{{POD}, {OURS}, finished_reason="stop"}}', "values": "0+30x20"},
        {"series": 'vllm:request_success_total{namespace="team", pod="chat-prefill-a1b2", llm_d_deployment="chat", '
                   'llm_d_role="prefill", finished_reason="length"}', "values": "0+30x20"},
    ]
    result = evaluate(tmp_path, series, [{"expr": observe.queries("2m")["request_rate"][0], "eval_time": "4m",
                                          "exp_samples": [{"labels": '{namespace="team", llm_d_deployment="chat"}', "value": 2}]}])
    assert result.returncode == 0, result.stdout + result.stderr


def test_request_rate_is_what_arrived_completions_plus_the_growth_of_what_is_held(tmp_path):
    """vLLM counts a request when it completes: a pool that falls behind completes 2/s while 5/s arrive."""
    done = {"series": f'vllm:request_success_total{{{POD}, {OURS}, finished_reason="stop"}}', "values": "0+30x20"}
    prefill = 'namespace="team", pod="chat-prefill-a1b2", llm_d_deployment="chat", llm_d_role="prefill"'

    def held(waiting: str, running: str, prefill_waiting: str) -> list[dict]:
        return [done, {"series": f"vllm:num_requests_waiting{{{POD}, {OURS}}}", "values": waiting},
                {"series": f"vllm:num_requests_running{{{POD}, {OURS}}}", "values": running},
                {"series": f"vllm:num_requests_waiting{{{prefill}}}", "values": prefill_waiting}]
    chat = '{namespace="team", llm_d_deployment="chat"}'
    for series, arrived in (
        (held("0+30x20", "64x20", "0+15x20"), 5),       # queues grow by 3/s (2 on decode, 1 on prefill): 2 + 3
        (held("600-15x20", "64x20", "0x20"), 1),         # a backlog drains at 1/s: 2 - 1
        # a queue emptied faster than anything completed (requests cancelled): 0, not below
        (held(" ".join(["600"] * 9 + [str(600 - 75 * i) for i in range(1, 9)] + ["0"] * 4), "64x20", "0x20"), 0),
    ):
        result = evaluate(tmp_path, series, [{"expr": observe.queries("2m")["request_rate"][0], "eval_time": "4m",
                                              "exp_samples": [{"labels": chat, "value": arrived}]}])
        assert result.returncode == 0, result.stdout + result.stderr


def test_itl_is_each_requests_mean_time_per_output_token_where_vllm_exports_it(tmp_path):
    """vLLM's per-request TPOT histogram is what an ITL objective is scored on; a release without it
    (only the gaps between outputs are timed) is read from its inter-token histogram instead."""
    bounds = [0.01, 0.025, 0.05, 0.075]
    legacy = 'namespace="team", pod="legacy-0", llm_d_deployment="legacy", llm_d_role="decode"'
    # 10 observations per 15 s, all in one bucket: (0.01, 0.025], (0.05, 0.075] and (0.025, 0.05]
    series = (histogram_series("vllm:request_time_per_output_token_seconds", f"{POD}, {OURS}", [0.02] * 10, bounds)
              + histogram_series("vllm:inter_token_latency_seconds", f"{POD}, {OURS}", [0.06] * 10, bounds)
              + histogram_series("vllm:inter_token_latency_seconds", legacy, [0.04] * 10, bounds))
    result = evaluate(tmp_path, series, [{"expr": observe.queries("2m")["itl_p95_s"][0], "eval_time": "4m", "exp_samples": [
        {"labels": '{namespace="team", llm_d_deployment="chat"}', "value": 0.01 + 0.95 * 0.015},       # per request
        {"labels": '{namespace="team", llm_d_deployment="legacy"}', "value": 0.025 + 0.95 * 0.025},    # per gap
    ]}])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_simulator_reads_latency_quantiles_as_the_loops_queries_do(tmp_path):
    """The benchmark's policies see histogram_quantile over vLLM's buckets (sim.fleet.histogram_quantile);
    Prometheus, running the loop's own TTFT queries on the same observations, must say the same."""
    from llmd_operator.sim.fleet import LATENCY_BUCKETS, histogram_quantile

    ttfts = [0.03, 0.2, 0.3, 0.3, 0.45, 0.5, 0.6, 0.8, 1.2, 1.2, 3.0, 6.0, 0.07, 0.09, 0.33, 0.41, 0.62, 0.9, 2.2, 0.15]
    bounds = LATENCY_BUCKETS["ttft_seconds"]
    series = histogram_series("vllm:time_to_first_token_seconds", f"{POD}, {OURS}", ttfts, bounds)
    chat = '{namespace="team", llm_d_deployment="chat"}'
    checks = [{"expr": observe.queries("2m")[f"ttft_p{q}_s"][0], "eval_time": "4m",
               "exp_samples": [{"labels": chat, "value": histogram_quantile(q / 100, ttfts, bounds)}]}
              for q in (50, 95)]
    result = evaluate(tmp_path, series, checks)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_prompt_p95_the_loop_reads_is_the_simulators(tmp_path):
    """The TTFT floor (model_based.ttft_floor_s) starts from the p95 prompt in vLLM's prompt-token
    histogram; the simulator must read it as the loop's query does."""
    from llmd_operator.sim.fleet import LATENCY_BUCKETS, histogram_quantile

    prompts = [40, 300, 800, 950, 1200, 1500, 1900, 2100, 2600, 3900, 4100, 4100, 7000, 120, 600, 640, 1000, 1800,
               2400, 9000]
    bounds = LATENCY_BUCKETS["tokens"]
    series = histogram_series("vllm:request_prompt_tokens", f"{POD}, {OURS}", prompts, bounds)
    chat = '{namespace="team", llm_d_deployment="chat"}'
    expected = histogram_quantile(0.95, prompts, bounds)
    assert 5000 < expected < 10000      # interpolated inside the 5k-10k bucket, as Prometheus does
    checks = [{"expr": observe.queries("2m")["prompt_tokens_p95"][0], "eval_time": "4m",
               "exp_samples": [{"labels": chat, "value": expected}]}]
    result = evaluate(tmp_path, series, checks)
    assert result.returncode == 0, result.stdout + result.stderr
