"""`llmd-operator run`: start the operator."""

from __future__ import annotations

import logging
import random
import threading

import click

from ..cli_params import Duration
from ..planning.plan import ENGINE
from ..planning.scheduler_ref import DEFAULT_HOME_NAMESPACE
from ..slo import prometheus_access
from .config import CONFIG

CONVENTIONS = ["karpenter", "gke", "eks", "aks", "seed"]


class OnePerLine(click.types.StringParamType):
    """Text whose environment variable, for a repeatable option, holds one value per line (values hold spaces)."""

    envvar_list_splitter = "\n"


@click.command(context_settings={"auto_envvar_prefix": "LLMD"})  # LLMD_<FLAG>, as under the top-level command
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Namespace to watch; repeatable. Default: all.")
@click.option("--home-namespace", default=DEFAULT_HOME_NAMESPACE, show_default=True,
              help="Where shared InferenceSchedulers and the price ConfigMap live.")
@click.option("--prometheus-url", envvar="PROMETHEUS_URL", default=None, help="Prometheus the SLO loop queries.")
@click.option("--prometheus-token-file", envvar="PROMETHEUS_TOKEN_FILE", default=None,
              help="File with a bearer token for Prometheus (e.g. a projected service-account token for OpenShift's "
                   "thanos-querier); read again whenever it changes, so a rotated token is picked up.")
@click.option("--prometheus-ca-file", default=None,
              help="PEM file with the certificate authority that signed Prometheus's TLS certificate (an https:// "
                   "URL). Default: the system's CAs.")
@click.option("--prometheus-username", default=None,
              help="User name for HTTP basic auth to Prometheus; the password comes from --prometheus-password-file.")
@click.option("--prometheus-password-file", default=None,
              help="File with the basic-auth password; read again whenever it changes.")
@click.option("--prometheus-header", "prometheus_headers", envvar="LLMD_PROMETHEUS_HEADER", multiple=True, type=OnePerLine(),
              help="Extra HTTP header on every query, 'Name: value' (e.g. 'X-Scope-OrgID: team-a' for Mimir, "
                   "Cortex or Thanos tenants); repeatable (in LLMD_PROMETHEUS_HEADER: one per line).")
@click.option("--capacity-convention", type=click.Choice(CONVENTIONS), default="karpenter", show_default=True,
              help="How the cluster labels spot and on-demand nodes.")
@click.option("--provider", default=None, help="Price table provider (default: the catalog's).")
@click.option("--model-server-image", default=ENGINE["image"], show_default=True)
@click.option("--price-overrides-configmap", default=None,
              help="ConfigMap in the home namespace whose prices.yaml overrides the price table.")
@click.option("--models-configmap", default=None,
              help="ConfigMap in the home namespace whose models.yaml adds models to the catalog (same shape as the catalog's).")
@click.option("--metrics-port", type=int, default=8080, show_default=True, help="Port of /metrics; 0 turns it off.")
@click.option("--health-port", type=int, default=8081, show_default=True, help="Port of /healthz; 0 turns it off.")
@click.option("--peering", default=None, help="Kopf peering name for leader election; default standalone.")
@click.option("--priority", type=int, default=None,
              help="This replica's peering priority; the highest live one reconciles. Default: random, so that "
                   "replicas of one Deployment differ (Kopf pauses every peer while two share the highest priority).")
@click.option("--slo-interval", type=float, default=10.0, show_default=True,
              help="Seconds between SLO loop ticks; each deployment is decided every sloPolicy.scaling.interval (at least this).")
@click.option("--metrics-window", default=None,
              help="PromQL range for rates and latency quantiles, e.g. 1m. Default: each deployment's scaling interval "
                   "(30s unless its sloPolicy says otherwise), the window the policies are tuned and benchmarked with; "
                   "rate() needs two samples in it, and where they are sparser the loop widens that deployment's window "
                   "to 2, 4 or 8 intervals and says so in MetricsAvailable. A window given here is used as given.")
@click.option("--demand-query", envvar="LLMD_DEMAND_QUERY", default=None,
              help="PromQL whose value above 0 wakes a deployment scaled to zero, e.g. the gateway's queue for it; "
                   "$namespace and $deployment are replaced. Used where neither the deployment's inline sloPolicy "
                   "nor its InferenceScheduler sets scaling.demandQuery. Without one in force, a deployment scaled "
                   "to zero stays there: at zero replicas it has no model-server metrics to show demand.")
@click.option("--spot-pending-grace", envvar="LLMD_SPOT_PENDING_GRACE", type=Duration(), default="0s",
              show_default=True,
              help="How long a spot pod may stay Unschedulable before the SLO loop moves its pool to on-demand "
                   "(SpotFallback). 0s: at the first tick that sees it. Where a node provisioner (Karpenter, "
                   "cluster-autoscaler) adds spot nodes for pending pods, set it to the time it takes to bring one "
                   "up (e.g. 90s), so that a normal scale-up does not fall back. Spot nodes being drained or "
                   "deleted fall back at once, whatever this says.")
@click.option("-v", "--verbose", is_flag=True)
def run(namespaces, home_namespace, prometheus_url, prometheus_token_file, prometheus_ca_file, prometheus_username,
        prometheus_password_file, prometheus_headers, capacity_convention, provider,
        model_server_image, price_overrides_configmap, models_configmap, metrics_port, health_port, peering, priority,
        slo_interval, metrics_window, demand_query, spot_pending_grace, verbose) -> None:
    """Run the operator: reconcile LLMDeployments and InferenceSchedulers (honours KUBECONFIG)."""
    import kopf  # noqa: PLC0415
    from prometheus_client import start_http_server  # noqa: PLC0415

    from . import handlers, periodic  # noqa: F401, PLC0415  (importing handlers registers them)

    CONFIG.namespaces = list(namespaces)
    CONFIG.home_namespace = home_namespace
    CONFIG.prometheus_url = prometheus_url
    CONFIG.prometheus_token_file = prometheus_token_file
    CONFIG.prometheus_ca_file = prometheus_ca_file
    CONFIG.prometheus_username = prometheus_username
    CONFIG.prometheus_password_file = prometheus_password_file
    try:
        CONFIG.prometheus_headers = tuple(prometheus_access.parse_header(h) for h in prometheus_headers)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--prometheus-header") from None
    from ..slo.loop import prometheus_settings  # noqa: PLC0415

    settings = prometheus_settings()
    wrong = prometheus_access.problems(settings) if settings else []
    if wrong:
        raise click.UsageError("; ".join(wrong))
    CONFIG.capacity_convention = capacity_convention
    CONFIG.provider = provider
    CONFIG.model_server_image = model_server_image
    CONFIG.price_overrides_configmap = price_overrides_configmap
    CONFIG.models_configmap = models_configmap
    CONFIG.slo_interval_seconds = slo_interval
    CONFIG.metrics_window = metrics_window
    CONFIG.demand_query = demand_query or None
    CONFIG.spot_pending_grace_seconds = spot_pending_grace
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if metrics_port:
        start_http_server(metrics_port)
    handlers.OWNERS.start(workers=4)
    threading.Thread(target=periodic.run_forever, args=(peering,), name="slo-loop", daemon=True).start()
    if peering is not None and priority is None:
        priority = random.SystemRandom().randint(1, 2**31 - 1)
    if peering is not None:
        logging.getLogger("llmd_operator").info("peering %s with priority %d", peering, priority)
    kopf.run(
        standalone=peering is None,
        peering_name=peering,
        priority=priority or 0,
        namespaces=list(namespaces),
        clusterwide=not namespaces,
        liveness_endpoint=f"http://0.0.0.0:{health_port}/healthz" if health_port else None,
    )
