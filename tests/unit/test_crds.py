"""crds/ is exactly what the models generate, and the CRDs carry what users read."""

from __future__ import annotations

from pathlib import Path

import yaml

from llmd_operator.api.crd import all_crds, render_yaml

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_equal_the_generated_ones():
    generated = {name: render_yaml(crd) for name, crd in all_crds().items()}
    committed = {p.name: p.read_text() for p in CRDS.glob("*.yaml")}
    assert committed == generated, "crds/ is stale: run `make crds` (llmd-operator crds --out-dir crds) and commit"


def _walk(schema, path=""):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], path + "[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], path + "{}")


def test_schemas_are_structural_and_documented():
    for crd in all_crds().values():
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(root):
            assert "$ref" not in node and "anyOf" not in node, path
            assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
            if path.startswith(".spec.") and "{}" not in path:
                assert node.get("description"), f"{path} has no description for kubectl explain"


def test_printer_columns_short_names_and_status_subresource():
    crd = all_crds()["inference.llm-d.io_llmdeployments.yaml"]
    version = crd["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")] == [
        "Model", "Quant", "Mode", "Replicas", "$/Hour", "Ready", "Age"]
    assert crd["spec"]["names"]["shortNames"] == ["llmd"]
    assert version["subresources"] == {"status": {}}
    scheduler = all_crds()["scheduler.llm-d.io_inferenceschedulers.yaml"]
    assert scheduler["spec"]["names"]["shortNames"] == ["infsched"]
    assert yaml.safe_load(render_yaml(crd)) == crd


def test_reference_doc_is_generated_from_the_models():
    from llmd_operator.api.reference import reference_markdown

    committed = (CRDS.parent / "docs" / "reference.md").read_text()
    assert committed == reference_markdown(), "docs/reference.md is stale: run `make crds` and commit"
    assert "| `spec.model.quantization.type` | string |" in committed
    assert "minReplicas must be less than or equal to maxReplicas" in committed
