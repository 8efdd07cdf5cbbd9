#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine with the Rust toolchain
# (idempotent: a second run installs nothing), then runs every check CI runs.
#
#   bash scripts/test.sh              set up, then fmt, clippy and every test
#   bash scripts/test.sh --setup-only set up only (what a fresh machine needs), then stop
#
# Nothing is installed system-wide with pip: Debian's python refuses that (PEP 668), and the
# test packages belong to this checkout. They go into a virtual environment, .venv-test/
# (SORCHA_TEST_VENV overrides it), made with `python3 -m venv` (SORCHA_TEST_PYTHON overrides
# the interpreter). Debian ships venv's ensurepip separately: python3-venv is installed with
# apt-get when, and only when, it is missing. The interop test finds the venv's python through
# SORCHA_INTEROP_PYTHON, exported below (and looks for .venv-test/ itself when run alone).
set -euo pipefail
cd "$(dirname "$0")/.."

SETUP_ONLY=0
case "${1:-}" in
  --setup-only) SETUP_ONLY=1 ;;
  "") ;;
  *) echo "usage: bash scripts/test.sh [--setup-only]" >&2; exit 2 ;;
esac

VENV="${SORCHA_TEST_VENV:-$PWD/.venv-test}"
PYTHON="${SORCHA_TEST_PYTHON:-python3}"
REQUIREMENTS=tests/interop/requirements.txt
# The venv remembers which requirements it was made from; a changed pin rebuilds it.
STAMP="$VENV/.requirements.sha256"

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: need the Debian package(s) $*; install them (apt-get install $*) and run again" >&2
    exit 1
  fi
  echo "== apt-get install $*"
  # One update per run, and only when something is missing.
  if [ -z "${APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Creates the venv if it is missing or broken; installs python3-venv first if venv cannot work.
make_venv() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    return
  fi
  command -v "$PYTHON" >/dev/null 2>&1 || apt_install python3
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    # Debian: "ensurepip is not available" until python3-venv (python3.X-venv) is installed.
    apt_install python3-venv
    "$PYTHON" -m venv "$VENV"
  fi
}

setup_python() {
  local want
  want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
    && "$VENV/bin/python" -c 'import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2' 2>/dev/null; then
    echo "== Python test packages: up to date in $VENV"
    return
  fi
  make_venv
  echo "== installing Python test packages into $VENV ($REQUIREMENTS)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  "$VENV/bin/python" -c 'import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2'
  echo "$want" >"$STAMP"
}

# The systemd unit test runs `systemd-analyze verify` (Debian package systemd).
setup_systemd_analyze() {
  command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
}

setup_python
setup_systemd_analyze
export SORCHA_INTEROP_PYTHON="$VENV/bin/python"
echo "== setup done (SORCHA_INTEROP_PYTHON=$SORCHA_INTEROP_PYTHON)"
if [ "$SETUP_ONLY" = 1 ]; then
  exit 0
fi

# The dashboard's browser test drives Debian's chromium through chromedriver (fantoccini).
# Installed only when missing; under CI the test fails if they are absent, never skips.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "== installing chromium and chromium-driver (browser test)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked
