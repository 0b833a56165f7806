"""The torch profiler on CPU with tiny architectures: formats, bytes, KV, model, measurements, outputs.

Needs the `profile` extra (torch, safetensors, matplotlib); `make test` installs it. Without torch these
tests FAIL under CI (CI=true) and are skipped, with the install command, elsewhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
import yaml
from click.testing import CliRunner

try:
    import torch
except ImportError:  # pragma: no cover - the extra is part of `make test`
    if os.environ.get("CI"):
        raise
    pytest.skip("torch missing: pip install 'llmd-operator[profile]' to run the profiler tests",
                allow_module_level=True)

from llmd_operator.catalog import load_catalog
from llmd_operator.planning.memory import kv_bytes_per_token as planner_kv_bytes_per_token
from llmd_operator.planning.memory import weight_bytes as planner_weight_bytes
from llmd_operator.profile.arch import Arch, from_catalog
from llmd_operator.profile.command import profile as profile_command
from llmd_operator.profile.measure import compare_logits, kv_bytes_per_token, perplexity
from llmd_operator.profile.model import Transformer, build_model, load_safetensors, weights_config
from llmd_operator.profile.quant import (Fp8Linear, Int4Linear, Int8Linear, _pack4, _unpack4, pad_rows,
                                         quantize_model, storage_breakdown, storage_bytes)
from llmd_operator.profile.results import (ProfileRun, fit_decode_points, fit_prefill_points, report_markdown,
                                           write_outputs)
from llmd_operator.profile.run import Settings, profile
from llmd_operator.slo.profiles import DecodePoint, PrefillPoint, load_profile_file

# hidden 256 (two int4 groups), GQA 4/2 heads x 64, MLP 384 (three groups), q/k/v bias, untied
TINY = Arch(name="tiny", layers=2, hidden_size=256, attention_heads=4, kv_heads=2, head_dim=64,
            intermediate_size=384, vocab_size=512, attention_bias=True)
TINY_MOE = replace(TINY, name="tiny-moe", attention_bias=False, tied_embeddings=True, experts=4, experts_per_token=2)
FAST = dict(prefill_lengths=[8, 16, 32], batches=[1, 2], contexts=[8, 16], prompts=4, prompt_len=16, repeats=1,
            decode_steps=2)


@pytest.fixture(scope="module")
def tiny():
    return build_model(TINY, seed=0)


# ---------------------------------------------------------------------------------------------
# weight bytes: measured tensors vs hand computation, and vs the planner for every catalog model
# ---------------------------------------------------------------------------------------------
def hand_bytes(fmt: str) -> int:
    """TINY by hand. Per layer the quantized linears: q 256x256, k 128x256, v 128x256, o 256x256,
    gate 384x256, up 384x256, down 256x384 = 491,520 weights, 1,792 output channels, groups of 128:
    q 2x256 + k 2x128 + v 2x128 + o 2x256 + gate 2x384 + up 2x384 + down 3x256 = 3,840 groups; 4-bit zero
    points packed per row: 1 byte for the 1,536 rows of two groups, 2 bytes for down's 256 rows of three.
    16-bit rest: embeddings 512x256 x2 (untied), norms 2x256 per layer + 256, q/k/v bias 512 per layer."""
    weights, channels, groups = 491_520, 1_792, 3_840
    zero_bytes = 1_536 * 1 + 256 * 2
    rest = 2 * (2 * 512 * 256 + 2 * (2 * 256 + 512) + 256)
    per_layer = {"bf16": weights * 2, "int8": weights + channels * 4, "int4": weights // 2 + groups * 2 + zero_bytes,
                 "fp8": weights + 7 * 4}[fmt]
    return rest + 2 * per_layer


@pytest.mark.parametrize("fmt", ["bf16", "int8", "int4", "fp8"])
def test_weight_bytes_match_hand_computation(tiny, fmt):
    q = quantize_model(tiny, fmt)
    assert storage_bytes(q) == hand_bytes(fmt)
    assert sum(storage_breakdown(q).values()) == storage_bytes(q)
    # and the planner agrees (the only difference: the planner ignores int4 zero points' padding to bytes)
    scheme = {"bf16": "bf16", "int8": "int8-w8a8", "int4": "int4-awq", "fp8": "fp8"}[fmt]
    planned = planner_weight_bytes(TINY.to_catalog(), load_catalog().schemes[scheme])
    assert abs(storage_bytes(q) - planned) / planned < 0.001


@pytest.mark.parametrize("name", sorted(load_catalog().models))
def test_planner_agrees_with_profiler_within_1_percent_on_meta(name):
    """Every catalog model built on the meta device (no memory); bytes of the quantized tensors' shapes
    and dtypes against planning.memory.weight_bytes."""
    catalog = load_catalog()
    model = catalog.model(name)
    reference = build_model(from_catalog(model), device="meta")
    assert reference.model.embed_tokens.weight.is_meta
    assert kv_bytes_per_token(reference, torch.bfloat16) == planner_kv_bytes_per_token(model, 2)
    for fmt, scheme, zero_point in [("bf16", "bf16", True), ("int8", "int8-w8a8", True),
                                    ("int4", "int4-w4a16", False), ("int4", "int4-awq", True), ("fp8", "fp8", True)]:
        measured = storage_bytes(quantize_model(reference, fmt, int4_zero_point=zero_point))
        planned = planner_weight_bytes(model, catalog.schemes[scheme])
        assert abs(measured - planned) / planned < 0.01, (name, scheme, measured, planned)
        if fmt == "bf16" or not model.experts:  # MoE: the profiler keeps the router 16-bit
            assert abs(measured - planned) / planned < 1e-4, (name, scheme, measured, planned)


@pytest.mark.parametrize("cls,kwargs", [(Int8Linear, {}), (Int4Linear, {"zero_point": True}),
                                        (Int4Linear, {"zero_point": False}), (Fp8Linear, {})])
def test_meta_layout_is_the_real_layout(cls, kwargs):
    real = torch.nn.Linear(200, 72, bias=True)  # 200: a partial int4 group
    meta = torch.nn.Linear(200, 72, bias=True, device="meta")
    a, b = cls(real, **kwargs), cls(meta, **kwargs)
    assert [(n, t.shape, t.dtype) for n, t in a.named_buffers()] == [(n, t.shape, t.dtype) for n, t in b.named_buffers()]
    assert a.storage_bytes() == b.storage_bytes()


# ---------------------------------------------------------------------------------------------
# quantizers
# ---------------------------------------------------------------------------------------------
def test_pack_unpack_roundtrip():
    q = torch.randint(0, 16, (3, 10), dtype=torch.uint8)
    packed = _pack4(q)
    assert packed.shape == (3, 5) and packed.dtype == torch.uint8
    assert torch.equal(_unpack4(packed), q)


@pytest.mark.parametrize("rows,multiple,minimum,padded", [(1, 16, 0, 16), (16, 16, 0, 16), (17, 16, 0, 32),
                                                          (1, 8, 24, 24), (30, 8, 24, 32)])
def test_pad_rows_reaches_the_row_counts_the_kernels_take(rows, multiple, minimum, padded):
    x = torch.randn(rows, 8)
    out = pad_rows(x, multiple, minimum)
    assert out.shape == (padded, 8)
    assert torch.equal(out[:rows], x) and not out[rows:].any()


@pytest.mark.parametrize("zero_point", [True, False])
def test_int4_tinygemm_layout_holds_the_same_weights(zero_point):
    torch.manual_seed(0)
    layer = Int4Linear(torch.nn.Linear(256, 48, bias=False), zero_point=zero_point)
    packed, pairs = layer.tinygemm_layout()
    assert packed.shape == (48, 128) and pairs.shape == (2, 48, 2) and pairs.dtype == torch.bfloat16
    q = torch.stack(((packed >> 4) & 0x0F, packed & 0x0F), dim=-1).flatten(-2).float()  # high nibble first
    scale, offset = pairs.float().transpose(0, 1).unbind(-1)
    w = ((q.view(48, 2, 128) - 8) * scale[..., None] + offset[..., None]).view(48, 256)
    reference = layer.dequantized(torch.float32)
    # the kernel's scales and offsets are bf16: within bf16 rounding of the stored weights
    assert torch.allclose(w, reference, rtol=0, atol=float(reference.abs().max()) * 2 ** -7)


@pytest.mark.parametrize("cls,kwargs,bound", [
    (Int8Linear, {}, lambda w: w.abs().amax(1, keepdim=True) / 127 / 2),
    (Int4Linear, {"zero_point": True}, None),
    (Int4Linear, {"zero_point": False}, None),
])
def test_rounding_error_is_at_most_half_a_step(cls, kwargs, bound):
    torch.manual_seed(0)
    lin = torch.nn.Linear(200, 16, bias=False)
    q = cls(lin, **kwargs)
    w = lin.weight.detach()
    err = (q.dequantized(torch.float32) - w).abs()
    if bound is not None:
        assert (err <= bound(w) + 1e-7).all()
    else:  # per group of 128: half the group's step (a whole step at the top edge when the zero point rounds)
        scales = q.scales.float().repeat_interleave(128, dim=1)[:, :200]
        assert (err <= scales * (1.0 if q.zero_point else 0.5) + 1e-4).all()
        assert err.mean() <= scales.mean() / 3


def test_fp8_is_close_and_stored_as_e4m3():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32, bias=False)
    q = Fp8Linear(lin)
    assert q.qweight.dtype == torch.float8_e4m3fn and q.scale.numel() == 1
    rel = (q.dequantized(torch.float32) - lin.weight).abs().max() / lin.weight.abs().max()
    assert rel < 0.07  # e4m3: 3 mantissa bits


def test_quantize_keeps_embeddings_head_norms_and_router_16_bit():
    model = build_model(TINY_MOE)
    q = quantize_model(model, "int4")
    assert q.model.embed_tokens.weight.dtype == torch.bfloat16
    assert q.model.norm.weight.dtype == torch.bfloat16
    layer = q.model.layers[0]
    assert layer.block_sparse_moe.gate.fmt == "bf16"
    assert layer.block_sparse_moe.experts[0].w1.fmt == "int4"
    assert layer.self_attn.q_proj.fmt == "int4"
    assert not hasattr(q, "lm_head")  # tied


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", [TINY, TINY_MOE], ids=["dense-bias", "moe-tied"])
def test_cache_paths_agree(arch):
    model = build_model(arch)
    ids = torch.randint(0, arch.vocab_size, (2, 12))
    with torch.inference_mode():
        full = model(ids, model.new_cache(2, 12))
        cache = model.new_cache(2, 12)
        first = model(ids[:, :7], cache, 0)
        rest = model(ids[:, 7:11], cache, 7)  # chunked prefill with prior tokens
        last = model(ids[:, 11:], cache, 11)  # decode
    got = torch.cat([first, rest, last], dim=1)
    assert torch.allclose(got, full, atol=1e-4)


def test_kv_bytes_per_token_from_the_cache(tiny):
    assert kv_bytes_per_token(tiny, torch.bfloat16) == 2 * TINY.layers * TINY.kv_heads * TINY.head_dim * 2
    assert kv_bytes_per_token(tiny, torch.float32) == 2 * TINY.layers * TINY.kv_heads * TINY.head_dim * 4


def test_loads_hugging_face_safetensors(tmp_path, tiny):
    from safetensors.torch import save_file  # noqa: PLC0415

    state = {k: v.contiguous() for k, v in tiny.state_dict().items()}
    names = sorted(state)
    assert "model.layers.0.self_attn.q_proj.weight" in names and "lm_head.weight" in names
    assert "model.layers.1.mlp.down_proj.weight" in names and "model.layers.0.self_attn.k_proj.bias" in names
    half = len(names) // 2
    save_file({k: state[k] for k in names[:half]}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({k: state[k] for k in names[half:]}, str(tmp_path / "model-00002-of-00002.safetensors"))
    config = {"model_type": "qwen2", "hidden_size": 256, "intermediate_size": 384, "num_attention_heads": 4,
              "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 512}
    (tmp_path / "config.json").write_text(json.dumps(config))
    arch = weights_config(tmp_path)
    assert arch.attention_bias
    other = build_model(replace(arch, name="tiny"), seed=99)
    load_safetensors(other, tmp_path)
    ids = torch.randint(0, 512, (1, 8))
    with torch.inference_mode():
        assert torch.equal(other(ids, other.new_cache(1, 8)), tiny(ids, tiny.new_cache(1, 8)))
    # the command takes the checkpoint's shapes from its config.json and its weights from the files
    out = tmp_path / "out"
    result = CliRunner().invoke(profile_command, [
        "--weights", str(tmp_path), "--model", "tiny", "--formats", "int8", "--device", "cpu", "--out", str(out),
        "--prefill-lengths", "4,8,16", "--batches", "1,2", "--contexts", "4,8", "--prompts", "2",
        "--prompt-len", "8", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    assert "loading weights" in result.output and str(tmp_path) in (out / "report.md").read_text()
    os.remove(tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(ValueError, match="lacks"):
        load_safetensors(build_model(arch), tmp_path)


def test_quality_numbers_order_and_perplexity(tiny):
    ids = torch.randint(0, 512, (4, 16), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = tiny(ids, tiny.new_cache(4, 16))
        results = {}
        for fmt in ("bf16", "int8", "int4"):
            q = quantize_model(tiny, fmt, compute_dtype=torch.float32)
            results[fmt] = compare_logits(ref, q(ids, q.new_cache(4, 16, torch.bfloat16)))
    assert compare_logits(ref, ref).kl_divergence == pytest.approx(0, abs=1e-12)
    assert results["bf16"].kl_divergence < results["int8"].kl_divergence < results["int4"].kl_divergence
    assert results["int8"].top1_agreement >= 0.9
    ppl = perplexity(tiny, list(range(40)), torch.float32, window=16)
    assert 1.0 < ppl < 1e6


def test_nonnegative_fits_when_timings_are_noisy():
    noisy = [PrefillPoint(8, 10.0, 800), PrefillPoint(16, 9.0, 1700), PrefillPoint(32, 12.0, 2600)]
    (a, b, c), clamped = fit_prefill_points(noisy)
    assert clamped and a >= 0 and b > 0 and c >= 0
    clean = [PrefillPoint(t, 1 + 0.1 * t + 0.001 * t * t, 0) for t in (8, 16, 32, 64)]
    (a, b, c), clamped = fit_prefill_points(clean)
    assert not clamped and a == pytest.approx(0.001) and b == pytest.approx(0.1)
    dec = [DecodePoint(1, 8, 5.0, 0), DecodePoint(2, 8, 4.0, 0), DecodePoint(1, 16, 4.5, 0), DecodePoint(2, 16, 6.0, 0)]
    (base, kv, seq), _ = fit_decode_points(dec)
    assert base > 0 and kv >= 0 and seq >= 0


# ---------------------------------------------------------------------------------------------
# a whole (short) run: profile.yaml, report.md, throughput.png
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_run():
    return profile(TINY, Settings(formats=["bf16", "fp8", "int8", "int4"], device="cpu", **FAST), echo=lambda s: None)


def test_short_run_measures_every_format(short_run):
    assert [r.fmt for r in short_run.formats] == ["bf16", "fp8", "int8", "int4"]
    for r in short_run.formats:
        assert r.weight_bytes == hand_bytes(r.fmt)
        assert r.kv_bytes_per_token == 2 * 2 * 2 * 64 * 2
        assert [p.input_tokens for p in r.prefill] == [8, 16, 32]
        assert {(p.batch, p.context) for p in r.decode} == {(1, 8), (2, 8), (1, 16), (2, 16)}
        assert all(p.step_ms > 0 and p.tokens_per_s > 0 for p in r.prefill + r.decode)
        assert r.kl_divergence is not None and 0 <= r.top1_agreement <= 1
    fp8 = next(r for r in short_run.formats if r.fmt == "fp8")
    assert any("no native fp8" in n for n in fp8.notes)
    assert "fp32" in short_run.reference


def test_outputs_round_trip(short_run, tmp_path):
    written = write_outputs(short_run, tmp_path)
    assert set(written) == {"profile", "plot", "report"}
    formats = load_profile_file(tmp_path / "profile.yaml")
    assert set(formats) == {"bf16", "fp8", "int8", "int4"}
    for r in short_run.formats:
        prof = formats[r.fmt]
        assert prof.weight_bytes == pytest.approx(r.weight_bytes, rel=1e-3)
        assert prof.kv_bytes_per_token == r.kv_bytes_per_token
        assert len(prof.prefill_points) == 3 and len(prof.decode_points) == 4
        assert prof.decode_step_ms(2, 16) > 0 and prof.prefill_step_ms(32) > 0
        assert "NOT representative" in prof.source
    report = (tmp_path / "report.md").read_text()
    assert "| int4 |" in report and "int4-awq" in report and "KL" in report and "top-1" in report
    assert (tmp_path / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_meta_run_writes_bytes_only(tmp_path):
    run = profile(from_catalog(load_catalog().model("mixtral-8x7b")), Settings(formats=["bf16", "int4"], device="meta"),
                  echo=lambda s: None)
    assert run.formats[0].weight_bytes == planner_weight_bytes(load_catalog().model("mixtral-8x7b"),
                                                               load_catalog().schemes["bf16"])
    written = write_outputs(run, tmp_path)
    assert set(written) == {"report"}
    assert "meta device" in report_markdown(run)


def test_tensor_parallel_rank_on_meta():
    model = load_catalog().model("llama-3.1-70b")
    run = profile(from_catalog(model), Settings(formats=["bf16"], device="meta", tensor_parallel_size=4),
                  echo=lambda s: None)
    planned = planner_weight_bytes(model, load_catalog().schemes["bf16"])
    # per rank x 4: replicated norms count 4 times, nothing else: within 0.01%
    assert abs(run.formats[0].weight_bytes - planned) / planned < 1e-4
    assert run.formats[0].kv_bytes_per_token == 2 * 80 * 8 * 128 * 2


def test_command_end_to_end(tmp_path):
    config = {"model_type": "mixtral", "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
              "num_key_value_heads": 1, "num_hidden_layers": 1, "vocab_size": 300, "num_local_experts": 2,
              "num_experts_per_tok": 1, "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    args = ["--config", str(tmp_path / "config.json"), "--formats", "bf16,int8", "--device", "cpu", "--out", str(out),
            "--prefill-lengths", "4,8,16", "--batches", "1,2", "--contexts", "4,8", "--prompts", "2",
            "--prompt-len", "8", "--repeats", "1", "--int4-symmetric"]
    result = CliRunner().invoke(profile_command, args)
    assert result.exit_code == 0, result.output
    assert "[int8] weight bytes" in result.output and "decode batch" in result.output  # progress lines
    assert set(load_profile_file(out / "profile.yaml")) == {"bf16", "int8"}
    assert (out / "report.md").exists() and (out / "throughput.png").exists()


def test_command_refuses_big_models_on_cpu_with_a_way_out(tmp_path):
    result = CliRunner().invoke(profile_command, ["--model", "llama-3.1-8b", "--device", "cpu", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "--scale-down" in result.output and "--device meta" in result.output
    result = CliRunner().invoke(profile_command, ["--model", "llama-3.1-8b", "--device", "meta", "--formats", "int4",
                                                  "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "int4-awq" in (tmp_path / "report.md").read_text()


def test_random_weights_with_text_skips_perplexity_and_says_so(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello world " * 20)
    run = profile(replace(TINY, layers=1), Settings(formats=["int8"], device="cpu", text_file=str(text), **FAST),
                  echo=lambda s: None)
    assert any("perplexity skipped" in n for n in run.notes)
    assert yaml.safe_load(report_markdown(run).split("\n")[0].lstrip("# ")) is not None
    assert isinstance(run, ProfileRun) and isinstance(build_model(TINY, device="meta"), Transformer)


def test_real_weights_and_text_give_perplexity(tmp_path, tiny, monkeypatch):
    from safetensors.torch import save_file  # noqa: PLC0415

    import llmd_operator.profile.run as run_module  # noqa: PLC0415

    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(tmp_path / "model.safetensors"))
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"w{i % 97}" for i in range(400)))

    class Encoded:  # what tokenizers.Tokenizer.encode returns, enough of it
        def __init__(self, ids):
            self.ids = ids

    class WordTokenizer:
        def encode(self, s):
            return Encoded([int(w[1:]) for w in s.split()])

    monkeypatch.setattr(run_module, "_tokenizer", lambda weights_dir: WordTokenizer())
    run = profile(TINY, Settings(formats=["int8", "int4"], device="cpu", weights_dir=str(tmp_path),
                                 text_file=str(text), **FAST), echo=lambda s: None)
    assert run.reference_perplexity and run.reference_perplexity > 1
    ppl = {r.fmt: r.perplexity for r in run.formats}
    assert ppl["int8"] == pytest.approx(run.reference_perplexity, rel=0.05)
    assert ppl["int4"] > 1
    assert any("tokens of the text" in n for n in run.notes)
    report = report_markdown(run)
    assert "reference perplexity" in report and f"{ppl['int8']:.3f}" in report
