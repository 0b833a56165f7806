"""Request traces: Azure LLM inference CSV, BurstGPT CSV and Mooncake JSONL, format detected from the
file content.

Azure (Splitwise, ISCA'24; the 2023 and 2024 releases): header `TIMESTAMP,ContextTokens,GeneratedTokens`,
TIMESTAMP wall clock (`2023-11-16 18:15:46.6805900`, 7 fractional digits; 2024 adds `+00:00`).
BurstGPT (Wang et al. 2024): header `Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`,
Timestamp in seconds from the trace's start; failed requests have 0 response tokens and still cost a
prefill. Mooncake (FAST'25): one JSON object a line, `timestamp` (ms from start), `input_length`,
`output_length`, `hash_ids`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from ..slo.decide.capacity import decode_context


OVERLAY_SPREAD_S = 60.0


class TraceError(ValueError):
    pass


@dataclass(frozen=True)
class Request:
    arrival_s: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Trace:
    name: str
    format: str
    requests: tuple[Request, ...]
    rate_multiplier: float = 1.0
    rate_mode: str = "compress"       # compress: time compressed; overlay: shifted copies overlaid
    start_s: float = 0.0              # where the replayed window starts in the trace (its own clock)
    span_s: float = 0.0               # first to last request of the whole trace file

    @property
    def duration_s(self) -> float:
        return self.requests[-1].arrival_s if self.requests else 0.0

    def overlaid(self, multiplier: float) -> "Trace":
        """Raise the rate by `multiplier` and keep the duration and the minute-scale shape of the load:
        overlay k = ceil(multiplier) copies of the trace, copy j shifted by j * 60 / k seconds (wrapping
        around the end), so the copies' requests interleave within each minute; a fractional last copy
        keeps an evenly spaced fraction of its requests (deterministic)."""
        if multiplier <= 0:
            raise TraceError("rate multiplier must be > 0")
        dur = self.duration_s + 1e-6
        k = math.ceil(multiplier - 1e-9)
        out = []
        for j in range(k):
            frac = min(1.0, multiplier - j)
            shift = OVERLAY_SPREAD_S * j / k
            step = 1.0 / frac if frac < 1.0 else 1.0
            nxt = 0.0
            for i, r in enumerate(self.requests):
                if frac < 1.0:
                    if i < nxt:
                        continue
                    nxt += step
                out.append(Request((r.arrival_s + shift) % dur, r.input_tokens, r.output_tokens))
        out.sort(key=lambda r: r.arrival_s)
        return replace(self, requests=tuple(out), rate_multiplier=self.rate_multiplier * multiplier,
                       rate_mode="overlay")

    def at_rate(self, multiplier: float, mode: str = "compress") -> "Trace":
        """This trace replayed `multiplier` times as fast: time compressed, or shifted copies overlaid."""
        if mode not in ("compress", "overlay"):
            raise TraceError(f"rate mode must be compress or overlay, not {mode!r}")
        if multiplier == 1.0:
            return self
        return self.overlaid(multiplier) if mode == "overlay" else self.scaled(multiplier)

    def scaled(self, multiplier: float) -> "Trace":
        """Compress time by `multiplier` (x4 = the same requests arriving 4x as fast)."""
        if multiplier <= 0:
            raise TraceError("rate multiplier must be > 0")
        reqs = tuple(Request(r.arrival_s / multiplier, r.input_tokens, r.output_tokens) for r in self.requests)
        return replace(self, requests=reqs, rate_multiplier=self.rate_multiplier * multiplier,
                       rate_mode="compress")


def _wallclock_s(stamp: str) -> float:
    return datetime.fromisoformat(stamp.strip()).timestamp()


def _whole_tokens(count: str) -> int:
    return int(float(count))


@dataclass(frozen=True)
class _CsvFormat:
    """A CSV trace's columns (arrival, prompt tokens, answer tokens) and how to read each."""

    name: str
    label: str
    columns: tuple[str, str, str]
    arrival_s: Callable[[str], float]
    tokens: Callable[[str], int]


CSV_FORMATS = (
    _CsvFormat("azure", "Azure", ("TIMESTAMP", "ContextTokens", "GeneratedTokens"), _wallclock_s, int),
    _CsvFormat("burstgpt", "BurstGPT", ("Timestamp", "Request tokens", "Response tokens"), float, _whole_tokens),
)


def detect_format(path: str | Path) -> str:
    with open(path, "r", encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if head.startswith("{"):
        first = json.loads(head.splitlines()[0])
        if {"timestamp", "input_length", "output_length"} <= set(first):
            return "mooncake"
        raise TraceError(f"{path}: JSONL without timestamp/input_length/output_length")
    header = {h.strip() for h in head.splitlines()[0].split(",")} if head else set()
    for fmt in CSV_FORMATS:
        if set(fmt.columns) <= header:
            return fmt.name
    known = ", ".join(f"{fmt.label} CSV with {','.join(fmt.columns)}" for fmt in CSV_FORMATS)
    raise TraceError(f"{path}: unknown trace format (expected {known}, or Mooncake JSONL with "
                     "timestamp,input_length,output_length)")


def _read_rows(path: Path, fmt: str) -> Iterator[tuple[float, int, int]]:
    """(arrival s on the trace's own clock, prompt tokens, answer tokens) per request, in file order."""
    csv_format = next((c for c in CSV_FORMATS if c.name == fmt), None)
    if csv_format is not None:
        at, prompt, answer = csv_format.columns
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                yield (csv_format.arrival_s(row[at]), csv_format.tokens(row[prompt]),
                       csv_format.tokens(row[answer]))
    else:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    o = json.loads(line)
                    yield float(o["timestamp"]) / 1000.0, int(o["input_length"]), int(o["output_length"])


def load_trace(path: str | Path, rate_multiplier: float = 1.0, rate_mode: str = "compress",
               start_s: float = 0.0, duration_s: float | None = None) -> Trace:
    """Read a trace; with `start_s` / `duration_s`, only the requests that arrived in that window of
    it (seconds from its first request, before any rate multiplier), so that a week-long trace can be
    replayed an hour at a time without holding the rest in memory."""
    path = Path(path)
    if start_s < 0 or (duration_s is not None and duration_s <= 0):
        got = f"start {start_s:g} s" + ("" if duration_s is None else f", duration {duration_s:g} s")
        raise TraceError(f"trace window (--start, --duration): start must be >= 0 and duration > 0 (got {got})")
    fmt = detect_format(path)
    rows: list[tuple[float, int, int]] = []
    first = last = None
    for t, i, o in _read_rows(path, fmt):
        first = t if first is None else first
        last = t if last is None else max(last, t)
        # the window is measured from the earliest request; a file out of time order can only move
        # that earlier than its first row, so rows past first row + window end are never needed
        if duration_s is None or t < first + start_s + duration_s:
            rows.append((t, i, o))
    if not rows:
        raise TraceError(f"{path}: no requests")
    rows.sort(key=lambda r: r[0])
    t0 = rows[0][0]
    span = last - t0
    if duration_s is not None or start_s > 0:
        end = math.inf if duration_s is None else start_s + duration_s
        rows = [r for r in rows if start_s <= r[0] - t0 < end]
        if not rows:
            raise TraceError(f"{path}: no requests between {start_s:g} s and {end:g} s (the trace spans "
                             f"{span:.0f} s); choose a start within it")
        t0 += start_s
    reqs = tuple(Request(t - t0, max(1, i), max(1, o)) for t, i, o in rows)
    return Trace(path.stem, fmt, reqs, start_s=start_s, span_s=span).at_rate(rate_multiplier, rate_mode)


def windows(trace: Trace, width_s: float) -> list[tuple[float, int, float, float, float]]:
    """(window start, requests, mean input, mean output, decode context scale) per window of the trace.
    The context scale is the decode batch's mean context, E[out (in + out/2)] / E[out], over
    what slo.decide.capacity.decode_context takes for these means."""
    n = int(trace.duration_s // width_s) + 1
    cnt = [0] * n
    si = [0] * n
    so = [0] * n
    weighted = [0.0] * n
    for r in trace.requests:
        k = int(r.arrival_s // width_s)
        cnt[k] += 1
        si[k] += r.input_tokens
        so[k] += r.output_tokens
        weighted[k] += r.output_tokens * (r.input_tokens + r.output_tokens / 2.0)
    out = []
    for k in range(n):
        if not cnt[k]:
            out.append((k * width_s, 0, 0.0, 0.0, 1.0))
            continue
        mi, mo = si[k] / cnt[k], so[k] / cnt[k]
        scale = (weighted[k] / so[k]) / decode_context(mi, mo) if so[k] else 1.0
        out.append((k * width_s, cnt[k], mi, mo, scale))
    return out
