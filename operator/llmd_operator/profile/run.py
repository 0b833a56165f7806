"""One profiling run: build the reference model, then per weight format quantize and measure."""

from __future__ import annotations

import datetime as dt
import gc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..catalog import load_catalog
from .arch import Arch
from .measure import (compare_logits, decode_points, fixed_prompts, kv_bytes_per_token, logits, perplexity,
                      prefill_points)
from .model import build_model, load_safetensors
from .quant import FORMATS, QuantLinear, fp8_supported, quantize_model, storage_breakdown, storage_bytes
from .results import FormatResult, ProfileRun

Echo = Callable[[str], None]
KV_DTYPE = torch.bfloat16  # vLLM's default KV cache dtype for a bf16 model ("auto")


@dataclass
class Settings:
    formats: list[str] = field(default_factory=lambda: ["bf16", "fp8", "int8", "int4"])
    device: str = "auto"  # auto | cpu | cuda | meta
    prefill_lengths: list[int] | None = None
    batches: list[int] | None = None
    contexts: list[int] | None = None
    prompts: int = 8
    prompt_len: int = 64
    repeats: int = 3
    decode_steps: int = 3
    seed: int = 0
    weights_dir: str | None = None
    text_file: str | None = None
    gpu_product: str | None = None
    tensor_parallel_size: int = 1
    int4_zero_point: bool = True
    threads: int | None = None  # CPU threads; None: 1 on CPU (stable timings on a shared machine)


CPU_DEFAULTS = {"prefill_lengths": [32, 64, 128, 256], "batches": [1, 2, 4, 8], "contexts": [64, 256]}
CUDA_DEFAULTS = {"prefill_lengths": [128, 512, 1024, 2048, 4096, 8192], "batches": [1, 8, 32, 64, 128, 256],
                 "contexts": [1024, 4096]}


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch sees no CUDA device (is this a CPU-only torch build?)")
    if requested not in ("cpu", "cuda", "meta"):
        raise RuntimeError(f"--device {requested}: use cpu, cuda or meta")
    return requested


def _memory_bytes(device: str, tp: int) -> tuple[float, str]:
    """Memory for weights + KV cache of one replica, and the device's name."""
    if device == "cuda":
        total = torch.cuda.mem_get_info()[1]
        overhead = load_catalog().overhead["per_gpu_bytes"]
        return (total * 0.9 - overhead) * tp, torch.cuda.get_device_name()
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 * 2**30
    return total * 0.9, "CPU" if device == "cpu" else "meta (shapes only)"


def gpu_product_label(device_name: str) -> str:
    """NVIDIA GPU feature discovery's label value from the CUDA device name ('NVIDIA H100 80GB HBM3'
    -> 'NVIDIA-H100-80GB-HBM3')."""
    return "-".join(device_name.split())


def _tokenizer(weights_dir: str | None):
    if not weights_dir or not (Path(weights_dir) / "tokenizer.json").exists():
        return None
    try:
        from tokenizers import Tokenizer  # noqa: PLC0415
    except ImportError:
        return None
    return Tokenizer.from_file(str(Path(weights_dir) / "tokenizer.json"))


def profile(arch: Arch, settings: Settings, echo: Echo = print) -> ProfileRun:
    """Measure `arch` in every format of `settings`; torch's CPU thread count is restored afterwards."""
    device = resolve_device(settings.device)
    before = torch.get_num_threads()
    threads = settings.threads or (1 if device == "cpu" else before)
    torch.set_num_threads(threads)
    try:
        run = _profile(arch, settings, device, echo)
    finally:
        torch.set_num_threads(before)
    if device == "cpu":
        run.notes.append(f"CPU threads: {threads} (--threads)")
    return run


def _profile(arch: Arch, settings: Settings, device: str, echo: Echo) -> ProfileRun:
    for f in settings.formats:
        if f not in FORMATS:
            raise ValueError(f"unknown format {f!r} (known: {', '.join(FORMATS)})")
    defaults = CUDA_DEFAULTS if device == "cuda" else CPU_DEFAULTS
    lengths = settings.prefill_lengths or defaults["prefill_lengths"]
    batches = settings.batches or defaults["batches"]
    contexts = settings.contexts or defaults["contexts"]
    tp = max(1, int(settings.tensor_parallel_size))
    built = arch.shard(tp)
    memory, device_name = _memory_bytes(device, tp)
    compute = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(settings.seed)
    run = ProfileRun(
        arch=arch, device=device, device_name=device_name,
        gpu_product=settings.gpu_product or (gpu_product_label(device_name) if device == "cuda" else device),
        tensor_parallel_size=tp,
        reference=("the bf16 model (CUDA)" if device == "cuda" else
                   "the fp32 model (CPU: bf16 matmuls are emulated, so fp32 is the reference; bf16 gets its own error)"),
        weights=(str(settings.weights_dir) if settings.weights_dir else f"random (seed {settings.seed})"),
        date=dt.date.today().isoformat(), torch_version=torch.__version__, memory_bytes=memory,
        int4_zero_point=settings.int4_zero_point)
    if tp > 1:
        if settings.weights_dir:
            raise ValueError("--tensor-parallel-size > 1 profiles one rank's shard with random weights; "
                             "leave out --weights")
        run.notes.append(f"tensor parallel {tp}: ONE rank's shard ({built.attention_heads} heads, "
                         f"{built.kv_heads} KV heads, MLP {built.intermediate_size}) measured on one device; "
                         "all-reduce time is not included; weight and KV bytes are per rank x tp")
    if device == "cuda":
        run.notes.append("PyTorch kernels replayed from CUDA graphs, as vLLM runs its steps; no paged attention, "
                         "and the quantized formats quantize activations and scale results in kernels of their "
                         "own (vLLM fuses them): step times are upper bounds of what vLLM reaches on this GPU")
    if device != "cuda" and device != "meta":
        run.notes.append("CPU run: timings are NOT representative of GPU serving speed; use them to check the "
                         "pipeline, and profile on the GPU product for capacity numbers")
    if device == "meta":
        run.notes.append("meta device: shapes and dtypes only; weight and KV bytes, no timings or quality")

    echo(f"building {built.name}: {built.layers} layers, hidden {built.hidden_size}, "
         f"{built.parameters / 1e6:,.1f}M parameters on {device} ({device_name})")
    reference = build_model(built, device=device, dtype=compute, seed=settings.seed)
    if settings.weights_dir and device == "meta":
        run.notes.append("meta device: the checkpoint's shapes (config.json) are used, its weights are not read")
    elif settings.weights_dir:
        echo(f"loading weights from {settings.weights_dir}")
        info = load_safetensors(reference, settings.weights_dir)
        if info["unexpected"]:
            run.notes.append(f"checkpoint tensors not used: {len(info['unexpected'])} (e.g. {info['unexpected'][0]})")

    tok = _tokenizer(settings.weights_dir)
    prompts = ref_logits = text_ids = None
    if device != "meta":
        if settings.text_file and tok is not None:
            text_ids = tok.encode(Path(settings.text_file).read_text()).ids
        if text_ids and len(text_ids) >= settings.prompts * settings.prompt_len:
            prompts = torch.tensor(text_ids[:settings.prompts * settings.prompt_len]).view(settings.prompts, -1)
            run.notes.append(f"quality prompts: {settings.prompts} x {settings.prompt_len} tokens of the text")
        else:
            prompts = fixed_prompts(built.vocab_size, settings.prompts, settings.prompt_len)
            run.notes.append(f"quality prompts: {settings.prompts} x {settings.prompt_len} token ids from a fixed "
                             "seed" + (" (random weights: the numbers measure rounding error, not model quality)"
                                       if not settings.weights_dir else ""))
        echo(f"reference logits on {prompts.shape[0]} prompts x {prompts.shape[1]} tokens")
        ref_logits = logits(reference, prompts, compute)
        if settings.text_file:
            if not settings.weights_dir:
                run.notes.append("perplexity skipped: it needs real weights (--weights)")
            elif text_ids is None:
                run.notes.append("perplexity skipped: no tokenizer.json (and `tokenizers` package) with the weights")
            else:
                run.reference_perplexity = perplexity(reference, text_ids, compute)

    for fmt in settings.formats:
        echo(f"[{fmt}] quantizing")
        model = quantize_model(reference, fmt, settings.int4_zero_point, compute_dtype=compute)
        res = FormatResult(fmt=fmt, weight_bytes=storage_bytes(model) * tp, breakdown=storage_breakdown(model),
                           kv_bytes_per_token=kv_bytes_per_token(model, KV_DTYPE) * tp)
        if tp > 1:
            res.breakdown = {k: v * tp for k, v in res.breakdown.items()}
        echo(f"[{fmt}] weight bytes {res.weight_bytes:,}; KV bytes/token {int(res.kv_bytes_per_token):,}")
        if fmt == "fp8" and not fp8_supported(device):
            res.notes.append("no native fp8 here: e4m3 storage, dequantized matmul (quality exact, speed not)")
        if fmt == "int4":
            res.notes.append("tinygemm up to 128 rows (decode), dequantize-then-matmul above (prefill): slower "
                             "than vLLM's Marlin at large batches" if device == "cuda" else
                             "dequantize-then-matmul (no fused int4 kernel on CPU)")
        if fmt == "int8" and device != "cuda":
            res.notes.append("dequantized matmul on CPU (W8A8 int8 kernels on CUDA only)")
        if device != "meta":
            q = compare_logits(ref_logits, logits(model, prompts, KV_DTYPE))
            res.kl_divergence, res.top1_agreement = q.kl_divergence, q.top1_agreement
            echo(f"[{fmt}] KL {q.kl_divergence:.3g} nats, top-1 agreement {q.top1_agreement:.1%}")
            if run.reference_perplexity is not None:
                res.perplexity = perplexity(model, text_ids, KV_DTYPE)
                echo(f"[{fmt}] perplexity {res.perplexity:.3f} (reference {run.reference_perplexity:.3f})")
            res.prefill = prefill_points(model, lengths, KV_DTYPE, settings.repeats, settings.seed, echo, f"[{fmt}]")
            res.decode = decode_points(model, batches, contexts, KV_DTYPE, settings.decode_steps,
                                       max_cache_bytes=(memory / tp - res.weight_bytes / tp) * 0.8,
                                       seed=settings.seed, echo=echo, label=f"[{fmt}]")
        if fmt in QuantLinear.fast_path_failed:
            res.notes.append(f"the CUDA {fmt} kernel failed here: measured with dequantized matmuls")
        run.formats.append(res)
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return run
