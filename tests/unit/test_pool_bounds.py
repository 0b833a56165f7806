"""The SLO loop's min/max replicas per pool: scaling.constraints.prefill/decode, their fallbacks, and refusals."""

from __future__ import annotations

import pytest

from llmd_operator.api.documents import Document, parse
from llmd_operator.api.llmdeployment import LLMDeployment
from llmd_operator.api.validation import cel_problems
from llmd_operator.planning.plan import PlanError, PlanOptions, plan_deployment
from llmd_operator.slo import policy_inputs
from llmd_operator.slo.decide import FleetObservation, PolicyState, PoolObservation, decide
from llmd_operator.slo.profiles import default_profile

H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
MONOLITHIC_ONLY = "scaling.constraints.prefill and scaling.constraints.decode apply only with serving.mode: disaggregated"


def spec(constraints: dict | None = None, inline: dict | None = None, mode: str = "disaggregated", **extra) -> dict:
    """A loop-owned deployment: through scaling.mode and a scheduler, or through an inline sloPolicy."""
    body = {"model": {"name": "llama-3.1-8b"}, "nodeSelector": H100, "serving": {"mode": mode}, **extra}
    if inline is not None:
        body["scheduling"] = {"sloPolicy": {"scaling": inline}}
    else:
        body["schedulerName"] = "s"
    if constraints is not None:
        body["scaling"] = {"mode": "scheduler_managed", "constraints": constraints}
    return body


def llmd(body: dict) -> LLMDeployment:
    return LLMDeployment.model_validate({"metadata": {"name": "chat", "namespace": "team"}, "spec": body})


def document(body: dict) -> Document:
    return Document("t.yaml", 0, {"apiVersion": "inference.llm-d.io/v1alpha1", "kind": "LLMDeployment",
                                  "metadata": {"name": "chat", "namespace": "team"}, "spec": body})


def bounds(plan) -> dict:
    """role -> (initial replicas, min, max) as the plan hands them to the renderer and the loop."""
    return {p.role: (p.replicas, p.min_replicas, p.max_replicas) for p in plan.pools}


@pytest.mark.parametrize("body, expected", [
    # each pool's own block
    (spec({"prefill": {"minReplicas": 1, "maxReplicas": 4}, "decode": {"minReplicas": 2, "maxReplicas": 8}}),
     {"prefill": (1, 1, 4), "decode": (2, 2, 8)}),
    # bound by bound: what a block leaves out comes from the deployment-wide constraints
    (spec({"minReplicas": 2, "maxReplicas": 10, "prefill": {"maxReplicas": 3}, "decode": {"minReplicas": 4}}),
     {"prefill": (2, 2, 3), "decode": (4, 4, 10)}),
    # ... then from the inline sloPolicy.scaling
    (spec({"prefill": {"minReplicas": 0}}, inline={"minReplicas": 1, "maxReplicas": 6}),
     {"prefill": (1, 0, 6), "decode": (1, 1, 6)}),
    # the deployment-wide constraints come before the inline sloPolicy.scaling
    (spec({"maxReplicas": 5, "decode": {"minReplicas": 3}}, inline={"minReplicas": 2, "maxReplicas": 9}),
     {"prefill": (2, 2, 5), "decode": (3, 3, 5)}),
    # ... then the defaults: min 1, max the larger of the min and the pool's replicas
    (spec({"decode": {"maxReplicas": 4}}, serving={"mode": "disaggregated", "prefill": {"replicas": 2}}),
     {"prefill": (2, 1, 2), "decode": (1, 1, 4)}),
    # a monolithic deployment keeps its one set of bounds (the seed's llama-3.1-8b-scheduled)
    (spec({"minReplicas": 0, "maxReplicas": 20}, mode="monolithic"), {"monolithic": (1, 0, 20)}),
], ids=["own-blocks", "falls-back-to-constraints", "falls-back-to-inline", "constraints-before-inline",
        "falls-back-to-defaults", "monolithic"])
def test_each_pool_gets_its_own_bounds_bound_by_bound(catalog, body, expected):
    assert cel_problems(document(body)) == []
    plan = plan_deployment(llmd(body), catalog, PlanOptions())
    assert {p.replicas_owner for p in plan.pools} == {"slo-loop"}
    assert bounds(plan) == expected


def _observation(rate: float, prefill: int, decode: int, prompt: float, output: float, ttft: float) -> FleetObservation:
    pools = tuple(PoolObservation(role=role, replicas_on_demand=n, ready_on_demand=n, queue_depth=0.0,
                                  running=10.0, kv_usage=0.2, gpu_util=0.7)
                  for role, n in (("prefill", prefill), ("decode", decode)))
    return FleetObservation(time_s=0.0, pools=pools, request_rate=rate, mean_input_tokens=prompt,
                            mean_output_tokens=output, ttft_p50_s=ttft / 2, ttft_p95_s=ttft, itl_p50_s=0.01,
                            itl_p95_s=0.02)


@pytest.mark.parametrize("constraints, load, expected", [
    # far more load than either pool may carry: each stops at its own maximum
    ({"minReplicas": 1, "maxReplicas": 6, "prefill": {"minReplicas": 2, "maxReplicas": 3}, "decode": {"maxReplicas": 2}},
     _observation(200.0, 2, 1, prompt=8000.0, output=150.0, ttft=2.0), {"prefill": 3, "decode": 2}),
    # next to no load, both pools below their minimum: each is raised to its own minimum
    ({"maxReplicas": 6, "prefill": {"minReplicas": 2}, "decode": {"minReplicas": 3}},
     _observation(0.05, 1, 1, prompt=500.0, output=100.0, ttft=0.1), {"prefill": 2, "decode": 3}),
], ids=["clamped-to-each-max", "raised-to-each-min"])
def test_the_default_policy_keeps_each_pool_within_its_own_bounds(catalog, constraints, load, expected):
    deployment = llmd(spec(constraints))
    plan = plan_deployment(deployment, catalog, PlanOptions())
    policy = policy_inputs.policy_spec(deployment, None, plan, spot_available=False, interval_s=30)
    for pool in plan.pools:  # the loop is handed the plan's per-role bounds
        assert (policy.constraints.min_for(pool.role), policy.constraints.max_for(pool.role)) == (
            pool.min_replicas, pool.max_replicas)
    profile = default_profile("llama-3.1-8b", plan.gpu.product, plan.scheme.quantization)
    decision, _ = decide("default", load, policy, profile, PolicyState())
    assert {p.role: p.target for p in decision.pools} == expected


@pytest.mark.parametrize("body, words", [
    (spec({"minReplicas": 3, "decode": {"maxReplicas": 2}}),
     ["decode pool", "spec.scaling.constraints.minReplicas 3", "spec.scaling.constraints.decode.maxReplicas 2",
      "give the decode pool its own minReplicas and maxReplicas in spec.scaling.constraints.decode"]),
    (spec({"maxReplicas": 3, "prefill": {"minReplicas": 5}}),
     ["prefill pool", "spec.scaling.constraints.prefill.minReplicas 5", "spec.scaling.constraints.maxReplicas 3"]),
    (spec({"prefill": {"maxReplicas": 2}}, inline={"minReplicas": 4}),
     ["prefill pool", "spec.scheduling.sloPolicy.scaling.minReplicas 4", "spec.scaling.constraints.prefill.maxReplicas 2"]),
    (spec({"minReplicas": 5}, inline={"maxReplicas": 2}, mode="monolithic"),
     ["monolithic pool", "spec.scaling.constraints.minReplicas 5", "spec.scheduling.sloPolicy.scaling.maxReplicas 2",
      "lower spec.scaling.constraints.minReplicas to at most 2"]),
], ids=["wide-min-over-decode-max", "prefill-min-over-wide-max", "inline-min-over-prefill-max", "monolithic"])
def test_a_minimum_above_the_maximum_is_refused_with_both_fields(catalog, body, words):
    assert cel_problems(document(body)) == []  # each rule holds on its own: only the planner sees the clash
    with pytest.raises(PlanError) as error:
        plan_deployment(llmd(body), catalog, PlanOptions())
    for word in words:
        assert word in str(error.value)


class _NoCluster:
    """The API server as the reconcile sees it for a new deployment: no children, nothing else to find.
    Status patches are kept; applying a child fails the test."""

    def __init__(self):
        self.status = {}

    def list_children(self, *args, **kwargs):
        return []

    def write_status(self, _resource, _body, patch):
        self.status.update(patch({}))
        return True

    def apply(self, *args, **kwargs):
        pytest.fail("applied a child of a refused plan")

    def __getattr__(self, name):  # any other lookup (nodes, ConfigMaps): not there
        return lambda *args, **kwargs: None


def test_a_refused_bound_is_ready_false_and_builds_nothing(catalog, monkeypatch):
    from llmd_operator.controller import reconcile

    cluster = _NoCluster()
    monkeypatch.setattr(reconcile, "catalog", lambda: catalog)
    monkeypatch.setattr(reconcile, "kube", cluster)
    written = cluster.status
    body = spec({"minReplicas": 3, "decode": {"maxReplicas": 2}}, inline={})
    outcome = reconcile._reconcile({"metadata": {"name": "chat", "namespace": "team", "uid": "u", "generation": 2},
                                    "spec": body})
    ready = next(c for c in written["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PlanImpossible")
    assert "spec.scaling.constraints.decode.maxReplicas 2" in ready["message"]
    assert outcome.created == [] and ("Warning", "PlanImpossible", outcome.problem) in outcome.events


@pytest.mark.parametrize("body, words", [
    (spec({"prefill": {"minReplicas": 1}}), None),
    (spec({"prefill": {"minReplicas": 1}}, mode="monolithic"), MONOLITHIC_ONLY),
    ({**spec({"decode": {"maxReplicas": 2}}), "serving": {"port": 8000}}, MONOLITHIC_ONLY),  # mode defaults to monolithic
    ({k: v for k, v in spec({"decode": {"maxReplicas": 2}}).items() if k != "serving"}, MONOLITHIC_ONLY),
    (spec({"decode": {"minReplicas": 3, "maxReplicas": 2}}), "scaling.constraints pool: minReplicas must be less than or equal to maxReplicas"),
], ids=["disaggregated", "monolithic", "mode-left-out", "no-serving", "block-min-over-max"])
def test_the_crd_refuses_pool_blocks_that_cannot_apply(body, words):
    doc = document(body)
    parse(doc)  # well-formed field by field
    messages = [p.message for p in cel_problems(doc)]
    if words is None:
        assert messages == []
    else:
        assert any(words in m for m in messages), messages
        assert words != MONOLITHIC_ONLY or any("set serving.mode: disaggregated" in m for m in messages)
