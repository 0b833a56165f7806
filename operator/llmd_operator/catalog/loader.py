"""Load the catalog's data files into typed, read-only records; merge user overrides over them."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).parent / "data"


class CatalogError(LookupError):
    """A name the catalog does not know, with the names it does."""


@dataclass(frozen=True)
class ModelArchitecture:
    name: str
    parameters: int
    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    max_context: int
    intermediate_size: int | None = None
    vocab_size: int | None = None
    tied_embeddings: bool = False
    attention_bias: bool = False
    experts: int | None = None
    experts_per_token: int | None = None
    checkpoints: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    @property
    def embedding_parameters(self) -> int:
        """Input embedding plus LM head: kept 16-bit by every weight scheme."""
        if not self.vocab_size:
            return 0
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    @property
    def attention_parameters(self) -> int:
        """Attention projections (q, k, v, o) of all layers."""
        q = self.attention_heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        per_layer = 2 * self.hidden_size * q + 2 * self.hidden_size * kv
        return per_layer * self.layers

    @property
    def linear_parameters(self) -> int:
        """Weights in linear layers, the ones weight quantization stores in fewer bits."""
        norms = (2 * self.layers + 1) * self.hidden_size
        biases = (self.attention_heads + 2 * self.kv_heads) * self.head_dim * self.layers if self.attention_bias else 0
        return self.parameters - self.embedding_parameters - norms - biases


@dataclass(frozen=True)
class GpuProduct:
    product: str
    memory_bytes: int
    memory_bandwidth_gbps: float
    compute_capability: float
    nvlink: bool
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class WeightScheme:
    name: str
    quantization: str
    bytes_per_weight: float | None
    min_compute_capability: float
    vllm_quantization: str | None
    online: bool = False
    weight_only: bool = False
    dtype: str | None = None
    group_size: int | None = None
    scale_bytes: float = 0
    zero_bytes: float = 0
    channel_scale_bytes: float = 0
    attention_bytes: float | None = None
    mlp_bytes: float | None = None


@dataclass(frozen=True)
class Price:
    """USD per GPU-hour."""

    on_demand: float
    spot: float
    spot_estimated: bool
    provider: str
    source: str
    date: str


@dataclass(frozen=True)
class Catalog:
    models: dict[str, ModelArchitecture]
    gpus: dict[str, GpuProduct]
    schemes: dict[str, WeightScheme]
    kv_cache_bytes: dict[str, int]
    overhead: dict[str, int]
    prices: dict[str, dict[str, Price]]
    default_provider: str
    conventions: dict[str, Any]

    def model(self, name: str) -> ModelArchitecture:
        wanted = name.lower()
        for model in self.models.values():
            if wanted == model.name.lower() or wanted in (a.lower() for a in model.aliases):
                return model
        raise CatalogError(
            f"model {name!r} is not in the catalog ({', '.join(sorted(self.models))}); "
            "set spec.model.architecture to describe it"
        )

    def gpu(self, product: str) -> GpuProduct:
        if product in self.gpus:
            return self.gpus[product]
        raise CatalogError(f"GPU product {product!r} is not in the catalog ({', '.join(sorted(self.gpus))})")

    def gpus_matching(self, label_value: str) -> list[GpuProduct]:
        """GPU products a node label value names: the product itself, or a short alias like a100."""
        value = label_value.lower()
        return [g for g in self.gpus.values() if value == g.product.lower() or value in g.aliases]

    def price(self, product: str, provider: str | None = None) -> Price | None:
        return self.prices.get(provider or self.default_provider, {}).get(product)


def _read(name: str) -> dict:
    return yaml.safe_load((DATA / name).read_text())


def _merge(base: dict, override: dict | None) -> dict:
    """Deep-merge an override document over a catalog document."""
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_catalog(model_overrides: dict | None = None, price_overrides: dict | None = None) -> Catalog:
    """The catalog, with users' model and price documents (same shapes as the data files) merged over it."""
    return _load(yaml.safe_dump(model_overrides or {}), yaml.safe_dump(price_overrides or {}))


@lru_cache(maxsize=8)
def _load(model_overrides_yaml: str, price_overrides_yaml: str) -> Catalog:
    model_doc = _merge(_read("models.yaml"), yaml.safe_load(model_overrides_yaml))
    gpu_doc = _read("gpus.yaml")
    price_doc = _merge(_read("prices.yaml"), yaml.safe_load(price_overrides_yaml))
    models = {}
    for name, fields in model_doc["models"].items():
        fields = dict(fields, aliases=tuple(fields.get("aliases", ())))
        fields.setdefault("head_dim", fields["hidden_size"] // fields["attention_heads"])
        models[name] = ModelArchitecture(name=name, **fields)
    gpus = {
        product: GpuProduct(product=product, aliases=tuple(f.pop("aliases", ())), **f)
        for product, f in copy.deepcopy(gpu_doc["gpus"]).items()
    }
    schemes = {name: WeightScheme(name=name, **fields) for name, fields in gpu_doc["schemes"].items()}
    ratio = float(price_doc["spot_estimate_ratio"])
    prices: dict[str, dict[str, Price]] = {}
    for provider, entry in price_doc["providers"].items():
        prices[provider] = {
            product: Price(
                on_demand=float(p["on_demand"]),
                spot=float(p["spot"]) if p.get("spot") is not None else round(float(p["on_demand"]) * ratio, 4),
                spot_estimated=p.get("spot") is None,
                provider=provider,
                source=entry.get("source", ""),
                date=str(entry.get("date", "")),
            )
            for product, p in entry["prices"].items()
        }
    return Catalog(
        models=models,
        gpus=gpus,
        schemes=schemes,
        kv_cache_bytes={k: v["bytes"] for k, v in gpu_doc["kv_cache_dtypes"].items()},
        overhead=gpu_doc["overhead"],
        prices=prices,
        default_provider=price_doc["default_provider"],
        conventions=_read("capacity_conventions.yaml"),
    )
