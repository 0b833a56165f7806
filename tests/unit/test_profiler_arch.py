"""The profiler's architecture layer (pure, no torch) and the command's import without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from llmd_operator.catalog import load_catalog
from llmd_operator.profile.arch import Arch, ArchError, from_api, from_catalog, from_file, from_hf_config

LLAMA_CONFIG = {  # meta-llama/Llama-3.1-8B-Instruct config.json (the fields the profiler reads)
    "model_type": "llama", "_name_or_path": "meta-llama/Llama-3.1-8B-Instruct", "hidden_size": 4096,
    "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0, "rms_norm_eps": 1e-05,
    "tie_word_embeddings": False, "attention_bias": False,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}


@pytest.mark.parametrize("name", sorted(load_catalog().models))
def test_shapes_reproduce_every_catalog_parameter_count(name):
    model = load_catalog().model(name)
    assert from_catalog(model).parameters == model.parameters


def test_hf_config_matches_the_catalog():
    arch = from_hf_config(LLAMA_CONFIG)
    assert arch.name == "Llama-3.1-8B-Instruct"
    assert arch.parameters == load_catalog().model("llama-3.1-8b").parameters
    assert arch.rope_scaling["rope_type"] == "llama3" and arch.rope_theta == 500000.0


def test_qwen2_config_has_bias_and_mixtral_has_experts():
    qwen = from_hf_config({**LLAMA_CONFIG, "model_type": "qwen2", "tie_word_embeddings": True})
    assert qwen.attention_bias and qwen.tied_embeddings
    mixtral = from_hf_config({**LLAMA_CONFIG, "model_type": "mixtral", "num_local_experts": 8,
                              "num_experts_per_tok": 2})
    assert mixtral.experts == 8 and mixtral.experts_per_token == 2
    with pytest.raises(ArchError, match="not supported"):
        from_hf_config({**LLAMA_CONFIG, "model_type": "gpt2"})


def test_api_architecture_camel_and_snake_case(tmp_path):
    camel = {"parameters": 1, "layers": 2, "hiddenSize": 256, "attentionHeads": 4, "kvHeads": 2,
             "maxContext": 2048, "intermediateSize": 512, "vocabSize": 1000}
    a = from_api("mine", camel)
    assert (a.head_dim, a.kv_heads, a.intermediate_size) == (64, 2, 512)
    snake = {"layers": 2, "hidden_size": 256, "attention_heads": 4, "kv_heads": 2, "intermediate_size": 512,
             "vocab_size": 1000}
    assert from_api("mine", snake).parameters == a.parameters
    with pytest.raises(ArchError, match="intermediateSize"):
        from_api("mine", {**camel, "intermediateSize": None})
    (tmp_path / "model.yaml").write_text(json.dumps({"name": "mine", "architecture": camel}))
    assert from_file(tmp_path / "model.yaml") == a
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    assert from_file(tmp_path / "config.json").layers == 32


def test_scale_down_keeps_the_family():
    for name in ("llama-3.1-8b", "mixtral-8x7b", "qwen2.5-7b"):
        big = from_catalog(load_catalog().model(name))
        small = big.scale_down()
        assert small.parameters < 100e6
        assert small.attention_heads // small.kv_heads == big.attention_heads // big.kv_heads
        assert small.attention_bias == big.attention_bias and small.tied_embeddings == big.tied_embeddings
        assert bool(small.experts) == bool(big.experts)
        assert small.hidden_size % 128 == 0 and small.intermediate_size % 128 == 0
        assert "scaled down from" in small.note
    tiny = from_catalog(load_catalog().model("llama-3.1-8b")).scaled(layers=1, hidden=128)
    assert tiny.q_dim <= 128 * 2 and tiny.attention_heads % (tiny.attention_heads // tiny.kv_heads) == 0


def test_shard_splits_heads_and_mlp():
    a = from_catalog(load_catalog().model("llama-3.1-70b"))
    s = a.shard(4)
    assert (s.attention_heads, s.kv_heads, s.intermediate_size) == (16, 2, 7168)
    assert a.shard(1) is a
    assert a.shard(16).kv_heads == 1  # fewer KV heads than ranks: replicated
    with pytest.raises(ArchError):
        Arch("odd", 1, 128, 3, 1, 32, 256, 100).shard(2)


def test_command_imports_without_torch_and_says_how_to_install(tmp_path):
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "safetensors"):
                    raise ImportError(f"No module named {name!r} (blocked)")
        sys.meta_path.insert(0, Block())
        from click.testing import CliRunner
        from llmd_operator.profile.command import profile
        r = CliRunner().invoke(profile, ["--model", "llama-3.1-8b", "--scale-down", "--out", sys.argv[1]])
        print(r.exit_code)
        print(r.output)
        assert "torch" not in sys.modules
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "1"
    assert "pip install 'llmd-operator[profile]'" in out.stdout
