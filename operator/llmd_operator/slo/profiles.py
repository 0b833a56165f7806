"""Capacity profiles: how fast one replica of (model, GPU product, tensor-parallel size, weight format) runs.

The one format that the profiler writes and the planner, simulator and SLO loop read; see
docs/capacity-profile.md. A profile file holds several weight formats; `CapacityProfile` is one format
of one file, with the step-time model the rest of the operator queries:

    prefill step (n new tokens after p already-cached tokens of the same prompts):
        ms = c + a * ((p + n)^2 - p^2) + b * n            (a*T^2 + b*T + c when p = 0)
    decode step (batch B, total context S tokens over the batch):
        ms = base_ms + per_kv_token_ms * S + per_seq_ms * B

Pure: no I/O except the explicit loaders.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).resolve().parent.parent / "catalog" / "profiles"
REFERENCE_FILE = PROFILE_DIR / "reference.yaml"
PRICES_FILE = Path(__file__).resolve().parent.parent / "catalog" / "data" / "prices.yaml"

KNOWN_FORMATS = ("bf16", "fp8", "int8", "int4")
_FORMAT_ALIASES = {"fp16": "bf16", "none": "bf16", "": "bf16", "float16": "bf16", "bfloat16": "bf16",
                   "awq": "int4", "gptq": "int4", "w4a16": "int4", "w8a8": "int8"}


class ProfileError(ValueError):
    """A capacity profile is malformed or cannot be found or derived."""


def normalize_format(quantization: str | None) -> str:
    q = (quantization or "bf16").strip().lower()
    return _FORMAT_ALIASES.get(q, q)


@dataclass(frozen=True)
class PrefillPoint:
    input_tokens: int
    step_ms: float
    tokens_per_s: float


@dataclass(frozen=True)
class DecodePoint:
    batch: int
    context: int
    step_ms: float
    tokens_per_s: float


@dataclass(frozen=True)
class CapacityProfile:
    """Capacity of ONE replica (tp GPUs) of one model in one weight format on one GPU product."""

    model: str
    gpu_product: str
    tensor_parallel_size: int
    quantization: str
    source: str
    date: str
    weight_bytes: float
    kv_bytes_per_token: float
    kv_capacity_tokens: int
    prefill_a: float
    prefill_b: float
    prefill_c: float
    decode_base_ms: float
    decode_per_kv_token_ms: float
    decode_per_seq_ms: float
    max_num_seqs: int = 256
    prefill_points: tuple[PrefillPoint, ...] = field(default=(), compare=False)
    decode_points: tuple[DecodePoint, ...] = field(default=(), compare=False)

    # ---- step times -------------------------------------------------------------------------
    def prefill_step_ms(self, new_tokens: float, prior_tokens: float = 0.0) -> float:
        """One engine step that prefills `new_tokens` after `prior_tokens` already in the KV cache."""
        n, p = float(new_tokens), float(prior_tokens)
        return self.prefill_c + self.prefill_a * ((p + n) ** 2 - p * p) + self.prefill_b * n

    def prefill_compute_ms(self, new_tokens: float, prior_tokens: float = 0.0) -> float:
        """Prefill cost without the per-step fixed cost (what a chunk adds to a mixed decode step)."""
        n, p = float(new_tokens), float(prior_tokens)
        return self.prefill_a * ((p + n) ** 2 - p * p) + self.prefill_b * n

    def prompt_prefill_ms(self, input_tokens: float, chunk_tokens: int = 8192) -> float:
        """Time to prefill one prompt alone, in chunks of `chunk_tokens`."""
        steps = max(1, math.ceil(input_tokens / chunk_tokens))
        return steps * self.prefill_c + self.prefill_compute_ms(input_tokens)

    def decode_step_ms(self, batch: float, context_tokens: float) -> float:
        """One decode step for `batch` sequences of mean context `context_tokens` each."""
        return self.decode_step_ms_total(batch, batch * context_tokens)

    def decode_step_ms_total(self, batch: float, total_context_tokens: float) -> float:
        if batch <= 0:
            return 0.0
        return (self.decode_base_ms + self.decode_per_kv_token_ms * total_context_tokens
                + self.decode_per_seq_ms * batch)

    # ---- capacities ---------------------------------------------------------------------------
    def max_prefill_tokens_per_s(self, input_len: float, ttft_target_s: float,
                                 chunk_tokens: int = 8192) -> float:
        """Prompt tokens/s one prefill replica sustains while p95 TTFT stays under the target.

        Service time s = the prompt's prefill time; queueing (M/D/1-like, p95 wait ~ 1.5 s rho/(1-rho))
        must fit in what is left of the target. 0 when even an idle replica misses the target.
        """
        s = self.prompt_prefill_ms(max(1.0, input_len), chunk_tokens) / 1000.0
        if s >= ttft_target_s:
            return 0.0
        x = (ttft_target_s - s) / (1.5 * s)
        rho = min(0.9, x / (1.0 + x))
        # batching: several short prompts share a step; throughput per busy second of a full chunk
        batch_rate = chunk_tokens / (self.prefill_step_ms(chunk_tokens) / 1000.0)
        single_rate = input_len / s
        return rho * max(single_rate, min(batch_rate, single_rate * 2.0))

    def max_decode_batch(self, mean_context: float, itl_target_s: float,
                         kv_context: float | None = None) -> int:
        """Largest batch whose decode step fits the ITL target, bounded by max-num-seqs and KV capacity
        (at `kv_context` tokens per sequence when given: a full KV cache stops admission outright, so
        callers may bound it with a more cautious context than the step time's)."""
        itl_ms = itl_target_s * 1000.0
        per_b = self.decode_per_kv_token_ms * max(1.0, mean_context) + self.decode_per_seq_ms
        room = itl_ms - self.decode_base_ms
        if room <= per_b:
            return 0 if room < per_b else 1
        b = int(room / per_b)
        kv_ctx = mean_context if kv_context is None else kv_context
        b = min(b, self.max_num_seqs, int(self.kv_capacity_tokens / max(1.0, kv_ctx)))
        return max(0, b)

    def max_decode_tokens_per_s(self, mean_context: float, itl_target_s: float) -> float:
        b = self.max_decode_batch(mean_context, itl_target_s)
        if b <= 0:
            return 0.0
        return b / (self.decode_step_ms(b, mean_context) / 1000.0)

    # ---- serialisation ------------------------------------------------------------------------
    def format_dict(self) -> dict[str, Any]:
        return {
            "weight_bytes": float(f"{self.weight_bytes:.4g}"),
            "kv_bytes_per_token": int(self.kv_bytes_per_token),
            "kv_capacity_tokens": int(self.kv_capacity_tokens),
            "max_num_seqs": self.max_num_seqs,
            "prefill": {
                "fit": {"a": float(f"{self.prefill_a:.4g}"), "b": float(f"{self.prefill_b:.4g}"),
                        "c": float(f"{self.prefill_c:.4g}")},
                "points": [asdict(p) for p in self.prefill_points],
            },
            "decode": {
                "fit": {"base_ms": float(f"{self.decode_base_ms:.4g}"),
                        "per_kv_token_ms": float(f"{self.decode_per_kv_token_ms:.4g}"),
                        "per_seq_ms": float(f"{self.decode_per_seq_ms:.4g}")},
                "points": [asdict(p) for p in self.decode_points],
            },
        }


# ---------------------------------------------------------------------------------------------
# fitting measured points (the profiler may write points only)
# ---------------------------------------------------------------------------------------------
def _lstsq(rows: list[list[float]], ys: list[float]) -> list[float]:
    n = len(rows[0])
    ata = [[sum(r[i] * r[j] for r in rows) for j in range(n)] for i in range(n)]
    aty = [sum(r[i] * y for r, y in zip(rows, ys)) for i in range(n)]
    for i in range(n):  # Gaussian elimination with partial pivoting
        piv = max(range(i, n), key=lambda k: abs(ata[k][i]))
        ata[i], ata[piv] = ata[piv], ata[i]
        aty[i], aty[piv] = aty[piv], aty[i]
        if abs(ata[i][i]) < 1e-300:
            raise ProfileError("points do not determine a fit (need more distinct points)")
        for k in range(i + 1, n):
            f = ata[k][i] / ata[i][i]
            for j in range(i, n):
                ata[k][j] -= f * ata[i][j]
            aty[k] -= f * aty[i]
    x = [0.0] * n
    for i in reversed(range(n)):
        x[i] = (aty[i] - sum(ata[i][j] * x[j] for j in range(i + 1, n))) / ata[i][i]
    return x


def fit_prefill(points: list[PrefillPoint]) -> tuple[float, float, float]:
    if len(points) < 3:
        raise ProfileError("prefill fit needs at least 3 points")
    a, b, c = _lstsq([[p.input_tokens ** 2, p.input_tokens, 1.0] for p in points],
                     [p.step_ms for p in points])
    return a, b, c


def fit_decode(points: list[DecodePoint]) -> tuple[float, float, float]:
    if len(points) < 3:
        raise ProfileError("decode fit needs at least 3 points")
    base, kv, seq = _lstsq([[1.0, p.batch * p.context, p.batch] for p in points],
                           [p.step_ms for p in points])
    return base, kv, seq


# ---------------------------------------------------------------------------------------------
# loading and validation
# ---------------------------------------------------------------------------------------------
def _req(d: dict, key: str, where: str) -> Any:
    if not isinstance(d, dict) or key not in d or d[key] is None:
        raise ProfileError(f"{where}: missing required field '{key}'")
    return d[key]


def parse_profile_document(doc: dict, origin: str = "<profile>") -> dict[str, CapacityProfile]:
    """Validate a CapacityProfile document; returns {format: CapacityProfile}."""
    if not isinstance(doc, dict) or doc.get("kind") != "CapacityProfile":
        raise ProfileError(f"{origin}: kind must be CapacityProfile")
    if int(doc.get("version", 0)) != 1:
        raise ProfileError(f"{origin}: unsupported version {doc.get('version')!r} (expected 1)")
    model = str(_req(doc, "model", origin))
    gpu = str(_req(doc, "gpu_product", origin))
    tp = int(_req(doc, "tensor_parallel_size", origin))
    source = str(_req(doc, "source", origin))
    date = str(_req(doc, "date", origin))
    formats = _req(doc, "formats", origin)
    if not isinstance(formats, dict) or not formats:
        raise ProfileError(f"{origin}: formats must be a non-empty mapping")
    out: dict[str, CapacityProfile] = {}
    for fmt_name, f in formats.items():
        where = f"{origin}: formats.{fmt_name}"
        fmt = normalize_format(str(fmt_name))
        if fmt not in KNOWN_FORMATS:
            raise ProfileError(f"{where}: unknown format (known: {', '.join(KNOWN_FORMATS)})")
        wb = float(_req(f, "weight_bytes", where))
        kvb = float(_req(f, "kv_bytes_per_token", where))
        kvcap = int(_req(f, "kv_capacity_tokens", where))
        pre = _req(f, "prefill", where)
        dec = _req(f, "decode", where)
        ppoints = tuple(PrefillPoint(int(p["input_tokens"]), float(p["step_ms"]),
                                     float(p.get("tokens_per_s") or p["input_tokens"] / p["step_ms"] * 1000))
                        for p in (pre.get("points") or []))
        dpoints = tuple(DecodePoint(int(p["batch"]), int(p["context"]), float(p["step_ms"]),
                                    float(p.get("tokens_per_s") or p["batch"] / p["step_ms"] * 1000))
                        for p in (dec.get("points") or []))
        if not ppoints or not dpoints:
            raise ProfileError(f"{where}: prefill.points and decode.points (measured throughput) are required")
        if pre.get("fit"):
            pf = pre["fit"]
            a, b, c = float(pf["a"]), float(pf["b"]), float(pf["c"])
        else:
            a, b, c = fit_prefill(list(ppoints))
        if dec.get("fit"):
            df = dec["fit"]
            base, kv, seq = float(df["base_ms"]), float(df["per_kv_token_ms"]), float(df["per_seq_ms"])
        else:
            base, kv, seq = fit_decode(list(dpoints))
        for name, v in (("weight_bytes", wb), ("kv_bytes_per_token", kvb), ("kv_capacity_tokens", kvcap),
                        ("prefill.fit.b", b), ("decode.fit.base_ms", base)):
            if not v > 0:
                raise ProfileError(f"{where}: {name} must be > 0, got {v}")
        if a < 0 or c < 0 or kv < 0 or seq < 0:
            raise ProfileError(f"{where}: fit coefficients must be non-negative (step time must not fall "
                               "as batch, context or tokens grow)")
        out[fmt] = CapacityProfile(
            model=model, gpu_product=gpu, tensor_parallel_size=tp, quantization=fmt, source=source,
            date=date, weight_bytes=wb, kv_bytes_per_token=kvb, kv_capacity_tokens=kvcap,
            prefill_a=a, prefill_b=b, prefill_c=c, decode_base_ms=base, decode_per_kv_token_ms=kv,
            decode_per_seq_ms=seq, max_num_seqs=int(f.get("max_num_seqs", 256)),
            prefill_points=ppoints, decode_points=dpoints)
    return out


def load_profile_file(path: str | Path) -> dict[str, CapacityProfile]:
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ProfileError(f"{p}: cannot read: {e}") from e
    return parse_profile_document(doc, str(p))


def load_profile(path: str | Path, quantization: str | None = None) -> CapacityProfile:
    """One format of a profile file: `quantization`, or the first format listed."""
    formats = load_profile_file(path)
    if quantization is None:
        return next(iter(formats.values()))
    fmt = normalize_format(quantization)
    if fmt not in formats:
        raise ProfileError(f"{path}: no format {fmt!r} (has {', '.join(formats)})")
    return formats[fmt]


def profile_document(profiles: list[CapacityProfile]) -> dict[str, Any]:
    """The YAML document for one (model, GPU, tp) with the given formats (what the profiler writes)."""
    first = profiles[0]
    return {
        "kind": "CapacityProfile", "version": 1, "model": first.model, "gpu_product": first.gpu_product,
        "tensor_parallel_size": first.tensor_parallel_size, "source": first.source, "date": first.date,
        "formats": {p.quantization: p.format_dict() for p in profiles},
    }


def profile_filename(model: str, gpu_product: str, tp: int) -> str:
    return f"{model}--{gpu_product}--tp{tp}.yaml"


# ---------------------------------------------------------------------------------------------
# derivation from the reference (fallback when nothing was measured)
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def reference() -> dict[str, Any]:
    return yaml.safe_load(REFERENCE_FILE.read_text())


def _model_key(model: str) -> str:
    m = model.strip().lower().split("/")[-1]
    for suffix in ("-instruct", "-fp8", "-int8", "-int4", "-awq", "-gptq", "-fp16", "-bf16"):
        m = m.replace(suffix, "")
    return m


def model_facts(model: str, architecture=None) -> dict[str, Any]:
    """What the derivation needs of a model: parameters a token passes through (`params`), all weights
    (`weights`), layers, hidden size, KV heads and head size. From the reference table when it lists the
    model; else from its architecture (the planner's catalog entry, or the one a user described):
    a mixture of experts computes with the experts a token is routed to, but a batch reads them all."""
    ref = reference()
    mkey = _model_key(model)
    if mkey in ref["models"]:
        m = ref["models"][mkey]
        return {**m, "weights": m["params"]}
    if architecture is None:
        from ..catalog.loader import CatalogError, load_catalog  # noqa: PLC0415 (the catalog imports nothing of ours)

        try:
            architecture = load_catalog().model(model)
        except CatalogError as error:
            raise ProfileError(f"no capacity profile and no architecture for model {model!r}: {error}") from None
    arch = architecture
    active = arch.parameters
    if arch.experts and arch.experts_per_token and arch.intermediate_size:
        expert = 3 * arch.hidden_size * arch.intermediate_size          # gate, up and down projections
        active -= arch.layers * (arch.experts - arch.experts_per_token) * expert
    return {"params": active, "weights": arch.parameters, "layers": arch.layers, "hidden": arch.hidden_size,
            "kv_heads": arch.kv_heads, "head_dim": arch.head_dim,
            "source": f"architecture of {arch.name} from the model catalog (config.json figures)"}


def derive_profile(model: str, gpu_product: str, quantization: str | None, tp: int = 1,
                   note: str = "", architecture=None) -> CapacityProfile:
    """Scale the reference anchor (Dynamo mocker fits for llama-3.1-8b fp8 on H100) to another
    (model, GPU, format, tp): dense prefill compute by parameters / (BF16 TFLOPS x format speed-up x tp),
    attention by layers x hidden, decode by bytes read per step / memory bandwidth. `architecture`
    (a catalog ModelArchitecture) describes a model the reference does not list."""
    ref = reference()
    anc = ref["anchor"]
    fmt = normalize_format(quantization)
    mkey = _model_key(model)
    m = model_facts(model, architecture)
    if gpu_product not in ref["gpus"]:
        raise ProfileError(f"no capacity profile and no reference data for GPU {gpu_product!r} "
                           f"(known: {', '.join(ref['gpus'])})")
    if fmt not in ref["formats"]:
        raise ProfileError(f"unknown weight format {quantization!r}")
    g, f = ref["gpus"][gpu_product], ref["formats"][fmt]
    for need in f["needs"]:
        if need not in g["supports"]:
            raise ProfileError(f"{gpu_product} does not support {fmt} (W8A8 {need} kernels)")
    am = ref["models"][anc["model"]]
    ag = ref["gpus"][anc["gpu_product"]]
    af = ref["formats"][anc["quantization"]]
    tp = int(tp)
    tp_eff = 1.0 if tp == 1 else float(anc["tp_compute_efficiency"])
    # dense compute (b): per-token FLOPs ~ params; throughput ~ bf16 TFLOPS x format speed-up x tp
    ref_rate = ag["bf16_tflops"] * af["prefill_speedup"]
    rate = g["bf16_tflops"] * f["prefill_speedup"] * tp * tp_eff
    b = anc["prefill_fit"]["b"] * (m["params"] / am["params"]) * (ref_rate / rate)
    # attention (a): FLOPs per token pair ~ layers x hidden, always in bf16
    a = anc["prefill_fit"]["a"] * (m["layers"] * m["hidden"]) / (am["layers"] * am["hidden"]) \
        * ag["bf16_tflops"] / (g["bf16_tflops"] * tp * tp_eff)
    c = anc["prefill_fit"]["c"] * (1.0 if tp == 1 else 1.2)
    weight_bytes = m["weights"] * f["bytes_per_param"]
    kv_bytes = 2 * m["layers"] * m["kv_heads"] * m["head_dim"] * 2  # bf16 KV cache
    bw = g["bandwidth_bytes_per_s"] * anc["bandwidth_efficiency"]
    tp_ms = 0.0 if tp == 1 else anc["tp_overhead_ms_per_layer"] * m["layers"]
    base = weight_bytes / tp / bw * 1000.0 + anc["decode_fixed_ms"] + tp_ms
    per_kv = kv_bytes / tp / bw * 1000.0
    per_seq = anc["decode_per_seq_ms"]
    free = tp * (g["memory_bytes"] * anc["gpu_memory_utilization"] - anc["runtime_overhead_bytes_per_gpu"]) \
        - weight_bytes
    if free <= 0:
        raise ProfileError(f"{model} {fmt} ({weight_bytes / 1e9:.0f} GB weights) does not fit on "
                           f"{tp} x {gpu_product}")
    kv_cap = int(free / kv_bytes)
    src = (f"derived: {note + '; ' if note else ''}scaled from {anc['prefill_source']}; decode: "
           f"{anc['decode_source']}; GPU: {g['source']}; model: {m['source']}")
    prof = CapacityProfile(
        model=mkey, gpu_product=gpu_product, tensor_parallel_size=tp, quantization=fmt, source=src,
        date=str(ref["date"]), weight_bytes=weight_bytes, kv_bytes_per_token=kv_bytes,
        kv_capacity_tokens=kv_cap, prefill_a=a, prefill_b=b, prefill_c=c, decode_base_ms=base,
        decode_per_kv_token_ms=per_kv, decode_per_seq_ms=per_seq)
    ppts = tuple(PrefillPoint(t, round(prof.prefill_step_ms(t), 3),
                              round(t / prof.prefill_step_ms(t) * 1000, 1))
                 for t in (128, 512, 1024, 2048, 4096, 8192, 16384))
    dpts = tuple(DecodePoint(bt, ctx, round(prof.decode_step_ms(bt, ctx), 3),
                             round(bt / prof.decode_step_ms(bt, ctx) * 1000, 1))
                 for ctx in (1024, 4096) for bt in (1, 8, 32, 64, 128, 256)
                 if bt * ctx <= kv_cap)
    return replace(prof, prefill_points=ppts, decode_points=dpts)


def shipped_profiles() -> list[Path]:
    return sorted(p for p in PROFILE_DIR.glob("*.yaml") if p.name != REFERENCE_FILE.name)


def default_profile(model: str, gpu_product: str, quantization: str | None = None,
                    tp: int = 1, architecture=None) -> CapacityProfile:
    """The shipped profile for exactly (model, GPU, tp, format); else one derived from the reference
    and the model's architecture, whose `source` says so."""
    fmt = normalize_format(quantization)
    mkey = _model_key(model)
    path = PROFILE_DIR / profile_filename(mkey, gpu_product, int(tp))
    if path.exists():
        formats = load_profile_file(path)
        if fmt in formats:
            return formats[fmt]
    return derive_profile(model, gpu_product, fmt, int(tp), architecture=architecture,
                          note=f"no shipped profile for {mkey}/{gpu_product}/tp{tp}/{fmt}, derived at load time")


# ---------------------------------------------------------------------------------------------
# prices (dated table; catalog/data/prices.yaml wins when present)
# ---------------------------------------------------------------------------------------------
def gpu_hour_prices(gpu_product: str) -> dict[str, Any]:
    """{'on_demand': $/GPU-h, 'spot': $/GPU-h, 'source': str, 'date': str} for a GPU product."""
    if PRICES_FILE.exists():
        try:
            doc = yaml.safe_load(PRICES_FILE.read_text()) or {}
            found = _find_price(doc, gpu_product)
            if found:
                return found
        except (OSError, yaml.YAMLError):
            pass
    table = reference()["prices"]
    if gpu_product not in table:
        raise ProfileError(f"no price for {gpu_product}")
    row = table[gpu_product]
    return {"on_demand": float(row["on_demand"]), "spot": float(row["spot"]),
            "source": row["source"], "date": str(table["date"])}


def _find_price(doc: Any, gpu_product: str) -> dict[str, Any] | None:
    """The catalog's prices file (owned by catalog/): providers.<default_provider>.prices.<gpu>; a
    missing spot price is estimated as on-demand x spot_estimate_ratio and marked as an estimate."""
    if not isinstance(doc, dict):
        return None
    prov_name = doc.get("default_provider")
    prov = (doc.get("providers") or {}).get(prov_name) if prov_name else None
    if not isinstance(prov, dict):
        return None
    row = (prov.get("prices") or {}).get(gpu_product)
    if not isinstance(row, dict) or not isinstance(row.get("on_demand"), (int, float)):
        return None
    src = f"catalog/data/prices.yaml ({prov_name}): {prov.get('source', '')}"
    spot = row.get("spot")
    if not isinstance(spot, (int, float)):
        ratio = float(doc.get("spot_estimate_ratio", 1.0))
        spot = float(row["on_demand"]) * ratio
        src += f"; spot ESTIMATED as on-demand x {ratio:g}"
    return {"on_demand": float(row["on_demand"]), "spot": float(spot), "source": src,
            "date": str(prov.get("date", ""))}
