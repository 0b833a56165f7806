"""The queue that turns bursts of child events into one reconcile of their owner."""

from llmd_operator.controller.owner_queue import OwnerKey, OwnerQueue

A = OwnerKey("team-a", "chat", "uid-a")
B = OwnerKey("team-b", "chat", "uid-b")


def test_a_burst_of_child_events_reconciles_the_owner_once():
    done = []
    owners = OwnerQueue(done.append)
    assert owners.add(A) is True
    assert owners.add(A) is False  # the Service, the PDB and a status change of the same owner
    assert owners.add(B) is True
    assert owners.waiting() == 2
    while owners.process_one(timeout=0):
        pass
    assert done == [A, B]
    assert owners.waiting() == 0


def test_a_change_during_the_work_queues_the_owner_again():
    done = []

    def work(key):
        done.append(key)
        if len(done) == 1:
            owners.add(key)  # the child changed while its owner was being reconciled

    owners = OwnerQueue(work)
    owners.add(A)
    assert owners.process_one(timeout=0)
    assert owners.waiting() == 1
    assert owners.process_one(timeout=0)
    assert done == [A, A]
    assert owners.process_one(timeout=0) is False


def test_one_failing_owner_does_not_stop_the_others():
    done = []

    def work(key):
        if key == A:
            raise RuntimeError("API server said 500")
        done.append(key)

    owners = OwnerQueue(work)
    owners.add(A)
    owners.add(B)
    assert owners.process_one(timeout=0) and owners.process_one(timeout=0)
    assert done == [B]
