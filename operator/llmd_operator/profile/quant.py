"""Weight formats in plain torch: bf16, int8 (per-output-channel), int4 (group-wise, packed), fp8 (e4m3).

Only linear layers of attention and MLP/experts are quantized. Embeddings, the LM head, norms, biases and
the MoE router stay 16-bit (bf16) in every format: the planner's convention (planning/memory.py) and what
vLLM's W8A8 / W4A16 / AWQ / FP8 checkpoints do.

    bf16  weight bf16
    int8  weight int8 [out, in], symmetric, one fp32 scale per output channel (W8A8, compressed-tensors)
    int4  weight 4-bit packed two per byte (uint8 [out, in/2]), groups of 128 input weights along each row,
          one fp16 scale per group and, asymmetric (default, like AWQ/GPTQ), one 4-bit zero point per group
          packed two per byte; symmetric (like compressed-tensors W4A16): no zero points
    fp8   weight float8_e4m3fn, one fp32 scale per tensor

Each quantized linear keeps only its quantized tensors (as buffers); `storage_bytes()` counts them.
Everything works on the meta device too (shapes and dtypes, no memory), so byte counts of the largest
models come from the same classes: on meta each class allocates its tensors with the shapes and dtypes its
real path produces (the tests check that the two agree), skipping the arithmetic (slow on meta).

Matmuls: on CPU dequantize-then-matmul. On CUDA, int8 uses torch._int_mm with per-token dynamic int8
activations (W8A8), fp8 uses torch._scaled_mm (compute capability >= 8.9), and int4 uses torch's tinygemm
kernel (torch._weight_int4pack_mm, compute capability >= 8.0, bf16 activations) for up to
INT4_KERNEL_MAX_ROWS rows; each when the shapes allow, else the dequantized path. Decode batches are
padded to the row counts the int8 and fp8 kernels accept, so small batches run the quantized kernel too,
as a serving engine does.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .arch import INT4_GROUP

FORMATS = ("bf16", "fp8", "int8", "int4")
SIXTEEN_BIT = torch.bfloat16
FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
INT4_KERNEL_GROUPS = (32, 64, 128, 256)  # group sizes tinygemm takes
# tinygemm is a kernel for few rows (decode): measured on an H100 with Llama-3.1-8B, 5.3 ms per decode step
# at batch 1 but 0.47 ms per prompt token in prefill, where dequantize-then-matmul is faster
INT4_KERNEL_MAX_ROWS = 128
QUANTIZED_NAMES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "w1", "w2", "w3"}


def fp8_supported(device: torch.device | str) -> bool:
    """Native fp8 matmuls: CUDA compute capability >= 8.9 (Ada, Hopper)."""
    d = torch.device(device)
    if d.type != "cuda" or not torch.cuda.is_available():
        return False
    major, minor = torch.cuda.get_device_capability(d)
    return (major, minor) >= (8, 9)


def pad_rows(flat: torch.Tensor, multiple: int, minimum: int = 0) -> torch.Tensor:
    """`flat` with zero rows appended up to a multiple of `multiple` and at least `minimum` rows: the
    int8 and fp8 kernels refuse some row counts, and a zero row changes no other row's result."""
    m = flat.shape[0]
    target = max(minimum, -(-m // multiple) * multiple)
    return flat if target == m else F.pad(flat, (0, 0, 0, target - m))


def _meta(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


class QuantLinear(nn.Module):
    """Base: a linear layer whose weight lives in some storage format; bias 16-bit."""

    fmt = "?"
    fast_path_failed: set[str] = set()  # formats whose CUDA kernel raised; they fell back to dequantizing

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.fast = True
        self.in_features, self.out_features = linear.in_features, linear.out_features
        if linear.bias is not None:
            self.register_buffer("bias", linear.bias.detach().to(SIXTEEN_BIT))
        else:
            self.bias = None

    def storage_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers())

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    def _bias(self, dtype):
        return None if self.bias is None else self.bias.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized(x.dtype), self._bias(x.dtype))

    def _kernel_output(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A fast kernel's [rows, out] result with the bias added, in `x`'s leading shape."""
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.view(*x.shape[:-1], self.out_features)

    def _kernel_failed(self) -> None:
        """This layer, and the report, fall back to the dequantized matmul."""
        QuantLinear.fast_path_failed.add(self.fmt)
        self.fast = False

    def extra_repr(self) -> str:
        return f"{self.fmt}, in={self.in_features}, out={self.out_features}"


class BF16Linear(QuantLinear):
    fmt = "bf16"

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear)
        self.register_buffer("weight", linear.weight.detach().to(SIXTEEN_BIT))

    def dequantized(self, dtype):
        return self.weight.to(dtype)


class Int8Linear(QuantLinear):
    """Symmetric per-output-channel int8 (round to nearest), fp32 scales."""

    fmt = "int8"

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear)
        if linear.weight.is_meta:  # shapes and dtypes only: what the real path below produces
            self.register_buffer("qweight", _meta((self.out_features, self.in_features), torch.int8))
            self.register_buffer("scale", _meta((self.out_features,), torch.float32))
            return
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        self.register_buffer("qweight", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.float32))

    def dequantized(self, dtype):
        return (self.qweight.float() * self.scale[:, None]).to(dtype)

    def forward(self, x):
        if x.is_cuda and self.fast and hasattr(torch, "_int_mm"):
            m = x.numel() // self.in_features
            # torch._int_mm wants more than 16 rows, in multiples of 8
            flat = pad_rows(x.reshape(-1, self.in_features), 8, minimum=24)
            if self.in_features % 8 == 0 and self.out_features % 8 == 0:
                try:  # W8A8: per-token dynamic int8 activations, int32 accumulation
                    xs = (flat.float().abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-12)
                    xq = torch.round(flat.float() / xs).clamp(-127, 127).to(torch.int8)
                    acc = torch._int_mm(xq, self.qweight.t())
                    out = (acc[:m].float() * xs[:m] * self.scale[None, :]).to(x.dtype)
                    return self._kernel_output(out, x)
                except RuntimeError:
                    self._kernel_failed()
        return super().forward(x)


def _pack4(q: torch.Tensor) -> torch.Tensor:
    """uint8 values 0..15, last dim even -> two per byte (low nibble first)."""
    return (q[..., 0::2] | (q[..., 1::2] << 4)).to(torch.uint8)


def _unpack4(p: torch.Tensor) -> torch.Tensor:
    low, high = p & 0x0F, (p >> 4) & 0x0F
    return torch.stack((low, high), dim=-1).flatten(-2)


class Int4Linear(QuantLinear):
    """Group-wise int4 along the input dimension (rows padded to whole groups), packed two per byte."""

    fmt = "int4"

    def __init__(self, linear: nn.Linear, group_size: int = INT4_GROUP, zero_point: bool = True) -> None:
        super().__init__(linear)
        self.group_size, self.zero_point = group_size, zero_point
        out_f, in_f = self.out_features, self.in_features
        groups = -(-in_f // group_size)
        self.groups = groups
        if linear.weight.is_meta:  # shapes and dtypes only: what the real path below produces
            self.register_buffer("qweight", _meta((out_f, groups * group_size // 2), torch.uint8))
            self.register_buffer("scales", _meta((out_f, groups), torch.float16))
            if zero_point:
                self.register_buffer("qzeros", _meta((out_f, (groups + 1) // 2), torch.uint8))
            return
        w = linear.weight.detach().float()
        pad = groups * group_size - in_f
        if pad:
            w = F.pad(w, (0, pad))
        g = w.view(out_f, groups, group_size)
        if zero_point:
            lo = g.amin(dim=2).clamp(max=0.0)
            hi = g.amax(dim=2).clamp(min=0.0)
            scale = ((hi - lo) / 15.0).clamp(min=1e-8)
            zero = torch.round(-lo / scale).clamp(0, 15)
            q = torch.round(g / scale[..., None] + zero[..., None]).clamp(0, 15)
        else:
            scale = (g.abs().amax(dim=2) / 7.0).clamp(min=1e-8)
            q = torch.round(g / scale[..., None]).clamp(-8, 7) + 8
        self.register_buffer("qweight", _pack4(q.to(torch.uint8).view(out_f, groups * group_size)))
        self.register_buffer("scales", scale.to(torch.float16))
        if zero_point:
            zeros = zero.to(torch.uint8)
            if groups % 2:
                zeros = F.pad(zeros, (0, 1))
            self.register_buffer("qzeros", _pack4(zeros))

    def dequantized(self, dtype):
        out_f = self.out_features
        q = _unpack4(self.qweight).view(out_f, self.groups, self.group_size).float()
        if self.zero_point:
            zero = _unpack4(self.qzeros)[:, :self.groups].float()
        else:
            zero = torch.full((out_f, self.groups), 8.0, device=q.device)
        w = (q - zero[..., None]) * self.scales.float()[..., None]
        return w.view(out_f, -1)[:, :self.in_features].to(dtype)

    def tinygemm_layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The same weights as torch's tinygemm kernel reads them: 4-bit values packed two per byte high
        nibble first ([out, in / 2] uint8), and per group a bf16 (scale, offset) pair ([groups, out, 2])
        with w = (q - 8) x scale + offset, so offset = (8 - zero) x scale."""
        out_f = self.out_features
        q = _unpack4(self.qweight).view(out_f, -1)
        packed = ((q[:, 0::2] << 4) | q[:, 1::2]).to(torch.uint8)
        scale = self.scales.float()
        zero = (_unpack4(self.qzeros)[:, :self.groups].float() if self.zero_point
                else torch.full_like(scale, 8.0))
        pairs = torch.stack((scale, (8.0 - zero) * scale), dim=-1)
        return packed.contiguous(), pairs.transpose(0, 1).contiguous().to(torch.bfloat16)

    def tinygemm_operands(self) -> tuple[torch.Tensor, torch.Tensor]:
        packed, pairs = self.tinygemm_layout()
        return torch._convert_weight_to_int4pack(packed, 8), pairs  # 8 inner k-tiles: in_features % 128

    def forward(self, x):
        if (x.is_cuda and self.fast and hasattr(torch, "_weight_int4pack_mm") and x.dtype == torch.bfloat16
                and self.group_size in INT4_KERNEL_GROUPS and self.in_features % (8 * 16) == 0
                and self.out_features % 8 == 0 and x.numel() // self.in_features <= INT4_KERNEL_MAX_ROWS
                and torch.cuda.get_device_capability(x.device) >= (8, 0)):
            try:  # W4A16: bf16 activations, weights dequantized inside the kernel
                if not hasattr(self, "_tinygemm"):  # not a buffer: storage_bytes counts the stored format
                    self._tinygemm = self.tinygemm_operands()
                packed, pairs = self._tinygemm
                out = torch._weight_int4pack_mm(x.reshape(-1, self.in_features), packed, self.group_size, pairs)
                return self._kernel_output(out, x)
            except RuntimeError:
                self._kernel_failed()
        return super().forward(x)


class Fp8Linear(QuantLinear):
    """float8_e4m3fn weights with one fp32 scale per tensor (vLLM's online fp8)."""

    fmt = "fp8"

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear)
        if linear.weight.is_meta:  # shapes and dtypes only: what the real path below produces
            self.register_buffer("qweight", _meta((self.out_features, self.in_features), FP8))
            self.register_buffer("scale", _meta((1,), torch.float32))
            return
        w = linear.weight.detach().float()
        scale = (w.abs().amax() / FP8_MAX).clamp(min=1e-12).reshape(1)
        self.register_buffer("qweight", (w / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8))
        self.register_buffer("scale", scale.to(torch.float32))

    def dequantized(self, dtype):
        return (self.qweight.float() * self.scale).to(dtype)

    def forward(self, x):
        if x.is_cuda and self.fast and fp8_supported(x.device) and hasattr(torch, "_scaled_mm"):
            m = x.numel() // self.in_features
            flat = pad_rows(x.reshape(-1, self.in_features), 16)  # torch._scaled_mm: rows in multiples of 16
            if self.in_features % 16 == 0 and self.out_features % 16 == 0:
                try:  # W8A8 fp8: per-tensor dynamic activation scale
                    xs = (flat.float().abs().amax() / FP8_MAX).clamp(min=1e-12).reshape(1)
                    xq = (flat.float() / xs).clamp(-FP8_MAX, FP8_MAX).to(FP8)
                    # fast accumulation, as vLLM's fp8 kernels: about twice the speed on Hopper
                    out = torch._scaled_mm(xq, self.qweight.t(), scale_a=xs, scale_b=self.scale,
                                           out_dtype=x.dtype, use_fast_accum=True)[:m]
                    return self._kernel_output(out, x)
                except RuntimeError:
                    self._kernel_failed()
        return super().forward(x)


def _linear_for(fmt: str, linear: nn.Linear, int4_zero_point: bool) -> QuantLinear:
    if fmt == "bf16":
        return BF16Linear(linear)
    if fmt == "int8":
        return Int8Linear(linear)
    if fmt == "int4":
        return Int4Linear(linear, zero_point=int4_zero_point)
    if fmt == "fp8":
        return Fp8Linear(linear)
    raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")


def quantize_model(model: nn.Module, fmt: str, int4_zero_point: bool = True,
                   compute_dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of `model` in weight format `fmt`: quantizable linears in the format, the rest bf16."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    originals = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    # copy everything but the linear weights (placeholders on meta): peak memory is reference + result
    memo = {id(m.weight): nn.Parameter(torch.empty(m.weight.shape, dtype=m.weight.dtype, device="meta"),
                                       requires_grad=False) for m in originals.values()}
    out = copy.deepcopy(model, memo)
    for parent_name, parent in list(out.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                target = fmt if name in QUANTIZED_NAMES else "bf16"
                original = originals[f"{parent_name}.{name}" if parent_name else name]
                setattr(parent, name, _linear_for(target, original, int4_zero_point))
    with torch.no_grad():
        for p in out.parameters():  # embeddings, norms
            p.data = p.data.to(SIXTEEN_BIT)
    if compute_dtype is not None:
        out.compute_dtype = compute_dtype
    return out


def storage_bytes(model: nn.Module) -> int:
    """Bytes of every weight the model stores (parameters and buffers, shared ones once)."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def storage_breakdown(model: nn.Module) -> dict[str, int]:
    """Bytes by kind: quantized weight, scales, zero points, 16-bit remainder."""
    out = {"weights": 0, "scales": 0, "zeros": 0, "sixteen_bit": 0}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        n = t.numel() * t.element_size()
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "qweight":
            out["weights"] += n
        elif leaf in ("scale", "scales"):
            out["scales"] += n
        elif leaf == "qzeros":
            out["zeros"] += n
        else:
            out["sixteen_bit"] += n
    return out
