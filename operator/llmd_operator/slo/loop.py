"""The SLO loop: every interval, observe all managed deployments at once, decide, actuate, record."""

from __future__ import annotations

import logging
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass

import yaml
from pydantic import ValidationError

from ..api import llmdeployment
from ..api.inferencescheduler import InferenceScheduler
from ..api.llmdeployment import LLMDeployment
from ..controller import kube, metrics, reconcile, status
from ..controller.config import CONFIG, SCALER_FIELD_MANAGER
from ..planning.plan import DeploymentPlan, PlanError, PlanOptions, may_be_loop_owned, plan_deployment
from ..planning.scheduler_ref import resolve_scheduler
from ..planning.throughput import profile_format
from ..render import labels
from . import memory, observe, policy_inputs, prometheus_access
from .decide import PolicyState, decide, policy_name
from .profiles import ProfileError, default_profile, parse_profile_document

log = logging.getLogger("llmd_operator.slo")
STATE_SAVE_EVERY_S = 300.0  # the policy's memory is saved (ConfigMap <name>-slo-memory) at least this often, and on every action
# A query that hangs (Prometheus killed mid-answer, a half-open connection) fails the tick instead of
# stopping the loop for every deployment; the tick then holds with MetricsAvailable=False.
PROMETHEUS_TIMEOUT_S = 10
_last_decided: dict[str, float] = {}  # uid -> when the loop last decided for it
# uid -> (policy, its memory after the last tick). Every tick builds on the one before; ConfigMap
# <name>-slo-memory holds a copy for a restarted operator or a new leader, written only now and then to
# keep an idle fleet free of writes.
_memory: dict[str, tuple[str, PolicyState, float]] = {}  # uid -> (policy, memory, its tick's time)
_saved_at: dict[str, float] = {}  # uid -> when this process last saved its memory


@dataclass
class Managed:
    body: dict
    llmd: LLMDeployment
    scheduler: InferenceScheduler | None
    plan: DeploymentPlan


def forget(uid: str) -> None:
    _last_decided.pop(uid, None)
    _memory.pop(uid, None)
    _saved_at.pop(uid, None)


def forget_all_memory() -> None:
    """This replica becomes the one that ticks: another may have led meanwhile, so every deployment's
    memory is read back from its saved copy rather than from this process's older one."""
    _memory.clear()
    _saved_at.clear()


def remembered_state(uid: str, policy: str, load_saved: Callable[[], memory.SavedMemory | None]) -> PolicyState:
    """The policy's memory: this process's own from its last tick; without one (a restart, a new leader, a
    changed policy) the saved copy (`load_saved`, read only then), when the same policy wrote it."""
    mine = _memory.get(uid)
    if mine and mine[0] == policy:
        return mine[1]
    saved = load_saved()
    if saved is not None and saved.policy in (None, policy):
        return PolicyState.from_json(saved.state_json)
    return PolicyState()


def saved_memory(body: dict) -> memory.SavedMemory | None:
    """The deployment's saved memory: its ConfigMap, else the copy older releases kept in status."""
    meta = body["metadata"]
    return (memory.parse(kube.get_configmap(meta["namespace"], memory.configmap_name(meta["name"])))
            or memory.from_status(body.get("status") or {}))


def save_memory(body: dict, policy: str, state: PolicyState, now_s: float, acted: bool) -> bool:
    """Save the memory on every action and at least every STATE_SAVE_EVERY_S; True when it was written."""
    uid = body["metadata"]["uid"]
    if not acted and now_s - _saved_at.get(uid, float("-inf")) < STATE_SAVE_EVERY_S:
        return False
    manifest = memory.render(body, reconcile.owner_reference(body), policy, now_s, state.to_json())
    try:
        kube.apply(manifest, None)
    except Exception as error:  # noqa: BLE001 (the decision stands; the next tick tries again)
        log.warning("could not save the SLO loop's memory of %s/%s in ConfigMap %s: %s", body["metadata"]["namespace"],
                    body["metadata"]["name"], manifest["metadata"]["name"], error)
        return False
    _saved_at[uid] = now_s
    return True


def prometheus_settings() -> prometheus_access.PrometheusAccess | None:
    """The operator's Prometheus settings (--prometheus-*); None without a URL."""
    if not CONFIG.prometheus_url:
        return None
    return prometheus_access.PrometheusAccess(
        url=CONFIG.prometheus_url, token_file=CONFIG.prometheus_token_file, ca_file=CONFIG.prometheus_ca_file,
        username=CONFIG.prometheus_username, password_file=CONFIG.prometheus_password_file,
        headers=CONFIG.prometheus_headers)


def prometheus_client():
    settings = prometheus_settings()
    return prometheus_access.connect(settings, PROMETHEUS_TIMEOUT_S) if settings else None


def managed_deployments(catalog) -> list[Managed]:
    """LLMDeployments with at least one pool whose size the loop owns."""
    schedulers = reconcile.schedulers()
    found = []
    leaving = kube.namespaces_going_away()
    gpu_nodes = kube.gpu_node_labels(catalog.conventions["gpu_product_label"])  # the reconcile plans with the same
    for body in kube.iter_llmdeployments():
        meta = body["metadata"]
        if not may_be_loop_owned(body.get("spec") or {}):
            continue  # skipped before parsing and planning: most of a large fleet is sized by its spec or an HPA
        if (CONFIG.namespaces and meta["namespace"] not in CONFIG.namespaces) or meta["namespace"] in leaving \
                or meta.get("deletionTimestamp"):
            continue
        try:
            llmd = LLMDeployment.model_validate({"metadata": body["metadata"], "spec": body["spec"]})
            scheduler = resolve_scheduler(llmd, schedulers, CONFIG.home_namespace)
            plan = plan_deployment(llmd, catalog, PlanOptions(provider=CONFIG.provider,
                                                              capacity_convention=CONFIG.capacity_convention,
                                                              scheduler=scheduler.spec if scheduler else None,
                                                              gpu_nodes=gpu_nodes,
                                                              current_gpu_product=reconcile.running_on(body)))
        except (ValidationError, PlanError):
            continue  # the reconcile reports these
        if plan.sized_by_slo_loop:
            found.append(Managed(body, llmd, scheduler, plan))
    return found


def capacity_profile(managed: Managed):
    """The measured profile from ConfigMap <name>-capacity-profile when present, else the catalog's."""
    meta = managed.body["metadata"]
    name = f"{meta['name']}-capacity-profile"
    found = kube.get_configmap(meta["namespace"], name)
    plan = managed.plan
    if found and (found.get("data") or {}).get("profile.yaml"):
        try:
            formats = parse_profile_document(yaml.safe_load(found["data"]["profile.yaml"]), name)
            chosen = formats.get(_format(plan)) or next(iter(formats.values()))
            return chosen, f"ConfigMap {name} ({_shortened(chosen.source, 100)})"
        except Exception as error:  # noqa: BLE001 (a broken user profile must not stop the loop)
            log.warning("ignoring %s/%s: %s", meta["namespace"], name, error)
    try:
        profile = default_profile(plan.model.name, plan.gpu.product, _format(plan), plan.tensor_parallel_size,
                                  architecture=plan.model)
    except ProfileError as error:
        return None, f"none: {error}; measure one with `llmd-operator profile`"[:300]
    return profile, f"built-in: {_shortened(profile.source, 160)}"


def _shortened(text: str, width: int) -> str:
    """At most `width` characters, cut between words and marked, so status never ends mid-word."""
    return textwrap.shorten(text, width, placeholder=" ...")


def _format(plan: DeploymentPlan) -> str:
    return profile_format(plan.scheme)


def tick(prometheus, catalog, now_s: float | None = None) -> list[dict]:
    """One pass over every managed deployment. Returns what it decided, for logs and tests."""
    now_s = time.time() if now_s is None else now_s
    managed = managed_deployments(catalog)
    metrics.keep_loop_readings_of({(m.body["metadata"]["namespace"], m.body["metadata"]["name"]) for m in managed})
    if not managed:
        return []
    snapshots: dict[str, observe.Snapshot] = {}   # one batched query per signal per window in use

    def snapshot_for(window: str) -> observe.Snapshot:
        if window not in snapshots:
            snapshots[window] = (observe.take_snapshot(prometheus, window) if prometheus
                                 else observe.Snapshot(ok=False, error="no --prometheus-url given"))
        return snapshots[window]

    nodes = {n["metadata"]["name"]: n for n in kube.list_raw("v1", "Node")}
    results = []
    for item in managed:
        uid = item.body["metadata"]["uid"]
        if now_s - _last_decided.get(uid, float("-inf")) < _interval(item) - 0.5:
            continue  # this deployment's own interval has not passed yet
        _last_decided[uid] = now_s
        try:
            key = (item.body["metadata"]["namespace"], item.body["metadata"]["name"])
            snapshot = observe.snapshot_with_rate(snapshot_for, key, _interval(item), CONFIG.metrics_window)
            results.append(_tick_one(item, prometheus, snapshot, nodes, now_s, catalog))
        except Exception:  # noqa: BLE001 (one deployment's failure must not starve the others)
            log.exception("SLO loop failed for %s/%s", item.body["metadata"]["namespace"], item.body["metadata"]["name"])
    return results


def _interval(item: Managed) -> float:
    """The deployment's scaling interval (its sloPolicy's or scheduler's), never shorter than the tick."""
    from ..api.units import parse_duration  # noqa: PLC0415

    _, scaling, _ = policy_inputs.slo_policy(item.llmd, item.scheduler)
    given = getattr(scaling, "interval", None)
    return max(CONFIG.slo_interval_seconds, parse_duration(given) if given else CONFIG.slo_interval_seconds)


def _tick_one(item: Managed, prometheus, snapshot, nodes, now_s: float, catalog) -> dict:
    # Queried before the lock: a slow Prometheus must not hold this deployment's reconciles too.
    objective_values, demand = _queries_of_its_own(item, prometheus, snapshot)
    # The same lock as reconcile: the two never write the same status from stale copies.
    with reconcile._owner_locks[item.body["metadata"]["uid"]]:
        if item.body["metadata"]["uid"] in reconcile._deleted:
            return {}  # deleted while this tick ran: its series are gone and stay gone
        fresh = kube.get_llmdeployment(item.body["metadata"]["namespace"], item.body["metadata"]["name"])
        if fresh is None or fresh["metadata"].get("generation") != item.body["metadata"].get("generation"):
            return {}  # gone, or its spec changed since this tick planned it: the next tick plans it anew
        item.body = fresh
        return _decide_and_act(item, snapshot, objective_values, demand, nodes, now_s, catalog)


def _queries_of_its_own(item: Managed, prometheus, snapshot) -> tuple[dict[str, float], float]:
    """The deployment's objective `calculator` queries and its scale-from-zero demand query, as written,
    with its labels put in. Nothing when Prometheus did not answer this tick."""
    namespace, name = item.body["metadata"]["namespace"], item.body["metadata"]["name"]
    objectives, _, _ = policy_inputs.slo_policy(item.llmd, item.scheduler)
    objective_values: dict[str, float] = {}
    demand = 0.0
    if prometheus and snapshot.ok:
        for objective in objectives:
            if objective.calculator:
                value = observe.scalar(prometheus, observe.substitute(objective.calculator, namespace, name))
                if value is not None:
                    objective_values[objective.name] = value
        # only a deployment that may scale to zero needs a demand signal: it wakes it from zero
        may_sleep = all(p.min_replicas == 0 for p in item.plan.pools)
        query = demand_query(item.llmd, item.scheduler, CONFIG.demand_query) if may_sleep else None
        if query:
            demand = observe.scalar(prometheus, observe.substitute(query, namespace, name)) or 0.0
    return objective_values, demand


def demand_query(llmd: LLMDeployment, scheduler: InferenceScheduler | None, default: str | None) -> str | None:
    """The scale-from-zero demand query in force: the inline sloPolicy's, else the scheduler's, else the
    operator's --demand-query. Unlike the rest of the policy it falls through level by level: it says where
    demand shows (the gateway in front), not how to scale, so an inline policy need not repeat it."""
    inline = llmd.spec.scheduling.slo_policy if llmd.spec.scheduling else None
    shared = scheduler.spec.slo_policy if scheduler else None
    for policy in (inline, shared):
        if policy is not None and policy.scaling is not None and policy.scaling.demand_query:
            return policy.scaling.demand_query
    return default or None


def _decide_and_act(item: Managed, snapshot, objective_values: dict[str, float], demand: float, nodes, now_s: float,
                    catalog) -> dict:
    meta = item.body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    old_status = item.body.get("status") or {}
    _, _, algorithm = policy_inputs.slo_policy(item.llmd, item.scheduler)
    interval = _interval(item)
    selector = labels.owned_selector(name)
    workloads = [c for c in kube.list_children(namespace, selector) if c["kind"] == "Deployment"]
    pods = kube.list_pods(namespace, selector)
    from ..render.placement import node_affinity_terms  # noqa: PLC0415

    spot_ok, spot_why = None, ""  # None: a deployment that never runs on spot has nothing to fall back from
    migrating, surge = "", {}     # migrationPolicy: replicas of spot nodes going away move to other spot nodes
    if any(p.spot.max_spot_ratio > 0 for p in item.plan.pools):
        spot_nodes = node_affinity_terms(catalog, CONFIG.capacity_convention, item.plan.gpu.product, "spot")
        taints = catalog.conventions["interruption_taints"]
        spot_ok, spot_why = policy_inputs.spot_health(pods, nodes, taints, now_s,
                                                      pending_grace_s=CONFIG.spot_pending_grace_seconds,
                                                      spot_node_expressions=spot_nodes)
        if spot_ok is False:
            migrating, surge = _spot_migration(item, pods, nodes, spot_nodes, taints, now_s)
            spot_ok = bool(migrating)
        spot_ok, spot_why = policy_inputs.spot_in_force(spot_ok, spot_why,
                                                        status.find_condition(old_status, "SpotFallback"), now_s)
        if not spot_ok:   # a fallback still in force: the replicas stay on-demand
            migrating, surge = "", {}
        spot_why = migrating or spot_why
    strategy = policy_inputs.fallback_strategy(item.scheduler)
    # fallbackStrategy none: the replicas wait on spot for it to return; the condition still says spot is gone
    spot_for_sizing = spot_ok is not False or strategy == "none"
    spec = policy_inputs.policy_spec(item.llmd, item.scheduler, item.plan, spot_for_sizing, interval)
    fleet = policy_inputs.observation(snapshot, namespace, name, item.plan, workloads, now_s, interval,
                                      objective_values, demand)
    profile, profile_note = capacity_profile(item)
    uid = meta["uid"]
    state = remembered_state(uid, policy_name(algorithm), lambda: saved_memory(item.body))
    decision, state = decide(algorithm, fleet, spec, profile, state)
    _memory[uid] = (decision.policy, state, now_s)
    serving = policy_inputs.serving_spot_pods(pods, nodes) if strategy == "graceful_migration" else None
    changes = _actuate(namespace, name, decision, workloads, serving,
                       surge if strategy == "graceful_migration" else None)
    _record(item, decision, state, changes, spot_ok, spot_why, snapshot, profile_note, now_s, old_status, interval,
            strategy, bool(migrating))
    return {"deployment": f"{namespace}/{name}", "policy": policy_name(algorithm), "changes": changes,
            "reason": decision.reason, "held": decision.held_for_missing_metrics}


def _spot_migration(item: Managed, pods: list[dict], nodes: dict[str, dict], spot_nodes: list[dict],
                    taints: list[str], now_s: float) -> tuple[str, dict[str, int]]:
    """migrationPolicy cost_aware or same_capacity, when spot is unusable only because spot pods' nodes are
    going away: whether their replicas move to other spot nodes instead of on-demand (cost_aware: only when
    those nodes' free GPUs hold every one of them). Returns the words for SpotFallback, and per pool the
    replicas still serving on those nodes, to order again on spot before they are evicted; ('', {}) when
    the replicas go to on-demand."""
    migration = policy_inputs.migration_policy(item.scheduler)
    if migration == "on_demand":
        return "", {}
    displaced, going = policy_inputs.displaced_spot_pods(pods, nodes, taints)
    staying = [p for p in pods if p not in displaced]
    usable_elsewhere, _ = policy_inputs.spot_health(staying, nodes, taints, now_s,
                                                    pending_grace_s=CONFIG.spot_pending_grace_seconds,
                                                    spot_node_expressions=spot_nodes)
    if not displaced or not usable_elsewhere:
        return "", {}
    if migration == "cost_aware":
        gpus = {p.role: p.gpus_per_replica for p in item.plan.pools}
        needs = [gpus.get(p["metadata"]["labels"].get(labels.ROLE_LABEL, "monolithic"), 1) for p in displaced]
        try:
            free = [policy_inputs.free_gpus(n, kube.pods_on_node(n["metadata"]["name"]))
                    for n in policy_inputs.usable_spot_nodes(nodes, spot_nodes, taints)]
        except Exception as error:  # noqa: BLE001 (a namespaced install may not list other namespaces' pods)
            log.warning("migrationPolicy cost_aware: cannot tell the spot nodes' free GPUs (%s); on-demand it is", error)
            return "", {}
        if not policy_inputs.fits(free, needs):
            return "", {}
        where = "to other spot nodes, whose free GPUs hold them"
    else:
        where = "to other spot nodes"
    return (f"{going}; its {len(displaced)} spot replica(s) move {where} (migrationPolicy {migration})",
            policy_inputs.serving_spot_pods(displaced, nodes))


def _actuate(namespace: str, name: str, decision, workloads: list[dict],
             serving_spot: dict[str, int] | None = None, spot_surge: dict[str, int] | None = None) -> list[str]:
    """Scale the pool Deployments to the decision's split, through the scale subresource; only what differs.
    `serving_spot` (graceful migration): spot pods per role still serving, kept until ready on-demand
    replicas replace them. `spot_surge` (graceful migration to other spot nodes): spot replicas per role
    still serving on a node going away, ordered again on spot; the surge ends as those are evicted."""
    if decision.held_for_missing_metrics:
        return []
    by_name = {w["metadata"]["name"]: w for w in workloads}
    changes = []
    for pool in decision.pools:
        wanted = {"spot": pool.target_spot, "on-demand": pool.target_on_demand}
        spot_name = labels.workload_name(name, pool.role, "spot")
        if spot_name not in by_name:  # no spot Deployment for this pool: everything on-demand
            wanted = {"spot": 0, "on-demand": pool.target}
        elif spot_surge:
            wanted["spot"] += spot_surge.get(pool.role, 0)
        on_demand = by_name.get(labels.workload_name(name, pool.role, "on-demand"))
        if serving_spot is not None and spot_name in by_name and on_demand is not None:
            wanted["spot"] = policy_inputs.spot_kept_while_migrating(
                by_name[spot_name]["spec"].get("replicas") or 0, wanted["spot"], serving_spot.get(pool.role, 0),
                (on_demand.get("status") or {}).get("readyReplicas") or 0, wanted["on-demand"])
        moves = []
        for capacity, replicas in wanted.items():
            workload = by_name.get(labels.workload_name(name, pool.role, capacity))
            if workload is None:
                continue
            current = workload["spec"].get("replicas") or 0
            if current != replicas:
                moves.append((capacity, workload["metadata"]["name"], current, replicas))
        # growth first: when replicas move between spot and on-demand, the replacements are ordered
        # before the replicas they replace are removed
        for capacity, deployment, current, replicas in sorted(moves, key=lambda m: m[3] < m[2]):
            kube.scale(namespace, deployment, replicas, SCALER_FIELD_MANAGER)
            changes.append(f"{pool.role}/{capacity} {current}->{replicas}")
            metrics.DECISIONS.labels(namespace, name, pool.role, "up" if replicas > current else "down").inc()
    return changes


def _record(item: Managed, decision, state, changes, spot_ok, spot_why, snapshot, profile_note, now_s, old_status,
            interval: float, strategy: str = "graceful_migration", migrating: bool = False):
    meta = item.body["metadata"]
    namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation")
    conditions = []
    metrics_missing = decision.held_for_missing_metrics or not snapshot.ok
    if metrics_missing:
        why = snapshot.error or decision.reason
        conditions.append(status.condition("MetricsAvailable", False, "MetricsMissing",
                                           f"holding replicas: {why}", generation))
    else:
        conditions.append(status.condition("MetricsAvailable", True, "MetricsFresh",
                                           metrics_fresh_message(snapshot.window, interval), generation))
    conditions.append(status.condition("BudgetLimited", decision.budget_limited,
                                       "BudgetBinding" if decision.budget_limited else "WithinBudget",
                                       decision.budget_message or "cost constraints do not bind", generation))
    if spot_ok is None:
        conditions.append(status.condition("SpotFallback", False, "SpotNotUsed",
                                           "this deployment does not run on spot (its spot share is 0)", generation))
    elif spot_ok is False and strategy == "none":
        conditions.append(status.condition("SpotFallback", False, "WaitingForSpot",
                                           f"spot capacity is unusable ({spot_why}); fallbackStrategy none keeps the "
                                           f"replicas on spot until it returns", generation))
    elif migrating:
        conditions.append(status.condition("SpotFallback", False, "SpotMigration", spot_why, generation))
    else:
        conditions.append(status.condition("SpotFallback", not spot_ok, "SpotUnavailable" if not spot_ok else "SpotAvailable",
                                           spot_why or "spot capacity is usable", generation))
    decided = {"sloScores": {k: round(v, 4) for k, v in decision.slo_scores} or None, "capacityProfile": profile_note}
    if changes:
        decided["lastDecision"] = {"time": status.now(), "pool": ", ".join(changes), "fromReplicas": _total(decision, "current"),
                                   "toReplicas": _total(decision, "target"), "reason": decision.reason[:1000]}

    saved = save_memory(item.body, decision.policy, state, now_s, bool(changes))

    def loop_status(current: dict) -> dict:
        new = {**decided, "conditions": status.merge_conditions(current.get("conditions"), conditions)}
        new = {k: v for k, v in new.items() if v is not None}
        if saved and "policyState" in current:
            new["policyState"] = None   # older releases kept the memory here; its ConfigMap holds it now
        return new

    kube.write_status(llmdeployment, item.body, loop_status)
    metrics.record_readings(namespace, name, dict(decision.slo_scores), decision.budget_limited, not metrics_missing)
    if changes:
        # the decision in words first (the part a reader needs, and what survives truncation), then
        # the Deployments it moved per capacity type
        split = ", ".join(changes)
        kube.post_event(item.body, "Normal", "Scaled", f"{decision.reason} (Deployments: {split})" if decision.reason
                        else f"capacity-type split changed: {split}")
    before = status.find_condition(old_status, "SpotFallback")
    if migrating and before.get("reason") != "SpotMigration":
        kube.post_event(item.body, "Normal", "SpotMigration", spot_why)
    if spot_ok is False and strategy == "none":
        if before.get("reason") != "WaitingForSpot":
            kube.post_event(item.body, "Warning", "SpotUnavailable", f"{spot_why}; fallbackStrategy none: waiting for spot")
    elif spot_ok is False and before.get("status") != "True":
        kube.post_event(item.body, "Warning", "SpotFallback", spot_why)


def metrics_fresh_message(window: str, interval_s: float) -> str:
    """MetricsAvailable=True's words; they say so when the loop had to read over a wider window than
    the deployment's interval (its samples too sparse for a rate over one interval)."""
    if not window or window == observe.window_for(interval_s, CONFIG.metrics_window):
        return "vLLM metrics are current"
    return (f"vLLM metrics are current, read over {window}: the model servers are scraped less than twice per "
            f"{observe.window_for(interval_s)} interval, so bursts shorter than {window} are averaged away; "
            f"scrape them more often")


def _total(decision, attribute: str) -> int:
    return sum(getattr(p, attribute) for p in decision.pools)
