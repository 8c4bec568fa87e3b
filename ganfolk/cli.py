"""`ganfolk` command line: serve a service, bring the local stack up or down."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from ganfolk.runtime import catalog
from ganfolk.runtime.service import load_definition, run_service, service_settings
from ganfolk.runtime.settings import ConfigError


def _count(text: str) -> int:
    """argparse type: a whole number >= 0 (0 leaves the choice to the service's default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: give 0 for the default or a positive number")
    return value


def _serve(args: argparse.Namespace) -> int:
    definition = load_definition(args.service)
    settings = service_settings(
        definition,
        grpc_host=args.host,
        grpc_port=args.port,
        nats_url=args.nats_url,
        store_url=args.store_url,
        metrics_port=args.metrics_port,
        worker_enabled=False if args.no_worker else None,
    )
    asyncio.run(run_service(definition, settings))
    # The service has stopped cleanly and the process ends here: spare it the collection at
    # interpreter exit, seconds of CPU with torch loaded, which `ganfolk down` would wait for.
    gc.freeze()
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


def _target(args: argparse.Namespace) -> str:
    default = f"127.0.0.1:{catalog.entry('coordinator').port}"
    return str(args.target or os.environ.get("GANFOLK_COORDINATOR", default))


def _client(args: argparse.Namespace) -> Any:
    from ganfolk.client import JobsClient

    token = args.token or os.environ.get("GANFOLK_COORDINATOR_AUTH_TOKEN")
    return JobsClient(_target(args), token=token)


def _spec(args: argparse.Namespace) -> Any:
    from ganfolk.v1 import jobs_pb2, vqgan_pb2

    spec = jobs_pb2.JobSpec(
        prompt=args.prompt or "",
        num_samples=args.samples,
        sample_task_size=args.task_size,
        seed=args.seed,
        top_k=args.top_k,
        require_review=args.review,
        no_review=args.no_review,
        mint=not args.no_mint,
        recipient=args.recipient or "",
        force_stages=args.force_stages,
        description=args.description or "",
        collection_size=args.collection,
    )
    filters = {"nationalities": args.nationalities, "age_groups": args.ages, "genders": args.genders}
    for field, values in {**filters, "media": args.media}.items():
        if values:
            getattr(spec.collection_filter, field).extend(_split_list(values))
    if args.no_text:
        spec.name_and_backstory = False
    if args.iterations is not None:
        spec.refine.CopyFrom(vqgan_pb2.RefineParams(iterations=args.iterations))
    return spec


def _split_list(values: list[str]) -> list[str]:
    """Repeated and comma-separated values: --media "oil painting,charcoal sketch" --media etching."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _progress_line(update: Any) -> str:
    from ganfolk.v1 import jobs_pb2

    job, event = update.job, update.event
    filled = int(job.percent / 5)
    stage = jobs_pb2.Stage.Name(event.stage or job.stage).removeprefix("STAGE_").lower()
    state = jobs_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
    return f"[{'#' * filled:<20}] {job.percent:5.1f}% {state:<15} {stage:<10} {event.message}"


async def _watch_until_done(client: Any, job_id: str) -> Any:
    """Follow a job until it ends or stops for a person's review (which may take days)."""
    from ganfolk.v1 import jobs_pb2

    last = None
    async for update in client.watch(job_id):
        print(_progress_line(update), flush=True)
        last = update.job
        if last.state == jobs_pb2.JOB_STATE_AWAITING_REVIEW:
            print(
                f"awaiting review: open it in the gallery, or `ganfolk jobs review {job_id} approve`",
                flush=True,
            )
            break
    return last if last is not None else await client.get(job_id)


def _portrait(args: argparse.Namespace) -> int:
    from ganfolk.client import download_outputs
    from ganfolk.v1 import jobs_pb2

    async def run() -> int:
        async with _client(args) as client:
            submitted = await client.submit(_spec(args), args.idempotency_key or "")
            job_id = submitted.job.job_id
            print(f"job {job_id}{' (existing)' if submitted.existing else ''}", flush=True)
            job = await _watch_until_done(client, job_id)
            portraits = [job]
            for child in job.children:  # a collection: one portrait job per written prompt
                print(f"\nportrait job {child}", flush=True)
                portraits.append(await _watch_until_done(client, child))
            ok = True
            # Outputs come through the coordinator (GetOutputs): no store credentials here.
            for portrait in portraits[1:] if job.children else portraits:
                written = await download_outputs(client, portrait, Path(args.out) / portrait.job_id)
                _summary(portrait, written)
                # Waiting for a reviewer is where a reviewed job is meant to stop.
                ok &= portrait.state in (jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_AWAITING_REVIEW)
        return (
            0 if ok and job.state in (jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_AWAITING_REVIEW) else 1
        )

    return asyncio.run(run())


def _summary(job: Any, written: dict[str, str]) -> None:
    from ganfolk.v1 import jobs_pb2

    print(f"\nstate:    {jobs_pb2.JobState.Name(job.state)}")
    if job.error:
        print(f"error:    {job.error}")
    print(f"prompt:   {job.prompt}")
    if job.first_name:
        print(f"name:     {job.first_name} {job.last_name}")
    if job.backstory:
        print(f"story:    {job.backstory}")
    if job.token.token_id:
        print(f"token:    #{job.token.token_id} on chain {job.token.chain_id} ({job.token.contract_address})")
    for status in job.stages:
        if status.skipped:
            print(f"skipped:  {jobs_pb2.Stage.Name(status.stage)}: {status.skip_reason}")
    fallbacks = sorted({f for p in job.provenance for f in p.fallbacks})
    random = sorted({p.service for p in job.provenance for m in p.models if m.random_weights})
    if fallbacks:
        print(f"fallbacks: {', '.join(fallbacks)}")
    if random:
        print(f"RANDOM WEIGHTS in: {', '.join(random)}")
    for name, path in written.items():
        print(f"{name + ':':<10}{path}")


# `ganfolk jobs review <decision>` -> the jobs API's ReviewDecision.
REVIEW_DECISIONS = {
    "approve": "APPROVE",
    "edit": "EDIT",
    "reject": "REJECT",
    "revise": "REVISE",
    "choose": "CHOOSE_CANDIDATE",
    "regenerate-name": "REGENERATE_NAME",
    "regenerate-backstory": "REGENERATE_BACKSTORY",
}


def _jobs(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToJson

    from ganfolk.v1 import jobs_pb2

    async def run() -> int:
        async with _client(args) as client:
            if args.action == "submit":
                reply = await client.submit(_spec(args), args.idempotency_key or "")
                print(MessageToJson(reply, preserving_proto_field_name=True))
            elif args.action == "get":
                job = await client.get(args.job_id)
                print(MessageToJson(job, preserving_proto_field_name=True))
                if args.out:
                    from ganfolk.client import download_outputs

                    written = await download_outputs(client, job, Path(args.out) / job.job_id)
                    for name, path in written.items():
                        print(f"{name + ':':<12}{path}", file=sys.stderr)
            elif args.action == "list":
                state = jobs_pb2.JobState.Value(f"JOB_STATE_{args.state.upper()}") if args.state else 0
                for job in await client.list(state):
                    print(
                        f"{job.job_id}  {jobs_pb2.JobState.Name(job.state):<26} "
                        f"{job.percent:5.1f}%  {job.prompt}"
                    )
            elif args.action == "watch":
                job = await _watch_until_done(client, args.job_id)
                return 0 if job.state == jobs_pb2.JOB_STATE_SUCCEEDED else 1
            elif args.action == "cancel":
                job = await client.cancel(args.job_id, args.reason or "")
                print(jobs_pb2.JobState.Name(job.state))
            elif args.action == "review":
                decision = REVIEW_DECISIONS[args.decision]
                request = jobs_pb2.ReviewRequest(
                    job_id=args.job_id,
                    decision=jobs_pb2.ReviewDecision.Value(f"REVIEW_DECISION_{decision}"),  # type: ignore[arg-type]
                    first_name=args.first_name or "",
                    last_name=args.last_name or "",
                    backstory=args.backstory or "",
                    note=args.note or "",
                    candidate=args.candidate or 0,
                )
                if args.expect_version is not None:
                    request.expected_version = args.expect_version
                job = await client.review(request)
                print(f"{jobs_pb2.JobState.Name(job.state)} (review version {job.review_version})")
        return 0

    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        print(f"ganfolk: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1


def _models(args: argparse.Namespace) -> int:
    """`ganfolk models list|pull`: public checkpoints, fetched only when a person asks."""
    from ganfolk.weights.commands import list_models, pull_models
    from ganfolk.weights.download import DownloadError
    from ganfolk.weights.manifest import ManifestError

    try:
        if args.action == "list":
            return list_models(args.manifest)
        return pull_models(
            args.names,
            manifest=args.manifest,
            store_url=args.store_url,
            state_dir=args.state_dir,
            timeout=args.timeout,
            attempts=args.attempts,
            progress=not args.no_progress,
            force=args.force,
        )
    except (ManifestError, DownloadError, KeyError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"ganfolk models {args.action}: {message}", file=sys.stderr)
        return 1


def _train_runs(args: argparse.Namespace) -> int:
    """`ganfolk train list|status|watch`: the run registry on NATS, readable from any machine."""
    import nats

    from ganfolk import local
    from ganfolk.runtime import jetstream, nats_auth
    from ganfolk.runtime.settings import Settings, load_settings
    from ganfolk.v1 import train_pb2
    from services.stylegan.training import progress

    url = args.nats_url or os.environ.get("GANFOLK_NATS_URL", "nats://127.0.0.1:4222")
    # GANFOLK_NATS_USER/PASSWORD (the `viewer` user) or a creds file; none set, on the NATS of
    # `ganfolk up`: that stack's viewer login from its state directory.
    settings = local.nats_login(load_settings(Settings, nats_url=url), nats_auth.VIEWER)
    login = jetstream.connect_options(settings)

    async def quiet(exc: Exception) -> None:  # the connect failure below says it once
        pass

    async def run() -> int:
        # Probe first, so a wrong address fails at once; once connected, `watch` rides out a
        # broker restart of up to a minute.
        try:
            if not progress.nats_answers(url, timeout=3.0):
                raise ConnectionRefusedError("nothing answers there")
            nc = await nats.connect(
                url,
                name="ganfolk-cli",
                connect_timeout=3,
                max_reconnect_attempts=30,
                reconnect_time_wait=2,
                error_cb=quiet,
                **login,
            )
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            print(f"ganfolk train {args.action}: cannot reach NATS at {url} ({exc})", file=sys.stderr)
            return 1
        try:
            js = nc.jetstream()
            if args.action == "list":
                runs = await progress.list_runs(js)
                if args.state:
                    runs = [r for r in runs if progress.state_name(r.state) == args.state]
                print(progress.run_table(runs) if runs else "no training runs")
            elif args.action == "status":
                record = await progress.get_run(js, args.run)
                if args.json:
                    from google.protobuf.json_format import MessageToJson

                    print(MessageToJson(record, preserving_proto_field_name=True))
                else:
                    print(progress.status_text(record))
            else:
                record = await progress.get_run(js, args.run)
                print(f"run {record.run_id}: {progress.state_name(record.state)}", flush=True)
                state = record.state
                async for event in progress.follow(js, args.run, replay=not args.new_only):
                    when = event.time.ToDatetime().strftime("%H:%M:%S")
                    print(f"{when} {progress.event_line(event)}", flush=True)
                    if event.WhichOneof("kind") == "finished":
                        state = event.finished.state
                if state == train_pb2.TRAIN_STATE_RUNNING:
                    state = (await progress.get_run(js, args.run)).state
                    print(f"run {record.run_id}: {progress.state_name(state)}")
                return 0 if state == train_pb2.TRAIN_STATE_SUCCEEDED else 1
        except progress.UnknownRun as exc:
            print(f"ganfolk train {args.action}: {exc.args[0]}", file=sys.stderr)
            return 1
        finally:
            await nc.close()
        return 0

    return asyncio.run(run())


def _train(args: argparse.Namespace, model: str, **plan_options: Any) -> int:
    """Plan a run of ``services.<model>.training`` (the checks of --check), then start it."""
    import importlib

    from ganfolk.runtime.errors import InvalidArgument

    run = importlib.import_module(f"services.{model}.training.run")
    config = importlib.import_module(f"services.{model}.training.config")
    try:
        cfg = config.config_from_args(args)
        # The same checks as --check, before any accelerator time; rank 0 repeats them at start.
        plan = run.plan(cfg, **plan_options)
        if args.check:
            print(plan.describe())
            return 0
    except InvalidArgument as exc:
        print(f"ganfolk train: {exc}", file=sys.stderr)
        return 2
    return int(run.start(cfg))


def _train_stylegan(args: argparse.Namespace) -> int:
    return _train(args, "stylegan")


def _add_train_stylegan_parser(actions: Any) -> None:
    """`train stylegan` under the `train` command's sub-commands (beside list|status|watch)."""
    from services.stylegan.training.config import add_arguments

    stylegan = actions.add_parser(
        "stylegan",
        help="StyleGAN2-ADA on prepared images, with torchrun over --gpus/--nnodes; resumable",
    )
    add_arguments(stylegan)
    stylegan.set_defaults(func=_train_stylegan)


def _train_vqgan(args: argparse.Namespace) -> int:
    # The weights are loaded by rank 0 at start, not by the launcher.
    return _train(args, "vqgan", load_weights=False)


def _add_train_vqgan_parser(actions: Any) -> None:
    """`train vqgan`: fine-tune a taming VQGAN on the same runtime as `train stylegan`."""
    from services.vqgan.training.config import add_arguments

    vqgan = actions.add_parser(
        "vqgan",
        help="fine-tune a taming VQGAN (--init a public checkpoint) with torchrun over --gpus; resumable",
    )
    add_arguments(vqgan)
    vqgan.set_defaults(func=_train_vqgan)


def _add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=_count, default=0, help="StyleGAN samples to draw (default 1000)")
    p.add_argument("--task-size", type=_count, default=0, help="samples per sample task (default 100)")
    p.add_argument("--seed", type=_count, default=0)
    p.add_argument("--top-k", type=_count, default=0)
    p.add_argument("--iterations", type=int, default=None, help="VQGAN+CLIP iterations (default 50)")
    p.add_argument(
        "--review",
        action="store_true",
        help="stop for review before minting (on by default for collections and real chains)",
    )
    p.add_argument(
        "--no-review",
        action="store_true",
        help="opt out of the default review of collections and of mints on a real chain",
    )
    p.add_argument("--no-mint", action="store_true", help="do not mint the portrait")
    p.add_argument("--no-text", action="store_true", help="no name or backstory")
    p.add_argument("--recipient", help="0x address that receives the token")
    p.add_argument("--description", help="who the portrait shows (for the name and backstory)")
    p.add_argument("--force-stages", action="store_true", help="run rank/refine even with random weights")
    p.add_argument("--idempotency-key", help="submitting the same key again returns the first job")
    p.add_argument(
        "--collection",
        type=int,
        default=0,
        help="N portraits from N balanced prompts written by the text service",
    )
    # Collection filters; the balance holds within them. Comma-separated or repeated.
    p.add_argument(
        "--nationalities",
        action="append",
        metavar="LIST",
        help="with --collection: demonyms, countries, ISO codes or regions (Bulgarian,PT,South America)",
    )
    p.add_argument(
        "--ages",
        action="append",
        metavar="LIST",
        help="with --collection: age groups (child, teen, young adult, adult, elder)",
    )
    p.add_argument("--genders", action="append", metavar="LIST", help="with --collection: female, male")
    p.add_argument(
        "--media", action="append", metavar="LIST", help="with --collection: charcoal sketch,oil painting"
    )


def _add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", help="coordinator address (GANFOLK_COORDINATOR, default 127.0.0.1:50051)")
    p.add_argument("--token", help="bearer token (GANFOLK_COORDINATOR_AUTH_TOKEN)")


def _add_train_run_parsers(actions: Any) -> None:
    """`train list|status|watch` under the `train` command's sub-commands."""
    listing = actions.add_parser("list", help="training runs: state, kimg, speed, ADA p, SWD, checkpoint")
    listing.add_argument("--state", choices=("running", "succeeded", "failed", "cancelled"))
    status = actions.add_parser("status", help="one run in detail, with the sampler's checkpoint setting")
    status.add_argument("run", help="run id (as `ganfolk train list` shows it)")
    status.add_argument("--json", action="store_true", help="the run's registry entry as JSON")
    watch = actions.add_parser("watch", help="follow a run's progress until it finishes (Ctrl-C stops)")
    watch.add_argument("run", help="run id")
    watch.add_argument("--new-only", action="store_true", help="do not replay the latest event first")
    for a in (listing, status, watch):
        a.add_argument("--nats-url", help="NATS server (GANFOLK_NATS_URL, default nats://127.0.0.1:4222)")
        a.set_defaults(func=_train_runs)


def _add_dataset_parser(sub: Any) -> None:
    """`dataset collect|prepare|export|attribution|show`: the training-set tool (services/dataset)."""
    from services.dataset.cli import add_arguments

    dataset = sub.add_parser(
        "dataset", help="build the training set: collect with licences, prepare, export, attribute, show"
    )
    add_arguments(dataset)


def _add_contract_parser(sub: Any) -> None:
    """`contract deploy|info`: the mint contract on a chain (services/mint/cli.py)."""
    from services.mint.cli import add_arguments

    contract = sub.add_parser(
        "contract", help="deploy the mint contract (dry run, confirmations, bytecode check) or read one"
    )
    add_arguments(contract)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganfolk", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one service (gRPC + its NATS stage workers)")
    serve.add_argument("service", choices=sorted(catalog.SERVICES))
    serve.add_argument("--host", help="gRPC bind host (GANFOLK_GRPC_HOST)")
    serve.add_argument("--port", type=int, help="gRPC port, 0 for any (GANFOLK_GRPC_PORT)")
    serve.add_argument("--nats-url", help="NATS URL (GANFOLK_NATS_URL)")
    serve.add_argument("--store-url", help="object store URL (GANFOLK_STORE_URL)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus port (GANFOLK_METRICS_PORT)")
    serve.add_argument("--no-worker", action="store_true", help="serve gRPC only, no NATS stage worker")
    serve.set_defaults(func=_serve)

    portrait = sub.add_parser("portrait", help="make one portrait end to end and download it")
    portrait.add_argument(
        "prompt", nargs="?", default="", help="e.g. 'charcoal sketch of an inquisitive Turkish boy'"
    )
    portrait.add_argument("--out", default="portraits", help="folder for the outputs")
    _add_spec_args(portrait)
    _add_client_args(portrait)
    portrait.set_defaults(func=_portrait)

    jobs = sub.add_parser("jobs", help="the jobs API: submit, get, list, watch, cancel, review")
    actions = jobs.add_subparsers(dest="action", required=True)
    submit = actions.add_parser("submit")
    submit.add_argument("prompt", nargs="?", default="")
    _add_spec_args(submit)
    for action in ("get", "watch", "cancel", "review"):
        a = actions.add_parser(action)
        a.add_argument("job_id")
        if action == "get":
            a.add_argument("--out", help="also download the job's outputs into OUT/<job_id>")
        if action == "cancel":
            a.add_argument("--reason")
        if action == "review":
            a.add_argument(
                "decision",
                choices=tuple(REVIEW_DECISIONS),
                help="approve (mint), edit (edit and approve), reject, revise (edit, keep reviewing), "
                "choose (another ranked candidate), regenerate-name, regenerate-backstory",
            )
            a.add_argument("--first-name")
            a.add_argument("--last-name")
            a.add_argument("--backstory")
            a.add_argument("--note")
            a.add_argument("--candidate", type=int, help="with choose: rank of the sample (0 = best)")
            a.add_argument(
                "--expect-version",
                type=int,
                help="refuse (ABORTED) if the job's review version moved past this one",
            )
    listing = actions.add_parser("list")
    listing.add_argument("--state", help="e.g. running, succeeded, awaiting_review")
    for a in actions.choices.values():
        _add_client_args(a)
    jobs.set_defaults(func=_jobs)

    models = sub.add_parser("models", help="public checkpoints: list them, or pull them (needs internet)")
    model_actions = models.add_subparsers(dest="action", required=True)
    model_list = model_actions.add_parser("list", help="the manifest: names, sources, sizes, licences")
    model_pull = model_actions.add_parser(
        "pull", help="download, verify and store checkpoints under models/, print their settings"
    )
    model_pull.add_argument("names", nargs="*", help="models to pull (default: every one in the manifest)")
    model_pull.add_argument(
        "--store-url", help="object store (GANFOLK_STORE_URL; default <state-dir>/objects)"
    )
    model_pull.add_argument("--state-dir", help="state directory (GANFOLK_STATE_DIR, default .state)")
    model_pull.add_argument("--timeout", type=float, default=30.0, help="seconds a connect or read may stall")
    model_pull.add_argument("--attempts", type=int, default=5, help="tries per file, each resuming the last")
    model_pull.add_argument("--force", action="store_true", help="download even when the store has the file")
    model_pull.add_argument("--no-progress", action="store_true", help="no progress bars")
    for a in (model_list, model_pull):
        a.add_argument("--manifest", help="a manifest in models.toml's format (default: the shipped one)")
    models.set_defaults(func=_models)

    # One `train` command: `train stylegan` starts a run; list/status/watch read the registry.
    train = sub.add_parser("train", help="train a generator; list, inspect and follow training runs")
    train_actions = train.add_subparsers(dest="action", required=True)
    _add_train_stylegan_parser(train_actions)
    _add_train_vqgan_parser(train_actions)
    _add_train_run_parsers(train_actions)
    _add_dataset_parser(sub)
    _add_contract_parser(sub)

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
