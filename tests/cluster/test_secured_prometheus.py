"""The SLO loop's queries against a real Prometheus served over TLS with basic auth (Prometheus's own
--web.config.file), as a secured Prometheus, Thanos or Mimir gateway serves them. Needs Prometheus
(`e2e/ensure-prometheus.sh`), not the cluster."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import bcrypt
import pytest
import trustme
import yaml

from llmd_operator.slo import observe, prometheus_access
from llmd_operator.slo.prometheus_access import PrometheusAccess
from tests.cluster.conftest import free_port, wait_for

USER, PASSWORD = "llmd-operator", "correct horse battery staple"


@pytest.fixture(scope="module")
def secured_prometheus(tmp_path_factory):
    """Prometheus on https://127.0.0.1:<port> with a certificate from a private CA and one basic-auth user."""
    directory = tmp_path_factory.mktemp("secured-prometheus")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(directory / "server.crt"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    (directory / "web.yml").write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": str(directory / "server.crt"), "key_file": str(directory / "server.key")},
        "basic_auth_users": {USER: bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()},
    }))
    (directory / "prometheus.yml").write_text(yaml.safe_dump({"global": {"scrape_interval": "15s"}}))
    port = free_port()
    binary = subprocess.run(["e2e/ensure-prometheus.sh"], capture_output=True, text=True, check=True).stdout.strip()
    with (directory / "prometheus.log").open("a") as log:
        process = subprocess.Popen([binary, f"--config.file={directory / 'prometheus.yml'}",
                                    f"--web.config.file={directory / 'web.yml'}",
                                    f"--storage.tsdb.path={directory / 'data'}",
                                    f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    password = directory / "password"
    password.write_text(PASSWORD + "\n")
    access = PrometheusAccess(url=f"https://127.0.0.1:{port}", ca_file=str(directory / "ca.crt"), username=USER,
                              password_file=str(password), headers=(("X-Scope-OrgID", "team-a"),))

    def answers():
        try:
            return observe.scalar(prometheus_access.connect(access, 5), "vector(1)") == 1
        except Exception:  # noqa: BLE001 (not listening yet)
            return False

    try:
        wait_for(answers, 60, "Prometheus answering over TLS with basic auth")
        yield access, directory
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_loop_reads_a_prometheus_behind_tls_and_basic_auth(secured_prometheus):
    access, _ = secured_prometheus
    assert prometheus_access.problems(access) == []
    client = prometheus_access.connect(access, 5)
    assert observe.scalar(client, "vector(42)") == 42
    snapshot = observe.take_snapshot(client, "30s")  # every signal's batched query, as a tick runs them
    assert snapshot.ok, snapshot.error


def test_without_the_ca_the_certificate_is_refused_and_the_loop_says_so(secured_prometheus):
    access, _ = secured_prometheus
    snapshot = observe.take_snapshot(prometheus_access.connect(replace(access, ca_file=None), 5),
                                     "30s")
    assert not snapshot.ok
    assert "certificate verify failed" in snapshot.error, snapshot.error


def test_a_wrong_password_is_refused_and_a_rotated_one_is_used_without_a_restart(secured_prometheus):
    access, directory = secured_prometheus
    password = directory / "rotating-password"
    password.write_text("last month's password")
    client = prometheus_access.connect(replace(access, password_file=str(password)), 5)
    refused = observe.take_snapshot(client, "30s")
    assert not refused.ok and "401" in refused.error, refused.error
    password.write_text(PASSWORD)  # the Secret was updated; the kubelet rewrote the mounted file
    assert observe.take_snapshot(client, "30s").ok
