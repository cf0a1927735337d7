#!/usr/bin/env bash
# Install everything TokenFactory's demo and tests need, from the project's own files:
#   - Debian's Prometheus (apt), when /usr/bin/prometheus is missing (its promtool; the tests run the
#     Prometheus v3 that build-binaries.sh builds, which has kubernetes_sd_configs)
#   - a Python virtual environment in .venv with the package and its test dependencies
#   - the local control plane's binaries, built from Go modules into ~/.cache/tokenfactory/bin
#     (etcd, Kubernetes, kwok, helm, Prometheus)
# Safe to re-run: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  log "installing Prometheus (Debian package)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package may start a system service on :9090; the project runs its own instances.
  ($SUDO systemctl disable --now prometheus 2>/dev/null || $SUDO service prometheus stop 2>/dev/null || true) >/dev/null 2>&1
fi

PY="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv ($($PY --version))"
  $PY -m venv .venv
fi
if ! .venv/bin/python -c 'import tokenfactory, pytest, hypothesis' 2>/dev/null || [[ pyproject.toml -nt .venv/.installed ]]; then
  log "installing the tokenfactory package and test dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch .venv/.installed
fi

log "building (or reusing) the local control plane's binaries"
bash operator/tokenfactory/localcluster/build-binaries.sh
