"""Policies the simulator can run: ours and the seed's (through slo.decide, exactly as the operator runs
them), and baselines: static-peak, an HPA, a Dynamo-style throughput planner, and an oracle.

All start from the same warm fleet: the replicas the capacity model gives for the trace's first
minute (as if the service had been running), except static-peak, which holds its peak size throughout.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ..slo.decide import capacity
from ..slo.decide import decide as run_policy
from ..slo.decide.types import (Constraints, FleetObservation, HPASpec, PolicySpec, PolicyState, Prices,
                                SLOTargets, Tuning, _finite)
from ..slo.profiles import CapacityProfile
from .fleet import SimConfig
from .trace import Trace, windows

POLICY_NAMES = ("static-peak", "hpa", "threshold", "dynamo", "default", "oracle")


def _roles(cfg: SimConfig) -> tuple[str, ...]:
    return ("prefill", "decode") if cfg.mode == "disaggregated" else ("monolithic",)


def sizing(profile: CapacityProfile, cfg: SimConfig, rate: float, mean_in: float, mean_out: float,
           tuning: Tuning | None = None, factor: float = 1.0, context_scale: float = 1.0) -> dict[str, int]:
    tn = tuning or tuning_for(cfg)
    slo = SLOTargets(cfg.ttft_slo_s, cfg.itl_slo_s)
    need = capacity.replicas_for_load(profile, cfg.mode, rate, mean_in, mean_out, slo, tn,
                                      context_scale=context_scale)
    return {r: (max(1, math.ceil(v * factor - 1e-9)) if math.isfinite(v) else 100) for r, v in need.items()}


def tuning_for(cfg: SimConfig, **kw) -> Tuning:
    return replace(Tuning(), startup_delay_s=cfg.startup_delay_s, interval_s=cfg.interval_s,
                   chunk_tokens=cfg.chunk_tokens, prefill_chunk_tokens=cfg.prefill_chunk_tokens,
                   kv_transfer_bytes_per_s=cfg.kv_transfer_bytes_per_s, **kw)


def warm_start(trace: Trace, profile: CapacityProfile, cfg: SimConfig) -> dict[str, tuple[int, int]]:
    """What a fleet that had been running would have ready at t=0: the capacity model's replicas for
    the busiest 30 s window before the first replicas ordered at t=0 can be ready."""
    span = cfg.startup_delay_s + 2 * cfg.interval_s
    out: dict[str, int] = {}
    for t0, cnt, mi, mo, scale in windows(trace, 30.0):
        if t0 >= span:
            break
        if cnt:
            for r, n in sizing(profile, cfg, cnt / 30.0, mi or 1, mo or 1, context_scale=scale).items():
                out[r] = max(out.get(r, 1), n)
    return {r: (out.get(r, 1), 0) for r in _roles(cfg)}


class DecidePolicy:
    """default | threshold | hpa: the operator's pure policies."""

    def __init__(self, name: str, trace: Trace, profile: CapacityProfile, cfg: SimConfig,
                 max_spot_ratio: float = 0.0, tuning: Tuning | None = None, max_replicas: int = 200):
        self.name = name
        self.profile = profile
        self.cfg = cfg
        self.trace = trace
        tn = tuning or tuning_for(cfg)
        hpa = HPASpec()
        if name == "hpa":
            # HPA on per-replica concurrency (running + waiting, as KServe/llm-d users configure it),
            # 100% = the concurrency one replica holds at its SLO capacity for the trace-average lengths
            # (Little's law on the capacity model), target 70%
            reqs = trace.requests
            mi = sum(r.input_tokens for r in reqs) / len(reqs)
            mo = sum(r.output_tokens for r in reqs) / len(reqs)
            slo = SLOTargets(cfg.ttft_slo_s, cfg.itl_slo_s)
            full = {}
            if cfg.mode == "disaggregated":
                rp = capacity.prefill_rate_per_replica(profile, mi, slo, tn)
                full["prefill"] = max(1.0, rp * profile.prompt_prefill_ms(mi, cfg.prefill_chunk_tokens) / 1000 * 2)
                ctx = mi + mo / 2
                full["decode"] = max(1.0, float(profile.max_decode_batch(ctx, cfg.itl_slo_s * tn.itl_margin)))
            else:
                r = capacity.monolithic_rate_per_replica(profile, mi, mo, slo, tn)
                _, _, b = capacity.monolithic_steady_state(profile, r, mi, mo, tn)
                full["monolithic"] = max(1.0, b)
            hpa = HPASpec(metric="concurrency", target=0.7, concurrency_by_role=tuple(full.items()))
        self.spec = PolicySpec(
            slo=SLOTargets(cfg.ttft_slo_s, cfg.itl_slo_s),
            constraints=Constraints(default_min_replicas=1, default_max_replicas=max_replicas,
                                    max_spot_ratio=max_spot_ratio),
            prices=Prices(cfg.price_on_demand, cfg.price_spot),
            tuning=tn, hpa=hpa)
        self.state = PolicyState()
        self.last = None

    def initial(self, cfg: SimConfig) -> dict[str, tuple[int, int]]:
        return warm_start(self.trace, self.profile, cfg)

    def decide(self, obs: FleetObservation) -> dict[str, tuple[int, int]]:
        d, self.state = run_policy(self.name, obs, self.spec, self.profile, self.state)
        self.last = d
        return {p.role: (p.target, p.target_spot) for p in d.pools}


class StaticPeak:
    """Fixed fleet sized with the capacity model for the trace's busiest minute."""

    name = "static-peak"

    def __init__(self, trace: Trace, profile: CapacityProfile, cfg: SimConfig):
        self.sizes: dict[str, int] = {}
        for _, cnt, mi, mo, scale in windows(trace, 60.0):
            if cnt:
                s = sizing(profile, cfg, cnt / 60.0, mi, mo, context_scale=scale)
                for r, n in s.items():
                    self.sizes[r] = max(self.sizes.get(r, 0), n)

    def initial(self, cfg: SimConfig) -> dict[str, tuple[int, int]]:
        return {r: (n, 0) for r, n in self.sizes.items()}

    def decide(self, obs: FleetObservation) -> dict[str, tuple[int, int]]:
        return {r: (n, 0) for r, n in self.sizes.items()}


class DynamoPlanner:
    """A throughput planner in the style of NVIDIA Dynamo's SLA planner (throughput-based scaling;
    docs.nvidia.com/dynamo, "Planner Design", read 2026-11): every interval it predicts the next
    interval's request count, ISL and OSL (here: ARIMA-like, last value plus the recent linear trend),
    keeps correction factors actual/expected TTFT and ITL, and sets
        prefill replicas = ceil(pred_rate * ISL * min(1, prefill_correction) / prefill_tok_s_per_replica)
        decode replicas  = ceil(pred_rate * OSL / decode_tok_s_per_replica(ITL target / decode_correction,
                                                                       context ISL + OSL/2))
    where prefill throughput is the profiled single-request rate ISL / TTFT(ISL) and decode throughput
    the largest batch whose step fits the ITL target. Aggregated (monolithic) mode adds the two
    fractional demands. No cost awareness (on-demand only), no scale-down hysteresis."""

    name = "dynamo"

    def __init__(self, trace: Trace, profile: CapacityProfile, cfg: SimConfig):
        self.p = profile
        self.cfg = cfg
        self.trace = trace
        self.hist: list[float] = []
        self.pc = 1.0
        self.dc = 1.0
        self.lengths = (1.0, 1.0)

    def initial(self, cfg: SimConfig) -> dict[str, tuple[int, int]]:
        return warm_start(self.trace, self.p, cfg)

    def decide(self, obs: FleetObservation) -> dict[str, tuple[int, int]]:
        cur = {p.role: p.replicas for p in obs.pools}
        if not _finite(obs.request_rate):
            return {r: (n, 0) for r, n in cur.items()}
        self.hist.append(obs.request_rate)
        h = self.hist[-5:]
        slope = (h[-1] - h[0]) / (len(h) - 1) if len(h) > 1 else 0.0
        rate = max(0.0, h[-1] + slope)
        if _finite(obs.mean_input_tokens) and _finite(obs.mean_output_tokens):
            self.lengths = (obs.mean_input_tokens, obs.mean_output_tokens)   # seen when requests finish
        isl, osl = (max(1.0, x) for x in self.lengths)
        ctx = isl + osl / 2
        pre_tps = isl / (self.p.prompt_prefill_ms(isl, self.cfg.prefill_chunk_tokens) / 1000.0)
        # correction factors from observed p50 latencies vs the profile's expectation
        if _finite(obs.ttft_p50_s) and obs.ttft_p50_s > 0:
            exp_ttft = self.p.prompt_prefill_ms(isl, self.cfg.prefill_chunk_tokens) / 1000.0
            self.pc = max(0.25, min(4.0, obs.ttft_p50_s / exp_ttft))
        ready = sum(p.ready for p in obs.pools if p.role in ("monolithic", "decode"))
        if _finite(obs.itl_p50_s) and obs.itl_p50_s > 0 and ready and obs.request_rate > 0:
            b = max(1.0, obs.request_rate / ready * osl * 0.03)
            for _ in range(20):
                b = max(1.0, obs.request_rate / ready * osl * self.p.decode_step_ms(b, ctx) / 1000.0)
            exp_itl = self.p.decode_step_ms(b, ctx) / 1000.0
            self.dc = max(0.25, min(4.0, obs.itl_p50_s / exp_itl))
        dec_tps = self.p.max_decode_tokens_per_s(ctx, self.cfg.itl_slo_s / self.dc)
        p_need = rate * isl * min(1.0, self.pc) / pre_tps
        d_need = rate * osl / dec_tps if dec_tps > 0 else 100.0
        if self.cfg.mode == "disaggregated":
            return {"prefill": (max(1, math.ceil(p_need)), 0), "decode": (max(1, math.ceil(d_need)), 0)}
        return {"monolithic": (max(1, math.ceil(p_need + d_need)), 0)}


class Oracle:
    """Knows the future. For every interval it takes the trace's ACTUAL request rate and mean lengths
    in that interval, converts them to replicas with the capacity model times one global factor h, and
    keeps each interval's replicas ready from the moment it starts (ordered start-up-delay ahead;
    released as soon as no interval within the next start-up + interval needs them). h is the smallest
    value (bisection, 0.02 resolution) for which the whole run reaches the attainment goal (99%):
    the fewest replicas per interval that meet the SLO, up to that resolution."""

    name = "oracle"

    def __init__(self, trace: Trace, profile: CapacityProfile, cfg: SimConfig, factor: float = 1.0):
        self.trace = trace
        self.p = profile
        self.cfg = cfg
        self.factor = factor
        w = windows(trace, cfg.interval_s)
        self.needs = [sizing(profile, cfg, cnt / cfg.interval_s, mi or 1, mo or 1, factor=factor,
                             context_scale=scale) if cnt
                      else {r: 1 for r in _roles(cfg)} for _, cnt, mi, mo, scale in w]

    def _target(self, t: float) -> dict[str, int]:
        k0 = int(t // self.cfg.interval_s)
        k1 = int((t + self.cfg.startup_delay_s + self.cfg.interval_s) // self.cfg.interval_s)
        out: dict[str, int] = {}
        for k in range(k0, min(k1 + 1, len(self.needs))):
            for r, n in self.needs[k].items():
                out[r] = max(out.get(r, 1), n)
        return out or {r: 1 for r in _roles(self.cfg)}

    def initial(self, cfg: SimConfig) -> dict[str, tuple[int, int]]:
        return {r: (n, 0) for r, n in self._target(0.0).items()}

    def decide(self, obs: FleetObservation) -> dict[str, tuple[int, int]]:
        return {r: (n, 0) for r, n in self._target(obs.time_s).items()}


def make_policy(name: str, trace: Trace, profile: CapacityProfile, cfg: SimConfig,
                max_spot_ratio: float = 0.0, **kw):
    if name == "static-peak":
        return StaticPeak(trace, profile, cfg)
    if name == "dynamo":
        return DynamoPlanner(trace, profile, cfg)
    if name == "oracle":
        return Oracle(trace, profile, cfg, kw.get("factor", 1.0))
    if name in ("default", "threshold", "hpa"):
        return DecidePolicy(name, trace, profile, cfg, max_spot_ratio=max_spot_ratio,
                            tuning=kw.get("tuning"))
    raise ValueError(f"unknown policy {name!r} (choose from {', '.join(POLICY_NAMES)})")
