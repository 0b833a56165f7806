"""Going back to spot after a fallback: not before spot has stayed usable for a while."""

from datetime import datetime, timezone

from llmd_operator.slo import policy_inputs

NOW = 1_800_000_000.0


def _fallback(began_s_ago: float, status: str = "True") -> dict:
    began = datetime.fromtimestamp(NOW - began_s_ago, tz=timezone.utc).isoformat().replace("+00:00", "Z")
    return {"type": "SpotFallback", "status": status, "lastTransitionTime": began,
            "message": "spot pod chat-spot-0 unschedulable for 61s"}


def test_spot_unusable_now_falls_back_whatever_came_before():
    assert policy_inputs.spot_in_force(False, "spot node s1 is being drained", {}, NOW) == (
        False, "spot node s1 is being drained")


def test_a_full_spot_pool_does_not_pull_replicas_back_the_moment_its_pods_are_gone():
    # the fallback removed the pending spot pods, so spot_health sees nothing wrong a tick later
    ok, why = policy_inputs.spot_in_force(True, "", _fallback(began_s_ago=40), NOW)
    assert not ok
    assert "back to spot 260 s from now" in why


def test_spot_returns_once_it_has_stayed_usable_past_the_hold():
    assert policy_inputs.spot_in_force(True, "", _fallback(began_s_ago=policy_inputs.SPOT_RETURN_HOLD_S + 1), NOW) == (True, "")


def test_no_fallback_in_force_means_spot_at_once():
    assert policy_inputs.spot_in_force(True, "", {}, NOW) == (True, "")
    assert policy_inputs.spot_in_force(True, "", _fallback(began_s_ago=10, status="False"), NOW) == (True, "")


def test_a_move_to_on_demand_orders_the_replacements_before_removing_spot_replicas(monkeypatch):
    from llmd_operator.render import labels
    from llmd_operator.slo import loop
    from llmd_operator.slo.decide import Decision, PoolDecision
    calls = []
    monkeypatch.setattr(loop.kube, "scale", lambda ns, name, replicas, manager: calls.append((name, replicas)))
    workloads = [{"metadata": {"name": labels.workload_name("chat", "decode", c)}, "spec": {"replicas": n}}
                 for c, n in (("spot", 3), ("on-demand", 1))]
    decision = Decision(time_s=NOW, policy="default",
                        pools=(PoolDecision("decode", 4, 4, 0, "spot is gone", "scale_up"),), reason="spot is gone")
    changes = loop._actuate("team", "chat", decision, workloads)
    assert calls == [("chat-decode-on-demand", 4), ("chat-decode-spot", 0)]
    assert changes == ["decode/on-demand 1->4", "decode/spot 3->0"]
