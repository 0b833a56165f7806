"""The operator's only door to the API server: read children, apply them, patch status, post events."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from functools import lru_cache

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from .. import __version__
from ..api import inferencescheduler, llmdeployment
from .config import CONFIG, FIELD_MANAGER
from .drift import holds
from .status import differs

CHILD_KINDS = (
    ("apps/v1", "Deployment"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
)
PROFILING_KINDS = (
    ("batch/v1", "Job"),
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
)
_lock = threading.Lock()


@lru_cache(maxsize=1)
def api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()  # honours KUBECONFIG
    api = client.ApiClient()
    api.user_agent = f"llmd-operator/{__version__}"  # tells our requests apart in audit logs
    return api


@lru_cache(maxsize=1)
def dynamic() -> DynamicClient:
    with _lock:
        return DynamicClient(api_client())


def resource(api_version: str, kind: str):
    return dynamic().resources.get(api_version=api_version, kind=kind)


def list_raw(api_version: str, kind: str, **params) -> list[dict]:
    """A LIST as plain dicts, parsed straight from the JSON: the dynamic client's wrapped objects cost
    several times the memory, and a thousand reconciles hold many of these at once."""
    response = resource(api_version, kind).get(serialize=False, **params)
    return json.loads(response.data)["items"]


GPU_NODES_TTL_S = 30.0
_gpu_nodes: dict = {}


def gpu_node_labels(product_label: str, now: float | None = None) -> tuple[dict[str, str], ...] | None:
    """Labels of the nodes that carry a GPU product label, for the planner to choose among their
    products. Listed at most every 30 s, so that a thousand reconciles do not each list the nodes;
    None when the nodes cannot be listed (the planner then considers every product)."""
    now = time.monotonic() if now is None else now
    if now - _gpu_nodes.get("at", float("-inf")) >= GPU_NODES_TTL_S:
        try:
            found = tuple(n["metadata"].get("labels") or {} for n in list_raw("v1", "Node", label_selector=product_label))
        except ApiException:
            found = None
        _gpu_nodes.update(at=now, labels=found)
    return _gpu_nodes["labels"]


def namespace_going_away(error: Exception) -> bool:
    """The API server refuses new objects in a namespace being deleted; nothing there needs reconciling."""
    return isinstance(error, ApiException) and error.status == 403 and "being terminated" in str(error.body or "")


def namespace_terminating(name: str) -> bool:
    try:
        namespace = client.CoreV1Api(api_client()).read_namespace(name)
    except ApiException as error:
        return error.status == 404
    return bool(namespace.status and namespace.status.phase == "Terminating")


def namespaces_going_away() -> set[str]:
    """Namespaces being deleted: what is in them is going too, so the operator leaves it alone."""
    items = client.CoreV1Api(api_client()).list_namespace().items
    return {n.metadata.name for n in items if n.status and n.status.phase == "Terminating"}


def list_children(namespace: str, selector: dict[str, str], profiling: bool = False) -> list[dict]:
    """Every child kind the operator creates, carrying the given labels (the profiler's kinds on request)."""
    label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
    found = []
    for api_version, kind in CHILD_KINDS + (PROFILING_KINDS if profiling else ()):
        for item in list_raw(api_version, kind, namespace=namespace, label_selector=label_selector):
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
            found.append(item)
    return found


def pods_on_node(node: str) -> list[dict]:
    """Every pod bound to a node, in any namespace (what its GPUs are requested by)."""
    return list_raw("v1", "Pod", field_selector=f"spec.nodeName={node}")


def list_pods(namespace: str, selector: dict[str, str]) -> list[dict]:
    label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
    return list_raw("v1", "Pod", namespace=namespace, label_selector=label_selector)


def apply(desired: dict, live: dict | None) -> str | None:
    """Server-side apply `desired` unless `live` already holds it. Returns 'created', 'updated' or None."""
    if live is not None and holds(desired, live):
        return None
    resource(desired["apiVersion"], desired["kind"]).server_side_apply(
        body=desired, name=desired["metadata"]["name"], namespace=desired["metadata"]["namespace"],
        field_manager=FIELD_MANAGER, force_conflicts=True,
    )
    return "created" if live is None else "updated"


def delete(obj: dict) -> None:
    try:
        resource(obj["apiVersion"], obj["kind"]).delete(
            name=obj["metadata"]["name"], namespace=obj["metadata"]["namespace"],
            body={"propagationPolicy": "Background"},
        )
    except ApiException as error:
        if error.status != 404:
            raise


def scale(namespace: str, name: str, replicas: int, field_manager: str) -> None:
    """Set a Deployment's replicas through its scale subresource (the loop's own field manager owns them)."""
    client.AppsV1Api(api_client()).patch_namespaced_deployment_scale(
        name, namespace, {"spec": {"replicas": replicas}}, field_manager=field_manager,
    )


def get_llmdeployment(namespace: str, name: str) -> dict | None:
    return get_custom(llmdeployment, namespace, name)


def get_custom(module, namespace: str, name: str) -> dict | None:
    try:
        return client.CustomObjectsApi(api_client()).get_namespaced_custom_object(
            module.GROUP, module.VERSION, namespace, module.PLURAL, name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _iter_custom(module, namespaces: list[str], page: int = 250) -> Iterator[dict]:
    """All objects of a kind, a page at a time so that a big fleet is never held in memory at once:
    cluster-wide, or per namespace when the operator is namespaced (RBAC allows only that)."""
    api = client.CustomObjectsApi(api_client())
    for namespace in dict.fromkeys(namespaces) if namespaces else [None]:
        token = None
        while True:
            if namespace is None:
                found = api.list_cluster_custom_object(module.GROUP, module.VERSION, module.PLURAL,
                                                       limit=page, _continue=token)
            else:
                found = api.list_namespaced_custom_object(module.GROUP, module.VERSION, namespace, module.PLURAL,
                                                          limit=page, _continue=token)
            yield from found["items"]
            token = (found.get("metadata") or {}).get("continue")
            if not token:
                break


def list_schedulers() -> list[dict]:
    # Schedulers are also looked up in the home namespace, which a namespaced operator may not watch.
    namespaces = [*CONFIG.namespaces, CONFIG.home_namespace] if CONFIG.namespaces else []
    return list(_iter_custom(inferencescheduler, namespaces))


def iter_llmdeployments() -> Iterator[dict]:
    """Every LLMDeployment the operator watches, paged: callers keep only what they need."""
    return _iter_custom(llmdeployment, CONFIG.namespaces)


class Conflict(Exception):
    """The object changed after the copy a status was computed from was read: re-read it and compute again."""


def patch_status(module, namespace: str, name: str, status: dict, resource_version: str | None = None) -> None:
    """Merge `status` into the object's status. With `resource_version`, only if the object is still that
    version (else Conflict): a status computed from a stale copy would put back what another writer changed."""
    body: dict = {"status": status}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    try:
        client.CustomObjectsApi(api_client()).patch_namespaced_custom_object_status(
            module.GROUP, module.VERSION, namespace, module.PLURAL, name, body)
    except ApiException as error:
        if error.status == 409:
            raise Conflict(f"{module.KIND} {namespace}/{name} changed since version {resource_version}") from None
        raise


def write_status(module, obj: dict, build: Callable[[dict], dict], attempts: int = 3) -> dict | None:
    """Merge the status `build` computes from the object's status, over exactly the version it was computed from.

    Reconciles and the SLO loop both write status (conditions are one list), each from its own copy of the
    object; a status built from a copy read before the other's write would put that write back. On a
    conflict the object is read again and the status built again. Returns what was written, or None when
    nothing a reader sees would change (or the object is gone).
    """
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    for _ in range(attempts):
        old = obj.get("status") or {}
        new = build(old)
        if not differs(old, new):
            return None
        patch = {key: _replacing(old.get(key), value) for key, value in new.items()}
        try:
            patch_status(module, namespace, name, patch, obj["metadata"].get("resourceVersion"))
            return new
        except Conflict:
            obj = get_custom(module, namespace, name)
            if obj is None:
                return None
    raise Conflict(f"{module.KIND} {namespace}/{name} kept changing during {attempts} status writes")


def _replacing(old, new):
    """`new` as a merge patch over `old` that leaves exactly `new`: a key a map no longer has is sent as null
    (a plain merge patch would keep it: a removed objective's score, a policy's forgotten timer)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    return {**{key: None for key in old if key not in new}, **{key: _replacing(old.get(key), value) for key, value in new.items()}}


def get_configmap(namespace: str, name: str) -> dict | None:
    try:
        return client.CoreV1Api(api_client()).read_namespaced_config_map(name, namespace).to_dict()
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def post_event(body: dict, type_: str, reason: str, message: str) -> None:
    """A core/v1 Event on an object, as kubectl describe shows it."""
    meta = body["metadata"]
    stamp = datetime.now(timezone.utc)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
        involved_object=client.V1ObjectReference(
            api_version=body.get("apiVersion", f"{llmdeployment.GROUP}/{llmdeployment.VERSION}"),
            kind=body.get("kind", llmdeployment.KIND), name=meta["name"], namespace=meta["namespace"], uid=meta["uid"]),
        reason=reason, message=message[:1024], type=type_, count=1, first_timestamp=stamp, last_timestamp=stamp,
        source=client.V1EventSource(component="llmd-operator"), reporting_component="llmd-operator",
        reporting_instance="llmd-operator",
    )
    client.CoreV1Api(api_client()).create_namespaced_event(meta["namespace"], event)
