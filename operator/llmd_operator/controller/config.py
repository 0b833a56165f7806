"""Operator-wide settings, set once by `llmd-operator run` before handlers start."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..planning.plan import ENGINE
from ..planning.scheduler_ref import DEFAULT_HOME_NAMESPACE

FIELD_MANAGER = "llmd-operator"
SCALER_FIELD_MANAGER = "llmd-operator-slo"
ANNOTATION_PREFIX = "llmd-operator.llm-d.io"


@dataclass
class OperatorConfig:
    namespaces: list[str] = field(default_factory=list)
    home_namespace: str = DEFAULT_HOME_NAMESPACE
    provider: str | None = None
    capacity_convention: str = "karpenter"
    model_server_image: str = ENGINE["image"]
    prometheus_url: str | None = None
    prometheus_token_file: str | None = None
    prometheus_ca_file: str | None = None
    prometheus_username: str | None = None
    prometheus_password_file: str | None = None
    prometheus_headers: tuple[tuple[str, str], ...] = ()
    price_overrides_configmap: str | None = None
    models_configmap: str | None = None
    slo_interval_seconds: float = 10.0
    metrics_window: str | None = None   # None: each deployment's scaling interval
    demand_query: str | None = None     # scale-from-zero PromQL where neither sloPolicy nor scheduler sets one
    spot_pending_grace_seconds: float = 0.0  # how long a spot pod may wait Unschedulable before SpotFallback


CONFIG = OperatorConfig()
