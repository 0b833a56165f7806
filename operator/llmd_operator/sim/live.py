"""Live mode: model the vLLM pods the cluster really runs, in wall-clock time, and serve their metrics.

Every second it lists the Ready pods of the watched LLMDeployments, adds a modelled replica for each new
pod and drains the replicas of pods that went away. Requests arrive as a Poisson stream at a rate set on
the command line or at run time (GET /load?rate=12.5), are routed to the least-loaded ready replica and
run through the same engine model the offline simulator uses. /metrics serves vLLM-named metrics per pod,
labelled as the chart's PodMonitor labels real pods, for Prometheus to scrape.

Each finished request's mean time per output token goes into `vllm:request_time_per_output_token_seconds`,
as vLLM's does, and is what the SLO loop reads. One difference from vLLM: `vllm:inter_token_latency_seconds`
gets that same mean once per request, where vLLM observes every gap between outputs (the engine model
advances runs of decode steps in closed form and keeps no per-token gaps).
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..planning.plan import ENGINE, last_flag_value
from ..render import labels as pod_labels
from ..slo.profiles import CapacityProfile
from .engine import SimRequest
from .fleet import Fleet, SimConfig

log = logging.getLogger("llmd_operator.sim.live")
LABELS = ["namespace", "pod", ENGINE["prometheus_labels"]["deployment"], ENGINE["prometheus_labels"]["role"],
          ENGINE["prometheus_labels"]["capacity_type"]]
BUCKETS = ENGINE["vllm_histogram_buckets"]


def step_budget(pod: dict) -> int | None:
    """The --max-num-batched-tokens the pod's engine runs with (the plan renders it; extraArgs may
    override it), so the simulated replica batches as the real one would; None: the pool's default."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        value = last_flag_value(container.get("args") or [], "--max-num-batched-tokens")
        if value and value.isdigit():
            return int(value)
    return None


class LiveFleet(Fleet):
    """A Fleet whose replicas are the cluster's pods, exporting per-pod vLLM metrics."""

    def __init__(self, profile: CapacityProfile, cfg: SimConfig, registry: CollectorRegistry):
        super().__init__(profile, cfg)
        self.pod_of: dict[int, tuple[str, ...]] = {}   # replica id -> label values
        self.by_pod: dict[str, object] = {}            # pod name -> replica
        def histogram(name, doc, buckets):
            return Histogram(name, doc, LABELS, buckets=buckets, registry=registry)
        self.running = Gauge("vllm:num_requests_running", "Requests in the running batch", LABELS, registry=registry)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled", LABELS, registry=registry)
        self.kv = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage, 0..1", LABELS, registry=registry)
        self.success = Counter("vllm:request_success", "Finished requests", LABELS, registry=registry)
        self.prompt_total = Counter("vllm:prompt_tokens", "Prefilled tokens", LABELS, registry=registry)
        self.generation_total = Counter("vllm:generation_tokens", "Generated tokens", LABELS, registry=registry)
        self.ttft = histogram("vllm:time_to_first_token_seconds", "Time to first token", BUCKETS["ttft_seconds"])
        self.tpot = histogram("vllm:request_time_per_output_token_seconds", "Mean time per output token of each request",
                              BUCKETS["itl_seconds"])
        self.itl = histogram("vllm:inter_token_latency_seconds", "Inter-token latency", BUCKETS["itl_seconds"])
        self.e2e = histogram("vllm:e2e_request_latency_seconds", "Request latency", BUCKETS["e2e_seconds"])
        self.prompt_hist = histogram("vllm:request_prompt_tokens", "Prompt tokens per request", BUCKETS["tokens"])
        self.generation_hist = histogram("vllm:request_generation_tokens", "Generated tokens per request", BUCKETS["tokens"])

    # ---- pods -------------------------------------------------------------------------------------
    def sync_pods(self, pods: list[dict], now: float) -> None:
        """Ready pods become replicas; replicas whose pod is gone or not ready drain and disappear."""
        seen = set()
        for pod in pods:
            meta = pod["metadata"]
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (pod.get("status") or {}).get("conditions") or [])
            role = meta["labels"].get(pod_labels.ROLE_LABEL, "monolithic")
            if not ready or meta.get("deletionTimestamp") or role not in self.roles:
                continue
            seen.add(meta["name"])
            if meta["name"] in self.by_pod:
                continue
            capacity = meta["labels"].get(pod_labels.CAPACITY_LABEL, "on-demand")
            replica = self._new(role, capacity == "spot", now, ready=True, chunk_tokens=step_budget(pod))
            self.by_pod[meta["name"]] = replica
            self.pod_of[replica.rid] = (meta["namespace"], meta["name"], meta["labels"].get(pod_labels.DEPLOYMENT_LABEL, ""),
                                        role, capacity)
            log.info("pod %s joined the %s pool", meta["name"], role)
        for name in [n for n in self.by_pod if n not in seen]:
            replica = self.by_pod.pop(name)
            if replica.state in ("starting", "ready"):
                self._remove(replica, now)
            log.info("pod %s left", name)

    # ---- metrics ----------------------------------------------------------------------------------
    def on_finish(self, req: SimRequest, now: float, rep) -> None:
        super().on_finish(req, now, rep)
        values = self.pod_of.get(rep.rid)
        if values is None:
            return
        itl = (now - req.first_token) / (req.output - 1) if req.output > 1 else 0.0
        self.success.labels(*values).inc()
        self.generation_total.labels(*values).inc(req.output)
        if self.cfg.mode != "disaggregated":
            self.prompt_total.labels(*values).inc(req.input)
        self.ttft.labels(*values).observe(req.first_token - req.arrival)
        self.tpot.labels(*values).observe(itl)
        self.itl.labels(*values).observe(itl)
        self.e2e.labels(*values).observe(now - req.arrival)
        self.prompt_hist.labels(*values).observe(req.input)
        self.generation_hist.labels(*values).observe(req.output)

    def on_prefilled(self, req: SimRequest, now: float, rep) -> None:
        super().on_prefilled(req, now, rep)
        values = self.pod_of.get(rep.rid)
        if values is not None:
            self.prompt_total.labels(*values).inc(req.input)

    def refresh_gauges(self) -> None:
        for role in self.roles:
            for replica in self.replicas[role]:
                values = self.pod_of.get(replica.rid)
                if values is None:
                    continue
                if replica.state == "gone":
                    for gauge in (self.running, self.waiting, self.kv):
                        try:
                            gauge.remove(*values)
                        except KeyError:
                            pass
                    continue
                self.running.labels(*values).set(replica.running())
                self.waiting.labels(*values).set(replica.queued())
                self.kv.labels(*values).set(replica.kv_usage())


class LiveSimulator:
    """Arrivals, engine steps and pod syncing in wall-clock time, on a background thread."""

    def __init__(self, fleet: LiveFleet, list_pods, rate: float, input_tokens: int, output_tokens: int,
                 seed: int = 7, max_model_len: int = 8192):
        self.fleet = fleet
        self.list_pods = list_pods
        self.rate = rate
        self.input_tokens, self.output_tokens = input_tokens, output_tokens
        self.rng = random.Random(seed)
        self.start = time.monotonic()
        self.next_arrival = self._gap()
        self.next_id = 0
        self.max_model_len = max_model_len
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def now(self) -> float:
        return time.monotonic() - self.start

    def _gap(self) -> float:
        return self.rng.expovariate(self.rate) if self.rate > 0 else float("inf")

    def set_rate(self, rate: float) -> None:
        with self.lock:
            self.rate = max(0.0, rate)
            self.next_arrival = self.now() + self._gap()

    def step(self) -> None:
        """Advance the model to now: arrivals, KV hand-offs, engine steps, pod changes."""
        with self.lock:
            now = self.now()
            fleet = self.fleet
            entry = fleet.roles[0]
            while self.next_arrival <= now:
                t = self.next_arrival
                spread = lambda mean: max(1, int(mean * self.rng.uniform(0.5, 1.5)))  # noqa: E731
                request = SimRequest(self.next_id, t, spread(self.input_tokens), spread(self.output_tokens))
                self.next_id += 1
                if request.input + request.output <= self.max_model_len:
                    fleet.route(request, entry, t)
                self.next_arrival = t + self._gap()
            while fleet.handoffs and fleet.handoffs[0][0] <= now:
                t, _, request = heapq.heappop(fleet.handoffs)
                fleet.route(request, "decode", t)
            for role in fleet.roles:
                for replica in fleet.replicas[role]:
                    if replica.state in ("ready", "draining"):
                        replica.advance(now, fleet)
            fleet._reap(now)
            fleet.flush_pending(now)
            fleet.refresh_gauges()

    def sync(self) -> None:
        pods = self.list_pods()
        with self.lock:
            self.fleet.sync_pods(pods, self.now())

    def run(self, tick_s: float = 0.1, sync_every_s: float = 1.0) -> None:
        last_sync = -sync_every_s
        while not self.stopped.is_set():
            if self.now() - last_sync >= sync_every_s:
                try:
                    self.sync()
                except Exception as error:  # noqa: BLE001 (the API server may blink; keep serving)
                    log.warning("listing pods failed: %s", error)
                last_sync = self.now()
            self.step()
            self.stopped.wait(tick_s)


def serve(simulator: LiveSimulator, registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """GET /metrics (Prometheus text), GET /load?rate=R (set the arrival rate), GET /load (read it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            url = urlparse(self.path)
            if url.path == "/metrics":
                with simulator.lock:
                    body = generate_latest(registry)
                self._reply(200, body, CONTENT_TYPE_LATEST)
            elif url.path == "/load":
                rate = parse_qs(url.query).get("rate")
                if rate:
                    simulator.set_rate(float(rate[0]))
                self._reply(200, f"rate {simulator.rate}\n".encode(), "text/plain")
            else:
                self._reply(404, b"not found\n", "text/plain")

        def _reply(self, code, body, kind):
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet: Prometheus scrapes every few seconds
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="live-sim-http", daemon=True).start()
    return server
