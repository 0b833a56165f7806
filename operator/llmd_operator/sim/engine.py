"""One modelled vLLM replica: continuous batching at engine-step granularity.

Each step admits waiting requests (max-num-seqs and KV capacity permitting), gives the decode batch
one token each and the rest of the token budget (max-num-batched-tokens) to chunked prefill, and takes
the time the capacity profile says:

    mixed step ms = max(prefill c, decode_step(B, S)) + sum over chunks of a((p+n)^2 - p^2) + b n
    decode-only step ms = base + per_kv_token * S + per_seq * B   (S grows by B every step)

Stretches of decode-only steps are advanced in closed form (an arithmetic series of step times) up to
the next sequence finishing or the next time the fleet needs this replica, so the cost of simulating
a replica is per request, not per token.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from itertools import islice

from ..slo.profiles import CapacityProfile


class SimRequest:
    __slots__ = ("rid", "arrival", "input", "output", "prefilled", "admitted", "first_token", "finish",
                 "end_d", "ttft_seen", "retries", "handoff_at", "xfer_s", "rejected")

    def __init__(self, rid: int, arrival: float, input_tokens: int, output_tokens: int):
        self.rid = rid
        self.arrival = arrival
        self.input = input_tokens
        self.output = output_tokens
        self.prefilled = 0
        self.admitted = False
        self.first_token = -1.0
        self.finish = -1.0
        self.end_d = 0
        self.ttft_seen = False
        self.retries = 0
        self.handoff_at = -1.0
        self.xfer_s = 0.0
        self.rejected = False

    def reset(self) -> None:
        """Retried from scratch (its replica was interrupted)."""
        self.prefilled = 0
        self.admitted = False
        self.first_token = -1.0
        self.retries += 1
        self.ttft_seen = False


class Replica:
    """role: monolithic (prefill + decode), prefill (hands requests off after their prefill),
    decode (receives prefilled requests)."""

    __slots__ = ("rid", "role", "spot", "p", "created", "ready_at", "end", "state", "t", "waiting",
                 "waiting_tokens", "B", "S", "D", "heap", "kv_used", "busy_s", "chunk", "max_seqs",
                 "kv_cap", "seq", "n_prefilling", "a", "b", "c", "base", "kvms", "seqms", "out_tokens",
                 "in_tokens")

    def __init__(self, rid: int, role: str, spot: bool, profile: CapacityProfile, created: float,
                 ready_at: float, chunk_tokens: int):
        self.rid = rid
        self.role = role
        self.spot = spot
        self.p = profile
        self.created = created
        self.ready_at = ready_at
        self.end = -1.0
        self.state = "starting"
        self.t = ready_at
        self.waiting: deque[SimRequest] = deque()
        self.waiting_tokens = 0
        self.B = 0
        self.S = 0.0
        self.D = 0
        self.heap: list = []
        self.kv_used = 0
        self.busy_s = 0.0
        self.chunk = chunk_tokens
        self.max_seqs = profile.max_num_seqs
        self.kv_cap = profile.kv_capacity_tokens
        self.seq = 0
        self.n_prefilling = 0
        self.a, self.b, self.c = profile.prefill_a, profile.prefill_b, profile.prefill_c
        self.base, self.kvms, self.seqms = profile.decode_base_ms, profile.decode_per_kv_token_ms, profile.decode_per_seq_ms
        self.out_tokens = 0
        self.in_tokens = 0

    # ---- load as the router sees it ------------------------------------------------------------
    def load(self) -> float:
        return self.waiting_tokens / self.chunk + self.B / 16.0 + len(self.waiting) * 0.25

    def idle(self) -> bool:
        return self.B == 0 and not self.waiting

    def enqueue(self, req: SimRequest, now: float) -> None:
        if self.t < now:
            self.t = now
        self.waiting.append(req)
        if self.role != "decode":
            self.waiting_tokens += req.input - req.prefilled

    def all_requests(self) -> list[SimRequest]:
        return list(self.waiting) + [e[2] for e in self.heap]

    # ---- simulation ---------------------------------------------------------------------------------
    def advance(self, until: float, fleet) -> None:
        """Run engine steps until the engine clock reaches `until` (a step in flight may overrun)."""
        while self.t < until:
            if self.waiting and self._admissible():
                self._mixed_step(fleet)
            elif self.B > 0:
                self._decode_run(until, fleet, bool(self.waiting))
            else:
                if self.waiting:  # nothing running and the head can never fit: reject it
                    r = self.waiting.popleft()
                    self.waiting_tokens -= r.input - r.prefilled
                    r.rejected = True
                    fleet.on_reject(r, self.t)
                    continue
                self.t = until
                break

    def _admissible(self) -> bool:
        r = self.waiting[0]
        if r.admitted:
            return True
        need = r.input + r.output
        if self.B + self.n_prefilling >= self.max_seqs:
            return False
        return self.kv_used + need <= self.kv_cap

    def _mixed_step(self, fleet) -> None:
        budget = self.chunk - self.B if self.role != "decode" else 0
        pre_ms = 0.0
        done = 0
        a, b = self.a, self.b
        waiting = self.waiting
        joined = []
        if self.role == "decode":
            # prefilled elsewhere: admit as many as fit; they emit their first token this step
            while waiting:
                r = waiting[0]
                need = r.input + r.output
                if self.B + len(joined) >= self.max_seqs or self.kv_used + need > self.kv_cap:
                    break
                waiting.popleft()
                self.kv_used += need
                joined.append(r)
        else:
            budget = max(budget, 0)
            for r in waiting:
                if budget <= 0:
                    break
                if not r.admitted:
                    need = r.input + r.output
                    if self.B + self.n_prefilling >= self.max_seqs or self.kv_used + need > self.kv_cap:
                        break
                    r.admitted = True
                    self.kv_used += need
                    self.n_prefilling += 1
                left = r.input - r.prefilled
                n = left if left < budget else budget
                p = r.prefilled
                pre_ms += a * ((p + n) * (p + n) - p * p) + b * n
                r.prefilled = p + n
                budget -= n
                self.waiting_tokens -= n
                if r.prefilled >= r.input:
                    done += 1
        B = self.B
        if B:
            dec = self.base + self.kvms * self.S + self.seqms * B
            step = (dec if dec > self.c else self.c) + pre_ms if pre_ms > 0 else dec
        elif pre_ms > 0:
            step = self.c + pre_ms
        else:
            step = self.base + self.seqms * max(1, len(joined))
        dt = step / 1000.0
        self.t += dt
        self.busy_s += dt
        now = self.t
        if B:
            self.D += 1
            self.S += B
            self.out_tokens += B
            self._finish_due(fleet)
        if self.role == "decode":
            for r in joined:
                self._join_decode(r, now, fleet)
            return
        for _ in range(done):
            r = waiting.popleft()
            self.n_prefilling -= 1
            self.in_tokens += r.input
            if self.role == "prefill":
                self.kv_used -= r.input + r.output
                fleet.on_prefilled(r, now, self)
            else:
                self._join_decode(r, now, fleet)

    def _join_decode(self, r: SimRequest, now: float, fleet) -> None:
        if r.first_token < 0:
            r.first_token = now
            fleet.on_first_token(r, now)
        self.out_tokens += 1
        if r.output <= 1:
            self.kv_used -= r.input + r.output
            r.finish = now
            fleet.on_finish(r, now, self)
            return
        r.end_d = self.D + r.output - 1
        self.B += 1
        self.S += r.input + 1
        self.seq += 1
        heapq.heappush(self.heap, (r.end_d, self.seq, r))

    def _finish_due(self, fleet) -> None:
        heap, D = self.heap, self.D
        while heap and heap[0][0] <= D:
            _, _, r = heapq.heappop(heap)
            self.B -= 1
            self.S -= r.input + r.output
            self.kv_used -= r.input + r.output
            r.finish = self.t
            fleet.on_finish(r, self.t, self)
        if self.B == 0:
            self.S = 0.0

    def _decode_run(self, until: float, fleet, blocked: bool) -> None:
        """Decode-only steps in closed form: step j takes A + K j ms."""
        B = self.B
        A = self.base + self.kvms * self.S + self.seqms * B
        K = self.kvms * B
        m = self.heap[0][0] - self.D          # steps until the next sequence finishes
        if not blocked:
            rem = (until - self.t) * 1000.0
            # smallest k with k A + K k (k-1) / 2 >= rem
            if K > 1e-12:
                qa, qb = K / 2.0, A - K / 2.0
                k = math.ceil((-qb + math.sqrt(qb * qb + 4 * qa * rem)) / (2 * qa) - 1e-9)
            else:
                k = math.ceil(rem / A - 1e-9)
            if k < 1:
                k = 1
            if k < m:
                m = k
        dt = (m * A + K * m * (m - 1) / 2.0) / 1000.0
        self.t += dt
        self.busy_s += dt
        self.D += m
        self.S += B * m
        self.out_tokens += B * m
        self._finish_due(fleet)

    def running(self) -> int:
        """What vLLM reports as running: the decode batch and the prompts part-way through prefill."""
        return self.B + self.n_prefilling

    def queued(self) -> int:
        """What vLLM reports as waiting: requests not yet scheduled."""
        return len(self.waiting) - self.n_prefilling

    def kv_usage(self) -> float:
        """Share of the KV cache holding tokens, as vLLM reports it: the batch's context so far (prompt
        and generated tokens) and the prompt tokens already prefilled. Admission reserves prompt and
        answer up front (kv_used); the reported usage does not include that reservation."""
        if not self.kv_cap:
            return 0.0
        # admission goes in queue order, so the admitted prompts are the first n_prefilling waiting
        held = self.S + sum(r.prefilled for r in islice(self.waiting, self.n_prefilling))
        return min(1.0, held / self.kv_cap)
