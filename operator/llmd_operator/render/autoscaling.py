"""HorizontalPodAutoscalers for HPA-owned pools: one per capacity-type Deployment."""

from __future__ import annotations

from ..api.llmdeployment import LLMDeployment
from ..api.units import parse_duration
from ..planning.plan import ENGINE, PoolPlan
from . import labels


def _window(block, fallback, attribute: str) -> int | None:
    for source in (block, fallback):
        value = getattr(source, attribute, None) if source is not None else None
        if value:
            return int(parse_duration(value))
    return None


def hpa(llmd: LLMDeployment, pool: PoolPlan, capacity_type: str, bounds: dict) -> dict:
    name = llmd.metadata["name"]
    workload = labels.workload_name(name, pool.role, capacity_type)
    block, top = pool.scaling, llmd.spec.autoscaling
    metrics = []
    utilization = getattr(block, "target_gpu_utilization", None) or getattr(top, "target_gpu_utilization", None)
    latency = getattr(block, "target_latency", None) or (top.target_latency if pool.role == "monolithic" else None)
    if utilization or not latency:
        metrics.append(_pods_metric(ENGINE["hpa_metrics"]["gpu_utilization"],
                                    str(utilization or ENGINE["hpa_default_gpu_utilization"])))
    if latency:
        metrics.append(_pods_metric(ENGINE["hpa_metrics"]["inter_token_latency_p95"],
                                    f"{int(parse_duration(latency) * 1000)}m"))
    behavior = {}
    up = _window(block, top, "scale_up_delay")
    down = _window(block, top, "scale_down_delay")
    if up is not None:
        behavior["scaleUp"] = {"stabilizationWindowSeconds": up}
    if down is not None:
        behavior["scaleDown"] = {"stabilizationWindowSeconds": down}
    spec = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": workload},
        "minReplicas": max(1, bounds["min"]),
        "maxReplicas": max(1, bounds["max"]),
        "metrics": metrics,
    }
    if behavior:
        spec["behavior"] = behavior
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": workload, "namespace": llmd.metadata.get("namespace", "default"),
                     "labels": {**labels.owned_selector(name), labels.ROLE_LABEL: pool.role,
                                labels.CAPACITY_LABEL: capacity_type}},
        "spec": spec,
    }


def _pods_metric(metric: str, average_value: str) -> dict:
    return {"type": "Pods", "pods": {"metric": {"name": metric},
                                     "target": {"type": "AverageValue", "averageValue": average_value}}}
