"""How the SLO loop reads the API: targets, constraints, prices, spot health, calculators."""

from __future__ import annotations

import json

import pytest

from llmd_operator.api.inferencescheduler import InferenceScheduler
from llmd_operator.api.llmdeployment import LLMDeployment
from llmd_operator.planning.plan import PlanError, PlanOptions, plan_deployment
from llmd_operator.slo import observe, policy_inputs
from llmd_operator.slo.decide import policy_name
from llmd_operator.slo.decide.common import metrics_problem
from tests.conftest import seed_documents


def llmd(spec: dict, annotations: dict | None = None) -> LLMDeployment:
    return LLMDeployment.model_validate({"metadata": {"name": "chat", "namespace": "team", "annotations": annotations or {}},
                                         "spec": spec})


def test_seed_scheduler_maps_onto_the_threshold_rules_as_written():
    body = next(d.body for d in seed_documents() if d.body["kind"] == "InferenceScheduler")
    scheduler = InferenceScheduler.model_validate(body)
    objectives, scaling, algorithm = policy_inputs.slo_policy(llmd({"model": {"name": "llama-3.1-8b"}, "schedulerName": "x"}), scheduler)
    assert policy_name(algorithm) == "default"  # cost_aware_proportional is our default policy
    rules = policy_inputs.threshold_rules(objectives, scaling)
    assert [(o.name, o.target, o.weight, o.direction) for o in rules.objectives] == [
        ("weighted_latency", 0.5, 0.4, "ceiling"),
        ("cost_efficient_throughput", 75000.0, 0.3, "floor"),
        ("gpu_cost_efficiency", 0.7, 0.3, "ceiling"),
    ]
    assert [(c.slo_violation, c.cost_per_request, c.urgency, c.action) for c in rules.scale_up] == [
        (0.05, None, "normal", "add_replicas"), (0.15, None, "high", "add_replicas_fast"),
        (None, 0.005, "low", "optimize_batching")]
    assert [(c.slo_violation, c.utilization_below, c.min_idle_time_s) for c in rules.scale_down] == [
        (-0.1, None, 300.0), (None, 0.4, 120.0)]


def test_constraints_prices_and_scale_to_zero_come_from_spec_and_plan(catalog):
    deployment = llmd({"model": {"name": "llama-3.1-8b"}, "schedulerName": "s",
                       "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                       "resources": {"policies": {"spotPreference": "preferred", "maxSpotRatio": 0.5}},
                       "scaling": {"mode": "scheduler_managed", "constraints": {
                           "minReplicas": 0, "maxReplicas": 20, "maxCostPerHour": 50.0, "maxCostPerRequest": 0.005,
                           "maxLatencyP95": "1000ms", "minThroughput": "100"}}},
                      annotations={"cost-optimization.llm-d.io/scale-to-zero": "true",
                                   "cost-optimization.llm-d.io/max-idle-minutes": "7"})
    plan = plan_deployment(deployment, catalog, PlanOptions())
    spec = policy_inputs.policy_spec(deployment, None, plan, spot_available=False, interval_s=30)
    c = spec.constraints
    assert (c.min_for("monolithic"), c.max_for("monolithic")) == (0, 20)
    assert (c.max_cost_per_hour, c.max_cost_per_request, c.max_latency_p95_s, c.min_throughput_tokens_per_s) == (50.0, 0.005, 1.0, 100.0)
    assert c.max_spot_ratio == 0.5 and c.scale_to_zero_idle_s == 420.0  # not the 300 s default
    assert spec.prices.on_demand_per_hour == pytest.approx(6.88) and spec.prices.spot_per_hour == pytest.approx(2.50)
    assert spec.prices.spot_available is False


def test_scaling_timings_come_from_the_inline_policy(catalog):
    deployment = llmd({"model": {"name": "llama-3.1-8b"}, "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                       "scheduling": {"sloPolicy": {"objectives": [{"name": "ttft_p95", "target": "500ms"}],
                                                    "scaling": {"scaleDownCooldown": "15s", "burstHold": "0s"}}}})
    plan = plan_deployment(deployment, catalog, PlanOptions())
    tuning = policy_inputs.policy_spec(deployment, None, plan, spot_available=True, interval_s=30).tuning
    assert (tuning.scale_down_cooldown_s, tuning.bursty_window_s) == (15.0, 0.0)


def _pod(name, capacity, node=None, unschedulable_since=None):
    pod = {"metadata": {"name": name, "labels": {"llm-d.io/capacity-type": capacity}}, "spec": {}, "status": {}}
    if node:
        pod["spec"]["nodeName"] = node
    if unschedulable_since:
        pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                        "lastTransitionTime": unschedulable_since, "message": "0/4 nodes are available"}]
    return pod


NODES = {"spot-a": {"metadata": {"name": "spot-a"}, "spec": {}},
         "spot-b": {"metadata": {"name": "spot-b"}, "spec": {"taints": [{"key": "aws-node-termination-handler/spot-itn", "effect": "NoSchedule"}]}},
         "spot-c": {"metadata": {"name": "spot-c", "deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": {}}}
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.mark.parametrize("pods, usable, words", [
    ([_pod("a", "spot", "spot-a")], True, ""),
    ([_pod("a", "spot", "spot-b")], False, "being drained (aws-node-termination-handler/spot-itn)"),
    ([_pod("a", "spot", "spot-c")], False, "being deleted"),
    ([_pod("a", "spot", "gone")], False, "is gone"),
    ([_pod("a", "spot", unschedulable_since="2027-01-15T07:58:00Z")], False, "unschedulable for 120s"),
    ([_pod("a", "spot", unschedulable_since="2027-01-15T07:59:30Z")], True, ""),  # within the grace period
    ([_pod("a", "on-demand", "spot-b")], True, ""),  # on-demand pods do not count
], ids=["healthy", "drained", "deleted", "node-gone", "pending", "pending-briefly", "on-demand"])
def test_spot_health(pods, usable, words):
    ok, why = policy_inputs.spot_health(pods, NODES, ["aws-node-termination-handler/spot-itn"], NOW, pending_grace_s=60.0)
    assert ok is usable and words in why


def test_calculators_get_the_deployment_labels_and_lose_comments():
    text = "# weighted latency\np95(request_duration_seconds{namespace=\"$namespace\", llm_d_deployment=\"$deployment\"})"
    assert observe.substitute(text, "prod", "chat") == 'p95(request_duration_seconds{namespace="prod", llm_d_deployment="chat"})'


def test_one_query_per_signal_covers_current_and_older_vllm_names():
    queries = observe.queries("2m")
    itl = queries["itl_p95_s"][0]
    names = ["vllm:request_time_per_output_token_seconds", "vllm:inter_token_latency_seconds",
             "vllm:time_per_output_token_seconds"]   # per request first, then per gap: newer, then older
    at = [itl.index(f"rate({name}_bucket{{") for name in names]
    assert at == sorted(at) and itl.count(") or (") == 2
    assert "avg by (namespace, llm_d_deployment, llm_d_role) (vllm:gpu_cache_usage_perc)" in queries["kv_usage"][0]
    assert all("llm_d_deployment" in q for q, _ in queries.values())


def test_rates_are_read_over_the_deployments_interval_unless_a_window_is_given():
    assert observe.window_for(30) == "30s"              # the window the policies are benchmarked with
    assert observe.window_for(12.5) == "12500ms"        # PromQL durations take whole units
    assert observe.window_for(120) == "2m"
    assert observe.window_for(30, "1m") == "1m"         # --metrics-window wins
    assert "[30s]" in observe.queries(observe.window_for(30))["request_rate"][0]


class SparseScrapes:
    """A Prometheus whose samples of team/chat are `scrape_s` apart: a rate needs two in the range."""

    def __init__(self, scrape_s: float, exports_rate: bool = True):
        self.scrape_s, self.exports_rate, self.ranges = scrape_s, exports_rate, []

    def custom_query(self, promql: str):
        labels = {"namespace": "team", "llm_d_deployment": "chat"}
        if "timestamp(" in promql:
            return [{"metric": labels, "value": [1000.0, "995"]}]
        if "request_success_total" in promql and "[" in promql:
            window = promql.split("[", 1)[1].split("]", 1)[0]
            self.ranges.append(window)
            seconds = int(window[:-1]) * (60 if window.endswith("m") else 1)
            if self.exports_rate and seconds >= 2 * self.scrape_s:
                return [{"metric": labels, "value": [1000.0, "2.5"]}]
        return []


@pytest.mark.parametrize("scrape_s, window", [(10, "30s"), (30, "1m"), (60, "2m"), (100, "4m")])
def test_sparse_scrapes_widen_the_window_until_there_is_a_rate(scrape_s, window):
    snapshots = {}

    def snapshot_for(w):
        return snapshots.setdefault(w, observe.take_snapshot(SparseScrapes(scrape_s), w))
    chosen = observe.snapshot_with_rate(snapshot_for, ("team", "chat"), 30.0)
    assert chosen.window == window and chosen.deployment[("team", "chat")]["request_rate"] == 2.5


def test_a_given_window_or_a_missing_counter_is_not_widened_for_ever():
    prometheus = SparseScrapes(30)
    given = observe.snapshot_with_rate(lambda w: observe.take_snapshot(prometheus, w), ("team", "chat"), 30.0, "30s")
    assert given.window == "30s" and prometheus.ranges == ["30s"]        # --metrics-window is the user's
    silent = SparseScrapes(10, exports_rate=False)
    chosen = observe.snapshot_with_rate(lambda w: observe.take_snapshot(silent, w), ("team", "chat"), 30.0)
    assert chosen.window == "30s" and silent.ranges == ["30s", "1m", "2m", "4m"]   # tried, then the own window


def test_a_widened_window_is_said_in_the_condition():
    from llmd_operator.slo.loop import metrics_fresh_message
    assert metrics_fresh_message("30s", 30.0) == "vLLM metrics are current"
    assert metrics_fresh_message("2m", 30.0).startswith(
        "vLLM metrics are current, read over 2m: the model servers are scraped less than twice per 30s interval")


def _running_chat(catalog, said: dict, now: float, window: str = "30s"):
    """What the loop observes of a one-replica deployment when Prometheus answered `said` for it."""
    deployment = llmd({"model": {"name": "llama-3.1-8b"}, "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                       "scaling": {"mode": "scheduler_managed"}})
    plan = plan_deployment(deployment, catalog, PlanOptions())
    workload = {"metadata": {"labels": {"llm-d.ai/role": "monolithic", "llm-d.io/capacity-type": "on-demand"}},
                "spec": {"replicas": 1}, "status": {"readyReplicas": 1}}
    snapshot = observe.Snapshot(ok=True, deployment={("team", "chat"): said} if said else {}, evaluated_at=now, window=window)
    return policy_inputs.observation(snapshot, "team", "chat", plan, [workload], now, 30.0, {}, 0.0)


@pytest.mark.parametrize("said, words", [
    ({}, "no vllm:num_requests_running samples for this deployment: is a PodMonitor"),
    ({"last_sample_s": 880.0, "request_rate": 2.0}, "the newest model-server sample is 120 s old"),
    # samples arrive, but too rarely for rate() over the window: the scrape interval is the fix
    ({"last_sample_s": 995.0}, "no request rate over the 30s window: rate() needs two samples of vllm:request_success_total"),
])
def test_metrics_the_loop_cannot_use_say_what_to_fix(catalog, said, words):
    seen = _running_chat(catalog, said, now=1000.0)
    assert not seen.metrics_fresh
    assert words in metrics_problem(seen)


def test_current_metrics_are_used(catalog):
    seen = _running_chat(catalog, {"last_sample_s": 995.0, "request_rate": 2.0, "prompt_tokens_p95": 4100.0},
                         now=1000.0)
    assert seen.metrics_fresh and metrics_problem(seen) == "" and seen.request_rate == 2.0
    assert seen.prompt_tokens_p95 == 4100.0     # the policy's TTFT floor starts from it


SPOT_H100 = [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["H100"]},
             {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}]


def _node(name, capacity, taint=None):
    node = {"metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "H100", "karpenter.sh/capacity-type": capacity}},
            "spec": {}}
    if taint:
        node["spec"]["taints"] = [{"key": taint, "effect": "NoSchedule"}]
    return node


def test_spot_is_unavailable_while_every_spot_node_is_draining_and_returns_with_one():
    taint = "karpenter.sh/disrupted"
    draining = {"s1": _node("s1", "spot", taint), "s2": _node("s2", "spot", taint), "o1": _node("o1", "on-demand")}
    ok, why = policy_inputs.spot_health([], draining, [taint], NOW, spot_node_expressions=SPOT_H100)
    assert not ok and "no schedulable spot node" in why and "s1 is being drained (karpenter.sh/disrupted)" in why
    returned = {**draining, "s3": _node("s3", "spot")}
    assert policy_inputs.spot_health([], returned, [taint], NOW, spot_node_expressions=SPOT_H100) == (True, "")


def test_cost_counter_integrates_dollars_per_hour_over_time():
    from prometheus_client import CollectorRegistry, generate_latest

    from llmd_operator.controller.metrics import CostTotal

    registry = CollectorRegistry()
    cost = CostTotal(registry)
    cost.set_rate("team", "chat", 6.88, now=0.0)         # one H100 on-demand
    cost.set_rate("team", "chat", 13.76, now=1800.0)     # scaled to two after half an hour
    assert cost.value("team", "chat", now=3600.0) == pytest.approx(3.44 + 6.88)
    assert 'llm_cost_total{deployment="chat",namespace="team"}' in generate_latest(registry).decode()


def test_slo_series_report_only_what_the_last_tick_measured():
    """A removed objective's score goes; while Prometheus is unreachable no score or attainment is
    exported (a burn-rate alert would average the last good reading), and llmd_metrics_available says 0."""
    from prometheus_client import generate_latest

    from llmd_operator.controller import metrics

    def exported() -> str:
        return "\n".join(line for line in generate_latest().decode().splitlines()
                         if 'deployment="metrics-test"' in line and not line.startswith("#"))

    metrics.record_readings("team", "metrics-test", {"ttft_p95": -0.4, "itl_p95": 0.2}, False, True)
    assert 'objective="itl_p95"' in exported() and 'objective="ttft_p95"' in exported()
    assert 'llmd_slo_attainment{deployment="metrics-test",namespace="team"} 0.5' in exported()
    assert 'llmd_metrics_available{deployment="metrics-test",namespace="team"} 1.0' in exported()

    metrics.record_readings("team", "metrics-test", {"ttft_p95": -0.3}, False, True)   # itl objective removed
    assert 'objective="itl_p95"' not in exported() and 'objective="ttft_p95"' in exported()
    assert 'llmd_slo_attainment{deployment="metrics-test",namespace="team"} 1.0' in exported()

    metrics.record_readings("team", "metrics-test", {}, False, False)                 # Prometheus gone
    assert "llmd_slo_score" not in exported() and "llmd_slo_attainment" not in exported()
    assert 'llmd_metrics_available{deployment="metrics-test",namespace="team"} 0.0' in exported()
    metrics.forget("team", "metrics-test")
    assert exported() == ""

    # recorded by a tick while it was being deleted: the next tick, which no longer sizes it, drops it
    metrics.record_readings("team", "metrics-test", {"ttft_p95": -0.3}, False, True)
    metrics.keep_loop_readings_of({("team", "other")})
    assert exported() == ""


def test_a_deleted_deployment_stays_forgotten_by_reconciles_of_older_copies():
    """A reconcile queued before the DELETED event, run after it, records nothing: the deleted
    deployment's replicas and cost series stay gone."""
    from prometheus_client import generate_latest

    from llmd_operator.controller import metrics, reconcile

    pools = [{"role": "monolithic", "spotReplicas": 0, "onDemandReplicas": 1}]
    metrics.record_pools("team", "deleted-test", pools, 6.88)
    assert 'deployment="deleted-test"' in generate_latest().decode()
    reconcile.forget("uid-deleted-test", "team", "deleted-test")
    older_copy = {"metadata": {"uid": "uid-deleted-test", "namespace": "team", "name": "deleted-test",
                               "generation": 1}, "spec": {}}
    reconcile.reconcile(older_copy)
    assert 'deployment="deleted-test"' not in generate_latest().decode()


@pytest.mark.parametrize("old, new, differs", [
    ({"ready": "1/1", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "a"}]},
     {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "b"}]}, False),  # timestamps alone
    ({"ready": "1/1"}, {"ready": "2/2"}, True),
    ({"ready": "1/1", "plan": {"x": 1}}, {"ready": "1/1"}, False),  # keys the patch leaves alone do not count
    ({"conditions": [{"type": "Ready", "status": "True"}]}, {"conditions": [{"type": "Ready", "status": "False"}]}, True),
])
def test_status_patch_only_when_a_reader_would_see_a_change(old, new, differs):
    from llmd_operator.controller import status

    assert status.differs(old, new) is differs


def _budget_deployment(mode: str, extra_args: list[str] | None = None) -> LLMDeployment:
    serving = {"mode": mode, **({"extraArgs": extra_args} if extra_args else {})}
    return llmd({"model": {"name": "llama-3.1-8b"}, "serving": serving,
                 "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                 "scaling": {"mode": "scheduler_managed"}})


def test_engines_run_the_step_token_budget_the_loop_sizes_with(catalog):
    """vLLM left to itself takes 8192 tokens per step on an H100; the plan renders the budget the capacity
    model assumes, and the loop sizes each pool with the budget its engine really runs."""
    mono = plan_deployment(_budget_deployment("monolithic"), catalog, PlanOptions())
    args = " ".join(mono.pools[0].engine_args)
    assert "--max-num-batched-tokens 2048" in args
    spec = policy_inputs.policy_spec(_budget_deployment("monolithic"), None, mono, spot_available=True, interval_s=30)
    assert spec.tuning.chunk_tokens == 2048
    split = plan_deployment(_budget_deployment("disaggregated"), catalog, PlanOptions())
    budgets = {p.role: p.max_num_batched_tokens for p in split.pools}
    assert budgets == {"prefill": 8192, "decode": 2048}
    assert "--max-num-batched-tokens 8192" in " ".join(split.pools[0].engine_args)
    spec = policy_inputs.policy_spec(_budget_deployment("disaggregated"), None, split, spot_available=True, interval_s=30)
    assert spec.tuning.prefill_chunk_tokens == 8192


@pytest.mark.parametrize("extra", [["--max-num-batched-tokens", "1024"], ["--max-num-batched-tokens=1024"]])
def test_a_budget_in_extra_args_wins_in_the_engine_and_in_the_loop(catalog, extra):
    deployment = _budget_deployment("monolithic", extra)
    plan = plan_deployment(deployment, catalog, PlanOptions())
    assert plan.pools[0].max_num_batched_tokens == 1024
    assert plan.pools[0].engine_args[-len(extra):] == extra      # after the planned one: vLLM takes the last
    spec = policy_inputs.policy_spec(deployment, None, plan, spot_available=True, interval_s=30)
    assert spec.tuning.chunk_tokens == 1024


@pytest.mark.parametrize("value", ["lots", "-5", "128"])
def test_a_budget_vllm_would_refuse_is_refused_with_the_field_and_the_fix(catalog, value):
    # 128 < the default --max-num-seqs 256: vLLM refuses to start with a budget below the batch
    with pytest.raises(PlanError, match=rf"spec.serving.extraArgs: --max-num-batched-tokens '{value}' .*"
                                        r"--max-num-seqs \(256, batchSize\).*--max-num-batched-tokens 2048"):
        plan_deployment(_budget_deployment("monolithic", ["--max-num-batched-tokens", value]), catalog, PlanOptions())


def test_the_planned_budget_covers_a_large_batch(catalog):
    deployment = llmd({"model": {"name": "llama-3.1-8b"}, "serving": {"batchSize": 4096, "maxSequenceLength": 512},
                       "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}})
    plan = plan_deployment(deployment, catalog, PlanOptions())
    assert plan.pools[0].max_num_batched_tokens == 4096
    assert "--max-num-batched-tokens 4096" in " ".join(plan.pools[0].engine_args)


def test_the_policy_and_simulator_defaults_are_the_rendered_budgets():
    from llmd_operator.planning.plan import ENGINE
    from llmd_operator.sim.fleet import SimConfig
    from llmd_operator.slo.decide.types import Tuning
    budgets = ENGINE["max_num_batched_tokens"]
    assert (Tuning().chunk_tokens, Tuning().prefill_chunk_tokens) == (budgets["monolithic"], budgets["prefill"])
    assert (SimConfig().chunk_tokens, SimConfig().prefill_chunk_tokens) == (budgets["monolithic"], budgets["prefill"])


@pytest.mark.parametrize("model", [
    {"name": "qwen2.5-7b"},
    {"name": "mistral-7b", "quantization": {"type": "fp8"}},
    {"name": "acme-chat-8b", "architecture": {"parameters": 8030261248, "layers": 32, "hiddenSize": 4096,
                                              "attentionHeads": 32, "kvHeads": 8, "maxContext": 131072}},
])
def test_the_loop_has_a_capacity_profile_for_every_model_it_can_plan(catalog, monkeypatch, model):
    from llmd_operator.controller import kube
    from llmd_operator.slo import loop
    monkeypatch.setattr(kube, "get_configmap", lambda namespace, name: None)   # nothing measured
    deployment = llmd({"model": model, "schedulerName": "s",
                       "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}})
    plan = plan_deployment(deployment, catalog, PlanOptions())
    body = {"metadata": {"name": "chat", "namespace": "team"}}
    profile, note = loop.capacity_profile(loop.Managed(body, deployment, None, plan))
    assert profile is not None, note
    assert profile.model == model["name"] and note.startswith("built-in: derived")
    assert len(note) <= 170 and note.endswith(" ...") and profile.source.startswith(note[len("built-in: "):-4])
    assert profile.kv_bytes_per_token == 2 * plan.model.layers * plan.model.kv_heads * plan.model.head_dim * 2


def test_the_loop_builds_on_its_own_memory_and_reads_the_saved_copy_only_without_one():
    from llmd_operator.slo import loop, memory
    from llmd_operator.slo.decide import PolicyState

    mine, theirs = PolicyState(correction=1.5), PolicyState(correction=0.8)
    reads = []

    def saved():
        reads.append(1)
        return memory.SavedMemory(policy="default", saved_at_s=1000.0, state_json=theirs.to_json())

    try:
        loop._memory["uid"] = ("default", mine, 1030.0)      # this replica ticked last
        assert loop.remembered_state("uid", "default", saved).correction == 1.5 and not reads
        assert loop.remembered_state("uid", "threshold", saved).correction == 1.0   # another policy: afresh
        loop.forget_all_memory()                              # it leads again after another replica did
        assert loop.remembered_state("uid", "default", saved).correction == 0.8
        loop.forget("uid")
        assert loop.remembered_state("uid", "default", saved).correction == 0.8      # after a restart
        assert loop.remembered_state("uid", "default", lambda: None).correction == 1.0   # nothing saved
    finally:
        loop.forget("uid")


def test_the_memory_configmap_round_trips_and_belongs_to_its_deployment():
    from llmd_operator.controller.reconcile import owner_reference
    from llmd_operator.slo import memory
    from llmd_operator.slo.decide import PolicyState

    body = {"metadata": {"name": "chat", "namespace": "team", "uid": "u-1"}}
    state = PolicyState(correction=1.25, history=[[1000.0, 4.0, 900.0, 200.0]])
    cm = memory.render(body, owner_reference(body), "default", 1796558268.0, state.to_json())
    assert cm["metadata"]["name"] == "chat-slo-memory" and cm["metadata"]["namespace"] == "team"
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "u-1"   # goes when the deployment goes
    assert cm["data"]["savedAt"] == "2026-12-06T11:57:48Z" and cm["data"]["policy"] == "default"
    saved = memory.parse(cm)
    assert saved == memory.SavedMemory("default", 1796558268.0, state.to_json())
    assert PolicyState.from_json(saved.state_json) == state
    assert memory.parse(None) is None
    assert memory.parse({"data": {"policy": "default", "savedAt": "yesterday", "state.json": "{}"}}) is None
    assert memory.parse({"data": {"policy": "default", "savedAt": "2026-12-06T11:57:48Z", "state.json": "{"}}) is None
    # the copy earlier operator versions kept in status is still read
    legacy = memory.from_status({"policyState": {"policy": "default", "savedAt": 1000, "state": {"correction": 0.8}}})
    assert legacy.policy == "default" and PolicyState.from_json(legacy.state_json).correction == 0.8
    assert memory.from_status({}) is None
