"""Capacity profiles: the shipped files load, step times grow with load, capacities behave."""

import copy

from dataclasses import replace

import pytest
import yaml

from llmd_operator.slo import profiles as P

H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"


@pytest.mark.parametrize("path", P.shipped_profiles(), ids=lambda p: p.name)
def test_every_shipped_profile_loads_with_sources_and_points(path):
    formats = P.load_profile_file(path)
    assert formats
    for prof in formats.values():
        assert prof.source and prof.date
        assert prof.weight_bytes > 0 and prof.kv_bytes_per_token > 0 and prof.kv_capacity_tokens > 0
        assert prof.prefill_points and prof.decode_points


@pytest.mark.parametrize("model,gpu,tp,fmts", [
    ("llama-3.1-8b", H100, 1, ["bf16", "fp8", "int8", "int4"]),
    ("llama-3.1-8b", A100, 1, ["bf16", "int8", "int4"]),
    ("llama-3.1-70b", H100, 4, ["bf16", "fp8"]),
    ("llama-3.1-70b", H100, 2, ["int4"]),
])
def test_default_profiles_ship_for_the_common_cases(model, gpu, tp, fmts):
    for f in fmts:
        prof = P.default_profile(model, gpu, f, tp)
        assert not prof.source.startswith("derived: no shipped"), prof.source


@pytest.mark.parametrize("fmt", ["bf16", "fp8", "int8", "int4"])
def test_step_times_rise_with_tokens_batch_and_context(fmt):
    prof = P.default_profile("llama-3.1-8b", H100, fmt)
    pre = [prof.prefill_step_ms(t) for t in (128, 512, 2048, 8192, 32768)]
    assert pre == sorted(pre) and len(set(pre)) == len(pre)
    for ctx in (512, 4096):
        dec = [prof.decode_step_ms(b, ctx) for b in (1, 8, 64, 256)]
        assert dec == sorted(dec) and len(set(dec)) == len(dec)
    assert prof.decode_step_ms(32, 8192) > prof.decode_step_ms(32, 1024)


def test_public_anchor_figures():
    fp8 = P.default_profile("llama-3.1-8b", H100, "fp8")
    bf16 = P.default_profile("llama-3.1-8b", H100, "bf16")
    assert fp8.prefill_step_ms(1000) == pytest.approx(4.21e-7 * 1e6 + 1.518e-2 * 1000 + 16.5)
    assert fp8.decode_step_ms(1, 0) == pytest.approx(5.74, abs=0.05)       # Dynamo mocker at u=0
    assert 3400 <= fp8.max_decode_tokens_per_s(1024, 0.05) <= 9000        # public 3.4k-8k tok/s
    assert fp8.weight_bytes == pytest.approx(bf16.weight_bytes / 2)
    assert 1.2 < bf16.prefill_step_ms(4096) / fp8.prefill_step_ms(4096) <= 1.6


def test_capacities_fall_as_targets_tighten_and_inputs_grow():
    prof = P.default_profile("llama-3.1-8b", H100, "fp8")
    assert prof.max_decode_tokens_per_s(1024, 0.02) < prof.max_decode_tokens_per_s(1024, 0.05)
    assert prof.max_decode_batch(8192, 0.05) < prof.max_decode_batch(1024, 0.05)
    assert prof.max_decode_batch(100_000, 1.0) * 100_000 <= prof.kv_capacity_tokens
    assert prof.max_prefill_tokens_per_s(1024, 0.2) < prof.max_prefill_tokens_per_s(1024, 1.0)
    assert prof.max_prefill_tokens_per_s(200_000, 0.5) == 0.0   # cannot meet the target at all


def test_a100_is_slower_than_h100_and_fp8_needs_hopper():
    h, a = P.default_profile("llama-3.1-8b", H100, "bf16"), P.default_profile("llama-3.1-8b", A100, "bf16")
    assert a.prefill_step_ms(2048) > h.prefill_step_ms(2048)
    assert a.decode_step_ms(32, 1024) > h.decode_step_ms(32, 1024)
    with pytest.raises(P.ProfileError, match="does not support fp8"):
        P.default_profile("llama-3.1-8b", A100, "fp8")


def test_fallback_derives_and_says_so():
    prof = P.default_profile("llama-3.1-8b", "NVIDIA-L40S", "fp8")
    assert prof.source.startswith("derived") and "no shipped profile" in prof.source
    with pytest.raises(P.ProfileError, match="does not fit"):
        P.derive_profile("llama-3.1-405b", "NVIDIA-L40S", "bf16", 1)
    with pytest.raises(P.ProfileError, match="unknown-model"):
        P.default_profile("unknown-model", H100, "fp8")


def test_a_catalog_model_without_reference_data_is_derived_from_its_architecture():
    prof = P.default_profile("Qwen/Qwen2.5-7B-Instruct", H100, "fp8")
    assert prof.model == "qwen2.5-7b" and "architecture of qwen2.5-7b from the model catalog" in prof.source
    assert prof.kv_bytes_per_token == 2 * 28 * 4 * 128 * 2            # K and V, 28 layers, 4 KV heads of 128, bf16
    llama = P.default_profile("llama-3.1-8b", "NVIDIA-L40S", "fp8")   # derived the same way, 8.0B params
    qwen = P.default_profile("qwen2.5-7b", "NVIDIA-L40S", "fp8")      # 7.6B params, half the KV per token
    assert qwen.prefill_b < llama.prefill_b and qwen.decode_per_kv_token_ms < llama.decode_per_kv_token_ms / 2


def test_a_mixture_of_experts_computes_with_its_routed_experts_and_reads_them_all():
    moe = P.default_profile("mixtral-8x7b", H100, "bf16", 2)
    dense_share = 46702792704 - 32 * 6 * 3 * 4096 * 14336            # 2 of 8 experts per token: 12.9B
    llama_b = P.derive_profile("llama-3.1-8b", H100, "bf16", 2).prefill_b
    assert moe.prefill_b == pytest.approx(llama_b * dense_share / 8.03e9)
    assert moe.weight_bytes == 46702792704 * 2


def test_an_architecture_the_user_described_is_profiled_too():
    from llmd_operator.catalog.loader import load_catalog
    acme = replace(load_catalog().model("llama-3.1-8b"), name="acme-chat-8b", aliases=())
    prof = P.default_profile("acme-chat-8b", H100, "fp8", architecture=acme)
    assert prof.model == "acme-chat-8b" and "architecture of acme-chat-8b" in prof.source
    with pytest.raises(P.ProfileError, match="set spec.model.architecture"):
        P.default_profile("acme-chat-8b", H100, "fp8")


def test_h200_decodes_faster_than_h100_at_the_same_prefill_compute():
    h100 = P.derive_profile("llama-3.1-70b", H100, "fp8", 4)
    h200 = P.derive_profile("llama-3.1-70b", "NVIDIA-H200", "fp8", 4)
    assert h200.prefill_b == pytest.approx(h100.prefill_b)
    assert h200.decode_step_ms(64, 4096) < h100.decode_step_ms(64, 4096)
    assert h200.kv_capacity_tokens > 2 * h100.kv_capacity_tokens


def _doc():
    path = P.PROFILE_DIR / P.profile_filename("llama-3.1-8b", H100, 1)
    return yaml.safe_load(path.read_text())


def test_points_only_profile_is_fitted(tmp_path):
    doc = _doc()
    for f in doc["formats"].values():
        f["prefill"].pop("fit")
        f["decode"].pop("fit")
    p = tmp_path / "x.yaml"
    p.write_text(yaml.safe_dump(doc))
    fitted = P.load_profile(p, "fp8")
    ref = P.default_profile("llama-3.1-8b", H100, "fp8")
    for t in (512, 4096):
        assert fitted.prefill_step_ms(t) == pytest.approx(ref.prefill_step_ms(t), rel=0.02)
    assert fitted.decode_step_ms(64, 2048) == pytest.approx(ref.decode_step_ms(64, 2048), rel=0.02)


@pytest.mark.parametrize("mutate,msg", [
    (lambda d: d.pop("source"), "source"),
    (lambda d: d.__setitem__("kind", "Other"), "kind"),
    (lambda d: d["formats"]["fp8"].pop("kv_bytes_per_token"), "kv_bytes_per_token"),
    (lambda d: d["formats"]["fp8"]["decode"].__setitem__("points", []), "points"),
    (lambda d: d["formats"]["fp8"]["decode"]["fit"].__setitem__("per_kv_token_ms", -1), "non-negative"),
    (lambda d: d["formats"].__setitem__("fp3", copy.deepcopy(d["formats"]["fp8"])), "unknown format"),
])
def test_malformed_profiles_are_refused(tmp_path, mutate, msg):
    doc = _doc()
    mutate(doc)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(P.ProfileError, match=msg):
        P.load_profile_file(p)


def test_prices_are_dated_with_sources():
    pr = P.gpu_hour_prices(H100)
    assert pr["on_demand"] > pr["spot"] > 0 and pr["source"] and pr["date"]
