#!/usr/bin/env bash
# Print the path of a helm binary, building it from the Go module proxy when it is missing:
#   go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION  into  $LLMD_CACHE/bin/helm-$HELM_VERSION/
# The first build takes a few minutes; later calls return at once. Progress goes to stderr; the last
# line on stdout is the path.
set -euo pipefail

HELM_VERSION="${LLMD_HELM_VERSION:-v3.22.0}"
CACHE="${LLMD_CACHE:-$HOME/.cache/llmd-operator}"
DIR="$CACHE/bin/helm-$HELM_VERSION"
HELM="$DIR/helm"

if [[ -x "$HELM" ]]; then
  echo "$HELM"
  exit 0
fi
command -v go >/dev/null || { echo "ensure-helm: go is not installed; cannot build helm" >&2; exit 1; }

mkdir -p "$DIR"
# One builder at a time (tests may run in parallel).
exec 9>"$DIR/.lock"
flock 9
if [[ ! -x "$HELM" ]]; then
  echo "ensure-helm: building helm $HELM_VERSION with $(go version | cut -d' ' -f3) (a few minutes)..." >&2
  start=$SECONDS
  # Like helm's Makefile: stamp the version, and the Kubernetes version of its client-go for the
  # default capabilities (`helm template`/`lint` otherwise assume Kubernetes 1.20).
  gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  k8s_minor="$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod" | head -1)"
  [[ -n "$k8s_minor" ]] || k8s_minor=30
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
  done
  GOBIN="$DIR.tmp" GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0 \
    go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  mv "$DIR.tmp/helm" "$HELM"
  rmdir "$DIR.tmp"
  echo "ensure-helm: built helm $HELM_VERSION in $((SECONDS - start))s" >&2
fi
echo "$HELM"
