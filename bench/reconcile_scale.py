#!/usr/bin/env python3
"""Reconcile at scale: N LLMDeployments applied at once, against the API server's own floor.

For each N: (1) the floor: the operator's rendered children for N deployments applied directly with
`kubectl apply --server-side`, timed until every Deployment is available; (2) the operator: the N
LLMDeployments applied at once, timed until every one is Ready with all its children; the operator's
peak RSS and CPU seconds; (3) the operator's write requests during a quiet minute (from the audit log).
The operator's time runs until every LLMDeployment is Ready with its children AND the operator has sent no
write for 15 s (queued handlers can still be writing after the last Ready); the idle minute starts then.

Needs the local cluster (`e2e/cluster.sh up`). Adds fake GPU nodes for the run and removes them after.
Usage: .venv/bin/python bench/reconcile_scale.py [--sizes 100,500,1000] [--idle-seconds 60] [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.cluster.conftest import Operator, operator_writes, wait_for  # noqa: E402  (the tests' own harness)

GPUS_PER_NODE = 8


def sh(*args: str, input_text: str | None = None, check: bool = True) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, input=input_text, timeout=1800)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} failed: {result.stderr[-2000:]}")
    return result.stdout


def kubectl(*args: str, input_text: str | None = None, check: bool = True) -> str:
    return sh("kubectl", *args, input_text=input_text, check=check)


def bench_nodes(count: int) -> list[dict]:
    """Extra KWOK H100 on-demand nodes so every benchmark pod has a GPU."""
    fleet = [d for d in yaml.safe_load_all((ROOT / "e2e" / "fleet.yaml").read_text()) if d and d.get("kind") == "Node"]
    template = next(n for n in fleet if n["metadata"]["labels"].get("nvidia.com/gpu.product") == "NVIDIA-H100-80GB-HBM3"
                    and n["metadata"]["labels"].get("karpenter.sh/capacity-type") == "on-demand")
    nodes = []
    for i in range(count):
        node = json.loads(json.dumps(template))
        node["metadata"]["name"] = f"bench-h100-{i}"
        node["metadata"]["labels"]["kubernetes.io/hostname"] = f"bench-h100-{i}"
        node["metadata"]["labels"]["llm-d.io/bench"] = "true"
        nodes.append(node)  # status included: KWOK keeps the capacity (8 GPUs) that the template declares
    return nodes


def deployments(n: int) -> list[dict]:
    return [{
        "apiVersion": "inference.llm-d.io/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": f"m{i:04d}"},
        "spec": {"model": {"name": "llama-3.1-8b", "quantization": {"type": "int8"}}, "replicas": 1,
                 "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                 "resources": {"policies": {"spotPreference": "never"}}},
    } for i in range(n)]


def fresh_namespace(name: str) -> None:
    kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true", "--timeout=600s", check=False)
    kubectl("create", "namespace", name)


def available_deployments(namespace: str) -> int:
    items = json.loads(kubectl("get", "deploy", "-n", namespace, "-o", "json"))["items"]
    return sum(1 for d in items if (d.get("status") or {}).get("availableReplicas", 0) >= (d["spec"].get("replicas") or 0) > 0)


def ready_llmds(namespace: str) -> int:
    out = kubectl("get", "llmd", "-n", namespace, "-o", "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}")
    return out.split().count("True")


def floor_seconds(n: int) -> float:
    namespace = f"bench-floor-{n}"
    fresh_namespace(namespace)
    source = ROOT / "bench" / "out" / f"llmds-{n}.yaml"
    source.write_text(yaml.safe_dump_all([{**d, "metadata": {**d["metadata"], "namespace": namespace}} for d in deployments(n)]))
    rendered = sh(sys.executable, "-m", "llmd_operator.cli", "render", "-f", str(source))
    started = time.monotonic()
    kubectl("apply", "--server-side", "-f", "-", input_text=rendered)
    wait_for(lambda: available_deployments(namespace) >= n, 1800, f"{n} directly applied Deployments", 2.0)
    elapsed = time.monotonic() - started
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    return elapsed


def operator_run(n: int, audit_log: Path | None, idle_seconds: int, log_dir: Path) -> dict:
    namespace = f"bench-op-{n}"
    fresh_namespace(namespace)
    operator = Operator(log_dir)
    operator.start()
    pid = operator.process.pid
    cpu_before = _cpu_seconds(pid)
    started = time.monotonic()
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input_text=yaml.safe_dump_all(deployments(n)))
    peak = 0
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        peak = max(peak, _rss_peak_kib(pid))
        if ready_llmds(namespace) >= n and available_deployments(namespace) >= n:
            break
        time.sleep(2.0)
    else:
        raise SystemExit(f"operator: not all {n} LLMDeployments Ready in time")
    ready = time.monotonic() - started
    settled = ready
    writes_per_minute = None
    if audit_log is not None:
        # Ready is not the end: queued handlers may still write. Settled = no operator write for 15 s.
        while operator_writes(audit_log, time.time() - 15):
            peak = max(peak, _rss_peak_kib(pid))
            time.sleep(3.0)
        settled = time.monotonic() - started - 15
    cpu = _cpu_seconds(pid) - cpu_before
    if audit_log is not None and idle_seconds > 0:
        quiet = time.time()
        time.sleep(idle_seconds)
        writes_per_minute = len(operator_writes(audit_log, quiet)) * 60 / idle_seconds
    peak = max(peak, _rss_peak_kib(pid))
    operator.stop()
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    return {"ready_seconds": ready, "seconds": settled, "peak_rss_mb": peak / 1024, "cpu_seconds": cpu,
            "idle_writes_per_minute": writes_per_minute}


def _rss_peak_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["n"] for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.38
    xs = range(len(sizes))
    left.bar([x - width / 2 for x in xs], [r["floor_seconds"] for r in rows], width, label="direct apply (floor)")
    left.bar([x + width / 2 for x in xs], [r["operator_seconds"] for r in rows], width, label="llmd-operator (settled)")
    left.set_xticks(list(xs), [str(s) for s in sizes])
    left.set_xlabel("LLMDeployments applied at once")
    left.set_ylabel("seconds until all Ready")
    left.legend()
    left.set_title("Time to converge")
    right.plot(sizes, [r["peak_rss_mb"] for r in rows], marker="o", label="peak RSS (MB)")
    right.axhline(300, color="grey", linestyle="--", label="target 300 MB")
    right.set_xlabel("LLMDeployments")
    right.set_ylabel("MB")
    right.legend()
    right.set_title("Operator memory")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--idle-seconds", type=int, default=60)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kubeconfig = sh(str(ROOT / "e2e" / "cluster.sh"), "up").strip().splitlines()[-1]
    os.environ["KUBECONFIG"] = kubeconfig
    os.environ["PATH"] = sh(str(ROOT / "e2e" / "cluster.sh"), "bin-dir").strip() + os.pathsep + os.environ["PATH"]
    audit = sh(str(ROOT / "e2e" / "cluster.sh"), "audit-log", check=False).strip()
    audit_log = Path(audit) if audit else None
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"adding {max(sizes) // GPUS_PER_NODE + 2} fake H100 nodes for the benchmark", flush=True)
    kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(bench_nodes(max(sizes) // GPUS_PER_NODE + 2)))  # as the fleet: status kept
    rows = []
    try:
        for n in sizes:
            print(f"[N={n}] direct apply of the rendered children ...", flush=True)
            floor = floor_seconds(n)
            print(f"[N={n}] floor {floor:.1f}s; now the operator ...", flush=True)
            result = operator_run(n, audit_log, args.idle_seconds, out)
            row = {"n": n, "floor_seconds": round(floor, 1), "operator_ready_seconds": round(result["ready_seconds"], 1),
                   "operator_seconds": round(result["seconds"], 1),
                   "ratio": round(result["seconds"] / floor, 2), "peak_rss_mb": round(result["peak_rss_mb"], 1),
                   "cpu_seconds": round(result["cpu_seconds"], 1),
                   "idle_writes_per_minute": result["idle_writes_per_minute"]}
            rows.append(row)
            print(f"[N={n}] operator: all Ready {row['operator_ready_seconds']}s, settled {row['operator_seconds']}s "
                  f"(x{row['ratio']} the floor), peak RSS "
                  f"{row['peak_rss_mb']} MB, CPU {row['cpu_seconds']}s, idle writes/min {row['idle_writes_per_minute']}", flush=True)
    finally:
        kubectl("delete", "nodes", "-l", "llm-d.io/bench=true", "--wait=false", check=False)
    header = (f"{'N':>6} {'floor s':>9} {'all Ready s':>12} {'settled s':>10} {'ratio':>6} {'peak RSS MB':>12} "
              f"{'CPU s':>7} {'idle writes/min':>16}")
    print("\n" + header)
    for r in rows:
        print(f"{r['n']:>6} {r['floor_seconds']:>9} {r['operator_ready_seconds']:>12} {r['operator_seconds']:>10} "
              f"{r['ratio']:>6} {r['peak_rss_mb']:>12} "
              f"{r['cpu_seconds']:>7} {str(r['idle_writes_per_minute']):>16}")
    (out / "reconcile_scale.json").write_text(json.dumps(rows, indent=2))
    plot(rows, out / "reconcile_scale.png")
    print(f"\nwrote {out / 'reconcile_scale.json'} and {out / 'reconcile_scale.png'}")


if __name__ == "__main__":
    main()
