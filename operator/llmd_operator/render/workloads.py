"""Deployments of model-server pods: one per pool and capacity type."""

from __future__ import annotations

import math

from ..api.llmdeployment import LLMDeployment
from ..api.units import parse_duration
from ..catalog import Catalog
from ..planning.plan import ENGINE, DeploymentPlan, PoolPlan
from . import labels, placement

SHM_MOUNT = "/dev/shm"


def capacity_split(pool: PoolPlan) -> dict[str, dict]:
    """Per capacity type that gets a Deployment: its initial replicas and, for HPA pools, its bounds."""
    ratio = pool.spot.max_spot_ratio
    spot_max = math.floor(pool.max_replicas * ratio + 1e-9)
    spot_min = math.floor(pool.min_replicas * ratio + 1e-9)
    split = {
        "spot": {"replicas": pool.spot_replicas, "min": spot_min, "max": spot_max},
        "on-demand": {"replicas": pool.on_demand_replicas, "min": pool.min_replicas - spot_min,
                      "max": pool.max_replicas - spot_max},
    }
    if pool.replicas_owner == "spec":
        return {k: v for k, v in split.items() if v["replicas"] > 0} or {"on-demand": split["on-demand"]}
    if pool.replicas_owner == "hpa":
        return {k: v for k, v in split.items() if v["max"] > 0}
    # The SLO loop keeps an on-demand Deployment even at zero replicas: it is where spot replicas fall back to.
    return {k: v for k, v in split.items() if k == "on-demand" or v["max"] > 0}


def container(llmd: LLMDeployment, plan: DeploymentPlan, pool: PoolPlan) -> dict:
    port = llmd.spec.serving.port if llmd.spec.serving else 8000
    resources = {"requests": {}, "limits": {}}
    if pool.resources:
        resources["requests"].update(pool.resources.requests or {})
        resources["limits"].update(pool.resources.limits or {})
    for block in resources.values():
        block["nvidia.com/gpu"] = str(pool.gpus_per_replica)
    ports = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    env = [{"name": "HF_HUB_ENABLE_HF_TRANSFER", "value": "1"}]
    if pool.role in ("prefill", "decode"):
        ports.append({"name": "nixl", "containerPort": ENGINE["nixl_side_channel_port"], "protocol": "TCP"})
        env += [
            {"name": "VLLM_NIXL_SIDE_CHANNEL_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "VLLM_NIXL_SIDE_CHANNEL_PORT", "value": str(ENGINE["nixl_side_channel_port"])},
        ]
    probe = {"httpGet": {"path": ENGINE["health_path"], "port": "http"}}
    return {
        "name": "vllm",
        "image": plan.image,
        "command": ["vllm"],
        "args": pool.engine_args,
        "ports": ports,
        "env": env,
        "resources": resources,
        # Model loading takes minutes: the startup probe allows 20 of them before liveness takes over.
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 120},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 6},
        "volumeMounts": [{"name": "dshm", "mountPath": SHM_MOUNT}],
    }


def deployment(llmd: LLMDeployment, plan: DeploymentPlan, pool: PoolPlan, capacity_type: str, replicas: int,
               catalog: Catalog, convention: str, drain_timeout: str | None) -> dict:
    name = llmd.metadata["name"]
    pod_labels = labels.pod_labels(name, llmd.spec.model.name, pool.role, capacity_type)
    selector = {k: pod_labels[k] for k in (labels.DEPLOYMENT_LABEL, labels.ROLE_LABEL, labels.CAPACITY_LABEL)}
    pinned_by_user = pool.spot.preference == "required" and pool.spot.why.startswith("nodeSelector")
    pod_spec = {
        "containers": [container(llmd, plan, pool)],
        "affinity": placement.affinity(catalog, convention, plan, pool, capacity_type, pinned_by_user),
        "tolerations": placement.tolerations(catalog, convention, pool, capacity_type),
        "terminationGracePeriodSeconds": int(parse_duration(drain_timeout)) if drain_timeout else 60,
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{max(2, 2 * pool.gpus_per_replica)}Gi"}}],
    }
    if pool.node_selector:
        pod_spec["nodeSelector"] = dict(pool.node_selector)
    spec = {
        "selector": {"matchLabels": selector},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(llmd.spec.serving.port if llmd.spec.serving else 8000),
                    "prometheus.io/path": ENGINE["metrics_path"],
                },
            },
            "spec": pod_spec,
        },
    }
    if pool.replicas_owner == "spec":
        spec["replicas"] = replicas  # HPA- and loop-owned counts are never written by the renderer
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": labels.workload_name(name, pool.role, capacity_type),
            "namespace": llmd.metadata.get("namespace", "default"),
            "labels": {k: v for k, v in pod_labels.items() if k != labels.METRICS_LABEL},
            "annotations": {
                "llm-d.io/replicas-owner": pool.replicas_owner,
                "llm-d.io/initial-replicas": str(replicas),
            },
        },
        "spec": spec,
    }
