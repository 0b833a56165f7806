"""render/profiling_job.py (pure) and `llmd-operator profile-job`: a table of cases, no cluster, no torch."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from llmd_operator.profile.command import profile_job
from llmd_operator.profile.publish import configmap_body
from llmd_operator.render.profiling_job import (DEFAULT_PROFILER_IMAGE, configmap_name, profile_args,
                                                profiling_job)
from llmd_operator.slo.profiles import load_profile_file, shipped_profiles

H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"
OWNER = {"apiVersion": "inference.llm-d.io/v1alpha1", "kind": "LLMDeployment", "name": "chat",
         "uid": "1234", "controller": True, "blockOwnerDeletion": True}
ARCH = {"parameters": 1000000, "layers": 2, "hiddenSize": 256, "attentionHeads": 4, "kvHeads": 2,
        "maxContext": 4096, "intermediateSize": 512, "vocabSize": 1000}


def by_kind(objects):
    return {o["kind"]: o for o in objects}


CASES = [
    # (id, model, gpu, tp, formats, image, owner)
    ("catalog-model-tp1", {"name": "llama-3.1-8b"}, H100, 1, ["bf16", "fp8", "int8", "int4"], None, None),
    ("catalog-model-tp4-owned", {"name": "llama-3.1-70b"}, A100, 4, ["bf16", "int8"], "my/profiler:1", OWNER),
    ("own-architecture", {"name": "my-model", "architecture": ARCH}, H100, 2, ["int4"], None, OWNER),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_job_objects(case):
    _, model, gpu, tp, formats, image, owner = case
    objects = profiling_job("chat", "team-a", model, gpu, tp, formats, image=image, owner_reference=owner)
    kinds = by_kind(objects)
    assert [o["kind"] for o in objects] == ["ServiceAccount", "Role", "RoleBinding", "Job"]
    for o in objects:
        assert o["metadata"]["namespace"] == "team-a"
        assert o["metadata"]["name"] == "chat-profiler"
        assert o["metadata"]["labels"]["llm-d.io/deployment"] == "chat"
        assert o["metadata"].get("ownerReferences") == ([owner] if owner else None)
    job = kinds["Job"]
    assert job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["backoffLimit"] == 1 and spec["ttlSecondsAfterFinished"] > 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "chat-profiler"
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term == [{"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": [gpu]}]}]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == tp
    assert container["resources"]["requests"]["nvidia.com/gpu"] == tp
    assert container["image"] == (image or DEFAULT_PROFILER_IMAGE)
    script = container["command"][-1]
    assert "llmd-operator profile" in script
    assert f"--formats {','.join(formats)}" in script
    assert f"--gpu-product {gpu}" in script and f"--tensor-parallel-size {tp}" in script
    assert "--publish-configmap chat-capacity-profile --namespace team-a" in script
    assert "--out /out" in script and "--device cuda" in script
    if "architecture" in model:
        assert "--config /tmp/architecture.json" in script and "architecture.json" in script.splitlines()[1]
    else:
        assert f"--model {model['name']}" in script
    env = {e["name"]: e["value"] for e in container["env"]}
    assert ("LLMD_OWNER_REFERENCE" in env) == bool(owner)
    if owner:
        assert json.loads(env["LLMD_OWNER_REFERENCE"]) == owner
    # RBAC: create ConfigMaps (Kubernetes cannot limit create by name), everything else only on ours
    rules = kinds["Role"]["rules"]
    assert {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]} in rules
    named = [r for r in rules if r.get("resourceNames")]
    assert named == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["chat-capacity-profile"],
                      "verbs": ["get", "update", "patch"]}]
    assert all(r["resources"] == ["configmaps"] for r in rules)
    binding = kinds["RoleBinding"]
    assert binding["roleRef"]["name"] == "chat-profiler"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "chat-profiler", "namespace": "team-a"}]


def test_architecture_survives_the_shell():
    objects = profiling_job("x", "ns", {"name": "it's-mine", "architecture": ARCH}, H100, 1, ["bf16"])
    script = by_kind(objects)["Job"]["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    import subprocess  # noqa: PLC0415

    line = script.splitlines()[1].replace("/tmp/architecture.json", "/dev/stdout")
    out = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"name": "it's-mine", "architecture": ARCH}


@pytest.mark.parametrize("bad", [dict(formats=[]), dict(tensor_parallel_size=0)])
def test_job_refuses_bad_input(bad):
    kwargs = dict(llmd_name="x", namespace="ns", model={"name": "llama-3.1-8b"}, gpu_product=H100,
                  tensor_parallel_size=1, formats=["bf16"])
    kwargs.update(bad)
    with pytest.raises(ValueError):
        profiling_job(**kwargs)


def test_args_and_configmap_name():
    assert configmap_name("chat") == "chat-capacity-profile"
    args = profile_args({"name": "llama-3.1-8b"}, H100, 1, ["bf16"], "cm", "ns")
    assert args[:4] == ["llmd-operator", "profile", "--model", "llama-3.1-8b"]


LLMD = """
apiVersion: inference.llm-d.io/v1alpha1
kind: LLMDeployment
metadata: {name: chat, namespace: team-a}
spec:
  model:
    name: llama-3.1-8b
    quantization: {type: fp8}
"""


@pytest.mark.parametrize("args,gpu,tp,formats,image", [
    ([], None, None, None, DEFAULT_PROFILER_IMAGE),
    (["--gpu", A100], A100, 1, "bf16,int8,int4", DEFAULT_PROFILER_IMAGE),  # A100: no fp8
    (["--gpu", H100, "--formats", "int8,awq", "--image", "me/p:2", "--tensor-parallel-size", "2"],
     H100, 2, "int8,int4", "me/p:2"),
])
def test_profile_job_command(tmp_path, args, gpu, tp, formats, image):
    f = tmp_path / "llmd.yaml"
    f.write_text(LLMD)
    result = CliRunner().invoke(profile_job, ["-f", str(f), *args])
    assert result.exit_code == 0, result.output
    objects = list(yaml.safe_load_all(result.output))
    job = by_kind(objects)["Job"]
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["namespace"] == "team-a"
    script = pod["containers"][0]["command"][-1]
    values = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
    if gpu:
        assert values == [gpu]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == tp
    else:  # the plan's choice
        assert values[0].startswith("NVIDIA-")
    if formats:
        assert f"--formats {formats}" in script
    assert pod["containers"][0]["image"] == image


def test_profile_job_command_needs_one_deployment(tmp_path):
    f = tmp_path / "two.yaml"
    f.write_text(LLMD + "---\n" + LLMD.replace("name: chat", "name: other"))
    result = CliRunner().invoke(profile_job, ["-f", str(f)])
    assert result.exit_code != 0 and "--name" in result.output
    result = CliRunner().invoke(profile_job, ["-f", str(f), "--name", "other", "--gpu", H100,
                                              "--tensor-parallel-size", "1"])
    assert result.exit_code == 0 and "other-profiler" in result.output


def test_configmap_body_holds_a_loadable_profile(tmp_path):
    (tmp_path / "profile.yaml").write_text(shipped_profiles()[0].read_text())
    (tmp_path / "report.md").write_text("# report\n")
    body = configmap_body("chat-capacity-profile", "team-a", tmp_path, OWNER)
    assert body["metadata"]["ownerReferences"] == [OWNER]
    assert set(body["data"]) == {"profile.yaml", "report.md"}
    (tmp_path / "back.yaml").write_text(body["data"]["profile.yaml"])
    assert load_profile_file(tmp_path / "back.yaml")
