"""`llmd-operator simulate`: replay a request trace through a modelled fleet under a scaling policy.

Registered into the main CLI with `cli.add_command(simulate)`; also `python -m llmd_operator.sim`.
"""

from __future__ import annotations

import json
import sys

import click

from ..cli_params import Duration
from ..slo.profiles import ProfileError, default_profile, load_profile
from .baselines import POLICY_NAMES
from .fleet import LATENCY_QUANTILES, LENGTHS_AT
from .run import config_for, run_policy
from .trace import TraceError, load_trace

def _table(summary: dict) -> str:
    keys = ["policy", "requests", "gpu_hours", "cost_usd", "cost_on_demand_usd", "slo_attainment",
            "slo_attainment_after_warmup", "attainable_share", "slo_attainment_of_attainable", "ttft_p95_s",
            "itl_p95_s", "scale_events", "rate_note", "sim_wall_s"]
    w = max(len(k) for k in keys)
    return "\n".join(f"{k:<{w}}  {summary.get(k)}" for k in keys)


@click.command("simulate")
@click.option("--trace", "trace_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Azure LLM inference CSV (2023, 2024), BurstGPT CSV or Mooncake JSONL "
                   "(detected from the content).")
@click.option("--policy", type=click.Choice(POLICY_NAMES), default="default", show_default=True)
@click.option("--rate-multiplier", type=float, default=1.0, show_default=True,
              help="Replay the trace this many times as fast.")
@click.option("--rate-mode", type=click.Choice(["compress", "overlay"]), default="compress", show_default=True,
              help="compress: divide arrival times (shorter run); overlay: overlay shifted copies (same duration).")
@click.option("--start", "start_s", type=Duration(), default="0s", show_default=True,
              help="Replay the trace from this far after its first request (e.g. 2h, 3d).")
@click.option("--duration", "duration_s", type=Duration(), default=None,
              help="Replay only this much of the trace from --start (e.g. 1h); default: to its end.")
@click.option("--ttft-slo", type=Duration(), default="0.5s", show_default=True, help="p95 TTFT target.")
@click.option("--itl-slo", type=Duration(), default="50ms", show_default=True, help="p95 inter-token latency target.")
@click.option("--model", default="llama-3.1-8b", show_default=True)
@click.option("--quantization", default="fp8", show_default=True, help="bf16 | fp8 | int8 | int4")
@click.option("--gpu", "gpu_product", default="NVIDIA-H100-80GB-HBM3", show_default=True,
              help="GPU product (nvidia.com/gpu.product label).")
@click.option("--tensor-parallel-size", "tp", type=int, default=1, show_default=True)
@click.option("--profile", "profile_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A CapacityProfile YAML instead of the shipped/derived default.")
@click.option("--mode", type=click.Choice(["monolithic", "disaggregated"]), default="monolithic", show_default=True)
@click.option("--interval", type=Duration(), default="30s", show_default=True, help="Control interval.")
@click.option("--metrics-window", type=Duration(), default=None,
              help="Range the policy's rates and latency quantiles cover, as the operator's --metrics-window "
                   "(whole intervals). Default: one interval, as the operator's default.")
@click.option("--latency-quantiles", type=click.Choice(LATENCY_QUANTILES), default="histogram", show_default=True,
              help="How the policy reads latency quantiles: as the operator does, Prometheus's histogram_quantile "
                   "over vLLM's histogram buckets (histogram), or exactly from the requests (exact).")
@click.option("--lengths-at", type=click.Choice(LENGTHS_AT), default="completion", show_default=True,
              help="When the policy learns a request's prompt and answer lengths: when it finishes, as the operator "
                   "does from vLLM's per-request token histograms (completion), or when it arrives (arrival).")
@click.option("--startup-delay", type=Duration(), default="90s", show_default=True,
              help="Pod creation to ready; billed.")
@click.option("--spot-interruptions", type=float, default=0.0, show_default=True,
              help="Interruptions per spot replica-hour.")
@click.option("--max-spot-ratio", type=float, default=0.0, show_default=True,
              help="Share of replicas the cost-aware policies may put on spot.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--output", type=click.Choice(["json", "table"]), default="json", show_default=True)
@click.option("--timeline/--no-timeline", default=False, show_default=True,
              help="Include the per-interval timeline in the JSON.")
def simulate(trace_path, policy, rate_multiplier, rate_mode, start_s, duration_s, ttft_slo, itl_slo, model, quantization,
             gpu_product, tp, profile_path, mode, interval, metrics_window, latency_quantiles, lengths_at,
             startup_delay, spot_interruptions, max_spot_ratio, seed, output, timeline):
    """Replay a request trace through modelled vLLM replicas under a scaling policy and print
    GPU-hours, cost, SLO attainment and latency percentiles."""
    try:
        trace = load_trace(trace_path, rate_multiplier, rate_mode, start_s=start_s, duration_s=duration_s)
        profile = (load_profile(profile_path, quantization) if profile_path
                   else default_profile(model, gpu_product, quantization, tp))
        cfg = config_for(profile, profile.gpu_product if profile_path else gpu_product,
                         ttft_slo_s=ttft_slo, itl_slo_s=itl_slo, mode=mode,
                         interval_s=interval, metrics_window_s=metrics_window, latency_quantiles=latency_quantiles,
                         lengths_at=lengths_at, startup_delay_s=startup_delay,
                         spot_interruptions_per_hour=spot_interruptions, seed=seed)
    except (TraceError, ProfileError, OSError) as e:
        raise click.ClickException(str(e)) from e
    summary = run_policy(policy, trace, profile, cfg, max_spot_ratio=max_spot_ratio)
    summary["model"] = profile.model
    summary["quantization"] = profile.quantization
    summary["gpu_product"] = profile.gpu_product
    summary["tensor_parallel_size"] = profile.tensor_parallel_size
    summary["profile_source"] = profile.source[:200]
    if not timeline:
        summary.pop("timeline", None)
    if output == "json":
        click.echo(json.dumps(summary, sort_keys=False))
    else:
        click.echo(_table(summary))


def main() -> None:  # pragma: no cover
    simulate(prog_name="llmd-operator simulate")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
