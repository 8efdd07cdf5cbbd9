#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine with the Rust toolchain
# (idempotent: a second run installs nothing), then runs every check CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# The interop test drives the node from a second gRPC implementation (Python grpcio).
# Pinned in tests/interop/requirements.txt.
if ! python3 -c 'import grpc, grpc_tools, grpc_health' 2>/dev/null; then
  echo "== installing Python test packages (tests/interop/requirements.txt)"
  python3 -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
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
