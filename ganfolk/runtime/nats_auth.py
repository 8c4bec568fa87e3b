"""nats-server authorization generated from the service catalog: one user per service.

Each stage service may consume only its own stages' tasks and publish only events (and its
stages' dead letters); only the coordinator publishes tasks and owns the JetStream topology
(streams, buckets). A compromised or misbehaving worker therefore cannot queue a ``mint``
task and spend the minting key. The lists are the smallest that the real stack runs with:

* a worker fetches from its own durable consumer (``$JS.API.CONSUMER.MSG.NEXT``), acks,
  naks and heartbeats its own deliveries (``$JS.ACK.<stream>.<its consumer>.>``), creates
  or reads only its own consumer, reads stream info (not create/update: a stream update
  could republish an event subject onto ``ganfolk.tasks.mint``), moves its stage's dead
  tasks (``$JS.API.STREAM.MSG.GET/DELETE.GANFOLK_TASKS``), watches and reads the cancel
  bucket, and writes its own key of the services bucket;
* every user subscribes only under its own inbox prefix (``_INBOX.<user>.>``, which
  :func:`ganfolk.runtime.jetstream.connect` sets), so no service reads another's replies.

Two users are not services: ``train``, which training runs report progress as (publish
``ganfolk.train.>``, read and write entries of the ``ganfolk_train_runs`` bucket, read stream
info; the coordinator owns stream ``GANFOLK_TRAIN``, see :mod:`ganfolk.runtime.train_topology`),
and ``viewer``, which ``ganfolk train list|status|watch`` reads that registry as (read only).

``python -m ganfolk.runtime.nats_auth authorization`` prints the ``authorization`` block
with ``$GANFOLK_NATS_PASSWORD_<SERVICE>`` references that nats-server resolves from its
environment; ``... sync`` writes it into Compose's deploy/nats/auth.conf and Kubernetes'
nats-config ConfigMap (a test keeps both in step with the catalog); ``... env`` prints fresh
random passwords for them.
The local stack (``ganfolk up``) renders it with literal passwords generated per run.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ganfolk.runtime import jetstream as js
from ganfolk.runtime import train_topology as train
from ganfolk.runtime.catalog import SERVICES, Stage

COORDINATOR = "coordinator"
# Training runs report progress as this user; `ganfolk train list|status|watch` reads as VIEWER.
TRAIN = "train"
VIEWER = "viewer"


@dataclass(frozen=True)
class Permissions:
    """Subjects a NATS user may publish to and subscribe to (everything else is denied)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def service_users() -> list[str]:
    """Services that connect to NATS: every stage service and the coordinator."""
    return [e.name for e in SERVICES.values() if e.stages or e.name == COORDINATOR]


def nats_users() -> list[str]:
    """Every NATS user: the services', then the training runs' and the viewer's."""
    return [*service_users(), TRAIN, VIEWER]


def password_variable(user: str) -> str:
    """Environment variable holding a user's password for nats-server and the service."""
    return f"GANFOLK_NATS_PASSWORD_{user.upper()}"


def _stream_info(*streams: str) -> list[str]:
    return [f"$JS.API.STREAM.INFO.{s}" for s in streams]


def _kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def _kv_reader(bucket: str) -> list[str]:
    """Read a bucket's entries and watch it (an ordered push consumer with flow control)."""
    return _stream_reader(_kv_stream(bucket))


def _stream_reader(stream: str) -> list[str]:
    """Read a stream's messages and follow it (an ordered push consumer with flow control)."""
    return [
        *_stream_info(stream),
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def stage_permissions(user: str, stages: Sequence[Stage | str]) -> Permissions:
    """A stage worker: its own consumers' tasks in, events and its dead letters out."""
    tasks = js.TASKS_STREAM
    publish = [
        "ganfolk.events.>",
        *_stream_info(js.TASKS_STREAM, js.EVENTS_STREAM, js.JOBS_STREAM, js.DLQ_STREAM),
        # The max-deliveries path reads the dead task and removes it from the work queue.
        f"$JS.API.STREAM.MSG.GET.{tasks}",
        f"$JS.API.STREAM.MSG.DELETE.{tasks}",
        *_kv_reader(js.CANCEL_BUCKET),
        *_stream_info(_kv_stream(js.SERVICES_BUCKET)),
        f"$KV.{js.SERVICES_BUCKET}.{user}",
    ]
    subscribe = [f"{js.inbox_prefix(user)}.>"]
    for stage in stages:
        consumer = js.consumer_name(str(stage))
        publish += [
            js.dlq_subject(str(stage)),
            f"$JS.API.CONSUMER.DURABLE.CREATE.{tasks}.{consumer}",
            f"$JS.API.CONSUMER.CREATE.{tasks}.{consumer}.{js.task_subject(str(stage))}",
            f"$JS.API.CONSUMER.INFO.{tasks}.{consumer}",
            f"$JS.API.CONSUMER.MSG.NEXT.{tasks}.{consumer}",
            f"$JS.ACK.{tasks}.{consumer}.>",
        ]
        subscribe.append(js.max_deliveries_advisory(tasks, consumer))
    return Permissions(tuple(publish), tuple(subscribe))


def coordinator_permissions() -> Permissions:
    """The coordinator: publishes tasks and job snapshots, owns streams, buckets, consumers."""
    return Permissions(
        publish=(
            "ganfolk.tasks.>",
            "ganfolk.jobs.>",
            "$JS.API.>",
            f"$KV.{js.JOBS_BUCKET}.>",
            f"$KV.{js.CANCEL_BUCKET}.>",
            f"$KV.{js.SERVICES_BUCKET}.{COORDINATOR}",
            f"$JS.ACK.{js.EVENTS_STREAM}.>",
            "$JS.FC.>",
        ),
        subscribe=(f"{js.inbox_prefix(COORDINATOR)}.>",),
    )


def train_permissions() -> Permissions:
    """A training run: its events out, its registry entry read and written; no topology writes."""
    runs = _kv_stream(train.RUNS_BUCKET)
    return Permissions(
        publish=(
            f"{train.SUBJECT_PREFIX}.>",
            *_stream_info(train.TRAIN_STREAM, runs),
            f"$JS.API.DIRECT.GET.{runs}.>",
            f"$JS.API.STREAM.MSG.GET.{runs}",
            f"$KV.{train.RUNS_BUCKET}.>",
        ),
        subscribe=(f"{js.inbox_prefix(TRAIN)}.>",),
    )


def viewer_permissions() -> Permissions:
    """``ganfolk train list|status|watch``: reads the run registry and follows runs' events."""
    return Permissions(
        publish=(*_kv_reader(train.RUNS_BUCKET), *_stream_reader(train.TRAIN_STREAM)),
        subscribe=(f"{js.inbox_prefix(VIEWER)}.>",),
    )


def permissions(user: str) -> Permissions:
    """The permissions of a NATS user: a service's, ``train`` or ``viewer``."""
    if user == COORDINATOR:
        return coordinator_permissions()
    if user == TRAIN:
        return train_permissions()
    if user == VIEWER:
        return viewer_permissions()
    entry = SERVICES[user]
    if not entry.stages:
        raise KeyError(f"service {user!r} does not use NATS; users are {', '.join(nats_users())}")
    return stage_permissions(user, entry.stages)


def _password(user: str, passwords: Mapping[str, str] | None) -> str:
    if passwords is None:
        # nats-server resolves an unknown $VARIABLE from its environment.
        return f"${password_variable(user)}"
    return json.dumps(passwords[user])


def render_authorization(passwords: Mapping[str, str] | None = None) -> str:
    """The ``authorization`` block: one user per service with its permissions.

    ``passwords`` None writes ``$GANFOLK_NATS_PASSWORD_<SERVICE>`` references, which
    nats-server resolves from its environment; a mapping (user -> password) writes them
    literally. Deployments include it from their server configuration (``include auth.conf``).
    """
    lines = [
        "# Generated from ganfolk/runtime/catalog.py by `python -m ganfolk.runtime.nats_auth "
        "authorization`; do not edit by hand.",
        "authorization: {",
        "  users: [",
    ]
    for user in nats_users():
        perms = permissions(user)
        login = f"user: {json.dumps(user)}, password: {_password(user, passwords)}"
        lines.append(f"    {{{login}, permissions: {{")
        lines.append(f"      publish: {{allow: {json.dumps(list(perms.publish))}}}")
        lines.append(f"      subscribe: {{allow: {json.dumps(list(perms.subscribe))}}}")
        lines.append("    }}")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def render_config(
    passwords: Mapping[str, str] | None = None,
    *,
    listen: str | None = None,
    store_dir: str | None = None,
    http_port: int | None = None,
) -> str:
    """A whole nats-server configuration: listen address, JetStream and the authorization."""
    lines = []
    if listen:
        lines.append(f"listen: {json.dumps(listen)}")
    if http_port:
        lines.append(f"http_port: {http_port}")
    lines.append("jetstream: {" + (f" store_dir: {json.dumps(store_dir)} " if store_dir else "") + "}")
    return "\n".join(lines) + "\n" + render_authorization(passwords)


COMPOSE_AUTH = Path("deploy/nats/auth.conf")
K8S_NATS = Path("k8s/base/nats.yaml")
_K8S_KEY = "  auth.conf: |\n"


def sync(root: Path) -> list[Path]:
    """Write the authorization into Compose's auth.conf and the k8s ConfigMap under ``root``.

    Returns the files that changed; run after a service joins the catalog.
    """
    auth = render_authorization()
    changed = []
    compose = root / COMPOSE_AUTH
    if not compose.exists() or compose.read_text() != auth:
        compose.write_text(auth)
        changed.append(compose)
    k8s = root / K8S_NATS
    text = k8s.read_text()
    start = text.index(_K8S_KEY) + len(_K8S_KEY)
    end = text.index("---", start)
    block = "".join((f"    {line}" if line else "") + "\n" for line in auth.splitlines())
    if text[start:end] != block:
        k8s.write_text(text[:start] + block + text[end:])
        changed.append(k8s)
    return changed


def generate_passwords() -> dict[str, str]:
    """A fresh random password for every NATS user."""
    return {user: secrets.token_urlsafe(24) for user in nats_users()}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the authorization block, a whole configuration, or random passwords."""
    parser = argparse.ArgumentParser(prog="python -m ganfolk.runtime.nats_auth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("authorization", help="the authorization block (deploy/nats/auth.conf, the k8s ConfigMap)")
    config = sub.add_parser("config", help="a whole nats-server configuration with password variables")
    config.add_argument("--store-dir", default="/data", help="JetStream store directory")
    config.add_argument("--http-port", type=int, default=8222, help="monitoring port (0: off)")
    sub.add_parser("env", help="random passwords for the users, as KEY=value lines (e.g. deploy/.env)")
    synced = sub.add_parser("sync", help=f"rewrite {COMPOSE_AUTH} and the ConfigMap in {K8S_NATS}")
    synced.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2], help="repository")
    args = parser.parse_args(argv)
    if args.command == "authorization":
        sys.stdout.write(render_authorization())
    elif args.command == "sync":
        changed = sync(args.root)
        sys.stdout.write("".join(f"updated {p}\n" for p in changed) or "already in step\n")
    elif args.command == "config":
        sys.stdout.write(render_config(store_dir=args.store_dir, http_port=args.http_port or None))
    else:
        for user, password in generate_passwords().items():
            sys.stdout.write(f"{password_variable(user)}={password}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
