"""`llmd-operator simulate-live`: serve vLLM metrics for the model-server pods the cluster runs."""

from __future__ import annotations

import logging

import click


@click.command("simulate-live")
@click.option("-n", "--namespace", required=True, help="Namespace of the LLMDeployments to follow.")
@click.option("--deployment", default=None, help="Follow one LLMDeployment (default: all in the namespace).")
@click.option("--rate", type=float, default=1.0, show_default=True, help="Requests per second; change it live with GET /load?rate=R.")
@click.option("--input-tokens", type=int, default=1000, show_default=True, help="Mean prompt length.")
@click.option("--output-tokens", type=int, default=200, show_default=True, help="Mean output length.")
@click.option("--model", default="llama-3.1-8b", show_default=True)
@click.option("--gpu", default="NVIDIA-H100-80GB-HBM3", show_default=True)
@click.option("--quantization", default="fp8", show_default=True)
@click.option("--tensor-parallel-size", type=int, default=1, show_default=True)
@click.option("--mode", type=click.Choice(["monolithic", "disaggregated"]), default="monolithic", show_default=True)
@click.option("--port", type=int, default=9400, show_default=True, help="Port of /metrics and /load (on 127.0.0.1).")
def simulate_live(namespace, deployment, rate, input_tokens, output_tokens, model, gpu, quantization,
                  tensor_parallel_size, mode, port) -> None:
    """Model the vLLM pods an LLMDeployment runs, in real time, and serve their metrics for Prometheus."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from ..controller import kube  # noqa: PLC0415
    from ..render import labels  # noqa: PLC0415
    from ..slo.profiles import default_profile  # noqa: PLC0415
    from .fleet import SimConfig  # noqa: PLC0415
    from .live import LiveFleet, LiveSimulator, serve  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    selector = {**labels.MANAGED_BY, **({labels.DEPLOYMENT_LABEL: deployment} if deployment else {})}
    registry = CollectorRegistry()
    profile = default_profile(model, gpu, quantization, tensor_parallel_size)
    fleet = LiveFleet(profile, SimConfig(mode=mode), registry)
    simulator = LiveSimulator(fleet, lambda: kube.list_pods(namespace, selector), rate, input_tokens, output_tokens)
    serve(simulator, registry, port)
    click.echo(f"serving vLLM metrics on http://127.0.0.1:{port}/metrics; set the load with /load?rate=R", err=True)
    simulator.run()
