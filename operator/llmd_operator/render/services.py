"""Services, PodDisruptionBudgets and the routing ConfigMap of an LLMDeployment."""

from __future__ import annotations

import yaml

from ..api.llmdeployment import LLMDeployment
from ..planning.plan import DeploymentPlan, PoolPlan
from . import labels


def _meta(llmd: LLMDeployment, name: str, role: str | None = None) -> dict:
    object_labels = {**labels.owned_selector(llmd.metadata["name"]), "app.kubernetes.io/part-of": "llm-d"}
    if role:
        object_labels[labels.ROLE_LABEL] = role
    return {"name": name, "namespace": llmd.metadata.get("namespace", "default"), "labels": object_labels}


def services(llmd: LLMDeployment, plan: DeploymentPlan) -> list[dict]:
    """`<name>` (dots turned to dashes) reaches the pods that take requests (monolithic or decode); `<name>-prefill` the prefill pool."""
    name = llmd.metadata["name"]
    port = llmd.spec.serving.port if llmd.spec.serving else 8000
    ports = [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]
    result = [{
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(llmd, labels.service_name(name)),
        "spec": {"type": "ClusterIP", "ports": ports,
                 "selector": {labels.DEPLOYMENT_LABEL: name, labels.ENTRYPOINT_LABEL: "true"}},
    }]
    if plan.mode == "disaggregated":
        result.append({
            "apiVersion": "v1", "kind": "Service", "metadata": _meta(llmd, labels.service_name(f"{name}-prefill"), "prefill"),
            "spec": {"type": "ClusterIP", "ports": ports,
                     "selector": {labels.DEPLOYMENT_LABEL: name, labels.ROLE_LABEL: "prefill"}},
        })
    return result


def disruption_budget(llmd: LLMDeployment, pool: PoolPlan) -> dict:
    """At most one pod of a pool voluntarily evicted at a time (node drains, upgrades)."""
    name = llmd.metadata["name"]
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": _meta(llmd, labels.pool_name(name, pool.role), pool.role),
        "spec": {"maxUnavailable": 1,
                 "selector": {"matchLabels": {labels.DEPLOYMENT_LABEL: name, labels.ROLE_LABEL: pool.role}}},
    }


def routing_config(llmd: LLMDeployment) -> dict | None:
    """The routing section, published for the request scheduler (endpoint picker) to read."""
    if not llmd.spec.routing:
        return None
    name = llmd.metadata["name"]
    return {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(llmd, f"{name}-routing"),
        "data": {"routing.yaml": yaml.safe_dump(llmd.spec.routing.to_wire(), sort_keys=False)},
    }
