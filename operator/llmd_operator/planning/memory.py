"""GPU memory of a model: weight bytes per scheme, KV-cache bytes per token, what is left for the cache."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..catalog import Catalog, GpuProduct, ModelArchitecture, WeightScheme

GIB = 2**30


def weight_bytes(model: ModelArchitecture, scheme: WeightScheme) -> int:
    """Bytes of all weights under a scheme: linear layers in the scheme's format, the rest 16-bit.

    Group-wise schemes store a scale (and zero point) per group of `group_size` weights; W8A8 stores a
    scale per output channel. Embeddings, the LM head, norms and biases stay 16-bit in every scheme.
    """
    sixteen_bit = (model.parameters - model.linear_parameters) * 2
    linear = model.linear_parameters
    if scheme.quantization == "mixed":
        attention = model.attention_parameters
        return int(sixteen_bit + attention * scheme.attention_bytes + (linear - attention) * scheme.mlp_bytes)
    packed = linear * scheme.bytes_per_weight
    if scheme.group_size:
        packed += linear / scheme.group_size * (scheme.scale_bytes + scheme.zero_bytes)
    if scheme.channel_scale_bytes:
        packed += _output_channels(model) * scheme.channel_scale_bytes
    return int(sixteen_bit + packed)


def _output_channels(model: ModelArchitecture) -> int:
    """Output channels of all linear layers (one W8A8 scale each)."""
    q = model.attention_heads * model.head_dim
    kv = model.kv_heads * model.head_dim
    mlp = (2 * (model.intermediate_size or 0) + model.hidden_size) * (model.experts or 1)
    return model.layers * (q + 2 * kv + model.hidden_size + mlp)


def kv_bytes_per_token(model: ModelArchitecture, element_bytes: int) -> int:
    """KV cache per token: a key and a value vector per layer per KV head."""
    return 2 * model.layers * model.kv_heads * model.head_dim * element_bytes


@dataclass(frozen=True)
class MemoryFit:
    """How a model lays out on one replica of `tensor_parallel_size` GPUs."""

    gpu: GpuProduct
    tensor_parallel_size: int
    gpu_memory_utilization: float
    weights_bytes: int
    weights_per_gpu_bytes: int
    overhead_per_gpu_bytes: int
    usable_per_gpu_bytes: int
    kv_bytes_per_token: int
    kv_per_gpu_bytes: int
    kv_capacity_tokens: int

    @property
    def fits_weights(self) -> bool:
        return self.kv_per_gpu_bytes > 0


def fit(
    model: ModelArchitecture,
    scheme: WeightScheme,
    kv_element_bytes: int,
    gpu: GpuProduct,
    tensor_parallel_size: int,
    gpu_memory_utilization: float,
    catalog: Catalog,
) -> MemoryFit:
    """Memory per GPU for weights, overhead and KV cache, and the tokens of KV cache a replica holds."""
    weights = weight_bytes(model, scheme)
    weights_per_gpu = math.ceil(weights / tensor_parallel_size)
    overhead = catalog.overhead["per_gpu_bytes"] + catalog.overhead["activation_bytes_per_hidden"] * model.hidden_size
    usable = int(gpu.memory_bytes * gpu_memory_utilization)
    kv_per_gpu = usable - weights_per_gpu - overhead
    per_token = kv_bytes_per_token(model, kv_element_bytes)
    # KV heads shard across tensor-parallel ranks; with fewer KV heads than ranks each rank keeps a copy.
    heads_per_gpu = max(1, model.kv_heads // tensor_parallel_size)
    per_token_per_gpu = per_token * heads_per_gpu // model.kv_heads
    capacity = max(0, kv_per_gpu) // per_token_per_gpu
    return MemoryFit(
        gpu=gpu,
        tensor_parallel_size=tensor_parallel_size,
        gpu_memory_utilization=gpu_memory_utilization,
        weights_bytes=weights,
        weights_per_gpu_bytes=weights_per_gpu,
        overhead_per_gpu_bytes=overhead,
        usable_per_gpu_bytes=usable,
        kv_bytes_per_token=per_token,
        kv_per_gpu_bytes=kv_per_gpu,
        kv_capacity_tokens=int(capacity),
    )
