#!/usr/bin/env bash
# `make demo`: a local cluster with fake GPU nodes, the operator, example deployments, and a live view of
# what the operator did. Ctrl-C stops it and removes the demo's resources (the cluster stays up for the
# next run; `make down` stops it). DEMO_SECONDS=N ends the live view after N seconds.
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

echo ">> starting the operator (log: $LOG_DIR/operator.log)" >&2
"$VENV/bin/llmd-operator" run --namespace "$NAMESPACE" --metrics-port 0 --health-port 0 >"$LOG_DIR/operator.log" 2>&1 &
OPERATOR=$!
cleanup() {
  trap - EXIT INT TERM
  echo; echo ">> cleaning up: demo namespace and operator (the cluster stays up; make down stops it)" >&2
  kubectl delete namespace "$NAMESPACE" --wait=false >/dev/null 2>&1 || true
  kill "$OPERATOR" 2>/dev/null || true
  wait "$OPERATOR" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo ">> applying the examples (e2e/demo/examples.yaml)" >&2
kubectl apply --server-side -n "$NAMESPACE" -f e2e/demo/examples.yaml >/dev/null

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
