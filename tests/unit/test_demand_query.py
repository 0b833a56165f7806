"""Scale from zero: which demand query wakes a deployment, and that the loop asks Prometheus for it."""

from __future__ import annotations

import copy

import pytest

from llmd_operator.api.inferencescheduler import InferenceScheduler
from llmd_operator.api.llmdeployment import LLMDeployment
from llmd_operator.controller.config import CONFIG
from llmd_operator.planning.plan import plan_deployment
from llmd_operator.slo import loop, observe
from tests.conftest import seed_documents

INLINE, SHARED, DEFAULT = "inline_queue{ns='$namespace'}", "gateway_queue{ns='$namespace'}", "operator_default"


def deployment(inline_scaling: dict | None) -> LLMDeployment:
    spec: dict = {"model": {"name": "llama-3.1-8b"}, "scheduling": {"scheduler": "s"}}
    if inline_scaling is not None:
        spec["scheduling"]["sloPolicy"] = {"scaling": inline_scaling}
    return LLMDeployment.model_validate({"metadata": {"name": "chat", "namespace": "team"}, "spec": spec})


def scheduler(scaling: dict | None) -> InferenceScheduler:
    spec = {"sloPolicy": {"scaling": scaling}} if scaling is not None else {}
    return InferenceScheduler.model_validate({"metadata": {"name": "s", "namespace": "team"}, "spec": spec})


@pytest.mark.parametrize("inline, shared, default, want", [
    ({"demandQuery": INLINE}, {"demandQuery": SHARED}, DEFAULT, INLINE),   # the deployment's own wins
    ({"minReplicas": 0}, {"demandQuery": SHARED}, DEFAULT, SHARED),        # an inline policy without one inherits
    (None, {"demandQuery": SHARED}, DEFAULT, SHARED),                      # no inline policy
    ({"minReplicas": 0}, {"interval": "30s"}, DEFAULT, DEFAULT),           # neither sets one
    ({"minReplicas": 0}, None, DEFAULT, DEFAULT),                          # scheduler without sloPolicy
    ({"minReplicas": 0}, "missing", DEFAULT, DEFAULT),                     # scheduler not found
    ({"demandQuery": INLINE}, "missing", None, INLINE),
    ({"minReplicas": 0}, {"interval": "30s"}, None, None),                 # nothing anywhere: no query
    ({"minReplicas": 0}, {"interval": "30s"}, "", None),                   # an empty flag is no query
], ids=["inline", "inherits-scheduler", "scheduler", "default", "no-scheduler-policy", "no-scheduler",
        "inline-alone", "none", "empty-default"])
def test_the_demand_query_in_force(inline, shared, default, want):
    found = None if shared == "missing" else scheduler(shared)
    assert loop.demand_query(deployment(inline), found, default) == want


class FakePrometheus:
    def __init__(self, value: float):
        self.value, self.asked = value, []

    def custom_query(self, promql: str):
        self.asked.append(promql)
        return [{"value": [0, str(self.value)]}]


def _seed_optimized() -> dict:
    return copy.deepcopy(next(d.body for d in seed_documents() if d.body["metadata"]["name"] == "llama-3.1-8b-optimized"))


def _managed(body: dict, catalog) -> loop.Managed:
    llmd = LLMDeployment.model_validate({"metadata": body["metadata"], "spec": body["spec"]})
    return loop.Managed(body, llmd, None, plan_deployment(llmd, catalog))


def test_the_seeds_scaled_to_zero_deployment_wakes_on_the_operator_default(monkeypatch, catalog):
    """The seed's inline policy names no demand query: the operator's --demand-query is asked, labels put in."""
    body = _seed_optimized()
    body["metadata"]["uid"] = "u1"
    item = _managed(body, catalog)
    prometheus = FakePrometheus(3.0)
    monkeypatch.setattr(CONFIG, "demand_query", 'sum(gateway_queue{namespace="$namespace", model="$deployment"})')
    _, demand = loop._queries_of_its_own(item, prometheus, observe.Snapshot(ok=True))
    assert demand == 3.0
    assert prometheus.asked == ['sum(gateway_queue{namespace="production", model="llama-3.1-8b-optimized"})']

    monkeypatch.setattr(CONFIG, "demand_query", None)
    prometheus.asked.clear()
    assert loop._queries_of_its_own(item, prometheus, observe.Snapshot(ok=True)) == ({}, 0.0)
    assert prometheus.asked == []


def test_a_deployment_that_never_scales_to_zero_asks_for_no_demand(monkeypatch, catalog):
    """The demand query only wakes a deployment from zero: one whose pools keep a replica never runs it."""
    body = _seed_optimized()
    body["metadata"]["uid"] = "u2"
    body["spec"]["scheduling"]["sloPolicy"]["scaling"]["minReplicas"] = 1
    prometheus = FakePrometheus(3.0)
    monkeypatch.setattr(CONFIG, "demand_query", 'sum(gateway_queue{model="$deployment"})')
    assert loop._queries_of_its_own(_managed(body, catalog), prometheus, observe.Snapshot(ok=True)) == ({}, 0.0)
    assert prometheus.asked == []
