"""Measurements on a built model: bytes, KV bytes per token, prefill and decode step times, quality."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..slo.profiles import DecodePoint, PrefillPoint
from .model import Transformer
from .quant import storage_bytes

Echo = Callable[[str], None]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CUDA_WARMUP = 5           # eager calls before capture: kernel selection, lazy weight layouts, clocks
CUDA_REPLAYS_PER_SAMPLE = 5


def _time_ms(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median time of one call of `fn` in ms. On CUDA, the GPU time of `fn` captured in a CUDA graph
    and replayed, as vLLM runs its steps: launched one kernel at a time from Python, a decode step of an
    8B model costs more host time than GPU time, and the timing would measure the host."""
    if device.type == "cuda":
        graphed = _cuda_graph_ms(fn, device, repeats)
        if graphed is not None:
            return graphed
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def _cuda_graph_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float | None:
    """Median over `repeats` samples of the mean time of a graph replay (CUDA events); None when `fn`
    cannot be captured (the caller then times it eagerly)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # capture wants its warm-up off the default stream
        for _ in range(CUDA_WARMUP):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except RuntimeError:
        torch.cuda.synchronize(device)
        return None
    try:
        for _ in range(CUDA_WARMUP):
            graph.replay()
        times = []
        for _ in range(max(1, repeats)):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(CUDA_REPLAYS_PER_SAMPLE):
                graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / CUDA_REPLAYS_PER_SAMPLE)
        return statistics.median(times)
    finally:
        del graph
        torch.cuda.empty_cache()


def kv_bytes_per_token(model: Transformer, kv_dtype: torch.dtype) -> float:
    """From the cache tensors the model writes: bytes of a (1 x 16)-token cache / 16."""
    return model.new_cache(1, 16, kv_dtype).bytes_per_token


def weight_bytes(model: Transformer) -> int:
    return storage_bytes(model)


@torch.inference_mode()
def prefill_points(model: Transformer, lengths: list[int], kv_dtype: torch.dtype, repeats: int = 3,
                   seed: int = 0, echo: Echo | None = None, label: str = "") -> list[PrefillPoint]:
    """One prompt of each length, prefilled from an empty cache: step time and prompt tokens/s."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    points = []
    for n in lengths:
        ids = torch.randint(0, model.arch.vocab_size, (1, n), generator=g).to(model.device)
        cache = model.new_cache(1, n, kv_dtype)
        ms = _time_ms(lambda: model(ids, cache, 0, last_only=True), model.device, repeats)
        points.append(PrefillPoint(input_tokens=n, step_ms=round(ms, 4), tokens_per_s=round(n / ms * 1000, 2)))
        if echo:
            echo(f"  {label} prefill {n:>6} tokens: {ms:9.2f} ms  {n / ms * 1000:10.0f} tok/s")
    return points


@torch.inference_mode()
def decode_points(model: Transformer, batches: list[int], contexts: list[int], kv_dtype: torch.dtype,
                  steps: int = 3, max_cache_bytes: float | None = None, seed: int = 0,
                  echo: Echo | None = None, label: str = "") -> list[DecodePoint]:
    """Decode steps of `batch` sequences with `context` tokens each already in the cache (filled with
    random keys and values: a step's cost depends on how many there are, not on their values)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    points = []
    per_token = kv_bytes_per_token(model, kv_dtype)
    for ctx in contexts:
        for b in batches:
            if max_cache_bytes is not None and b * (ctx + steps) * per_token > max_cache_bytes:
                if echo:
                    echo(f"  {label} decode batch {b} x context {ctx}: skipped (KV cache would not fit)")
                continue
            try:
                ms = _decode_ms(model, b, ctx, kv_dtype, steps, g)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if echo:
                    echo(f"  {label} decode batch {b} x context {ctx}: skipped (out of GPU memory)")
                continue
            points.append(DecodePoint(batch=b, context=ctx, step_ms=round(ms, 4),
                                      tokens_per_s=round(b / ms * 1000, 2)))
            if echo:
                echo(f"  {label} decode batch {b:>4} x context {ctx:>6}: {ms:9.2f} ms/step "
                     f"{b / ms * 1000:10.0f} tok/s")
    return points


def _decode_ms(model: Transformer, b: int, ctx: int, kv_dtype: torch.dtype, steps: int,
               g: torch.Generator) -> float:
    cache = model.new_cache(b, ctx + 1, kv_dtype)
    cache.fill_random(ctx)
    ids = torch.randint(0, model.arch.vocab_size, (b, 1), generator=g).to(model.device)
    # every call is the step after `ctx` tokens (it rewrites the same cache slot): the same work each
    # time, so a CUDA graph of it can be replayed
    return _time_ms(lambda: model(ids, cache, ctx), model.device, repeats=steps)


def fixed_prompts(vocab_size: int, count: int, length: int, seed: int = 1234) -> torch.Tensor:
    """Token ids from a fixed seed (the same prompts for every format and every run)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(0, vocab_size, (count, length), generator=g)


@torch.inference_mode()
def logits(model: Transformer, prompts: torch.Tensor, kv_dtype: torch.dtype, batch: int = 8) -> torch.Tensor:
    out = []
    for i in range(0, prompts.shape[0], batch):
        ids = prompts[i:i + batch].to(model.device)
        cache = model.new_cache(ids.shape[0], ids.shape[1], kv_dtype)
        out.append(model(ids, cache, 0).float().cpu())
    return torch.cat(out)


@dataclass(frozen=True)
class Quality:
    kl_divergence: float  # mean over positions of KL(reference || format), nats
    top1_agreement: float  # fraction of positions whose arg-max token matches the reference's
    positions: int


def compare_logits(reference: torch.Tensor, other: torch.Tensor) -> Quality:
    lp = torch.log_softmax(reference.double(), dim=-1)
    lq = torch.log_softmax(other.double(), dim=-1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    top1 = (reference.argmax(-1) == other.argmax(-1)).double()
    return Quality(kl_divergence=float(kl.mean()), top1_agreement=float(top1.mean()), positions=int(kl.numel()))


@torch.inference_mode()
def perplexity(model: Transformer, token_ids: list[int], kv_dtype: torch.dtype, window: int = 512) -> float:
    """exp(mean next-token negative log-likelihood) over non-overlapping windows of the text."""
    ids = torch.tensor(token_ids, dtype=torch.long)
    nll, count = 0.0, 0
    for start in range(0, max(1, len(ids) - 1), window):
        chunk = ids[start:start + window + 1]
        if len(chunk) < 2:
            break
        x = chunk[:-1].unsqueeze(0).to(model.device)
        cache = model.new_cache(1, x.shape[1], kv_dtype)
        logp = torch.log_softmax(model(x, cache, 0)[0].double(), dim=-1).cpu()
        nll -= float(logp.gather(1, chunk[1:].unsqueeze(1)).sum())
        count += len(chunk) - 1
    if not count:
        raise ValueError("the text has fewer than 2 tokens")
    return float(torch.exp(torch.tensor(nll / count)))
