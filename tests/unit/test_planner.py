"""The planner's numbers against hand computation, and its choices and refusals."""

from __future__ import annotations

import pytest

from llmd_operator.api.llmdeployment import LLMDeployment
from llmd_operator.planning import memory
from llmd_operator.planning.plan import PlanError, PlanOptions, may_be_loop_owned, plan_deployment

GIB = 2**30


def llmd(spec: dict, name: str = "t") -> LLMDeployment:
    return LLMDeployment.model_validate({"metadata": {"name": name, "namespace": "default"}, "spec": spec})


@pytest.mark.parametrize("model, dtype_bytes, expected", [
    # 2 x layers x kv_heads x head_dim x bytes
    ("llama-3.1-8b", 2, 2 * 32 * 8 * 128 * 2),      # 128 KiB
    ("llama-3.1-70b", 2, 2 * 80 * 8 * 128 * 2),     # 320 KiB
    ("llama-3.1-405b", 1, 2 * 126 * 8 * 128 * 1),   # fp8 KV
    ("codellama-13b", 2, 2 * 40 * 40 * 128 * 2),    # no grouped-query attention: 800 KiB
    ("qwen2.5-7b", 2, 2 * 28 * 4 * 128 * 2),
])
def test_kv_bytes_per_token_is_exact(catalog, model, dtype_bytes, expected):
    assert memory.kv_bytes_per_token(catalog.model(model), dtype_bytes) == expected


def test_weight_bytes_by_scheme_against_hand_computation(catalog):
    model = catalog.model("llama-3.1-8b")
    embeddings = 2 * 128256 * 4096                     # input embedding + untied LM head, kept 16-bit
    norms = (2 * 32 + 1) * 4096
    linear = 8030261248 - embeddings - norms
    assert linear == model.linear_parameters
    assert memory.weight_bytes(model, catalog.schemes["bf16"]) == 8030261248 * 2
    fp8 = memory.weight_bytes(model, catalog.schemes["fp8"])
    assert fp8 == (embeddings + norms) * 2 + linear
    int4 = memory.weight_bytes(model, catalog.schemes["int4-w4a16"])
    assert int4 == int((embeddings + norms) * 2 + linear * 0.5 + linear / 128 * 2)
    # Quantization shrinks only the linear layers: int4 is 35%, not 25%, of bf16 for this model.
    assert 0.34 < int4 / (8030261248 * 2) < 0.36


def test_seed_memory_formula_is_not_used(catalog):
    # The seed counts parameters x 4 bytes of KV per token (32 GB per token for 8B); the truth is 128 KiB.
    assert memory.kv_bytes_per_token(catalog.model("llama-3.1-8b"), 2) == 131072


def test_cheapest_gpu_that_fits_and_its_kv_capacity(catalog):
    plan = plan_deployment(llmd({"model": {"name": "llama-3.1-8b", "quantization": {"type": "int8"}}}), catalog)
    assert plan.gpu.product == "NVIDIA-A100-SXM4-40GB"  # cheapest per token of the GPUs with W8A8 int8 kernels
    assert plan.scheme.name == "int8-w8a8"
    assert plan.tensor_parallel_size == 1
    fit = plan.fit
    usable = int(42949672960 * 0.90)
    overhead = 2 * GIB + 65536 * 4096
    assert fit.kv_capacity_tokens == (usable - fit.weights_per_gpu_bytes - overhead) // 131072
    assert plan.cost_per_hour == pytest.approx(2.74)


def test_seventy_b_picks_the_smallest_tensor_parallel_size(catalog):
    plan = plan_deployment(llmd({"model": {"name": "llama-3.1-70b"},
                                 "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}), catalog)
    assert plan.tensor_parallel_size == 2
    assert plan.pools[0].engine_args[plan.pools[0].engine_args.index("--tensor-parallel-size") + 1] == "2"
    assert plan.cost_per_hour == pytest.approx(2 * 6.88)


def test_impossible_plan_names_numbers_and_ways_out(catalog):
    spec = {"model": {"name": "llama-3.1-70b", "quantization": {"type": "fp16"}},
            "resources": {"limits": {"nvidia.com/gpu": "1"}},
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}
    with pytest.raises(PlanError) as error:
        plan_deployment(llmd(spec), catalog)
    message = str(error.value)
    assert "weights 131.4 GiB" in message and "71.7 GiB usable per GPU" in message
    assert "resources nvidia.com/gpu: 2" in message  # more GPUs
    assert "quantization.type: int4" in message       # a smaller format, checked to fit


def test_int4_names_the_checkpoint_it_needs(catalog):
    plan = plan_deployment(llmd({"model": {"name": "llama-3.1-70b", "quantization": {"type": "int4"}},
                                 "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}), catalog)
    assert plan.checkpoint == "RedHatAI/Meta-Llama-3.1-70B-Instruct-quantized.w4a16"
    assert plan.tensor_parallel_size == 1
    with pytest.raises(PlanError, match="set spec.model.quantization.checkpoint"):
        plan_deployment(llmd({"model": {"name": "mistral-7b", "quantization": {"type": "int8"}}}), catalog)


def test_pinned_gpu_without_kernels_falls_back_to_16_bit_and_says_so(catalog):
    plan = plan_deployment(llmd({"model": {"name": "llama-3.1-8b", "quantization": {"type": "int8"}},
                                 "nodeSelector": {"gpu-type": "v100"}}), catalog)
    assert plan.gpu.product == "Tesla-V100-SXM2-32GB"
    assert plan.scheme.name == "fp16"
    assert "quantization fallback" in plan.notes[0] and "compute capability 7.0" in plan.notes[0]


@pytest.mark.parametrize("quantization, expected_args", [
    ("fp8", ["--quantization", "fp8"]),
    ("int8", ["--quantization", "compressed-tensors"]),
    ("bf16", ["--dtype", "bfloat16"]),
])
def test_engine_args(catalog, quantization, expected_args):
    plan = plan_deployment(llmd({"model": {"name": "llama-3.1-8b", "quantization": {"type": quantization, "kvCacheDtype": "fp8"}},
                                 "serving": {"batchSize": 64, "maxSequenceLength": 4096},
                                 "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}), catalog)
    args = plan.pools[0].engine_args
    joined = " ".join(args)
    assert " ".join(expected_args) in joined
    assert "--max-num-seqs 64" in joined and "--max-model-len 4096" in joined
    assert "--kv-cache-dtype fp8" in joined and "--gpu-memory-utilization 0.90" in joined


def test_batch_and_context_must_fit_the_kv_cache(catalog):
    # 256 sequences x 16k tokens x 128 KiB = 512 GiB of KV cache: eight 80 GB GPUs per replica.
    plan = plan_deployment(llmd({"model": {"name": "llama-3.1-8b"}, "serving": {"batchSize": 256, "maxSequenceLength": 16384}}), catalog)
    assert plan.pools[0].kv_capacity_tokens >= 256 * 16384
    assert plan.tensor_parallel_size == 8
    # Twice that fits nowhere in bf16; halving the KV cache does, and the error says so.
    with pytest.raises(PlanError, match=r"Ways out that fit: quantization.kvCacheDtype: fp8 \(8 x"):
        plan_deployment(llmd({"model": {"name": "llama-3.1-8b"}, "serving": {"batchSize": 256, "maxSequenceLength": 32768}}), catalog)


@pytest.mark.parametrize("spec_extra, spot, on_demand", [
    ({"replicas": 5, "resources": {"policies": {"spotPreference": "preferred", "maxSpotRatio": 0.6}}}, 3, 2),
    ({"replicas": 4, "resources": {"policies": {"spotPreference": "required"}}}, 4, 0),
    ({"replicas": 4, "resources": {"policies": {"spotPreference": "never"}}}, 0, 4),
    ({"replicas": 3, "nodeSelector": {"instance-type": "spot"}}, 3, 0),
    ({"replicas": 4}, 0, 4),
])
def test_spot_split(catalog, spec_extra, spot, on_demand):
    plan = plan_deployment(llmd({"model": {"name": "llama-3.1-8b"}, **spec_extra}), catalog)
    assert (plan.pools[0].spot_replicas, plan.pools[0].on_demand_replicas) == (spot, on_demand)


def test_scheduler_spot_ratio_applies_to_its_deployments(catalog):
    from llmd_operator.api.inferencescheduler import InferenceSchedulerSpec
    scheduler = InferenceSchedulerSpec.model_validate({"costOptimization": {"spotInstancePolicy": {"maxSpotRatio": 0.5}}})
    plan = plan_deployment(llmd({"model": {"name": "llama-3.1-8b"}, "replicas": 4, "schedulerName": "s"}), catalog,
                           PlanOptions(scheduler=scheduler))
    assert (plan.pools[0].spot_replicas, plan.pools[0].on_demand_replicas) == (2, 2)


@pytest.mark.parametrize("spec_extra, owner", [
    ({}, "spec"),
    ({"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4}}, "hpa"),
    ({"scaling": {"mode": "scheduler_managed"}, "schedulerName": "s"}, "slo-loop"),  # declared: the loop owns it, even before the scheduler exists
    ({"scheduling": {"sloPolicy": {"objectives": [{"name": "ttft_p95", "target": "500ms"}]}}}, "slo-loop"),
    ({"scaling": {"mode": "scheduler_managed", "constraints": {"minReplicas": 2, "maxReplicas": 9}},
      "scheduling": {"sloPolicy": {}}}, "slo-loop"),
])
def test_one_owner_per_replica_count(catalog, spec_extra, owner):
    spec = {"model": {"name": "llama-3.1-8b"}, **spec_extra}
    plan = plan_deployment(llmd(spec), catalog)
    assert plan.pools[0].replicas_owner == owner
    # The SLO loop skips specs this says no to without planning them: it must never say no to a loop-owned one.
    assert may_be_loop_owned(spec) or owner != "slo-loop"


@pytest.mark.parametrize("operator, given, applied", [("Lt", "2.0", "2"), ("Lt", "1.5", "2"), ("Gt", "1.5", "1"), ("Gt", "3", "3")])
def test_gt_lt_affinity_bounds_become_equivalent_integers(catalog, operator, given, applied):
    expression = {"key": "cost-per-hour", "operator": operator, "values": [given]}
    plan = plan_deployment(llmd({"model": {"name": "llama-3.1-8b"}, "affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 60, "preference": {"matchExpressions": [expression]}}]}}}), catalog)
    preferred = plan.pools[0].affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred[0]["preference"]["matchExpressions"][0]["values"] == [applied]
    assert any(f"{operator} {given} applied as {operator} {applied}" in n for n in plan.notes) is (given != applied)
