"""Node affinity and tolerations: the user's rules, the GPU product, and spot or on-demand capacity."""

from __future__ import annotations

import copy

from ..catalog import Catalog
from ..planning.plan import DeploymentPlan, PoolPlan


def node_affinity_terms(catalog: Catalog, convention: str, gpu_product: str, capacity_type: str) -> list[dict]:
    """Match expressions every pod of a workload needs: its GPU product and its capacity type."""
    rules = catalog.conventions["conventions"][convention]
    expressions = [{"key": catalog.conventions["gpu_product_label"], "operator": "In", "values": [gpu_product]}]
    expressions += copy.deepcopy(rules["spot" if capacity_type == "spot" else "on_demand"])
    return expressions


def affinity(catalog: Catalog, convention: str, plan: DeploymentPlan, pool: PoolPlan, capacity_type: str,
             user_nodeselector_decides_capacity: bool) -> dict:
    """The user's affinity with the operator's required expressions ANDed into every node selector term."""
    merged = copy.deepcopy(pool.affinity or {})
    ours = node_affinity_terms(catalog, convention, plan.gpu.product, capacity_type)
    if user_nodeselector_decides_capacity:
        ours = ours[:1]  # the user's own nodeSelector already pins the capacity type (e.g. instance-type: spot)
    node = merged.setdefault("nodeAffinity", {})
    required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms = required.get("nodeSelectorTerms") or [{}]
    required["nodeSelectorTerms"] = [
        {**term, "matchExpressions": [*term.get("matchExpressions", []), *copy.deepcopy(ours)]} for term in terms
    ]
    return merged


def tolerations(catalog: Catalog, convention: str, pool: PoolPlan, capacity_type: str) -> list[dict]:
    """The user's tolerations, then the GPU taint's, then the spot taints' (spot workloads only)."""
    result = [t.to_wire() for t in pool.tolerations]
    extra = copy.deepcopy(catalog.conventions["gpu_tolerations"])
    if capacity_type == "spot":
        extra += copy.deepcopy(catalog.conventions["conventions"][convention]["spot_tolerations"])
    for toleration in extra:
        if toleration not in result:
            result.append(toleration)
    return result
