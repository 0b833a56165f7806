"""Installing the operator the ways platform teams do, against the real (local) API server.

- `helm install` of charts/llmd-operator into a fresh namespace: the CRDs (kept on uninstall), the
  ServiceAccount, least-privilege RBAC (checked with `kubectl auth can-i` as the ServiceAccount), the
  operator Deployment, Kopf peering when replicas > 1.
- The chart's RBAC is enough for the real operator: `llmd-operator run` started here with the chart's
  ServiceAccount token (not the admin's) reconciles an LLMDeployment. (The in-cluster Deployment's image is
  not pullable here and the nodes are KWOK fakes, so the operator runs as a local process.)
- `kubectl apply -k config/default` works; `kubectl apply --dry-run=server -k config/samples` accepts every
  seed example.

Needs KUBECONFIG (the test runner sets it after `e2e/cluster.sh up`); skips without it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.cluster.conftest import free_port, wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "llmd-operator"
OUR_CRDS = ("llmdeployments.inference.llm-d.io", "inferenceschedulers.scheduler.llm-d.io")


# ------------------------------------------------------------------------------------------ tools ---

@pytest.fixture(scope="module")
def kube() -> dict:
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("KUBECONFIG is not set: start the local cluster (e2e/cluster.sh up) and export its kubeconfig")
    kubectl = shutil.which("kubectl")
    bin_dir = subprocess.run([str(ROOT / "e2e" / "cluster.sh"), "bin-dir"], capture_output=True, text=True).stdout.strip()
    if bin_dir and (Path(bin_dir) / "kubectl").exists():
        kubectl = str(Path(bin_dir) / "kubectl")
    assert kubectl, "no kubectl (e2e/cluster.sh build)"
    helm = subprocess.run([str(ROOT / "scripts" / "ensure-helm.sh")], capture_output=True, text=True, timeout=1800)
    assert helm.returncode == 0, helm.stderr
    return {"kubectl": kubectl, "helm": helm.stdout.strip().splitlines()[-1]}


def run(cmd: list[str], *, check: bool = True, input_text: str | None = None, timeout: int = 180,
        env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input_text, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def kubectl(kube: dict, *args: str, **kw) -> subprocess.CompletedProcess:
    return run([kube["kubectl"], *args], **kw)


def helm(kube: dict, *args: str, **kw) -> subprocess.CompletedProcess:
    return run([kube["helm"], *args], **kw)


def get(kube: dict, *args: str) -> dict:
    return json.loads(kubectl(kube, "get", *args, "-o", "json").stdout)


def can_i(kube: dict, sa: str, verb: str, resource: str, namespace: str | None = None) -> bool:
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource, f"--as={sa}"] + ([f"--subresource={subresource}"] if subresource else [])
    args += ["-n", namespace] if namespace else []
    return kubectl(kube, *args, check=False).stdout.strip() == "yes"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespaces(kube):
    """Fresh namespaces, deleted after the test."""
    made: list[str] = []

    def make(prefix: str = "llmd-install") -> str:
        name = unique(prefix)
        kubectl(kube, "create", "namespace", name)
        made.append(name)
        return name

    yield make
    for name in made:
        kubectl(kube, "delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def release(kube):
    """helm install with the shared CRDs adopted by the release first (other tests may have created them
    with kubectl; Helm only takes over objects carrying its ownership metadata)."""
    installed: list[tuple[str, str]] = []
    peerings: list[str] = []

    def install(name: str, namespace: str, *args: str) -> subprocess.CompletedProcess:
        for crd in OUR_CRDS:
            if kubectl(kube, "get", "crd", crd, check=False).returncode == 0:
                kubectl(kube, "annotate", "crd", crd, f"meta.helm.sh/release-name={name}",
                        f"meta.helm.sh/release-namespace={namespace}", "--overwrite")
                kubectl(kube, "label", "crd", crd, "app.kubernetes.io/managed-by=Helm", "--overwrite")
        proc = helm(kube, "install", name, str(CHART), "--namespace", namespace, "--wait", "--timeout", "180s",
                    *args, timeout=300)
        installed.append((name, namespace))
        return proc

    install.peerings = peerings
    yield install
    for name, namespace in installed:
        helm(kube, "uninstall", name, "--namespace", namespace, "--wait", check=False, timeout=300)
    for peering in peerings:  # post-install hooks are not removed by helm uninstall
        kubectl(kube, "delete", "clusterkopfpeering", peering, "--ignore-not-found", check=False)


# ------------------------------------------------------------------------------------------- Helm ---

def test_helm_install_creates_crds_rbac_and_operator(kube, namespaces, release):
    ns = namespaces()
    name = unique("llmd")
    out = release(name, ns, "--set", "prometheus.url=http://prometheus.monitoring:9090")
    assert "NOTES" in out.stdout and "kubectl get llmd" in out.stdout
    full = f"{name}-llmd-operator"

    # CRDs: established, from the chart (same schema as crds/), kept on uninstall.
    for crd in OUR_CRDS:
        live = get(kube, "crd", crd)
        assert live["metadata"]["annotations"]["meta.helm.sh/release-name"] == name
        assert live["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert any(c["type"] == "Established" and c["status"] == "True" for c in live["status"]["conditions"])
        source = next(yaml.safe_load(p.read_text()) for p in (ROOT / "crds").glob("*.yaml")
                      if yaml.safe_load(p.read_text())["metadata"]["name"] == crd)
        assert live["spec"]["versions"][0]["schema"] == source["spec"]["versions"][0]["schema"]

    # The operator Deployment as the chart renders it, accepted by the API server.
    deployment = get(kube, "deployment", full, "-n", ns)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["serviceAccountName"] == full
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "--prometheus-url=http://prometheus.monitoring:9090" in container["args"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    get(kube, "service", f"{full}-metrics", "-n", ns)

    # Least privilege, as the ServiceAccount sees it.
    sa = f"system:serviceaccount:{ns}:{full}"
    get(kube, "clusterrole", full)
    for verb, resource, where in [("create", "deployments.apps", "default"), ("patch", "llmdeployments.inference.llm-d.io/status", "default"),
                                  ("update", "deployments.apps/scale", "default"), ("create", "horizontalpodautoscalers.autoscaling", "default"),
                                  ("create", "poddisruptionbudgets.policy", "default"), ("watch", "pods", "default"),
                                  ("create", "events", "default"), ("list", "nodes", None),
                                  ("watch", "customresourcedefinitions.apiextensions.k8s.io", None)]:
        assert can_i(kube, sa, verb, resource, where), (verb, resource)
    for verb, resource, where in [("get", "secrets", "default"), ("delete", "pods", "default"), ("patch", "nodes", None),
                                  ("patch", "nodes/status", None), ("create", "pods/exec", "default"),
                                  ("create", "clusterroles.rbac.authorization.k8s.io", None), ("delete", "llmdeployments.inference.llm-d.io", "default")]:
        assert not can_i(kube, sa, verb, resource, where), (verb, resource)

    # An upgrade re-applies the CRDs with the release and rolls the new flags out.
    helm(kube, "upgrade", name, str(CHART), "--namespace", ns, "--reuse-values", "--wait", "--timeout", "180s",
         "--set", "prometheus.url=http://thanos.monitoring:9090", timeout=300)
    args = get(kube, "deployment", full, "-n", ns)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--prometheus-url=http://thanos.monitoring:9090" in args
    assert get(kube, "crd", OUR_CRDS[0])["metadata"]["annotations"]["meta.helm.sh/release-name"] == name

    # Uninstall keeps the CRDs (crds.keep) and so every LLMDeployment.
    helm(kube, "uninstall", name, "--namespace", ns, "--wait", timeout=300)
    for crd in OUR_CRDS:
        get(kube, "crd", crd)
    assert kubectl(kube, "get", "deployment", full, "-n", ns, check=False).returncode != 0


def test_helm_install_namespaced_rbac(kube, namespaces, release):
    ns, watched, other = namespaces(), namespaces("llmd-watched"), namespaces("llmd-other")
    name = unique("llmd")
    release(name, ns, "--set", f"watchNamespaces={{{watched}}}", "--set", "crds.enabled=false")
    full = f"{name}-llmd-operator"
    sa = f"system:serviceaccount:{ns}:{full}"
    get(kube, "role", full, "-n", watched)
    get(kube, "role", full, "-n", ns)  # the home namespace (release namespace)
    assert can_i(kube, sa, "create", "deployments.apps", watched)
    assert can_i(kube, sa, "watch", "llmdeployments.inference.llm-d.io", watched)
    assert not can_i(kube, sa, "create", "deployments.apps", other)
    assert not can_i(kube, sa, "list", "llmdeployments.inference.llm-d.io", other)
    assert can_i(kube, sa, "list", "nodes")
    assert can_i(kube, sa, "list", "namespaces")  # Kopf resolves its namespaces at start
    assert not can_i(kube, sa, "get", "configmaps", other)
    args = get(kube, "deployment", full, "-n", ns)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--namespace={watched}" in args


def test_helm_install_ha_uses_kopf_peering(kube, namespaces, release):
    ns = namespaces()
    name = unique("llmd")
    peering = f"{name}-peering"
    release.peerings.append(peering)
    release(name, ns, "--set", "replicas=2", "--set", f"peering.name={peering}", "--set", "crds.enabled=false")
    full = f"{name}-llmd-operator"
    deployment = get(kube, "deployment", full, "-n", ns)
    assert deployment["spec"]["replicas"] == 2
    assert f"--peering={peering}" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    for crd in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        get(kube, "crd", crd)
    get(kube, "clusterkopfpeering", peering)  # the post-install hook made the peering object
    assert can_i(kube, f"system:serviceaccount:{ns}:{full}", "patch", "clusterkopfpeerings.kopf.dev")


def test_two_replicas_with_peering_let_one_reconcile(kube, namespaces, release, operator, tmp_path):
    """The chart's HA install runs two replicas with --peering: one of them must reconcile (Kopf pauses
    every peer while two share the highest priority, so replicas must not all have the default)."""
    ns, models = namespaces(), namespaces("llmd-ha-models")
    name = unique("llmd")
    peering = f"{name}-peering"
    release.peerings.append(peering)
    release(name, ns, "--set", "replicas=2", "--set", f"peering.name={peering}", "--set", "crds.enabled=false")
    args = get(kube, "deployment", f"{name}-llmd-operator", "-n", ns)["spec"]["template"]["spec"]["containers"][0]["args"]
    peering_args = [a for a in args if a.startswith(("--peering", "--priority"))]
    operator.stop()  # the shared test operator (standalone) would reconcile everything itself
    replicas = []
    try:
        for pod_id in ("replica-a", "replica-b"):
            log = tmp_path / f"{pod_id}.log"
            replicas.append((subprocess.Popen(
                [sys.executable, "-m", "llmd_operator.cli", "run", *peering_args, "--health-port", "0", "--metrics-port", "0"],
                stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "POD_ID": pod_id}), log))
        wait_for(lambda: {"replica-a", "replica-b"} <= set(get(kube, "clusterkopfpeering", peering).get("status") or {}),
                 60, "both replicas to join the peering")
        kubectl(kube, "apply", "--server-side", "-n", models, "-f", "-", input_text=yaml.safe_dump({
            "apiVersion": "inference.llm-d.io/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": "ha", "namespace": models},
            "spec": {"model": {"name": "llama-3.1-8b", "quantization": {"type": "int8"}}, "replicas": 1}}))

        def reconciled():
            for process, log in replicas:
                if process.poll() is not None:
                    raise AssertionError(f"a replica exited:\n{log.read_text()[-3000:]}")
            return get(kube, "deployments", "-n", models, "-l", "llm-d.io/deployment=ha")["items"]

        wait_for(reconciled, 90, "one of the two peered replicas to reconcile the LLMDeployment")
        peers = get(kube, "clusterkopfpeering", peering).get("status") or {}
        assert len({p["priority"] for p in peers.values() if isinstance(p, dict)}) == len(peers), peers
    finally:
        for process, _ in replicas:
            process.terminate()
        for process, _ in replicas:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        operator.start()


def test_a_replica_that_stops_leading_stops_reporting(kube, namespaces, release, operator, tmp_path):
    """Dashboards and alerts take the max over replicas: one that is no longer the active peer must not keep
    exporting the gauges (and the growing llm_cost) it had when it was."""
    import urllib.request

    ns, models = namespaces(), namespaces("llmd-lead-models")
    name = unique("llmd")
    peering = f"{name}-peering"
    release.peerings.append(peering)
    release(name, ns, "--set", "replicas=2", "--set", f"peering.name={peering}", "--set", "crds.enabled=false")
    operator.stop()
    replicas = []

    def start(pod_id: str, priority: int) -> int:
        port = free_port()
        log = tmp_path / f"{pod_id}.log"
        replicas.append(subprocess.Popen(
            [sys.executable, "-m", "llmd_operator.cli", "run", f"--peering={peering}", f"--priority={priority}",
             "--health-port", "0", "--metrics-port", str(port), "--slo-interval", "1"],
            stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "POD_ID": pod_id}))
        return port

    def reports(port: int) -> bool:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            return False
        return f'namespace="{models}"' in text

    try:
        first = start("leader-first", 1)
        kubectl(kube, "apply", "--server-side", "-n", models, "-f", "-", input_text=yaml.safe_dump({
            "apiVersion": "inference.llm-d.io/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": "lead", "namespace": models},
            "spec": {"model": {"name": "llama-3.1-8b", "quantization": {"type": "int8"}}, "replicas": 1}}))
        wait_for(lambda: reports(first), 90, "the only replica to reconcile and report the deployment")
        second = start("leader-second", 2)  # a higher priority: it takes over
        wait_for(lambda: reports(second), 90, "the new leader to report the deployment")
        wait_for(lambda: not reports(first), 60, "the former leader to stop reporting it")
    finally:
        for process in replicas:
            process.terminate()
        for process in replicas:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        operator.start()


def _token_kubeconfig(kube: dict, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount (TokenRequest), not as the admin."""
    token = kubectl(kube, "create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(kubectl(kube, "config", "view", "--minify", "--raw").stdout)
    cluster = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        cluster = {"server": cluster["server"], "certificate-authority-data":
                   base64.b64encode(Path(cluster["certificate-authority"]).read_bytes()).decode()}
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}],
    }))
    return path


def test_chart_rbac_is_enough_for_the_operator_to_reconcile(kube, namespaces, release, tmp_path):
    """helm install, then the real operator - with the chart's ServiceAccount - reconciles an LLMDeployment."""
    ns, watched = namespaces(), namespaces("llmd-models")
    name = unique("llmd")
    release(name, ns, "--set", f"watchNamespaces={{{watched}}}", "--set", "crds.enabled=false")
    full = f"{name}-llmd-operator"
    config = _token_kubeconfig(kube, ns, full, tmp_path / "sa.kubeconfig")

    log = tmp_path / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(config)}
    operator = subprocess.Popen(
        [sys.executable, "-m", "llmd_operator.cli", "run", "--namespace", watched, "--home-namespace", ns,
         "--health-port", "0", "--metrics-port", "0"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    try:
        kubectl(kube, "apply", "--server-side", "-n", watched, "-f", "-", input_text=yaml.safe_dump({
            "apiVersion": "inference.llm-d.io/v1alpha1", "kind": "LLMDeployment",
            "metadata": {"name": "chat", "namespace": watched},
            "spec": {"model": {"name": "llama-3.1-8b", "quantization": {"type": "int8"}}, "replicas": 1,
                     "resources": {"requests": {"nvidia.com/gpu": "1"}}}}))

        def reconciled():
            if operator.poll() is not None:
                raise AssertionError(f"the operator exited:\n{log.read_text()[-3000:]}")
            obj = get(kube, "llmd", "chat", "-n", watched)
            planned = next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "Planned"), {})
            children = get(kube, "deployments", "-n", watched, "-l", "llm-d.io/deployment=chat")["items"]
            return planned.get("status") == "True" and children and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]

        wait_for(reconciled, 120, "the LLMDeployment to be planned and its Deployments created")
        denied = sorted({line.split("forbidden: ", 1)[-1][:300] for line in log.read_text().splitlines()
                         if "forbidden" in line.lower() or " 403" in line})
        assert not denied, "the chart's RBAC refused the operator:\n" + "\n".join(denied)
    finally:
        operator.terminate()
        try:
            operator.wait(timeout=20)
        except subprocess.TimeoutExpired:
            operator.kill()


# -------------------------------------------------------------------------------------- kustomize ---

def test_kubectl_apply_k_config_default(kube):
    """The whole kustomize install applies. The CRDs and llm-d-system are shared with other tests, so only
    the operator's own objects are removed afterwards."""
    out = kubectl(kube, "apply", "-k", str(ROOT / "config" / "default"), timeout=300)
    assert "deployment.apps/llmd-operator" in out.stdout
    # ... and again server-side (what docs/install.md recommends), idempotently.
    kubectl(kube, "apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "config" / "default"), timeout=300)
    try:
        deployment = get(kube, "deployment", "llmd-operator", "-n", "llm-d-system")
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "llmd-operator"
        binding = get(kube, "clusterrolebinding", "llmd-operator")
        assert binding["subjects"][0]["namespace"] == "llm-d-system"
        assert can_i(kube, "system:serviceaccount:llm-d-system:llmd-operator", "create", "deployments.apps", "default")
        for crd in OUR_CRDS:
            get(kube, "crd", crd)
    finally:
        for kind, name, ns in [("deployment", "llmd-operator", "llm-d-system"), ("service", "llmd-operator-metrics", "llm-d-system"),
                               ("serviceaccount", "llmd-operator", "llm-d-system"), ("clusterrolebinding", "llmd-operator", None),
                               ("clusterrole", "llmd-operator", None)]:
            kubectl(kube, "delete", kind, name, *(["-n", ns] if ns else []), "--ignore-not-found", check=False)


def test_samples_pass_server_side_dry_run(kube):
    """Every seed example, as written, passes the API server's schema and CEL validation."""
    for ns in ("production", "llm-d-system"):
        if kubectl(kube, "get", "namespace", ns, check=False).returncode != 0:
            kubectl(kube, "create", "namespace", ns)
    out = kubectl(kube, "apply", "--dry-run=server", "--server-side", "-k", str(ROOT / "config" / "samples"))
    for expected in ("inferencescheduler.scheduler.llm-d.io/cost-optimized-scheduler",
                     "llmdeployment.inference.llm-d.io/llama-3.1-8b-scheduled",
                     "llmdeployment.inference.llm-d.io/llama-3.1-8b-disaggregated",
                     "llmdeployment.inference.llm-d.io/llama-3.1-8b-optimized",
                     "llmdeployment.inference.llm-d.io/analytics-llm-initial"):
        assert expected in out.stdout, out.stdout


@pytest.mark.parametrize("values", sorted((CHART / "ci").glob("*.yaml")), ids=lambda p: p.stem)
def test_chart_renders_objects_the_api_server_accepts(kube, namespaces, values):
    """`helm template` with each ci values file, then `kubectl apply --dry-run=server` of what it renders
    (the Prometheus Operator kinds only when their CRDs are installed)."""
    ns, watched = namespaces(), namespaces("llmd-watched")
    rendered = helm(kube, "template", "dry", str(CHART), "-n", ns, "-f", str(values),
                    "--set", f"homeNamespace={ns}", "--set", f"grafanaDashboard.namespace={ns}",
                    *(["--set", f"watchNamespaces={{{watched}}}"] if "watchNamespaces" in values.read_text() else [])).stdout
    served = set(kubectl(kube, "api-resources", "-o", "name").stdout.split())
    docs = []
    for doc in yaml.safe_load_all(rendered):
        if not doc:
            continue
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        plural = {"PrometheusRule": "prometheusrules", "ServiceMonitor": "servicemonitors", "PodMonitor": "podmonitors",
                  "ClusterKopfPeering": "clusterkopfpeerings", "KopfPeering": "kopfpeerings"}.get(doc["kind"])
        if plural and f"{plural}.{group}" not in served:
            continue  # that API is not installed in this cluster
        docs.append(doc)
    assert any(d["kind"] == "Deployment" for d in docs)
    out = kubectl(kube, "apply", "--dry-run=server", "--server-side", "--force-conflicts", "-f", "-",
                  input_text=yaml.safe_dump_all(docs))
    assert out.stdout.count("(server dry run)") == len(docs), out.stdout
