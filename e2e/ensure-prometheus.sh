#!/usr/bin/env bash
# Print the path of a Prometheus server binary, installing Debian's package when there is none.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then command -v prometheus; exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "prometheus is not installed; install Debian's 'prometheus' package (apt-get install prometheus)" >&2
  exit 1
fi
echo "[prometheus] installing Debian's prometheus package" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends prometheus >&2
# The package's service is not wanted: tests start their own server with their own configuration.
if pgrep -x prometheus >/dev/null 2>&1 && command -v service >/dev/null 2>&1; then service prometheus stop >&2 || true; fi
command -v prometheus
