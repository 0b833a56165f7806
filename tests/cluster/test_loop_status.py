"""The SLO loop's ticks against the real API server, with what Prometheus would say given directly: what one
tick remembers reaches the next, and the status the loop writes says what is true now."""

from __future__ import annotations

import json
import time

import pytest

from tests.cluster.conftest import apply, condition, get_json, kubectl, wait_for

TTFT_ITL = [{"name": "ttft_p95", "target": "500ms"}, {"name": "itl_p95", "target": "50ms"}]


@pytest.fixture
def loop_ticks(operator, namespace):
    """tick(at_s, rate) runs one SLO loop tick in this process for deployment `mem`, as if Prometheus said
    `rate` req/s of 1000-token prompts and 200-token answers, on time and within target."""
    from llmd_operator.catalog import load_catalog
    from llmd_operator.controller import kube
    from llmd_operator.slo import loop, observe

    catalog = load_catalog()
    start = time.time()

    def tick(at_s: float, rate: float) -> dict:
        now = start + at_s
        item = next(m for m in loop.managed_deployments(catalog) if m.body["metadata"]["namespace"] == namespace)
        said = {"request_rate": rate, "mean_input_tokens": 1000.0, "mean_output_tokens": 200.0, "ttft_p50_s": 0.1,
                "ttft_p95_s": 0.2, "itl_p50_s": 0.01, "itl_p95_s": 0.02, "last_sample_s": now}
        snapshot = observe.Snapshot(ok=True, deployment={(namespace, "mem"): said}, evaluated_at=now)
        nodes = {n["metadata"]["name"]: n for n in kube.list_raw("v1", "Node")}
        return loop._tick_one(item, None, snapshot, nodes, now, catalog)

    yield tick
    for uid in list(loop._memory):
        loop.forget(uid)


def mem_deployment(objectives: list[dict]) -> dict:
    return {"apiVersion": "inference.llm-d.io/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": "mem"},
            "spec": {"model": {"name": "llama-3.1-8b", "quantization": {"type": "fp8"}},
                     "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                     "scheduling": {"sloPolicy": {"objectives": objectives,
                                                  "scaling": {"minReplicas": 1, "maxReplicas": 12}}}}}


def replicas(namespace: str) -> int:
    return get_json("deploy", "mem-on-demand", "-n", namespace)["spec"]["replicas"]


def test_each_tick_builds_on_the_last_and_status_says_what_is_true_now(loop_ticks, namespace):
    apply(namespace, mem_deployment(TTFT_ITL))
    wait_for(lambda: condition(get_json("llmd", "mem", "-n", namespace), "Ready").get("status") == "True", 120, "mem Ready")

    grew = loop_ticks(0, 40.0)
    assert grew["changes"], grew
    peak = replicas(namespace)
    assert peak > 1
    # Busy again after the scale-down cooldown: nothing to change, so nothing is written to status...
    assert loop_ticks(200, 40.0)["changes"] == []
    # ...yet the next tick still knows the pool was needed 30 s ago: a load that fell a moment ago may be back
    # before a new replica could start (scale-down stabilization), so it holds.
    calm = loop_ticks(230, 1.0)
    assert calm["changes"] == [] and replicas(namespace) == peak, calm
    assert f"needed {peak} within the last 60 s" in calm["reason"]

    obj = get_json("llmd", "mem", "-n", namespace)
    spot = condition(obj, "SpotFallback")
    assert (spot["status"], spot["reason"]) == ("False", "SpotNotUsed"), spot  # no spot share: nothing to fall back from
    assert set(obj["status"]["sloScores"]) == {"ttft_p95", "itl_p95"}

    # An objective removed from the policy leaves no score behind.
    apply(namespace, mem_deployment(TTFT_ITL[:1]))
    wait_for(lambda: len(get_json("llmd", "mem", "-n", namespace)["spec"]["scheduling"]["sloPolicy"]["objectives"]) == 1,
             30, "the narrower policy")
    loop_ticks(260, 1.0)
    assert set(get_json("llmd", "mem", "-n", namespace)["status"]["sloScores"]) == {"ttft_p95"}


def test_the_loop_keeps_its_memory_in_a_configmap_the_deployment_owns_and_resumes_from_it(loop_ticks, operator,
                                                                                           namespace):
    from llmd_operator.slo import loop

    apply(namespace, mem_deployment(TTFT_ITL))
    wait_for(lambda: condition(get_json("llmd", "mem", "-n", namespace), "Ready").get("status") == "True", 120, "mem Ready")
    operator.stop()  # its own loop (no Prometheus: it holds) would save its memory of `mem` meanwhile
    try:
        grew = loop_ticks(0, 40.0)
        assert grew["changes"], grew
        peak = replicas(namespace)
        saved = get_json("configmap", "mem-slo-memory", "-n", namespace)
        owner = saved["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("LLMDeployment", "mem")
        assert saved["data"]["policy"] == "default"
        assert json.loads(saved["data"]["state.json"])["history"][-1][1] == 40.0   # the rate it saw
        assert "policyState" not in get_json("llmd", "mem", "-n", namespace)["status"]   # status stays readable

        loop.forget_all_memory()   # as after a restart, or when another replica led meanwhile
        assert loop_ticks(30, 40.0)["changes"] == []
        uid = get_json("llmd", "mem", "-n", namespace)["metadata"]["uid"]
        # the next tick built on the saved memory: the load it saw 30 s ago is in its history
        assert [rate for _, rate, _, _ in loop._memory[uid][1].history] == [40.0, 40.0]
    finally:
        operator.start()

    kubectl("delete", "llmd", "mem", "-n", namespace)
    wait_for(lambda: kubectl("get", "configmap", "mem-slo-memory", "-n", namespace, check=False).returncode != 0, 60,
             "the memory ConfigMap garbage-collected with its deployment")


def test_a_policy_timer_the_policy_dropped_is_dropped_from_status_too(operator, namespace):
    """Status is written whole per field: a key a map no longer has does not linger (a merge patch keeps it)."""
    from llmd_operator.api import llmdeployment
    from llmd_operator.controller import kube

    apply(namespace, mem_deployment(TTFT_ITL))
    wait_for(lambda: get_json("llmd", "mem", "-n", namespace).get("status"), 60, "a first status")
    operator.stop()  # its own loop would write this deployment's policyState meanwhile
    try:
        kubectl("patch", "llmd", "mem", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(
            {"status": {"policyState": {"policy": "threshold", "savedAt": 1,
                                        "state": {"condition_since_s": {"up0": 5.0, "down0": 7.0}}}}}))
        body = get_json("llmd", "mem", "-n", namespace)
        kube.write_status(llmdeployment, body, lambda current: {"policyState": {
            "policy": "threshold", "savedAt": 2, "state": {"condition_since_s": {"up0": 5.0}}}})
        state = get_json("llmd", "mem", "-n", namespace)["status"]["policyState"]["state"]
    finally:
        operator.start()
    assert state == {"condition_since_s": {"up0": 5.0}}
