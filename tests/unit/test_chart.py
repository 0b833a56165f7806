"""The Helm chart, the kustomize tree and the copies they share with crds/.

Needs helm: scripts/ensure-helm.sh builds it from the Go module proxy the first time (minutes) and
prints its path. kustomize checks use the pinned kubectl of e2e/cluster.sh (`bin-dir`), or skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "llmd-operator"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
CRD_FILES = sorted((ROOT / "crds").glob("*.yaml"))
OUR_CRDS = {"llmdeployments.inference.llm-d.io", "inferenceschedulers.scheduler.llm-d.io"}
KOPF_CRDS = {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}


# ------------------------------------------------------------------------------------------ tools ---

@pytest.fixture(scope="session")
def helm() -> str:
    try:
        out = subprocess.run([str(ROOT / "scripts" / "ensure-helm.sh")], capture_output=True, text=True,
                             timeout=1800, check=True)
    except subprocess.CalledProcessError as error:
        pytest.fail(f"scripts/ensure-helm.sh failed:\n{error.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def kubectl() -> str:
    found = shutil.which("kubectl")
    try:
        bin_dir = subprocess.run([str(ROOT / "e2e" / "cluster.sh"), "bin-dir"], capture_output=True, text=True,
                                 timeout=60).stdout.strip()
        if bin_dir and (Path(bin_dir) / "kubectl").exists():
            found = str(Path(bin_dir) / "kubectl")
    except (OSError, subprocess.TimeoutExpired):
        pass
    if not found:
        pytest.skip("no kubectl (run e2e/cluster.sh build) for the kustomize checks")
    return found


def render(helm: str, *args: str, namespace: str = "llm-d-system") -> list[dict]:
    proc = subprocess.run([helm, "template", "rel", str(CHART), "--namespace", namespace, *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def helm_fails(helm: str, *args: str) -> str:
    proc = subprocess.run([helm, "template", "rel", str(CHART), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, "helm template should have refused these values"
    return proc.stderr


def kinds(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = kinds(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def container(docs: list[dict]) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def run_options() -> set[str]:
    """Every option `llmd-operator run` accepts (from the click command itself)."""
    command = pytest.importorskip("llmd_operator.controller.command")
    return {opt for param in command.run.params for opt in param.opts}


# ------------------------------------------------------------------------ CRDs: one source only ---

def test_sync_script_reports_no_stale_copy():
    """Chart CRD templates, config/crd/bases and config/prometheus equal what crds/ and files/ generate."""
    proc = subprocess.run([str(ROOT / "scripts" / "sync-chart-crds.sh"), "--check"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, f"run scripts/sync-chart-crds.sh\n{proc.stderr}"


def test_kustomize_crds_equal_crds_dir():
    for src in CRD_FILES:
        assert yaml.safe_load((ROOT / "config" / "crd" / "bases" / src.name).read_text()) == yaml.safe_load(src.read_text())


def test_chart_crds_equal_crds_dir(helm):
    rendered = {d["metadata"]["name"]: d for d in kinds(render(helm), "CustomResourceDefinition")}
    assert set(rendered) == OUR_CRDS
    for src in CRD_FILES:
        want = yaml.safe_load(src.read_text())
        got = rendered[want["metadata"]["name"]]
        assert got["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
        assert got == want, f"chart CRD differs from {src.relative_to(ROOT)}: run scripts/sync-chart-crds.sh"


def test_crds_keep_and_enabled(helm):
    loose = kinds(render(helm, "--set", "crds.keep=false"), "CustomResourceDefinition")
    assert {d["metadata"]["name"] for d in loose} == OUR_CRDS
    assert all("annotations" not in d["metadata"] for d in loose)
    assert kinds(render(helm, "--set", "crds.enabled=false"), "CustomResourceDefinition") == []


# ------------------------------------------------------------------------------- lint / template ---

def test_lint_defaults(helm):
    proc = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_lint_and_template_ci_values(helm, values):
    proc = subprocess.run([helm, "lint", "--strict", str(CHART), "-f", str(values)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = render(helm, "-f", str(values))
    names = set()
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), doc
        key = (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
        assert key not in names, f"rendered twice: {key}"
        names.add(key)
    assert one(docs, "Deployment")


def test_ci_values_cover_the_interesting_cases():
    values = [yaml.safe_load(p.read_text()) or {} for p in CI_VALUES]
    assert any(v.get("watchNamespaces") for v in values), "a namespaced install"
    assert any(v.get("replicas", 1) > 1 for v in values), "an HA install with peering"
    assert any(v.get("prometheusRule", {}).get("enabled") for v in values), "the monitoring objects"
    assert any(v.get("crds", {}).get("enabled") is False for v in values), "CRDs managed elsewhere"
    assert any(v.get("prometheus", {}).get("basicAuthSecret") for v in values), "Prometheus behind basic auth"
    assert any(v.get("prometheus", {}).get("ca") for v in values), "Prometheus behind a private CA"


@pytest.mark.parametrize("bad", [
    ["--set", "replica=2"],                              # typo at the top
    ["--set", "serviceMonitor.enable=true"],             # typo in a nested block
    ["--set", "crds.keeep=true"],
    ["--set", "securityContext.readOnlyRootFileSystem=true"],
    ["--set", "capacityConvention=azure"],               # not a convention
    ["--set", "provider=oracle"],
    ["--set", "prometheus.url=prometheus:9090"],         # no scheme
    ["--set", "watchNamespaces[0]=Team_A"],              # not a namespace name
    ["--set", "prices.providers.aws.prices.H100.ondemand=2"],
])
def test_schema_rejects_typos_and_bad_values(helm, bad):
    assert "schema" in helm_fails(helm, *bad)


def test_schema_is_closed_everywhere():
    """Every object in values.schema.json says what it holds: no silent extra keys."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_ok = {"global", "affinity", "seLinuxOptions", "appArmorProfile", "valueFrom"}  # Kubernetes/Helm objects

    def walk(node: dict, path: str) -> None:
        if node.get("type") == "object" and path.split(".")[-1] not in open_ok:
            assert "additionalProperties" in node, f"{path} accepts unknown keys"
        for key, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{key}")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}.*")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema, "values")
    assert schema["additionalProperties"] is False


def test_values_yaml_keys_are_in_the_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


# --------------------------------------------------------------------------- the operator itself ---

def test_deployment_is_locked_down(helm):
    docs = render(helm)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    ctr = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = ctr["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in ctr["volumeMounts"]
    assert ctr["resources"]["requests"] and ctr["resources"]["limits"]["memory"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert ctr[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert "--metrics-port=8080" in ctr["args"] and "--health-port=8081" in ctr["args"]
    env = {e["name"] for e in ctr["env"]}
    assert "POD_ID" in env, "Kopf's peering identity"
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_every_flag_is_one_the_cli_accepts(helm, values):
    options = run_options()
    for arg in container(render(helm, "-f", str(values)))["args"]:
        assert arg.split("=", 1)[0] in options, f"`llmd-operator run` has no option {arg}"


def test_values_reach_the_command_line(helm):
    ctr = container(render(helm, "--set", "prometheus.url=http://prom.monitoring:9090",
                           "--set", "capacityConvention=gke", "--set", "provider=gcp",
                           "--set", "modelServerImage=vllm/vllm-openai:v0.11.0", "--set", "homeNamespace=platform",
                           "--set", "watchNamespaces={team-a,team-b}"))
    args = ctr["args"]
    for want in ("--prometheus-url=http://prom.monitoring:9090", "--capacity-convention=gke", "--provider=gcp",
                 "--model-server-image=vllm/vllm-openai:v0.11.0", "--home-namespace=platform",
                 "--namespace=team-a", "--namespace=team-b"):
        assert want in args
    assert not any(a.startswith("--peering") for a in args)


def test_the_metrics_window_is_the_loops_own_unless_set(helm):
    assert not any(a.startswith("--metrics-window") for a in container(render(helm))["args"])
    assert "--metrics-window=1m" in container(render(helm, "--set", "prometheus.metricsWindow=1m"))["args"]


def test_the_demand_query_reaches_the_operator_as_one_argument(helm, tmp_path):
    """PromQL's quotes, braces, commas and `$` survive the template: the CLI parses back the query as given."""
    assert not any(a.startswith("--demand-query") for a in container(render(helm))["args"])
    query = 'sum(rate(inference_model_request_total{namespace="$namespace", model_name="$deployment"}[2m])) > 0'
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"prometheus": {"demandQuery": query}}))
    args = container(render(helm, "-f", str(values)))["args"]
    command = pytest.importorskip("llmd_operator.controller.command")
    assert command.run.make_context("run", list(args)).params["demand_query"] == query


def test_the_spot_pending_grace_reaches_the_operator(helm):
    """0s by default (fall back at the first tick); a value the CLI parses; the schema refuses a bare number."""
    command = pytest.importorskip("llmd_operator.controller.command")
    args = container(render(helm))["args"]
    assert "--spot-pending-grace=0s" in args
    assert command.run.make_context("run", list(args)).params["spot_pending_grace"] == 0.0
    args = container(render(helm, "--set", "spotPendingGrace=90s"))["args"]
    assert command.run.make_context("run", list(args)).params["spot_pending_grace"] == 90.0
    assert not any(a.startswith("--spot-pending-grace") for a in container(render(helm, "--set", "spotPendingGrace="))["args"])
    assert "spotPendingGrace" in helm_fails(helm, "--set-string", "spotPendingGrace=90")


def test_prometheus_token_secret_is_mounted(helm):
    docs = render(helm, "--set", "prometheus.url=https://thanos:9091", "--set", "prometheus.tokenSecret.name=prom")
    ctr = container(docs)
    assert "--prometheus-token-file=/var/run/secrets/prometheus/token" in ctr["args"]
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "prometheus-token", "secret": {"secretName": "prom", "items": [{"key": "token", "path": "token"}]}} in volumes


def test_prometheus_tls_ca_basic_auth_and_headers_reach_the_operator(helm):
    from llmd_operator.controller import command

    docs = render(helm, "--set", "prometheus.url=https://mimir.monitoring:8080/prometheus",
                  "--set", "prometheus.ca.configMap=service-ca", "--set", "prometheus.ca.key=service-ca.crt",
                  "--set", "prometheus.basicAuthSecret.name=mimir-auth",
                  "--set-string", "prometheus.headers.X-Scope-OrgID=team-a")
    ctr = container(docs)
    params = command.run.make_context("run", list(ctr["args"])).params
    assert params["prometheus_ca_file"] == "/var/run/secrets/prometheus-ca/service-ca.crt"
    assert params["prometheus_password_file"] == "/var/run/secrets/prometheus-basic-auth/password"
    assert params["prometheus_headers"] == ("X-Scope-OrgID: team-a",)
    assert {"name": "LLMD_PROMETHEUS_USERNAME",
            "valueFrom": {"secretKeyRef": {"name": "mimir-auth", "key": "username"}}} in ctr["env"]
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "prometheus-ca", "configMap": {"name": "service-ca", "items": [
        {"key": "service-ca.crt", "path": "service-ca.crt"}]}} in volumes
    assert {"name": "prometheus-basic-auth", "secret": {"secretName": "mimir-auth", "items": [
        {"key": "password", "path": "password"}]}} in volumes
    mounts = {m["name"]: m["mountPath"] for m in ctr["volumeMounts"]}
    assert mounts["prometheus-ca"] == "/var/run/secrets/prometheus-ca"
    assert mounts["prometheus-basic-auth"] == "/var/run/secrets/prometheus-basic-auth"

    secret_ca = render(helm, "--set", "prometheus.url=https://thanos:9091", "--set", "prometheus.ca.secret=prom-ca")
    assert {"name": "prometheus-ca", "secret": {"secretName": "prom-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}} \
        in one(secret_ca, "Deployment")["spec"]["template"]["spec"]["volumes"]
    # one CA source, one Authorization header, header names as HTTP allows them
    assert "prometheus.ca: set configMap or secret, not both" in helm_fails(
        helm, "--set", "prometheus.ca.configMap=a", "--set", "prometheus.ca.secret=b")
    assert "set tokenSecret.name or basicAuthSecret.name, not both" in helm_fails(
        helm, "--set", "prometheus.tokenSecret.name=t", "--set", "prometheus.basicAuthSecret.name=b")
    assert "invalid propertyName 'X Scope'" in helm_fails(helm, "--set-string", "prometheus.headers.X Scope=team-a")
    plain = container(render(helm, "--set", "prometheus.url=http://prometheus:9090"))
    assert not any(a.startswith(("--prometheus-ca-file", "--prometheus-password-file", "--prometheus-header"))
                   for a in plain["args"])


def test_price_overrides_become_a_configmap(helm, tmp_path):
    prices = {"providers": {"aws": {"source": "EDP", "date": "2026-02-01",
                                    "prices": {"NVIDIA-H100-80GB-HBM3": {"on_demand": 5.1, "spot": 2.2}}}}}
    values = tmp_path / "prices.yaml"
    values.write_text(yaml.safe_dump({"prices": prices, "homeNamespace": "llm-d-system"}))
    docs = render(helm, "-f", str(values), namespace="ops")
    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["namespace"] == "llm-d-system"
    assert yaml.safe_load(cm["data"]["prices.yaml"]) == prices
    assert f"--price-overrides-configmap={cm['metadata']['name']}" in container(docs)["args"]
    # Same shape as the built-in table: every key the override uses exists there.
    builtin = yaml.safe_load((ROOT / "operator" / "llmd_operator" / "catalog" / "data" / "prices.yaml").read_text())
    assert set(prices["providers"]["aws"]) <= set(builtin["providers"]["aws"])
    assert "checksum/prices" in one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]


def test_peering_only_with_more_than_one_replica(helm):
    single = render(helm)
    assert not any(d["metadata"]["name"] in KOPF_CRDS for d in kinds(single, "CustomResourceDefinition"))
    assert not kinds(single, "ClusterKopfPeering")
    assert one(single, "Deployment")["spec"]["strategy"]["type"] == "Recreate"

    ha = render(helm, "--set", "replicas=3")
    ctr = container(ha)
    assert "--peering=llmd-operator" in ctr["args"]
    assert {d["metadata"]["name"] for d in kinds(ha, "CustomResourceDefinition")} == OUR_CRDS | KOPF_CRDS
    peering = one(ha, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "llmd-operator"
    assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]
    rules = one(ha, "ClusterRole")["rules"]
    assert {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["get", "list", "watch", "patch"]} in rules

    namespaced = render(helm, "--set", "replicas=2", "--set", "watchNamespaces={team-a}")
    assert {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in kinds(namespaced, "KopfPeering")} == {
        ("team-a", "llmd-operator"), ("llm-d-system", "llmd-operator")}
    assert not kinds(namespaced, "ClusterKopfPeering")
    no_crds = render(helm, "--set", "replicas=2", "--set", "peering.installCRDs=false")
    assert {d["metadata"]["name"] for d in kinds(no_crds, "CustomResourceDefinition")} == OUR_CRDS


# ------------------------------------------------------------------------------------------ RBAC ---

def _rules_set(rules: list[dict]) -> set[tuple]:
    out = set()
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    out.add((group, resource, verb))
    return out


def _assert_least_privilege(rules: list[dict]) -> None:
    for group, resource, verb in _rules_set(rules):
        assert "*" not in (group, resource, verb), "no wildcards"
        assert resource not in ("secrets", "clusterroles", "clusterrolebindings"), resource
        # Roles and RoleBindings (for the profiler Job) without escalate or bind: the API server then refuses
        # any Role granting more than the operator itself holds.
        assert verb not in ("escalate", "bind", "impersonate", "deletecollection"), verb


def test_cluster_wide_rbac(helm):
    docs = render(helm)
    role = one(docs, "ClusterRole")
    _assert_least_privilege(role["rules"])
    granted = _rules_set(role["rules"])
    for needed in [("inference.llm-d.io", "llmdeployments/status", "patch"), ("scheduler.llm-d.io", "inferenceschedulers", "watch"),
                   ("apps", "deployments", "create"), ("apps", "deployments/scale", "update"), ("", "configmaps", "delete"),
                   ("policy", "poddisruptionbudgets", "patch"), ("autoscaling", "horizontalpodautoscalers", "create"),
                   ("", "pods", "list"), ("", "nodes", "watch"), ("", "events", "create"), ("events.k8s.io", "events", "patch"),
                   ("apiextensions.k8s.io", "customresourcedefinitions", "list"), ("", "namespaces", "watch"),
                   ("batch", "jobs", "create"), ("rbac.authorization.k8s.io", "roles", "create"),
                   ("", "configmaps", "update")]:
        assert needed in granted, needed
    assert ("", "pods", "delete") not in granted and ("", "nodes", "patch") not in granted
    assert ("kopf.dev", "clusterkopfpeerings", "patch") not in granted  # no peering with one replica
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": one(docs, "ServiceAccount")["metadata"]["name"],
                                    "namespace": "llm-d-system"}]
    assert not kinds(docs, "Role")


def test_namespaced_rbac(helm):
    docs = render(helm, "--set", "watchNamespaces={team-a,team-b}", "--set", "homeNamespace=llm-d-system")
    roles = {r["metadata"]["namespace"]: r for r in kinds(docs, "Role")}
    assert set(roles) == {"team-a", "team-b", "llm-d-system"}
    bindings = {b["metadata"]["namespace"] for b in kinds(docs, "RoleBinding")}
    assert bindings == set(roles)
    for role in roles.values():
        _assert_least_privilege(role["rules"])
        assert ("apps", "deployments", "create") in _rules_set(role["rules"])
    cluster = one(docs, "ClusterRole")
    assert _rules_set(cluster["rules"]) == {("", "nodes", v) for v in ("get", "list", "watch")} | {
        ("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")} | {
        ("", "namespaces", v) for v in ("list", "watch")}
    args = container(docs)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args


def test_kustomize_rbac_equals_chart_rbac(helm):
    chart_rules = one(render(helm), "ClusterRole")["rules"]
    kustomize_rules = yaml.safe_load((ROOT / "config" / "rbac" / "role.yaml").read_text())["rules"]
    assert _rules_set(kustomize_rules) == _rules_set(chart_rules)


def test_kustomize_manager_flags_are_ones_the_cli_accepts():
    manager = yaml.safe_load((ROOT / "config" / "manager" / "manager.yaml").read_text())
    options = run_options()
    for arg in manager["spec"]["template"]["spec"]["containers"][0]["args"]:
        assert arg.split("=", 1)[0] in options, arg


# ------------------------------------------------------------------------------------ monitoring ---

def operator_metric_names() -> set[str]:
    """Every metric the operator exposes: the families its registry collects (custom collectors included)."""
    pytest.importorskip("llmd_operator.controller.metrics")
    from prometheus_client import REGISTRY  # noqa: PLC0415

    return {f.name + "_total" if f.type == "counter" else f.name for f in REGISTRY.collect()}


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or label names."""
    text = re.sub(r"\{[^}]*\}", " ", expr)                     # label matchers
    text = re.sub(r'"[^"]*"', " ", text)                        # string arguments (label_replace)
    text = re.sub(r"\[[^\]]*\]", " ", text)                    # range selectors
    text = re.sub(r"(?:by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"\b\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b", " ", text)  # numbers, 1e6 included
    text = re.sub(r"\boffset\s+\w+", " ", text)
    keywords = {"and", "or", "unless", "bool", "by", "on", "without", "ignoring", "group_left", "group_right"}
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end():].lstrip()
        if rest.startswith("("):
            continue  # a function or aggregation
        if match.group() not in keywords:
            names.add(match.group())
    return names


def test_prometheus_rule_alerts(helm):
    docs = render(helm, "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.labels.release=kps")
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {"LowGPUUtilization", "HighGPUMemoryIdle", "CostAnomalyDetected", "LLMDeploymentSLOFastBurn",
            "LLMDeploymentSLOSlowBurn", "LLMDeploymentBudgetLimited"} <= set(alerts)
    text = json.dumps(rule)
    assert "nvidia_gpu_" not in text, "the seed's metric names do not exist; DCGM exporter names only"
    assert "DCGM_FI_DEV_GPU_UTIL" in alerts["LowGPUUtilization"]["expr"]
    assert {"DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED"} <= promql_metrics(alerts["HighGPUMemoryIdle"]["expr"])
    assert "offset 24h" in alerts["CostAnomalyDetected"]["expr"] and "llm_cost_total" in alerts["CostAnomalyDetected"]["expr"]
    assert "llmd_slo_attainment" in alerts["LLMDeploymentSLOFastBurn"]["expr"]
    assert "llmd_budget_limited" in alerts["LLMDeploymentBudgetLimited"]["expr"]
    assert "llmd_metrics_available" in alerts["LLMDeploymentMetricsMissing"]["expr"]

    known = operator_metric_names() | {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED"}
    operations = (ROOT / "docs" / "operations.md").read_text() if (ROOT / "docs" / "operations.md").exists() else ""
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+\s+(.*)$", operations, re.M)}
    for name, alert in alerts.items():
        assert promql_metrics(alert["expr"]) <= known, (name, promql_metrics(alert["expr"]) - known)
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}
        assert alert["expr"].count("(") == alert["expr"].count(")"), name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        anchor = alert["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, f"docs/operations.md has no runbook section for {name} (#{anchor})"


def test_service_and_pod_monitors(helm):
    docs = render(helm, "--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true")
    service = one(docs, "Service")
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    # llmd_* series carry the LLMDeployment's namespace; the target's own namespace label must not replace it.
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    kustomize_monitor = yaml.safe_load((ROOT / "config" / "prometheus" / "servicemonitor.yaml").read_text())
    assert kustomize_monitor["spec"]["endpoints"][0]["honorLabels"] is True
    pod_monitor = one(docs, "PodMonitor")
    labels = pytest.importorskip("llmd_operator.render.labels")
    selector = pod_monitor["spec"]["selector"]["matchLabels"]
    assert selector == {**labels.MANAGED_BY, labels.METRICS_LABEL: "true"}
    model_server = labels.pod_labels("chat", "llama-3.1-8b", "decode", "spot")
    assert selector.items() <= model_server.items(), "the PodMonitor selects the operator's model-server pods"
    endpoint = pod_monitor["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    # The SLO loop groups vllm:* series by these labels: the PodMonitor must produce exactly them.
    catalog = yaml.safe_load((ROOT / "operator" / "llmd_operator" / "catalog" / "data" / "engine.yaml").read_text())
    relabeled = {r["sourceLabels"][0]: r["targetLabel"] for r in endpoint["relabelings"]}
    wanted = catalog["prometheus_labels"]
    assert relabeled["__meta_kubernetes_pod_label_llm_d_io_deployment"] == wanted["deployment"]
    assert relabeled["__meta_kubernetes_pod_label_llm_d_ai_role"] == wanted["role"]
    assert relabeled["__meta_kubernetes_pod_label_llm_d_io_capacity_type"] == wanted["capacity_type"]
    kustomize_pm = yaml.safe_load((ROOT / "config" / "prometheus" / "podmonitor.yaml").read_text())
    assert kustomize_pm["spec"]["podMetricsEndpoints"][0]["relabelings"] == endpoint["relabelings"]
    assert kustomize_pm["spec"]["selector"] == pod_monitor["spec"]["selector"]
    scoped = render(helm, "--set", "podMonitor.enabled=true", "--set", "watchNamespaces={team-a}")
    assert one(scoped, "PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}


def test_grafana_dashboard(helm):
    docs = render(helm, "--set", "grafanaDashboard.enabled=true", "--set", "grafanaDashboard.namespace=monitoring")
    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    dashboard = json.loads(cm["data"]["llmd-operator.json"])
    assert dashboard["uid"] == "llmd-operator"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Replicas per pool", "SLO attainment", "Cost per hour", "Cost per 1M output tokens"} <= titles
    used = set().union(*(promql_metrics(e.replace("$__rate_interval", "5m")) for e in exprs))
    assert {"llmd_pool_replicas", "llmd_slo_attainment", "llmd_cost_per_hour_usd", "llm_cost_total",
            "vllm:generation_tokens_total"} <= used
    assert used <= operator_metric_names() | {"vllm:generation_tokens_total", "DCGM_FI_DEV_GPU_UTIL"}, used
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# ----------------------------------------------------------------------------------------- NOTES ---

def test_notes_render(helm, tmp_path):
    """NOTES.txt renders (helm only shows it on install; render it through tpl in a copy of the chart)."""
    chart = tmp_path / "llmd-operator"
    shutil.copytree(CHART, chart)
    (chart / "files" / "notes.txt").write_text((CHART / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        "data:\n  notes: {{ tpl (.Files.Get \"files/notes.txt\") . | quote }}\n")

    def notes(*args: str) -> str:
        proc = subprocess.run([helm, "template", "rel", str(chart), "-n", "llm-d-system", *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
        return next(d for d in docs if d["metadata"]["name"] == "notes")["data"]["notes"]

    ha = notes("--set", "replicas=2")
    assert "Kopf peering" in ha and "prometheus.url is empty" in ha and "kubectl get llmd" in ha
    assert "rollout status deployment/rel-llmd-operator" in ha
    plain = notes("--set", "prometheus.url=http://prom:9090", "--set", "watchNamespaces={team-a}", "--set", "prometheusRule.enabled=true")
    assert "prometheus.url is empty" not in plain and "team-a (namespaced RBAC)" in plain and "PrometheusRule" in plain


# ------------------------------------------------------------------------------------- kustomize ---

@pytest.mark.parametrize("path", ["config/default", "config/samples", "config/crd", "config/rbac", "config/manager",
                                  "config/argocd"])
def test_kustomize_builds(kubectl, path):
    proc = subprocess.run([kubectl, "kustomize", str(ROOT / path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_kustomize_default(kubectl):
    proc = subprocess.run([kubectl, "kustomize", str(ROOT / "config" / "default")], capture_output=True, text=True,
                          timeout=120, check=True)
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert one(docs, "Namespace")["metadata"]["name"] == "llm-d-system"
    deployment = one(docs, "Deployment")
    assert deployment["metadata"]["name"] == "llmd-operator"
    assert deployment["metadata"]["namespace"] == "llm-d-system"
    assert {d["metadata"]["name"] for d in kinds(docs, "CustomResourceDefinition")} == OUR_CRDS
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"][0] == {"kind": "ServiceAccount", "name": "llmd-operator", "namespace": "llm-d-system"}
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"] == "llmd-operator"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "llmd-operator"
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_kustomize_prometheus_component(kubectl, tmp_path):
    """The optional component adds the monitoring objects on top of config/default."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    rel = Path(*[".."] * len(overlay.relative_to(overlay.anchor).parts)) / ROOT.relative_to(ROOT.anchor)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [str(rel / "config" / "default")], "components": [str(rel / "config" / "prometheus")]}))
    proc = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert {d["kind"] for d in docs} >= {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}
    dashboard = next(d for d in kinds(docs, "ConfigMap") if "grafana_dashboard" in d["metadata"].get("labels", {}))
    assert json.loads(dashboard["data"]["llmd-operator.json"])["uid"] == "llmd-operator"


# --------------------------------------------------------------------------------------- samples ---

def test_samples_are_the_seed_examples_as_written():
    from tests.conftest import seed_documents  # noqa: PLC0415

    seed = {(d.body["kind"], d.body["metadata"]["name"]): d.body for d in seed_documents()}
    samples_dir = ROOT / "config" / "samples"
    listed = yaml.safe_load((samples_dir / "kustomization.yaml").read_text())["resources"]
    samples = {}
    for name in listed:
        for doc in yaml.safe_load_all((samples_dir / name).read_text()):
            if doc and doc["kind"] in ("LLMDeployment", "InferenceScheduler"):
                samples[(doc["kind"], doc["metadata"]["name"])] = doc
    assert set(samples) == set(seed), "one sample per seed example, each listed in the kustomization"
    for key, body in seed.items():
        assert samples[key] == body, f"{key} differs from the seed"
    assert {d["metadata"].get("namespace") for d in samples.values()} == {"production", "llm-d-system"}
    assert set(listed) == {p.name for p in samples_dir.glob("*.yaml")} - {"kustomization.yaml"}


def test_samples_validate_offline():
    """The CLI's own validation (schema + CEL rules) accepts every sample."""
    cli = pytest.importorskip("llmd_operator.cli")
    from click.testing import CliRunner  # noqa: PLC0415

    files = sorted((ROOT / "config" / "samples").glob("*.yaml"))
    args = [a for f in files if f.name not in ("kustomization.yaml", "namespaces.yaml") for a in ("-f", str(f))]
    result = CliRunner().invoke(cli.cli, ["plan", *args])
    assert result.exit_code == 0, result.output
    for name in ("analytics-llm-initial", "llama-3.1-8b-disaggregated", "llama-3.1-8b-optimized", "llama-3.1-8b-scheduled"):
        assert name in result.output


# --------------------------------------------------------------------------------------- Argo CD ---

def test_argocd_applications():
    chart_app = yaml.safe_load((ROOT / "config" / "argocd" / "application-chart.yaml").read_text())
    assert chart_app["kind"] == "Application"
    source = chart_app["spec"]["source"]
    assert source["path"] == "charts/llmd-operator"
    # The values the Application passes are valid chart values (same schema the chart enforces).
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(source["helm"]["valuesObject"]) <= set(schema["properties"])
    assert "ServerSideApply=true" in chart_app["spec"]["syncPolicy"]["syncOptions"]

    samples_app = yaml.safe_load((ROOT / "config" / "argocd" / "application-samples.yaml").read_text())
    assert samples_app["spec"]["source"]["path"] == "config/samples"
    assert (ROOT / samples_app["spec"]["source"]["path"] / "kustomization.yaml").exists()
    assert {"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]} in samples_app["spec"]["ignoreDifferences"]
    assert "RespectIgnoreDifferences=true" in samples_app["spec"]["syncPolicy"]["syncOptions"]


def test_argocd_values_object_renders(helm, tmp_path):
    chart_app = yaml.safe_load((ROOT / "config" / "argocd" / "application-chart.yaml").read_text())
    values = tmp_path / "argocd-values.yaml"
    values.write_text(yaml.safe_dump(chart_app["spec"]["source"]["helm"]["valuesObject"]))
    docs = render(helm, "-f", str(values))
    assert one(docs, "PrometheusRule") and one(docs, "PodMonitor")


def test_promql_parses():
    """Every alert and dashboard expression is valid PromQL (promql-parser, the Rust parser's binding)."""
    promql_parser = pytest.importorskip("promql_parser", reason="pip install promql-parser to check PromQL syntax")
    rules = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    exprs = [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5m")
            exprs.append((panel["title"], expr.replace("$namespace", ".*").replace("$deployment", ".*")))
    for name, expr in exprs:
        try:
            promql_parser.parse(expr)
        except Exception as error:  # noqa: BLE001
            pytest.fail(f"{name}: {error}\n{expr}")


def test_every_value_is_documented():
    """docs/install.md's values table names every top-level value of values.yaml."""
    install = (ROOT / "docs" / "install.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [key for key in values if f"`{key}" not in install]
    assert not missing, f"document these values in docs/install.md: {missing}"


def test_chart_packages(helm, tmp_path):
    proc = subprocess.run([helm, "package", str(CHART), "-d", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    package = next(tmp_path.glob("llmd-operator-*.tgz"))
    listing = subprocess.run(["tar", "tzf", str(package)], capture_output=True, text=True, check=True).stdout.split()
    assert "llmd-operator/values.schema.json" in listing
    assert "llmd-operator/files/alerts.yaml" in listing and "llmd-operator/files/dashboard.json" in listing
    assert not any("/ci/" in name for name in listing)


def test_models_value_becomes_the_catalog_configmap_the_operator_reads(helm, tmp_path):
    values = tmp_path / "models.yaml"
    values.write_text(yaml.safe_dump({"models": {"models": {"acme-chat-13b": {
        "parameters": 13015864320, "layers": 40, "hidden_size": 5120, "attention_heads": 40, "kv_heads": 8,
        "max_context": 32768, "checkpoints": {"bf16": "acme/chat-13b"}}}}}))
    docs = render(helm, "-f", str(values))
    configmap = next(d for d in kinds(docs, "ConfigMap") if d["metadata"]["name"].endswith("-models"))
    assert yaml.safe_load(configmap["data"]["models.yaml"])["models"]["acme-chat-13b"]["layers"] == 40
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--models-configmap={configmap['metadata']['name']}" in args
