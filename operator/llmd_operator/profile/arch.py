"""The architecture the profiler builds, from the catalog, a spec.model.architecture or a config.json.

Pure (no torch): shape arithmetic, conversions, scaling a model down to a small one of the same family,
and the per-rank shard of a tensor-parallel replica.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..catalog import ModelArchitecture, load_catalog

INT4_GROUP = 128


class ArchError(ValueError):
    """The architecture cannot be built (a missing size, an unsupported family)."""


@dataclass(frozen=True)
class Arch:
    """A Llama-family decoder: RMSNorm, rotary embeddings, GQA attention, SwiGLU MLP or top-k MoE."""

    name: str
    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_context: int = 4096
    tied_embeddings: bool = False
    attention_bias: bool = False
    experts: int | None = None
    experts_per_token: int | None = None
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    rope_scaling: dict[str, Any] | None = field(default=None, compare=False)
    note: str = ""

    # ---- shapes ------------------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> list[tuple[str, int, int]]:
        """(name, out_features, in_features) of every quantizable linear layer of one decoder layer."""
        h, i = self.hidden_size, self.intermediate_size
        shapes = [("q_proj", self.q_dim, h), ("k_proj", self.kv_dim, h), ("v_proj", self.kv_dim, h),
                  ("o_proj", h, self.q_dim)]
        if self.experts:
            for e in range(self.experts):
                shapes += [(f"experts.{e}.w1", i, h), (f"experts.{e}.w3", i, h), (f"experts.{e}.w2", h, i)]
        else:
            shapes += [("gate_proj", i, h), ("up_proj", i, h), ("down_proj", h, i)]
        return shapes

    @property
    def parameters(self) -> int:
        """Parameter count from the shapes (what the built model holds)."""
        per_layer = sum(o * n for _, o, n in self.linear_shapes()) + 2 * self.hidden_size
        if self.attention_bias:
            per_layer += self.q_dim + 2 * self.kv_dim
        if self.experts:
            per_layer += self.hidden_size * self.experts  # router
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)
        return per_layer * self.layers + embeddings + self.hidden_size

    def to_catalog(self) -> ModelArchitecture:
        """The planner's view of this architecture (for comparing memory numbers)."""
        return ModelArchitecture(
            name=self.name, parameters=self.parameters, layers=self.layers, hidden_size=self.hidden_size,
            attention_heads=self.attention_heads, kv_heads=self.kv_heads, head_dim=self.head_dim,
            max_context=self.max_context, intermediate_size=self.intermediate_size, vocab_size=self.vocab_size,
            tied_embeddings=self.tied_embeddings, attention_bias=self.attention_bias, experts=self.experts,
            experts_per_token=self.experts_per_token)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}

    # ---- derived architectures ---------------------------------------------------------------
    def scaled(self, layers: int | None = None, hidden: int | None = None, vocab: int | None = None,
               experts: int | None = None) -> Arch:
        """A smaller model of the same family: same GQA ratio, head size (unless hidden is tiny), MLP
        ratio, bias, tying and MoE routing. Widths are rounded to multiples of the int4 group (128)."""
        a = self
        notes = []
        if layers:
            a = replace(a, layers=int(layers))
            notes.append(f"layers {self.layers}->{layers}")
        if hidden and hidden != self.hidden_size:
            group = max(1, self.attention_heads // self.kv_heads)
            head_dim = self.head_dim if hidden >= self.head_dim * group else max(16, (hidden // group) // 2 * 2)
            heads = max(group, (hidden // head_dim) // group * group)
            ratio = self.intermediate_size / self.hidden_size
            inter = max(INT4_GROUP, round(hidden * ratio / INT4_GROUP) * INT4_GROUP)
            a = replace(a, hidden_size=int(hidden), head_dim=head_dim, attention_heads=heads,
                        kv_heads=heads // group, intermediate_size=inter)
            notes.append(f"hidden {self.hidden_size}->{hidden} (heads {heads}/{heads // group}, "
                         f"head_dim {head_dim}, mlp {inter})")
        if vocab and vocab != self.vocab_size:
            a = replace(a, vocab_size=int(vocab))
            notes.append(f"vocab {self.vocab_size}->{vocab}")
        if experts and self.experts and experts != self.experts:
            a = replace(a, experts=int(experts), experts_per_token=min(self.experts_per_token or 1, int(experts)))
            notes.append(f"experts {self.experts}->{experts}")
        if not notes:
            return self
        note = "scaled down from " + self.name + ": " + ", ".join(notes)
        return replace(a, name=f"{self.name}-scaled", note=note)

    def scale_down(self) -> Arch:
        """The default small model of the family for CPU runs: 2 layers, hidden 512, vocab <= 32000."""
        return self.scaled(layers=2, hidden=min(512, self.hidden_size), vocab=min(self.vocab_size, 32000),
                           experts=min(self.experts, 4) if self.experts else None)

    def shard(self, tensor_parallel_size: int) -> Arch:
        """What ONE rank of a tensor-parallel replica computes: heads, KV heads (replicated when fewer
        than ranks), MLP and vocabulary split tp ways. No all-reduce is modelled."""
        tp = int(tensor_parallel_size)
        if tp <= 1:
            return self
        if self.attention_heads % tp or self.intermediate_size % tp:
            raise ArchError(f"{self.name}: {self.attention_heads} heads / MLP {self.intermediate_size} do not "
                            f"split {tp} ways")
        return replace(self, name=f"{self.name}-tp{tp}-rank", attention_heads=self.attention_heads // tp,
                       kv_heads=max(1, self.kv_heads // tp), intermediate_size=self.intermediate_size // tp,
                       vocab_size=-(-self.vocab_size // tp),
                       note=(self.note + "; " if self.note else "") + f"one rank of tensor parallel {tp}")


# ---------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------
def _rope_defaults(name: str) -> float:
    n = name.lower()
    if "llama-3" in n or "llama3" in n:
        return 500000.0
    if "qwen" in n or "mistral-7b" in n or "mixtral" in n:
        return 1000000.0
    return 10000.0


def from_catalog(model: ModelArchitecture) -> Arch:
    if not model.intermediate_size or not model.vocab_size:
        raise ArchError(f"{model.name}: the catalog entry has no intermediate_size/vocab_size; the profiler "
                        "needs them to build the model")
    return Arch(name=model.name, layers=model.layers, hidden_size=model.hidden_size,
                attention_heads=model.attention_heads, kv_heads=model.kv_heads, head_dim=model.head_dim,
                intermediate_size=model.intermediate_size, vocab_size=model.vocab_size,
                max_context=model.max_context, tied_embeddings=model.tied_embeddings,
                attention_bias=model.attention_bias, experts=model.experts,
                experts_per_token=model.experts_per_token, rope_theta=_rope_defaults(model.name),
                rms_norm_eps=1e-6 if "qwen" in model.name.lower() else 1e-5)


def from_catalog_name(name: str) -> Arch:
    return from_catalog(load_catalog().model(name))


def _get(d: dict, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return default


def from_api(name: str, architecture: dict[str, Any]) -> Arch:
    """From spec.model.architecture (camelCase as in the CRD, or snake_case)."""
    a = architecture
    hidden = int(_get(a, "hiddenSize", "hidden_size"))
    heads = int(_get(a, "attentionHeads", "attention_heads"))
    inter = _get(a, "intermediateSize", "intermediate_size")
    vocab = _get(a, "vocabSize", "vocab_size")
    if not inter or not vocab:
        raise ArchError(f"{name}: spec.model.architecture needs intermediateSize and vocabSize for the profiler")
    return Arch(name=name, layers=int(_get(a, "layers")), hidden_size=hidden, attention_heads=heads,
                kv_heads=int(_get(a, "kvHeads", "kv_heads", default=heads)),
                head_dim=int(_get(a, "headDim", "head_dim", default=hidden // heads)),
                intermediate_size=int(inter), vocab_size=int(vocab),
                max_context=int(_get(a, "maxContext", "max_context", default=4096)),
                tied_embeddings=bool(_get(a, "tiedEmbeddings", "tied_embeddings", default=False)),
                attention_bias=bool(_get(a, "attentionBias", "attention_bias", default=False)),
                experts=_get(a, "experts"), experts_per_token=_get(a, "expertsPerToken", "experts_per_token"),
                rope_theta=_rope_defaults(name))


SUPPORTED_HF = ("llama", "mistral", "mixtral", "qwen2")


def from_hf_config(config: dict[str, Any], name: str | None = None) -> Arch:
    """From a Hugging Face config.json of a Llama, Mistral, Mixtral or Qwen2 model."""
    c = config
    mtype = str(c.get("model_type", "llama"))
    if mtype not in SUPPORTED_HF:
        raise ArchError(f"model_type {mtype!r} is not supported (supported: {', '.join(SUPPORTED_HF)})")
    hidden = int(c["hidden_size"])
    heads = int(c["num_attention_heads"])
    name = name or str(c.get("_name_or_path") or mtype).rstrip("/").split("/")[-1] or mtype
    return Arch(name=name, layers=int(c["num_hidden_layers"]), hidden_size=hidden, attention_heads=heads,
                kv_heads=int(c.get("num_key_value_heads") or heads),
                head_dim=int(c.get("head_dim") or hidden // heads),
                intermediate_size=int(c["intermediate_size"]), vocab_size=int(c["vocab_size"]),
                max_context=int(c.get("max_position_embeddings") or 4096),
                tied_embeddings=bool(c.get("tie_word_embeddings", False)),
                attention_bias=mtype == "qwen2" or bool(c.get("attention_bias", False)),  # Qwen2: always
                experts=c.get("num_local_experts"), experts_per_token=c.get("num_experts_per_tok"),
                rope_theta=float(c.get("rope_theta") or 10000.0),
                rms_norm_eps=float(c.get("rms_norm_eps") or 1e-5), rope_scaling=c.get("rope_scaling"))


def from_file(path: str | Path) -> Arch:
    """A config.json (Hugging Face) or a YAML/JSON spec.model.architecture (optionally with `name`)."""
    p = Path(path)
    text = p.read_text()
    doc = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise ArchError(f"{p}: not a mapping")
    if "num_hidden_layers" in doc:
        return from_hf_config(doc)
    if "architecture" in doc:  # a spec.model block
        return from_api(str(doc.get("name") or p.stem), doc["architecture"])
    return from_api(str(doc.get("name") or p.stem), doc)
