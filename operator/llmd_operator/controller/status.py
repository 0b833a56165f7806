"""Pure status building: what to tell the user about a plan and the children that realise it."""

from __future__ import annotations

from datetime import datetime, timezone

from ..planning.plan import DeploymentPlan
from ..render import labels

GIB = 2**30


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, ok: bool | None, reason: str, message: str, generation: int | None) -> dict:
    return {
        "type": type_,
        "status": "Unknown" if ok is None else ("True" if ok else "False"),
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def find_condition(status_: dict | None, type_: str) -> dict:
    """The condition of this type in a status, or {}."""
    return next((c for c in (status_ or {}).get("conditions") or [] if c.get("type") == type_), {})


def merge_conditions(old: list[dict], new: list[dict], drop: tuple[str, ...] = ()) -> list[dict]:
    """New conditions replace old ones of the same type; lastTransitionTime moves only when status changes.
    `drop`: types that no longer apply (their writer stopped), removed."""
    by_type = {c["type"]: c for c in old or [] if c["type"] not in drop}
    merged = []
    for cond in new:
        previous = by_type.pop(cond["type"], None)
        stamp = previous.get("lastTransitionTime") if previous and previous.get("status") == cond["status"] else None
        merged.append({**cond, "lastTransitionTime": stamp or now()})
    merged += by_type.values()  # conditions other parts of the operator own (MetricsAvailable, ...)
    return merged


def differs(old: dict, new: dict) -> bool:
    """Whether patching `new` over the stored status would change anything a reader sees.

    Only the keys of `new` count (a patch leaves the others), and a condition's lastTransitionTime does not.
    """
    def comparable(s: dict) -> dict:
        s = dict(s)
        s["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in s.get("conditions") or []]
        return s

    return comparable({k: old.get(k) for k in new}) != comparable(new)


def plan_summary(plan: DeploymentPlan) -> dict:
    fit = plan.fit
    return {
        "gpuProduct": plan.gpu.product,
        "gpusPerReplica": plan.tensor_parallel_size,
        "tensorParallelSize": plan.tensor_parallel_size,
        "quantization": plan.scheme.quantization,
        "kvCacheDtype": plan.kv_cache_dtype,
        "weightsGib": round(fit.weights_bytes / GIB, 2),
        "weightsPerGpuGib": round(fit.weights_per_gpu_bytes / GIB, 2),
        "kvCacheGibPerGpu": round(max(0, fit.kv_per_gpu_bytes) / GIB, 2),
        "kvBytesPerToken": fit.kv_bytes_per_token,
        "kvCapacityTokens": fit.kv_capacity_tokens,
        "maxModelLen": max(p.max_model_len for p in plan.pools),
        "maxNumSeqs": max(p.max_num_seqs for p in plan.pools),
        "checkpoint": plan.checkpoint,
    }


def plan_message(plan: DeploymentPlan) -> str:
    cost = "no price known" if plan.cost_per_hour is None else f"${plan.cost_per_hour:.2f}/h"
    return (f"{plan.tensor_parallel_size} x {plan.gpu.product} per replica, {plan.scheme.name}, "
            f"weights {plan.fit.weights_bytes / GIB:.1f} GiB, KV cache {plan.fit.kv_capacity_tokens} tokens, {cost}")


def pool_status(plan: DeploymentPlan, workloads: list[dict]) -> list[dict]:
    """Per pool: desired, existing and ready replicas from the live Deployments, split by capacity type."""
    pools = []
    for pool in plan.pools:
        mine = [w for w in workloads if w["metadata"].get("labels", {}).get(labels.ROLE_LABEL) == pool.role]
        spot = [w for w in mine if w["metadata"]["labels"].get(labels.CAPACITY_LABEL) == "spot"]
        desired = sum(w.get("spec", {}).get("replicas", 0) or 0 for w in mine) if mine else pool.replicas
        pools.append({
            "role": pool.role,
            "desiredReplicas": desired,
            "replicas": sum(w.get("status", {}).get("replicas", 0) or 0 for w in mine),
            "readyReplicas": sum(w.get("status", {}).get("readyReplicas", 0) or 0 for w in mine),
            "spotReplicas": sum(w.get("spec", {}).get("replicas", 0) or 0 for w in spot),
            "onDemandReplicas": desired - sum(w.get("spec", {}).get("replicas", 0) or 0 for w in spot),
            "replicasOwner": pool.replicas_owner,
            "deployments": sorted(w["metadata"]["name"] for w in mine),
        })
    return pools


def still_serving(workloads: list[dict]) -> dict:
    """While a changed spec cannot be planned, the Deployments the last plan that fit built keep serving:
    their counts ({} when there are none; status.plan and status.pools still describe that plan)."""
    if not workloads:
        return {}
    desired = sum(w["spec"].get("replicas") or 0 for w in workloads)
    ready = sum((w.get("status") or {}).get("readyReplicas") or 0 for w in workloads)
    return {"ready": f"{ready}/{desired}", "readyReplicas": ready, "replicas": desired}


def readiness(pools: list[dict], workloads: list[dict], pods: list[dict]) -> tuple[bool, str, str]:
    """(ready, reason, message) from the pools' replicas and, when not ready, the pods' own conditions."""
    desired = sum(p["desiredReplicas"] for p in pools)
    ready = sum(p["readyReplicas"] for p in pools)
    if desired == 0:
        return True, "ScaledToZero", "every pool is scaled to zero; demand wakes it"
    if all(p["readyReplicas"] >= p["desiredReplicas"] for p in pools) and not _rolling(workloads):
        return True, "AllReplicasReady", f"{ready}/{desired} replicas ready"
    for pod in pods:
        for cond in pod.get("status", {}).get("conditions", []) or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return False, "Unschedulable", f"{ready}/{desired} replicas ready; pod {pod['metadata']['name']}: {cond.get('message', '')}"
    if _rolling(workloads):
        return False, "RollingOut", f"{ready}/{desired} replicas ready; new pods are replacing old ones"
    return False, "PodsStarting", f"{ready}/{desired} replicas ready; model servers are starting"


def _rolling(workloads: list[dict]) -> bool:
    for w in workloads:
        spec, status = w.get("spec", {}), w.get("status", {})
        if status.get("observedGeneration", 0) < w["metadata"].get("generation", 0):
            return True
        if (status.get("updatedReplicas", 0) or 0) < (spec.get("replicas", 0) or 0):
            return True
        if (status.get("replicas", 0) or 0) > (spec.get("replicas", 0) or 0):
            return True
    return False
