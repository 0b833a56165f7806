"""Reconcile one LLMDeployment: plan, render, apply what changed, prune what is no longer wanted, report."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import yaml
from pydantic import ValidationError

from ..api import inferencescheduler, llmdeployment
from ..api.inferencescheduler import InferenceScheduler
from ..api.llmdeployment import LLMDeployment
from ..catalog import load_catalog
from ..planning.plan import DeploymentPlan, PlanError, PlanOptions, plan_deployment
from ..planning.scheduler_ref import resolve_scheduler
from ..render import labels, render_children
from ..render.profiling_job import configmap_name
from ..slo import memory as slo_memory
from . import kube, metrics, status
from .config import CONFIG

log = logging.getLogger("llmd_operator.reconcile")
_owner_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
_announced: dict[str, str] = {}  # uid -> the plan last announced in an event
# uid -> when its DELETED event came: a reconcile of an older copy, queued or in flight, must not
# bring back the series forget() removed (kept an hour, far longer than any queue holds a key)
_deleted: dict[str, float] = {}
DELETED_KEPT_S = 3600.0


@dataclass
class Outcome:
    """What one reconcile did, for events and tests."""

    plan: DeploymentPlan | None = None
    problem: str | None = None
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    status_changed: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def catalog():
    """The catalog with the models and prices ConfigMaps (if configured) merged over it."""
    return load_catalog(model_overrides=_configmap_yaml(CONFIG.models_configmap, "models.yaml"),
                        price_overrides=_configmap_yaml(CONFIG.price_overrides_configmap, "prices.yaml"))


def _configmap_yaml(name: str | None, key: str) -> dict | None:
    if not name:
        return None
    found = kube.get_configmap(CONFIG.home_namespace, name)
    text = ((found or {}).get("data") or {}).get(key)
    return yaml.safe_load(text) if text else None


def schedulers() -> list[InferenceScheduler]:
    """Every InferenceScheduler the operator may use; malformed ones are skipped (the API server refuses them)."""
    parsed = []
    for body in kube.list_schedulers():
        try:
            parsed.append(InferenceScheduler.model_validate({k: body[k] for k in ("metadata", "spec") if k in body}))
        except ValidationError:
            continue
    return parsed


def find_scheduler(llmd: LLMDeployment) -> InferenceScheduler | None:
    if not llmd.spec.scheduler_name:
        return None
    return resolve_scheduler(llmd, schedulers(), CONFIG.home_namespace)


def forget(uid: str, namespace: str, name: str) -> None:
    """Drop what the operator remembers of an LLMDeployment that is gone, and its metrics. Under its
    owner lock, so a reconcile in flight finishes (and records) first and none records after."""
    now = time.monotonic()
    with _owner_locks[uid]:
        _deleted[uid] = now
        metrics.forget(namespace, name)
        _announced.pop(uid, None)
    _owner_locks.pop(uid, None)
    for old in [u for u, since in _deleted.items() if now - since > DELETED_KEPT_S]:
        _deleted.pop(old, None)


def owner_reference(body: dict) -> dict:
    return {
        "apiVersion": f"{llmdeployment.GROUP}/{llmdeployment.VERSION}",
        "kind": llmdeployment.KIND,
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def reconcile(body: dict) -> Outcome:
    """Bring one LLMDeployment's children and status in line with its spec. Safe to call any number of times."""
    key = body["metadata"]["uid"]
    with _owner_locks[key]:
        started = time.monotonic()
        try:
            if key in _deleted or body["metadata"].get("deletionTimestamp") \
                    or kube.namespace_terminating(body["metadata"]["namespace"]):
                return Outcome()  # garbage collection removes the children; nothing to apply or report
            outcome = _reconcile(body)
            metrics.RECONCILES.labels(kind="LLMDeployment", result="error" if outcome.problem else "ok").inc()
            return outcome
        except Exception as error:
            if kube.namespace_going_away(error):
                return Outcome()  # its namespace is being deleted, and everything in it with it
            metrics.RECONCILES.labels(kind="LLMDeployment", result="exception").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)


def running_on(body: dict) -> str | None:
    """The GPU product the deployment was last planned on (status.plan.gpuProduct)."""
    return ((body.get("status") or {}).get("plan") or {}).get("gpuProduct")


def _reconcile(body: dict) -> Outcome:
    meta = body["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], meta.get("generation")
    outcome = Outcome()
    llmd = LLMDeployment.model_validate({"metadata": meta, "spec": body["spec"]})
    scheduler = find_scheduler(llmd)
    the_catalog = catalog()
    options = PlanOptions(provider=CONFIG.provider, capacity_convention=CONFIG.capacity_convention,
                          model_server_image=CONFIG.model_server_image,
                          scheduler=scheduler.spec if scheduler else None,
                          gpu_nodes=kube.gpu_node_labels(the_catalog.conventions["gpu_product_label"]),
                          current_gpu_product=running_on(body))
    selector = labels.owned_selector(name)
    profiling = bool(llmd.spec.profiling and llmd.spec.profiling.enabled)
    live = {(c["kind"], c["metadata"]["name"]): c for c in kube.list_children(namespace, selector, profiling)}
    planned_before = status.find_condition(body.get("status"), "Planned")
    conditions = []
    scheduler_ref = None
    # conditions whose writer no longer runs for this deployment: removed rather than left as they last were
    gone = () if llmd.spec.scheduler_name else ("SchedulerResolved",)
    if llmd.spec.scheduler_name:
        if scheduler:
            scheduler_ref = f"{scheduler.metadata.get('namespace')}/{scheduler.metadata.get('name')}"
            conditions.append(status.condition("SchedulerResolved", True, "Found", f"using InferenceScheduler {scheduler_ref}", generation))
        else:
            conditions.append(status.condition(
                "SchedulerResolved", False, "SchedulerNotFound",
                f"no InferenceScheduler {llmd.spec.scheduler_name!r} in namespace {namespace} or {CONFIG.home_namespace}; "
                "its SLO and spot policies do not apply until it exists", generation))
    elif llmd.spec.scheduling and llmd.spec.scheduling.slo_policy:
        scheduler_ref = "inline"
    try:
        plan = plan_deployment(llmd, the_catalog, options)
    except PlanError as error:
        # An impossible plan builds nothing: no half-built children, and the numbers in the condition.
        # What an earlier plan built keeps serving; status counts it, and says it is the earlier plan.
        outcome.problem = str(error)
        still = status.still_serving([c for (kind, _), c in live.items() if kind == "Deployment"])
        serving = (f"; the last plan that fit keeps serving, {still['ready']} replicas ready "
                   "(status.plan and status.pools describe it)") if still else ""
        conditions += [
            status.condition("Planned", False, "PlanImpossible", outcome.problem, generation),
            status.condition("Ready", False, "PlanImpossible", outcome.problem + serving, generation),
        ]

        def impossible(current: dict) -> dict:
            return {"observedGeneration": generation, **still,
                    "conditions": status.merge_conditions(current.get("conditions"), conditions, gone)}

        if kube.write_status(llmdeployment, body, impossible):
            outcome.status_changed = True
            if (planned_before.get("reason"), planned_before.get("message")) != ("PlanImpossible", outcome.problem):
                # once per problem, not on each change of the counts
                outcome.events.append(("Warning", "PlanImpossible", outcome.problem))
        return outcome
    outcome.plan = plan
    drain = None
    if scheduler and scheduler.spec.cost_optimization and scheduler.spec.cost_optimization.spot_instance_policy:
        interruption = scheduler.spec.cost_optimization.spot_instance_policy.interruption
        drain = interruption.drain_timeout if interruption else None
    published = profiling and kube.get_configmap(namespace, configmap_name(name)) is not None
    desired = render_children(llmd, plan, the_catalog, CONFIG.capacity_convention, drain, published)
    owner = owner_reference(body)
    for child in desired:
        child["metadata"]["ownerReferences"] = [owner]
        existing = live.get((child["kind"], child["metadata"]["name"]))
        _carry_loop_replicas(child, existing)
        done = kube.apply(child, existing)
        if done == "created":
            outcome.created.append(f"{child['kind']}/{child['metadata']['name']}")
        elif done == "updated":
            outcome.updated.append(f"{child['kind']}/{child['metadata']['name']}")
    wanted = {(c["kind"], c["metadata"]["name"]) for c in desired}
    for key, child in live.items():
        if key == ("ConfigMap", configmap_name(name)):
            continue  # the profiler's output: kept until the LLMDeployment goes
        if key not in wanted and _owned_by(child, meta["uid"]):
            kube.delete(child)
            outcome.pruned.append(f"{key[0]}/{key[1]}")
    if outcome.created or outcome.updated or outcome.pruned:
        live = {(c["kind"], c["metadata"]["name"]): c for c in kube.list_children(namespace, selector, profiling)}
    workloads = [c for (kind, _), c in live.items() if kind == "Deployment"]
    pools = status.pool_status(plan, workloads)
    pods = kube.list_pods(namespace, selector) if any(p["readyReplicas"] < p["desiredReplicas"] for p in pools) else []
    ready, reason, message = status.readiness(pools, workloads, pods)
    conditions += [
        status.condition("Planned", True, "PlanReady", status.plan_message(plan) + ("; " + "; ".join(plan.notes) if plan.notes else ""), generation),
        status.condition("Ready", ready, reason, message, generation),
    ]
    desired_total = sum(p["desiredReplicas"] for p in pools)
    cost = _cost(plan, pools)
    planned = {
        "observedGeneration": generation,
        "mode": plan.mode,
        "ready": f"{sum(p['readyReplicas'] for p in pools)}/{desired_total}",
        "readyReplicas": sum(p["readyReplicas"] for p in pools),
        "replicas": desired_total,
        "costPerHour": cost,
        "plan": status.plan_summary(plan),
        "pools": pools,
        "scheduler": scheduler_ref,  # None removes it (merge patch) once the spec names no scheduler
    }
    metrics.record_pools(namespace, name, pools, cost)

    if not plan.sized_by_slo_loop:
        # nothing here is sized by the SLO loop (any more): its conditions, readings and memory no longer apply
        if status.find_condition(body.get("status") or {}, "MetricsAvailable"):
            kube.delete({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": slo_memory.configmap_name(name), "namespace": namespace}})
        gone += LOOP_CONDITIONS
        planned.update({field_: None for field_ in LOOP_FIELDS})
        metrics.forget_loop_readings(namespace, name)

    def reported(current: dict) -> dict:
        return {**planned, "conditions": status.merge_conditions(current.get("conditions"), conditions, gone)}

    if kube.write_status(llmdeployment, body, reported):
        outcome.status_changed = True
    if outcome.created or outcome.updated or outcome.pruned:
        parts = [f"{verb} {', '.join(items)}" for verb, items in
                 (("created", outcome.created), ("updated", outcome.updated), ("removed", outcome.pruned)) if items]
        outcome.events.append(("Normal", "Applied", "; ".join(parts)))
    announcement = status.plan_message(plan)
    reported_before = planned_before.get("message", "") if planned_before.get("status") == "True" else ""
    if meta["uid"] not in _announced and (reported_before == announcement or reported_before.startswith(announcement + "; ")):
        _announced[meta["uid"]] = announcement  # an earlier run of the operator (a restart, a new leader) told it
    if _announced.get(meta["uid"]) != announcement:
        # Remembered per object: concurrent child events carry a stale status, which would repeat the event.
        _announced[meta["uid"]] = announcement
        outcome.events.append(("Normal", "Planned", announcement))
        for note in plan.notes:
            if note.startswith("quantization fallback"):
                outcome.events.append(("Warning", "QuantizationFallback", note))
    return outcome


# What the SLO loop writes into an LLMDeployment's status (lastDecision stays: it is dated history).
LOOP_CONDITIONS = ("MetricsAvailable", "BudgetLimited", "SpotFallback")
LOOP_FIELDS = ("sloScores", "capacityProfile", "policyState")


def _carry_loop_replicas(child: dict, existing: dict | None) -> None:
    """A loop-owned Deployment starts at its planned count, then keeps whatever the loop set.

    Leaving replicas out would create it at the API default of 1 and, once applied with replicas,
    reset it; carrying the live count keeps every apply a no-op for replicas. The loop scales under
    the same per-object lock as this reconcile, so the live count cannot be stale here.
    """
    annotations = child["metadata"].get("annotations", {})
    if child["kind"] != "Deployment" or annotations.get("llm-d.io/replicas-owner") != "slo-loop":
        return
    if existing is None:
        child["spec"]["replicas"] = int(annotations.get("llm-d.io/initial-replicas", "0"))
    else:
        child["spec"]["replicas"] = existing["spec"].get("replicas", 0)


def _cost(plan: DeploymentPlan, pools: list[dict]) -> float | None:
    if plan.price_on_demand is None:
        return None
    per_replica = plan.tensor_parallel_size
    total = sum(per_replica * (p["spotReplicas"] * plan.price_spot + p["onDemandReplicas"] * plan.price_on_demand) for p in pools)
    return round(total, 4)


def _owned_by(child: dict, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in child["metadata"].get("ownerReferences") or [])


def deployments_naming(scheduler_name: str) -> list[dict]:
    """The LLMDeployments whose spec.schedulerName is this name (in any namespace the operator watches)."""
    return [item for item in kube.iter_llmdeployments()
            if (item.get("spec") or {}).get("schedulerName") == scheduler_name]


def scheduler_status(body: dict, naming: list[dict] | None = None) -> dict | None:
    """Status for an InferenceScheduler: how many deployments use it. None when nothing changed.
    `naming`: deployments_naming(its name), when the caller has it already."""
    meta = body["metadata"]
    given = iter([naming] if naming is not None else [])

    def usage(current: dict) -> dict:
        # the caller's LIST the first time; a write that lost a race was counted from an older LIST too
        found = next(given, None)
        if found is None:
            found = deployments_naming(meta["name"])
        # a shared scheduler (home namespace) serves the namespaces without a same-named one of their own
        shared = meta["namespace"] == CONFIG.home_namespace
        shadowed = _namespaces_with_scheduler(meta["name"]) if shared else set()
        users = [f"{item['metadata']['namespace']}/{item['metadata']['name']}" for item in found
                 if item["metadata"]["namespace"] == meta["namespace"]
                 or (shared and item["metadata"]["namespace"] not in shadowed)]
        conditions = status.merge_conditions(current.get("conditions"), [
            status.condition("Ready", True, "Accepted", f"used by {len(users)} LLMDeployment(s)", meta.get("generation"))])
        return {"observedGeneration": meta.get("generation"), "conditions": conditions,
                "deployments": len(users), "deploymentNames": sorted(users)}

    return kube.write_status(inferencescheduler, body, usage)


def _namespaces_with_scheduler(name: str) -> set[str]:
    return {s["metadata"]["namespace"] for s in kube.list_schedulers() if s["metadata"]["name"] == name}
