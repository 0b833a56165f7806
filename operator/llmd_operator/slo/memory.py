"""Where the SLO loop keeps a deployment's policy memory (load history, corrections, cooldown timers)
between operator restarts and leader changes: ConfigMap `<name>-slo-memory` in the deployment's namespace,
owned by it, so it goes when the deployment goes. Status stays what a person reads (conditions, the last
decision, scores); a history of rates and timers would only clutter `kubectl describe`.

Pure: the ConfigMap to apply, and what a saved one holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

COMPONENT = "slo-memory"


@dataclass(frozen=True)
class SavedMemory:
    policy: str | None       # the policy that wrote it; another policy starts afresh
    saved_at_s: float
    state_json: str          # PolicyState.to_json()


def configmap_name(deployment: str) -> str:
    return f"{deployment}-slo-memory"


def render(owner: dict, owner_reference: dict, policy: str, saved_at_s: float, state_json: str) -> dict:
    """The ConfigMap holding this deployment's memory as of `saved_at_s`."""
    meta = owner["metadata"]
    stamp = datetime.fromtimestamp(saved_at_s, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": "llmd-operator", "app.kubernetes.io/component": COMPONENT,
                       "app.kubernetes.io/instance": meta["name"]},
            "ownerReferences": [owner_reference],
        },
        "data": {"policy": policy, "savedAt": stamp, "state.json": state_json},
    }


def parse(configmap: dict | None) -> SavedMemory | None:
    """What a ConfigMap of `render` holds; None when there is none or it cannot be read (start afresh)."""
    data = (configmap or {}).get("data") or {}
    try:
        json.loads(data["state.json"])
        saved_at = datetime.fromisoformat(data["savedAt"].replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError, TypeError, AttributeError):
        return None
    return SavedMemory(policy=data.get("policy") or None, saved_at_s=saved_at, state_json=data["state.json"])


def from_status(status: dict) -> SavedMemory | None:
    """The copy that releases before this one kept in status.policyState, read once when no ConfigMap exists."""
    saved = status.get("policyState") or {}
    if not saved.get("state"):
        return None
    return SavedMemory(policy=saved.get("policy"), saved_at_s=float(saved.get("savedAt") or 0),
                       state_json=json.dumps(saved["state"]))
