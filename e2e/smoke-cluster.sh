#!/usr/bin/env bash
# Smoke test of the e2e cluster (provider local): brings it up if needed, then
# checks in a throw-away namespace that
#   - the fleet is there and Ready,
#   - the real scheduler puts a GPU pod on an H100 node (toleration + selector)
#     and KWOK makes it Running/Ready with a pod IP; a GPU pod without the
#     toleration stays Pending; a CPU pod lands on a CPU node,
#   - scaling down deletes pods (KWOK pod-delete stage),
#   - the garbage collector deletes a Deployment whose owner is deleted,
#   - CEL rules (x-kubernetes-validations) of a CRD are enforced,
#   - the audit log records the writes.
# Leaves the cluster running. Usage: e2e/smoke-cluster.sh
set -euo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KUBECONFIG="$("$E2E_DIR/cluster.sh" up | tail -n1)"
export KUBECONFIG
PATH="$("$E2E_DIR/cluster.sh" bin-dir):$PATH"
NS="smoke-$$"
CRD="widgets$$.smoke.llmd.io"

say() { printf '[smoke] %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }
cleanup() {
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  kubectl delete crd "$CRD" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Poll CMD until it succeeds (30s).
eventually() {
  local i
  for ((i = 0; i < 60; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  "$@"
}

kubectl create namespace "$NS" >/dev/null
audit="$("$E2E_DIR/cluster.sh" audit-log)"
audit_start="$(stat -c %s "$audit")"

gpus="$(kubectl get nodes -o jsonpath='{range .items[*]}{.status.allocatable.nvidia\.com/gpu}{"\n"}{end}' | awk '{s += $1} END {print s}')"
say "fleet: $(kubectl get nodes --no-headers | wc -l) nodes, $gpus GPUs"
((gpus >= 8)) || fail "no GPUs in the fleet"

kubectl apply -n "$NS" -f - >/dev/null <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata: {name: owner}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: gpu}
spec:
  replicas: 3
  selector: {matchLabels: {app: gpu}}
  template:
    metadata: {labels: {app: gpu}}
    spec:
      nodeSelector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
      containers:
      - {name: vllm, image: vllm/vllm-openai, resources: {limits: {nvidia.com/gpu: 1}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: gpu-no-toleration}
spec:
  replicas: 1
  selector: {matchLabels: {app: gpu-no-toleration}}
  template:
    metadata: {labels: {app: gpu-no-toleration}}
    spec:
      containers:
      - {name: c, image: busybox, resources: {limits: {nvidia.com/gpu: 1}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cpu}
spec:
  replicas: 2
  selector: {matchLabels: {app: cpu}}
  template:
    metadata: {labels: {app: cpu}}
    spec:
      containers: [{name: c, image: busybox, resources: {requests: {cpu: 100m}}}]
EOF
kubectl -n "$NS" rollout status deploy/gpu --timeout=60s >/dev/null || fail "GPU deployment did not become ready"
kubectl -n "$NS" rollout status deploy/cpu --timeout=60s >/dev/null || fail "CPU deployment did not become ready"
while read -r pod node ip phase; do
  product="$(kubectl get node "$node" -o jsonpath='{.metadata.labels.nvidia\.com/gpu\.product}')"
  [[ "$product" == NVIDIA-H100-80GB-HBM3 && -n "$ip" && "$phase" == Running ]] \
    || fail "pod $pod: node $node ($product), ip '$ip', phase $phase"
done < <(kubectl -n "$NS" get pods -l app=gpu -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP} {.status.phase}{"\n"}{end}')
say "GPU pods Running/Ready on H100 nodes: $(kubectl -n "$NS" get pods -l app=gpu -o jsonpath='{.items[*].spec.nodeName}')"
for node in $(kubectl -n "$NS" get pods -l app=cpu -o jsonpath='{.items[*].spec.nodeName}'); do
  [[ -z "$(kubectl get node "$node" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}')" ]] \
    || fail "CPU pod landed on GPU node $node"
done
sleep 1
[[ "$(kubectl -n "$NS" get pods -l app=gpu-no-toleration -o jsonpath='{.items[0].spec.nodeName}')" == "" ]] \
  || fail "a GPU pod without the toleration was scheduled"
say "GPU pod without toleration stays Pending; CPU pods on CPU nodes"

kubectl -n "$NS" scale deploy/gpu --replicas=1 >/dev/null
eventually bash -c "[[ \$(kubectl -n $NS get pods -l app=gpu --no-headers | wc -l) == 1 ]]" || fail "scale-down left pods behind"
say "scale-down: pods deleted"

uid="$(kubectl -n "$NS" get configmap owner -o jsonpath='{.metadata.uid}')"
kubectl -n "$NS" patch deploy cpu --type=merge \
  -p "{\"metadata\":{\"ownerReferences\":[{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"name\":\"owner\",\"uid\":\"$uid\"}]}}" >/dev/null
kubectl -n "$NS" delete configmap owner >/dev/null
eventually bash -c "! kubectl -n $NS get deploy cpu" || fail "owned Deployment not garbage-collected"
eventually bash -c "[[ -z \$(kubectl -n $NS get pods -l app=cpu -o name) ]]" || fail "pods of the owned Deployment not collected"
say "garbage collection: owned Deployment and its pods deleted"

kubectl apply -f - >/dev/null <<EOF
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: $CRD}
spec:
  group: smoke.llmd.io
  scope: Namespaced
  names: {plural: widgets$$, singular: widget$$, kind: Widget$$}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - {rule: "self.minReplicas <= self.maxReplicas", message: "minReplicas must not exceed maxReplicas"}
            properties:
              minReplicas: {type: integer}
              maxReplicas: {type: integer}
EOF
kubectl wait --for=condition=Established "crd/$CRD" --timeout=30s >/dev/null
widget() {
  printf 'apiVersion: smoke.llmd.io/v1\nkind: Widget%s\nmetadata: {name: %s}\nspec: {minReplicas: %s, maxReplicas: %s}\n' \
    "$$" "$1" "$2" "$3" | kubectl apply -n "$NS" -f - 2>&1
}
eventually widget ok 1 2 >/dev/null || fail "a valid custom resource was refused"
if out="$(widget bad 3 2)"; then fail "CEL rule not enforced"; fi
grep -q "minReplicas must not exceed maxReplicas" <<<"$out" || fail "unexpected error: $out"
say "CEL validation enforced: ${out##*: }"

writes="$(tail -c +"$((audit_start + 1))" "$audit" | grep -c "\"namespace\":\"$NS\"" || true)"
((writes > 0)) || fail "no writes in $NS recorded in the audit log $audit"
say "audit log: $writes write requests in namespace $NS recorded in $audit"
say "OK"
