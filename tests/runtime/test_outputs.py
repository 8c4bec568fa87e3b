"""Where outputs go: tasks write where the coordinator tells them, direct calls under direct/.

The services' own tests show the same rule over real gRPC and NATS; these pin the rule itself.
"""

from __future__ import annotations

import pytest

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.runtime.outputs import output_prefix
from ganfolk.v1 import common_pb2, upscale_pb2


def request(prefix: str = "", meta_prefix: str = "", job: str = "") -> upscale_pb2.FinishRequest:
    return upscale_pb2.FinishRequest(
        output_prefix=prefix, meta=common_pb2.TaskMeta(output_prefix=meta_prefix, job_id=job)
    )


def task(job: str, prefix: str = "") -> common_pb2.TaskMeta:
    return common_pb2.TaskMeta(job_id=job, task_id=f"{job}.finish.0", output_prefix=prefix)


def test_a_task_prefers_the_request_then_its_own_prefix() -> None:
    meta = task("j", "/jobs/j/finish")
    assert output_prefix(request("out/a/"), "finished", meta) == "out/a"
    assert output_prefix(request("jobs/j/final"), "finished", meta) == "jobs/j/final"
    assert output_prefix(request(), "finished", meta) == "jobs/j/finish"


def test_a_task_without_a_prefix_gets_a_fresh_folder() -> None:
    first, second = (output_prefix(request(), "/finished/", task("j")) for _ in range(2))
    assert first.startswith("finished/") and second.startswith("finished/") and first != second


@pytest.mark.parametrize("prefix", ["jobs/k/final", "jobs/jk", "jobs"])
def test_a_task_never_writes_into_another_jobs_folder(prefix: str) -> None:
    with pytest.raises(InvalidArgument, match="another job's folder"):
        output_prefix(request(prefix), "finished", task("j"))


@pytest.mark.parametrize("job", ["", "j/final"])
def test_a_task_without_a_plain_job_id_writes_no_job_folder(job: str) -> None:
    with pytest.raises(InvalidArgument, match="another job's folder"):
        output_prefix(request("jobs/j/final/x"), "finished", task(job))


def test_a_direct_call_writes_under_direct() -> None:
    assert output_prefix(request("out/a/"), "finished") == "direct/out/a"
    assert output_prefix(request("direct/out/a"), "finished") == "direct/out/a"
    # A direct caller's meta is its own say-so, not a task: it lands under direct/ as well.
    assert output_prefix(request("", "models/stylegan", job="j"), "finished") == "direct/models/stylegan"
    first, second = (output_prefix(request(), "/finished/") for _ in range(2))
    assert first.startswith("direct/finished/") and second.startswith("direct/finished/")
    assert first != second


@pytest.mark.parametrize(
    ("prefix", "meta_prefix"),
    [("jobs/x/final", ""), ("/jobs/x/final/", ""), ("", "jobs/x/final"), ("jobs", "")],
)
def test_a_direct_call_may_not_name_a_job_folder(prefix: str, meta_prefix: str) -> None:
    with pytest.raises(InvalidArgument, match="only the tasks of that job write") as err:
        output_prefix(request(prefix, meta_prefix, job="x"), "finished")
    assert "direct/" in str(err.value)


@pytest.mark.parametrize("bad", ["../up", "a//b", "a/./b", "jobs/../x"])
def test_output_prefix_rejects_bad_keys(bad: str) -> None:
    for meta in (None, task("j")):
        with pytest.raises(InvalidArgument, match="output_prefix is not a valid object key"):
            output_prefix(request(bad), "finished", meta)
