"""Pure: the Job (and its ServiceAccount, Role, RoleBinding) that profiles a model on a GPU node.

The Job runs `llmd-operator profile ... --out /out --publish-configmap <name>-capacity-profile` on one node
of the chosen GPU product; the profiler then writes profile.yaml and report.md into that ConfigMap with the
kubernetes client (in-cluster config, the Job's ServiceAccount). The SLO loop reads the ConfigMap's
`profile.yaml` when present. RBAC: `create` cannot be limited to a resource name in Kubernetes, so the Role
allows creating ConfigMaps in the namespace and get/update/patch of that one ConfigMap only.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from .labels import owned_selector

DEFAULT_PROFILER_IMAGE = "ghcr.io/llm-d/llmd-operator-profiler:0.1.0"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"
PROFILE_KEY = "profile.yaml"
TTL_SECONDS = 86400
ACTIVE_DEADLINE_SECONDS = 3 * 3600
COMPONENT_LABEL = "app.kubernetes.io/component"


def configmap_name(llmd_name: str) -> str:
    return f"{llmd_name}-capacity-profile"


def profiler_name(llmd_name: str) -> str:
    return f"{llmd_name}-profiler"


def _labels(llmd_name: str) -> dict[str, str]:
    return {**owned_selector(llmd_name), COMPONENT_LABEL: "profiler"}


def _meta(name: str, namespace: str, llmd_name: str, owner_reference: dict | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": _labels(llmd_name)}
    if owner_reference:
        meta["ownerReferences"] = [dict(owner_reference)]
    return meta


def profile_args(model: dict[str, Any], gpu_product: str, tensor_parallel_size: int, formats: list[str],
                 configmap: str, namespace: str) -> list[str]:
    """The `llmd-operator profile` command line the Job runs."""
    args = ["llmd-operator", "profile"]
    if model.get("architecture"):
        args += ["--config", "/tmp/architecture.json"]
    else:
        args += ["--model", str(model["name"])]
    args += ["--formats", ",".join(formats), "--device", "cuda", "--gpu-product", gpu_product,
             "--tensor-parallel-size", str(int(tensor_parallel_size)), "--out", "/out",
             "--publish-configmap", configmap, "--namespace", namespace]
    return args


def _script(model: dict[str, Any], args: list[str]) -> str:
    lines = ["set -eu"]
    if model.get("architecture"):
        arch = {"name": model["name"], "architecture": model["architecture"]}
        lines.append(f"printf '%s' {shlex.quote(json.dumps(arch, sort_keys=True))} > /tmp/architecture.json")
    lines.append("exec " + " ".join(shlex.quote(a) for a in args))
    return "\n".join(lines)


def profiling_job(llmd_name: str, namespace: str, model: dict[str, Any], gpu_product: str,
                  tensor_parallel_size: int, formats: list[str], image: str | None = None,
                  owner_reference: dict | None = None) -> list[dict]:
    """ServiceAccount, Role, RoleBinding and Job that profile `model` (a spec.model dict: name, and
    architecture for models the catalog does not know) on `tensor_parallel_size` GPUs of `gpu_product`."""
    if not formats:
        raise ValueError("formats: give at least one weight format")
    tp = int(tensor_parallel_size)
    if tp < 1:
        raise ValueError("tensor_parallel_size must be >= 1")
    name = profiler_name(llmd_name)
    cm = configmap_name(llmd_name)
    args = profile_args(model, gpu_product, tp, list(formats), cm, namespace)
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, namespace, llmd_name, owner_reference)}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": _meta(name, namespace, llmd_name, owner_reference),
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [cm],
             "verbs": ["get", "update", "patch"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": _meta(name, namespace, llmd_name, owner_reference),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "HOME", "value": "/tmp"}]
    if owner_reference:
        env.append({"name": "LLMD_OWNER_REFERENCE", "value": json.dumps(owner_reference, sort_keys=True)})
    container = {
        "name": "profiler",
        "image": image or DEFAULT_PROFILER_IMAGE,
        "command": ["/bin/sh", "-c", _script(model, args)],
        "env": env,
        "resources": {"limits": {GPU_RESOURCE: tp}, "requests": {GPU_RESOURCE: tp}},
        "volumeMounts": [{"name": "out", "mountPath": "/out"}, {"name": "tmp", "mountPath": "/tmp"},
                         {"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    pod_labels = _labels(llmd_name)
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": _meta(name, namespace, llmd_name, owner_reference),
        "spec": {
            "backoffLimit": 1,
            "ttlSecondsAfterFinished": TTL_SECONDS,
            "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": name,
                    "restartPolicy": "Never",
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": [gpu_product]}]}]}}},
                    "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
                    "containers": [container],
                    "volumes": [{"name": "out", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}},
                                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}],
                },
            },
        },
    }
    return [sa, role, binding, job]
