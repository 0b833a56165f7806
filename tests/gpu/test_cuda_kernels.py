"""The profiler's CUDA paths, on a GPU: `make gpu-test` (not part of `make test`, which runs without one).

Each quantized format's kernel must compute what its stored weights say (the dequantized matmul), at the
row counts a decode batch and a prefill have; every step must be capturable in a CUDA graph, so the
timings measure the GPU rather than Python's kernel launches; a whole profile must run every format
without falling back. Runs with torch alone (no operator dependencies): `--confcutdir tests/gpu`.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmd_operator.profile import measure, quant
from llmd_operator.profile.arch import from_catalog_name
from llmd_operator.profile.model import build_model
from llmd_operator.profile.run import Settings, profile

if not torch.cuda.is_available():
    pytest.fail("tests/gpu need a CUDA GPU (run them with `make gpu-test` on a GPU machine)", pytrace=False)

# fp8 quantizes the activations per tensor to 3 mantissa bits: ~3% relative error against the
# dequantized weights alone; int8 (per token) and int4 (weights only) stay near bf16 rounding
TOLERANCE = {"int8": 0.02, "fp8": 0.05, "int4": 0.01}


@pytest.fixture(autouse=True)
def fresh_fallbacks():
    quant.QuantLinear.fast_path_failed.clear()
    yield


@pytest.mark.parametrize("fmt", ["int8", "fp8", "int4"])
@pytest.mark.parametrize("rows", [1, 5, 17, 64, 300])
def test_quantized_kernel_matches_the_stored_weights(fmt, rows):
    if fmt == "fp8" and not quant.fp8_supported("cuda"):
        pytest.fail("this GPU has no fp8 matmul (compute capability < 8.9): run on Hopper or Ada")
    torch.manual_seed(0)
    linear = nn.Linear(4096, 14336, bias=False, dtype=torch.bfloat16, device="cuda")
    nn.init.normal_(linear.weight, 0.0, 4096 ** -0.5)
    layer = quant._linear_for(fmt, linear, True)
    x = torch.randn(rows, 4096, dtype=torch.bfloat16, device="cuda")
    expected = x.float() @ layer.dequantized(torch.bfloat16).float().t()
    got = layer(x).float()
    assert got.shape == (rows, 14336)
    assert layer.fast and not quant.QuantLinear.fast_path_failed, f"the {fmt} kernel fell back"
    error = ((got - expected).norm() / expected.norm()).item()
    assert error < TOLERANCE[fmt], f"{fmt} at {rows} rows: relative error {error:.2e}"


@pytest.mark.parametrize("fmt", ["bf16", "fp8", "int8", "int4"])
def test_prefill_and_decode_steps_are_timed_from_cuda_graphs(fmt):
    arch = from_catalog_name("llama-3.1-8b").scale_down()
    model = quant.quantize_model(build_model(arch, device="cuda", dtype=torch.bfloat16), fmt,
                                 compute_dtype=torch.bfloat16)
    device = torch.device("cuda")
    with torch.inference_mode():
        ids = torch.randint(0, arch.vocab_size, (1, 512), device="cuda")
        cache = model.new_cache(1, 512)
        prefill = measure._cuda_graph_ms(lambda: model(ids, cache, 0, last_only=True), device, 3)
        step = torch.randint(0, arch.vocab_size, (32, 1), device="cuda")
        dcache = model.new_cache(32, 1025)
        decode = measure._cuda_graph_ms(lambda: model(step, dcache, 1024), device, 3)
    assert prefill is not None and prefill > 0, "prefill could not be captured"
    assert decode is not None and decode > 0, "a decode step could not be captured"


def test_a_whole_profile_runs_every_format_on_its_kernel():
    arch = from_catalog_name("llama-3.1-8b").scale_down()
    with torch.inference_mode():
        run = profile(arch, Settings(device="cuda", prefill_lengths=[128, 1024], batches=[1, 32],
                                     contexts=[512], repeats=2))
    assert [r.fmt for r in run.formats] == ["bf16", "fp8", "int8", "int4"]
    for r in run.formats:
        assert not any("failed" in n for n in r.notes), (r.fmt, r.notes)
        assert len(r.prefill) == 2 and len(r.decode) == 2
        assert all(p.step_ms > 0 for p in r.prefill + r.decode)
    assert any("CUDA graphs" in n for n in run.notes)
