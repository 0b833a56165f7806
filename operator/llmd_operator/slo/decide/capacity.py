"""Load -> replicas, from a capacity profile. Pure; shared by the default policy and the simulator's
baselines (static-peak, dynamo, oracle) so that they differ only in what load they plan for.

`correction` multiplies every modelled step time (1.0 = trust the profile; 1.3 = the fleet runs 30%
slower than the profile says, as measured by observed / predicted latency).

A prefill pool is one M/G/c queue, not c separate M/G/1 queues: the router sends each prompt to the
replica with the fewest queued tokens, which is close to one FCFS queue in front of all replicas, so
the pool needs fewer replicas per request/s the larger it is (prefill_replicas is not linear in rate).
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


def mixed_step_overhead_ms(profile: CapacityProfile, mean_in: float, batch: float, decode_ms: float,
                           tuning: Tuning) -> float:
    """What one prompt's chunks add to the decode steps they ride on beyond their compute: a step that
    carries a chunk costs at least the prefill fixed cost c, so while the decode step is cheaper than c
    each chunk-carrying step pays the difference. A prompt of L tokens rides on about L / (chunk - batch)
    + 1/2 steps (the decode batch takes one token of each step's budget; the last chunk is partial)."""
    extra = profile.prefill_c - decode_ms
    if extra <= 0.0:
        return 0.0
    per_step = max(1.0, tuning.chunk_tokens - batch)
    return extra * max(1.0, mean_in / per_step + 0.5)


def decode_context(mean_in: float, mean_out: float, context_scale: float = 1.0) -> float:
    """Mean context (prompt + tokens generated so far) of a sequence in the decode batch. A sequence
    sits in the batch for as many steps as it has answer tokens, so the batch over-represents long
    answers: its mean context is E[out (in + out/2)] / E[out], which is mean_in + mean_out / 2 only
    when lengths are independent and fixed. `context_scale` is the ratio of the two, as the policy
    reads it from the KV cache usage (long prompts with short answers, as in Mooncake: ~0.5)."""
    return context_scale * (max(1.0, mean_in) + mean_out / 2.0)


def kv_context(mean_in: float, mean_out: float, context_scale: float = 1.0) -> float:
    """Tokens per batch sequence to bound the batch by KV capacity: never below mean input + output / 2.
    The batch's measured context moves with its mix of long and short prompts, and a full KV cache
    stops admission outright (the queue then shows up in TTFT), so the step time takes the measured
    context and the KV bound the cautious one."""
    return decode_context(mean_in, mean_out, max(1.0, context_scale))


def monolithic_steady_state(profile: CapacityProfile, rate: float, mean_in: float, mean_out: float,
                            tuning: Tuning, correction: float = 1.0,
                            context_scale: float = 1.0) -> tuple[float, float, float]:
    """(mean decode step ms, prefill busy fraction, mean running batch) of ONE monolithic replica
    receiving `rate` requests/s: chunked prefill shares each step with the decode batch, so a second
    holds (1 - busy) / decode_step decode steps; Little's law gives the batch."""
    compute_ms = mean_prefill_compute_ms(profile, mean_in, tuning)
    busy = rate * correction * compute_ms / 1000.0
    if busy >= 1.0:
        return math.inf, busy, math.inf
    ctx = decode_context(mean_in, mean_out, context_scale)
    batch = max(1.0, rate * mean_out * profile.decode_base_ms / 1000.0)
    step = profile.decode_base_ms
    for _ in range(40):
        decode_ms = profile.decode_step_ms(batch, ctx)
        busy = rate * correction * (compute_ms + mixed_step_overhead_ms(profile, mean_in, batch, decode_ms,
                                                                         tuning)) / 1000.0
        if busy >= 1.0:
            return math.inf, busy, math.inf
        step = correction * decode_ms / (1.0 - busy)
        new_batch = max(1.0, rate * mean_out * step / 1000.0)
        if abs(new_batch - batch) < 1e-3 * batch:
            batch = new_batch
            break
        batch = 0.5 * batch + 0.5 * new_batch
        if batch > 10 * profile.max_num_seqs:
            return math.inf, busy, batch
    return step, busy, batch


def monolithic_rate_per_replica(profile: CapacityProfile, mean_in: float, mean_out: float,
                                slo: SLOTargets, tuning: Tuning, correction: float = 1.0,
                                context_scale: float = 1.0) -> float:
    """Largest request rate one monolithic replica serves within the SLO (with the tuning margins)."""
    mean_in, mean_out = max(1.0, mean_in), max(1.0, mean_out)
    itl_ms = slo.itl_p95_s * 1000.0 * tuning.itl_margin
    kv_ctx = kv_context(mean_in, mean_out, context_scale)
    ttft_budget_ms = slo.ttft_p95_s * 1000.0 * tuning.ttft_margin

    def ok(rate: float) -> bool:
        step, busy, batch = monolithic_steady_state(profile, rate, mean_in, mean_out, tuning, correction,
                                                    context_scale)
        if busy > tuning.max_utilization or step > itl_ms:
            return False
        if batch > profile.max_num_seqs or batch * kv_ctx > 0.9 * profile.kv_capacity_tokens:
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


def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with `servers` servers and offered load
    `offered` = rate x mean service (Erlang C); 1.0 when offered >= servers (unstable)."""
    if servers <= 0 or offered >= servers:
        return 1.0
    if offered <= 0:
        return 0.0
    b = 1.0                                   # Erlang B by the stable recursion B(k) = aB / (k + aB)
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    rho = offered / servers
    return b / (1.0 - rho * (1.0 - b))


def mgc_wait_quantile_s(servers: int, offered: float, service_s: float, service_cv2: float,
                        q: float = 0.95) -> float:
    """q-quantile of the queueing wait in an M/G/c queue (one FCFS queue in front of `servers`
    replicas): an arrival waits with probability Erlang C, and a waiting arrival's wait is taken as
    exponential with the M/M/c conditional mean service / (c - offered), scaled by the Allen-Cunneen
    factor (1 + cs^2) / 2 for the service-time variability."""
    if offered >= servers:
        return math.inf
    pw = erlang_c(servers, offered)
    if pw <= 1.0 - q:
        return 0.0
    mean_wait_if_waiting = service_s / (servers - offered) * (1.0 + service_cv2) / 2.0
    return mean_wait_if_waiting * math.log(pw / (1.0 - q))


def prompt_length_moment(mean_in: float, cv2: float, k: int) -> float:
    """E[L^k] of prompt lengths taken as gamma-distributed with this mean and squared coefficient
    of variation (cv2 = 1: exponential): mean^k x prod_{i<k} (1 + i cv2)."""
    m = mean_in ** k
    for i in range(k):
        m *= 1.0 + i * cv2
    return m


def prefill_service_cv2(profile: CapacityProfile, mean_in: float, tuning: Tuning) -> float:
    """Squared coefficient of variation of one prompt's prefill compute b L + a L^2 for gamma
    prompt lengths (the quadratic attention term makes it larger than the lengths' own cv^2)."""
    a, b, cv2 = profile.prefill_a, profile.prefill_b, tuning.prompt_cv2
    m1, m2, m3, m4 = (prompt_length_moment(mean_in, cv2, k) for k in (1, 2, 3, 4))
    mean = b * m1 + a * m2
    second = b * b * m2 + 2 * a * b * m3 + a * a * m4
    return max(0.0, second / (mean * mean) - 1.0) if mean > 0 else 0.0


def prefill_pool_terms(profile: CapacityProfile, mean_in: float, slo: SLOTargets, tuning: Tuning,
                       correction: float = 1.0) -> tuple[float, float, float, float]:
    """(latency of one prompt alone s, pool work per prompt s, service cv^2, wait budget s) of the
    prefill pool. A prompt alone takes ceil(L / chunk) steps, each paying the fixed cost c; a loaded
    replica packs several prompts into each chunk-token step, so the work a prompt adds to the pool
    pays c only per chunk-tokens it fills (c L / chunk)."""
    mean_in = max(1.0, mean_in)
    compute = mean_prefill_compute_ms(profile, mean_in, tuning)
    chunk = tuning.prefill_chunk_tokens
    alone = correction * (max(1, math.ceil(mean_in / chunk)) * profile.prefill_c + compute) / 1000.0
    work = correction * (profile.prefill_c * mean_in / chunk + compute) / 1000.0
    xfer = kv_transfer_s(profile, mean_in, tuning.kv_transfer_bytes_per_s)
    budget = slo.ttft_p95_s * tuning.ttft_margin - xfer - alone
    return alone, work, prefill_service_cv2(profile, mean_in, tuning), budget


def _prefill_pool_ok(servers: int, rate: float, work: float, cv2: float, budget: float,
                     tuning: Tuning) -> bool:
    offered = rate * work
    if offered > tuning.prefill_max_utilization * servers:
        return False
    return mgc_wait_quantile_s(servers, offered, work, cv2) <= budget


def prefill_pool_capacity(profile: CapacityProfile, servers: int, mean_in: float, slo: SLOTargets,
                          tuning: Tuning, correction: float = 1.0) -> float:
    """Largest request rate a prefill pool of `servers` replicas serves with p95 TTFT (wait + prefill
    + KV transfer) within target x ttft_margin and utilization <= prefill_max_utilization. The pool
    is one M/G/c queue: the router sends each prompt to the least-loaded replica (by queued tokens),
    which approximates a shared FCFS queue, so replicas pool their idle time."""
    _, work, cv2, budget = prefill_pool_terms(profile, mean_in, slo, tuning, correction)
    return _pool_capacity(servers, work, cv2, budget, tuning)


def _pool_capacity(servers: int, work: float, cv2: float, budget: float, tuning: Tuning) -> float:
    """prefill_pool_capacity from the pool's terms (prefill_pool_terms), by bisection on the rate."""
    if servers <= 0 or budget <= 0:
        return 0.0
    lo, hi = 0.0, tuning.prefill_max_utilization * servers / work
    if _prefill_pool_ok(servers, hi, work, cv2, budget, tuning):
        return hi
    for _ in range(50):
        mid = (lo + hi) / 2.0
        if _prefill_pool_ok(servers, mid, work, cv2, budget, tuning):
            lo = mid
        else:
            hi = mid
    return lo


def prefill_replicas(profile: CapacityProfile, rate: float, mean_in: float, slo: SLOTargets,
                     tuning: Tuning, correction: float = 1.0) -> float:
    """Fractional prefill replicas for a request rate under the M/G/c model: n - 1 + the share of
    the step from capacity(n - 1) to capacity(n) that the rate covers, where n is the smallest pool
    that serves it (so ceil() of the result is that n). inf when no pool can meet the TTFT target."""
    if rate <= 0:
        return 0.0
    _, work, cv2, budget = prefill_pool_terms(profile, mean_in, slo, tuning, correction)
    if budget <= 0 or not math.isfinite(rate * work):
        return math.inf
    n = max(1, math.ceil(rate * work / tuning.prefill_max_utilization - 1e-9))
    while not _prefill_pool_ok(n, rate, work, cv2, budget, tuning):
        n += 1
    hi = _pool_capacity(n, work, cv2, budget, tuning)
    lo = _pool_capacity(n - 1, work, cv2, budget, tuning)
    if hi <= lo:
        return float(n)
    return n - 1 + min(1.0, max(0.0, (rate - lo) / (hi - lo)))


def prefill_rate_per_replica(profile: CapacityProfile, mean_in: float, slo: SLOTargets, tuning: Tuning,
                             correction: float = 1.0) -> float:
    """Requests/s ONE prefill replica serves with p95 TTFT (incl. KV transfer) within target: the
    c = 1 (M/G/1) case of prefill_pool_capacity. A pool of n serves more than n times this."""
    return prefill_pool_capacity(profile, 1, mean_in, slo, tuning, correction)


def _decode_batch(profile: CapacityProfile, mean_in: float, mean_out: float, slo: SLOTargets,
                  tuning: Tuning, correction: float, context_scale: float) -> tuple[int, float]:
    """(largest batch one decode replica runs within the ITL target and its KV cache, its step in s)."""
    ctx = decode_context(mean_in, mean_out, context_scale)
    itl_s = slo.itl_p95_s * tuning.itl_margin / correction
    b = profile.max_decode_batch(ctx, itl_s, kv_context(mean_in, mean_out, context_scale))
    return b, correction * profile.decode_step_ms(b, ctx) / 1000.0


def decode_rate_per_replica(profile: CapacityProfile, mean_in: float, mean_out: float, slo: SLOTargets,
                            tuning: Tuning, correction: float = 1.0, context_scale: float = 1.0) -> float:
    """Requests/s one decode-pool replica serves with its step time within the ITL target."""
    mean_out = max(1.0, mean_out)
    b, step_s = _decode_batch(profile, mean_in, mean_out, slo, tuning, correction, context_scale)
    if b <= 0:
        return 0.0
    return b / (mean_out * step_s)


def decode_replicas(profile: CapacityProfile, rate: float, mean_in: float, mean_out: float, slo: SLOTargets,
                    tuning: Tuning, correction: float = 1.0, context_scale: float = 1.0) -> float:
    """Fractional decode replicas for a request rate: rate / per-replica rate, and room in the pool's KV
    caches for the spread of the contexts it holds. The pool holds `held` sequences on average, with
    contexts drawn from a skewed distribution (squared coefficient of variation cv^2), so the tokens
    held spread by sqrt(held (1 + cv^2)) mean contexts. A pool sized for the mean alone fills its KV
    caches whenever a few long prompts coincide, and a full cache stops admission: the wait shows in
    TTFT, not in ITL. `kv_z` such spreads of room are kept, counted over the whole pool: the router
    spreads sequences evenly, so a large pool's replicas average out (per replica, the room would be
    sqrt(n) times larger; pooled, under 0.1% of the requests of Mooncake's conversation trace wait
    for a full cache, bench/README.md)."""
    mean_out = max(1.0, mean_out)
    b, step_s = _decode_batch(profile, mean_in, mean_out, slo, tuning, correction, context_scale)
    if b <= 0:
        return math.inf
    n = rate * mean_out * step_s / b
    if tuning.kv_z <= 0:
        return n
    held = n * b
    # in contexts as measured (the batch's own bound above takes the cautious kv_context)
    per_replica = profile.kv_capacity_tokens / decode_context(mean_in, mean_out, context_scale)
    return max(n, (held + tuning.kv_z * math.sqrt(held * (1 + tuning.prompt_cv2))) / per_replica)


def replicas_for_load(profile: CapacityProfile, mode: str, rate: float, mean_in: float, mean_out: float,
                      slo: SLOTargets, tuning: Tuning, correction: float = 1.0,
                      context_scale: float = 1.0) -> dict[str, float]:
    """Fractional replicas per pool for a request rate (callers round up and add their own headroom).
    inf when one replica cannot meet the SLO at all at these lengths. Monolithic and decode replicas
    are rate / per-replica rate; prefill replicas come from the pooled (M/G/c) model, whose ceil() is
    the smallest pool that meets the TTFT target."""
    if rate <= 0:
        return ({"prefill": 0.0, "decode": 0.0} if mode == "disaggregated" else {"monolithic": 0.0})
    if mode == "disaggregated":
        return {"prefill": prefill_replicas(profile, rate, mean_in, slo, tuning, correction),
                "decode": decode_replicas(profile, rate, mean_in, mean_out, slo, tuning, correction, context_scale)}
    m = monolithic_rate_per_replica(profile, mean_in, mean_out, slo, tuning, correction, context_scale)
    return {"monolithic": rate / m if m > 0 else math.inf}
