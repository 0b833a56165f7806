"""Observe: one batched PromQL query per signal, for every deployment the loop manages, per tick."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from ..api.units import parse_duration
from ..planning.plan import ENGINE

log = logging.getLogger("llmd_operator.slo.observe")
LABELS = ENGINE["prometheus_labels"]
DEP, ROLE = LABELS["deployment"], LABELS["role"]
ENTRY_ROLES = "monolithic|decode"  # requests complete, and are timed, on these pools
ENTRY = f'{ROLE}=~"{ENTRY_ROLES}"'  # the label matcher that selects them


def _either(signal: str, expression) -> str:
    """`expression(name)` for each of the signal's metric names (current first), joined with `or`.

    One query still, and no clash when a release exports the old and the new name side by side:
    functions such as rate() drop the metric name, so a single __name__ regex would collide.
    """
    return " or ".join(f"({expression(name)})" for name in ENGINE["vllm_metrics"][signal])


def arrival_rate(window: str) -> str:
    """Requests/s arriving at each deployment: those that completed in the window plus the growth of
    those it holds (waiting and running, on every pool), both per second. vLLM counts requests only as
    they complete, and a pool that falls behind completes fewer than arrive: completions alone read an
    overload as a lighter load and a drain as a heavier one, where this balance reads what arrived.
    Never below 0; the completions alone where the gauges are missing."""
    dep = f"namespace, {DEP}"
    seconds = f"{parse_duration(window):g}"
    done = _either("request_success_total", lambda n: f"sum by ({dep}) (rate({n}{{{ENTRY}}}[{window}]))")
    held = " + ".join(f"({_either(signal, lambda n: f'sum by ({dep}) (delta({n}[{window}]))')})"
                      for signal in ("requests_waiting", "requests_running"))
    return f"clamp_min(({done}) + ((({held}) / {seconds}) or (({done}) * 0)), 0)"


def queries(window: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Signal -> (PromQL over all deployments, the labels its result is keyed by)."""
    by_dep, by_pool = ("namespace", DEP), ("namespace", DEP, ROLE)
    dep, pool = f"namespace, {DEP}", f"namespace, {DEP}, {ROLE}"

    def quantile(q: float, signal: str) -> str:
        return _either(signal, lambda n: f"histogram_quantile({q}, sum by ({dep}, le) (rate({n}_bucket{{{ENTRY}}}[{window}])))")

    def mean(signal: str) -> str:
        return _either(signal, lambda n: f"sum by ({dep}) (rate({n}_sum{{{ENTRY}}}[{window}])) / "
                                         f"sum by ({dep}) (rate({n}_count{{{ENTRY}}}[{window}]))")

    # The DCGM exporter labels a GPU with the namespace and pod it is allocated to, not with ours: borrow our
    # labels from the model server's own series of the same pod (1 per pod, so the product keeps the percent).
    model_server_pods = f"group by (namespace, pod, {DEP}, {ROLE}) ({_either('requests_running', lambda n: n)})"
    return {
        "request_rate": (arrival_rate(window), by_dep),
        "mean_input_tokens": (mean("prompt_tokens_hist"), by_dep),
        "mean_output_tokens": (mean("generation_tokens_hist"), by_dep),
        "prompt_tokens_p95": (quantile(0.95, "prompt_tokens_hist"), by_dep),
        "ttft_p50_s": (quantile(0.5, "ttft_seconds"), by_dep),
        "ttft_p95_s": (quantile(0.95, "ttft_seconds"), by_dep),
        "itl_p50_s": (quantile(0.5, "itl_seconds"), by_dep),
        "itl_p95_s": (quantile(0.95, "itl_seconds"), by_dep),
        "tokens_per_s": (_either("generation_tokens_total", lambda n: f"sum by ({dep}) (rate({n}[{window}]))"), by_dep),
        "queue_depth": (_either("requests_waiting", lambda n: f"sum by ({pool}) ({n})"), by_pool),
        "running": (_either("requests_running", lambda n: f"sum by ({pool}) ({n})"), by_pool),
        "kv_usage": (_either("kv_cache_usage", lambda n: f"avg by ({pool}) ({n})"), by_pool),
        "gpu_util": (_either("gpu_utilization", lambda n: f"avg by ({pool}) ({n} * on (namespace, pod) group_left ({DEP}, {ROLE}) "
                                                           f"{model_server_pods}) / 100"), by_pool),
        "pool_generation_tokens_per_s": (_either("generation_tokens_total", lambda n: f"sum by ({pool}) (rate({n}[{window}]))"), by_pool),
        "pool_prompt_tokens_per_s": (_either("prompt_tokens_total", lambda n: f"sum by ({pool}) (rate({n}[{window}]))"), by_pool),
        "last_sample_s": (_either("requests_running", lambda n: f"max by ({dep}) (timestamp({n}))"), by_dep),
    }


@dataclass
class Snapshot:
    """What Prometheus said this tick: per (namespace, deployment) and per (namespace, deployment, role)."""

    ok: bool
    error: str = ""
    deployment: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    pool: dict[tuple[str, str, str], dict[str, float]] = field(default_factory=dict)
    evaluated_at: float = 0.0
    window: str = ""          # the PromQL range its rates and quantiles were read over


def window_for(interval_s: float, configured: str | None = None) -> str:
    """The PromQL range a deployment's rates and quantiles are read over: `configured` (--metrics-window)
    when given, else its scaling interval. The policies are tuned and benchmarked on one interval's
    requests per decision (bench/README.md); a longer window blurs the bursts they size for and reports
    a load change up to a window late."""
    if configured:
        return configured
    if interval_s % 60 == 0:
        return f"{interval_s / 60:.0f}m"
    if interval_s == int(interval_s):
        return f"{interval_s:.0f}s"
    return f"{interval_s * 1000:.0f}ms"   # PromQL durations take whole units


# how far the loop widens a deployment's window when its samples are too sparse for a rate over one
# interval: 2, 4, then 8 intervals (a 30 s interval: up to 4 min, for scrapes up to every 2 min)
WIDER_WINDOW_FACTORS = (2, 4, 8)


def snapshot_with_rate(snapshot_for, key: tuple[str, str], interval_s: float, configured: str | None = None) -> Snapshot:
    """The snapshot to decide a deployment from. `snapshot_for(window)` takes (and caches) a snapshot
    over a PromQL range. Over the deployment's own window first; when Prometheus has samples of the
    deployment but too few in that window for a rate (a scrape slower than twice per interval), over
    the shortest wider window in WIDER_WINDOW_FACTORS x the interval that gives one. A window the
    operator was given (--metrics-window) is never widened."""
    snapshot = snapshot_for(window_for(interval_s, configured))
    said = snapshot.deployment.get(key, {})
    if configured or not snapshot.ok or "request_rate" in said or "last_sample_s" not in said:
        return snapshot
    for factor in WIDER_WINDOW_FACTORS:
        wider = snapshot_for(window_for(interval_s * factor))
        if wider.ok and "request_rate" in wider.deployment.get(key, {}):
            return wider
    return snapshot


def take_snapshot(prometheus, window: str) -> Snapshot:
    """Run every signal's query once, rates and quantiles over `window` (a PromQL range). `prometheus` is
    a prometheus_api_client.PrometheusConnect."""
    snapshot = Snapshot(ok=True, window=window)
    for signal, (promql, keys) in queries(window).items():
        try:
            result = prometheus.custom_query(promql)
        except Exception as error:  # noqa: BLE001 (connection refused, HTTP errors, timeouts alike)
            return Snapshot(ok=False, error=f"Prometheus query for {signal} failed: {error}")
        for sample in result:
            labels = sample.get("metric", {})
            stamp, text = sample["value"]
            snapshot.evaluated_at = max(snapshot.evaluated_at, float(stamp))
            value = float(text)
            if not math.isfinite(value):
                continue  # NaN (no traffic in a histogram) is "unknown", never zero
            key = tuple(labels.get(k, "") for k in keys)
            target = snapshot.deployment if len(keys) == 2 else snapshot.pool
            target.setdefault(key, {})[signal] = value
    return snapshot


def substitute(promql: str, namespace: str, deployment: str, pool: str = "") -> str:
    """An objective's calculator with the deployment's labels put in; comment lines dropped."""
    lines = [line for line in promql.splitlines() if not line.strip().startswith("#")]
    text = "\n".join(lines).strip()
    for name, value in (("$namespace", namespace), ("$deployment", deployment), ("$pool", pool)):
        text = text.replace(name, value)
    return text


def scalar(prometheus, promql: str) -> float | None:
    """The value of a query that should give one number; None when it gives nothing or NaN."""
    try:
        result = prometheus.custom_query(promql)
    except Exception as error:  # noqa: BLE001
        log.info("query failed: %s: %s", promql, error)
        return None
    for sample in result:
        value = float(sample["value"][1])
        if math.isfinite(value):
            return value
    return None
