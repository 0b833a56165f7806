#!/usr/bin/env bash
# Local Kubernetes control plane for llmd-operator end-to-end tests.
# See docs/cluster.md.
set -euo pipefail

K8S_VERSION="${LLMD_K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${LLMD_ETCD_VERSION:-v3.6.8}"
KWOK_VERSION="${LLMD_KWOK_VERSION:-v0.7.0}"

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${LLMD_CACHE:-$HOME/.cache/llmd-operator}"
BIN_DIR="$CACHE/bin/$K8S_VERSION"

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- build ---

K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

# run_with_progress LABEL CMD... : runs CMD with its output in a log file
# under $CACHE/build/logs, printing a heartbeat to stderr.
run_with_progress() {
  local label="$1"; shift
  local start=$SECONDS logf pid
  mkdir -p "$CACHE/build/logs"
  logf="$CACHE/build/logs/$(printf '%s' "$label" | tr -c 'A-Za-z0-9.-' '_').log"
  "$@" >"$logf" 2>&1 &
  pid=$!
  # shellcheck disable=SC2064  # expand $pid now
  trap "kill $pid 2>/dev/null; exit 130" INT TERM
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    if kill -0 "$pid" 2>/dev/null && (((SECONDS - start) % 30 < 5)); then
      log "  ... $label ($((SECONDS - start))s elapsed)"
    fi
  done
  if ! wait "$pid"; then
    trap - INT TERM
    tail -n 40 "$logf" >&2
    die "$label failed after $((SECONDS - start))s (log: $logf)"
  fi
  trap - INT TERM
  log "$label: done in $((SECONDS - start))s"
}

# Wrapper module for k8s.io/kubernetes: `go install k8s.io/kubernetes/...@v`
# refuses because the kubernetes go.mod carries replace directives for its
# staging modules, so we create a module that requires k8s.io/kubernetes and
# replaces every staging module with its published v0.Y.Z tag.
prepare_k8s_module() {
  local dir="$1" minor patch mod
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  patch="$(echo "$K8S_VERSION" | cut -d. -f3)"
  mkdir -p "$dir"
  mod="$dir/kubernetes.mod"
  if [[ ! -s "$mod" ]]; then
    local proxy="${GOPROXY:-https://proxy.golang.org}"
    proxy="${proxy%%,*}"
    [[ "$proxy" == "direct" || "$proxy" == "off" ]] && proxy="https://proxy.golang.org"
    curl -fsSL "$proxy/k8s.io/kubernetes/@v/$K8S_VERSION.mod" -o "$mod.tmp" \
      || die "cannot fetch k8s.io/kubernetes $K8S_VERSION go.mod from $proxy"
    mv "$mod.tmp" "$mod"
  fi
  {
    echo "module llmd.local/k8s-build"
    echo
    echo "go 1.25.0"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    sed -n '/^replace (/,/^)/p' "$mod" \
      | awk -v v="v0.$minor.$patch" '$2 == "=>" && $3 ~ /^\.\/staging\// { printf "\t%s => %s %s\n", $1, $1, v }'
    echo ")"
  } >"$dir/go.mod"
  grep -q 'k8s.io/api =>' "$dir/go.mod" || die "no staging replaces found in kubernetes $K8S_VERSION go.mod"
}

build_k8s() {
  local missing=() b
  for b in "$@"; do
    [[ -x "$BIN_DIR/$b" ]] || missing+=("$b")
  done
  ((${#missing[@]})) || return 0
  local dir="$CACHE/build/k8s-$K8S_VERSION"
  log "building Kubernetes $K8S_VERSION (${missing[*]}) into $BIN_DIR"
  log "the first build takes a while (about 8 minutes on 2 cores with an empty Go cache); it is cached afterwards"
  prepare_k8s_module "$dir"
  local minor ldflags pkgs=()
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  ldflags="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  (cd "$dir" && run_with_progress "downloading modules for kubernetes $K8S_VERSION" \
    go get "${pkgs[@]/%/@$K8S_VERSION}")
  for b in "${missing[@]}"; do
    (cd "$dir" && run_with_progress "building $b" \
      go build -trimpath -ldflags "$ldflags" -o "$BIN_DIR/$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
  done
}

build_etcd() {
  [[ -x "$BIN_DIR/etcd" ]] && return 0
  local dir="$CACHE/build/etcd-$ETCD_VERSION"
  log "building etcd $ETCD_VERSION into $BIN_DIR"
  mkdir -p "$dir"
  # etcd's server module also carries replace directives (../api, ...), so
  # use a wrapper module that requires it at the pinned tag.
  printf 'module llmd.local/etcd-build\n\ngo 1.24\n' >"$dir/go.mod"
  (cd "$dir" && run_with_progress "downloading modules for etcd $ETCD_VERSION" \
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  (cd "$dir" && run_with_progress "building etcd" \
    go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
}

build_kwok() {
  [[ -x "$BIN_DIR/kwok" ]] && return 0
  log "building kwok $KWOK_VERSION into $BIN_DIR"
  local tmp="$CACHE/build/kwok-$KWOK_VERSION"
  mkdir -p "$tmp"
  run_with_progress "building kwok" env GOBIN="$tmp" go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  mv "$tmp/kwok" "$BIN_DIR/kwok"
}

# ensure_binaries [NAME...] : build the named binaries (default: all of them)
# unless they are already in $BIN_DIR.
ensure_binaries() {
  local want=("$@") b need=0 start=$SECONDS k8s=()
  ((${#want[@]})) || want=("${K8S_BINARIES[@]}" etcd kwok)
  for b in "${want[@]}"; do
    [[ -x "$BIN_DIR/$b" ]] || need=1
  done
  ((need)) || return 0
  command -v go >/dev/null || die "go is required to build the control plane binaries"
  mkdir -p "$BIN_DIR"
  export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS="${GOFLAGS:-} -mod=mod"
  # One build at a time per cache (parallel `up`s wait for the first one).
  mkdir -p "$CACHE/locks"
  exec 8>"$CACHE/locks/build-$K8S_VERSION.lock"
  if ! flock -n 8; then
    log "another build into $BIN_DIR is running; waiting for it ..."
    flock 8
  fi
  for b in "${want[@]}"; do
    case "$b" in
      etcd) build_etcd ;;
      kwok) build_kwok ;;
      *) k8s+=("$b") ;;
    esac
  done
  ((${#k8s[@]} == 0)) || build_k8s "${k8s[@]}"
  log "binaries ready in $BIN_DIR ($((SECONDS - start))s)"
}

# ---------------------------------------------------------------- state ---

validate_name() {
  [[ "$CLUSTER" =~ ^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$ ]] \
    || die "LLMD_CLUSTER must be a DNS label (got '$CLUSTER')"
}

provider() {
  if [[ -f "$STATE/provider" ]]; then cat "$STATE/provider"; else echo "$PROVIDER"; fi
}

# Serialise commands on one cluster (parallel test runners may all call `up`).
lock_cluster() {
  mkdir -p "$CACHE/locks"
  exec 9>"$CACHE/locks/cluster-$CLUSTER.lock"
  if ! flock -n 9; then
    log "waiting for another cluster.sh on cluster '$CLUSTER' ..."
    flock 9
  fi
}

# Free loopback ports below the ephemeral range (so that outgoing connections
# never take them between a `stop` and a restart), avoiding the ports of other
# clusters in the same cache.
pick_ports() {
  local taken=""
  taken="$(cat "$CACHE"/clusters/*/ports.env 2>/dev/null | sed -n 's/^[A-Z_]*=\([0-9]*\)$/\1/p' | tr '\n' ' ' || true)"
  python3 - "$1" "$taken" <<'PY'
import random, socket, sys
n, taken = int(sys.argv[1]), {int(p) for p in sys.argv[2].split()}
ports, socks = [], []
while len(ports) < n:
    p = random.randint(20000, 32000)
    if p in taken or p in ports:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close()
        continue
    socks.append(s)
    ports.append(p)
print(" ".join(map(str, ports)))
PY
}

# SO_REUSEADDR as the servers set it: only a listener counts, not sockets in TIME-WAIT after a restart.
port_free() {
  python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

# ----------------------------------------------------------------- pki ---

# new_ca NAME CN : a self-signed CA.
new_ca() {
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$1.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/$1.key" -subj "/CN=$2" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/$1.crt" 2>/dev/null
}

# sign NAME CN [O] [client|server] [CA] : key + certificate signed by CA
# (default: the cluster CA). Several groups: O="g1/O=g2".
sign() {
  local name="$1" cn="$2" org="${3:-}" kind="${4:-client}" ca="${5:-ca}" subj ext
  subj="/CN=$cn"
  [[ -n "$org" ]] && subj="/O=$org$subj"
  ext="$PKI/$name.ext"
  if [[ "$kind" == server ]]; then
    printf '%s\n' "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" \
      "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" >"$ext"
  else
    printf '%s\n' "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=clientAuth" >"$ext"
  fi
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
    -set_serial "0x$(openssl rand -hex 12)" -days 3650 -extfile "$ext" \
    -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

# write_kubeconfig FILE CERTNAME USER
write_kubeconfig() {
  local file="$1" cert="$2" user="$3"
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $CLUSTER
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$cert.crt")
    client-key-data: $(base64 -w0 <"$PKI/$cert.key")
contexts:
- name: $CLUSTER
  context:
    cluster: $CLUSTER
    user: $user
    namespace: default
current-context: $CLUSTER
EOF
  chmod 600 "$file.tmp"
  mv "$file.tmp" "$file"
}

init_local_state() {
  if [[ -f "$STATE/ports.env" ]]; then
    [[ -f "$STATE/state-version" && "$(cat "$STATE/state-version")" == "$STATE_VERSION" ]] && return 0
    log "cluster state in $STATE was made by another version of this script; recreating it"
    down_local
  fi
  log "creating cluster state in $STATE"
  rm -rf "$STATE"
  mkdir -p "$STATE/logs" "$STATE/run" "$STATE/audit" "$PKI"
  chmod 700 "$STATE" "$PKI"
  echo local >"$STATE/provider"
  local ports
  read -r -a ports <<<"$(pick_ports 6)"
  cat >"$STATE/ports.env.tmp" <<EOF
APISERVER_PORT=${ports[0]}
ETCD_CLIENT_PORT=${ports[1]}
ETCD_PEER_PORT=${ports[2]}
CONTROLLER_MANAGER_PORT=${ports[3]}
SCHEDULER_PORT=${ports[4]}
KWOK_PORT=${ports[5]}
EOF
  # shellcheck source=/dev/null
  source "$STATE/ports.env.tmp"

  new_ca ca "llmd-e2e-ca-$CLUSTER"
  # front proxy (request header) CA: lets the API server authenticate to
  # aggregated API servers, and keeps the components' request-header
  # authenticators quiet.
  new_ca front-proxy-ca "llmd-e2e-front-proxy-ca-$CLUSTER"
  sign front-proxy-client front-proxy-client "" client front-proxy-ca
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  sign apiserver kube-apiserver "" server
  sign admin kubernetes-admin system:masters
  sign controller-manager system:kube-controller-manager
  sign scheduler system:kube-scheduler
  sign kwok kwok-controller system:masters

  write_kubeconfig "$KUBECONFIG_FILE" admin kubernetes-admin
  write_kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager system:kube-controller-manager
  write_kubeconfig "$STATE/scheduler.kubeconfig" scheduler system:kube-scheduler
  write_kubeconfig "$STATE/kwok.kubeconfig" kwok kwok-controller
  echo "$STATE_VERSION" >"$STATE/state-version"
  mv "$STATE/ports.env.tmp" "$STATE/ports.env"
}

load_ports() {
  [[ -f "$STATE/ports.env" ]] || die "cluster '$CLUSTER' has no state in $STATE (run: $0 up)"
  # shellcheck source=/dev/null
  source "$STATE/ports.env"
}

# ----------------------------------------------------------- processes ---

COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

component_args() {
  case "$1" in
    etcd) echo \
      --name="$CLUSTER" --data-dir="$STATE/etcd" \
      --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
      --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
      --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-cluster="$CLUSTER=http://127.0.0.1:$ETCD_PEER_PORT" \
      --unsafe-no-fsync --quota-backend-bytes=4294967296 --log-level=warn ;;
    kube-apiserver) echo \
      --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
      --secure-port="$APISERVER_PORT" \
      --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
      --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
      --client-ca-file="$PKI/ca.crt" \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-account-key-file="$PKI/sa.pub" \
      --service-account-signing-key-file="$PKI/sa.key" \
      --service-cluster-ip-range=10.96.0.0/16 \
      --authorization-mode=Node,RBAC --allow-privileged=true \
      --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
      --requestheader-allowed-names=front-proxy-client \
      --requestheader-username-headers=X-Remote-User \
      --requestheader-group-headers=X-Remote-Group \
      --requestheader-extra-headers-prefix=X-Remote-Extra- \
      --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
      --proxy-client-key-file="$PKI/front-proxy-client.key" \
      --endpoint-reconciler-type=none \
      --audit-policy-file="$STATE/audit-policy.yaml" \
      --audit-log-path="$AUDIT_LOG" --audit-log-format=json --audit-log-mode=blocking \
      --profiling=false ;;
    kube-controller-manager) echo \
      --kubeconfig="$STATE/controller-manager.kubeconfig" \
      --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
      --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
      --bind-address=127.0.0.1 --secure-port="$CONTROLLER_MANAGER_PORT" \
      --leader-elect=false --use-service-account-credentials=true \
      --root-ca-file="$PKI/ca.crt" \
      --service-account-private-key-file="$PKI/sa.key" \
      --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
      --flex-volume-plugin-dir="$STATE/flexvolume" \
      --profiling=false ;;
    kube-scheduler) echo \
      --kubeconfig="$STATE/scheduler.kubeconfig" \
      --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
      --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
      --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" \
      --leader-elect=false --profiling=false ;;
    kwok) echo \
      --kubeconfig="$STATE/kwok.kubeconfig" --config="$STATE/kwok-stages.yaml" \
      --manage-all-nodes=false \
      --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
      --node-lease-duration-seconds=40 --cidr=10.244.0.1/16 \
      --server-address="127.0.0.1:$KWOK_PORT" ;;
  esac
}

pid_of() {
  local f="$STATE/run/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  ours "$pid" || return 1
  echo "$pid"
}

# ours PID: the process is alive and its command line mentions our state dir.
ours() {
  [[ -r "/proc/$1/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$STATE/"
}

healthy() {
  case "$1" in
    etcd) curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" 2>/dev/null | grep -q '"health":"true"' ;;
    kube-apiserver) curl -fsS --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
      "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null 2>&1 ;;
    kube-controller-manager) curl -fsSk --max-time 2 "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz" >/dev/null 2>&1 ;;
    kube-scheduler) curl -fsSk --max-time 2 "https://127.0.0.1:$SCHEDULER_PORT/healthz" >/dev/null 2>&1 ;;
    kwok) curl -fsS --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz" >/dev/null 2>&1 ;;
  esac
}

port_of() {
  case "$1" in
    etcd) echo "$ETCD_CLIENT_PORT $ETCD_PEER_PORT" ;;
    kube-apiserver) echo "$APISERVER_PORT" ;;
    kube-controller-manager) echo "$CONTROLLER_MANAGER_PORT" ;;
    kube-scheduler) echo "$SCHEDULER_PORT" ;;
    kwok) echo "$KWOK_PORT" ;;
  esac
}

start_component() {
  local c="$1" p args
  if pid_of "$c" >/dev/null && healthy "$c"; then return 0; fi
  stop_component "$c"
  for p in $(port_of "$c"); do
    port_free "$p" || die "port $p for $c is taken by another process; run '$0 down' and '$0 up' to pick new ports"
  done
  read -r -a args <<<"$(component_args "$c")"
  log "starting $c (log: $STATE/logs/$c.log)"
  # setsid: the control plane outlives the shell (and process group) that
  # started it. The pid file is written by the process itself before exec.
  # Fds 8 and 9 hold the build and cluster locks: never hand them down.
  # shellcheck disable=SC2016  # $$ and $@ belong to the inner bash
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$STATE/run/$c.pid" "$BIN_DIR/$c" "${args[@]}" \
    >>"$STATE/logs/$c.log" 2>&1 </dev/null 8>&- 9>&- &
  local deadline=$((SECONDS + 90))
  until healthy "$c"; do
    if ((SECONDS > deadline)); then
      tail -n 30 "$STATE/logs/$c.log" >&2
      die "$c did not become healthy within 90s (log: $STATE/logs/$c.log)"
    fi
    if [[ -f "$STATE/run/$c.pid" ]] && ! kill -0 "$(cat "$STATE/run/$c.pid")" 2>/dev/null; then
      tail -n 30 "$STATE/logs/$c.log" >&2
      die "$c exited (log: $STATE/logs/$c.log)"
    fi
    sleep 0.3
  done
}

stop_component() {
  local c="$1" pid i
  pid="$(pid_of "$c")" || { rm -f "$STATE/run/$c.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    ours "$pid" || break
    sleep 0.1
  done
  if ours "$pid"; then
    log "$c (pid $pid) did not stop on SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/run/$c.pid"
}

kctl() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

wait_cluster_ready() {
  local deadline=$((SECONDS + ${LLMD_UP_TIMEOUT:-180}))
  until kctl get serviceaccount default -n default >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "ServiceAccount default/default did not appear"
    sleep 0.5
  done
  local nodes
  while :; do
    nodes="$(kctl get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null || true)"
    if [[ -n "$nodes" ]] && ! grep -qv ' True$' <<<"$nodes"; then break; fi
    ((SECONDS < deadline)) || die "nodes not Ready: $(grep -v ' True$' <<<"$nodes" | head -5 | tr '\n' ' ')"
    sleep 0.5
  done
}

# Apply the fleet when it changed since the last `up` or a node of it is
# missing. Client-side apply only writes what changed.
apply_fleet() {
  local sum names
  [[ -f "$FLEET" ]] || die "fleet file $FLEET not found"
  sum="$(sha256sum <"$FLEET" | cut -d' ' -f1)"
  read -r -a names <<<"$(sed -n 's/^  name: *//p' "$FLEET" | tr '\n' ' ')"
  if [[ "$(cat "$STATE/fleet.sha256" 2>/dev/null)" == "$sum" ]]; then
    local have n absent=0
    have=" $(kctl get nodes -o jsonpath='{.items[*].metadata.name}' 2>/dev/null) "
    for n in "${names[@]}"; do [[ "$have" == *" $n "* ]] || absent=1; done
    ((absent)) || return 0
  fi
  log "applying the fleet $FLEET"
  kctl apply -f "$FLEET" | grep -v ' unchanged$' >&2 || true
  echo "$sum" >"$STATE/fleet.sha256"
}

up_local() {
  ensure_binaries
  KUBECTL="$BIN_DIR/kubectl"
  init_local_state
  load_ports
  cp "$E2E_DIR/audit-policy.yaml" "$STATE/audit-policy.yaml.new"
  cp "$E2E_DIR/kwok/stages.yaml" "$STATE/kwok-stages.yaml.new"
  local f
  for f in audit-policy.yaml kwok-stages.yaml; do
    if cmp -s "$STATE/$f.new" "$STATE/$f"; then
      rm "$STATE/$f.new"
    else
      mv "$STATE/$f.new" "$STATE/$f"
      # changed configuration: restart the component that reads it
      [[ $f == audit-policy.yaml ]] && stop_component kube-apiserver
      [[ $f == kwok-stages.yaml ]] && stop_component kwok
    fi
  done
  local c
  for c in "${COMPONENTS[@]}"; do start_component "$c"; done
  apply_fleet
  wait_cluster_ready
}

down_local() {
  if [[ -f "$STATE/ports.env" ]]; then load_ports; fi
  # SIGTERM to all at once (clients first), then wait; SIGKILL after 15s.
  local i c pid pids=()
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c="${COMPONENTS[i]}"
    if pid="$(pid_of "$c")"; then
      log "stopping $c (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for ((i = 0; i < 150; i++)); do
    for pid in "${pids[@]}"; do
      ours "$pid" && break
      pid=""
    done
    [[ -z "${pid:-}" ]] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if ours "$pid"; then
      log "pid $pid did not stop on SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$STATE"/run/*.pid
}

status_local() {
  load_ports
  local c pid up=1
  for c in "${COMPONENTS[@]}"; do
    if pid="$(pid_of "$c")" && healthy "$c"; then
      printf '  %-24s running (pid %s, port %s)\n' "$c" "$pid" "$(port_of "$c")"
    else
      printf '  %-24s NOT running\n' "$c"
      up=0
    fi
  done
  ((up))
}

# ---------------------------------------------------------------- kind ---

up_kind() {
  command -v kind >/dev/null || die "provider kind needs the kind CLI (https://kind.sigs.k8s.io)"
  if command -v kubectl >/dev/null; then KUBECTL="$(command -v kubectl)"; else
    ensure_binaries kubectl; KUBECTL="$BIN_DIR/kubectl"
  fi
  mkdir -p "$STATE"
  echo kind >"$STATE/provider"
  if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    local image=()
    [[ -n "${LLMD_KIND_IMAGE:-}" ]] && image=(--image "$LLMD_KIND_IMAGE")
    log "creating kind cluster '$CLUSTER'"
    kind create cluster --name "$CLUSTER" --config "$E2E_DIR/kind/kind-config.yaml" \
      --kubeconfig "$KUBECONFIG_FILE" --wait 180s "${image[@]}" >&2
  fi
  kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_FILE"
  # Fake GPUs: advertise nvidia.com/gpu on the nodes labelled with a GPU count
  # (labels come from kind-config.yaml and mirror e2e/fleet.yaml).
  local node count
  while read -r node count; do
    [[ -n "$count" ]] || continue
    kctl patch node "$node" --subresource=status --type=merge \
      -p "{\"status\":{\"capacity\":{\"nvidia.com/gpu\":\"$count\"},\"allocatable\":{\"nvidia.com/gpu\":\"$count\"}}}" >&2
  done < <(kctl get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.labels.nvidia\.com/gpu\.count}{"\n"}{end}')
  wait_cluster_ready
}

down_kind() {
  if command -v kind >/dev/null && kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    kind delete cluster --name "$CLUSTER" >&2
  fi
}

# -------------------------------------------------------------- commands ---

usage() {
  cat >&2 <<EOF
usage: $0 COMMAND

  up              start the cluster (building binaries when missing); prints
                  the kubeconfig path as the last line of stdout
  down            stop every process and remove the cluster's state
  status          say whether the cluster is up (exit 0 if it is)
  kubeconfig      print the kubeconfig path
  audit-log       print the API server's audit log path (provider local)
  bin-dir         print the directory of the pinned binaries (kubectl, ...)
  build           only build the binaries
  kubectl ARGS    run the pinned kubectl against the cluster
  user-kubeconfig NAME [GROUP...]
                  print the path of a kubeconfig for user NAME (client
                  certificate; groups from the arguments) (provider local)

environment: LLMD_CLUSTER (default llmd), LLMD_CLUSTER_PROVIDER (local|kind),
LLMD_CACHE (default ~/.cache/llmd-operator), LLMD_K8S_VERSION,
LLMD_ETCD_VERSION, LLMD_KWOK_VERSION, LLMD_KIND_IMAGE, LLMD_FLEET (provider
local: the KWOK node file, default e2e/fleet.yaml), LLMD_UP_TIMEOUT (seconds)
EOF
}

CLUSTER="${LLMD_CLUSTER:-llmd}"
PROVIDER="${LLMD_CLUSTER_PROVIDER:-local}"
STATE="$CACHE/clusters/$CLUSTER"
PKI="$STATE/pki"
KUBECONFIG_FILE="$STATE/kubeconfig"
AUDIT_LOG="$STATE/audit/audit.log"
STATE_VERSION=2
KUBECTL="$BIN_DIR/kubectl"
FLEET="${LLMD_FLEET:-$E2E_DIR/fleet.yaml}"
validate_name
[[ "$STATE" != *[[:space:]]* ]] || die "LLMD_CACHE must not contain white space ($CACHE)"

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  up)
    start=$SECONDS
    lock_cluster
    case "$PROVIDER" in
      local)
        [[ "$(provider)" == local ]] || die "cluster '$CLUSTER' exists with provider $(provider); run '$0 down' first"
        up_local ;;
      kind)
        [[ "$(provider)" == kind ]] || die "cluster '$CLUSTER' exists with provider $(provider); run '$0 down' first"
        up_kind ;;
      *) die "unknown LLMD_CLUSTER_PROVIDER '$PROVIDER' (local or kind)" ;;
    esac
    if [[ "$PROVIDER" == local ]]; then
      log "cluster '$CLUSTER' is up ($((SECONDS - start))s); audit log: $AUDIT_LOG"
    else
      log "cluster '$CLUSTER' ($PROVIDER) is up ($((SECONDS - start))s)"
    fi
    echo "$KUBECONFIG_FILE"
    ;;
  down)
    lock_cluster
    if [[ -d "$STATE" ]]; then
      case "$(provider)" in
        kind) down_kind ;;
        *) down_local ;;
      esac
      rm -rf "$STATE"
      log "cluster '$CLUSTER' removed"
    else
      log "cluster '$CLUSTER' does not exist"
    fi
    ;;
  status)
    [[ -d "$STATE" ]] || { echo "cluster '$CLUSTER': down (no state in $STATE)"; exit 1; }
    if [[ "$(provider)" == kind ]]; then
      if command -v kind >/dev/null && kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
        echo "cluster '$CLUSTER' (kind): up"; echo "kubeconfig: $KUBECONFIG_FILE"; exit 0
      fi
      echo "cluster '$CLUSTER' (kind): down"; exit 1
    fi
    if out="$(status_local)"; then
      echo "cluster '$CLUSTER' (local, Kubernetes $K8S_VERSION): up"
      rc=0
    else
      echo "cluster '$CLUSTER' (local, Kubernetes $K8S_VERSION): DOWN or degraded (run: $0 up)"
      rc=1
    fi
    echo "$out"
    echo "kubeconfig: $KUBECONFIG_FILE"
    echo "audit log:  $AUDIT_LOG"
    echo "logs:       $STATE/logs/"
    echo "binaries:   $BIN_DIR"
    exit "$rc"
    ;;
  kubeconfig)
    [[ -f "$KUBECONFIG_FILE" ]] || die "cluster '$CLUSTER' is not up (run: $0 up)"
    echo "$KUBECONFIG_FILE" ;;
  audit-log)
    [[ "$(provider)" == local ]] || die "the audit log is only configured for provider local"
    echo "$AUDIT_LOG" ;;
  bin-dir) echo "$BIN_DIR" ;;
  build) ensure_binaries ;;
  kubectl)
    [[ -f "$KUBECONFIG_FILE" ]] || die "cluster '$CLUSTER' is not up (run: $0 up)"
    if [[ "$(provider)" == kind ]] && command -v kubectl >/dev/null; then KUBECTL="$(command -v kubectl)"; fi
    [[ -x "$KUBECTL" ]] || die "kubectl is not built yet (run: $0 build)"
    exec "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@" ;;
  user-kubeconfig)
    [[ $# -ge 1 ]] || die "usage: $0 user-kubeconfig NAME [GROUP...]"
    [[ "$(provider)" == local ]] || die "user-kubeconfig needs provider local"
    load_ports
    user="$1"; shift
    [[ "$user" =~ ^[A-Za-z0-9:._@-]+$ ]] || die "bad user name '$user'"
    orgs=""
    for g in "$@"; do orgs+="/O=$g"; done
    certname="user-$(printf '%s' "$user $*" | sha1sum | cut -c1-12)"
    file="$STATE/users/$certname.kubeconfig"
    if [[ ! -f "$file" ]]; then
      mkdir -p "$STATE/users"
      sign "$certname" "$user" "${orgs#/O=}"
      write_kubeconfig "$file" "$certname" "$user"
    fi
    echo "$file" ;;
  -h | --help | help) usage ;;
  *) usage; exit 2 ;;
esac
