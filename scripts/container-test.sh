#!/usr/bin/env bash
# The container path end to end, on a machine that reaches Debian's packages but no image
# registry: builds base images from Debian packages (mmdebstrap + podman import), builds the
# sorcha-peer image from the Containerfile on them, runs deploy/compose.yaml (a bootstrap node,
# 4 peers and Prometheus) with podman-compose, and checks that every node turns healthy and
# online, that a transaction submitted on one node reaches all five, and that Prometheus
# scrapes all five. Root only; it always tears the network down.
#
#   bash scripts/container-test.sh                  binary built on the host (BINARY_FROM=prebuilt)
#   bash scripts/container-test.sh --build-in-image release build inside the image build
#
# --build-in-image compiles in a Debian builder image with this host's Rust toolchain and
# cargo registry mounted (offline): a second full release build, ~2x the time on 2 cores.
#
# Podman on these machines (Debian 12, podman 4.3, firecracker VM, hybrid cgroups v1 + v2):
#   - crun refuses to start anything: "setrlimit RLIMIT_NOFILE: Operation not permitted".
#     Podman asks for more open files (and processes) than the container's parent may have;
#     the fix is default_ulimits at or below the host's hard limits (`ulimit -Hn`, and nproc
#     at most 32768 here).
#   - then crun stops at "cgroups in hybrid mode not supported, drop all controllers from
#     cgroupv2" (cgroup2 at /sys/fs/cgroup/unified has the hugetlb controller): runc runs.
# Both go into a containers.conf this script writes and points CONTAINERS_CONF at, so plain
# podman, podman build and podman-compose all use them.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=prebuilt
case "${1:-}" in
  --build-in-image) MODE=build ;;
  "") ;;
  *) echo "usage: bash scripts/container-test.sh [--build-in-image]" >&2; exit 2 ;;
esac

SUITE=bookworm
BASE_IMAGE=localhost/sorcha-base:$SUITE-slim
BUILDER_IMAGE=localhost/sorcha-builder:$SUITE
PROMETHEUS_IMAGE=localhost/sorcha-prometheus:$SUITE
IMAGE=localhost/sorcha-peer:test
PROJECT=sorcha-ct
WORK="$(mktemp -d /var/tmp/sorcha-container-test.XXXXXX)"
START=$SECONDS

step() { echo "== [$((SECONDS - START))s] $*"; }

install_tools() {
  local missing=()
  for tool in podman mmdebstrap runc podman-compose curl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# The settings that let podman start containers here (see the top of this file).
write_containers_conf() {
  local nofile nproc
  nofile=$(ulimit -Hn)
  [ "$nofile" = unlimited ] && nofile=1048576
  nproc=$(ulimit -Hu)
  if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
  cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
EOF
  if [ "$(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then
    printf '[engine]\nruntime = "runc"\n' >>"$WORK/containers.conf"
  fi
  export CONTAINERS_CONF="$WORK/containers.conf"
  step "podman settings: $(tr '\n' ' ' <"$CONTAINERS_CONF")"
}

# An image from Debian packages, made once: import_debian IMAGE "PACKAGES" [--change ...].
import_debian() {
  local image=$1 packages=$2
  shift 2
  if podman image exists "$image"; then
    return
  fi
  step "building $image from Debian packages ($packages)"
  # As Debian's -slim images: no documentation, manual pages or translations.
  nice -n 5 mmdebstrap --quiet --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' "$SUITE" "$WORK/rootfs.tar"
  podman import "$@" "$WORK/rootfs.tar" "$image" >/dev/null
  rm -f "$WORK/rootfs.tar"
}

build_images() {
  import_debian "$BASE_IMAGE" ca-certificates --change 'CMD ["/bin/bash"]'
  import_debian "$PROMETHEUS_IMAGE" prometheus \
    --change 'ENTRYPOINT ["/usr/bin/prometheus"]' --change 'EXPOSE 9090'
  local args=(--format docker --build-arg "BASE=$BASE_IMAGE" -t "$IMAGE" -f Containerfile)
  if [ "$MODE" = prebuilt ]; then
    step "cargo build --release -p sorcha-peer (host)"
    nice -n 5 cargo build --release --locked -p sorcha-peer
    mkdir -p target/container
    strip --strip-debug -o target/container/sorcha-peer target/release/sorcha-peer
    args+=(--build-arg BINARY_FROM=prebuilt --build-arg PREBUILT=target/container/sorcha-peer)
  else
    import_debian "$BUILDER_IMAGE" ca-certificates,gcc,libc6-dev \
      --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV CARGO_HOME=/usr/local/cargo' --change 'ENV CARGO_NET_OFFLINE=true'
    args+=(--build-arg "BUILDER=$BUILDER_IMAGE" --build-arg BINARY_FROM=build
      -v "$(rustc --print sysroot):/usr/local/rust:ro"
      -v "${CARGO_HOME:-$HOME/.cargo}/registry:/usr/local/cargo/registry")
  fi
  step "podman build $IMAGE ($MODE)"
  nice -n 5 podman build "${args[@]}" .
  podman image inspect "$IMAGE" --format 'image {{.Id}}: {{.Size}} bytes, user {{.Config.User}}'
}

compose() {
  SORCHA_PEER_IMAGE=$IMAGE PROMETHEUS_IMAGE=$PROMETHEUS_IMAGE \
    podman-compose -f deploy/compose.yaml -p "$PROJECT" "$@"
}

teardown() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    for c in bootstrap peer1 peer2 peer3 peer4 prometheus; do
      echo "--- logs of $c"
      podman logs --tail 30 "${PROJECT}_${c}_1" 2>&1 || true
    done
  fi
  compose down -v >/dev/null 2>&1 || true
  rm -rf "$WORK"
  echo "== container test: $([ "$rc" = 0 ] && echo PASSED || echo FAILED) in $((SECONDS - START))s"
}

# The node's address on the compose network, reachable from this host.
address_of() {
  podman inspect "${PROJECT}_$1_1" \
    --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}'
}

# wait_for SECONDS DESCRIPTION COMMAND...: retries COMMAND every second.
wait_for() {
  local limit=$1 what=$2
  shift 2
  for _ in $(seq "$limit"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "timed out after ${limit}s: $what" >&2
  return 1
}

online() { curl -sf "http://$1:5080/api/v1/status" | grep -q '"state":"online"'; }
holds() { curl -sf -o /dev/null "http://$1:5080/api/v1/transactions/$2"; }
five_targets_up() {
  [ "$(curl -sf "http://$1:9090/api/v1/targets" | grep -o '"health":"up"' | wc -l)" = 5 ]
}

check_network() {
  local nodes=(bootstrap peer1 peer2 peer3 peer4) ip hash token
  declare -A ips
  for n in "${nodes[@]}"; do ips[$n]=$(address_of "$n"); done
  for n in "${nodes[@]}"; do
    wait_for 90 "$n ready" curl -sf "http://${ips[$n]}:5080/health/ready"
  done
  step "all five ready; waiting for online (min_healthy_peers 3)"
  for n in "${nodes[@]}"; do wait_for 120 "$n online" online "${ips[$n]}"; done
  podman healthcheck run "${PROJECT}_bootstrap_1"
  step "all five online; the image's HEALTHCHECK passes"
  # From this host the node sees a remote caller: submissions need its admin token.
  token=$(podman exec "${PROJECT}_peer4_1" cat /data/admin.token)
  hash=$(curl -sf -X POST -H "Authorization: Bearer $token" \
    --data-binary "container test $(date +%s%N)" "http://${ips[peer4]}:5080/api/v1/transactions" |
    sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p')
  [ -n "$hash" ] || { echo "no hash from peer4" >&2; return 1; }
  for n in "${nodes[@]}"; do wait_for 60 "$hash on $n" holds "${ips[$n]}" "$hash"; done
  step "transaction $hash submitted on peer4 reached all five nodes"
  ip=$(address_of prometheus)
  wait_for 90 "Prometheus scraping five targets" five_targets_up "$ip"
  step "Prometheus scrapes all five nodes"
}

install_tools
trap teardown EXIT
write_containers_conf
build_images
step "podman-compose up"
compose down -v >/dev/null 2>&1 || true
compose up -d
check_network
