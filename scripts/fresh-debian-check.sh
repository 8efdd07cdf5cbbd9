#!/usr/bin/env bash
# Proves that `bash scripts/test.sh --setup-only` works on a fresh Debian with Debian's own
# python: builds a minimal Debian rootfs (mmdebstrap, minbase + python3, nothing else: no pip,
# no venv module, no systemd), copies this checkout's tracked scripts/, tests/ and proto/ into
# it, and runs the setup step there twice under chroot (the second run must install nothing).
# Root only. Usage: bash scripts/fresh-debian-check.sh [SUITE] (default bookworm).
#
# A machine whose HTTPS goes through an intercepting proxy trusts that proxy's CA; the rootfs
# gets the same trust (the CA files in /usr/local/share/ca-certificates and /etc/pip.conf, if
# the host has them), as a fresh machine on that network would be set up.
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE="${1:-bookworm}"
ROOT="$(mktemp -d /var/tmp/sorcha-fresh-debian.XXXXXX)"
cleanup() {
  for m in dev/pts dev proc; do umount "$ROOT/$m" 2>/dev/null || true; done
  rm -rf "$ROOT"
}
trap cleanup EXIT

command -v mmdebstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap
echo "== mmdebstrap $SUITE (minbase + python3) into $ROOT"
mmdebstrap --quiet --variant=minbase --include=python3 "$SUITE" "$ROOT"

mkdir -p "$ROOT/src"
git ls-files -z scripts tests proto | xargs -0 tar -cf - | tar -C "$ROOT/src" -xf -
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
fi
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOT/etc/pip.conf"
mount --bind /proc "$ROOT/proc"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"

chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root bash -euc '
  # The CA files, if any, reach the system bundle once ca-certificates arrives with
  # python3-venv; until then apt speaks plain HTTP to the Debian mirror.
  cd /src
  echo "== in the chroot: $(. /etc/os-release; echo "$PRETTY_NAME"), $(python3 --version) at $(command -v python3)"
  if python3 -m pip --version >/dev/null 2>&1; then echo "pip is installed system-wide: not a fresh Debian"; exit 1; fi
  bash scripts/test.sh --setup-only
  echo "== second run (must install nothing)"
  bash scripts/test.sh --setup-only
  .venv-test/bin/python -c "import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2; print(\"grpcio\", grpc.__version__, \"in\", __import__(\"sys\").prefix)"
  if python3 -m pip --version >/dev/null 2>&1; then echo "pip appeared system-wide"; exit 1; fi
  echo "FRESH DEBIAN SETUP: OK"
'
