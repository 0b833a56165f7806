"""The SLO loop closed: a real Prometheus scrapes the live simulator of the pods the cluster runs, and the
operator resizes the pool from what Prometheus says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.cluster.conftest import ROOT, Operator, apply, condition, free_port, get_json, kubectl, wait_for

ITL_TARGET_S = 0.05
# An objective the operator does not measure itself: its PromQL runs as written, with the labels put in.
E2E_P50 = """# median request latency of this deployment
histogram_quantile(0.5, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket{namespace="$namespace",
  llm_d_deployment="$deployment"}[15s])))"""


class Prometheus:
    def __init__(self, directory: Path, target_port: int, scrape: str = "1s"):
        self.directory, self.port = directory, free_port()
        (directory / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": scrape, "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "vllm", "honor_labels": True,
                                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
        }))
        self.process = None

    def start(self) -> None:
        binary = subprocess.run(["e2e/ensure-prometheus.sh"], capture_output=True, text=True, check=True).stdout.strip()
        self.log = (self.directory / "prometheus.log").open("a")
        self.process = subprocess.Popen([binary, f"--config.file={self.directory / 'prometheus.yml'}",
                                         f"--storage.tsdb.path={self.directory / 'data'}",
                                         f"--web.listen-address=127.0.0.1:{self.port}"],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._get("/-/ready") is not None, 60, "Prometheus ready")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def _get(self, path: str):
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5).read()
        except OSError:
            return None

    def value(self, promql: str) -> float | None:
        body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        result = json.loads(body)["data"]["result"] if body else []
        return float(result[0]["value"][1]) if result else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def closed_loop(operator, namespace, tmp_path):
    yield from _loop_with_prometheus(operator, namespace, tmp_path, "1s", ("--metrics-window", "15s"))


@pytest.fixture
def sparse_loop(operator, namespace, tmp_path):
    """Scrapes 5 s apart and the loop's own window: fewer than two samples per 3 s interval."""
    yield from _loop_with_prometheus(operator, namespace, tmp_path, "5s", ())


@pytest.fixture
def disaggregated_loop(operator, namespace, tmp_path):
    """Prefill and decode pools; short prompts and long answers, so that load lands on decode."""
    yield from _loop_with_prometheus(operator, namespace, tmp_path, "1s", ("--metrics-window", "15s"),
                                     ("--mode", "disaggregated", "--input-tokens", "200", "--output-tokens", "1000"))


def _loop_with_prometheus(operator, namespace, tmp_path, scrape: str, loop_args: tuple,
                          sim_args: tuple = ("--input-tokens", "1000", "--output-tokens", "200")):
    """The shared operator steps aside; one with Prometheus runs the loop on this namespace."""
    operator.stop()
    sim_port = free_port()
    simulator = subprocess.Popen(
        [sys.executable, "-m", "llmd_operator.cli", "simulate-live", "--namespace", namespace, "--rate", "1",
         "--port", str(sim_port), *sim_args],
        stdout=(tmp_path / "sim.log").open("w"), stderr=subprocess.STDOUT)
    prometheus = Prometheus(tmp_path, sim_port, scrape)
    prometheus.start()
    loop_operator = Operator(tmp_path, ("--prometheus-url", prometheus.url, "--slo-interval", "3",
                                        "--namespace", namespace) + loop_args)
    loop_operator.start()
    yield {"sim_port": sim_port, "prometheus": prometheus, "operator": loop_operator, "tmp": tmp_path}
    loop_operator.stop()
    prometheus.stop()
    simulator.terminate()
    simulator.wait(timeout=20)
    restore_fleet_nodes()
    operator.start()


def restore_fleet_nodes() -> None:
    """Put back the fleet's nodes a test deleted, as `e2e/cluster.sh up` would, and wait for them to be Ready."""
    fleet = [d for d in yaml.safe_load_all((ROOT / "e2e" / "fleet.yaml").read_text()) if d]
    have = {n["metadata"]["name"] for n in get_json("nodes")["items"]}
    missing = [d for d in fleet if d["metadata"]["name"] not in have]
    if not missing:
        return
    kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(missing))
    names = {d["metadata"]["name"] for d in missing}

    def ready():
        nodes = [n for n in get_json("nodes")["items"] if n["metadata"]["name"] in names]
        return len(nodes) == len(names) and all(any(c["type"] == "Ready" and c["status"] == "True"
                                                    for c in n["status"].get("conditions", [])) for n in nodes)
    wait_for(ready, 60, f"the deleted fleet nodes {sorted(names)} to be back and Ready")


def fp8_on_h100(name: str, spec: dict) -> dict:
    """An LLMDeployment of Llama-3.1-8B in FP8 on the fleet's H100s, with `spec` added."""
    return {"apiVersion": "inference.llm-d.io/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": "llama-3.1-8b", "quantization": {"type": "fp8"}},
                     "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, **spec}}


def set_rate(port: int, rate: float) -> None:
    urllib.request.urlopen(f"http://127.0.0.1:{port}/load?rate={rate}", timeout=5).read()


def pool(namespace: str) -> dict:
    items = get_json("deploy", "-n", namespace, "-l", "llm-d.io/deployment=loop")["items"]
    return {d["metadata"]["labels"]["llm-d.io/capacity-type"]: d["spec"].get("replicas", 0) for d in items}


def test_load_steps_resize_the_pool_and_missing_metrics_hold_it(closed_loop, namespace):
    prometheus, sim_port = closed_loop["prometheus"], closed_loop["sim_port"]
    apply(namespace, fp8_on_h100("loop", {
        "resources": {"policies": {"spotPreference": "preferred", "maxSpotRatio": 0.5}},
        "scheduling": {"sloPolicy": {
            "objectives": [{"name": "ttft_p95", "target": "500ms"}, {"name": "itl_p95", "target": "50ms"},
                           {"name": "e2e_p50", "target": "20s", "calculator": E2E_P50}],
            # burstHold 0s: this test's load steps once each way, and its drop is to be released
            # after the cooldown, not held for a burst that might return (the default 15m)
            "scaling": {"minReplicas": 1, "maxReplicas": 8, "interval": "3s", "scaleDownCooldown": "15s",
                        "burstHold": "0s"}}}}))
    def metrics_available():
        obj = get_json("llmd", "loop", "-n", namespace)
        return condition(obj, "MetricsAvailable").get("status") == "True"
    wait_for(metrics_available, 120, "MetricsAvailable=True from the live Prometheus")
    # every objective is scored, the calculator's too (one objective without a value leaves no scores)
    scores = wait_for(lambda: get_json("llmd", "loop", "-n", namespace)["status"].get("sloScores"), 60, "SLO scores")
    assert set(scores) == {"ttft_p95", "itl_p95", "e2e_p50"} and scores["e2e_p50"] < 0, scores
    series = f'deployment="loop",namespace="{namespace}"'
    # the tick records its metrics just after the status write the test saw
    exported = wait_for(lambda: (lambda m: m if f"llmd_metrics_available{{{series}}} 1.0" in m else None)(
        closed_loop["operator"].metrics()), 10, "llmd_metrics_available 1")
    assert f'llmd_slo_score{{{series},objective="e2e_p50"}}' in exported
    low = sum(pool(namespace).values())
    assert low >= 1

    set_rate(sim_port, 60)  # a load step far above one replica's capacity
    grown = wait_for(lambda: (lambda p: p if sum(p.values()) > low else None)(pool(namespace)), 120,
                     "the pool to grow after the load step")
    events = json.loads(kubectl("get", "events", "-n", namespace, "--field-selector", "reason=Scaled",
                                "-o", "json").stdout)["items"]
    # the decision in words first, then the Deployments it moved
    assert any(re.match(r"monolithic \d+->\d+: .+ \(Deployments: monolithic/(spot|on-demand) \d+->\d+",
                        e["message"]) for e in events), [e["message"] for e in events]
    # the ITL the objective is scored on: each request's mean time per output token
    itl = 'histogram_quantile(0.95, sum by (le) (rate(vllm:request_time_per_output_token_seconds_bucket[15s])))'
    wait_for(lambda: (lambda v: v is not None and v <= ITL_TARGET_S)(prometheus.value(itl)), 180,
             "ITL p95 back under 50 ms after scaling up")
    peak = sum(pool(namespace).values())
    assert peak >= sum(grown.values())
    # kubectl describe tells the decision that set the size the pool has now, not an earlier one.
    wait_for(lambda: (get_json("llmd", "loop", "-n", namespace)["status"].get("lastDecision") or {}).get("toReplicas")
             == sum(pool(namespace).values()), 30, "status.lastDecision to name the pool's current size")

    set_rate(sim_port, 1)
    wait_for(lambda: sum(pool(namespace).values()) < peak, 180, "the pool to shrink after the load drops")
    assert sum(pool(namespace).values()) >= 1  # never below minReplicas

    # Spot capacity is reclaimed: the nodes of the pool's spot pods are deleted, as a cloud does at the end
    # of a spot interruption notice. The loop moves the pool's replicas to on-demand.
    set_rate(sim_port, 30)
    wait_for(lambda: pool(namespace).get("spot", 0) >= 1, 180, "spot replicas while spot is healthy")
    on_demand_before = pool(namespace).get("on-demand", 0)
    spot_pods = get_json("pods", "-n", namespace, "-l", "llm-d.io/deployment=loop,llm-d.io/capacity-type=spot")["items"]
    reclaimed = sorted({p["spec"]["nodeName"] for p in spot_pods if p["spec"].get("nodeName")})
    assert reclaimed, "no spot pod is bound to a node"
    kubectl("delete", "node", *reclaimed, "--wait=false")
    moved = wait_for(lambda: (lambda p: p if p.get("spot", 0) == 0 and p.get("on-demand", 0) > on_demand_before
                              else None)(pool(namespace)), 60, "replicas to move to on-demand")
    assert moved["on-demand"] >= 1
    fallback = wait_for(lambda: (lambda c: c if c.get("status") == "True" else None)(
        condition(get_json("llmd", "loop", "-n", namespace), "SpotFallback")), 30, "SpotFallback=True")
    assert "is gone" in fallback["message"] or "being deleted" in fallback["message"], fallback["message"]
    assert "SpotFallback" in kubectl("get", "events", "-n", namespace, "--field-selector", "reason=SpotFallback").stdout

    # Prometheus goes away: replicas hold, and the condition says why.
    held = pool(namespace)
    prometheus.stop()
    def missing():
        cond = condition(get_json("llmd", "loop", "-n", namespace), "MetricsAvailable")
        return cond if cond.get("status") == "False" else None
    cond = wait_for(missing, 60, "MetricsAvailable=False once Prometheus is gone")
    assert "Prometheus" in cond["message"] and "holding replicas" in cond["message"]
    # no score frozen at the last reading for a burn-rate alert to average; the metric says the loop is blind
    exported = wait_for(lambda: (lambda m: m if f"llmd_metrics_available{{{series}}} 0.0" in m else None)(
        closed_loop["operator"].metrics()), 10, "llmd_metrics_available 0")
    assert f"llmd_slo_score{{{series}" not in exported and f"llmd_slo_attainment{{{series}" not in exported
    time.sleep(10)  # several loop intervals: nothing may move while blind
    assert pool(namespace) == held


def pools(namespace: str, name: str) -> dict:
    items = get_json("deploy", "-n", namespace, "-l", f"llm-d.io/deployment={name}")["items"]
    found: dict[str, int] = {}
    for d in items:
        role = d["metadata"]["labels"]["llm-d.ai/role"]
        found[role] = found.get(role, 0) + d["spec"].get("replicas", 0)
    return found


def test_a_load_step_grows_the_decode_pool_of_a_disaggregated_deployment(disaggregated_loop, namespace):
    prometheus, sim_port = disaggregated_loop["prometheus"], disaggregated_loop["sim_port"]
    apply(namespace, fp8_on_h100("pd", {
        "serving": {"mode": "disaggregated"},
        "scaling": {"constraints": {"prefill": {"minReplicas": 1, "maxReplicas": 4},
                                    "decode": {"minReplicas": 1, "maxReplicas": 10}}},
        "scheduling": {"sloPolicy": {
            "objectives": [{"name": "ttft_p95", "target": "500ms"}, {"name": "itl_p95", "target": "50ms"}],
            "scaling": {"interval": "3s", "scaleDownCooldown": "15s", "burstHold": "0s"}}}}))
    wait_for(lambda: condition(get_json("llmd", "pd", "-n", namespace), "MetricsAvailable").get("status") == "True",
             120, "MetricsAvailable=True from the live Prometheus")
    before = pools(namespace, "pd")
    assert before["prefill"] >= 1 and before["decode"] >= 1

    set_rate(sim_port, 12)  # 12 answers of ~1000 tokens per second: several decode replicas' worth
    grown = wait_for(lambda: (lambda p: p if p["decode"] > before["decode"] else None)(pools(namespace, "pd")), 120,
                     "the decode pool to grow after the load step")
    assert grown["prefill"] <= 4 and grown["decode"] <= 10  # each pool within its own bounds
    events = json.loads(kubectl("get", "events", "-n", namespace, "--field-selector", "reason=Scaled",
                                "-o", "json").stdout)["items"]
    assert any(re.search(r"decode \d+->\d+: ", e["message"]) for e in events), [e["message"] for e in events]
    itl = ('histogram_quantile(0.95, sum by (le) (rate(vllm:request_time_per_output_token_seconds_bucket'
           '{llm_d_deployment="pd",llm_d_role="decode"}[15s])))')
    wait_for(lambda: (lambda v: v is not None and v <= ITL_TARGET_S)(prometheus.value(itl)), 180,
             "decode ITL p95 back under 50 ms after scaling up")


def test_scrapes_too_sparse_for_the_interval_widen_the_window_and_say_so(sparse_loop, namespace):
    apply(namespace, fp8_on_h100("sparse", {
        "scheduling": {"sloPolicy": {
            "objectives": [{"name": "ttft_p95", "target": "500ms"}, {"name": "itl_p95", "target": "50ms"}],
            "scaling": {"minReplicas": 1, "maxReplicas": 4, "interval": "3s"}}}}))
    # a 3 s window holds at most one sample 5 s apart: rate() is empty there, so the loop reads a wider one
    message = wait_for(lambda: (lambda c: c.get("message") if c.get("status") == "True" else None)(
        condition(get_json("llmd", "sparse", "-n", namespace), "MetricsAvailable")), 120,
        "MetricsAvailable=True over a widened window")
    assert re.match(r"vLLM metrics are current, read over (6|12|24)s: the model servers are scraped less than "
                    r"twice per 3s interval", message), message
