"""The API models accept every seed example as written and refuse bad input with the field named."""

from __future__ import annotations

import copy

import pytest

from llmd_operator.api.documents import Document, InvalidResource, parse
from llmd_operator.api.units import parse_duration, parse_quantity, parse_target
from llmd_operator.api.validation import cel_problems
from tests.conftest import seed_documents

SEED = seed_documents()


def test_the_seed_holds_all_five_examples():
    names = sorted((d.body["kind"], d.body["metadata"]["name"]) for d in SEED)
    assert names == [
        ("InferenceScheduler", "cost-optimized-scheduler"),
        ("LLMDeployment", "analytics-llm-initial"),
        ("LLMDeployment", "llama-3.1-8b-disaggregated"),
        ("LLMDeployment", "llama-3.1-8b-optimized"),
        ("LLMDeployment", "llama-3.1-8b-scheduled"),
    ]


@pytest.mark.parametrize("document", SEED, ids=lambda d: d.body["metadata"]["name"])
def test_seed_example_validates_as_written(document):
    resource = parse(document)
    assert resource.metadata["name"] == document.body["metadata"]["name"]
    assert cel_problems(document) == []
    # Nothing the user wrote is lost: the wire form holds every field of the input.
    assert _subset(document.body["spec"], resource.spec.to_wire())


def _subset(given, kept) -> bool:
    if isinstance(given, dict):
        return all(k in kept and _subset(v, kept[k]) for k, v in given.items())
    if isinstance(given, list):
        return len(given) == len(kept) and all(_subset(g, k) for g, k in zip(given, kept))
    return str(given) == str(kept) or given == kept


def _llmd(spec: dict) -> Document:
    return Document("test.yaml", 0, {"apiVersion": "inference.llm-d.io/v1alpha1", "kind": "LLMDeployment",
                                     "metadata": {"name": "t", "namespace": "default"}, "spec": spec})


BASE = {"model": {"name": "llama-3.1-8b"}}


@pytest.mark.parametrize("change, field, words", [
    ({"model": {"name": "llama-3.1-8b", "quantization": {"type": "int3"}}}, "spec.model.quantization.type", "must be one of"),
    ({"replicas": -1}, "spec.replicas", "greater than or equal to 0"),
    ({"modle": {}}, "spec.modle", "unknown field"),
    ({"autoscaling": {"enabled": True, "scaleDownDelay": "2 minutes"}}, "spec.autoscaling.scaleDownDelay", "pattern"),
    ({"resources": {"requests": {"memory": "16 GB"}}}, "spec.resources.requests.memory", "pattern"),
    ({"resources": {"policies": {"maxSpotRatio": 1.5}}}, "spec.resources.policies.maxSpotRatio", "less than or equal to 1"),
], ids=["quantization", "replicas", "typo", "duration", "quantity", "spot-ratio"])
def test_schema_errors_name_the_field(change, field, words):
    with pytest.raises(InvalidResource) as error:
        parse(_llmd({**BASE, **change}))
    problems = [p for p in error.value.problems if p.field == field]
    assert problems, error.value.problems
    assert words in problems[0].message


@pytest.mark.parametrize("change, words", [
    ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}, "minReplicas must be less than or equal to maxReplicas"),
    ({"scaling": {"mode": "scheduler_managed", "constraints": {"minReplicas": 3, "maxReplicas": 1}}, "schedulerName": "s"}, "scaling.constraints: minReplicas"),
    ({"autoscaling": {"enabled": True}, "scaling": {"mode": "scheduler_managed"}, "schedulerName": "s"}, "both claim the replica count"),
    ({"serving": {"mode": "monolithic", "prefill": {"replicas": 1}}}, "apply only with serving.mode: disaggregated"),
    ({"resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "2"}}}, "requests must equal limits"),
    ({"scheduling": {"sloPolicy": {"objectives": [{"name": "my_metric", "target": "1"}]}}}, "needs a calculator"),
    ({"scaling": {"mode": "scheduler_managed"}}, "needs schedulerName or scheduling.sloPolicy"),
    ({"scaling": {"mode": "scheduler_managed", "constraints": {"decode": {"maxReplicas": 2}}}, "schedulerName": "s"},
     "scaling.constraints.prefill and scaling.constraints.decode apply only with serving.mode: disaggregated"),
    ({"serving": {"mode": "disaggregated"}, "schedulerName": "s",
      "scaling": {"mode": "scheduler_managed", "constraints": {"prefill": {"minReplicas": 4, "maxReplicas": 2}}}},
     "scaling.constraints pool: minReplicas"),
], ids=["min-max", "constraints", "two-owners", "pools", "gpu-overcommit", "calculator", "no-scheduler",
        "pool-bounds-monolithic", "pool-bounds-min-max"])
def test_cel_rules_refuse_cross_field_mistakes(change, words):
    document = _llmd({**BASE, **change})
    parse(document)  # well-formed field by field ...
    messages = [p.message for p in cel_problems(document)]  # ... but the CRD's CEL rules refuse it
    assert any(words in m for m in messages), messages


def test_scheduler_condition_needs_exactly_one_trigger():
    body = copy.deepcopy(next(d.body for d in SEED if d.body["kind"] == "InferenceScheduler"))
    body["spec"]["sloPolicy"]["scaling"]["scaleUpConditions"][0]["costPerRequest"] = 0.01
    messages = [p.message for p in cel_problems(Document("s.yaml", 0, body))]
    assert any("exactly one trigger" in m for m in messages)


def test_an_inline_slo_policy_takes_a_demand_query():
    """The seed's scale-to-zero deployment can say what wakes it; the query is kept and bounded like the scheduler's."""
    body = copy.deepcopy(next(d.body for d in SEED if d.body["metadata"]["name"] == "llama-3.1-8b-optimized"))
    query = 'sum(gateway_queue{namespace="$namespace", model="$deployment"})'
    body["spec"]["scheduling"]["sloPolicy"]["scaling"]["demandQuery"] = query
    document = Document("s.yaml", 0, body)
    resource = parse(document)
    assert resource.spec.scheduling.slo_policy.scaling.demand_query == query
    assert resource.spec.to_wire()["scheduling"]["sloPolicy"]["scaling"]["demandQuery"] == query
    assert cel_problems(document) == []
    body["spec"]["scheduling"]["sloPolicy"]["scaling"]["demandQuery"] = "x" * 4097
    with pytest.raises(InvalidResource) as error:
        parse(Document("s.yaml", 0, body))
    assert any(p.field == "spec.scheduling.sloPolicy.scaling.demandQuery" for p in error.value.problems)


@pytest.mark.parametrize("text, seconds", [("500ms", 0.5), ("60s", 60), ("2m", 120), ("1h", 3600), ("1.5s", 1.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text, value", [("16Gi", 16 * 2**30), ("1", 1), ("500m", 0.5), ("2k", 2000), ("1e3", 1000)])
def test_quantities(text, value):
    assert float(parse_quantity(text)) == pytest.approx(value)


@pytest.mark.parametrize("text, value", [("500ms", 0.5), ("75000", 75000), ("0.7", 0.7)])
def test_targets(text, value):
    assert parse_target(text) == pytest.approx(value)
