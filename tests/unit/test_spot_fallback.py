"""Spot fallback within one interval: unschedulable spot pods move the pool to on-demand at the first tick
that sees them, unless --spot-pending-grace gives the node provisioner time to add a spot node."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from llmd_operator.api.inferencescheduler import InferenceScheduler
from llmd_operator.api.llmdeployment import LLMDeployment
from llmd_operator.controller.config import CONFIG
from llmd_operator.planning.plan import PlanOptions, plan_deployment
from llmd_operator.render import labels
from llmd_operator.render.placement import node_affinity_terms
from llmd_operator.slo import loop, observe, policy_inputs

NOW = 1_800_000_000.0
GPU = "NVIDIA-H100-80GB-HBM3"
TAINT = "karpenter.sh/disrupted"


def _stamp(s_ago: float) -> str:
    return datetime.fromtimestamp(NOW - s_ago, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _pod(name: str, node: str | None = None, unschedulable_s_ago: float | None = None) -> dict:
    pod = {"metadata": {"name": name, "labels": labels.pod_labels("chat", "llama-3.1-8b", "monolithic", "spot")},
           "spec": {}, "status": {}}
    if node:
        pod["spec"]["nodeName"] = node
        pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    if unschedulable_s_ago is not None:
        pod["status"]["conditions"] = [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "lastTransitionTime": _stamp(unschedulable_s_ago),
            "message": "0/6 nodes are available: 6 Insufficient nvidia.com/gpu"}]
    return pod


def _spot_node(name: str, expressions: list[dict], taint: str | None = None, deleted: bool = False,
               gpus: int = 0) -> dict:
    node = {"metadata": {"name": name, "labels": {e["key"]: e["values"][0] for e in expressions if e["operator"] == "In"}},
            "spec": {}, "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}}}
    if taint:
        node["spec"]["taints"] = [{"key": taint, "effect": "NoSchedule"}]
    if deleted:
        node["metadata"]["deletionTimestamp"] = _stamp(5)
    return node


@pytest.fixture
def spot_nodes(catalog) -> list[dict]:
    return node_affinity_terms(catalog, "karpenter", GPU, "spot")


def _health(pods, nodes, spot_nodes, **grace):
    return policy_inputs.spot_health(pods, {n["metadata"]["name"]: n for n in nodes}, [TAINT], NOW,
                                     spot_node_expressions=spot_nodes, **grace)


# ------------------------------------------------------------------------------------ spot_health ---

def test_by_default_a_spot_pod_unschedulable_for_a_second_makes_spot_unusable(spot_nodes):
    ok, why = _health([_pod("chat-spot-7c9d", unschedulable_s_ago=1)], [_spot_node("s1", spot_nodes)], spot_nodes)
    assert not ok
    assert why.startswith("spot pod chat-spot-7c9d unschedulable for 1s: 0/6 nodes are available")


def test_a_grace_gives_the_node_provisioner_time_to_add_a_spot_node(spot_nodes):
    nodes = [_spot_node("s1", spot_nodes)]
    assert _health([_pod("chat-spot-7c9d", unschedulable_s_ago=60)], nodes, spot_nodes, pending_grace_s=120) == (True, "")
    ok, why = _health([_pod("chat-spot-7c9d", unschedulable_s_ago=120)], nodes, spot_nodes, pending_grace_s=120)
    assert not ok and "spot pod chat-spot-7c9d unschedulable for 120s" in why


@pytest.mark.parametrize("node, words", [
    ({"taint": TAINT}, f"spot node s1 is being drained ({TAINT})"),
    ({"deleted": True}, "spot node s1 is being deleted"),
], ids=["draining", "deleted"])
def test_a_spot_node_going_away_is_immediate_whatever_the_grace(spot_nodes, node, words):
    going = _spot_node("s1", spot_nodes, **node)
    nodes = [going, _spot_node("s2", spot_nodes)]   # another spot node is schedulable
    for grace in (0.0, 120.0, 3600.0):
        ok, why = _health([_pod("chat-spot-7c9d", node="s1")], nodes, spot_nodes, pending_grace_s=grace)
        assert (ok, why) == (False, words)


def test_a_spot_pods_vanished_node_and_no_schedulable_spot_node_are_immediate_whatever_the_grace(spot_nodes):
    ok, why = _health([_pod("chat-spot-7c9d", node="gone")], [_spot_node("s1", spot_nodes)], spot_nodes,
                      pending_grace_s=3600)
    assert not ok and why == "node gone of spot pod chat-spot-7c9d is gone"
    draining = [_spot_node("s1", spot_nodes, taint=TAINT), _spot_node("s2", spot_nodes, deleted=True)]
    ok, why = _health([_pod("chat-spot-7c9d", unschedulable_s_ago=1)], draining, spot_nodes, pending_grace_s=3600)
    assert not ok and why.startswith("no schedulable spot node for this GPU")


# ------------------------------------------------------------------------------- one loop tick ---

@pytest.fixture
def one_tick(catalog, spot_nodes, monkeypatch):
    """tick(pods, fallback_strategy) runs the SLO loop once for `chat` (3 spot + 1 on-demand replicas, all
    ready; spot node s1 schedulable, s2 with an interruption notice; load steady) and returns (scale calls,
    status written, events)."""
    spec = {"model": {"name": "llama-3.1-8b", "quantization": {"type": "fp8"}},
            "nodeSelector": {"nvidia.com/gpu.product": GPU},
            "resources": {"policies": {"spotPreference": "preferred", "maxSpotRatio": 0.8}},
            "scheduling": {"sloPolicy": {"objectives": [{"name": "ttft_p95", "target": "500ms"}],
                                         "scaling": {"minReplicas": 1, "maxReplicas": 8}}}}
    meta = {"name": "chat", "namespace": "team", "uid": "uid-spot-fallback", "generation": 1}
    llmd = LLMDeployment.model_validate({"metadata": meta, "spec": spec})
    plan = plan_deployment(llmd, catalog, PlanOptions(capacity_convention="karpenter"))
    item = loop.Managed({"metadata": meta, "spec": spec, "status": {}}, llmd, None, plan)
    workloads = [{"kind": "Deployment", "metadata": {"name": labels.workload_name("chat", "monolithic", c),
                                                     "labels": labels.pod_labels("chat", "llama-3.1-8b", "monolithic", c)},
                  "spec": {"replicas": n}, "status": {"readyReplicas": n}}
                 for c, n in (("spot", 3), ("on-demand", 1))]
    said = {"request_rate": 4.0, "mean_input_tokens": 1000.0, "mean_output_tokens": 200.0, "ttft_p50_s": 0.1,
            "ttft_p95_s": 0.2, "itl_p50_s": 0.01, "itl_p95_s": 0.02, "last_sample_s": NOW}
    snapshot = observe.Snapshot(ok=True, deployment={("team", "chat"): said}, evaluated_at=NOW, window="30s")
    nodes = {"s1": _spot_node("s1", spot_nodes, gpus=8), "s2": _spot_node("s2", spot_nodes, taint=TAINT, gpus=8)}
    scaled, written, events, saved = [], [], [], []
    monkeypatch.setattr(CONFIG, "capacity_convention", "karpenter")
    monkeypatch.setattr(loop.kube, "list_children", lambda namespace, selector: workloads)
    monkeypatch.setattr(loop.kube, "get_configmap", lambda namespace, name: None)
    monkeypatch.setattr(loop.kube, "apply", lambda desired, live: saved.append(desired))   # the loop's memory
    monkeypatch.setattr(loop.kube, "scale", lambda namespace, name, replicas, manager: scaled.append((name, replicas)))
    monkeypatch.setattr(loop.kube, "write_status", lambda module, body, build: written.append(build({})))
    monkeypatch.setattr(loop.kube, "post_event", lambda body, type_, reason, message: events.append((reason, message)))

    def tick(pods: list[dict], fallback_strategy: str | None = None, migration: str | None = None,
             on_s1: list[dict] = ()):
        policy = {"fallbackStrategy": fallback_strategy or "graceful_migration"}
        if migration:
            policy["interruption"] = {"migrationPolicy": migration}
        item.scheduler = None if fallback_strategy is None and migration is None else InferenceScheduler.model_validate(
            {"metadata": {"name": "shared", "namespace": "team"},
             "spec": {"costOptimization": {"spotInstancePolicy": policy}}})
        monkeypatch.setattr(loop.kube, "list_pods", lambda namespace, selector: pods)
        monkeypatch.setattr(loop.kube, "pods_on_node", lambda node: list(on_s1) if node == "s1" else [])
        loop._decide_and_act(item, snapshot, {}, 0.0, nodes, NOW, catalog)
        return scaled, written[-1], events

    yield tick
    loop.forget(meta["uid"])
    from llmd_operator.controller import metrics
    metrics.forget("team", "chat")


def _spot_fallback(status: dict) -> dict:
    return next(c for c in status["conditions"] if c["type"] == "SpotFallback")


def test_the_first_tick_that_sees_an_unschedulable_spot_pod_moves_the_pool_to_on_demand(one_tick):
    scaled, status, events = one_tick([_pod("chat-spot-7c9d", unschedulable_s_ago=1)])
    assert scaled == [("chat-on-demand", 4), ("chat-spot", 0)]   # replacements first
    fallback = _spot_fallback(status)
    assert fallback["status"] == "True" and "chat-spot-7c9d" in fallback["message"]
    assert [reason for reason, _ in events] == ["Scaled", "SpotFallback"]


def test_the_loop_waits_the_operators_spot_pending_grace(one_tick, monkeypatch):
    monkeypatch.setattr(CONFIG, "spot_pending_grace_seconds", 120.0)
    scaled, status, events = one_tick([_pod("chat-spot-7c9d", unschedulable_s_ago=60)])
    assert not any(name == "chat-spot" and replicas == 0 for name, replicas in scaled)
    assert _spot_fallback(status)["status"] == "False"
    assert "SpotFallback" not in [reason for reason, _ in events]


# --------------------------------------------------------------------------- fallbackStrategy ---

def _serving_on_draining_node() -> list[dict]:
    return [_pod(f"chat-spot-{i}", node="s2") for i in range(3)]


def test_graceful_migration_keeps_serving_spot_replicas_until_on_demand_ones_are_ready(one_tick):
    scaled, status, events = one_tick(_serving_on_draining_node(), "graceful_migration")
    # on-demand grows to the whole pool; the spot replicas still serve until the replacements are ready
    assert scaled == [("chat-on-demand", 4)]
    assert _spot_fallback(status)["status"] == "True"
    assert [reason for reason, _ in events] == ["Scaled", "SpotFallback"]


def test_immediate_removes_the_spot_replicas_in_the_same_tick(one_tick):
    scaled, status, _ = one_tick(_serving_on_draining_node(), "immediate")
    assert scaled == [("chat-on-demand", 4), ("chat-spot", 0)]
    assert _spot_fallback(status)["status"] == "True"


def test_none_leaves_the_replicas_on_spot_and_says_it_waits(one_tick):
    scaled, status, events = one_tick(_serving_on_draining_node(), "none")
    assert scaled == []
    fallback = _spot_fallback(status)
    assert (fallback["status"], fallback["reason"]) == ("False", "WaitingForSpot")
    assert f"spot node s2 is being drained ({TAINT})" in fallback["message"] and "fallbackStrategy none" in fallback["message"]
    assert [reason for reason, _ in events] == ["SpotUnavailable"]


@pytest.mark.parametrize("current, wanted, serving, od_ready, od_wanted, kept", [
    (3, 0, 3, 1, 4, 3),    # no replacement ready yet: every serving spot replica stays
    (3, 0, 3, 3, 4, 1),    # two replacements ready: two spot replicas go
    (3, 0, 3, 4, 4, 0),    # all replaced
    (3, 0, 1, 1, 4, 1),    # only one still serves (the others lost their node): only it stays
    (3, 0, 0, 1, 4, 0),    # none serves: nothing to wait for
    (2, 4, 2, 0, 1, 4),    # spot grows: never held back
    (3, 1, 3, 2, 2, 1),    # an ordinary scale-down, on-demand already ready: the policy's target
], ids=["none-ready", "two-ready", "all-ready", "one-serving", "none-serving", "growing", "scale-down"])
def test_spot_kept_while_migrating(current, wanted, serving, od_ready, od_wanted, kept):
    assert policy_inputs.spot_kept_while_migrating(current, wanted, serving, od_ready, od_wanted) == kept


def test_serving_spot_pods_are_ready_ones_on_existing_nodes():
    pending = _pod("p", unschedulable_s_ago=5)
    orphaned = _pod("o", node="gone")
    not_ready = _pod("n", node="s1")
    not_ready["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    on_demand = _pod("d", node="s1")
    on_demand["metadata"]["labels"] = labels.pod_labels("chat", "llama-3.1-8b", "decode", "on-demand")
    serving = [_pod("a", node="s1"), _pod("b", node="s2")]
    nodes = {"s1": {}, "s2": {}}
    assert policy_inputs.serving_spot_pods([pending, orphaned, not_ready, on_demand, *serving], nodes) == {"monolithic": 2}


# ------------------------------------------------------------------------------ migrationPolicy ---

def _gpu_pod(gpus: int, phase: str = "Running") -> dict:
    return {"metadata": {"name": "other"}, "spec": {"containers": [{"resources": {"requests": {"nvidia.com/gpu": str(gpus)}}}]},
            "status": {"phase": phase}}


def test_free_gpus_are_the_allocatable_less_what_unfinished_pods_request(spot_nodes):
    node = _spot_node("s1", spot_nodes, gpus=8)
    assert policy_inputs.free_gpus(node, []) == 8
    assert policy_inputs.free_gpus(node, [_gpu_pod(2), _gpu_pod(4, "Pending"), _gpu_pod(4, "Succeeded")]) == 2


@pytest.mark.parametrize("free, needs, fit", [
    ([8], [1, 1, 1], True),
    ([1, 1, 1], [1, 1, 1], True),
    ([2, 2], [4], False),            # a replica's GPUs sit on one node
    ([4, 2], [2, 4], True),          # largest first
    ([1, 1], [1, 1, 1], False),
    ([], [1], False),
])
def test_replicas_fit_on_free_gpus_one_node_each(free, needs, fit):
    assert policy_inputs.fits(free, needs) is fit


def test_displaced_spot_pods_are_those_on_nodes_going_away(spot_nodes):
    nodes = {"s1": _spot_node("s1", spot_nodes), "s2": _spot_node("s2", spot_nodes, taint=TAINT),
             "s3": _spot_node("s3", spot_nodes, deleted=True)}
    pods = [_pod("a", node="s1"), _pod("b", node="s2"), _pod("c", node="s3"), _pod("d", node="gone"),
            _pod("e", unschedulable_s_ago=5)]
    displaced, why = policy_inputs.displaced_spot_pods(pods, nodes, [TAINT])
    assert [p["metadata"]["name"] for p in displaced] == ["b", "c", "d"]
    assert why == f"spot node s2 is being drained ({TAINT})"


def test_without_an_interruption_block_replicas_go_to_on_demand(one_tick):
    scaled, status, _ = one_tick(_serving_on_draining_node(), "graceful_migration")
    assert scaled == [("chat-on-demand", 4)] and _spot_fallback(status)["status"] == "True"


def test_cost_aware_moves_the_replicas_to_spot_nodes_with_room_ordering_them_before_the_drain(one_tick):
    scaled, status, events = one_tick(_serving_on_draining_node(), migration="cost_aware")
    # the three serving on the draining node are ordered again on spot (s1 has 8 free GPUs); none on-demand
    assert scaled == [("chat-spot", 6)]
    fallback = _spot_fallback(status)
    assert (fallback["status"], fallback["reason"]) == ("False", "SpotMigration")
    assert fallback["message"] == (f"spot node s2 is being drained ({TAINT}); its 3 spot replica(s) move to other "
                                   "spot nodes, whose free GPUs hold them (migrationPolicy cost_aware)")
    assert [reason for reason, _ in events] == ["Scaled", "SpotMigration"]


def test_cost_aware_goes_to_on_demand_when_the_other_spot_nodes_lack_room(one_tick):
    scaled, status, _ = one_tick(_serving_on_draining_node(), migration="cost_aware", on_s1=[_gpu_pod(6)])
    assert scaled == [("chat-on-demand", 4)]      # 2 free GPUs for 3 replicas: the cheapest with room
    assert _spot_fallback(status)["status"] == "True"


def test_same_capacity_stays_on_spot_without_visible_room(one_tick):
    scaled, status, _ = one_tick(_serving_on_draining_node(), migration="same_capacity", on_s1=[_gpu_pod(8)])
    assert scaled == [("chat-spot", 6)]
    assert _spot_fallback(status)["reason"] == "SpotMigration"


def test_an_unschedulable_spot_pod_still_falls_back_whatever_the_migration_policy(one_tick):
    pods = _serving_on_draining_node() + [_pod("chat-spot-new", unschedulable_s_ago=1)]
    scaled, status, _ = one_tick(pods, migration="same_capacity")
    assert ("chat-on-demand", 4) in scaled and _spot_fallback(status)["status"] == "True"
