"""How the SLO loop reaches Prometheus: its URL, which certificate authority its TLS certificate is checked
against, and the credentials it wants (a bearer token, HTTP basic auth, extra headers such as a tenant
header).

Credentials come from files that are read again whenever they change: the kubelet rotates projected
service-account tokens and mounted Secrets in place, and a token read once at start-up would be refused
an hour later while the loop held every deployment for want of metrics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import requests
from requests.auth import AuthBase, HTTPBasicAuth


@dataclass(frozen=True)
class PrometheusAccess:
    url: str
    token_file: str | None = None        # bearer token (OpenShift's thanos-querier, kube-rbac-proxy)
    ca_file: str | None = None           # PEM bundle the server's certificate must chain to; None: system CAs
    username: str | None = None          # HTTP basic auth (Grafana Mimir/Cortex gateways, hosted Prometheus)
    password_file: str | None = None
    headers: tuple[tuple[str, str], ...] = ()   # e.g. (("X-Scope-OrgID", "team-a"),) for a multi-tenant store


def parse_header(text: str) -> tuple[str, str]:
    """'Name: value' -> (name, value), as curl's -H takes it."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c.isspace() for c in name.strip()) or not value.strip():
        raise ValueError(f"{text!r}: expected 'Name: value', e.g. 'X-Scope-OrgID: team-a'")
    return name.strip(), value.strip()


def problems(access: PrometheusAccess) -> list[str]:
    """What is wrong with these settings, each naming the flag and the fix; [] when they can be used."""
    found = []
    for flag, path in (("--prometheus-token-file", access.token_file), ("--prometheus-ca-file", access.ca_file),
                       ("--prometheus-password-file", access.password_file)):
        if path and not os.path.isfile(path):
            found.append(f"{flag} {path}: no such file")
    if access.token_file and access.username:
        found.append("--prometheus-token-file and --prometheus-username both set: Prometheus takes one "
                     "Authorization header; give a bearer token or basic auth, not both")
    if bool(access.username) != bool(access.password_file):
        found.append("basic auth needs both --prometheus-username and --prometheus-password-file")
    if access.ca_file and not access.url.startswith("https://"):
        found.append(f"--prometheus-ca-file is set but --prometheus-url {access.url} is not https://")
    return found


class _FileSecret:
    """A file's stripped text, read again when its modification time or size changes."""

    def __init__(self, path: str):
        self.path, self._seen, self._text = path, None, ""

    def read(self) -> str:
        stat = os.stat(self.path)
        seen = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if seen != self._seen:
            with open(self.path) as source:
                self._text = source.read().strip()
            self._seen = seen
        return self._text


class BearerTokenFile(AuthBase):
    """`Authorization: Bearer <the file's token>`, the token as the file holds it now."""

    def __init__(self, path: str):
        self._token = _FileSecret(path)

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self._token.read()}"
        return request


class BasicAuthPasswordFile(AuthBase):
    """HTTP basic auth with the password as the file holds it now."""

    def __init__(self, username: str, password_file: str):
        self.username, self._password = username, _FileSecret(password_file)

    def __call__(self, request):
        return HTTPBasicAuth(self.username, self._password.read())(request)


def auth(access: PrometheusAccess) -> AuthBase | None:
    if access.token_file:
        return BearerTokenFile(access.token_file)
    if access.username and access.password_file:
        return BasicAuthPasswordFile(access.username, access.password_file)
    return None


def session(access: PrometheusAccess) -> requests.Session:
    """A requests session that trusts the given CA (else the system's) and sends the extra headers."""
    http = requests.Session()
    http.verify = access.ca_file or True
    http.headers.update(dict(access.headers))
    return http


def connect(access: PrometheusAccess, timeout_s: float):
    """A prometheus_api_client.PrometheusConnect with these settings."""
    from prometheus_api_client import PrometheusConnect  # noqa: PLC0415

    # the session carries the CA and the extra headers; auth is passed per request, as the client does
    return PrometheusConnect(url=access.url, session=session(access), auth=auth(access), timeout=timeout_s)
