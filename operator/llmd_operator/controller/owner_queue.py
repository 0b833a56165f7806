"""Owners to reconcile because one of their children changed: each owner at most once in the queue.

Children change in bursts (a Deployment's status moves several times while its pods start; one
reconcile applies a Deployment, a Service and a PDB at once). Reconciling the owner once per burst is
enough, because a reconcile reads everything fresh. Queueing a small key, instead of holding every child
event until a handler thread is free, is what keeps memory flat when a thousand deployments start at once.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import NamedTuple

log = logging.getLogger("llmd_operator.owner_queue")


class OwnerKey(NamedTuple):
    namespace: str
    name: str
    uid: str


class OwnerQueue:
    """A work queue that coalesces: adding a key that is already waiting does nothing.

    A key leaves the waiting set when a worker takes it, before the work starts, so a change that
    arrives during the work queues the owner again and nothing is missed.
    """

    def __init__(self, work: Callable[[OwnerKey], None]):
        self._work = work
        self._waiting: set[OwnerKey] = set()
        self._lock = threading.Lock()
        self._queue: queue.Queue[OwnerKey] = queue.Queue()

    def add(self, key: OwnerKey) -> bool:
        """Queue `key` unless it is already waiting. True when it was queued."""
        with self._lock:
            if key in self._waiting:
                return False
            self._waiting.add(key)
        self._queue.put(key)
        return True

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def process_one(self, timeout: float | None = None) -> bool:
        """Take one key and do its work. False when none came within `timeout`."""
        try:
            key = self._queue.get(timeout=timeout)
        except queue.Empty:
            return False
        with self._lock:
            self._waiting.discard(key)
        try:
            self._work(key)
        except Exception:  # noqa: BLE001 (one owner's failure must not stop the others; its next event retries)
            log.exception("reconciling %s/%s after a child changed failed", key.namespace, key.name)
        return True

    def start(self, workers: int) -> None:
        for index in range(workers):
            threading.Thread(target=self._run, name=f"owner-queue-{index}", daemon=True).start()

    def _run(self) -> None:
        while True:
            self.process_one()
