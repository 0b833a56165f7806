"""Observe: one batched PromQL query per signal, for every deployment the loop manages, per tick."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field

from ..planning.plan import ENGINE

log = logging.getLogger("llmd_operator.slo.observe")
LABELS = ENGINE["prometheus_labels"]
DEP, ROLE = LABELS["deployment"], LABELS["role"]
ENTRY_ROLES = "monolithic|decode"  # requests complete, and are timed, on these pools


def _names(signal: str) -> str:
    """A __name__ matcher covering the metric's current and older vLLM names."""
    return "|".join(re.escape(n) for n in ENGINE["vllm_metrics"][signal])


def queries(window: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Signal -> (PromQL over all deployments, the labels its result is keyed by)."""
    by_dep, by_pool = ("namespace", DEP), ("namespace", DEP, ROLE)
    entry = f'{ROLE}=~"{ENTRY_ROLES}"'

    def hist_quantile(q: float, signal: str) -> str:
        return (f'histogram_quantile({q}, sum by (namespace, {DEP}, le) '
                f'(rate({{__name__=~"{_bucket(signal)}", {entry}}}[{window}])))')

    def hist_mean(signal: str) -> str:
        names = ENGINE["vllm_metrics"][signal]
        total = "|".join(re.escape(n + "_sum") for n in names)
        count = "|".join(re.escape(n + "_count") for n in names)
        return (f'sum by (namespace, {DEP}) (rate({{__name__=~"{total}", {entry}}}[{window}])) / '
                f'sum by (namespace, {DEP}) (rate({{__name__=~"{count}", {entry}}}[{window}]))')

    return {
        "request_rate": (f'sum by (namespace, {DEP}) (rate({{__name__=~"{_names("request_success_total")}", {entry}}}[{window}]))', by_dep),
        "mean_input_tokens": (hist_mean("prompt_tokens_hist"), by_dep),
        "mean_output_tokens": (hist_mean("generation_tokens_hist"), by_dep),
        "ttft_p50_s": (hist_quantile(0.5, "ttft_seconds"), by_dep),
        "ttft_p95_s": (hist_quantile(0.95, "ttft_seconds"), by_dep),
        "itl_p50_s": (hist_quantile(0.5, "itl_seconds"), by_dep),
        "itl_p95_s": (hist_quantile(0.95, "itl_seconds"), by_dep),
        "tokens_per_s": (f'sum by (namespace, {DEP}) (rate({{__name__=~"{_names("generation_tokens_total")}"}}[{window}]))', by_dep),
        "queue_depth": (f'sum by (namespace, {DEP}, {ROLE}) ({{__name__=~"{_names("requests_waiting")}"}})', by_pool),
        "running": (f'sum by (namespace, {DEP}, {ROLE}) ({{__name__=~"{_names("requests_running")}"}})', by_pool),
        "kv_usage": (f'avg by (namespace, {DEP}, {ROLE}) ({{__name__=~"{_names("kv_cache_usage")}"}})', by_pool),
        "gpu_util": (f'avg by (namespace, {DEP}, {ROLE}) ({{__name__=~"{_names("gpu_utilization")}"}}) / 100', by_pool),
        "pool_tokens_per_s": (
            f'sum by (namespace, {DEP}, {ROLE}) (rate({{__name__=~"{_names("generation_tokens_total")}|{_names("prompt_tokens_total")}"}}[{window}]))',
            by_pool),
        "last_sample_s": (f'max by (namespace, {DEP}) (timestamp({{__name__=~"{_names("requests_running")}"}}))', by_dep),
    }


def _bucket(signal: str) -> str:
    return "|".join(re.escape(n + "_bucket") for n in ENGINE["vllm_metrics"][signal])


@dataclass
class Snapshot:
    """What Prometheus said this tick: per (namespace, deployment) and per (namespace, deployment, role)."""

    ok: bool
    error: str = ""
    deployment: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    pool: dict[tuple[str, str, str], dict[str, float]] = field(default_factory=dict)
    evaluated_at: float = 0.0


def take_snapshot(prometheus, window: str = "2m") -> Snapshot:
    """Run every signal's query once. `prometheus` is a prometheus_api_client.PrometheusConnect."""
    snapshot = Snapshot(ok=True)
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
