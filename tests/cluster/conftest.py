"""Cluster tests: the real operator process against a real API server (make test starts the local cluster)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_AGENTS = ("llmd-operator/", "kopf/")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/cluster" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)


def kubectl(*args: str, input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["kubectl", *args], capture_output=True, text=True, input=input_text, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result


def get_json(*args: str):
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def wait_for(check, timeout: float, what: str, every: float = 0.5):
    """Poll `check` until it returns something truthy; fail with `what` and the last value after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")


def condition(obj: dict, kind: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Operator:
    """`llmd-operator run` as a user starts it, with its log kept for failures."""

    def __init__(self, log_dir: Path, extra_args: tuple[str, ...] = ()):
        self.log_dir = log_dir
        self.extra_args = extra_args
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.health_port, self.metrics_port = free_port(), free_port()
        self.log = self.log_dir / f"operator-{self.starts}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llmd_operator.cli", "run", "--health-port", str(self.health_port),
             "--metrics-port", str(self.metrics_port), *self.extra_args],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=os.environ.copy(),
        )
        wait_for(self._healthy, 60, "the operator's /healthz")

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the operator exited: {self.log.read_text()[-3000:]}")
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2).status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def metrics(self) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()


@pytest.fixture(scope="session")
def cluster():
    if not os.environ.get("KUBECONFIG"):
        pytest.fail("cluster tests need KUBECONFIG: run them with `make test` (it starts the local cluster)")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    for crd in ("llmdeployments.inference.llm-d.io", "inferenceschedulers.scheduler.llm-d.io"):
        kubectl("wait", "--for", "condition=established", f"crd/{crd}", "--timeout=60s")
    kubectl("create", "namespace", "llm-d-system", check=False)
    audit = subprocess.run([str(ROOT / "e2e" / "cluster.sh"), "audit-log"], capture_output=True, text=True)
    return {"audit_log": Path(audit.stdout.strip()) if audit.returncode == 0 and audit.stdout.strip() else None}


@pytest.fixture(scope="session")
def operator(cluster, tmp_path_factory):
    running = Operator(tmp_path_factory.mktemp("operator"))
    running.start()
    yield running
    running.stop()


@pytest.fixture
def namespace(cluster, request):
    name = f"t-{request.node.name[:30].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    name = "".join(c for c in name if c.isalnum() or c == "-")
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def apply(namespace: str, *documents: dict) -> subprocess.CompletedProcess:
    for document in documents:
        document.setdefault("metadata", {})["namespace"] = namespace
    return kubectl("apply", "--server-side", "-f", "-", input_text=yaml.safe_dump_all(documents))


def operator_writes(audit_log: Path, since: float) -> list[dict]:
    """Write requests the operator sent after `since` (epoch seconds), from the API server's audit log."""
    writes = []
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        if not str(event.get("userAgent", "")).startswith(OPERATOR_AGENTS):
            continue
        stamp = event.get("requestReceivedTimestamp", "")
        if _epoch(stamp) >= since and event.get("verb") in ("create", "update", "patch", "delete", "deletecollection"):
            writes.append(event)
    return writes


def _epoch(stamp: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
