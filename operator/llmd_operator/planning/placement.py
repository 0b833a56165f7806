"""Where pods may run: GPU product constraints from node labels, and the spot/on-demand split."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from ..api.core import Resources, Toleration
from ..api.inferencescheduler import InferenceSchedulerSpec
from ..catalog import Catalog, GpuProduct

DEFAULT_MAX_SPOT_RATIO = 0.8  # the llm-d cost guide's spotInstancePolicy default ("up to 80% spot")


def allowed_gpus(catalog: Catalog, node_selector: dict[str, str]) -> tuple[list[GpuProduct], str | None]:
    """GPU products a node selector allows, and the label that constrained them (None: any product)."""
    conventions = catalog.conventions
    for label in [conventions["gpu_product_label"], *conventions["gpu_product_alias_labels"]]:
        if label in node_selector:
            return catalog.gpus_matching(node_selector[label]), f"{label}={node_selector[label]}"
    return list(catalog.gpus.values()), None


def node_matches(node_labels: dict[str, str], expressions: list[dict]) -> bool:
    """Whether a node's labels satisfy node-affinity match expressions (In, NotIn, Exists, DoesNotExist)."""
    for e in expressions:
        present, value = e["key"] in node_labels, node_labels.get(e["key"])
        operator = e["operator"]
        if (operator == "In" and value not in e["values"]) or (operator == "NotIn" and value in e["values"]) \
                or (operator == "Exists" and not present) or (operator == "DoesNotExist" and present):
            return False
    return True


def offered_products(catalog: Catalog, convention: str, gpu_nodes: tuple[dict[str, str], ...] | None,
                     pools: list[tuple[dict[str, str], SpotSplit]]) -> set[str]:
    """GPU products the cluster's nodes offer every pool: for each (nodeSelector, spot split), a node with
    the selector's labels for each capacity type the pool may run on. Empty when the nodes are not known
    or none offers all (a node provisioner may still add them): any product then."""
    rules = catalog.conventions["conventions"][convention]
    product_label = catalog.conventions["gpu_product_label"]
    offered = None
    for selector, split in pools:
        types = ["spot"] if split.max_spot_ratio >= 1 else ["on_demand"] if split.max_spot_ratio <= 0 else ["spot", "on_demand"]
        if split.preference == "required" and split.why.startswith("nodeSelector"):
            types = []  # the selector itself names the capacity type, as in the rendered affinity
        for kind in types or [None]:
            wanted = [{"key": k, "operator": "In", "values": [v]} for k, v in selector.items()]
            wanted += rules[kind] if kind else []
            found = {labels[product_label] for labels in gpu_nodes or ()
                     if product_label in labels and node_matches(labels, wanted)}
            offered = found if offered is None else offered & found
    return offered or set()


@dataclass(frozen=True)
class SpotSplit:
    preference: str  # required | preferred | never
    max_spot_ratio: float
    why: str

    def split(self, replicas: int) -> tuple[int, int]:
        """(spot, on-demand) replicas: spot never above max_spot_ratio of the total."""
        spot = math.floor(replicas * self.max_spot_ratio + 1e-9)
        return spot, replicas - spot


def scheduler_spot_policy(scheduler: InferenceSchedulerSpec | None):
    """The scheduler's spotInstancePolicy, when its cost optimization is on; else None."""
    cost = scheduler.cost_optimization if scheduler else None
    return cost.spot_instance_policy if cost and cost.enabled else None


def spot_split(
    catalog: Catalog,
    resources: Resources | None,
    node_selector: dict[str, str],
    tolerations: list[Toleration],
    scheduler_spot_policy=None,
) -> SpotSplit:
    """How a pool divides between spot and on-demand, and which setting decided it."""
    spot_labels = catalog.conventions["spot_node_selectors"]
    for key, value in node_selector.items():
        if spot_labels.get(key) == value:
            return SpotSplit("required", 1.0, f"nodeSelector {key}={value} selects spot nodes only")
    policies = resources.policies if resources and resources.policies else None
    ratio = policies.max_spot_ratio if policies and policies.max_spot_ratio is not None else None
    scheduler_ratio = None
    if scheduler_spot_policy is not None and scheduler_spot_policy.enabled:
        scheduler_ratio = scheduler_spot_policy.max_spot_ratio
    preferred_ratio = ratio if ratio is not None else (scheduler_ratio if scheduler_ratio is not None else DEFAULT_MAX_SPOT_RATIO)
    if policies and policies.spot_preference:
        preference = policies.spot_preference
        if preference == "required":
            return SpotSplit("required", 1.0, "resources.policies.spotPreference: required")
        if preference == "never":
            return SpotSplit("never", 0.0, "resources.policies.spotPreference: never")
        return SpotSplit("preferred", preferred_ratio, "resources.policies.spotPreference: preferred")
    if policies and policies.cost_optimization == "conservative":
        return SpotSplit("never", 0.0, "resources.policies.costOptimization: conservative")
    if policies and policies.cost_optimization == "aggressive":
        return SpotSplit("preferred", preferred_ratio, "resources.policies.costOptimization: aggressive")
    if scheduler_ratio is not None:
        return SpotSplit("preferred", scheduler_ratio, "the scheduler's spotInstancePolicy")
    spot_taints = {t["key"] for c in catalog.conventions["conventions"].values() for t in c["spot_tolerations"]}
    if any(t.key in spot_taints for t in tolerations):
        return SpotSplit("preferred", preferred_ratio, "tolerations allow spot nodes")
    return SpotSplit("never", 0.0, "no spot preference given")


def integer_bounds(affinity: dict | None) -> tuple[dict | None, list[str]]:
    """Node-affinity Gt/Lt values as the integers Kubernetes requires, with the same meaning, and notes.

    The scheduler compares Gt/Lt as integers and fails on "2.0". For integer label values, v < x holds
    exactly when v < ceil(x), and v > x exactly when v > floor(x), so the rewrite selects the same nodes.
    """
    if not affinity or "nodeAffinity" not in affinity:
        return affinity, []
    fixed = copy.deepcopy(affinity)
    node = fixed["nodeAffinity"]
    terms = list((node.get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or [])
    terms += [p.get("preference") or {} for p in node.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
    notes = []
    for term in terms:
        for expression in term.get("matchExpressions") or []:
            operator, values = expression.get("operator"), expression.get("values") or []
            if operator not in ("Gt", "Lt") or len(values) != 1:
                continue
            try:
                number = float(values[0])
            except ValueError:
                continue
            bound = math.ceil(number) if operator == "Lt" else math.floor(number)
            if str(bound) != values[0]:
                notes.append(f"affinity {expression['key']} {operator} {values[0]} applied as {operator} {bound} "
                             "(Kubernetes compares Gt/Lt as integers)")
                expression["values"] = [str(bound)]
    return fixed, notes
