"""Load -> replicas, from a capacity profile. Pure; shared by the default policy and the simulator's
baselines (static-peak, dynamo, oracle) so that they differ only in what load they plan for.

`correction` multiplies every modelled step time (1.0 = trust the profile; 1.3 = the fleet runs 30%
slower than the profile says, as measured by observed / predicted latency).
"""

from __future__ import annotations

import math

from ..profiles import CapacityProfile
from .types import SLOTargets, Tuning


def kv_transfer_s(profile: CapacityProfile, input_tokens: float, bytes_per_s: float) -> float:
    return profile.kv_bytes_per_token * max(0.0, input_tokens) / bytes_per_s


def mean_prefill_compute_ms(profile: CapacityProfile, mean_in: float, tuning: Tuning) -> float:
    """Mean prefill compute per request when prompt lengths vary: the attention term grows with the
    square of the length, so E[a T^2] = a mean^2 (1 + cv^2), cv^2 = tuning.prompt_cv2."""
    return profile.prefill_compute_ms(mean_in) + profile.prefill_a * mean_in * mean_in * tuning.prompt_cv2


def monolithic_steady_state(profile: CapacityProfile, rate: float, mean_in: float, mean_out: float,
                            tuning: Tuning, correction: float = 1.0) -> tuple[float, float, float]:
    """(mean decode step ms, prefill busy fraction, mean running batch) of ONE monolithic replica
    receiving `rate` requests/s: chunked prefill shares each step with the decode batch, so a second
    holds (1 - busy) / decode_step decode steps; Little's law gives the batch."""
    busy = rate * correction * mean_prefill_compute_ms(profile, mean_in, tuning) / 1000.0
    if busy >= 1.0:
        return math.inf, busy, math.inf
    ctx = mean_in + mean_out / 2.0
    batch = max(1.0, rate * mean_out * profile.decode_base_ms / 1000.0)
    step = profile.decode_base_ms
    for _ in range(40):
        step = correction * profile.decode_step_ms(batch, ctx) / (1.0 - busy)
        new_batch = max(1.0, rate * mean_out * step / 1000.0)
        if abs(new_batch - batch) < 1e-3 * batch:
            batch = new_batch
            break
        batch = 0.5 * batch + 0.5 * new_batch
        if batch > 10 * profile.max_num_seqs:
            return math.inf, busy, batch
    return step, busy, batch


def monolithic_rate_per_replica(profile: CapacityProfile, mean_in: float, mean_out: float,
                                slo: SLOTargets, tuning: Tuning, correction: float = 1.0) -> float:
    """Largest request rate one monolithic replica serves within the SLO (with the tuning margins)."""
    mean_in, mean_out = max(1.0, mean_in), max(1.0, mean_out)
    itl_ms = slo.itl_p95_s * 1000.0 * tuning.itl_margin
    ctx = mean_in + mean_out / 2.0
    ttft_budget_ms = slo.ttft_p95_s * 1000.0 * tuning.ttft_margin

    def ok(rate: float) -> bool:
        step, busy, batch = monolithic_steady_state(profile, rate, mean_in, mean_out, tuning, correction)
        if busy > tuning.max_utilization or step > itl_ms:
            return False
        if batch > profile.max_num_seqs or batch * ctx > 0.9 * profile.kv_capacity_tokens:
            return False
        chunks = math.ceil(mean_in / tuning.chunk_tokens)
        ttft = chunks * step + correction * mean_prefill_compute_ms(profile, mean_in, tuning) \
            + step * busy / (1 - busy)
        return ttft <= ttft_budget_ms

    lo, hi = 0.0, 1.0
    if not ok(1e-6):
        return 0.0
    while ok(hi) and hi < 1e5:
        lo, hi = hi, hi * 2.0
    for _ in range(40):
        mid = (lo + hi) / 2.0
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def prefill_rate_per_replica(profile: CapacityProfile, mean_in: float, slo: SLOTargets, tuning: Tuning,
                             correction: float = 1.0) -> float:
    """Requests/s one prefill-pool replica serves with p95 TTFT (incl. KV transfer) within target."""
    mean_in = max(1.0, mean_in)
    xfer = kv_transfer_s(profile, mean_in, tuning.kv_transfer_bytes_per_s)
    budget = slo.ttft_p95_s * tuning.ttft_margin - xfer
    # mean service time of one prompt (chunked), with the spread of prompt lengths
    chunks = max(1, math.ceil(mean_in / tuning.prefill_chunk_tokens))
    service = correction * (chunks * profile.prefill_c + mean_prefill_compute_ms(profile, mean_in, tuning)) / 1000.0
    if budget <= service:
        return 0.0
    # p95 queueing wait ~ wait_factor x service x rho / (1 - rho) (M/G/1-like, heavy-tailed prompts)
    x = (budget - service) / (tuning.prefill_wait_factor * service)
    rho = min(tuning.prefill_max_utilization, x / (1.0 + x))
    return rho / service


def decode_rate_per_replica(profile: CapacityProfile, mean_in: float, mean_out: float, slo: SLOTargets,
                            tuning: Tuning, correction: float = 1.0) -> float:
    """Requests/s one decode-pool replica serves with its step time within the ITL target."""
    mean_out = max(1.0, mean_out)
    ctx = max(1.0, mean_in) + mean_out / 2.0
    itl_s = slo.itl_p95_s * tuning.itl_margin / correction
    b = profile.max_decode_batch(ctx, itl_s)
    if b <= 0:
        return 0.0
    step_s = correction * profile.decode_step_ms(b, ctx) / 1000.0
    return b / (mean_out * step_s)


def replicas_for_load(profile: CapacityProfile, mode: str, rate: float, mean_in: float, mean_out: float,
                      slo: SLOTargets, tuning: Tuning, correction: float = 1.0) -> dict[str, float]:
    """Fractional replicas per pool for a request rate (callers round up and add their own headroom).
    inf when one replica cannot meet the SLO at all at these lengths."""
    if rate <= 0:
        return ({"prefill": 0.0, "decode": 0.0} if mode == "disaggregated" else {"monolithic": 0.0})
    if mode == "disaggregated":
        p = prefill_rate_per_replica(profile, mean_in, slo, tuning, correction)
        d = decode_rate_per_replica(profile, mean_in, mean_out, slo, tuning, correction)
        return {"prefill": rate / p if p > 0 else math.inf, "decode": rate / d if d > 0 else math.inf}
    m = monolithic_rate_per_replica(profile, mean_in, mean_out, slo, tuning, correction)
    return {"monolithic": rate / m if m > 0 else math.inf}
