"""The operator against a real API server, controllers and scheduler, with KWOK fake GPU nodes."""

from __future__ import annotations

import copy
import json
import time

import pytest

from tests.cluster.conftest import apply, condition, get_json, kubectl, operator_writes, wait_for
from tests.conftest import seed_documents

READY_TIMEOUT = 120


def seed(name: str) -> dict:
    return copy.deepcopy(next(d.body for d in seed_documents() if d.body["metadata"]["name"] == name))


def llmd(namespace: str, name: str) -> dict:
    return get_json("llmd", name, "-n", namespace)


def ready(namespace: str, name: str):
    obj = llmd(namespace, name)
    cond = condition(obj, "Ready")
    return obj if cond.get("status") == "True" and obj["status"].get("observedGeneration") == obj["metadata"]["generation"] else None


def children(namespace: str, name: str, kind: str = "deploy,hpa,pdb,svc") -> list[dict]:
    return get_json(kind, "-n", namespace, "-l", f"llm-d.io/deployment={name}")["items"]


def nodes() -> dict[str, dict]:
    return {n["metadata"]["name"]: n for n in get_json("nodes")["items"]}


def test_every_seed_example_reconciles_onto_the_right_nodes(operator, namespace):
    scheduler = seed("cost-optimized-scheduler")  # stays in llm-d-system: found from another namespace
    kubectl("apply", "--server-side", "-f", "-", input_text=__import__("yaml").safe_dump(scheduler))
    names = ["llama-3.1-8b-scheduled", "llama-3.1-8b-disaggregated", "llama-3.1-8b-optimized", "analytics-llm-initial"]
    apply(namespace, *[seed(n) for n in names])
    fleet = nodes()
    for name in names:
        obj = wait_for(lambda: ready(namespace, name), READY_TIMEOUT, f"{name} Ready")
        # No finalizer, loop-owned or not: deletion must never wait for the operator to be up.
        assert not obj["metadata"].get("finalizers"), obj["metadata"].get("finalizers")
        product = obj["status"]["plan"]["gpuProduct"]
        owned = children(namespace, name)
        assert owned, f"{name} has no children"
        for child in owned:
            refs = child["metadata"].get("ownerReferences") or []
            assert [(r["kind"], r["name"], r["controller"]) for r in refs] == [("LLMDeployment", name, True)]
        pods = get_json("pods", "-n", namespace, "-l", f"llm-d.io/deployment={name}")["items"]
        assert pods, f"{name} has no pods"
        spot_pods = 0
        for pod in pods:
            node = fleet[pod["spec"]["nodeName"]]["metadata"]["labels"]
            assert node.get("nvidia.com/gpu.product") == product, (name, pod["metadata"]["name"], node)
            capacity = pod["metadata"]["labels"]["llm-d.io/capacity-type"]
            assert node["karpenter.sh/capacity-type"] == capacity, (name, pod["metadata"]["name"])
            spot_pods += capacity == "spot"
        pools = obj["status"]["pools"]
        assert spot_pods == sum(p["spotReplicas"] for p in pools)
    scheduled = llmd(namespace, "llama-3.1-8b-scheduled")
    assert scheduled["status"]["scheduler"] == "llm-d-system/cost-optimized-scheduler"
    used = wait_for(lambda: get_json("infsched", "cost-optimized-scheduler", "-n", "llm-d-system")["status"].get("deployments"),
                    30, "the scheduler to count its deployments")
    assert used >= 1
    fallback = llmd(namespace, "analytics-llm-initial")
    assert "quantization fallback" in condition(fallback, "Planned")["message"]
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "reason=QuantizationFallback").stdout
    assert "analytics-llm-initial" in events


def static_deployment(name: str, replicas: int = 2, **spec) -> dict:
    return {"apiVersion": "inference.llm-d.io/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": "llama-3.1-8b", "quantization": {"type": "int8"}}, "replicas": replicas,
                     "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, **spec}}


def too_big(name: str, replicas: int) -> dict:
    """llama-3.1-70b in fp16 limited to one GPU: it cannot fit."""
    return static_deployment(name, replicas=replicas, model={"name": "llama-3.1-70b", "quantization": {"type": "fp16"}},
                             resources={"limits": {"nvidia.com/gpu": "1"}})


def plan_refused(namespace: str, name: str) -> dict | None:
    cond = condition(llmd(namespace, name), "Ready")
    return cond if cond.get("reason") == "PlanImpossible" else None


def test_static_replicas_are_put_back(operator, namespace):
    apply(namespace, static_deployment("chat", replicas=2))
    wait_for(lambda: ready(namespace, "chat"), READY_TIMEOUT, "chat Ready")
    kubectl("scale", "deployment", "chat-on-demand", "-n", namespace, "--replicas=5")
    wait_for(lambda: get_json("deploy", "chat-on-demand", "-n", namespace)["spec"]["replicas"] == 2, 30,
             "the operator to put replicas back to 2")


def test_hpa_owned_replicas_are_not_fought(operator, namespace):
    apply(namespace, static_deployment("auto", replicas=1, autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 6}))
    wait_for(lambda: ready(namespace, "auto"), READY_TIMEOUT, "auto Ready")
    assert [h["metadata"]["name"] for h in children(namespace, "auto", "hpa")] == ["auto-on-demand"]
    # As the HPA would: move replicas through the scale subresource, then make the operator reconcile.
    kubectl("scale", "deployment", "auto-on-demand", "-n", namespace, "--replicas=3")
    kubectl("annotate", "llmd", "auto", "-n", namespace, "example.com/touch=1")
    wait_for(lambda: ready(namespace, "auto"), READY_TIMEOUT, "auto Ready with 3 replicas")
    assert get_json("deploy", "auto-on-demand", "-n", namespace)["spec"]["replicas"] == 3


def test_updates_roll_children_and_leave_no_orphans(operator, namespace):
    apply(namespace, static_deployment("roll", replicas=1))
    wait_for(lambda: ready(namespace, "roll"), READY_TIMEOUT, "roll Ready")
    changed = static_deployment("roll", replicas=1)
    changed["spec"]["model"]["quantization"]["type"] = "int4"
    apply(namespace, changed)
    def int4_args():
        args = get_json("deploy", "roll-on-demand", "-n", namespace)["spec"]["template"]["spec"]["containers"][0]["args"]
        return "RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w4a16" in args
    wait_for(int4_args, 30, "the Deployment to serve the int4 checkpoint")
    wait_for(lambda: ready(namespace, "roll"), READY_TIMEOUT, "roll Ready after int8 -> int4")
    disaggregated = static_deployment("roll", replicas=1)
    disaggregated["spec"]["serving"] = {"mode": "disaggregated", "prefill": {"replicas": 1}, "decode": {"replicas": 2}}
    apply(namespace, disaggregated)
    wait_for(lambda: ready(namespace, "roll"), READY_TIMEOUT, "roll Ready after monolithic -> disaggregated")
    names = sorted(d["metadata"]["name"] for d in children(namespace, "roll", "deploy"))
    assert names == ["roll-decode-on-demand", "roll-prefill-on-demand"]
    assert sorted(s["metadata"]["name"] for s in children(namespace, "roll", "svc")) == ["roll", "roll-prefill"]
    wait_for(lambda: len(get_json("pods", "-n", namespace, "-l", "llm-d.io/deployment=roll")["items"]) == 3, 60,
             "only the new pods to remain")


def test_deleting_the_llmdeployment_removes_everything(operator, namespace):
    apply(namespace, static_deployment("gone", replicas=1))
    wait_for(lambda: ready(namespace, "gone"), READY_TIMEOUT, "gone Ready")
    series = f'namespace="{namespace}",pool="monolithic"'
    assert series in operator.metrics() and f'llm_cost_total{{deployment="gone",namespace="{namespace}"}}' in operator.metrics()
    kubectl("delete", "llmd", "gone", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(lambda: not children(namespace, "gone") and not get_json(
        "pods", "-n", namespace, "-l", "llm-d.io/deployment=gone")["items"], 60, "garbage collection of every child")
    # Its metrics go too: no replicas reported, and llm_cost no longer counts dollars for it.
    wait_for(lambda: f'namespace="{namespace}"' not in operator.metrics(), 30, "the operator to drop its series")


@pytest.mark.parametrize("spec, message", [
    ({"model": {"name": "llama-3.1-8b"}, "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
     "minReplicas must be less than or equal to maxReplicas"),
    ({"model": {"name": "llama-3.1-8b"}, "resources": {"policies": {"maxSpotRatio": 1.5}}}, "maxSpotRatio"),
    ({"model": {"name": "llama-3.1-8b"}, "replicaz": 2}, 'unknown field "spec.replicaz"'),
    ({"model": {"name": "llama-3.1-8b", "quantization": {"type": "int3"}}}, "Unsupported value: \"int3\""),
], ids=["cel-min-max", "spot-ratio", "unknown-field", "enum"])
def test_bad_resources_are_refused_at_apply(cluster, namespace, spec, message):
    body = {"apiVersion": "inference.llm-d.io/v1alpha1", "kind": "LLMDeployment",
            "metadata": {"name": "bad", "namespace": namespace}, "spec": spec}
    result = kubectl("apply", "-f", "-", input_text=__import__("yaml").safe_dump(body), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_impossible_plan_is_not_ready_and_builds_nothing(operator, namespace):
    apply(namespace, too_big("huge", replicas=1))
    cond = wait_for(lambda: plan_refused(namespace, "huge"), 30, "Ready=False PlanImpossible")
    assert cond["status"] == "False"
    assert "weights 131.4 GiB" in cond["message"] and "resources nvidia.com/gpu: 2" in cond["message"]
    assert children(namespace, "huge") == []


def test_restart_converges_duplicates_nothing_and_idle_writes_nothing(operator, namespace, cluster):
    apply(namespace, static_deployment("steady", replicas=2), static_deployment("later", replicas=1))
    operator.stop()  # mid-way: maybe before, maybe after some children exist
    operator.start()
    for name in ("steady", "later"):
        wait_for(lambda: ready(namespace, name), READY_TIMEOUT, f"{name} Ready after a restart")
        deployments = children(namespace, name, "deploy")
        assert len(deployments) == 1 and len(children(namespace, name, "svc")) == 1
    assert cluster["audit_log"] is not None, "the local cluster writes an audit log; e2e/cluster.sh audit-log names it"
    # Idle means nothing changes: earlier tests' namespaces finish going away (the operator rightly records
    # that, e.g. a scheduler losing a user), pods settle, then the operator's writes are counted for a minute.
    wait_for(lambda: not [n for n in get_json("namespaces")["items"] if n["status"].get("phase") == "Terminating"],
             300, "earlier tests' namespaces to finish deleting")
    time.sleep(5)
    quiet_since = time.time()
    time.sleep(60)
    writes = operator_writes(cluster["audit_log"], quiet_since)
    assert writes == [], [(w["verb"], w["objectRef"]) for w in writes][:10]


def test_kubectl_explain_and_columns(operator, namespace):
    explained = kubectl("explain", "llmdeployment.spec.model").stdout
    assert "The model and its quantization." in explained and "kvCacheDtype" not in explained
    assert "Pre-quantized checkpoint" in kubectl("explain", "llmdeployment.spec.model.quantization").stdout
    apply(namespace, static_deployment("cols", replicas=1))
    wait_for(lambda: ready(namespace, "cols"), READY_TIMEOUT, "cols Ready")
    table = kubectl("get", "llmd", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "MODEL", "QUANT", "MODE", "REPLICAS", "$/HOUR", "READY", "AGE"]
    assert table[1].split()[:7] == ["cols", "llama-3.1-8b", "int8", "monolithic", "1/1", "6.88", "True"]


def test_rendered_objects_pass_server_side_dry_run(cluster, tmp_path):
    import subprocess
    import sys

    from tests.conftest import SEED
    rendered = subprocess.run([sys.executable, "-m", "llmd_operator.cli", "render", "-f", str(SEED)],
                              capture_output=True, text=True, timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    kubectl("create", "namespace", "production", check=False)
    result = kubectl("apply", "--dry-run=server", "-f", "-", input_text=rendered.stdout, check=False)
    assert result.returncode == 0, result.stderr


def test_status_from_an_older_copy_never_puts_back_what_the_slo_loop_wrote(operator, namespace):
    """A reconcile that read the object before the SLO loop's last write (the loop scales a pool, the pool's
    change queues a reconcile, which reads the object while the loop is still writing its status) must not
    put the loop's previous decision and conditions back."""
    from llmd_operator.controller import reconcile

    apply(namespace, {"apiVersion": "inference.llm-d.io/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": "race"},
                      "spec": {"model": {"name": "llama-3.1-8b", "quantization": {"type": "fp8"}},
                               "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                               "scheduling": {"sloPolicy": {"objectives": [{"name": "ttft_p95", "target": "500ms"}],
                                                            "scaling": {"minReplicas": 1, "maxReplicas": 4}}}}})
    wait_for(lambda: ready(namespace, "race"), READY_TIMEOUT, "race Ready")

    def loop_writes(replicas: int, reason: str) -> None:  # what the SLO loop does: scale, then record why
        kubectl("scale", "deployment", "race-on-demand", "-n", namespace, f"--replicas={replicas}")
        conditions = [c for c in llmd(namespace, "race")["status"]["conditions"] if c["type"] != "BudgetLimited"]
        conditions.append({"type": "BudgetLimited", "status": "True", "reason": "BudgetBinding", "message": reason,
                           "lastTransitionTime": "2026-11-24T00:00:00Z"})
        kubectl("patch", "llmd", "race", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(
            {"status": {"conditions": conditions, "lastDecision": {"time": "2026-11-24T00:00:00Z", "pool": "monolithic",
                                                                   "fromReplicas": replicas - 1, "toReplicas": replicas,
                                                                   "reason": reason}}}))
        wait_for(lambda: (lambda s: s.get("readyReplicas") == replicas)(llmd(namespace, "race")["status"]), READY_TIMEOUT,
                 f"status to report {replicas} ready replicas")

    loop_writes(2, "first decision")
    older_copy = llmd(namespace, "race")
    loop_writes(3, "second decision")

    reconcile.reconcile(older_copy)  # its copy says 2 replicas: it has a status to write

    status = llmd(namespace, "race")["status"]
    assert (status["lastDecision"]["toReplicas"], status["lastDecision"]["reason"]) == (3, "second decision")
    assert condition({"status": status}, "BudgetLimited")["message"] == "second decision"
    assert status["readyReplicas"] == 3 and condition({"status": status}, "Ready")["status"] == "True"


def test_a_scheduler_count_from_an_older_list_is_counted_again(operator, namespace):
    from llmd_operator.controller import reconcile

    kubectl("apply", "--server-side", "-f", "-", input_text=json.dumps({
        "apiVersion": "scheduler.llm-d.io/v1alpha1", "kind": "InferenceScheduler",
        "metadata": {"name": "shared", "namespace": namespace}, "spec": {}}))
    users = lambda: get_json("infsched", "shared", "-n", namespace).get("status", {}).get("deploymentNames")  # noqa: E731
    wait_for(lambda: users() == [], 30, "the scheduler to count no deployments")
    older_copy = get_json("infsched", "shared", "-n", namespace)  # says 0; the next count will say 1
    apply(namespace, static_deployment("one", replicas=1, schedulerName="shared"))
    wait_for(lambda: users() == [f"{namespace}/one"], 30, "the scheduler to count one deployment")
    older_list = reconcile.deployments_naming("shared")
    apply(namespace, static_deployment("two", replicas=1, schedulerName="shared"))
    wait_for(lambda: users() == [f"{namespace}/one", f"{namespace}/two"], 30, "the scheduler to count two")

    reconcile.scheduler_status(older_copy, [d for d in older_list if d["metadata"]["namespace"] == namespace])

    assert users() == [f"{namespace}/one", f"{namespace}/two"]
    assert get_json("infsched", "shared", "-n", namespace)["status"]["deployments"] == 2


def test_conditions_of_what_no_longer_applies_are_removed(operator, namespace):
    looped = static_deployment("switch", replicas=1, schedulerName="not-there",
                               scheduling={"sloPolicy": {"objectives": [{"name": "ttft_p95", "target": "500ms"}],
                                                         "scaling": {"minReplicas": 1, "maxReplicas": 3}}})
    del looped["spec"]["replicas"]
    apply(namespace, looped)
    # The SLO loop reports on it (this operator has no Prometheus: it holds, and says so).
    wait_for(lambda: condition(llmd(namespace, "switch"), "MetricsAvailable").get("status") == "False", 60,
             "the SLO loop's MetricsAvailable condition")
    assert f'llmd_budget_limited{{deployment="switch",namespace="{namespace}"}}' in operator.metrics()
    assert condition(llmd(namespace, "switch"), "SchedulerResolved")["reason"] == "SchedulerNotFound"
    memory = lambda: kubectl("get", "configmap", "switch-slo-memory", "-n", namespace, check=False).returncode == 0  # noqa: E731
    wait_for(memory, 60, "the loop's memory saved in ConfigMap switch-slo-memory")

    apply(namespace, static_deployment("switch", replicas=2))  # sized by its spec now, no scheduler named
    def settled():
        obj = llmd(namespace, "switch")
        return obj if obj["status"].get("observedGeneration") == obj["metadata"]["generation"] else None
    obj = wait_for(settled, 60, "the new generation reconciled")
    kinds = {c["type"] for c in obj["status"]["conditions"]}
    assert kinds.isdisjoint({"SchedulerResolved", "MetricsAvailable", "BudgetLimited", "SpotFallback"}), kinds
    assert "policyState" not in obj["status"] and "capacityProfile" not in obj["status"]
    assert not memory()   # nor its memory: a later return to the loop starts afresh
    # nor do its loop metrics stay behind for alerts to fire on
    assert f'llmd_budget_limited{{deployment="switch",namespace="{namespace}"}}' not in operator.metrics()


def test_a_spec_that_cannot_be_planned_keeps_counting_what_still_serves(operator, namespace):
    apply(namespace, static_deployment("keep", replicas=2))
    wait_for(lambda: ready(namespace, "keep"), READY_TIMEOUT, "keep Ready")
    apply(namespace, too_big("keep", replicas=2))
    cond = wait_for(lambda: plan_refused(namespace, "keep"), 30, "Ready=False PlanImpossible")
    assert "the last plan that fit keeps serving, 2/2 replicas ready" in cond["message"], cond["message"]
    kubectl("scale", "deployment", "keep-on-demand", "-n", namespace, "--replicas=1")  # what still runs, counted
    wait_for(lambda: llmd(namespace, "keep")["status"].get("ready") == "1/1", 30, "status to count what runs now")
    warned = get_json("events", "-n", namespace, "--field-selector", "reason=PlanImpossible")["items"]
    assert sum(e.get("count") or 1 for e in warned) == 1, [e["message"][:80] for e in warned]  # told once, not per count


def test_moving_to_another_scheduler_or_deleting_one_is_reflected(operator, namespace):
    for scheduler in ("first", "second"):
        kubectl("apply", "--server-side", "-f", "-", input_text=json.dumps({
            "apiVersion": "scheduler.llm-d.io/v1alpha1", "kind": "InferenceScheduler",
            "metadata": {"name": scheduler, "namespace": namespace}, "spec": {}}))
    apply(namespace, static_deployment("mover", replicas=1, schedulerName="first"))
    users = lambda s: get_json("infsched", s, "-n", namespace).get("status", {}).get("deployments")  # noqa: E731
    wait_for(lambda: (users("first"), users("second")) == (1, 0), 30, "first to count mover")
    # (moved at once: the operator may still be handling its creation)
    apply(namespace, static_deployment("mover", replicas=1, schedulerName="second"))
    wait_for(lambda: (users("first"), users("second")) == (0, 1), 30, "the count to move from first to second")

    kubectl("delete", "infsched", "second", "-n", namespace)
    def unresolved():
        cond = condition(llmd(namespace, "mover"), "SchedulerResolved")
        return cond if cond.get("reason") == "SchedulerNotFound" else None
    wait_for(unresolved, 30, "SchedulerResolved=False once its scheduler is deleted")
    assert "scheduler" not in llmd(namespace, "mover")["status"]
