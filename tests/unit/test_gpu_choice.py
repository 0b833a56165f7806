"""The planner picks the GPU product by cost per token at the deployment's SLO, among the products the
cluster's nodes offer for its nodeSelector."""

from __future__ import annotations

import re

import pytest

from llmd_operator.api.llmdeployment import LLMDeployment
from llmd_operator.planning import throughput
from llmd_operator.planning.plan import PlanOptions, plan_deployment
from llmd_operator.slo.profiles import default_profile

H100, A100_40, V100 = "NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-40GB", "Tesla-V100-SXM2-32GB"


def llmd(spec: dict) -> LLMDeployment:
    return LLMDeployment.model_validate({"metadata": {"name": "chat", "namespace": "team"},
                                         "spec": {"model": {"name": "llama-3.1-8b"}, **spec}})


def targets(ttft: str, itl: str) -> dict:
    return {"scheduling": {"sloPolicy": {"objectives": [{"name": "ttft_p95", "target": ttft, "weight": 0.5},
                                                         {"name": "itl_p95", "target": itl, "weight": 0.5}]}}}


def choice_note(plan) -> str:
    return next(n for n in plan.notes if n.startswith("GPU product chosen by cost per token"))


def dollars_per_million(note: str, product: str) -> float:
    return float(re.search(rf"{product} x\d+ \S+ \$([0-9.]+)/M output tokens", note).group(1))


class TestCostPerToken:
    def test_a_gpu_cheaper_per_hour_but_dearer_per_token_is_not_chosen(self, catalog):
        # gcp lists a V100 at $1.85/h and an A100-40GB at $2.93/h: the A100 serves ~4x the requests
        plan = plan_deployment(llmd({}), catalog, PlanOptions(provider="gcp"))
        assert plan.gpu.product == A100_40
        note = choice_note(plan)
        assert dollars_per_million(note, A100_40) < dollars_per_million(note, V100) / 2
        assert note.index(A100_40) < note.index(V100)  # cheapest first

    def test_a_gpu_that_cannot_meet_the_targets_is_never_chosen(self, catalog):
        plan = plan_deployment(llmd(targets("200ms", "20ms")), catalog)
        assert plan.gpu.product == H100
        note = choice_note(plan)
        assert "TTFT p95 200 ms, ITL p95 20 ms" in note  # the deployment's own targets
        assert f"{V100} x1 fp16 misses the targets" in note

    def test_the_spot_share_is_priced_at_the_spot_price(self, catalog):
        on_demand = choice_note(plan_deployment(llmd({}), catalog))
        spot = choice_note(plan_deployment(llmd({"resources": {"policies": {"spotPreference": "required"}}}), catalog))
        assert "100% on spot" in spot and "on spot" not in on_demand
        # H100: $2.50/h spot against $6.88/h on-demand, for the same requests per replica
        assert dollars_per_million(spot, H100) / dollars_per_million(on_demand, H100) == pytest.approx(2.5 / 6.88, rel=0.03)

    def test_a_pinned_gpu_is_kept_even_when_dearer_per_token(self, catalog):
        plan = plan_deployment(llmd({"nodeSelector": {"nvidia.com/gpu.product": V100}}), catalog)
        assert plan.gpu.product == V100


class TestClusterNodes:
    NODES = (
        {"nvidia.com/gpu.product": H100, "karpenter.sh/capacity-type": "spot"},
        {"nvidia.com/gpu.product": V100, "karpenter.sh/capacity-type": "spot", "cost-tier": "spot"},
        {"kubernetes.io/hostname": "cpu-0"},
    )

    def test_a_selector_that_names_no_product_gets_the_products_of_the_nodes_it_matches(self, catalog):
        plan = plan_deployment(llmd({"nodeSelector": {"cost-tier": "spot"}}), catalog, PlanOptions(gpu_nodes=self.NODES))
        assert plan.gpu.product == V100
        assert f"nodeSelector cost-tier=spot and the spot split: {V100}" in plan.notes[0]

    @pytest.mark.parametrize("nodes", [None, (), NODES[:1]], ids=["not-listed", "no-gpu-nodes", "none-match"])
    def test_without_matching_nodes_any_product_may_be_chosen(self, catalog, nodes):
        # a node provisioner (Karpenter) adds nodes for pending pods: no node yet is no limit
        plan = plan_deployment(llmd({"nodeSelector": {"cost-tier": "spot"}}), catalog, PlanOptions(gpu_nodes=nodes))
        assert plan.gpu.product == H100

    @pytest.mark.parametrize("preference, product", [("preferred", A100_40), ("required", H100)])
    def test_every_capacity_type_the_pool_runs_on_must_be_offered(self, catalog, preference, product):
        nodes = ({"nvidia.com/gpu.product": A100_40, "karpenter.sh/capacity-type": "spot", "pool": "a"},
                 {"nvidia.com/gpu.product": A100_40, "karpenter.sh/capacity-type": "on-demand", "pool": "a"},
                 {"nvidia.com/gpu.product": H100, "karpenter.sh/capacity-type": "spot", "pool": "a"})
        # preferred: up to 80% spot, the rest on-demand, and only the A100s have on-demand nodes here
        plan = plan_deployment(llmd({"nodeSelector": {"pool": "a"},
                                     "resources": {"policies": {"spotPreference": preference}}}),
                               catalog, PlanOptions(gpu_nodes=nodes))
        assert plan.gpu.product == product

    def test_each_pool_of_a_disaggregated_deployment_must_find_nodes(self, catalog):
        nodes = ({"nvidia.com/gpu.product": H100, "karpenter.sh/capacity-type": "on-demand", "role": "prefill"},
                 {"nvidia.com/gpu.product": A100_40, "karpenter.sh/capacity-type": "on-demand", "role": "prefill"},
                 {"nvidia.com/gpu.product": A100_40, "karpenter.sh/capacity-type": "on-demand", "role": "decode"})
        plan = plan_deployment(llmd({"serving": {"mode": "disaggregated",
                                                 "prefill": {"nodeSelector": {"role": "prefill"}},
                                                 "decode": {"nodeSelector": {"role": "decode"}}}}),
                               catalog, PlanOptions(gpu_nodes=nodes))
        assert plan.gpu.product == A100_40
        assert "nodeSelector role=prefill; role=decode" in plan.notes[0]

    def test_a_deployment_keeps_its_product_while_no_node_offers_one(self, catalog):
        # its V100 spot nodes were reclaimed: moving every replica to an H100 nobody selected helps no one
        options = PlanOptions(gpu_nodes=self.NODES[:1], current_gpu_product=V100)
        plan = plan_deployment(llmd({"nodeSelector": {"cost-tier": "spot"}}), catalog, options)
        assert plan.gpu.product == V100
        assert plan.notes[0] == f"no GPU node offers every pool now; keeping {V100}, the product it runs on"

    def test_nodes_that_offer_another_product_win_over_the_current_one(self, catalog):
        nodes = ({"nvidia.com/gpu.product": H100, "karpenter.sh/capacity-type": "on-demand", "pool": "a"},)
        options = PlanOptions(gpu_nodes=nodes, current_gpu_product=V100)
        assert plan_deployment(llmd({"nodeSelector": {"pool": "a"}}), catalog, options).gpu.product == H100

    def test_an_unpriced_product_on_the_nodes_can_be_chosen(self, catalog):
        nodes = ({"nvidia.com/gpu.product": "NVIDIA-L40S", "karpenter.sh/capacity-type": "on-demand", "pool": "l40s"},)
        plan = plan_deployment(llmd({"nodeSelector": {"pool": "l40s"}}), catalog, PlanOptions(gpu_nodes=nodes))
        assert plan.gpu.product == "NVIDIA-L40S" and plan.cost_per_hour is None


class TestReplicaThroughput:
    def test_tighter_targets_serve_fewer_requests_and_an_impossible_one_none(self):
        profile = default_profile("llama-3.1-8b", H100, "fp8")
        rates = [throughput.requests_per_second(profile, throughput.Workload(1155, 211, 0.5, itl), 2048)
                 for itl in (0.05, 0.02, 0.012)]
        assert rates[0] > rates[1] > rates[2] > 0
        # a 1155-token prompt takes longer than 10 ms to prefill even on an idle replica
        assert throughput.requests_per_second(profile, throughput.Workload(1155, 211, 0.01, 0.05), 2048) == 0

    def test_weight_only_fp8_is_sized_with_the_16_bit_profile(self, catalog):
        scheme = catalog.schemes["fp8-marlin"]
        assert throughput.profile_format(scheme) == "bf16"
        profile = throughput.replica_profile(catalog.model("llama-3.1-8b"), "NVIDIA-A100-SXM4-80GB", scheme, 1)
        assert profile is not None and profile.quantization == "bf16"
        plan = plan_deployment(llmd({"model": {"name": "llama-3.1-8b", "quantization": {"type": "fp8"}},
                                     "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}}), catalog)
        assert plan.scheme.name == "fp8-marlin"


class TestNodeList:
    def test_nodes_are_listed_at_most_every_30_s_and_a_refused_list_limits_nothing(self, monkeypatch):
        from kubernetes.client.rest import ApiException

        from llmd_operator.controller import kube

        calls = []

        def list_raw(api_version, kind, **params):
            calls.append(params)
            if len(calls) == 2:
                raise ApiException(status=403, reason="Forbidden")
            return [{"metadata": {"labels": {"nvidia.com/gpu.product": H100}}}]

        monkeypatch.setattr(kube, "list_raw", list_raw)
        monkeypatch.setattr(kube, "_gpu_nodes", {})
        assert kube.gpu_node_labels("nvidia.com/gpu.product", now=100.0) == ({"nvidia.com/gpu.product": H100},)
        assert kube.gpu_node_labels("nvidia.com/gpu.product", now=129.0) == ({"nvidia.com/gpu.product": H100},)
        assert calls == [{"label_selector": "nvidia.com/gpu.product"}]  # only nodes with a GPU product label
        assert kube.gpu_node_labels("nvidia.com/gpu.product", now=130.0) is None
        assert len(calls) == 2
