"""How the SLO loop reaches Prometheus: credentials read again when their files change, CA, headers, and
clear errors for settings that cannot work. tests/cluster/test_secured_prometheus.py runs them against a
real Prometheus over TLS with basic auth."""

from __future__ import annotations

import base64
import copy
import os

import pytest
import requests
from click.testing import CliRunner

from llmd_operator.controller.config import CONFIG
from llmd_operator.slo import prometheus_access
from llmd_operator.slo.prometheus_access import PrometheusAccess


def authorization(auth) -> str:
    return auth(requests.Request("GET", "https://prometheus:9091/api/v1/query").prepare()).headers["Authorization"]


def rewrite(path, text: str) -> None:
    """Replace a file's text as the kubelet does (new content, new mtime)."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_a_rotated_bearer_token_is_sent_from_the_next_query_on(tmp_path):
    token = tmp_path / "token"
    token.write_text("first-token\n")
    auth = prometheus_access.auth(PrometheusAccess(url="https://thanos:9091", token_file=str(token)))
    assert authorization(auth) == "Bearer first-token"
    rewrite(token, "second-token")
    assert authorization(auth) == "Bearer second-token"


def test_basic_auth_reads_the_password_file_again_when_it_changes(tmp_path):
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    auth = prometheus_access.auth(PrometheusAccess(url="https://mimir", username="llmd", password_file=str(password)))
    assert authorization(auth) == "Basic " + base64.b64encode(b"llmd:s3cret").decode()
    rewrite(password, "n3w")
    assert authorization(auth) == "Basic " + base64.b64encode(b"llmd:n3w").decode()


def test_no_credentials_send_no_authorization_header():
    assert prometheus_access.auth(PrometheusAccess(url="http://prometheus:9090")) is None


def test_the_session_trusts_the_given_ca_and_sends_the_extra_headers(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    access = PrometheusAccess(url="https://thanos:9091", ca_file=str(ca), headers=(("X-Scope-OrgID", "team-a"),))
    http = prometheus_access.session(access)
    assert http.verify == str(ca)
    assert http.prepare_request(requests.Request("GET", "https://thanos:9091/")).headers["X-Scope-OrgID"] == "team-a"
    assert prometheus_access.session(PrometheusAccess(url="https://thanos:9091")).verify is True


@pytest.mark.parametrize("text, expected", [
    ("X-Scope-OrgID: team-a", ("X-Scope-OrgID", "team-a")),
    ("X-Scope-OrgID:team-a|team-b", ("X-Scope-OrgID", "team-a|team-b")),
    ("Authorization: Bearer abc:def", ("Authorization", "Bearer abc:def")),
])
def test_headers_are_name_colon_value(text, expected):
    assert prometheus_access.parse_header(text) == expected


@pytest.mark.parametrize("text", ["X-Scope-OrgID team-a", ": team-a", "X-Scope-OrgID:", "X Scope: a"])
def test_a_malformed_header_says_the_form_it_takes(text):
    with pytest.raises(ValueError, match="expected 'Name: value'"):
        prometheus_access.parse_header(text)


def test_settings_that_cannot_work_name_the_flag_and_the_fix(tmp_path):
    token, password = tmp_path / "token", tmp_path / "password"
    token.write_text("t")
    password.write_text("p")
    assert prometheus_access.problems(PrometheusAccess(url="https://p", token_file=str(token))) == []
    assert prometheus_access.problems(PrometheusAccess(url="https://p", username="u", password_file=str(password))) == []
    assert prometheus_access.problems(PrometheusAccess(url="https://p", ca_file=str(tmp_path / "nope.crt"))) == [
        f"--prometheus-ca-file {tmp_path / 'nope.crt'}: no such file"]
    both = prometheus_access.problems(PrometheusAccess(url="https://p", token_file=str(token), username="u",
                                                       password_file=str(password)))
    assert both and "give a bearer token or basic auth, not both" in both[0]
    assert prometheus_access.problems(PrometheusAccess(url="https://p", username="u")) == [
        "basic auth needs both --prometheus-username and --prometheus-password-file"]
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    assert prometheus_access.problems(PrometheusAccess(url="http://p:9090", ca_file=str(ca))) == [
        "--prometheus-ca-file is set but --prometheus-url http://p:9090 is not https://"]


@pytest.fixture
def saved_config():
    before = copy.deepcopy(CONFIG.__dict__)
    yield
    CONFIG.__dict__.update(before)


def test_run_refuses_prometheus_settings_that_cannot_work_before_it_starts(tmp_path, saved_config):
    from llmd_operator.controller.command import run

    result = CliRunner().invoke(run, ["--prometheus-url", "https://thanos:9091",
                                       "--prometheus-ca-file", str(tmp_path / "ca.crt"), "--metrics-port", "0"])
    assert result.exit_code == 2, result.output
    assert f"--prometheus-ca-file {tmp_path / 'ca.crt'}: no such file" in result.output

    result = CliRunner().invoke(run, ["--prometheus-url", "http://p:9090", "--prometheus-header", "X-Scope-OrgID",
                                       "--metrics-port", "0"])
    assert result.exit_code == 2 and "--prometheus-header" in result.output and "Name: value" in result.output


def test_the_header_environment_variable_takes_one_header_per_line():
    from llmd_operator.controller import command

    assert command.run.make_context("run", []).params["prometheus_headers"] == ()
    env = {"LLMD_PROMETHEUS_HEADER": "X-Scope-OrgID: team-a\nX-Extra: two words"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        context = command.run.make_context("run", [])
    assert context.params["prometheus_headers"] == ("X-Scope-OrgID: team-a", "X-Extra: two words")
