"""Check a resource against its CRD's CEL rules, the same rules the API server runs at apply time."""

from __future__ import annotations

from functools import lru_cache

import celpy
import celpy.adapter

from .crd import all_crds
from .documents import Document, Problem


@lru_cache(maxsize=1)
def _schemas() -> dict[str, dict]:
    return {
        crd["spec"]["names"]["kind"]: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for crd in all_crds().values()
    }


@lru_cache(maxsize=256)
def _program(rule: str):
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def cel_problems(document: Document) -> list[Problem]:
    """Every CEL rule of the document's CRD that the document breaks, with the field path of the rule."""
    schema = _schemas()[document.body["kind"]]
    problems: list[Problem] = []
    _walk(schema, document.body, "", document.where, problems)
    return problems


def _walk(schema: dict, value, path: str, where: str, problems: list[Problem]) -> None:
    for rule in schema.get("x-kubernetes-validations", []):
        try:
            ok = _program(rule["rule"]).evaluate({"self": celpy.adapter.json_to_cel(value)})
        except celpy.CELEvalError:
            ok = False
        if not bool(ok):
            problems.append(Problem(where, path or "(root)", rule["message"]))
    if isinstance(value, dict):
        for key, sub in value.items():
            child = schema.get("properties", {}).get(key) or schema.get("additionalProperties")
            if isinstance(child, dict):
                _walk(child, sub, f"{path}.{key}" if path else key, where, problems)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _walk(schema["items"], item, f"{path}[{index}]", where, problems)
