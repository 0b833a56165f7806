"""The CLI as a user runs it: plan, render and crds without a cluster; one clear line per problem."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, SEED

CLI = [sys.executable, "-m", "llmd_operator.cli"]


def run(*args, input_text=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, input=input_text, timeout=120)


def test_plan_json_on_the_seed_has_the_keys_scripts_rely_on():
    result = run("plan", "-f", str(SEED), "-o", "json")
    assert result.returncode == 0, result.stderr
    plans = json.loads(result.stdout)
    assert sorted(p["name"] for p in plans) == ["analytics-llm-initial", "llama-3.1-8b-disaggregated",
                                                "llama-3.1-8b-optimized", "llama-3.1-8b-scheduled"]
    for plan in plans:
        assert {"name", "namespace", "cost_per_hour_usd", "pools"} <= set(plan)
        for pool in plan["pools"]:
            assert {"role", "replicas", "gpu_product", "gpus_per_replica", "tensor_parallel_size", "weights_bytes",
                    "kv_bytes_per_token", "kv_capacity_tokens", "spot_replicas", "on_demand_replicas",
                    "engine_args"} <= set(pool)
    disaggregated = next(p for p in plans if p["name"] == "llama-3.1-8b-disaggregated")
    assert [p["role"] for p in disaggregated["pools"]] == ["prefill", "decode"]


def test_plan_chooses_among_the_products_the_given_nodes_offer(tmp_path):
    """Offline, any product; with the cluster's nodes (`kubectl get nodes -o yaml`), as the operator chooses."""
    fleet = [d for d in yaml.safe_load_all((ROOT / "e2e" / "fleet.yaml").read_text()) if d]
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": fleet}))

    def product(*extra):
        result = run("plan", "-f", str(SEED), "-o", "json", *extra)
        assert result.returncode == 0, result.stderr
        chosen = next(p for p in json.loads(result.stdout) if p["name"] == "llama-3.1-8b-optimized")
        return chosen["pools"][0]["gpu_product"], chosen["notes"]

    # its nodeSelector (cost-tier: spot, gpu-efficiency: high) names no product: offline, the cheapest per token
    assert product()[0] == "NVIDIA-H100-80GB-HBM3"
    on_fleet, notes = product("--nodes", str(nodes))
    assert on_fleet == "Tesla-V100-SXM2-32GB"  # the only nodes of e2e/fleet.yaml that match it
    assert any("cost-tier=spot, gpu-efficiency=high" in n for n in notes)


def test_render_yaml_on_the_seed(tmp_path):
    result = run("render", "-f", str(SEED))
    assert result.returncode == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap"} <= kinds


def test_bad_input_gives_one_line_per_problem_and_a_nonzero_exit(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: inference.llm-d.io/v1alpha1\nkind: LLMDeployment\nmetadata: {name: a}\n"
        "spec: {model: {name: llama-3.1-8b, quantization: {type: int3}}, replicaz: 2}\n---\n"
        "apiVersion: inference.llm-d.io/v1alpha1\nkind: LLMDeployment\nmetadata: {name: b}\n"
        "spec: {model: {name: llama-3.1-8b}, autoscaling: {enabled: true, minReplicas: 4, maxReplicas: 1}}\n---\n"
        "apiVersion: inference.llm-d.io/v1alpha1\nkind: LLMDeployment\nmetadata: {name: c}\n"
        "spec: {model: {name: gpt-9}}\n")
    result = run("plan", "-f", str(bad), "-o", "json")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert any("(document 0): spec.model.quantization.type: must be one of" in l for l in lines), lines
    assert any("(document 0): spec.replicaz: unknown field" in l for l in lines), lines
    assert any("(document 1): spec.autoscaling: autoscaling: minReplicas must be less" in l for l in lines), lines
    assert any("(document 2): spec: spec.model.name: model 'gpt-9' is not in the catalog" in l for l in lines), lines
    assert len(lines) == 4
    assert json.loads(result.stdout) == []


def test_crds_command_prints_both_crds():
    result = run("crds")
    assert result.returncode == 0
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(result.stdout)]
    assert names == ["llmdeployments.inference.llm-d.io", "inferenceschedulers.scheduler.llm-d.io"]


def test_run_flags_can_be_set_as_llmd_environment_variables(monkeypatch):
    """The Deployment, the chart and the docs set LLMD_<FLAG> (e.g. LLMD_SLO_INTERVAL) for `llmd-operator run`."""
    import click

    from llmd_operator.cli import cli
    from llmd_operator.controller.command import run

    monkeypatch.setenv("LLMD_SLO_INTERVAL", "15")
    monkeypatch.setenv("LLMD_METRICS_WINDOW", "1m")
    monkeypatch.setenv("LLMD_DEMAND_QUERY", 'sum(queue{model="$deployment"})')
    monkeypatch.setenv("LLMD_SPOT_PENDING_GRACE", "2m")
    parent = click.Context(cli, info_name="llmd-operator", auto_envvar_prefix="LLMD")
    params = run.make_context("run", [], parent=parent).params
    assert (params["slo_interval"], params["metrics_window"]) == (15.0, "1m")
    assert params["demand_query"] == 'sum(queue{model="$deployment"})'
    assert params["spot_pending_grace"] == 120.0


def test_spot_pods_fall_back_at_once_unless_a_grace_is_given():
    """--spot-pending-grace: 0s by default (SpotFallback within one interval); a duration as specs write it."""
    import click

    from llmd_operator.controller.command import run

    assert run.make_context("run", []).params["spot_pending_grace"] == 0.0
    assert run.make_context("run", ["--spot-pending-grace=90s"]).params["spot_pending_grace"] == 90.0
    assert run.make_context("run", ["--spot-pending-grace", "1.5m"]).params["spot_pending_grace"] == 90.0
    assert run.make_context("run", ["--spot-pending-grace=90"]).params["spot_pending_grace"] == 90.0  # seconds
    for bad in ("soon", "-5s"):
        with pytest.raises(click.BadParameter, match="not a duration"):
            run.make_context("run", [f"--spot-pending-grace={bad}"])
