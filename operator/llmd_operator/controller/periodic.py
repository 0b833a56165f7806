"""Fleet-wide periodic work: the SLO loop, on a background thread.

Not a Kopf timer: Kopf puts a finalizer on every object that has a timer, and a finalizer blocks deletion
whenever the operator is down. With peering (several replicas), only the replica Kopf keeps active ticks.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone

from . import metrics
from .config import CONFIG

log = logging.getLogger("llmd_operator.periodic")


def run_forever(peering: str | None) -> None:
    """Tick the SLO loop every --slo-interval seconds; a failed tick is logged and the next one runs."""
    from ..slo import loop  # noqa: PLC0415
    from . import reconcile  # noqa: PLC0415

    prometheus = loop.prometheus_client()
    was_active = False
    while True:
        started = time.monotonic()
        try:
            active = peering is None or active_peer(peering)
            if was_active and not active:
                metrics.forget_all_deployments()  # another replica reconciles and reports now
            if active and not was_active:
                loop.forget_all_memory()  # another replica may have led meanwhile: read the saved copies
            was_active = active
            if active:
                for result in loop.tick(prometheus, reconcile.catalog()):
                    if result.get("changes"):
                        log.info("%s: %s (%s)", result["deployment"], "; ".join(result["changes"]), result["reason"])
        except Exception:  # noqa: BLE001 (the next tick tries again)
            log.exception("SLO loop tick failed")
        time.sleep(max(1.0, CONFIG.slo_interval_seconds - (time.monotonic() - started)))


def active_peer(peering: str) -> bool:
    """Kopf's own rule: active only while no other live peer has the same or a higher priority."""
    from kubernetes import client  # noqa: PLC0415

    from .kube import api_client  # noqa: PLC0415

    me = os.environ.get("POD_ID")
    if not me:
        log.warning("peering %s without POD_ID: cannot tell which peer this is, so the SLO loop does not tick", peering)
        return False
    api = client.CustomObjectsApi(api_client())
    if CONFIG.namespaces:
        body = api.get_namespaced_custom_object("kopf.dev", "v1", CONFIG.namespaces[0], "kopfpeerings", peering)
    else:
        body = api.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
    now = datetime.now(timezone.utc)
    peers = {}
    for identity, info in (body.get("status") or {}).items():
        if not isinstance(info, dict):
            continue
        seen = datetime.fromisoformat(str(info.get("lastseen")).replace("Z", "+00:00"))
        if (now - seen).total_seconds() <= float(info.get("lifetime", 60)):
            peers[identity] = int(info.get("priority", 0))
    mine = peers.get(me)
    return mine is not None and all(p < mine for identity, p in peers.items() if identity != me)
