"""Inputs and outputs of the scaling policies: small frozen dataclasses, no API or cluster types.

The controller maps its CRD objects and Prometheus snapshot onto these; the simulator builds them from
its own fleet. Everything a policy remembers between ticks is in `PolicyState`, which round-trips
through JSON (`to_json` / `from_json`) so the operator can keep it in status and survive restarts.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

ROLES = ("monolithic", "prefill", "decode")
ON_DEMAND, SPOT = "on_demand", "spot"


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


@dataclass(frozen=True)
class PoolObservation:
    """One pool of one deployment, as observed over the last interval."""

    role: str = "monolithic"
    replicas_on_demand: int = 0          # current (desired by the Deployment, incl. starting)
    replicas_spot: int = 0
    ready_on_demand: int = 0
    ready_spot: int = 0
    queue_depth: float | None = None      # vllm:num_requests_waiting, summed over the pool
    running: float | None = None          # vllm:num_requests_running, summed
    kv_usage: float | None = None         # mean vllm:kv_cache_usage_perc, 0..1
    gpu_util: float | None = None         # mean DCGM_FI_DEV_GPU_UTIL, 0..1
    tokens_per_s: float | None = None     # prompt (prefill pool) or generation (decode) tokens/s

    @property
    def replicas(self) -> int:
        return self.replicas_on_demand + self.replicas_spot

    @property
    def ready(self) -> int:
        return self.ready_on_demand + self.ready_spot


@dataclass(frozen=True)
class FleetObservation:
    """One deployment at time `time_s` (seconds; any epoch, monotonic across ticks)."""

    time_s: float
    pools: tuple[PoolObservation, ...]
    request_rate: float | None = None     # requests/s arriving
    mean_input_tokens: float | None = None
    mean_output_tokens: float | None = None
    # p95 prompt length of the requests that finished (vLLM's prompt-token histogram): its prefill time
    # alone is a floor under TTFT p95 that no number of replicas lowers
    prompt_tokens_p95: float | None = None
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None
    itl_p50_s: float | None = None
    itl_p95_s: float | None = None
    tokens_per_s: float | None = None     # generated tokens/s, whole deployment
    cost_per_hour: float | None = None    # what the fleet costs now (if the caller knows better than prices)
    demand_signal: float = 0.0            # e.g. gateway queue for a scaled-to-zero deployment; > 0 wakes it
    metrics_fresh: bool = True            # False when Prometheus is down or the samples are stale
    metrics_note: str = ""                # when not fresh: why, in words
    objective_values: tuple[tuple[str, float], ...] = ()   # (objective name, measured value) for threshold

    def pool(self, role: str) -> PoolObservation | None:
        for p in self.pools:
            if p.role == role:
                return p
        return None

    @property
    def mode(self) -> str:
        return "disaggregated" if self.pool("prefill") is not None else "monolithic"


@dataclass(frozen=True)
class SLOTargets:
    ttft_p95_s: float = 0.5
    itl_p95_s: float = 0.05


@dataclass(frozen=True)
class Objective:
    """A weighted objective of the threshold policy (the seed's sloPolicy.objectives).

    direction: 'ceiling' when the target is an upper bound (latency, utilisation, cost: violation =
    (actual - target) / target exactly as the seed writes it), 'floor' for lower bounds (throughput:
    violation = (target - actual) / target, so that positive always means worse than target).
    metric: which observed value it reads when the caller gives no objective_values entry
    (ttft_p95, itl_p95, latency_p95, tokens_per_s, gpu_util, kv_usage).
    """

    name: str
    target: float
    weight: float = 1.0
    direction: str = "ceiling"
    metric: str = ""


@dataclass(frozen=True)
class ScaleCondition:
    """One entry of the seed's scaleUpConditions / scaleDownConditions."""

    slo_violation: float | None = None
    cost_per_request: float | None = None
    utilization_below: float | None = None
    urgency: str = "normal"              # low | normal | high
    action: str = "add_replicas"
    min_idle_time_s: float = 0.0


SEED_SCALE_UP = (
    ScaleCondition(slo_violation=0.05, urgency="normal", action="add_replicas"),
    ScaleCondition(slo_violation=0.15, urgency="high", action="add_replicas_fast"),
    ScaleCondition(cost_per_request=0.005, urgency="low", action="optimize_batching"),
)
SEED_SCALE_DOWN = (
    ScaleCondition(slo_violation=-0.1, min_idle_time_s=300.0, action="remove_replicas"),
    ScaleCondition(utilization_below=0.4, min_idle_time_s=120.0, action="consolidate_workloads"),
)


@dataclass(frozen=True)
class ThresholdRules:
    objectives: tuple[Objective, ...] = ()
    scale_up: tuple[ScaleCondition, ...] = SEED_SCALE_UP
    scale_down: tuple[ScaleCondition, ...] = SEED_SCALE_DOWN
    high_urgency_factor: float = 0.5     # add_replicas_fast: +50% of current, at least +2


@dataclass(frozen=True)
class Constraints:
    min_replicas: tuple[tuple[str, int], ...] = ()     # (role, n); roles absent -> 0 (or 1, see below)
    max_replicas: tuple[tuple[str, int], ...] = ()
    default_min_replicas: int = 1
    default_max_replicas: int = 100
    max_cost_per_hour: float | None = None
    max_cost_per_request: float | None = None
    max_latency_p95_s: float | None = None
    min_throughput_tokens_per_s: float | None = None
    max_spot_ratio: float = 0.0          # 0 = on-demand only
    scale_to_zero_idle_s: float | None = None   # None = never scale to zero

    def min_for(self, role: str) -> int:
        return dict(self.min_replicas).get(role, self.default_min_replicas)

    def max_for(self, role: str) -> int:
        return dict(self.max_replicas).get(role, self.default_max_replicas)


@dataclass(frozen=True)
class Prices:
    """USD per replica-hour (a replica = tensor_parallel_size GPUs) per capacity type."""

    on_demand_per_hour: float
    spot_per_hour: float | None = None
    spot_available: bool = True          # False while spot pods are unschedulable (SpotFallback)


@dataclass(frozen=True)
class Tuning:
    """Generic knobs of the default policy (not per trace)."""

    headroom: float = 0.10               # extra capacity over the predicted load
    ewma_alpha: float = 0.5
    trend_window_s: float = 180.0
    predict_work: bool = False           # also trend-predict the replicas-needed series (rate x lengths)
    # x the least-squares slope, extrapolated over the horizon: a 180 s slope taken on a burst's
    # rising edge overshoots its crest; 0.75 of it held the same attainment on the benchmark
    # traces and on a steady 7x ramp with up to 10% fewer GPU-hours (bench/README.md)
    trend_gain: float = 0.75
    # a prefill pool sizes for the last interval's mean prompt when it is this many standard errors
    # above the EWMA (model_based.prefill_prompt_length); None: EWMA only
    prompt_rise_z: float | None = 1.0
    peak_window_s: float = 120.0         # also keep capacity for peak_weight x the recent peak
    peak_weight: float = 0.0             # 0 = off
    noise_z: float = 0.5                 # Poisson headroom: z * sqrt(rate / interval)
    correction_min_load: float = 0.4     # update the correction only when the step is >= this x ITL target
    startup_delay_s: float = 90.0        # prediction horizon covers pod start-up
    interval_s: float = 30.0
    scale_down_cooldown_s: float = 90.0
    scale_down_window_s: float = 60.0    # scale down to the highest recommendation of this window
    # on/off load (bursts shorter than a start-up delay, then idle minutes): when the busiest interval of
    # the last bursty_window_s carries >= bursty_peak_to_mean x that window's mean rate, replicas
    # released in a lull would be missing at the next burst, so scale down only to the highest
    # recommendation of the whole window
    bursty_window_s: float = 900.0
    bursty_peak_to_mean: float = 1.5
    bursty_min_history_s: float = 90.0
    scale_up_cooldown_s: float = 0.0
    max_scale_down_step: float = 0.5    # fraction of current replicas removed at most per decision
    scale_down_margin: float = 0.9       # N-1 must run at most this fraction of its SLO capacity
    itl_margin: float = 0.8              # mean decode step at most this fraction of the ITL p95 target
    ttft_margin: float = 0.7
    max_utilization: float = 0.85        # busy-time cap per replica
    correction_min: float = 0.7
    correction_max: float = 2.0
    overload_boost_max: float = 1.5      # when p95 > target: need >= now-need x min(this, p95/target)
    correction_alpha: float = 0.3
    prefill_correction: bool = True     # correct a prefill pool's profile by its median TTFT (upwards only)
    correction_deadband: float = 1.3     # observed/predicted within [1/1.3, 1.3] counts as 1
    prompt_cv2: float = 1.0              # squared coefficient of variation of prompt lengths
    # decode batch context read from KV usage (model_based._update_context_scale): only from a pool
    # running at least this many requests per ready replica, bounded to [min, max]
    context_min_running_per_replica: float = 4.0
    context_scale_min: float = 0.25
    context_scale_max: float = 2.0
    # prefill pool busy-time cap. The pool is sized as one M/G/c queue, whose p95 wait stays short up
    # to ~0.95 busy in pools of 10+ replicas; the cap is then the pool's only reserve against prompts
    # growing during a start-up delay (Mooncake x8 overlay: 0.85 -> 95.3% attainment, 0.82 -> 98.7%)
    prefill_max_utilization: float = 0.80
    # decode pools keep room in their KV caches for this many spreads of the contexts they hold
    # (capacity.decode_replicas); 0 sizes for the mean context alone, which let one decode replica
    # fill its cache and stall admission on Mooncake's conversation trace (94.2% -> 98.5% at x4 overlay)
    kv_z: float = 1.0
    decode_kv_full: float = 0.9          # mean KV usage of a decode pool with requests waiting: full
    chunk_tokens: int = 2048             # monolithic chunked-prefill token budget per step
    prefill_chunk_tokens: int = 8192     # prefill pool token budget per step
    kv_transfer_bytes_per_s: float = 25e9
    spot_spare_fraction: float = 0.1     # extra replicas per spot replica (rounded up), against interruptions


@dataclass(frozen=True)
class HPASpec:
    metric: str = "gpu_util"             # gpu_util | kv_usage | concurrency
    target: float = 0.7
    tolerance: float = 0.1
    scale_down_stabilization_s: float = 300.0
    concurrency_per_replica: float = 64.0   # for metric=concurrency: the 100% mark
    concurrency_by_role: tuple[tuple[str, float], ...] = ()   # per-pool override of the 100% mark


@dataclass(frozen=True)
class PolicySpec:
    slo: SLOTargets = SLOTargets()
    constraints: Constraints = Constraints()
    prices: Prices = Prices(on_demand_per_hour=1.0)
    threshold: ThresholdRules = ThresholdRules()
    tuning: Tuning = Tuning()
    hpa: HPASpec = HPASpec()


@dataclass(frozen=True)
class PoolDecision:
    role: str
    current: int
    target: int
    target_spot: int
    reason: str
    action: str = "hold"                 # scale_up | scale_down | hold | optimize_batching | ...

    @property
    def target_on_demand(self) -> int:
        return self.target - self.target_spot


@dataclass(frozen=True)
class Decision:
    time_s: float
    policy: str
    pools: tuple[PoolDecision, ...]
    reason: str
    budget_limited: bool = False
    budget_message: str = ""
    held_for_missing_metrics: bool = False
    cost_per_hour: float = 0.0
    predicted: tuple[tuple[str, float], ...] = ()      # e.g. (("request_rate", 9.1), ...)
    slo_scores: tuple[tuple[str, float], ...] = ()     # per objective: (observed - target) / target

    def pool(self, role: str) -> PoolDecision | None:
        for p in self.pools:
            if p.role == role:
                return p
        return None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["predicted"] = dict(self.predicted)
        d["slo_scores"] = dict(self.slo_scores)
        return d


@dataclass
class PolicyState:
    """What a policy remembers. Mutable only inside `decide`, which returns a new one."""

    history: list[list[float]] = field(default_factory=list)   # [t, rate, mean_in, mean_out]
    last_scale_up_s: dict[str, float] = field(default_factory=dict)
    last_scale_down_s: dict[str, float] = field(default_factory=dict)
    idle_since_s: float | None = None
    condition_since_s: dict[str, float] = field(default_factory=dict)   # threshold: condition -> since
    correction: float = 1.0
    last_targets: dict[str, int] = field(default_factory=dict)
    hpa_recommendations: list[list[float]] = field(default_factory=list)  # [t, desired] per role key
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> "PolicyState":
        if not text:
            return cls()
        d = json.loads(text)
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    def copy(self) -> "PolicyState":
        return PolicyState.from_json(self.to_json())
