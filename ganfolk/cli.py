"""`ganfolk` command line: serve a service, bring the local stack up or down."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from ganfolk.runtime.service import SERVICE_MODULES, load_definition, run_service
from ganfolk.runtime.settings import ConfigError, load_settings


def _serve(args: argparse.Namespace) -> int:
    definition = load_definition(args.service)
    settings = load_settings(
        definition.settings_cls,
        service=args.service,
        grpc_host=args.host,
        grpc_port=args.port,
        nats_url=args.nats_url,
        store_url=args.store_url,
        metrics_port=args.metrics_port,
        worker_enabled=False if args.no_worker else None,
    )
    asyncio.run(run_service(definition, settings))
    return 0


def _up(args: argparse.Namespace) -> int:
    from ganfolk import local

    stack = local.up(
        args.services or None,
        state_dir=args.state_dir,
        store=args.store,
        timeout=args.timeout,
        allow_random_weights=args.allow_random_weights,
    )
    print(stack.describe())
    return 0


def _down(args: argparse.Namespace) -> int:
    from ganfolk import local

    print(local.down(state_dir=args.state_dir))
    return 0


def _status(args: argparse.Namespace) -> int:
    from ganfolk import local

    report, healthy = local.status(state_dir=args.state_dir)
    print(report)
    return 0 if healthy else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganfolk", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one service (gRPC + its NATS stage workers)")
    serve.add_argument("service", choices=sorted(SERVICE_MODULES))
    serve.add_argument("--host", help="gRPC bind host (GANFOLK_GRPC_HOST)")
    serve.add_argument("--port", type=int, help="gRPC port, 0 for any (GANFOLK_GRPC_PORT)")
    serve.add_argument("--nats-url", help="NATS URL (GANFOLK_NATS_URL)")
    serve.add_argument("--store-url", help="object store URL (GANFOLK_STORE_URL)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus port (GANFOLK_METRICS_PORT)")
    serve.add_argument("--no-worker", action="store_true", help="serve gRPC only, no NATS stage worker")
    serve.set_defaults(func=_serve)

    for name, func, text in (
        ("up", _up, "start nats-server, the object store and services in the background"),
        ("down", _down, "stop the local stack"),
        ("status", _status, "show the local stack's processes and health"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--state-dir", default=None, help="state directory (GANFOLK_STATE_DIR, default .state)"
        )
        if name == "up":
            p.add_argument("services", nargs="*", help="services to start (default: every available one)")
            p.add_argument("--store", choices=("file", "s3"), default="file", help="object store backend")
            p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for health")
            p.add_argument(
                "--allow-random-weights",
                action="store_true",
                help="demo mode: services without weights start with random ones (marked in provenance)",
            )
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"ganfolk: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
