"""Argo CD health checks (config/argocd/argocd-cm-health.yaml) run by a real Lua interpreter.

Argo CD runs resource health scripts in gopher-lua, a Lua 5.1; lupa's lua51 module is the closest we can
embed. Each script sees the live object as the global `obj` and returns {status, message}. The objects
are full LLMDeployments / InferenceSchedulers as the operator leaves them (tests/unit/fixtures/argocd),
checked against the CRDs' status schemas so a fixture cannot hold a field the API server would prune.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

lupa = pytest.importorskip("lupa", reason="lupa (dev extra) embeds the Lua interpreter")

ROOT = Path(__file__).resolve().parents[2]
HEALTH_CM = ROOT / "config" / "argocd" / "argocd-cm-health.yaml"
FIXTURES = Path(__file__).parent / "fixtures" / "argocd"
LLMD_KEY = "resource.customizations.health.inference.llm-d.io_LLMDeployment"
SCHED_KEY = "resource.customizations.health.scheduler.llm-d.io_InferenceScheduler"


def _lua_runtime():
    try:
        from lupa import lua51  # noqa: PLC0415  (Lua 5.1, like Argo CD's gopher-lua)

        return lua51.LuaRuntime(unpack_returned_tuples=True)
    except ImportError:  # pragma: no cover - older lupa without the lua51 module
        return lupa.LuaRuntime(unpack_returned_tuples=True)


def _to_lua(lua, value):
    """Python (YAML) data to Lua tables, lists 1-indexed, like Argo CD's JSON-to-Lua conversion."""
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            table[key] = _to_lua(lua, item)
        return table
    if isinstance(value, list):
        table = lua.table()
        for index, item in enumerate(value, start=1):
            table[index] = _to_lua(lua, item)
        return table
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return float(value)  # gopher-lua numbers are float64
    return value


def health(script: str, obj: dict) -> tuple[str, str]:
    lua = _lua_runtime()
    lua.globals().obj = _to_lua(lua, obj)
    result = lua.execute(script)
    assert result is not None, "health script returned nothing"
    status, message = result["status"], result["message"]
    assert status in {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}, status
    return status, message or ""


@pytest.fixture(scope="module")
def scripts() -> dict[str, str]:
    cm = yaml.safe_load(HEALTH_CM.read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    assert cm["metadata"]["namespace"] == "argocd"
    return cm["data"]


def fixture(name: str) -> dict:
    return yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())


# (fixture, expected status, text the message must contain)
LLMD_CASES = [
    ("llmdeployment-no-status", "Progressing", "Waiting for the operator"),
    ("llmdeployment-ready", "Healthy", "4/4 replicas ready"),
    ("llmdeployment-ready-budget-limited", "Healthy", "budget limited: the SLO needs 6 replicas"),
    ("llmdeployment-ready-spot-fallback", "Healthy", "spot fallback: 2 of 3 spot replicas"),
    ("llmdeployment-scaled-to-zero", "Healthy", "scaled to zero"),
    ("llmdeployment-generation-not-observed", "Progressing", "generation 4"),
    ("llmdeployment-pods-starting", "Progressing", "PodsStarting: 1/4 replicas ready"),
    ("llmdeployment-rolling-out", "Progressing", "RollingOut: 3/4 replicas ready"),
    ("llmdeployment-ready-unknown", "Progressing", "waiting for their status"),
    ("llmdeployment-unschedulable", "Degraded", "Insufficient nvidia.com/gpu"),
    ("llmdeployment-plan-impossible", "Degraded", "PlanImpossible: llama-3.1-70b fp16 needs 131.4 GiB"),
]

SCHED_CASES = [
    ("inferencescheduler-no-status", "Progressing", "Waiting for the operator"),
    ("inferencescheduler-ready", "Healthy", "used by 2 LLMDeployment(s)"),
    ("inferencescheduler-invalid", "Degraded", "InvalidCalculator: objective cost_efficient_throughput"),
    ("inferencescheduler-generation-not-observed", "Progressing", "generation 3"),
]


@pytest.mark.parametrize(("name", "expected", "text"), LLMD_CASES, ids=[c[0] for c in LLMD_CASES])
def test_llmdeployment_health(scripts, name, expected, text):
    obj = fixture(name)
    assert obj["kind"] == "LLMDeployment"
    status, message = health(scripts[LLMD_KEY], obj)
    assert (status, text in message) == (expected, True), message


@pytest.mark.parametrize(("name", "expected", "text"), SCHED_CASES, ids=[c[0] for c in SCHED_CASES])
def test_inferencescheduler_health(scripts, name, expected, text):
    obj = fixture(name)
    assert obj["kind"] == "InferenceScheduler"
    status, message = health(scripts[SCHED_KEY], obj)
    assert (status, text in message) == (expected, True), message


def test_every_fixture_has_a_case():
    covered = {c[0] for c in LLMD_CASES + SCHED_CASES}
    assert {p.stem for p in FIXTURES.glob("*.yaml")} == covered


def test_degraded_message_is_the_ready_condition_message(scripts):
    obj = fixture("llmdeployment-plan-impossible")
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    _, message = health(scripts[LLMD_KEY], obj)
    assert ready["message"] in message


def test_condition_order_does_not_matter(scripts):
    obj = fixture("llmdeployment-unschedulable")
    obj["status"]["conditions"].reverse()
    assert health(scripts[LLMD_KEY], obj)[0] == "Degraded"


def test_scripts_work_under_lua54_too(scripts):
    """Argo CD forks have moved interpreters before; the scripts use only Lua 5.1 features that 5.4 keeps."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _to_lua(lua, fixture("llmdeployment-rolling-out"))
    assert lua.execute(scripts[LLMD_KEY])["status"] == "Progressing"


# --- the fixtures are objects the API server would keep: their status fits the CRD's status schema ---

def _check_schema(value, schema: dict, path: str) -> list[str]:
    """A small structural-schema check: type, enum, required, properties (no unknown fields)."""
    errors: list[str] = []
    kind = schema.get("type")
    python_types = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}
    if kind and not isinstance(value, python_types[kind]) or (kind in ("integer", "number") and isinstance(value, bool)):
        return [f"{path}: {value!r} is not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing {key}")
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if props is not None and key in props:
                errors += _check_schema(item, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                errors += _check_schema(item, extra, f"{path}.{key}")
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{key}: not in the schema (the API server would prune it)")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += _check_schema(item, schema["items"], f"{path}[{index}]")
    return errors


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.yaml")), ids=lambda p: p.stem)
def test_fixture_status_fits_the_crd(path):
    obj = yaml.safe_load(path.read_text())
    crd_file = {
        "LLMDeployment": "inference.llm-d.io_llmdeployments.yaml",
        "InferenceScheduler": "scheduler.llm-d.io_inferenceschedulers.yaml",
    }[obj["kind"]]
    crd = yaml.safe_load((ROOT / "crds" / crd_file).read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert _check_schema(obj.get("status", {}), schema, "status") == []


# --- statuses built by the operator's own status code get the verdict their reason implies ---

def test_operator_readiness_reasons_map_to_health(scripts):
    status_mod = pytest.importorskip("llmd_operator.controller.status")
    pool = {"role": "monolithic", "desiredReplicas": 2, "readyReplicas": 1}
    starting_pod = {"metadata": {"name": "m-0"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    pending_pod = {"metadata": {"name": "m-1"}, "status": {"conditions": [
        {"type": "PodScheduled", "status": "False", "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}}
    workload = {"metadata": {"generation": 1}, "spec": {"replicas": 2},
                "status": {"observedGeneration": 1, "updatedReplicas": 2, "replicas": 2}}
    rolling = {"metadata": {"generation": 2}, "spec": {"replicas": 2}, "status": {"observedGeneration": 1}}
    cases = [
        (([{**pool, "readyReplicas": 2}], [workload], []), "Healthy"),
        (([{**pool, "desiredReplicas": 0, "readyReplicas": 0}], [], []), "Healthy"),
        (([pool], [workload], [starting_pod]), "Progressing"),
        (([pool], [rolling], [starting_pod]), "Progressing"),
        (([pool], [workload], [pending_pod]), "Degraded"),
    ]
    base = fixture("llmdeployment-ready")
    for (pools, workloads, pods), expected in cases:
        ok, reason, message = status_mod.readiness(pools, workloads, pods)
        obj = {**base, "status": {**base["status"], "conditions": [
            status_mod.condition("Ready", ok, reason, message, base["metadata"]["generation"])]}}
        assert health(scripts[LLMD_KEY], obj)[0] == expected, (reason, message)
