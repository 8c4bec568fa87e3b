"""No configured secret in a log line or a job record of a whole portrait job.

The stack runs with a secret of every kind it knows: the object store on an S3 API server
(moto) with its keys in the store URL, the text service's LLM behind a base URL that carries a
key and an API key setting, a coordinator token, and the mint's private key. Its LLM fails
once (the retry is logged) and then answers. After the job, every log line the services
wrote through the one logging setup, every message of every NATS stream (the job in KV, its
events and snapshots, the services' infos), every object in the store (manifests,
provenance, images) and every jobs API answer is searched for each secret string.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import Any

import grpc
import pytest
from nats.aio.client import Client as NATS

from ganfolk.runtime import redact
from ganfolk.runtime.logs import configure_logging
from ganfolk.runtime.storage import open_store
from ganfolk.v1 import jobs_pb2, jobs_pb2_grpc
from services.mint.anvil import DEV_PRIVATE_KEY
from tests.e2e.stack import Models, in_process, job_spec, tiny_models
from tests.fixtures.s3 import S3Server
from tests.mint.fixtures import anvil  # noqa: F401  (session fixture)
from tests.text.conftest import Scripted

S = jobs_pb2
NAME = "Kerem Aydemir"
STORY = (
    f"{NAME} grew up in Izmir, where he fixed his neighbours' radios after school and sketched the "
    "ferries crossing the bay. He wants to build a boat of his own one day."
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return tiny_models(tmp_path_factory.mktemp("e2e-secret-models"))


def llm_answer(body: dict[str, Any]) -> str:
    return STORY if "backstory" in body["messages"][-1]["content"] else NAME


async def stream_messages(nats_url: str) -> list[bytes]:
    """Every message (headers and data) of every JetStream stream, KV buckets included."""
    nc = NATS()
    await nc.connect(nats_url)
    try:
        js = nc.jetstream()
        found: list[bytes] = []
        for info in await js.streams_info():
            state = info.state
            for seq in range(state.first_seq, state.last_seq + 1):
                try:
                    msg = await js.get_msg(info.config.name, seq)
                except Exception:  # deleted (acked work-queue tasks, purged keys)
                    continue
                found.append(repr(msg.headers).encode() + (msg.subject or "").encode() + (msg.data or b""))
        return found
    finally:
        await nc.close()


async def test_no_secret_in_logs_or_job_records(
    monkeypatch: pytest.MonkeyPatch,
    models: Models,
    nats_server: Any,
    anvil: Any,  # noqa: F811
    s3_server: S3Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tag = secrets.token_hex(4)
    s3_secret = f"s3-secret-{tag}"
    llm_password, llm_key, token = f"sk-url-{tag}", f"sk-key-{tag}", f"coord-token-{tag}"
    bucket = f"secrets-{tag}"
    store_url = f"http://AKIDE2E{tag}:{s3_secret}@{s3_server.endpoint}/{bucket}"
    llm = Scripted()
    llm.play(503, llm_answer)  # the first call fails: the retry is logged with its error
    secret_values = {
        "S3 secret key": s3_secret,
        "LLM URL key": llm_password,
        "LLM API key": llm_key,
        "coordinator token": token,
        "mint private key": DEV_PRIVATE_KEY.removeprefix("0x"),
    }

    # The one logging setup the services use (JSON lines on stdout), as `ganfolk serve` does.
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    noisy = {
        name: logging.getLogger(name).level
        for name in ("nats", "grpc", "botocore", "urllib3", "httpx", "httpx2", "httpcore", "openai")
    }
    configure_logging("e2e-secrets", "INFO")
    auth = (("authorization", f"Bearer {token}"),)
    try:
        async with in_process(
            monkeypatch,
            models,
            nats_server.url,
            tmp_path / "objects",
            anvil.url,
            store_url=store_url,
            text_llm_base_url=llm.base_url.replace("://", f"://user:{llm_password}@"),
            text_llm_api_key=llm_key,
            text_llm_retry_wait_seconds=0.05,
            text_names_dataset=False,
            text_names_must_fit=False,
            coordinator_auth_token=token,
            mint_private_key=DEV_PRIVATE_KEY,
        ) as stub:
            assert stub is not None
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.List(jobs_pb2.ListRequest())
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # the token is in force
            job, answers = await run_job(stub, job_spec(), auth)
            calls = len(llm.requests)
            # An endpoint that refuses the key and echoes it back, as some do: the job fails,
            # and its error names the endpoint and the status, not the key.
            llm.play(("error", 401, f"invalid api key {llm_key} (basic auth user:{llm_password})"))
            failed, more = await run_job(stub, job_spec(mint=False, seed=6), auth)
            answers += more
            outputs = [
                o async for o in stub.GetOutputs(S.GetOutputsRequest(job_id=job.job_id), metadata=auth)
            ]
            records = await stream_messages(nats_server.url)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in noisy.items():
            logging.getLogger(name).setLevel(level)
        llm.close()
    logs = capsys.readouterr().out

    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    assert failed.state == S.JOB_STATE_FAILED and "HTTP 401" in failed.error, failed.error
    assert "invalid api key ***" in failed.error
    assert (job.first_name, job.last_name) == tuple(NAME.split()) and job.backstory == STORY  # from the LLM
    assert calls >= 3 and llm.requests  # the failed call, the name, the backstory; the refused one
    assert any(o.name == "manifest" for o in outputs)
    text = next(p for p in job.provenance if p.service == "text")
    assert text.models[0].source == f"http://***@127.0.0.1:{llm.server.server_address[1]}/v1"

    lines = logs.splitlines()
    assert len(lines) > 20 and any("retrying" in line.lower() or "503" in line for line in lines)
    store = open_store(store_url)
    objects = {info.key: store.get(info.key) for info in store.list("")}
    assert any(key.endswith("manifest.json") for key in objects)
    assert any(key.endswith(".json") and b"provenance" in data for key, data in objects.items())
    answers_bytes = [a.SerializeToString() for a in answers] + [o.SerializeToString() for o in outputs]
    for what, secret in secret_values.items():
        needle = secret.encode()
        assert not [line for line in lines if secret in line], f"{what} in a log line"
        assert not [r for r in records if needle in r], f"{what} in a NATS record (job, event, snapshot)"
        assert not [k for k, data in objects.items() if needle in data], f"{what} in a stored object"
        assert not [a for a in answers_bytes if needle in a], f"{what} in a jobs API answer"
    # The secrets were registered for masking, so a stray echo would have been caught too.
    assert redact.redact(f"x {s3_secret} {llm_key} {token}") == "x *** *** ***"


async def run_job(
    stub: jobs_pb2_grpc.JobServiceStub, spec: jobs_pb2.JobSpec, auth: Any, timeout: float = 240
) -> tuple[jobs_pb2.Job, list[Any]]:
    """Submit with the token and watch to the end; the job and every answer on the way."""
    submitted = await stub.Submit(jobs_pb2.SubmitRequest(spec=spec), metadata=auth)
    job_id = submitted.job.job_id
    answers: list[Any] = [submitted]

    async def watch() -> None:
        async for update in stub.Watch(jobs_pb2.WatchRequest(job_id=job_id), metadata=auth):
            answers.append(update)

    await asyncio.wait_for(watch(), timeout)
    final = await stub.Get(jobs_pb2.GetRequest(job_id=job_id), metadata=auth)
    answers.append(final)
    return final.job, answers
