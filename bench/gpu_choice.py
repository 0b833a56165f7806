#!/usr/bin/env python3
"""GPU product choice: what the planner's cost per token predicts, against what serving a real trace costs.

    .venv/bin/python bench/gpu_choice.py [--trace FILE] [--rates 1,4] [--out bench/out]

For each priced GPU that Llama-3.1-8B in bf16 fits on, the planner's figure ($/M output tokens at the SLO)
and the simulated hour of the Azure conversation trace under our policy and the oracle: dollars, GPU-hours
and SLO attainment. Prints a table, writes bench/out/gpu_choice.json and bench/out/gpu_choice.png. Not a
test. See bench/README.md, "GPU product choice".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from llmd_operator.catalog import load_catalog  # noqa: E402
from llmd_operator.planning import throughput  # noqa: E402
from llmd_operator.planning.plan import ENGINE  # noqa: E402
from llmd_operator.sim.run import config_for, run_policy  # noqa: E402
from llmd_operator.sim.trace import load_trace  # noqa: E402
from llmd_operator.slo.profiles import default_profile, gpu_hour_prices  # noqa: E402

MODEL, QUANT = "llama-3.1-8b", "bf16"
GPUS = ["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-SXM4-40GB", "Tesla-V100-SXM2-32GB"]
TTFT_S, ITL_S = 0.5, 0.05


def planner_figure(catalog, gpu: str) -> float:
    """The planner's $/M output tokens for this GPU (on-demand), as its GPU-choice note gives it."""
    per_token, _ = throughput.cost_per_token(catalog.model(MODEL), gpu, catalog.schemes["bf16"], 1, catalog.price(gpu),
                                             0.0, throughput.planning_workload(),
                                             ENGINE["max_num_batched_tokens"]["monolithic"])
    return per_token


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = sorted({r["rate_multiplier"] for r in rows})
    fig, axes = plt.subplots(1, len(rates) + 1, figsize=(5 * (len(rates) + 1), 4.2))
    names = [g.replace("NVIDIA-", "").replace("Tesla-", "").replace("-SXM4", "").replace("-SXM2", "") for g in GPUS]
    per_token = [next(r["planner_usd_per_m_tokens"] for r in rows if r["gpu"] == g) for g in GPUS]
    axes[0].bar(names, per_token, color="tab:blue")
    axes[0].set_title("planner: $/M output tokens at the SLO")
    for i, rate in enumerate(rates):
        ax = axes[i + 1]
        for shift, policy, colour in ((-0.2, "default", "tab:green"), (0.2, "oracle", "tab:gray")):
            runs = [next(r for r in rows if r["gpu"] == g and r["rate_multiplier"] == rate and r["policy"] == policy)
                    for g in GPUS]
            xs = [x + shift for x in range(len(GPUS))]
            ax.bar(xs, [r["cost_usd"] for r in runs], width=0.4, color=colour, label="ours" if policy == "default" else policy)
            for x, r in zip(xs, runs):
                ax.text(x, r["cost_usd"], f"{100 * r['slo_attainment']:.1f}%", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(GPUS)), names)
        ax.legend(fontsize=8)
        ax.set_title(f"Azure trace x{rate:g}: $ for the run (SLO attainment)")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", default=str(ROOT.parent / "shared" / "data" / "traces" / "azure_llm_inference_conv_2023.csv"))
    parser.add_argument("--rates", default="1,4", help="rate multipliers (compress)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    catalog = load_catalog()
    base = load_trace(args.trace)
    rows, started = [], time.perf_counter()
    for gpu in GPUS:
        profile = default_profile(MODEL, gpu, QUANT, 1)
        figure = planner_figure(catalog, gpu)
        for rate in [float(r) for r in args.rates.split(",")]:
            trace = base.at_rate(rate, "compress")
            cfg = config_for(profile, gpu, mode="monolithic", ttft_slo_s=TTFT_S, itl_slo_s=ITL_S)
            for policy in ("default", "oracle"):
                print(f"[{time.perf_counter() - started:5.0f}s] {gpu} x{rate:g}: {policy} ...", flush=True)
                s = run_policy(policy, trace, profile, cfg)
                rows.append({"gpu": gpu, "rate_multiplier": rate, "policy": policy,
                             "planner_usd_per_m_tokens": round(figure, 3),
                             "usd_per_gpu_hour": gpu_hour_prices(gpu)["on_demand"],
                             **{k: s[k] for k in ("gpu_hours", "cost_usd", "slo_attainment", "ttft_p95_s", "itl_p95_s")}})
    header = f"{'GPU':24s} {'x':>3s} {'policy':8s} {'planner $/M tok':>15s} {'$/GPU-h':>8s} {'GPU-h':>7s} {'$':>8s} {'SLO':>7s}"
    print(header)
    for r in rows:
        print(f"{r['gpu']:24s} {r['rate_multiplier']:3g} {r['policy']:8s} {r['planner_usd_per_m_tokens']:15.2f} "
              f"{r['usd_per_gpu_hour']:8.2f} {r['gpu_hours']:7.2f} {r['cost_usd']:8.2f} {100 * r['slo_attainment']:6.2f}%")
    (out / "gpu_choice.json").write_text(json.dumps({"model": MODEL, "quantization": QUANT, "trace": Path(args.trace).name,
                                                     "slo": {"ttft_p95_s": TTFT_S, "itl_p95_s": ITL_S}, "runs": rows},
                                                    indent=2))
    plot(rows, out / "gpu_choice.png")
    print(f"wrote {out / 'gpu_choice.json'} and {out / 'gpu_choice.png'}")


if __name__ == "__main__":
    main()
