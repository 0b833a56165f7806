"""The objects the renderer builds for each kind of spec."""

from __future__ import annotations

import json

import pytest

from llmd_operator.api.documents import parse
from llmd_operator.api.llmdeployment import LLMDeployment
from llmd_operator.planning.plan import plan_deployment
from llmd_operator.render import render_children
from tests.conftest import seed_documents


def render(catalog, spec: dict, convention: str = "karpenter", name: str = "chat"):
    llmd = LLMDeployment.model_validate({"metadata": {"name": name, "namespace": "team"}, "spec": spec})
    return render_children(llmd, plan_deployment(llmd, catalog), catalog, convention)


def by_kind(objects, kind):
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def required_expressions(deployment):
    terms = deployment["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return [e for t in terms for e in t["matchExpressions"]]


def test_static_monolithic_spot_split_is_two_deployments_with_exact_replicas(catalog):
    objects = render(catalog, {"model": {"name": "llama-3.1-8b"}, "replicas": 5,
                               "resources": {"policies": {"spotPreference": "preferred", "maxSpotRatio": 0.6}}})
    workloads = by_kind(objects, "Deployment")
    assert {n: w["spec"]["replicas"] for n, w in workloads.items()} == {"chat-spot": 3, "chat-on-demand": 2}
    spot = required_expressions(workloads["chat-spot"])
    assert {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]} in spot
    assert {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]} in spot  # the cheapest per token at the SLO
    on_demand = required_expressions(workloads["chat-on-demand"])
    assert {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]} in on_demand
    assert set(by_kind(objects, "Service")) == {"chat"}
    dotted = render(catalog, {"model": {"name": "llama-3.1-8b"}}, name="llama-3.1-8b-chat")
    assert set(by_kind(dotted, "Service")) == {"llama-3-1-8b-chat"}  # a Service name is a DNS-1035 label
    assert set(by_kind(objects, "PodDisruptionBudget")) == {"chat"}


@pytest.mark.parametrize("convention, spot_expression, toleration_key", [
    ("gke", {"key": "cloud.google.com/gke-spot", "operator": "In", "values": ["true"]}, "cloud.google.com/gke-spot"),
    ("eks", {"key": "eks.amazonaws.com/capacityType", "operator": "In", "values": ["SPOT"]}, None),
    ("aks", {"key": "kubernetes.azure.com/scalesetpriority", "operator": "In", "values": ["spot"]}, "kubernetes.azure.com/scalesetpriority"),
    ("seed", {"key": "instance-type", "operator": "In", "values": ["spot"]}, "spot-instance"),
])
def test_capacity_type_conventions(catalog, convention, spot_expression, toleration_key):
    objects = render(catalog, {"model": {"name": "llama-3.1-8b"}, "replicas": 2,
                               "resources": {"policies": {"spotPreference": "required"}}}, convention)
    (spot,) = by_kind(objects, "Deployment").values()
    assert spot_expression in required_expressions(spot)
    keys = [t.get("key") for t in spot["spec"]["template"]["spec"]["tolerations"]]
    assert "nvidia.com/gpu" in keys
    if toleration_key:
        assert toleration_key in keys


def test_user_placement_is_merged_never_dropped(catalog):
    user_affinity = {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "preference": {"matchExpressions": [{"key": "cost-tier", "operator": "In", "values": ["low"]}]}}]},
        "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    objects = render(catalog, {"model": {"name": "llama-3.1-8b"}, "nodeSelector": {"team": "ml"},
                               "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                               "affinity": user_affinity})
    (workload,) = by_kind(objects, "Deployment").values()
    pod = workload["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"team": "ml"}
    assert {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    expressions = required_expressions(workload)
    assert {"key": "zone", "operator": "In", "values": ["a"]} in expressions
    assert any(e["key"] == "nvidia.com/gpu.product" for e in expressions)
    assert pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 50
    assert "podAffinity" in pod["affinity"]


def test_hpa_owned_pools_leave_replicas_out_and_get_windows(catalog):
    seed = {d.body["metadata"]["name"]: d for d in seed_documents()}
    llmd = parse(seed["llama-3.1-8b-disaggregated"])
    objects = render_children(llmd, plan_deployment(llmd, catalog), catalog, "karpenter")
    workloads = by_kind(objects, "Deployment")
    assert set(workloads) == {"llama-3.1-8b-disaggregated-prefill-spot", "llama-3.1-8b-disaggregated-prefill-on-demand",
                              "llama-3.1-8b-disaggregated-decode-on-demand"}
    assert all("replicas" not in w["spec"] for w in workloads.values())
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    decode = hpas["llama-3.1-8b-disaggregated-decode-on-demand"]["spec"]
    assert (decode["minReplicas"], decode["maxReplicas"]) == (2, 12)
    assert decode["behavior"] == {"scaleUp": {"stabilizationWindowSeconds": 15}, "scaleDown": {"stabilizationWindowSeconds": 60}}
    assert decode["metrics"][0]["pods"]["metric"]["name"] == "vllm_inter_token_latency_p95_seconds"
    prefill_spot = hpas["llama-3.1-8b-disaggregated-prefill-spot"]["spec"]
    prefill_on_demand = hpas["llama-3.1-8b-disaggregated-prefill-on-demand"]["spec"]
    assert prefill_spot["maxReplicas"] + prefill_on_demand["maxReplicas"] == 6  # the pool's max, split by the spot ratio
    assert prefill_spot["metrics"][0]["pods"]["target"]["averageValue"] == "85"


def test_disaggregated_pools_get_nixl_and_roles(catalog):
    objects = render(catalog, {"model": {"name": "llama-3.1-8b"}, "serving": {"mode": "disaggregated",
                                                                               "prefill": {"replicas": 1}, "decode": {"replicas": 2}}})
    workloads = by_kind(objects, "Deployment")
    for name, role in (("chat-prefill-on-demand", "prefill"), ("chat-decode-on-demand", "decode")):
        pod = workloads[name]["spec"]["template"]
        assert pod["metadata"]["labels"]["llm-d.ai/role"] == role
        container = pod["spec"]["containers"][0]
        config = container["args"][container["args"].index("--kv-transfer-config") + 1]
        assert json.loads(config) == {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
        env = {e["name"]: e for e in container["env"]}
        assert env["VLLM_NIXL_SIDE_CHANNEL_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    services = by_kind(objects, "Service")
    assert services["chat"]["spec"]["selector"] == {"llm-d.io/deployment": "chat", "llm-d.io/entrypoint": "true"}
    assert services["chat-prefill"]["spec"]["selector"]["llm-d.ai/role"] == "prefill"


def test_loop_owned_pools_keep_an_on_demand_fallback_at_zero(catalog):
    objects = render(catalog, {"model": {"name": "llama-3.1-8b"}, "replicas": 2,
                               "resources": {"policies": {"spotPreference": "required"}},
                               "scheduling": {"sloPolicy": {"objectives": [{"name": "ttft_p95", "target": "500ms"}]}}})
    workloads = by_kind(objects, "Deployment")
    assert set(workloads) == {"chat-spot", "chat-on-demand"}
    assert all("replicas" not in w["spec"] for w in workloads.values())
    assert workloads["chat-spot"]["metadata"]["annotations"]["llm-d.io/initial-replicas"] == "2"
    assert workloads["chat-on-demand"]["metadata"]["annotations"]["llm-d.io/initial-replicas"] == "0"


def test_gpu_resources_and_probes(catalog):
    objects = render(catalog, {"model": {"name": "llama-3.1-70b"}, "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                               "resources": {"requests": {"memory": "64Gi", "cpu": "8"}}})
    (workload,) = by_kind(objects, "Deployment").values()
    container = workload["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"] == {"memory": "64Gi", "cpu": "8", "nvidia.com/gpu": "2"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert workload["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert container["image"].startswith("vllm/vllm-openai:")
