"""migrationPolicy against the real API server and scheduler: a spot node that gets an interruption notice
(a taint) sends its replicas to other spot nodes when those have free GPUs (cost_aware), ordered before
the drain; with on_demand they go to on-demand. The loop's ticks run in this process with what Prometheus
would say given directly (steady load, latencies within target)."""

from __future__ import annotations

import time

import pytest

from tests.cluster.conftest import apply, condition, get_json, kubectl, wait_for

TAINT = "aws-node-termination-handler/spot-itn"


def scheduler(migration: str) -> dict:
    return {"apiVersion": "scheduler.llm-d.io/v1alpha1", "kind": "InferenceScheduler", "metadata": {"name": "spot-policy"},
            "spec": {"sloPolicy": {"objectives": [{"name": "ttft_p95", "target": "500ms"},
                                                  {"name": "itl_p95", "target": "50ms"}],
                                   "scaling": {"interval": "30s"}},
                     "costOptimization": {"spotInstancePolicy": {"maxSpotRatio": 0.8,
                                                                 "interruption": {"migrationPolicy": migration}}}}}


def deployment() -> dict:
    return {"apiVersion": "inference.llm-d.io/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": "mig"},
            "spec": {"model": {"name": "llama-3.1-8b", "quantization": {"type": "fp8"}},
                     "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                     "resources": {"policies": {"spotPreference": "preferred"}},
                     "schedulerName": "spot-policy",
                     "scaling": {"mode": "scheduler_managed", "constraints": {"minReplicas": 4, "maxReplicas": 6}}}}


def spot_pods(namespace: str) -> list[dict]:
    return get_json("pods", "-n", namespace, "-l", "llm-d.io/deployment=mig,llm-d.io/capacity-type=spot")["items"]


def replicas(namespace: str, capacity: str) -> int:
    return get_json("deploy", f"mig-{capacity}", "-n", namespace)["spec"]["replicas"]


@pytest.mark.parametrize("migration", ["cost_aware", "on_demand"])
def test_a_spot_interruption_notice_moves_replicas_where_the_migration_policy_says(operator, namespace, migration):
    apply(namespace, scheduler(migration), deployment())
    wait_for(lambda: condition(get_json("llmd", "mig", "-n", namespace), "Ready").get("status") == "True", 120,
             "mig Ready")
    spot, on_demand = replicas(namespace, "spot"), replicas(namespace, "on-demand")
    assert spot >= 1, (spot, on_demand)
    bound = wait_for(lambda: (lambda ps: ps if len(ps) == spot and all(p["spec"].get("nodeName") for p in ps) else None)(
        spot_pods(namespace)), 60, "every spot pod bound to a node")
    node = bound[0]["spec"]["nodeName"]
    on_node = sum(1 for p in bound if p["spec"]["nodeName"] == node)
    other_spot_nodes = {n["metadata"]["name"] for n in get_json("nodes", "-l", "karpenter.sh/capacity-type=spot,"
                                                                "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3")["items"]}
    assert other_spot_nodes - {node}, "the fleet needs a second H100 spot node"
    _tick_with_notice(operator, namespace, node, migration, spot, on_demand, on_node)


def _tick_with_notice(operator, namespace, node, migration, spot, on_demand, on_node):
    from llmd_operator.catalog import load_catalog
    from llmd_operator.controller import kube
    from llmd_operator.slo import loop, observe

    catalog = load_catalog()
    operator.stop()   # its loop (no Prometheus: it holds) would write its own conditions meanwhile
    kubectl("taint", "node", node, f"{TAINT}=true:NoSchedule")
    try:
        now = time.time()
        item = next(m for m in loop.managed_deployments(catalog) if m.body["metadata"]["namespace"] == namespace)
        said = {"request_rate": 4.0, "mean_input_tokens": 1000.0, "mean_output_tokens": 200.0, "ttft_p50_s": 0.1,
                "ttft_p95_s": 0.2, "itl_p50_s": 0.01, "itl_p95_s": 0.02, "last_sample_s": now}
        snapshot = observe.Snapshot(ok=True, deployment={(namespace, "mig"): said}, evaluated_at=now)
        nodes = {n["metadata"]["name"]: n for n in kube.list_raw("v1", "Node")}
        loop._tick_one(item, None, snapshot, nodes, now, catalog)
        fallback = condition(get_json("llmd", "mig", "-n", namespace), "SpotFallback")
        if migration == "cost_aware":
            # the replicas on the noticed node are ordered again on spot, and land on other spot nodes
            assert replicas(namespace, "spot") == spot + on_node and replicas(namespace, "on-demand") == on_demand
            assert (fallback["status"], fallback["reason"]) == ("False", "SpotMigration"), fallback
            assert f"spot node {node} is being drained ({TAINT})" in fallback["message"]
            moved = wait_for(lambda: (lambda ps: ps if len(ps) == spot + on_node and all(
                p["spec"].get("nodeName") for p in ps) else None)(spot_pods(namespace)), 60, "the new spot pods bound")
            new_nodes = {p["spec"]["nodeName"] for p in moved} - {node}
            assert new_nodes and all(n.startswith("h100-spot-") for n in new_nodes), new_nodes
            assert "SpotMigration" in kubectl("get", "events", "-n", namespace, "--field-selector",
                                              "reason=SpotMigration").stdout
        else:
            assert replicas(namespace, "on-demand") > on_demand, "on-demand replacements ordered"
            assert fallback["status"] == "True", fallback
    finally:
        kubectl("taint", "node", node, f"{TAINT}-", check=False)
        for uid in list(loop._memory):
            loop.forget(uid)
        operator.start()
