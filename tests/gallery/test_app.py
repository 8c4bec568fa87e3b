"""The gallery's routes against a real coordinator, NATS, store and chain (tiny weights).

One collection of two portraits, both stopped for review by default; the routes are driven
over real HTTP with a cookie jar: sign-in and CSRF, pages, images, review actions and their
refusals (a famous name, markup, a backstory over the limit, a second reviewer, a job no
longer awaiting review, a deleted image), exports and a re-imported CSV.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from PIL import Image

from ganfolk.v1 import jobs_pb2
from tests.e2e.stack import Models, tiny_models
from tests.gallery.stack import Browser, Stack, collection_awaiting_review, gallery_stack, wait_job
from tests.mint.fixtures import anvil  # noqa: F401  (session fixture)

S = jobs_pb2


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return tiny_models(tmp_path_factory.mktemp("gallery-models"))


@pytest.fixture(scope="module")
async def stack(
    models: Models,
    nats_server: Any,
    anvil: Any,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    root = tmp_path_factory.mktemp("gallery-app")
    async with gallery_stack(models, nats_server.url, root / "objects", anvil.url) as s:
        yield s


@pytest.fixture(scope="module")
async def collection(stack: Stack) -> tuple[jobs_pb2.Job, list[jobs_pb2.Job]]:
    return await collection_awaiting_review(stack)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found
    return found.group(1)


def version_of(html: str) -> str:
    found = re.search(r'name="version" value="(\d+)"', html)
    assert found, "no review form on the page"
    return found.group(1)


async def review(b: Browser, job_id: str, **fields: str) -> Any:
    page = await b.get(f"/jobs/{job_id}")
    form = {"csrf_token": csrf_of(page.text), "version": version_of(page.text), **fields}
    return await b.post(f"/jobs/{job_id}/review", form)


async def test_sign_in_and_csrf(stack: Stack) -> None:
    b = Browser(stack.url)
    away = await b.get("/jobs")
    assert away.status == 303 and away.headers["Location"].startswith("/signin")
    no_csrf = await b.post("/signin", {"token": "x"})
    assert no_csrf.status == 403
    wrong = await b.sign_in("not-the-token")
    assert wrong.status == 401 and "not valid" in wrong.text
    ok = await b.sign_in()
    assert ok.status == 303 and ok.headers["Location"] == "/jobs"
    assert (await b.get("/jobs")).status == 200
    # Actions are POSTs only, and only with the session's CSRF token.
    assert (await b.get("/jobs/job-000000000000000000000000/review")).status == 405
    forged = await b.post("/jobs/job-000000000000000000000000/review", {"action": "approve"})
    assert forged.status == 403
    headers = (await b.get("/jobs")).headers
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert (await b.post("/signout", {"csrf_token": await b.csrf("/jobs")})).status == 303
    assert (await b.get("/jobs")).status == 303


async def test_pages_images_and_refusals(stack: Stack, collection: Any) -> None:
    parent, (first, second) = collection
    b = Browser(stack.url)
    await b.sign_in()

    jobs = await b.get("/jobs")
    assert parent.job_id in jobs.text and "2 awaiting review" in jobs.text
    grid = await b.get(f"/collections/{parent.job_id}")
    assert grid.status == 200
    for child in (first, second):
        assert f"{child.first_name} {child.last_name}" in grid.text
        assert f"/jobs/{child.job_id}/images/final?size=256" in grid.text
    assert all(' alt="' in tag for tag in re.findall(r"<img [^>]*>", grid.text))
    assert "0 of 2 portraits" in (await b.get(f"/collections/{parent.job_id}?filter=minted")).text
    assert "2 of 2 portraits" in (await b.get(f"/collections/{parent.job_id}?filter=awaiting")).text
    assert (await b.get(f"/collections/{parent.job_id}?filter=bogus")).status == 400

    page = await b.get(f"/jobs/{first.job_id}")
    assert page.status == 200
    assert "Top 3 candidates ranked by CLIP" in page.text and "score" in page.text
    assert "iteration 0" in page.text and "iteration 3 (final)" in page.text  # snapshots every 1 of 3
    assert "Provenance" in page.text and "stylegan" in page.text
    assert first.prompt in page.text

    thumb = await b.get(f"/jobs/{first.job_id}/images/final?size=128")
    assert thumb.status == 200 and thumb.headers["Content-Type"] == "image/png"
    assert max(Image.open(io.BytesIO(thumb.body)).size) == 128
    full = await b.get(f"/jobs/{first.job_id}/images/final")
    assert Image.open(io.BytesIO(full.body)).size == (128, 128)
    assert (await b.get(f"/jobs/{first.job_id}/images/final?size=100")).status == 400
    assert (await b.get(f"/jobs/{first.job_id}/images/..%2Fetc")).status in (400, 404)
    assert (await b.get(f"/jobs/{first.job_id}/images/ranked_02?size=128")).status == 200
    assert (await b.get("/jobs/job-nope")).status == 400
    assert (await b.get("/jobs/job-000000000000000000000000")).status == 404

    # A famous name is refused with the text service's reason; nothing changes.
    famous = await review(b, first.job_id, action="revise", first_name="Albert", last_name="Einstein")
    assert famous.status == 400
    assert "refused" in famous.text and "notable" in famous.text
    assert (await wait_job(stack, first.job_id, {S.JOB_STATE_AWAITING_REVIEW})).first_name == first.first_name

    # Markup is kept as text and shown escaped, never as HTML.
    story = "<script>alert('x')</script> <b>bold</b> grew up by the sea."
    saved = await review(b, first.job_id, action="revise", backstory=story)
    assert saved.status == 303
    shown = await b.get(f"/jobs/{first.job_id}")
    assert "&lt;script&gt;alert(" in shown.text and "<script>alert" not in shown.text
    assert "Saved the name and backstory." in shown.text
    too_long = await review(b, first.job_id, action="revise", backstory="word " * 500)
    assert too_long.status == 400 and "keep it to 2,000" in too_long.text

    # Two reviewers: the second acts on the version both loaded and gets a conflict.
    page = await b.get(f"/jobs/{first.job_id}")
    stale = {"csrf_token": csrf_of(page.text), "version": version_of(page.text)}
    assert (
        await b.post(f"/jobs/{first.job_id}/review", {**stale, "action": "revise", "first_name": "Ilka"})
    ).status == 303
    other = await b.post(f"/jobs/{first.job_id}/review", {**stale, "action": "revise", "first_name": "Oona"})
    assert other.status == 409 and "changed since you loaded it" in other.text
    job = await wait_job(stack, first.job_id, {S.JOB_STATE_AWAITING_REVIEW})
    assert job.first_name == "Ilka" and job.review_version == 2

    # Exports: a contact sheet of both portraits and a CSV, edited and imported back.
    sheet = await b.get(f"/collections/{parent.job_id}/contact-sheet.png")
    assert sheet.status == 200 and Image.open(io.BytesIO(sheet.body)).format == "PNG"
    exported = await b.get(f"/collections/{parent.job_id}/names.csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["job_id"] for r in rows] == [first.job_id, second.job_id]
    assert rows[0]["first_name"] == "Ilka"
    rows[1]["backstory"] = "Proofread offline: a quiet life by the harbour."
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    boundary = "gallery-test-boundary"
    grid = await b.get(f"/collections/{parent.job_id}")
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{csrf_of(grid.text)}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="names.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\n{out.getvalue()}\r\n--{boundary}--\r\n"
    ).encode()
    imported = await b.post(
        f"/collections/{parent.job_id}/names.csv", {}, body, f"multipart/form-data; boundary={boundary}"
    )
    assert imported.status == 200, imported.text
    assert "applied" in imported.text and "unchanged" in imported.text
    job = await wait_job(stack, second.job_id, {S.JOB_STATE_AWAITING_REVIEW})
    assert job.backstory == "Proofread offline: a quiet life by the harbour."

    # Reject the second; acting on it again is refused: it no longer awaits review.
    assert (await review(b, second.job_id, action="reject", note="too blurry")).status == 303
    job = await wait_job(stack, second.job_id, {S.JOB_STATE_REJECTED})
    assert "too blurry" in job.error
    page = await b.get(f"/jobs/{second.job_id}")
    assert 'name="version"' not in page.text  # no review forms any more
    late = await b.post(
        f"/jobs/{second.job_id}/review",
        {"csrf_token": csrf_of(page.text), "version": "3", "action": "approve"},
    )
    assert late.status == 409 and "not awaiting review" in late.text
    assert "1 of 2 portraits" in (await b.get(f"/collections/{parent.job_id}?filter=rejected")).text

    # A deleted image: a placeholder with the reason, and the page still renders.
    final = next(p for p in stack.store.rglob("final.png") if second.job_id in str(p))
    final.unlink()
    missing = await b.get(f"/jobs/{second.job_id}/images/final?size=256")
    assert missing.status in (404, 502) and missing.headers["Content-Type"] == "image/svg+xml"
    assert (await b.get(f"/jobs/{second.job_id}")).status == 200
