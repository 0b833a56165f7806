"""What a profiling run found, and the files it writes: profile.yaml, report.md, throughput.png.

Pure except for the writers (no torch). profile.yaml is the capacity-profile format of slo/profiles.py,
written with `profile_document` so `load_profile_file` reads it back.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
import yaml

from ..catalog import load_catalog
from ..planning.memory import weight_bytes as planner_weight_bytes
from ..slo.profiles import (CapacityProfile, DecodePoint, PrefillPoint, ProfileError, fit_decode,
                            fit_prefill, profile_document)
from .arch import Arch

# the planner's weight scheme that each measured format corresponds to
PLANNER_SCHEME = {"bf16": "bf16", "fp8": "fp8", "int8": "int8-w8a8", "int4": "int4-awq"}
PLANNER_SCHEME_INT4_SYMMETRIC = "int4-w4a16"


@dataclass
class FormatResult:
    fmt: str
    weight_bytes: int
    breakdown: dict[str, int]
    kv_bytes_per_token: float
    prefill: list[PrefillPoint] = field(default_factory=list)
    decode: list[DecodePoint] = field(default_factory=list)
    kl_divergence: float | None = None
    top1_agreement: float | None = None
    perplexity: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ProfileRun:
    arch: Arch
    device: str  # cpu | cuda | meta
    device_name: str
    gpu_product: str
    tensor_parallel_size: int
    reference: str  # what the quality numbers compare against
    weights: str  # "random (seed N)" or the checkpoint directory
    date: str
    torch_version: str
    memory_bytes: float  # device memory available for weights + KV cache (for kv_capacity_tokens)
    int4_zero_point: bool = True
    formats: list[FormatResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reference_perplexity: float | None = None

    def planner_scheme(self, fmt: str) -> str:
        if fmt == "int4" and not self.int4_zero_point:
            return PLANNER_SCHEME_INT4_SYMMETRIC
        return PLANNER_SCHEME[fmt]

    def planner_bytes(self, fmt: str) -> int:
        """The planner's weight bytes for this architecture (the whole replica)."""
        catalog = load_catalog()
        arch = self.arch
        return planner_weight_bytes(arch.to_catalog(), catalog.schemes[self.planner_scheme(fmt)])


# ---------------------------------------------------------------------------------------------
# fits: the profiles module's least squares, constrained to non-negative coefficients when noise
# (CPU timings) would give a negative one, which the profile format refuses
# ---------------------------------------------------------------------------------------------
def _solve(rows: list[list[float]], ys: list[float]) -> list[float] | None:
    n = len(rows[0])
    a = [[sum(r[i] * r[j] for r in rows) for j in range(n)] + [sum(r[i] * y for r, y in zip(rows, ys))]
         for i in range(n)]
    for i in range(n):
        piv = max(range(i, n), key=lambda k: abs(a[k][i]))
        a[i], a[piv] = a[piv], a[i]
        if abs(a[i][i]) < 1e-300:
            return None
        for k in range(n):
            if k != i:
                f = a[k][i] / a[i][i]
                a[k] = [x - f * y for x, y in zip(a[k], a[i])]
    return [a[i][n] / a[i][i] for i in range(n)]


def _nonnegative_fit(rows: list[list[float]], ys: list[float], required: int) -> list[float]:
    """Least squares over subsets of the columns (column `required` always kept), all coefficients >= 0
    and the required one > 0; the subset with the smallest residual."""
    n = len(rows[0])
    best, best_err = None, float("inf")
    optional = [i for i in range(n) if i != required]
    for k in range(len(optional) + 1):
        for keep in itertools.combinations(optional, k):
            cols = sorted((required, *keep))
            sol = _solve([[r[c] for c in cols] for r in rows], ys)
            if sol is None or any(s < 0 for s in sol) or sol[cols.index(required)] <= 0:
                continue
            coef = [0.0] * n
            for c, s in zip(cols, sol):
                coef[c] = s
            err = sum((sum(c * x for c, x in zip(coef, r)) - y) ** 2 for r, y in zip(rows, ys))
            if err < best_err:
                best, best_err = coef, err
    if best is None:
        raise ProfileError("no non-negative fit of the measured points")
    return best


def fit_prefill_points(points: list[PrefillPoint]) -> tuple[tuple[float, float, float], bool]:
    """(a, b, c) of ms = a T^2 + b T + c, and whether the non-negative fallback was needed."""
    a, b, c = fit_prefill(points)
    if a >= 0 and b > 0 and c >= 0:
        return (a, b, c), False
    rows = [[p.input_tokens ** 2, p.input_tokens, 1.0] for p in points]
    a, b, c = _nonnegative_fit(rows, [p.step_ms for p in points], required=1)
    return (a, b, c), True


def fit_decode_points(points: list[DecodePoint]) -> tuple[tuple[float, float, float], bool]:
    """(base_ms, per_kv_token_ms, per_seq_ms), and whether the non-negative fallback was needed."""
    base, kv, seq = fit_decode(points)
    if base > 0 and kv >= 0 and seq >= 0:
        return (base, kv, seq), False
    rows = [[1.0, p.batch * p.context, p.batch] for p in points]
    base, kv, seq = _nonnegative_fit(rows, [p.step_ms for p in points], required=0)
    return (base, kv, seq), True


# ---------------------------------------------------------------------------------------------
# capacity profile
# ---------------------------------------------------------------------------------------------
def capacity_profiles(run: ProfileRun) -> list[CapacityProfile]:
    out = []
    source = (f"measured by llmd-operator profile on {run.device_name} ({run.device}), torch {run.torch_version}, "
              f"weights {run.weights}" + (f"; {run.arch.note}" if run.arch.note else ""))
    if run.device != "cuda":
        source += "; CPU timings: NOT representative of GPU serving speed"
    for r in run.formats:
        if len(r.prefill) < 3 or len(r.decode) < 3:
            raise ProfileError(f"{r.fmt}: need at least 3 prefill and 3 decode points for a profile "
                               f"(have {len(r.prefill)} and {len(r.decode)})")
        (a, b, c), pre_clamped = fit_prefill_points(r.prefill)
        (base, kv, seq), dec_clamped = fit_decode_points(r.decode)
        if pre_clamped:
            r.notes.append("prefill fit constrained to non-negative coefficients (noisy timings)")
        if dec_clamped:
            r.notes.append("decode fit constrained to non-negative coefficients (noisy timings)")
        free = run.memory_bytes - r.weight_bytes
        kv_cap = max(1, int(free / r.kv_bytes_per_token)) if free > 0 else 1
        if free <= 0:
            r.notes.append("weights do not fit the device memory: kv_capacity_tokens set to 1")
        out.append(CapacityProfile(
            model=run.arch.name, gpu_product=run.gpu_product, tensor_parallel_size=run.tensor_parallel_size,
            quantization=r.fmt, source=source, date=run.date, weight_bytes=float(r.weight_bytes),
            kv_bytes_per_token=r.kv_bytes_per_token, kv_capacity_tokens=kv_cap, prefill_a=a, prefill_b=b,
            prefill_c=c, decode_base_ms=base, decode_per_kv_token_ms=kv, decode_per_seq_ms=seq,
            max_num_seqs=max(p.batch for p in r.decode),
            prefill_points=tuple(r.prefill), decode_points=tuple(r.decode)))
    return out


def profile_yaml(run: ProfileRun) -> str:
    return yaml.safe_dump(profile_document(capacity_profiles(run)), sort_keys=False)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def _gb(n: float) -> str:
    return f"{n / 1e9:.4f} GB" if n >= 1e8 else f"{n / 1e6:.3f} MB"


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def report_markdown(run: ProfileRun) -> str:
    a = run.arch
    lines = [
        f"# Profile: {a.name} on {run.device_name}",
        "",
        f"- date: {run.date}; torch {run.torch_version}; device: {run.device} ({run.device_name}); "
        f"GPU product label: {run.gpu_product}; tensor parallel: {run.tensor_parallel_size}",
        f"- architecture: {a.layers} layers, hidden {a.hidden_size}, {a.attention_heads} heads / {a.kv_heads} KV "
        f"heads x {a.head_dim}, MLP {a.intermediate_size}, vocab {a.vocab_size}"
        + (f", {a.experts} experts top-{a.experts_per_token}" if a.experts else "")
        + (", q/k/v bias" if a.attention_bias else "") + (", tied embeddings" if a.tied_embeddings else "")
        + f"; {a.parameters:,} parameters" + (f" ({a.note})" if a.note else ""),
        f"- weights: {run.weights}",
        f"- quality reference: {run.reference}",
        f"- int4: group size 128, {'asymmetric with 4-bit zero points (AWQ/GPTQ layout)' if run.int4_zero_point else 'symmetric, no zero points (W4A16 layout)'}; "
        "int8: symmetric per output channel, fp32 scales; fp8: e4m3, one fp32 scale per tensor; "
        "embeddings, LM head, norms, biases, MoE router: bf16",
    ]
    lines += [f"- {n}" for n in run.notes]
    if run.reference_perplexity is not None:
        lines.append(f"- reference perplexity on the text: {run.reference_perplexity:.3f}")
    lines += ["", "## Weight bytes: measured vs planner", "",
              "| format | measured | planner (scheme) | difference | packed | scales | zeros | 16-bit rest | KV bytes/token |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in run.formats:
        planned = run.planner_bytes(r.fmt)
        diff = (r.weight_bytes - planned) / planned * 100
        bd = r.breakdown
        lines.append(f"| {r.fmt} | {r.weight_bytes:,} | {planned:,} ({run.planner_scheme(r.fmt)}) | {diff:+.3f}% | "
                     f"{bd.get('weights', 0):,} | {bd.get('scales', 0):,} | {bd.get('zeros', 0):,} | "
                     f"{bd.get('sixteen_bit', 0):,} | {int(r.kv_bytes_per_token):,} |")
    if any(r.prefill or r.decode for r in run.formats):
        lines += ["", "## Quality and speed", ""]
        lines += ["| format | weights | KL vs reference (nats) | top-1 agreement | perplexity | "
                  "prefill tok/s (longest) | decode tok/s (largest batch, shortest context) | notes |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in run.formats:
            pre = max(r.prefill, key=lambda p: p.input_tokens) if r.prefill else None
            if r.decode:
                ctx = min(p.context for p in r.decode)
                dec = max((p for p in r.decode if p.context == ctx), key=lambda p: p.batch)
                dec_s = f"{dec.tokens_per_s:,.0f} (B={dec.batch}, ctx={dec.context})"
            else:
                dec_s = "-"
            pre_s = f"{pre.tokens_per_s:,.0f} (T={pre.input_tokens})" if pre else "-"
            lines.append(f"| {r.fmt} | {_gb(r.weight_bytes)} | {_fmt(r.kl_divergence, '.3g')} | "
                         f"{_fmt(r.top1_agreement, '.2%')} | {_fmt(r.perplexity, '.3f')} | {pre_s} | {dec_s} | "
                         f"{'; '.join(r.notes)} |")
        lines += ["", "Files: `profile.yaml` (capacity profile: per format weight bytes, KV bytes per token, the "
                  "measured points and their fits), `throughput.png` (decode tokens/s against batch size)."]
    return "\n".join(lines) + "\n"


def plot_throughput(run: ProfileRun, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    styles = ["-", "--", ":", "-."]
    contexts = sorted({p.context for r in run.formats for p in r.decode})
    for ri, r in enumerate(run.formats):
        for ci, ctx in enumerate(contexts):
            pts = sorted((p for p in r.decode if p.context == ctx), key=lambda p: p.batch)
            if pts:
                ax.plot([p.batch for p in pts], [p.tokens_per_s for p in pts], styles[ci % len(styles)],
                        marker="o", color=f"C{ri}", label=f"{r.fmt}, context {ctx}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (sequences per decode step)")
    ax.set_ylabel("decode throughput (tokens/s)")
    title = f"{run.arch.name} on {run.device_name}"
    if run.device != "cuda":
        title += "\n(CPU: not representative of GPU speed)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(run: ProfileRun, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    measured = all(r.prefill and r.decode for r in run.formats)
    if measured:
        (out / "profile.yaml").write_text(profile_yaml(run))
        written["profile"] = out / "profile.yaml"
        plot_throughput(run, out / "throughput.png")
        written["plot"] = out / "throughput.png"
    (out / "report.md").write_text(report_markdown(run))
    written["report"] = out / "report.md"
    return written
