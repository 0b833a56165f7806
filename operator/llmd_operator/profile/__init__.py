"""The profiler: measure a model's weight bytes, KV bytes, speed and quantization error per weight format.

`llmd-operator profile` builds a decoder-only transformer (Llama family: Llama, Mistral, Mixtral, Qwen2)
with plain torch, quantizes its linear layers to int8 / int4 / fp8, measures, and writes a capacity
profile (`slo/profiles.py` format) plus a short report and a throughput plot. See docs/profiler.md.

torch is optional (`pip install 'llmd-operator[profile]'`): only `arch` and `command` import without it;
`model`, `quant`, `measure` and `run` import torch at the top and are imported lazily by the command.
"""

TORCH_MISSING = (
    "the profiler needs torch, safetensors and matplotlib: pip install 'llmd-operator[profile]'"
)
