"""The fleet: pools of modelled replicas, a router, start-up delay, graceful scale-down, spot
interruptions, KV transfer between prefill and decode pools, and the control loop that asks a policy
for targets every interval. Replays a trace; returns per-request latencies, GPU-hours and cost."""

from __future__ import annotations

import bisect
import collections
import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..planning.plan import ENGINE
from ..slo.decide import capacity
from ..slo.decide.types import FleetObservation, PoolObservation
from ..slo.profiles import CapacityProfile
from .engine import Replica, SimRequest
from .trace import Trace


@dataclass
class SimConfig:
    ttft_slo_s: float = 0.5
    itl_slo_s: float = 0.05
    mode: str = "monolithic"                 # monolithic | disaggregated
    interval_s: float = 30.0
    # the range the policy's rates and latency quantiles cover, as the loop's --metrics-window; None: one
    # interval (the loop's default). Counted in whole intervals, the last ones before each decision.
    metrics_window_s: float | None = None
    # how the policy reads latency quantiles: "histogram", as the loop does (Prometheus's histogram_quantile
    # over the buckets vLLM exports), or "exact", from the interval's requests themselves
    latency_quantiles: str = "histogram"
    # when the policy learns a request's prompt and answer lengths: "completion", as the loop does (vLLM
    # observes its per-request token histograms when a request finishes), or "arrival"
    lengths_at: str = "completion"
    startup_delay_s: float = 90.0
    chunk_tokens: int = 2048                 # monolithic max-num-batched-tokens
    prefill_chunk_tokens: int = 8192         # prefill pool max-num-batched-tokens
    kv_transfer_bytes_per_s: float = 25e9    # RDMA (NIXL over 200 Gb/s InfiniBand/RoCE ~ 25 GB/s)
    spot_interruptions_per_hour: float = 0.0  # per spot replica
    price_on_demand: float = 6.88            # per replica-hour
    price_spot: float = 2.5
    gpus_per_replica: int = 1
    seed: int = 1
    max_model_len: int = 131072
    # requests arriving after this are also scored on their own: attainment once a policy has seen
    # some of the load, apart from the first bursts that meet a fleet with no history
    warmup_s: float = 600.0


class Policy(Protocol):
    name: str

    def initial(self, cfg: SimConfig) -> dict[str, tuple[int, int]]: ...

    def decide(self, obs: FleetObservation) -> dict[str, tuple[int, int]]: ...


@dataclass
class SimResult:
    requests: int = 0
    completed: int = 0
    rejected: int = 0
    met: int = 0
    completed_after_warmup: int = 0
    met_after_warmup: int = 0
    # requests an idle replica serves within the TTFT target (no fleet size serves the others in time)
    completed_attainable: int = 0
    met_attainable: int = 0
    ttfts: list = field(default_factory=list)
    itls: list = field(default_factory=list)
    gpu_hours: float = 0.0
    gpu_hours_by_pool: dict = field(default_factory=dict)
    gpu_hours_spot: float = 0.0
    cost_usd: float = 0.0
    cost_on_demand_only_usd: float = 0.0
    scale_events: int = 0
    interruptions: int = 0
    retries: int = 0
    kv_transfer_gb: float = 0.0
    timeline: list = field(default_factory=list)
    end_s: float = 0.0


def _pct(vals: list[float], q: float) -> float | None:
    if not vals:
        return None
    s = sorted(vals)
    k = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return s[k]


LATENCY_QUANTILES = ("histogram", "exact")
LENGTHS_AT = ("completion", "arrival")
LATENCY_BUCKETS = ENGINE["vllm_histogram_buckets"]   # upper bounds (le) of vLLM's latency histograms


def histogram_quantile(q: float, values: list[float], bounds: list[float]) -> float | None:
    """What Prometheus's histogram_quantile(q, ...) returns for `values` observed into a histogram with
    these upper bounds: the bucket where the cumulative count reaches q x count, interpolated linearly
    from its lower bound (0 for the first bucket); the highest finite bound when that is the +Inf
    bucket. vLLM's buckets are coarse (TTFT: 0.25, 0.5, 0.75, 1, 2.5, 5 s, ...), so the loop reads a
    quantile that can sit anywhere in its bucket; None without values."""
    if not values:
        return None
    counts = [0] * (len(bounds) + 1)
    for v in values:
        counts[bisect.bisect_left(bounds, v)] += 1      # a bucket counts values <= its bound
    rank, below = q * len(values), 0
    for i, n in enumerate(counts):
        if n and below + n >= rank:
            if i == len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i else 0.0
            return lower + (bounds[i] - lower) * (rank - below) / n
        below += n
    return bounds[-1]


class Fleet:
    def __init__(self, profile: CapacityProfile, cfg: SimConfig):
        self.p = profile
        self.cfg = cfg
        self.roles = ("prefill", "decode") if cfg.mode == "disaggregated" else ("monolithic",)
        self.replicas: dict[str, list[Replica]] = {r: [] for r in self.roles}
        self.retired: list[Replica] = []
        self.next_id = 0
        self.handoffs: list = []           # (time, seq, request) KV arriving at the decode pool
        self.hseq = 0
        self.rng = random.Random(cfg.seed)
        self.res = SimResult()
        self.longest_attainable_prompt = self._longest_attainable_prompt()
        # window accumulators for the observation; the last few intervals' when the window is longer
        self.w_past: collections.deque = collections.deque(
            maxlen=max(1, round((cfg.metrics_window_s or cfg.interval_s) / cfg.interval_s)))
        self.w_ttft: list[float] = []
        self.w_itl: list[float] = []
        self.w_arrivals = 0
        self.w_in = 0
        self.w_out = 0
        self.w_gen = 0
        self.w_done = 0         # requests finished in the window, and their prompt and answer tokens
        self.w_done_in = 0
        self.w_done_out = 0
        self.w_prompts_done: list[int] = []      # prompt lengths, for the p95 the loop reads
        self.w_prompts_arrived: list[int] = []
        self.pending_retry: list[SimRequest] = []
        self.desired: dict[str, tuple[int, int]] = {}      # role -> (on-demand, spot)

    # ---- replicas ---------------------------------------------------------------------------------
    def _new(self, role: str, spot: bool, now: float, ready: bool = False,
             chunk_tokens: int | None = None) -> Replica:
        chunk = chunk_tokens or (self.cfg.prefill_chunk_tokens if role == "prefill" else self.cfg.chunk_tokens)
        r = Replica(self.next_id, role, spot, self.p, now, now if ready else now + self.cfg.startup_delay_s, chunk)
        if ready:
            r.state = "ready"
        self.next_id += 1
        self.replicas[role].append(r)
        return r

    def alive(self, role: str) -> list[Replica]:
        return [r for r in self.replicas[role] if r.state in ("starting", "ready")]

    def set_target(self, role: str, total: int, spot: int, now: float) -> bool:
        """Desired size of a pool: `total` replicas of which `spot` on spot (what the pool's
        Deployments are scaled to). True when it changed."""
        spot = max(0, min(spot, total))
        want = (total - spot, spot)
        changed = self.desired.get(role) != want
        self.desired[role] = want
        self.reconcile(role, now)
        return changed

    def reconcile(self, role: str, now: float) -> None:
        """Like the Deployment controllers: create missing pods at once; remove surplus ones, starting
        pods first, ready ones only while the pool keeps at least its desired total ready (a change of
        capacity type surges: the new pods come up before the old ones drain). Interrupted pods are
        replaced here too."""
        if role not in self.desired:
            return
        od, sp = self.desired[role]
        total = od + sp
        for want_spot, want in ((True, sp), (False, od)):
            have = [r for r in self.alive(role) if r.spot == want_spot]
            for _ in range(want - len(have)):
                self._new(role, want_spot, now)
        for want_spot, want in ((True, sp), (False, od)):
            have = [r for r in self.alive(role) if r.spot == want_spot]
            if len(have) <= want:
                continue
            have.sort(key=lambda r: (r.state == "ready", r.load()))
            for r in have[: len(have) - want]:
                if r.state == "starting":
                    self._remove(r, now)
                    continue
                ready = sum(1 for x in self.replicas[role] if x.state == "ready"
                            or (x.state == "starting" and x.ready_at <= now))
                if ready - 1 >= total:
                    self._remove(r, now)

    def _remove(self, r: Replica, now: float) -> None:
        if r.state == "starting":
            r.state = "gone"
            r.end = now
        else:
            r.advance(now, self)
            r.state = "draining"
            if r.idle():
                r.state = "gone"
                r.end = max(now, min(r.t, now))

    def _reap(self, now: float) -> None:
        for role in self.roles:
            keep = []
            for r in self.replicas[role]:
                if r.state == "starting" and r.ready_at <= now:
                    r.state = "ready"
                if r.state == "draining":
                    r.advance(now, self)
                    if r.idle():
                        r.state = "gone"
                        r.end = min(r.t, now) if r.t > r.ready_at else now
                if r.state == "gone":
                    self.retired.append(r)
                else:
                    keep.append(r)
            self.replicas[role] = keep

    # ---- routing ----------------------------------------------------------------------------------
    def route(self, req: SimRequest, role: str, now: float) -> None:
        best = None
        best_load = 0.0
        for r in self.replicas[role]:
            if r.state == "starting" and r.ready_at <= now:
                r.state = "ready"
            if r.state != "ready":
                continue
            if r.t < now:
                r.advance(now, self)
            ld = r.load()
            if best is None or ld < best_load:
                best, best_load = r, ld
        if best is None:
            self.pending_retry.append(req)   # no ready replica: waits at the gateway
            return
        best.enqueue(req, now)

    def flush_pending(self, now: float) -> None:
        if not self.pending_retry:
            return
        waiting, self.pending_retry = self.pending_retry, []
        for req in waiting:
            role = "decode" if (self.cfg.mode == "disaggregated" and req.handoff_at >= 0) else self.roles[0]
            self.route(req, role, now)

    def idle_ttft_s(self, input_tokens: int) -> float:
        """TTFT of a prompt alone on idle replicas: its chunked prefill, and when disaggregated the KV
        transfer and the decode pool's first step."""
        if self.cfg.mode != "disaggregated":
            return self.p.prompt_prefill_ms(input_tokens, self.cfg.chunk_tokens) / 1000.0
        return (self.p.prompt_prefill_ms(input_tokens, self.cfg.prefill_chunk_tokens) / 1000.0
                + capacity.kv_transfer_s(self.p, input_tokens, self.cfg.kv_transfer_bytes_per_s)
                + self.p.decode_step_ms(1, input_tokens) / 1000.0)

    def _longest_attainable_prompt(self, upper: int = 1 << 24) -> int:
        """The longest prompt idle replicas serve within the TTFT target (-1: none). idle_ttft_s grows
        with the prompt, so one bisection here spares a profile evaluation per finished request."""
        lo, hi = -1, upper
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.idle_ttft_s(mid) <= self.cfg.ttft_slo_s else (lo, mid)
        return lo

    # ---- callbacks from replicas ------------------------------------------------------------------
    def on_first_token(self, req: SimRequest, now: float) -> None:
        if not req.ttft_seen:
            req.ttft_seen = True
            self.w_ttft.append(now - req.arrival)

    def on_prefilled(self, req: SimRequest, now: float, rep: Replica) -> None:
        xfer = capacity.kv_transfer_s(self.p, req.input, self.cfg.kv_transfer_bytes_per_s)
        req.xfer_s = xfer
        req.handoff_at = now + xfer
        self.res.kv_transfer_gb += self.p.kv_bytes_per_token * req.input / 1e9
        self.hseq += 1
        heapq.heappush(self.handoffs, (now + xfer, self.hseq, req))

    def on_finish(self, req: SimRequest, now: float, rep: Replica) -> None:
        itl = (now - req.first_token) / (req.output - 1) if req.output > 1 else 0.0
        ttft = req.first_token - req.arrival
        self.res.completed += 1
        self.res.ttfts.append(ttft)
        self.res.itls.append(itl)
        met = ttft <= self.cfg.ttft_slo_s and itl <= self.cfg.itl_slo_s
        self.res.met += met
        if req.arrival >= self.cfg.warmup_s:
            self.res.completed_after_warmup += 1
            self.res.met_after_warmup += met
        if req.input <= self.longest_attainable_prompt:
            self.res.completed_attainable += 1
            self.res.met_attainable += met
        self.w_itl.append(itl)
        self.w_gen += req.output
        self.w_done += 1
        self.w_done_in += req.input
        self.w_done_out += req.output
        self.w_prompts_done.append(req.input)
        if now > self.res.end_s:
            self.res.end_s = now

    def on_reject(self, req: SimRequest, now: float) -> None:
        self.res.rejected += 1

    # ---- spot interruptions -------------------------------------------------------------------------
    def interrupt(self, now: float, dt: float) -> None:
        rate = self.cfg.spot_interruptions_per_hour
        if rate <= 0:
            return
        p = 1.0 - math.exp(-rate * dt / 3600.0)
        for role in self.roles:
            for r in list(self.replicas[role]):
                if r.spot and r.state in ("starting", "ready", "draining") and self.rng.random() < p:
                    if r.state != "starting":
                        r.advance(now, self)
                    victims = r.all_requests()
                    r.state = "gone"
                    r.end = now
                    self.res.interruptions += 1
                    for q in victims:        # KV lost with the node: retried from the prefill
                        q.reset()
                        q.handoff_at = -1.0
                        self.res.retries += 1
                        self.route(q, self.roles[0], now)

    # ---- observation ------------------------------------------------------------------------------
    def _quantile(self, q: float, values: list[float], histogram: str) -> float | None:
        if self.cfg.latency_quantiles == "exact":
            return _pct(values, q)
        return histogram_quantile(q, values, LATENCY_BUCKETS[histogram])

    def observe(self, now: float, interval: float, last_in: float, last_out: float) -> FleetObservation:
        pools = []
        for role in self.roles:
            reps = self.replicas[role]
            alive = [r for r in reps if r.state in ("starting", "ready")]
            ready = [r for r in reps if r.state == "ready"]
            busy = sum(min(r.busy_s, interval) for r in ready)
            for r in reps:
                r.busy_s = 0.0
            pools.append(PoolObservation(
                role=role,
                replicas_on_demand=self.desired.get(role, (sum(1 for r in alive if not r.spot), 0))[0],
                replicas_spot=self.desired.get(role, (0, sum(1 for r in alive if r.spot)))[1],
                ready_on_demand=sum(1 for r in ready if not r.spot),
                ready_spot=sum(1 for r in ready if r.spot),
                queue_depth=float(sum(r.queued() for r in reps)),
                running=float(sum(r.running() for r in reps)),
                kv_usage=(sum(r.kv_usage() for r in ready) / len(ready)) if ready else 0.0,
                gpu_util=(busy / (interval * len(ready))) if ready else 0.0,
                tokens_per_s=None))
        self.w_past.append((self.w_ttft, self.w_itl, self.w_arrivals, self.w_in, self.w_out, self.w_gen,
                            self.w_done, self.w_done_in, self.w_done_out, self.w_prompts_done,
                            self.w_prompts_arrived))
        span = interval * len(self.w_past)
        ttfts = [x for w in self.w_past for x in w[0]]
        itls = [x for w in self.w_past for x in w[1]]
        n, generated = (sum(w[k] for w in self.w_past) for k in (2, 5))
        lengths = (6, 7, 8) if self.cfg.lengths_at == "completion" else (2, 3, 4)
        counted, tokens_in, tokens_out = (sum(w[k] for w in self.w_past) for k in lengths)
        prompts = [x for w in self.w_past for x in w[9 if self.cfg.lengths_at == "completion" else 10]]
        if counted:
            mean_in, mean_out = tokens_in / counted, tokens_out / counted
        elif self.cfg.lengths_at == "completion":
            mean_in = mean_out = None        # none finished: the loop's length histograms are 0/0
        else:
            mean_in, mean_out = last_in, last_out
        obs = FleetObservation(
            time_s=now, pools=tuple(pools), request_rate=n / span,
            mean_input_tokens=mean_in, mean_output_tokens=mean_out,
            prompt_tokens_p95=self._quantile(0.95, prompts, "tokens"),
            ttft_p50_s=self._quantile(0.5, ttfts, "ttft_seconds"), ttft_p95_s=self._quantile(0.95, ttfts, "ttft_seconds"),
            itl_p50_s=self._quantile(0.5, itls, "itl_seconds"), itl_p95_s=self._quantile(0.95, itls, "itl_seconds"),
            tokens_per_s=generated / span,
            cost_per_hour=sum((self.cfg.price_spot if r.spot else self.cfg.price_on_demand)
                              for role in self.roles for r in self.alive(role)),
            demand_signal=float(len(self.pending_retry)))
        self.w_ttft, self.w_itl = [], []
        self.w_arrivals = self.w_in = self.w_out = self.w_gen = 0
        self.w_done = self.w_done_in = self.w_done_out = 0
        self.w_prompts_done, self.w_prompts_arrived = [], []
        return obs


def simulate_fleet(trace: Trace, profile: CapacityProfile, cfg: SimConfig, policy: Policy,
                   progress: Callable[[str], None] | None = None) -> SimResult:
    fleet = Fleet(profile, cfg)
    res = fleet.res
    for role, (total, spot) in policy.initial(cfg).items():
        for i in range(total):
            fleet._new(role, i < spot, 0.0, ready=True)
        fleet.desired[role] = (total - spot, spot)
    reqs = [SimRequest(i, r.arrival_s, r.input_tokens, r.output_tokens) for i, r in enumerate(trace.requests)]
    res.requests = len(reqs)
    n = len(reqs)
    i = 0
    next_tick = cfg.interval_s
    last_in, last_out = 1.0, 1.0
    entry = fleet.roles[0]
    last_targets: dict[str, int] = {r: len(fleet.alive(r)) for r in fleet.roles}
    horizon_end = trace.duration_s
    while True:
        t_arr = reqs[i].arrival if i < n else math.inf
        t_hand = fleet.handoffs[0][0] if fleet.handoffs else math.inf
        if i >= n and not fleet.handoffs and next_tick > horizon_end:
            # no more arrivals: drain everything still in flight, then stop
            if all(r.idle() for role in fleet.roles for r in fleet.replicas[role]) and not fleet.pending_retry:
                break
        t = min(t_arr, t_hand, next_tick)
        if t == math.inf:
            break
        if t in (next_tick, t_hand) and "prefill" in fleet.replicas:
            # prefill replicas advance lazily, on arrivals: before a tick or a hand-over moves the decode
            # pool's clock, find the prompts they finished by then, so each hands over at its own time
            for r in fleet.replicas["prefill"]:
                if r.state in ("ready", "draining") and r.t < t:
                    r.advance(t, fleet)
            if fleet.handoffs and fleet.handoffs[0][0] < t:
                continue  # an earlier hand-over surfaced: it goes first
        if t == next_tick:
            for role in fleet.roles:
                for r in fleet.replicas[role]:
                    if r.state in ("ready", "draining"):
                        r.advance(t, fleet)
            fleet._reap(t)
            for role in fleet.roles:
                fleet.reconcile(role, t)
            fleet.flush_pending(t)
            fleet.interrupt(t, cfg.interval_s)
            obs = fleet.observe(t, cfg.interval_s, last_in, last_out)
            last_in, last_out = obs.mean_input_tokens, obs.mean_output_tokens
            if t <= horizon_end + cfg.interval_s:
                targets = policy.decide(obs)
                for role, (total, spot) in targets.items():
                    if fleet.set_target(role, total, spot, t) or total != last_targets.get(role):
                        if total != last_targets.get(role):
                            res.scale_events += 1
                        last_targets[role] = total
            res.timeline.append({
                "t": round(t, 1), "rate": round(obs.request_rate, 3),
                "replicas": {role: len(fleet.alive(role)) for role in fleet.roles},
                "ready": {role: sum(1 for r in fleet.replicas[role] if r.state == "ready") for role in fleet.roles},
                "ttft_p95": obs.ttft_p95_s, "itl_p95": obs.itl_p95_s})
            if progress and int(t) % 600 == 0:
                progress(f"  t={t:.0f}s replicas={ {r: len(fleet.alive(r)) for r in fleet.roles} }")
            next_tick += cfg.interval_s
            if t > horizon_end + 3600 * 6:
                break
            continue
        if t == t_hand:
            _, _, req = heapq.heappop(fleet.handoffs)
            fleet.route(req, "decode", t)
            continue
        req = reqs[i]
        i += 1
        fleet.w_arrivals += 1
        fleet.w_in += req.input
        fleet.w_prompts_arrived.append(req.input)
        fleet.w_out += req.output
        if req.input + req.output > cfg.max_model_len:
            req.rejected = True
            res.rejected += 1
            continue
        fleet.route(req, entry, t)
    # bill every replica until it ended (or until the last request finished)
    end = max(res.end_s, trace.duration_s)
    for role in fleet.roles:
        for r in fleet.replicas[role]:
            if r.end < 0:
                r.end = end
    hours: dict[str, float] = {}
    for r in fleet.retired + [r for role in fleet.roles for r in fleet.replicas[role]]:
        h = max(0.0, r.end - r.created) / 3600.0 * cfg.gpus_per_replica
        hours[r.role] = hours.get(r.role, 0.0) + h
        res.gpu_hours += h
        per_gpu_h = (cfg.price_spot if r.spot else cfg.price_on_demand) / cfg.gpus_per_replica
        res.cost_usd += h * per_gpu_h
        res.cost_on_demand_only_usd += h * cfg.price_on_demand / cfg.gpus_per_replica
        if r.spot:
            res.gpu_hours_spot += h
    res.gpu_hours_by_pool = hours
    return res
