"""Pure: what one replica serves within its latency targets, and so what an output token costs on it.

The planner ranks the GPU products a model fits on by cost per token at the SLO, not by cost per hour:
Llama-3.1-8B fits a V100 at $2.04/h, but by the capacity profiles a V100 serves about a tenth of an
H100's requests within a 50 ms inter-token target, so each token costs about three times as much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import yaml

from ..api.units import parse_target
from ..catalog import ModelArchitecture, Price, WeightScheme
from ..catalog.loader import DATA
from ..slo.profiles import CapacityProfile, ProfileError, default_profile


@dataclass(frozen=True)
class Workload:
    """The request and targets a replica is measured against."""

    input_tokens: float
    output_tokens: float
    ttft_p95_s: float
    itl_p95_s: float
    source: str = ""

    def describe(self) -> str:
        return (f"{self.input_tokens:.0f}-token prompts, {self.output_tokens:.0f}-token answers, "
                f"TTFT p95 {self.ttft_p95_s * 1000:.0f} ms, ITL p95 {self.itl_p95_s * 1000:.0f} ms")


@lru_cache(maxsize=1)
def _workload_document() -> dict:
    return yaml.safe_load((DATA / "workload.yaml").read_text())


def planning_workload(objectives=()) -> Workload:
    """The catalog's typical request, with the deployment's own ttft_p95 and itl_p95 targets where it has them."""
    doc = _workload_document()
    targets = {o.name: parse_target(o.target) for o in objectives or ()}
    return Workload(input_tokens=float(doc["input_tokens"]), output_tokens=float(doc["output_tokens"]),
                    ttft_p95_s=targets.get("ttft_p95", float(doc["ttft_p95_s"])),
                    itl_p95_s=targets.get("itl_p95", float(doc["itl_p95_s"])), source=doc["source"])


def profile_format(scheme: WeightScheme) -> str:
    """The capacity-profile format a weight scheme runs at. Weight-only FP8 (Marlin kernels, on GPUs
    without FP8 tensor cores) computes in 16 bit; its smaller weights make it faster than the 16-bit
    profile, so that profile is a cautious stand-in."""
    return "bf16" if scheme.weight_only and scheme.quantization == "fp8" else scheme.quantization


_profiles: dict[tuple, CapacityProfile | None] = {}


def replica_profile(model: ModelArchitecture, gpu_product: str, scheme: WeightScheme,
                    tensor_parallel_size: int) -> CapacityProfile | None:
    """The shipped or derived capacity profile of one replica; None when no profile can be had."""
    key = (model.name, model.parameters, model.layers, gpu_product, profile_format(scheme), tensor_parallel_size)
    if key not in _profiles:
        try:
            _profiles[key] = default_profile(model.name, gpu_product, profile_format(scheme), tensor_parallel_size,
                                             architecture=model)
        except ProfileError:
            _profiles[key] = None
    return _profiles[key]


def requests_per_second(profile: CapacityProfile, workload: Workload, chunk_tokens: int) -> float:
    """Requests per second one replica serves with both targets met, its prefill and decode sharing
    the GPU's time: 0 when even an idle replica misses a target."""
    prefill = profile.max_prefill_tokens_per_s(workload.input_tokens, workload.ttft_p95_s, chunk_tokens)
    decode = profile.max_decode_tokens_per_s(workload.input_tokens + workload.output_tokens / 2,
                                             workload.itl_p95_s)
    if prefill <= 0 or decode <= 0:
        return 0.0
    return 1.0 / (workload.input_tokens / prefill + workload.output_tokens / decode)


def dollars_per_million_tokens(dollars_per_replica_hour: float, requests_per_s: float,
                               output_tokens: float) -> float:
    """USD per million output tokens for a replica kept busy at `requests_per_s`; inf when it serves none."""
    if requests_per_s <= 0 or not math.isfinite(dollars_per_replica_hour):
        return math.inf
    return dollars_per_replica_hour / (requests_per_s * output_tokens * 3600.0) * 1e6


def cost_per_token(model: ModelArchitecture, gpu_product: str, scheme: WeightScheme, tensor_parallel_size: int,
                   price: Price | None, spot_ratio: float, workload: Workload, chunk_tokens: int) -> tuple[float, float]:
    """(USD per million output tokens, requests/s per replica) at the SLO, paying the spot share at the
    spot price; (inf, 0) when the product has no price or no capacity profile."""
    profile = replica_profile(model, gpu_product, scheme, tensor_parallel_size)
    if profile is None or price is None:
        return math.inf, 0.0
    rate = requests_per_second(profile, workload, chunk_tokens)
    hourly = tensor_parallel_size * (spot_ratio * price.spot + (1 - spot_ratio) * price.on_demand)
    return dollars_per_million_tokens(hourly, rate, workload.output_tokens), rate
