"""Kopf handlers: thin. Each one hands the object to reconcile and posts the events it asks for."""

from __future__ import annotations

import logging

import kopf
from pydantic import ValidationError

from ..api import inferencescheduler, llmdeployment
from ..render import labels
from . import kube, metrics, reconcile
from .owner_queue import OwnerKey, OwnerQueue
from .config import ANNOTATION_PREFIX

LLMD = (llmdeployment.GROUP, llmdeployment.VERSION, llmdeployment.PLURAL)
SCHEDULERS = (inferencescheduler.GROUP, inferencescheduler.VERSION, inferencescheduler.PLURAL)
log = logging.getLogger("llmd_operator.handlers")
OWNED = {**labels.MANAGED_BY, labels.DEPLOYMENT_LABEL: kopf.PRESENT}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=ANNOTATION_PREFIX, key="last-handled")
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    settings.persistence.consistency_timeout = 10
    settings.posting.level = logging.WARNING  # our own events say what changed; no "handler succeeded" noise
    settings.execution.max_workers = 8  # handler threads; children's owners have their own (OWNERS)
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10]


def _post(body, outcome: reconcile.Outcome) -> None:
    for kind, reason, message in outcome.events:
        kopf.event(body, type=kind, reason=reason, message=message[:1024])


@kopf.on.resume(*LLMD)
@kopf.on.create(*LLMD)
@kopf.on.update(*LLMD)
def reconcile_llmdeployment(body, **_) -> None:
    try:
        outcome = reconcile.reconcile(dict(body))
    except ValidationError as error:
        raise kopf.PermanentError(f"spec does not match the schema: {error}") from None
    _post(body, outcome)
    if outcome.problem is None and not outcome.plan:
        raise kopf.TemporaryError("nothing planned yet", delay=10)


@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=OWNED)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=OWNED)
@kopf.on.event("", "v1", "services", labels=OWNED)
async def child_changed(event, body, **_) -> None:
    """A child changed or vanished: queue its owner, to put back what the spec says and refresh its status."""
    if event.get("type") is None:  # the initial listing; the owner's resume handler covers it
        return
    owner = next((r for r in body.get("metadata", {}).get("ownerReferences") or [] if r.get("kind") == llmdeployment.KIND), None)
    if owner is not None:
        OWNERS.add(OwnerKey(body["metadata"]["namespace"], owner["name"], owner.get("uid", "")))


def reconcile_owner(key: OwnerKey) -> None:
    parent = kube.get_llmdeployment(key.namespace, key.name)
    if parent is None or parent["metadata"].get("deletionTimestamp") or parent["metadata"]["uid"] != key.uid:
        return
    for kind, reason, message in reconcile.reconcile(parent).events:
        kube.post_event(parent, kind, reason, message)


OWNERS = OwnerQueue(reconcile_owner)
metrics.OWNER_QUEUE_DEPTH.set_function(OWNERS.waiting)


@kopf.on.resume(*SCHEDULERS)
@kopf.on.create(*SCHEDULERS)
@kopf.on.update(*SCHEDULERS)
def scheduler_changed(body, **_) -> None:
    users = reconcile.deployments_naming(body["metadata"]["name"])  # one LIST for the status and the re-plans
    reconcile.scheduler_status(dict(body), users)
    # Deployments that use this scheduler plan with its spot policy: re-plan each on its own, so that one
    # failing does not send the scheduler's handler into retries (the deployment's own handler retries it).
    for item in users:
        try:
            _post(item, reconcile.reconcile(item))
        except Exception:  # noqa: BLE001
            log.exception("re-planning %s/%s for scheduler %s failed", item["metadata"]["namespace"],
                          item["metadata"]["name"], body["metadata"]["name"])


@kopf.on.event(*SCHEDULERS)
def scheduler_gone(event, body, **_) -> None:
    """A deleted scheduler: its users are planned again without it (SchedulerResolved=False says so)."""
    if event.get("type") != "DELETED":
        return
    scheduler_name = body["metadata"]["name"]
    for item in reconcile.deployments_naming(scheduler_name):
        try:
            _post(item, reconcile.reconcile(item))
        except Exception:  # noqa: BLE001 (one failing must not keep the others on the deleted scheduler)
            log.exception("re-planning %s/%s without scheduler %s failed", item["metadata"]["namespace"],
                          item["metadata"]["name"], scheduler_name)
    _recount({scheduler_name})  # a same-named shared scheduler may count them now


@kopf.on.field(*LLMD, field="spec.schedulerName")
def scheduler_name_changed(body, old, new, **_) -> None:
    """Moved to another scheduler: the old and the new one count again. The old one is also found by its
    own list of users: an edit right after creation reaches this handler as a creation (old is None)."""
    _recount({old, new} - {None}, counting=f"{body['metadata']['namespace']}/{body['metadata']['name']}")


def _recount(names: set[str], counting: str | None = None) -> None:
    """Refresh the usage status of the schedulers with these names, and of those that count `counting`
    (namespace/name) among their users."""
    for scheduler in kube.list_schedulers():
        counted = (scheduler.get("status") or {}).get("deploymentNames") or []
        if scheduler["metadata"]["name"] in names or (counting is not None and counting in counted):
            reconcile.scheduler_status(scheduler)


@kopf.on.event(*LLMD)
def llmdeployment_seen(event, body, **_) -> None:
    """Forget deleted deployments, and keep schedulers' usage counts current as deployments come and go."""
    if event.get("type") == "DELETED":
        from ..slo import loop  # noqa: PLC0415

        reconcile.forget(body["metadata"]["uid"], body["metadata"]["namespace"], body["metadata"]["name"])
        loop.forget(body["metadata"]["uid"])
    if event.get("type") not in ("ADDED", "DELETED") or not (body.get("spec") or {}).get("schedulerName"):
        return
    _recount({body["spec"]["schedulerName"]})
