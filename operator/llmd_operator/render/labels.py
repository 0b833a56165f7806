"""Names and labels of the objects the operator owns; the controller finds its children by these."""

from __future__ import annotations

MANAGED_BY = {"app.kubernetes.io/managed-by": "llmd-operator"}
DEPLOYMENT_LABEL = "llm-d.io/deployment"
ROLE_LABEL = "llm-d.ai/role"
CAPACITY_LABEL = "llm-d.io/capacity-type"
ENTRYPOINT_LABEL = "llm-d.io/entrypoint"
METRICS_LABEL = "llm-d.io/metrics"
CAPACITY_TYPES = ("spot", "on-demand")


def owned_selector(name: str) -> dict[str, str]:
    """Labels every child of one LLMDeployment carries."""
    return {**MANAGED_BY, DEPLOYMENT_LABEL: name}


MAX_NAME_LENGTH = 45  # children append up to 18 characters ("-prefill-on-demand"); label values hold 63


def service_name(name: str) -> str:
    """A Service name must be a DNS-1035 label: no dots, starting with a letter (llama-3.1-8b -> llama-3-1-8b)."""
    label = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return label if label[:1].isalpha() else f"llm-{label}"


def pool_name(name: str, role: str) -> str:
    return name if role == "monolithic" else f"{name}-{role}"


def workload_name(name: str, role: str, capacity_type: str) -> str:
    """One Deployment per pool and capacity type, e.g. chat-decode-spot."""
    return f"{pool_name(name, role)}-{capacity_type}"


def pod_labels(name: str, model: str, role: str, capacity_type: str) -> dict[str, str]:
    return {
        **owned_selector(name),
        "app.kubernetes.io/name": "llm-d-model-server",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/part-of": "llm-d",
        "llm-d.ai/model": model[:63],
        ROLE_LABEL: role,
        CAPACITY_LABEL: capacity_type,
        ENTRYPOINT_LABEL: "true" if role in ("monolithic", "decode") else "false",
        METRICS_LABEL: "true",
    }
