"""Store a profiling run's files in a ConfigMap (run inside the profiling Job, in-cluster credentials)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..render.profiling_job import PROFILE_KEY

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MAX_REPORT_CHARS = 200_000


def configmap_body(name: str, namespace: str, out_dir: str | Path, owner_reference: dict | None = None,
                   labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The ConfigMap holding profile.yaml (what the SLO loop reads) and report.md (for people)."""
    out = Path(out_dir)
    data = {PROFILE_KEY: (out / "profile.yaml").read_text()}
    if (out / "report.md").exists():
        data["report.md"] = (out / "report.md").read_text()[:MAX_REPORT_CHARS]
    meta: dict[str, Any] = {"name": name, "namespace": namespace,
                            "labels": {"app.kubernetes.io/managed-by": "llmd-operator",
                                       "app.kubernetes.io/component": "capacity-profile", **(labels or {})}}
    if owner_reference:
        meta["ownerReferences"] = [owner_reference]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def default_namespace() -> str:
    return SA_NAMESPACE_FILE.read_text().strip() if SA_NAMESPACE_FILE.exists() else "default"


def owner_from_env() -> dict | None:
    raw = os.environ.get("LLMD_OWNER_REFERENCE")
    return json.loads(raw) if raw else None


def publish(name: str, namespace: str, out_dir: str | Path, owner_reference: dict | None = None) -> str:
    """Create the ConfigMap, or replace its data when it exists. Returns 'created' or 'updated'."""
    from kubernetes import client, config  # noqa: PLC0415
    from kubernetes.client.rest import ApiException  # noqa: PLC0415

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.CoreV1Api()
    body = configmap_body(name, namespace, out_dir, owner_reference)
    try:
        api.create_namespaced_config_map(namespace, body)
        return "created"
    except ApiException as e:
        if e.status != 409:
            raise
    api.patch_namespaced_config_map(name, namespace, {"data": body["data"]})
    return "updated"
