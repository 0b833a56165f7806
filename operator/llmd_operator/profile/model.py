"""A Llama-family decoder in plain torch, with a preallocated KV cache; parameter names are Hugging Face's.

Module names follow Hugging Face's Llama / Mistral / Mixtral / Qwen2 checkpoints exactly
(`model.layers.0.self_attn.q_proj.weight`, `model.layers.0.block_sparse_moe.experts.3.w1.weight`, ...), so
local safetensors load with `load_state_dict`. Weights may be stored in a narrower dtype than the compute
dtype (`compute_dtype`): every module casts what it reads, so a bf16- or int4-stored model computes in fp32
on CPU and in bf16 on CUDA.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .arch import Arch, from_hf_config


_SDPA_GQA = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float, dtype: torch.dtype, device) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size, dtype=dtype, device=device))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.to(x.dtype) * self.weight.to(x.dtype)


class KVCache:
    """Per layer a key and a value tensor of shape (batch, kv_heads, max_len, head_dim)."""

    def __init__(self, arch: Arch, batch: int, max_len: int, dtype: torch.dtype, device) -> None:
        shape = (batch, arch.kv_heads, max_len, arch.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(arch.layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(arch.layers)]
        self.batch, self.max_len = batch, max_len

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    @property
    def bytes_per_token(self) -> float:
        return self.nbytes / (self.batch * self.max_len)

    def fill_random(self, upto: int, generator: torch.Generator | None = None) -> None:
        for t in self.k + self.v:
            t[:, :, :upto].normal_(generator=generator)


def rope_inv_freq(arch: Arch, device) -> torch.Tensor:
    inv = 1.0 / (arch.rope_theta ** (torch.arange(0, arch.head_dim, 2, dtype=torch.float32, device=device)
                                     / arch.head_dim))
    rs = arch.rope_scaling or {}
    if rs.get("rope_type", rs.get("type")) == "llama3":  # Llama 3.1 frequency-dependent scaling
        factor, lo, hi = float(rs["factor"]), float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
        old = float(rs["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        smooth = (old / wavelen - lo) / (hi - lo)
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)
        mid = (wavelen <= old / lo) & (wavelen >= old / hi)
        inv = torch.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    return inv


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Attention(nn.Module):
    def __init__(self, arch: Arch, dtype, device) -> None:
        super().__init__()
        h, bias = arch.hidden_size, arch.attention_bias
        self.q_proj = nn.Linear(h, arch.q_dim, bias=bias, dtype=dtype, device=device)
        self.k_proj = nn.Linear(h, arch.kv_dim, bias=bias, dtype=dtype, device=device)
        self.v_proj = nn.Linear(h, arch.kv_dim, bias=bias, dtype=dtype, device=device)
        self.o_proj = nn.Linear(arch.q_dim, h, bias=False, dtype=dtype, device=device)
        self.heads, self.kv_heads, self.head_dim = arch.attention_heads, arch.kv_heads, arch.head_dim

    def forward(self, x, cos, sin, cache_k, cache_v, pos: int) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        cache_k[:, :, pos:pos + t] = k.to(cache_k.dtype)
        cache_v[:, :, pos:pos + t] = v.to(cache_v.dtype)
        keys = cache_k[:, :, :pos + t].to(q.dtype)
        values = cache_v[:, :, :pos + t].to(q.dtype)
        kwargs = {}
        if self.kv_heads != self.heads:
            if _SDPA_GQA:  # no copy of the KV cache per query head
                kwargs["enable_gqa"] = True
            else:
                group = self.heads // self.kv_heads
                keys = keys.repeat_interleave(group, dim=1)
                values = values.repeat_interleave(group, dim=1)
        if t == 1:
            out = F.scaled_dot_product_attention(q, keys, values, **kwargs)
        elif pos == 0:
            out = F.scaled_dot_product_attention(q, keys, values, is_causal=True, **kwargs)
        else:
            mask = torch.ones(t, pos + t, dtype=torch.bool, device=x.device).tril(diagonal=pos)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, **kwargs)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, arch: Arch, dtype, device) -> None:
        super().__init__()
        h, i = arch.hidden_size, arch.intermediate_size
        self.gate_proj = nn.Linear(h, i, bias=False, dtype=dtype, device=device)
        self.up_proj = nn.Linear(h, i, bias=False, dtype=dtype, device=device)
        self.down_proj = nn.Linear(i, h, bias=False, dtype=dtype, device=device)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Expert(nn.Module):
    """Mixtral's expert: w1 gate, w3 up, w2 down."""

    def __init__(self, arch: Arch, dtype, device) -> None:
        super().__init__()
        h, i = arch.hidden_size, arch.intermediate_size
        self.w1 = nn.Linear(h, i, bias=False, dtype=dtype, device=device)
        self.w3 = nn.Linear(h, i, bias=False, dtype=dtype, device=device)
        self.w2 = nn.Linear(i, h, bias=False, dtype=dtype, device=device)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class SparseMoE(nn.Module):
    """Top-k routing (Mixtral): softmax over the router logits, keep the top k, renormalise."""

    def __init__(self, arch: Arch, dtype, device) -> None:
        super().__init__()
        self.gate = nn.Linear(arch.hidden_size, arch.experts, bias=False, dtype=dtype, device=device)
        self.experts = nn.ModuleList(Expert(arch, dtype, device) for _ in range(arch.experts))
        self.top_k = arch.experts_per_token or 2

    def forward(self, x):
        b, t, h = x.shape
        flat = x.reshape(-1, h)
        probs = F.softmax(self.gate(flat).float(), dim=-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        weights = (weights / weights.sum(-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, expert(flat[rows]) * weights[rows, slot, None])
        return out.view(b, t, h)


class DecoderLayer(nn.Module):
    def __init__(self, arch: Arch, dtype, device) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps, dtype, device)
        self.self_attn = Attention(arch, dtype, device)
        self.post_attention_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps, dtype, device)
        if arch.experts:
            self.block_sparse_moe = SparseMoE(arch, dtype, device)
        else:
            self.mlp = MLP(arch, dtype, device)

    def forward(self, x, cos, sin, cache_k, cache_v, pos):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache_k, cache_v, pos)
        ffn = self.block_sparse_moe if hasattr(self, "block_sparse_moe") else self.mlp
        return x + ffn(self.post_attention_layernorm(x))


class Body(nn.Module):
    def __init__(self, arch: Arch, dtype, device) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(arch.vocab_size, arch.hidden_size, dtype=dtype, device=device)
        self.layers = nn.ModuleList(DecoderLayer(arch, dtype, device) for _ in range(arch.layers))
        self.norm = RMSNorm(arch.hidden_size, arch.rms_norm_eps, dtype, device)


class Transformer(nn.Module):
    """Decoder-only transformer; `forward(ids, cache, pos)` returns logits of every position (fp32)."""

    def __init__(self, arch: Arch, dtype: torch.dtype = torch.float32, device="cpu",
                 compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.arch = arch
        self.compute_dtype = compute_dtype or dtype
        self.model = Body(arch, dtype, device)
        if not arch.tied_embeddings:
            self.lm_head = nn.Linear(arch.hidden_size, arch.vocab_size, bias=False, dtype=dtype, device=device)
        self._inv_freq: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> KVCache:
        return KVCache(self.arch, batch, max_len, dtype or self.compute_dtype, self.device)

    def _rope(self, pos: int, t: int):
        if self._inv_freq is None or self._inv_freq.device != self.device:
            self._inv_freq = rope_inv_freq(self.arch, self.device)
        positions = torch.arange(pos, pos + t, dtype=torch.float32, device=self.device)
        freqs = torch.outer(positions, self._inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(self.compute_dtype), emb.sin().to(self.compute_dtype)

    def forward(self, ids: torch.Tensor, cache: KVCache, pos: int = 0, last_only: bool = False) -> torch.Tensor:
        x = self.model.embed_tokens(ids).to(self.compute_dtype)
        cos, sin = self._rope(pos, ids.shape[1])
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, cache.k[i], cache.v[i], pos)
        x = self.model.norm(x)
        if last_only:
            x = x[:, -1:]
        if self.arch.tied_embeddings:
            return F.linear(x, self.model.embed_tokens.weight.to(x.dtype)).float()
        return self.lm_head(x).float()


def init_random(model: Transformer, seed: int = 0) -> None:
    """Fixed-seed random weights with O(1) activations and logits (so quantization error is visible):
    linear weights ~ N(0, 1/fan_in), embeddings ~ N(0, 1), norms 1, biases small. Drawn on the
    parameter's own device (fast on a GPU; the same seed gives other numbers on CPU and CUDA)."""
    generators: dict[torch.device, torch.Generator] = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.device.type == "meta":
                continue
            g = generators.setdefault(p.device, torch.Generator(device=p.device).manual_seed(seed))
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("embed_tokens.weight"):
                p.normal_(0.0, 1.0, generator=g)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.02, generator=g)
            else:
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]), generator=g)


def build_model(arch: Arch, device="cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> Transformer:
    """The model with random weights (fixed seed); on the meta device, shapes only (no memory)."""
    model = Transformer(arch, dtype=dtype, device=device)
    init_random(model, seed)
    return model.eval()


def weights_config(directory: str | Path) -> Arch | None:
    """The architecture of a local Hugging Face checkpoint directory (its config.json), if it has one."""
    p = Path(directory) / "config.json"
    return from_hf_config(json.loads(p.read_text())) if p.exists() else None


def load_safetensors(model: Transformer, directory: str | Path) -> dict[str, list[str]]:
    """Load every *.safetensors file of a local checkpoint (Hugging Face names). Returns the missing and
    unexpected keys; raises when a weight the model needs is missing or has the wrong shape."""
    from safetensors.torch import load_file  # noqa: PLC0415

    files = sorted(Path(directory).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no *.safetensors files")
    own = model.state_dict()
    loaded, unexpected = set(), []
    with torch.no_grad():
        for f in files:
            for name, tensor in load_file(str(f), device="cpu").items():
                if name not in own:
                    unexpected.append(name)
                    continue
                if tuple(own[name].shape) != tuple(tensor.shape):
                    raise ValueError(f"{f.name}: {name} has shape {tuple(tensor.shape)}, the model expects "
                                     f"{tuple(own[name].shape)}")
                own[name].copy_(tensor.to(own[name].dtype))
                loaded.add(name)
    missing = sorted(set(own) - loaded)
    if missing:
        raise ValueError(f"{directory}: checkpoint lacks {len(missing)} weights, e.g. {missing[:3]}")
    return {"missing": missing, "unexpected": sorted(unexpected)}
