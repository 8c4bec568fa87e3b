#!/usr/bin/env python3
"""Container health check for GANfolk images (Docker HEALTHCHECK / compose).

    ganfolk-healthcheck                  gRPC health (grpc.health.v1) on 127.0.0.1:$GANFOLK_GRPC_PORT
    ganfolk-healthcheck grpc [PORT]      the same, on an explicit port
    ganfolk-healthcheck jsonrpc URL      an EVM node answers eth_chainId (the anvil image)

Exit status 0 when healthy (SERVING / a chain id came back), 1 otherwise. A service
reports NOT_SERVING while its model loads, so the check stays red until it is ready.
Plaintext gRPC only: with GANFOLK_TLS_* set, rely on the orchestrator's probes instead.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request


def grpc_ok(port: int, timeout: float = 3.0) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
    except grpc.RpcError as exc:
        print(f"unhealthy: {exc.code().name}", file=sys.stderr)
        return False
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(
            f"unhealthy: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}", file=sys.stderr
        )
        return False
    return True


def jsonrpc_ok(url: str, timeout: float = 3.0) -> bool:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return "result" in json.load(reply)
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return False


def main(argv: list[str]) -> int:
    kind = argv[0] if argv else "grpc"
    if kind == "grpc":
        port = int(argv[1]) if len(argv) > 1 else int(os.environ.get("GANFOLK_GRPC_PORT", "50051"))
        return 0 if grpc_ok(port) else 1
    if kind == "jsonrpc":
        return 0 if jsonrpc_ok(argv[1] if len(argv) > 1 else "http://127.0.0.1:8545") else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
