"""HPA-style utilization target: desired = ceil(current x util / target), tolerance, stabilization."""

import pytest

from llmd_operator.slo.decide import (Constraints, FleetObservation, HPASpec, PolicySpec, PolicyState,
                                      PoolObservation, decide)


def o(t, n, util):
    p = PoolObservation(role="monolithic", replicas_on_demand=n, ready_on_demand=n, gpu_util=util,
                        running=1.0, queue_depth=0.0)
    return FleetObservation(time_s=t, pools=(p,), request_rate=1.0)


SPEC = PolicySpec(hpa=HPASpec(metric="gpu_util", target=0.7), constraints=Constraints(default_max_replicas=50))


@pytest.mark.parametrize("n,util,expected", [
    (4, 0.7, 4), (4, 0.75, 4), (4, 0.65, 4),      # within 10% tolerance
    (4, 0.9, 6), (4, 1.0, 6), (2, 1.0, 3),        # ceil(4 * 0.9 / 0.7) = 6
    (2, 2.8, 6),                                  # up limited to max(2x, +4)
])
def test_scale_up_proportionally(n, util, expected):
    d, _ = decide("hpa", o(0.0, n, util), SPEC, None, PolicyState())
    assert d.pools[0].target == expected


def test_scale_down_waits_for_the_stabilization_window():
    st = PolicyState()
    targets = []
    n = 8
    for t in range(0, 420, 30):
        d, st = decide("hpa", o(float(t), n, 0.35), SPEC, None, st)
        n = d.pools[0].target
        targets.append(n)
    assert targets[0] == 8 and targets[9] == 8     # 300 s of history says 8
    assert 4 in targets                             # then ceil(8 * 0.35 / 0.7) = 4
    assert min(targets) >= 1


def test_concurrency_metric():
    s = PolicySpec(hpa=HPASpec(metric="concurrency", target=0.5, concurrency_per_replica=100.0))
    p = PoolObservation(role="monolithic", replicas_on_demand=2, ready_on_demand=2, running=150.0, queue_depth=50.0)
    d, _ = decide("hpa", FleetObservation(time_s=0, pools=(p,), request_rate=5.0), s, None, PolicyState())
    assert d.pools[0].target == 4
