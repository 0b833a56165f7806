"""CustomResourceDefinitions generated from the API models: the one source of both schemas."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from . import inferencescheduler, llmdeployment

CATEGORY = "llm-d"

_DROP_KEYS = {"title", "x-llmd-format"}
NAME_LENGTH_RULE = {
    "rule": "size(self.metadata.name) <= 45",
    "message": "metadata.name: at most 45 characters (the operator's children add up to 18 characters and label values hold 63)",
}


def structural_schema(model: type) -> dict:
    """The model's JSON Schema rewritten as a Kubernetes structural schema (OpenAPI v3.0 subset)."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    definitions = schema.pop("$defs", {})
    return _rewrite(schema, definitions)


def _rewrite(node: Any, definitions: dict) -> Any:
    if isinstance(node, list):
        return [_rewrite(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    while "$ref" in node or ("anyOf" in node and _optional(node["anyOf"])):
        if "$ref" in node:
            target = copy.deepcopy(definitions[node.pop("$ref").split("/")[-1]])
            node = {**target, **node}  # a field's own description wins over its class's
        else:
            (branch,) = [b for b in node.pop("anyOf") if b.get("type") != "null"]
            node = {**branch, **node}
    node = {k: v for k, v in node.items() if k not in _DROP_KEYS}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, exclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node.get(bound), bool):
            node[exclusive] = node.pop(bound)
            node[bound] = True
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
    if node.get("x-kubernetes-preserve-unknown-fields"):
        node.pop("additionalProperties", None)
        node["type"] = "object"
    if node.get("default") is None:
        node.pop("default", None)
    if node.get("type") == "object" and "properties" in node:
        node.pop("additionalProperties", None)
    result = {}
    for key, value in node.items():
        if key == "properties":
            result[key] = {name: _rewrite(sub, definitions) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "anyOf"):
            result[key] = _rewrite(value, definitions)
        else:
            result[key] = value
    return result


def _optional(branches: list[dict]) -> bool:
    """anyOf [X, null] is how the schema spells an optional X; Kubernetes spells it by leaving X out of required."""
    return len(branches) == 2 and any(b.get("type") == "null" for b in branches)


def _crd(module, short_names: list[str], columns: list[dict], model: type) -> dict:
    schema = structural_schema(model)
    properties = schema["properties"]
    properties["metadata"] = {"type": "object"}
    properties["apiVersion"] = {"type": "string", "description": "API version: " + module.GROUP + "/" + module.VERSION}
    properties["kind"] = {"type": "string", "description": "Kind: " + module.KIND}
    properties["status"]["description"] = properties["status"].get("description", "")
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{module.PLURAL}.{module.GROUP}",
            "labels": {"app.kubernetes.io/name": "llmd-operator", "app.kubernetes.io/part-of": "llm-d"},
        },
        "spec": {
            "group": module.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": module.KIND,
                "listKind": module.KIND + "List",
                "plural": module.PLURAL,
                "singular": module.KIND.lower(),
                "shortNames": short_names,
                "categories": [CATEGORY],
            },
            "versions": [{
                "name": module.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "x-kubernetes-validations": [NAME_LENGTH_RULE],
                    "description": schema.get("description", ""),
                    "required": ["spec"],
                    "properties": {k: properties[k] for k in ("apiVersion", "kind", "metadata", "spec", "status")},
                }},
            }],
        },
    }


def _column(name: str, path: str, kind: str = "string", description: str = "", priority: int = 0) -> dict:
    column = {"name": name, "type": kind, "jsonPath": path, "description": description}
    if priority:
        column["priority"] = priority
    return column


def llmdeployment_crd() -> dict:
    return _crd(llmdeployment, ["llmd"], [
        _column("Model", ".spec.model.name", description="Served model"),
        _column("Quant", ".status.plan.quantization", description="Weight format in force"),
        _column("Mode", ".status.mode", description="monolithic or disaggregated"),
        _column("GPU", ".status.plan.gpuProduct", description="GPU product the pods run on", priority=1),
        _column("GPUs/Replica", ".status.plan.gpusPerReplica", "integer", "GPUs per replica", priority=1),
        _column("Replicas", ".status.ready", description="Ready replicas / desired replicas"),
        _column("$/Hour", ".status.costPerHour", "number", "Cost of the desired replicas, USD per hour"),
        _column("Ready", '.status.conditions[?(@.type=="Ready")].status', description="Ready condition"),
        _column("Reason", '.status.conditions[?(@.type=="Ready")].reason', description="Why it is (not) ready", priority=1),
        _column("Age", ".metadata.creationTimestamp", "date"),
    ], llmdeployment.LLMDeployment)


def inferencescheduler_crd() -> dict:
    return _crd(inferencescheduler, ["infsched"], [
        _column("Algorithm", ".spec.sloPolicy.scaling.algorithm", description="Scaling policy"),
        _column("Max-Spot", ".spec.costOptimization.spotInstancePolicy.maxSpotRatio", "number", "Largest spot share per pool"),
        _column("Deployments", ".status.deployments", "integer", "LLMDeployments that use it"),
        _column("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        _column("Age", ".metadata.creationTimestamp", "date"),
    ], inferencescheduler.InferenceScheduler)


def all_crds() -> dict[str, dict]:
    """File name under crds/ -> CRD."""
    return {
        "inference.llm-d.io_llmdeployments.yaml": llmdeployment_crd(),
        "scheduler.llm-d.io_inferenceschedulers.yaml": inferencescheduler_crd(),
    }


HEADER = "# Generated by `llmd-operator crds` from operator/llmd_operator/api; do not edit by hand.\n"


def render_yaml(crd: dict) -> str:
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=120)
