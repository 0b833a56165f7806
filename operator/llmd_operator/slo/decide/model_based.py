"""The default policy: model-based and cost-aware.

Every tick:
1. hold when metrics are missing, stale or NaN (never scale on missing data); lengths are learned from
   requests that finished, so a window in which none did keeps the last lengths seen;
2. remember (time, request rate, mean input, mean output) and predict the load at the end of the
   prediction horizon (pod start-up + one interval): max(last, EWMA, linear trend extrapolated), plus
   Poisson headroom (z * sqrt(rate / interval)) and a proportional headroom; a prefill pool takes the
   last interval's mean prompt when it rose beyond noise;
3. correct the capacity profile by observed / predicted latency (bounded, smoothed), per pool; read
   the decode batch's mean context from the KV cache usage (long prompts with short answers spend
   few steps in the batch, so it holds far less context than the mean prompt suggests);
4. turn the predicted load into replicas per pool with the profile (capacity.replicas_for_load); a
   decode pool whose KV caches are full with requests waiting grows by one, and the TTFT that wait
   adds is not read as the prefill pool's; a TTFT p95 that the p95 prompt's own prefill holds over
   target adds no replicas, and a mean prompt no replica prefills in time sizes the pool for ITL and
   throughput instead of maxReplicas;
5. scale up at once; scale down only when N-1 replicas would still run below `scale_down_margin` of
   their SLO capacity at the load seen now AND the prediction allows it, at most `max_scale_down_step`
   of the pool per decision, not within the cooldown;
5b. on/off load (the busiest interval of the last 15 min >= 1.5x its mean, e.g. bursts shorter than a
   pod start-up between idle minutes): keep, or order again, the replicas the busiest burst of that
   window needed, since replicas ordered when a burst starts are ready only after it ended;
6. min/max, maxCostPerHour / maxCostPerRequest (BudgetLimited with numbers), spot split by $/token.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import replace

from ...planning.plan import ENGINE
from ..profiles import CapacityProfile
from . import capacity
from .common import finish, fmt_rate, hold, metrics_problem, spot_split
from .types import FleetObservation, PolicySpec, PolicyState, SLOTargets, _finite

NAME = "default"


def _ewma(values: list[float], alpha: float) -> float:
    e = values[0]
    for v in values[1:]:
        e = alpha * v + (1 - alpha) * e
    return e


def _slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return 0.0 if den <= 0 else sum((t - mt) * (v - mv) for t, v in points) / den


def predict_series(points: list[list[float]], now: float, tn) -> float:
    """max(last, EWMA, last + rising trend x horizon) of a [t, value] series."""
    vals = [v for _, v in points]
    last = vals[-1]
    recent = [(t, v) for t, v in points if t >= now - tn.trend_window_s]
    slope = max(0.0, _slope(recent))
    return max(last, _ewma(vals, tn.ewma_alpha), last + tn.trend_gain * slope * (tn.startup_delay_s + tn.interval_s))


def prefill_prompt_length(history: list[list[float]], mean_in: float, tn) -> float:
    """Mean prompt a prefill pool is sized for: the last interval's mean when it rose above the EWMA
    by more than `prompt_rise_z` standard errors of a mean over that interval's requests, else the
    EWMA. Prompts that grow for minutes (a new client, a longer document set) reach the prefill
    pool's sizing an interval or two earlier than through the EWMA, while one noisy interval's
    mean rarely passes the test."""
    if tn.prompt_rise_z is None or not history:
        return mean_in
    _, rate, last_in, _ = history[-1]
    n = max(rate * tn.interval_s, 1.0)
    if last_in > mean_in * (1 + tn.prompt_rise_z * math.sqrt(tn.prompt_cv2 / n)):
        return last_in
    return mean_in


def predict(history: list[list[float]], now: float, spec: PolicySpec) -> tuple[float, float, float]:
    """(rate, mean_in, mean_out) to plan for at now + horizon."""
    tn = spec.tuning
    horizon = tn.startup_delay_s + tn.interval_s
    rates = [h[1] for h in history]
    last = rates[-1]
    ew = _ewma(rates, tn.ewma_alpha)
    recent = [(h[0], h[1]) for h in history if h[0] >= now - tn.trend_window_s]
    slope = max(0.0, _slope(recent))          # only rising trends add capacity
    trend = last + tn.trend_gain * slope * horizon
    peak = max(h[1] for h in history if h[0] >= now - tn.peak_window_s)
    base = max(last, ew, trend, peak * tn.peak_weight)
    noise = tn.noise_z * math.sqrt(max(base, 0.0) / max(tn.interval_s, 1.0))
    rate = base * (1 + tn.headroom) + noise
    ins = [h[2] for h in history if h[2] > 0] or [1.0]
    outs = [h[3] for h in history if h[3] > 0] or [1.0]
    mean_in = _ewma(ins, tn.ewma_alpha)
    mean_out = _ewma(outs, tn.ewma_alpha)
    return rate, mean_in, mean_out


def effective_slo(spec: PolicySpec, mean_out: float) -> SLOTargets:
    slo, c = spec.slo, spec.constraints
    ttft, itl = slo.ttft_p95_s, slo.itl_p95_s
    if c.max_latency_p95_s is not None and mean_out > 1:
        # maxLatencyP95 bounds the end-to-end latency: TTFT + output x ITL
        ttft = min(ttft, c.max_latency_p95_s * 0.5)
        itl = min(itl, (c.max_latency_p95_s - ttft) / mean_out)
    return SLOTargets(ttft_p95_s=max(ttft, 1e-3), itl_p95_s=max(itl, 1e-4))


def _update_context_scale(obs: FleetObservation, spec: PolicySpec, state: PolicyState,
                          profile: CapacityProfile) -> dict[str, float]:
    """Per decode-running pool, the decode batch's mean context over mean input + output / 2
    (capacity.decode_context), read from what the pool holds: KV cache usage x the profile's KV
    capacity x ready replicas / running requests. Bounded, smoothed after the first reading, and only
    from a pool running enough requests for their mean to mean something; 1 until then."""
    tn = spec.tuning
    alpha = tn.correction_alpha
    scales = dict(state.extra.get("context_scale", {}))
    mi, mo = obs.mean_input_tokens, obs.mean_output_tokens
    for p in obs.pools:
        if p.role not in ("monolithic", "decode"):
            continue
        if (_finite(mi) and _finite(mo) and mi > 0 and _finite(p.kv_usage) and p.kv_usage > 0
                and _finite(p.running) and p.ready > 0
                and p.running >= tn.context_min_running_per_replica * p.ready):
            held = p.kv_usage * profile.kv_capacity_tokens * p.ready / p.running
            seen = held / capacity.decode_context(mi, mo)
            seen = min(tn.context_scale_max, max(tn.context_scale_min, seen))
            # the first reading replaces the prior outright: 1 is a guess, not a measurement, and
            # smoothing from it would size the pool for a context it does not hold for minutes
            scales[p.role] = seen if p.role not in scales else (1 - alpha) * scales[p.role] + alpha * seen
    state.extra["context_scale"] = scales
    return {p.role: scales.get(p.role, 1.0) for p in obs.pools if p.role in ("monolithic", "decode")}


def _update_correction(obs: FleetObservation, spec: PolicySpec, state: PolicyState,
                       profile: CapacityProfile, slo: SLOTargets,
                       scales: dict[str, float], decode_full: bool = False) -> dict[str, float]:
    """Observed / predicted latency per pool, bounded and smoothed (as Dynamo's correction factors):
    the observed median (per-request mean ITL; TTFT) against the model's mean step / prefill time at
    the load the pool carries now. Medians, not p95s: the model predicts means; the SLO margins in
    Tuning cover the tail."""
    tn = spec.tuning
    corr = dict(state.extra.get("correction", {}))
    rate, mi, mo = obs.request_rate or 0.0, obs.mean_input_tokens, obs.mean_output_tokens
    if not (rate > 0 and _finite(mi) and _finite(mo)):
        return {p.role: corr.get(p.role, 1.0) for p in obs.pools}
    for p in obs.pools:
        k = corr.get(p.role, 1.0)
        ready = p.ready
        if ready <= 0:
            continue
        ratio = None
        if p.role in ("monolithic", "decode") and _finite(obs.itl_p50_s) and obs.itl_p50_s > 0:
            scale = scales.get(p.role, 1.0)
            if p.role == "monolithic":
                step, _, _ = capacity.monolithic_steady_state(profile, rate / ready, mi, mo, tn, 1.0, scale)
            else:
                ctx = capacity.decode_context(mi, mo, scale)
                batch = rate / ready * mo * profile.decode_base_ms / 1000
                for _ in range(20):
                    step = profile.decode_step_ms(max(1.0, batch), ctx)
                    batch = rate / ready * mo * step / 1000
            # only a loaded pool says something about capacity at the SLO edge
            if math.isfinite(step) and step > tn.correction_min_load * slo.itl_p95_s * 1000:
                ratio = obs.itl_p50_s * 1000 / step
        elif (p.role == "prefill" and tn.prefill_correction and not decode_full
              and _finite(obs.ttft_p50_s) and obs.ttft_p50_s > 0):
            # the median TTFT the model predicts at the load the pool carries now: prefill, KV
            # transfer, and the median wait in the pool's queue (a loaded pool queues prompts even
            # when the model is right; leaving the wait out would read it as a slow profile)
            _, work, cv2, _ = capacity.prefill_pool_terms(profile, mi, slo, tn)
            pred = (profile.prompt_prefill_ms(mi, tn.prefill_chunk_tokens) / 1000
                    + capacity.kv_transfer_s(profile, mi, tn.kv_transfer_bytes_per_s)
                    + capacity.mgc_wait_quantile_s(ready, rate * work, work, cv2, 0.5))
            # (an overloaded pool, pred = inf, says nothing about the profile: the overshoot rule acts)
            ratio = _bucketed_ratio(obs.ttft_p50_s, pred, TTFT_BUCKETS) if 0 < pred < math.inf else None
            # prompt lengths are skewed: the median TTFT sits below the mean prompt's prefill time
            # even when the model is right, so for this pool observation only ever raises it
            if ratio is not None:
                ratio = max(1.0, ratio)
        if ratio is not None and math.isfinite(ratio):
            # deadband: the median per-request latency sits above the model's mean step by a
            # load-dependent amount even when the model is right; only errors beyond it count
            db = tn.correction_deadband
            ratio = ratio / db if ratio > db else ratio * db if ratio < 1 / db else 1.0
            ratio = min(tn.correction_max, max(tn.correction_min, ratio))
            k = (1 - tn.correction_alpha) * k + tn.correction_alpha * ratio
        corr[p.role] = k
    state.extra["correction"] = corr
    return {p.role: corr.get(p.role, 1.0) for p in obs.pools}


TTFT_BUCKETS = tuple(ENGINE["vllm_histogram_buckets"]["ttft_seconds"])


def _bucketed_ratio(observed: float, predicted: float, bounds: tuple[float, ...]) -> float:
    """observed / predicted, where `observed` is a quantile Prometheus interpolated inside one of vLLM's
    histogram buckets (TTFT: ..., 0.5, 0.75, 1, 2.5, 5 s, ...): the true quantile lies anywhere in that
    bucket, so a prediction inside it is not contradicted (1); outside it, the interpolated value is
    the best estimate there is. Read as a point, the 1-2.5 s and 0.5-0.75 s buckets corrected a right
    model by 1.35-1.50x on Mooncake x2 compress (+5% GPU-hours, bench/README.md)."""
    i = bisect.bisect_left(bounds, observed)
    lower = bounds[i - 1] if i else 0.0
    upper = bounds[i] if i < len(bounds) else math.inf
    if lower < predicted <= upper:
        return 1.0
    return observed / predicted


REQUIRED_METRICS = ("request_rate",)  # the dispatcher holds when these are missing


def decide(obs: FleetObservation, spec: PolicySpec, profile: CapacityProfile | None,
           state: PolicyState) -> tuple:
    if _finite(obs.mean_input_tokens) and _finite(obs.mean_output_tokens):
        state.extra["lengths"] = [float(obs.mean_input_tokens), float(obs.mean_output_tokens)]
    else:
        # vLLM observes a request's lengths when it finishes: a window in which none finished (none
        # came, or a long answer is still being written) has 0/0 histograms. Keep the last lengths
        # seen; with none seen yet and requests coming, there is nothing to size them by.
        seen = state.extra.get("lengths")
        if seen is None and obs.request_rate > 0:
            return hold(obs, NAME, state, metrics_problem(obs, ("mean_input_tokens", "mean_output_tokens")))
        seen = seen or [1.0, 1.0]
        obs = replace(obs, mean_input_tokens=seen[0], mean_output_tokens=seen[1])
    if profile is None:
        return hold(obs, NAME, state, "no capacity profile for this model and GPU")
    tn = spec.tuning
    state.extra.setdefault("first_seen_s", obs.time_s)   # no scale-down before a cooldown of history
    keep_s = max(tn.trend_window_s, tn.peak_window_s) + tn.interval_s
    want_keep_s = max(tn.scale_down_window_s, tn.bursty_window_s)
    rates = [r for r in state.extra.get("rates", []) if r[0] > obs.time_s - tn.bursty_window_s]
    rates.append([obs.time_s, round(float(obs.request_rate), 3)])
    state.extra["rates"] = rates
    bursty = _bursty(rates, tn)
    state.history.append([obs.time_s, float(obs.request_rate), float(obs.mean_input_tokens),
                          float(obs.mean_output_tokens)])
    state.history = [h for h in state.history if h[0] >= obs.time_s - keep_s]
    rate, mean_in, mean_out = predict(state.history, obs.time_s, spec)
    slo = effective_slo(spec, mean_out)
    scales = _update_context_scale(obs, spec, state, profile)
    decode_full = _decode_cache_full(obs, tn)
    corr = _update_correction(obs, spec, state, profile, slo, scales, decode_full)
    mode = obs.mode
    prefill_in = prefill_prompt_length(state.history, mean_in, tn)
    targets, reasons, actions = {}, {}, {}
    hist = state.extra.setdefault("need_history", {})
    for p in obs.pools:
        k = corr.get(p.role, 1.0)
        scale = scales.get(p.role, 1.0)
        pool_in = prefill_in if p.role == "prefill" else mean_in
        need, ttft_dropped = _replicas_needed(profile, mode, p.role, rate, pool_in, mean_out, slo, tn, k, scale)
        now_need, _ = _replicas_needed(profile, mode, p.role, obs.request_rate, obs.mean_input_tokens,
                                       obs.mean_output_tokens, slo, tn, k, scale)
        if tn.predict_work and math.isfinite(now_need):
            # the work itself (replicas the load seen now needs) also gets the trend treatment: it
            # moves with prompt/output lengths as well as with the request rate
            h = [x for x in hist.get(p.role, []) if x[0] >= obs.time_s - keep_s] + [[obs.time_s, now_need]]
            hist[p.role] = h
            work = predict_series(h, obs.time_s, tn)
            per_replica = obs.request_rate / now_need if now_need > 0 else 0.0
            noise = (tn.noise_z * math.sqrt(max(obs.request_rate, 0.0) / max(tn.interval_s, 1.0))
                     / per_replica) if per_replica > 0 else 0.0
            need = max(need, work * (1 + tn.headroom) + noise)
        if not math.isfinite(need):
            targets[p.role] = spec.constraints.max_for(p.role)
            reasons[p.role] = (f"one replica cannot meet TTFT {slo.ttft_p95_s:g} s / ITL "
                               f"{slo.itl_p95_s * 1000:g} ms at {pool_in:.0f}/{mean_out:.0f} tokens; at max")
            continue
        # SLO already violated: the model is optimistic right now; add what the overshoot says. A TTFT
        # p95 the prompts' own prefill time holds over target is no sign of missing capacity
        floor = ttft_floor_s(obs, p.role, profile, tn)
        over = _overshoot(obs, p.role, slo, floor)
        if decode_full and p.role == "prefill":
            over = 0.0        # the TTFT over target is the wait for decode admission, not prefill
        if over > 1.0:
            # the boost scales what the load seen now needs; where one replica cannot serve that load
            # at all (prompts whose prefill alone outlasts the TTFT target), more replicas do not help
            boost = now_need * min(tn.overload_boost_max, over) if math.isfinite(now_need) else need
            need = max(need, boost, p.ready + 1)
        if decode_full and p.role == "decode":
            # requests wait for room in full KV caches: TTFT grows while ITL looks fine
            need = max(need, p.ready + 1)
        want = max(0, math.ceil(need - 1e-9))
        # spare capacity against spot interruptions: the replicas that will run on spot, times the
        # share we keep in reserve (itself on spot, so cheap); a lost node then costs no SLO
        n_spot = spot_split(want, spec.prices, spec.constraints.max_spot_ratio)
        if n_spot and tn.spot_spare_fraction > 0:
            want += math.ceil(n_spot * tn.spot_spare_fraction - 1e-9)
        if spec.constraints.min_throughput_tokens_per_s:
            per = capacity.decode_rate_per_replica(profile, mean_in, mean_out, slo, tn, k, scale) * mean_out
            if per > 0 and p.role in ("monolithic", "decode"):
                want = max(want, math.ceil(spec.constraints.min_throughput_tokens_per_s / per))
        cur = p.replicas
        # scale-down stabilization: the highest recommendation of the last scale_down_window_s
        # (a load that rose within it would need a start-up delay to be served again)
        wants = state.extra.setdefault("wants", {})
        kept = [w for w in wants.get(p.role, []) if w[0] > obs.time_s - want_keep_s]
        kept.append([obs.time_s, want])
        wants[p.role] = kept
        window = tn.bursty_window_s if bursty else tn.scale_down_window_s
        stable_want = max(w[1] for w in kept if w[0] > obs.time_s - window)
        for_bursts = bursty and stable_want > want
        if for_bursts:
            # on/off load: be ready for the window's busiest burst, also in a lull (and again, if
            # replicas went before the pattern showed): a burst ends before a new replica is ready
            want = stable_want
        tokens = rate * (pool_in if p.role == "prefill" else mean_out)
        kind = "prompt" if p.role == "prefill" else "output"
        latency = _latency_words(obs, p.role, spec.slo, floor)
        if want > cur:
            targets[p.role] = want
            actions[p.role] = "scale_up"
            reasons[p.role] = (f"{p.role} {cur}->{want}: {latency}predicted {fmt_rate(rate)} req/s, "
                               f"{fmt_rate(tokens)} {kind} tok/s (correction x{k:.2f})"
                               + (f"; on/off load: ready for the busiest burst of the last "
                                  f"{tn.bursty_window_s / 60:.0f} min" if for_bursts else "")
                               + (f"; KV cache {p.kv_usage:.0%} full, {p.queue_depth:.0f} requests waiting for room"
                                  if decode_full and p.role == "decode" else "")
                               + (f"; sized for ITL and throughput: TTFT {slo.ttft_p95_s:g} s is out of reach for the "
                                  f"predicted {pool_in:.0f}-token mean prompt" if ttft_dropped else ""))
        elif want < cur:
            since = max(state.last_scale_up_s.get(p.role, -1e18), state.last_scale_down_s.get(p.role, -1e18),
                        state.extra.get("first_seen_s", obs.time_s))
            # N-1 test at the load seen now, with margin
            n_minus_1_ok = now_need <= (cur - 1) * tn.scale_down_margin
            if obs.time_s - since < tn.scale_down_cooldown_s:
                targets[p.role] = cur
                reasons[p.role] = f"{p.role}: holding {cur} (scale-down cooldown)"
            elif stable_want >= cur:
                targets[p.role] = cur
                reasons[p.role] = (f"{p.role}: holding {cur} (needed {stable_want} within the last "
                                   f"{window:.0f} s" + (", on/off load" if bursty else "") + ")")
            elif not n_minus_1_ok:
                targets[p.role] = cur
                reasons[p.role] = (f"{p.role}: holding {cur} ({cur - 1} would run at "
                                   f"{now_need / max(cur - 1, 1):.0%} of SLO capacity)")
            elif p.role == "decode" and (kv_after := _kv_after_one_less(p)) >= tn.decode_kv_full:
                # the KV caches as they are now, on one replica fewer: a profile that overstates the
                # cache would otherwise shrink the pool back into the full cache it just grew out of
                targets[p.role] = cur
                reasons[p.role] = (f"{p.role}: holding {cur} ({cur - 1} would hold their KV caches "
                                   f"{kv_after:.0%} full)")
            else:
                step = max(1, math.floor(cur * tn.max_scale_down_step))
                floor_now = math.ceil(now_need / tn.scale_down_margin - 1e-9)
                t = max(stable_want, cur - step, floor_now)
                targets[p.role] = min(cur, t)
                actions[p.role] = "scale_down"
                reasons[p.role] = (f"{p.role} {cur}->{targets[p.role]}: {latency}predicted "
                                   f"{fmt_rate(rate)} req/s needs {need:.1f} replicas"
                                   + (" (for ITL and throughput: TTFT is out of reach at these prompts)"
                                      if ttft_dropped else ""))
        else:
            targets[p.role] = cur
            reasons[p.role] = ""
    predicted = {"request_rate": round(rate, 3), "mean_input_tokens": round(mean_in, 1),
                 "mean_output_tokens": round(mean_out, 1)}
    predicted.update({f"correction_{r}": round(v, 3) for r, v in corr.items()})
    predicted.update({f"context_scale_{r}": round(v, 3) for r, v in scales.items()})
    return finish(obs, spec, state, NAME, targets, reasons, actions, predicted=predicted)


def _bursty(rates: list[list[float]], tn) -> bool:
    """On/off load: the busiest interval of the window >= bursty_peak_to_mean x the window's mean rate
    (a Poisson load at a few requests per second stays well under 1.5x; a load that idles between
    bursts goes far over it). A single large drop also counts until the busy intervals leave the
    window: its capacity then goes up to bursty_window_s later, the price of being ready for a burst
    that comes back. Needs bursty_min_history_s of history."""
    if len(rates) < 2 or rates[-1][0] - rates[0][0] < tn.bursty_min_history_s:
        return False
    mean = sum(r[1] for r in rates) / len(rates)
    return mean > 0 and max(r[1] for r in rates) >= tn.bursty_peak_to_mean * mean


def _kv_after_one_less(p) -> float:
    """Mean KV usage the pool's ready replicas would have with one of them fewer (0 when unknown)."""
    if p.ready <= 1 or not _finite(p.kv_usage):
        return 0.0
    return p.kv_usage * p.ready / (p.ready - 1)


def _decode_cache_full(obs: FleetObservation, tn) -> bool:
    """A decode pool whose KV caches are full with requests waiting for room: TTFT includes that wait,
    so it is the decode pool's to fix, and says nothing about the prefill pool's speed."""
    return any(p.role == "decode" and p.ready > 0 and _finite(p.kv_usage) and p.kv_usage >= tn.decode_kv_full
               and _finite(p.queue_depth) and p.queue_depth >= 1 for p in obs.pools)


def _replicas_needed(profile: CapacityProfile, mode: str, role: str, rate: float, mean_in: float,
                     mean_out: float, slo: SLOTargets, tn, k: float, scale: float) -> tuple[float, bool]:
    """(fractional replicas the pool needs for this load, whether the TTFT target was left out). Where
    one idle replica cannot prefill the mean prompt within the TTFT target, no replica count meets it:
    the pool is sized for its ITL target and busy-time cap instead, rather than for maxReplicas. (The
    overshoot rule still adds replicas when TTFT p95 rises beyond the prompts' own floor.)"""
    need = capacity.replicas_for_load(profile, mode, rate, mean_in, mean_out, slo, tn, k, scale)[role]
    if math.isfinite(need) or role == "decode":
        return need, False
    without_ttft = replace(slo, ttft_p95_s=math.inf)
    relaxed = capacity.replicas_for_load(profile, mode, rate, mean_in, mean_out, without_ttft, tn, k, scale)[role]
    return relaxed, math.isfinite(relaxed)


def ttft_floor_s(obs: FleetObservation, role: str, profile: CapacityProfile, tn) -> float:
    """The TTFT p95 that no number of replicas lowers: the p95 prompt's prefill alone on an idle
    replica of this pool (plus its KV transfer to a decode pool). Prefill time grows with the prompt, so
    at least 5% of requests wait this long however large the pool. 0 when the prompt p95 is unknown."""
    tokens = obs.prompt_tokens_p95
    if role not in ("monolithic", "prefill") or not _finite(tokens) or tokens <= 0:
        return 0.0
    if role == "monolithic":
        return profile.prompt_prefill_ms(tokens, tn.chunk_tokens) / 1000
    return (profile.prompt_prefill_ms(tokens, tn.prefill_chunk_tokens) / 1000
            + capacity.kv_transfer_s(profile, tokens, tn.kv_transfer_bytes_per_s))


def _overshoot(obs: FleetObservation, role: str, slo: SLOTargets, ttft_floor_s: float = 0.0) -> float:
    """max(observed p95 / target) over the latencies this pool drives (0 when unknown). Where the
    prompts' own prefill holds TTFT p95 above its target (`ttft_floor_s`), TTFT counts as over only
    beyond that floor, read through vLLM's histogram buckets as the observed p95 was: replicas added for
    the rest would not lower it, and the loop would add one every interval up to maxReplicas."""
    vals = []
    if role in ("monolithic", "decode") and _finite(obs.itl_p95_s):
        vals.append(obs.itl_p95_s / slo.itl_p95_s)
    if role in ("monolithic", "prefill") and _finite(obs.ttft_p95_s):
        if ttft_floor_s > slo.ttft_p95_s:
            vals.append(_bucketed_ratio(obs.ttft_p95_s, ttft_floor_s, TTFT_BUCKETS))
        else:
            vals.append(obs.ttft_p95_s / slo.ttft_p95_s)
    return max(vals, default=0.0)


def _latency_words(obs: FleetObservation, role: str, slo: SLOTargets, ttft_floor_s: float = 0.0) -> str:
    """The latency this pool drives, in words: the one furthest over its target when any is over
    (a monolithic pool drives both TTFT and ITL), else ITL for decoding pools and TTFT for prefill."""
    seen = []
    if role in ("monolithic", "decode") and _finite(obs.itl_p95_s):
        seen.append(("ITL", obs.itl_p95_s, slo.itl_p95_s))
    if role in ("monolithic", "prefill") and _finite(obs.ttft_p95_s):
        seen.append(("TTFT", obs.ttft_p95_s, slo.ttft_p95_s))
    if not seen:
        return ""
    name, value, target = max(seen, key=lambda x: x[1] / x[2]) if any(v > t for _, v, t in seen) else seen[0]
    rel = ">" if value > target else "<="
    floor = ""
    if name == "TTFT" and ttft_floor_s > target:
        floor = (f" (its floor: the p95 prompt, {fmt_rate(obs.prompt_tokens_p95)} tokens, takes "
                 f"{ttft_floor_s * 1000:.0f} ms to prefill alone on any replica)")
    return f"{name} p95 {value * 1000:.0f} ms {rel} {target * 1000:.0f} ms target{floor}, "
