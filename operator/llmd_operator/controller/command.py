"""`llmd-operator run`: start the operator."""

from __future__ import annotations

import logging
import threading
import time

import click

from ..planning.plan import ENGINE
from ..planning.scheduler_ref import DEFAULT_HOME_NAMESPACE
from .config import CONFIG

CONVENTIONS = ["karpenter", "gke", "eks", "aks", "seed"]
COST_TICK_SECONDS = 15


def _run_slo_loop() -> None:
    """Tick the SLO loop every --slo-interval seconds; a failed tick is logged and the next one runs."""
    from ..slo import loop  # noqa: PLC0415
    from . import reconcile  # noqa: PLC0415

    log = logging.getLogger("llmd_operator.slo")
    prometheus = loop.prometheus_client()
    while True:
        started = time.monotonic()
        try:
            for result in loop.tick(prometheus, reconcile.catalog()):
                if result.get("changes"):
                    log.info("%s: %s (%s)", result["deployment"], "; ".join(result["changes"]), result["reason"])
        except Exception:  # noqa: BLE001
            log.exception("SLO loop tick failed")
        time.sleep(max(1.0, CONFIG.slo_interval_seconds - (time.monotonic() - started)))


def _accumulate_cost() -> None:
    """llm_cost_total grows by each deployment's $/hour for the time that passed."""
    from . import metrics  # noqa: PLC0415

    last = time.monotonic()
    while True:
        time.sleep(COST_TICK_SECONDS)
        now = time.monotonic()
        for sample in metrics.COST_PER_HOUR.collect()[0].samples:
            hours = (now - last) / 3600
            metrics.COST_TOTAL.labels(sample.labels["namespace"], sample.labels["deployment"]).inc(sample.value * hours)
        last = now


@click.command()
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Namespace to watch; repeatable. Default: all.")
@click.option("--home-namespace", default=DEFAULT_HOME_NAMESPACE, show_default=True,
              help="Where shared InferenceSchedulers and the price ConfigMap live.")
@click.option("--prometheus-url", envvar="PROMETHEUS_URL", default=None, help="Prometheus the SLO loop queries.")
@click.option("--prometheus-token-file", envvar="PROMETHEUS_TOKEN_FILE", default=None,
              help="File with a bearer token for Prometheus.")
@click.option("--capacity-convention", type=click.Choice(CONVENTIONS), default="karpenter", show_default=True,
              help="How the cluster labels spot and on-demand nodes.")
@click.option("--provider", default=None, help="Price table provider (default: the catalog's).")
@click.option("--model-server-image", default=ENGINE["image"], show_default=True)
@click.option("--price-overrides-configmap", default=None,
              help="ConfigMap in the home namespace whose prices.yaml overrides the price table.")
@click.option("--metrics-port", type=int, default=8080, show_default=True, help="Port of /metrics; 0 turns it off.")
@click.option("--health-port", type=int, default=8081, show_default=True, help="Port of /healthz; 0 turns it off.")
@click.option("--peering", default=None, help="Kopf peering name for leader election; default standalone.")
@click.option("--slo-interval", type=float, default=30.0, show_default=True, help="Seconds between SLO loop ticks.")
@click.option("-v", "--verbose", is_flag=True)
def run(namespaces, home_namespace, prometheus_url, prometheus_token_file, capacity_convention, provider,
        model_server_image, price_overrides_configmap, metrics_port, health_port, peering, slo_interval, verbose) -> None:
    """Run the operator: reconcile LLMDeployments and InferenceSchedulers (honours KUBECONFIG)."""
    import kopf  # noqa: PLC0415
    from prometheus_client import start_http_server  # noqa: PLC0415

    from . import handlers  # noqa: F401, PLC0415  (registers the handlers)

    CONFIG.namespaces = list(namespaces)
    CONFIG.home_namespace = home_namespace
    CONFIG.prometheus_url = prometheus_url
    CONFIG.prometheus_token_file = prometheus_token_file
    CONFIG.capacity_convention = capacity_convention
    CONFIG.provider = provider
    CONFIG.model_server_image = model_server_image
    CONFIG.price_overrides_configmap = price_overrides_configmap
    CONFIG.slo_interval_seconds = slo_interval
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if metrics_port:
        start_http_server(metrics_port)
    threading.Thread(target=_accumulate_cost, name="cost-accumulator", daemon=True).start()
    threading.Thread(target=_run_slo_loop, name="slo-loop", daemon=True).start()
    kopf.run(
        standalone=peering is None,
        peering_name=peering,
        namespaces=list(namespaces),
        clusterwide=not namespaces,
        liveness_endpoint=f"http://0.0.0.0:{health_port}/healthz" if health_port else None,
    )
