#!/usr/bin/env bash
# Installs everything moescale needs on a Debian machine: the Debian packages
# and a project venv (.venv) holding the pinned torch wheel, whose LibTorch the
# build links. Idempotent: when everything is in place it downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
APT_PACKAGES=(
  build-essential cmake ninja-build git pkg-config python3 python3-venv
  libceres-dev libeigen3-dev libsqlite3-dev libcli11-dev libfmt-dev
  libtomlplusplus-dev nlohmann-json3-dev libopenblas0-pthread
  libgtest-dev libgmock-dev libbenchmark-dev gnuplot-nox dict-gcide zlib1g-dev
  # the PostgreSQL store: libpq to build it, the server for its tests
  libpq-dev postgresql
  slurm-wlm munge  # slurm_tests start their own one-node cluster (own ports, socket)
)

say() { [ -n "${MOESCALE_QUIET:-}" ] || echo "setup: $*" >&2; }

missing_packages() {
  local p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

install_debian_packages() {
  local missing
  missing=$(missing_packages)
  [ -z "$missing" ] && return 0
  say "installing Debian packages: $(echo $missing)"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
}

venv_ready() {
  [ -x .venv/bin/python ] &&
    .venv/bin/python - "$TORCH_VERSION" <<'PY' 2>/dev/null
import sys, torch, numpy, scipy
sys.exit(0 if torch.__version__.split("+")[0] == sys.argv[1] else 1)
PY
}

install_venv() {
  venv_ready && return 0
  say "creating .venv with torch==$TORCH_VERSION (first run downloads a few GB)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check \
    "torch==$TORCH_VERSION" numpy scipy
  venv_ready || { echo "error: torch $TORCH_VERSION did not import from .venv" >&2; exit 1; }
}

install_debian_packages
install_venv
say "ready"
