#!/usr/bin/env bash
# `make demo`: a local cluster with fake GPU nodes, the operator, example deployments, and a live view of
# what the operator did. The SLO loop runs for real on `support-slo`: the live simulator models its pods
# (vLLM metrics per pod), a local Prometheus scrapes them, and a load pattern steps the request rate up
# and down, so the view shows the loop resizing the pool and saying why. Ctrl-C stops it and removes the
# demo's resources (the cluster stays up for the next run; `make down` stops it). DEMO_SECONDS=N ends the
# live view after N seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
NAMESPACE=llmd-demo
LOG_DIR="${LLMD_CACHE:-$HOME/.cache/llmd-operator}/demo"
mkdir -p "$LOG_DIR"

echo ">> starting the local cluster (the first run builds Kubernetes from source: minutes)" >&2
KUBECONFIG="$(e2e/cluster.sh up | tail -n 1)"
PATH="$(e2e/cluster.sh bin-dir):$PATH"
export KUBECONFIG PATH

echo ">> installing the CRDs" >&2
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for condition=established crd/llmdeployments.inference.llm-d.io crd/inferenceschedulers.scheduler.llm-d.io --timeout=60s >/dev/null
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null

free_port() { "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
SIM_PORT=$(free_port)
PROM_PORT=$(free_port)
LOAD_FILE="$LOG_DIR/load"
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  echo; echo ">> cleaning up: demo namespace, operator, simulator, Prometheus (the cluster stays up; make down stops it)" >&2
  kubectl delete namespace "$NAMESPACE" --wait=false >/dev/null 2>&1 || true
  for pid in "${PIDS[@]}"; do pkill -P "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

echo ">> starting the live simulator of support-slo's pods (log: $LOG_DIR/simulator.log)" >&2
"$VENV/bin/llmd-operator" simulate-live --namespace "$NAMESPACE" --deployment support-slo \
  --model qwen2.5-7b --gpu NVIDIA-A100-SXM4-80GB --quantization bf16 \
  --rate 0 --input-tokens 1000 --output-tokens 200 --port "$SIM_PORT" >"$LOG_DIR/simulator.log" 2>&1 &
PIDS+=($!)

echo ">> starting Prometheus, scraping the simulator every 2 s (log: $LOG_DIR/prometheus.log)" >&2
PROMETHEUS=$(e2e/ensure-prometheus.sh)
cat >"$LOG_DIR/prometheus.yml" <<YAML
global: {scrape_interval: 2s, evaluation_interval: 2s}
scrape_configs:
  - job_name: vllm
    honor_labels: true
    static_configs: [{targets: ["127.0.0.1:$SIM_PORT"]}]
YAML
rm -rf "$LOG_DIR/prometheus-data"
"$PROMETHEUS" --config.file="$LOG_DIR/prometheus.yml" --storage.tsdb.path="$LOG_DIR/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$LOG_DIR/prometheus.log" 2>&1 &
PIDS+=($!)

echo ">> starting the operator, its SLO loop reading that Prometheus (log: $LOG_DIR/operator.log)" >&2
"$VENV/bin/llmd-operator" run --namespace "$NAMESPACE" --metrics-port 0 --health-port 0 \
  --prometheus-url "http://127.0.0.1:$PROM_PORT" >"$LOG_DIR/operator.log" 2>&1 &
OPERATOR=$!
PIDS+=("$OPERATOR")

# The load on support-slo (requests/s, seconds): one replica serves about 7.5 req/s of 1000-token prompts
# and 200-token answers within 500 ms TTFT / 50 ms ITL, so the pool grows from its minimum of 2, meets
# its maxCostPerHour at the peak (BudgetLimited), and shrinks after the scale-down cooldown.
load_pattern() {
  echo "0 req/s until support-slo is ready" >"$LOAD_FILE"
  kubectl wait llmd/support-slo -n "$NAMESPACE" --for=condition=Ready --timeout=300s >/dev/null 2>&1 || true
  while true; do
    for phase in "4 150" "25 240" "45 240" "5 300"; do
      set -- $phase
      curl -fsS "http://127.0.0.1:$SIM_PORT/load?rate=$1" >/dev/null 2>&1 || true
      echo "$1 req/s since $(date +%H:%M:%S), next change at $(date -d "+$2 seconds" +%H:%M:%S)" >"$LOAD_FILE"
      sleep "$2"
    done
  done
}

echo ">> applying the examples (e2e/demo/examples.yaml)" >&2
kubectl apply --server-side -n "$NAMESPACE" -f e2e/demo/examples.yaml >/dev/null
load_pattern &
PIDS+=($!)

view() {
  echo "llmd-operator demo: namespace $NAMESPACE, $(date +%H:%M:%S); Ctrl-C to stop"
  echo
  kubectl get llmd -n "$NAMESPACE" -o wide
  echo
  kubectl get infsched -n "$NAMESPACE"
  echo
  kubectl get deploy,hpa -n "$NAMESPACE" -o wide | cut -c1-160
  echo
  echo "pods and the nodes they landed on:"
  kubectl get pods -n "$NAMESPACE" -o custom-columns='POD:.metadata.name,ROLE:.metadata.labels.llm-d\.ai/role,CAPACITY:.metadata.labels.llm-d\.io/capacity-type,STATUS:.status.phase,NODE:.spec.nodeName' | head -30
  echo
  echo "SLO loop on support-slo: load $(cat "$LOAD_FILE" 2>/dev/null || echo "starting"), Prometheus http://127.0.0.1:$PROM_PORT"
  kubectl get llmd support-slo -n "$NAMESPACE" -o jsonpath='{range .status.conditions[?(@.type=="MetricsAvailable")]}  {.type}={.status}: {.message}{"\n"}{end}{range .status.conditions[?(@.type=="BudgetLimited")]}  {.type}={.status}: {.message}{"\n"}{end}  SLO scores (observed / target - 1): {.status.sloScores}{"\n"}' | cut -c1-200
  decision=$(kubectl get llmd support-slo -n "$NAMESPACE" -o jsonpath='{.status.lastDecision.time} {.status.lastDecision.fromReplicas}->{.status.lastDecision.toReplicas}: {.status.lastDecision.reason}')
  [[ "$decision" == " ->: " ]] && decision="none yet: the pool keeps the size it started with"
  echo "  last decision: $decision" | cut -c1-200
  echo
  echo "latest events from the operator:"
  kubectl get events -n "$NAMESPACE" --field-selector involvedObject.kind=LLMDeployment --sort-by=.lastTimestamp \
    -o custom-columns='TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message' | tail -8 | cut -c1-200
}

deadline=$(( $(date +%s) + ${DEMO_SECONDS:-315360000} ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  if ! kill -0 "$OPERATOR" 2>/dev/null; then echo "the operator exited; see $LOG_DIR/operator.log" >&2; exit 1; fi
  screen=$(view 2>&1)
  if [ -t 1 ]; then clear; fi
  printf '%s\n' "$screen"
  [ -t 1 ] || echo "----"
  sleep 3
done
