#!/usr/bin/env python3
"""Cross-implementation interop check: a Python grpcio client against a running sorcha-peer.

Stubs are generated from the repository's .proto files at run time (into a temp dir, never
committed), so this client sees exactly the wire contract a third-party implementation would.
It calls PeerDiscovery, PeerHeartbeat and grpc.health.v1 on `--target`, prints one JSON object
of what it saw on stdout, and exits 1 with one line per mismatch on stderr.

Exit codes: 0 all checks passed; 1 a check failed; 2 bad arguments or stub generation failed;
3 the Python gRPC packages are missing (see tests/interop/README.md).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

EXIT_MISMATCH = 1
EXIT_SETUP = 2
EXIT_MISSING_MODULES = 3
PIP_HINT = "pip install -r tests/interop/requirements.txt  (grpcio grpcio-tools grpcio-health-checking)"

# Before grpc is imported: its C core reads the verbosity once, and INFO lines would clutter
# stderr, which the Rust test shows on failure.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

try:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_tools import protoc
except ImportError as missing:
    print(
        f"MISSING PYTHON MODULES for the interop test: {missing}. Install them with: {PIP_HINT}",
        file=sys.stderr,
    )
    sys.exit(EXIT_MISSING_MODULES)

PROTO_FILES = [
    "sorcha/peer/discovery.proto",
    "sorcha/peer/heartbeat.proto",
    "sorcha/peer/transaction.proto",
    "sorcha/peer/communication.proto",
]
HEALTH_SERVICES = [
    "",
    "sorcha.peer.discovery.PeerDiscovery",
    "sorcha.peer.heartbeat.PeerHeartbeat",
    "sorcha.peer.transaction.TransactionDistribution",
    "sorcha.peer.communication.PeerCommunication",
]
# Per-call deadline: a debug build on a loaded 2-core machine answers well within this.
RPC_TIMEOUT_S = 10.0
# How far a node's clock (same machine) may be from ours; also tells milliseconds from seconds.
CLOCK_SLACK_MS = 60_000
PYTHON_PEER = "python-peer"
PYTHON_PEER_PORT = 5999
PYTHON_PROTOCOLS = ["GrpcStream", "Grpc", "Rest"]
NOT_REGISTERED = "Peer not registered"


class Checks:
    """Collects mismatches so one run reports all of them, not just the first."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def expect(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
        return ok

    def step(self, name: str, results: dict[str, Any], call: Callable[[], Any]) -> None:
        """Runs one step; an exception is a failure of that step, and the next steps still run."""
        try:
            results[name] = call()
        except grpc.RpcError as e:
            self.failures.append(f"{name}: unexpected gRPC error {e.code().name}: {e.details()}")
            results[name] = {"error": e.code().name, "details": e.details()}
        except Exception as e:  # noqa: BLE001 - report anything a malformed answer raises
            self.failures.append(f"{name}: {type(e).__name__}: {e}")
            results[name] = {"error": type(e).__name__, "details": str(e)}


def generate_stubs(proto_dir: Path, out_dir: Path) -> None:
    """Runs protoc (bundled with grpcio-tools) and makes the generated modules importable."""
    well_known = Path(protoc.__file__).parent / "_proto"
    for name in PROTO_FILES:
        if not (proto_dir / name).is_file():
            raise SystemExit(f"proto file {proto_dir / name} not found (is --proto-dir right?)")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *PROTO_FILES,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"grpc_tools.protoc failed on {proto_dir}")
    sys.path.insert(0, str(out_dir))


def now_ms() -> int:
    return int(time.time() * 1000)


def is_recent_ms(value: int) -> bool:
    return abs(value - now_ms()) <= CLOCK_SLACK_MS


def is_recent_s(value: int) -> bool:
    """Seconds, as Sorcha's C# peers read Ping and PeerInfo.last_seen."""
    return abs(value * 1000 - now_ms()) <= CLOCK_SLACK_MS


def python_peer_info(pb: Any, port: int) -> Any:
    return pb.PeerInfo(
        peer_id=PYTHON_PEER,
        address="127.0.0.1",
        port=port,
        supported_protocols=PYTHON_PROTOCOLS,
        # Seconds, as Sorcha's C# peers send it (the node accepts milliseconds too).
        last_seen=int(time.time()),
        capabilities=pb.PeerCapabilities(
            supports_streaming=True,
            supports_transaction_distribution=True,
            max_transaction_size=1_048_576,
        ),
        is_seed_node=False,
    )


def check_ping(disc: Any, stub: Any, c: Checks) -> dict[str, Any]:
    answer = stub.Ping(disc.PingRequest(peer_id=PYTHON_PEER), timeout=RPC_TIMEOUT_S)
    status = disc.PeerStatus.Name(answer.status)
    c.expect(answer.peer_id != "", "Ping: peer_id is empty")
    c.expect(
        is_recent_s(answer.timestamp),
        f"Ping: timestamp {answer.timestamp} is not seconds within a minute of {now_ms()} ms",
    )
    c.expect(status == "ONLINE", f"Ping: status {status}, expected ONLINE")
    return {"peer_id": answer.peer_id, "timestamp": answer.timestamp, "status": status}


def check_register(disc: Any, stub: Any, c: Checks) -> dict[str, Any]:
    request = disc.RegisterPeerRequest(peer_info=python_peer_info(disc, PYTHON_PEER_PORT))
    answer = stub.RegisterPeer(request, timeout=RPC_TIMEOUT_S)
    c.expect(answer.success, f"RegisterPeer: success false, message {answer.message!r}")
    return {"success": answer.success, "message": answer.message}


def check_peer_list(disc: Any, stub: Any, node_id: str, c: Checks) -> dict[str, Any]:
    request = disc.PeerListRequest(requesting_peer_id="someone-else", max_peers=0)
    answer = stub.GetPeerList(request, timeout=RPC_TIMEOUT_S)
    ids = [p.peer_id for p in answer.peers]
    c.expect(
        answer.total_peers >= len(answer.peers),
        f"GetPeerList: total_peers {answer.total_peers} < {len(answer.peers)} peers returned",
    )
    c.expect(len(ids) == len(set(ids)), f"GetPeerList: duplicate peer ids {ids}")
    c.expect(node_id not in ids, f"GetPeerList: the node lists itself ({node_id})")
    mine = [p for p in answer.peers if p.peer_id == PYTHON_PEER]
    entry: dict[str, Any] = {}
    if c.expect(len(mine) == 1, f"GetPeerList: {PYTHON_PEER} not in {ids}"):
        p = mine[0]
        entry = {
            "address": p.address,
            "port": p.port,
            "supported_protocols": list(p.supported_protocols),
            "last_seen": p.last_seen,
            "capabilities": {
                "supports_streaming": p.capabilities.supports_streaming,
                "supports_transaction_distribution": p.capabilities.supports_transaction_distribution,
                "max_transaction_size": p.capabilities.max_transaction_size,
            },
        }
        c.expect(p.address == "127.0.0.1", f"GetPeerList: address {p.address!r}")
        c.expect(p.port == PYTHON_PEER_PORT, f"GetPeerList: port {p.port}")
        c.expect(
            sorted(p.supported_protocols) == sorted(PYTHON_PROTOCOLS),
            f"GetPeerList: supported_protocols {list(p.supported_protocols)}, sent {PYTHON_PROTOCOLS}",
        )
        c.expect(
            is_recent_s(p.last_seen),
            f"GetPeerList: last_seen {p.last_seen} is not seconds within a minute of {now_ms()} ms",
        )
        c.expect(p.HasField("capabilities"), "GetPeerList: capabilities missing")
    return {"total_peers": answer.total_peers, "peer_ids": ids, "python_peer": entry}


def heartbeat_request(hb: Any, peer_id: str, sequence: int) -> Any:
    return hb.PeerHeartbeatRequest(
        peer_id=peer_id,
        timestamp=now_ms(),
        sequence_number=sequence,
        metrics=hb.PeerHealthMetrics(active_connections=1, uptime_seconds=5),
    )


def heartbeat_summary(answer: Any) -> dict[str, Any]:
    return {
        "success": answer.success,
        "peer_id": answer.peer_id,
        "timestamp": answer.timestamp,
        "message": answer.message,
    }


def check_heartbeat_answer(name: str, answer: Any, node_id: str, c: Checks) -> None:
    c.expect(answer.peer_id == node_id, f"{name}: peer_id {answer.peer_id!r}, Ping said {node_id!r}")
    c.expect(
        is_recent_ms(answer.timestamp),
        f"{name}: timestamp {answer.timestamp} is not milliseconds within a minute of {now_ms()}",
    )


def check_heartbeat_unknown(hb: Any, stub: Any, node_id: str, c: Checks) -> dict[str, Any]:
    answer = stub.SendHeartbeat(heartbeat_request(hb, "stranger-peer", 1), timeout=RPC_TIMEOUT_S)
    c.expect(not answer.success, "SendHeartbeat (unknown peer): success true, expected false")
    c.expect(
        answer.message == NOT_REGISTERED,
        f"SendHeartbeat (unknown peer): message {answer.message!r}, expected {NOT_REGISTERED!r}",
    )
    check_heartbeat_answer("SendHeartbeat (unknown peer)", answer, node_id, c)
    return heartbeat_summary(answer)


def check_heartbeat_known(hb: Any, stub: Any, node_id: str, c: Checks) -> dict[str, Any]:
    answer = stub.SendHeartbeat(heartbeat_request(hb, PYTHON_PEER, 2), timeout=RPC_TIMEOUT_S)
    c.expect(answer.success, f"SendHeartbeat ({PYTHON_PEER}): success false, message {answer.message!r}")
    check_heartbeat_answer(f"SendHeartbeat ({PYTHON_PEER})", answer, node_id, c)
    return heartbeat_summary(answer)


def check_heartbeat_stream(hb: Any, stub: Any, node_id: str, c: Checks) -> dict[str, Any]:
    requests = [heartbeat_request(hb, PYTHON_PEER, seq) for seq in (3, 4, 5)]
    answers = list(stub.StreamHeartbeat(iter(requests), timeout=RPC_TIMEOUT_S))
    c.expect(len(answers) == 3, f"StreamHeartbeat: {len(answers)} answers to 3 requests")
    for i, answer in enumerate(answers):
        c.expect(answer.success, f"StreamHeartbeat[{i}]: success false, message {answer.message!r}")
        check_heartbeat_answer(f"StreamHeartbeat[{i}]", answer, node_id, c)
    return {"answers": len(answers), "all_success": all(a.success for a in answers)}


def check_register_port_zero(disc: Any, stub: Any, c: Checks) -> dict[str, Any]:
    request = disc.RegisterPeerRequest(peer_info=python_peer_info(disc, 0))
    try:
        answer = stub.RegisterPeer(request, timeout=RPC_TIMEOUT_S)
    except grpc.RpcError as e:
        code, details = e.code().name, e.details() or ""
        c.expect(code == "INVALID_ARGUMENT", f"RegisterPeer(port 0): status {code}, expected INVALID_ARGUMENT")
        c.expect("peer_info.port" in details, f"RegisterPeer(port 0): details {details!r} do not name peer_info.port")
        return {"code": code, "details": details}
    c.failures.append(
        f"RegisterPeer(port 0): answered OK (success={answer.success}, message={answer.message!r}), "
        "expected INVALID_ARGUMENT"
    )
    return {"code": "OK", "success": answer.success, "message": answer.message}


def check_health(channel: grpc.Channel, c: Checks) -> dict[str, Any]:
    stub = health_pb2_grpc.HealthStub(channel)
    seen: dict[str, str] = {}
    for service in HEALTH_SERVICES:
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT_S)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        seen[service] = status
        c.expect(status == "SERVING", f"Health.Check({service!r}): {status}, expected SERVING")
    return seen


def run(target: str) -> tuple[dict[str, Any], list[str]]:
    disc = importlib.import_module("sorcha.peer.discovery_pb2")
    disc_grpc = importlib.import_module("sorcha.peer.discovery_pb2_grpc")
    hb = importlib.import_module("sorcha.peer.heartbeat_pb2")
    hb_grpc = importlib.import_module("sorcha.peer.heartbeat_pb2_grpc")

    c = Checks()
    results: dict[str, Any] = {"target": target, "grpcio": grpc.__version__}
    # An http_proxy in the environment must not take loopback traffic elsewhere.
    options = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(target, options=options) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            return results, [f"could not connect to {target} within {RPC_TIMEOUT_S}s"]
        discovery = disc_grpc.PeerDiscoveryStub(channel)
        heartbeat = hb_grpc.PeerHeartbeatStub(channel)

        c.step("ping", results, lambda: check_ping(disc, discovery, c))
        node_id = results["ping"].get("peer_id", "")
        c.step("register", results, lambda: check_register(disc, discovery, c))
        c.step("peer_list", results, lambda: check_peer_list(disc, discovery, node_id, c))
        c.step("heartbeat_unknown", results, lambda: check_heartbeat_unknown(hb, heartbeat, node_id, c))
        c.step("heartbeat_registered", results, lambda: check_heartbeat_known(hb, heartbeat, node_id, c))
        c.step("heartbeat_stream", results, lambda: check_heartbeat_stream(hb, heartbeat, node_id, c))
        c.step("register_port_zero", results, lambda: check_register_port_zero(disc, discovery, c))
        c.step("health", results, lambda: check_health(channel, c))
    return results, c.failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the node's peer (gRPC) port")
    default_protos = Path(__file__).resolve().parents[2] / "proto"
    parser.add_argument("--proto-dir", type=Path, default=default_protos, help="root of the .proto tree")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sorcha-interop-") as out:
        try:
            generate_stubs(args.proto_dir.resolve(), Path(out))
        except SystemExit as e:
            print(f"interop setup failed: {e}", file=sys.stderr)
            return EXIT_SETUP
        results, failures = run(args.target)

    results["ok"] = not failures
    results["failures"] = failures
    print(json.dumps(results, indent=2, sort_keys=True))
    for failure in failures:
        print(f"INTEROP MISMATCH: {failure}", file=sys.stderr)
    return EXIT_MISMATCH if failures else 0


if __name__ == "__main__":
    sys.exit(main())
