"""The gallery's web adapter: pages, review actions, live progress and exports over HTTP.

Server-rendered (Starlette + Jinja2, autoescaped) with a little plain JavaScript for live
progress (server-sent events fed by the jobs API's ``Watch``) and image zoom; every asset is
served from ``static/``. Every page but sign-in needs a signed-in session; every action is
a POST carrying the session's CSRF token, and nothing changes on a GET. Errors from the
coordinator keep their meaning: a refused name or bad input is 400, a conflict with another
reviewer 409, a missing job 404, with the coordinator's message on the page.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ganfolk.runtime.errors import InvalidArgument
from ganfolk.v1 import jobs_pb2
from services.gallery import core, ops
from services.gallery.config import GallerySettings
from services.gallery.jobs import Jobs, OutputUnavailable

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
S = jobs_pb2
# gRPC status -> HTTP status for the coordinator's refusals.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.DATA_LOSS: 502,
}
SECURITY_HEADERS = {
    # No inline script or style, no third-party anything: every asset comes from the app.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
PLACEHOLDER = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256" viewBox="0 0 256 256">'
    '<rect width="256" height="256" fill="#eee" stroke="#999"/>'
    '<text x="128" y="128" font-family="sans-serif" font-size="16" text-anchor="middle">'
    "image unavailable</text>"
    "</svg>"
)


class Gallery:
    """The app's state: settings, the coordinator client, the thumbnail cache, templates."""

    def __init__(self, settings: GallerySettings, jobs: Jobs) -> None:
        self.settings = settings
        self.jobs = jobs
        self.auth_token = settings.require("gallery_auth_token", "reviewers sign in with it")
        self.cache = core.ThumbnailCache(settings.gallery_thumbnail_cache_mb << 20)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals["filters"] = ops.FILTERS


# ---------------------------------------------------------------- sessions, sign-in and CSRF


def _gallery(request: Request) -> Gallery:
    return request.app.state.gallery  # type: ignore[no-any-return]


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


async def _form(request: Request) -> dict[str, Any]:
    """The posted form after the CSRF check (403 without the session's token)."""
    limit = _gallery(request).settings.gallery_max_upload_kb << 10
    if int(request.headers.get("content-length") or 0) > limit + 65536:
        raise HTTPException(413, f"the form is over {limit >> 10} KB")
    form = await request.form(max_part_size=limit)
    sent = str(form.get("csrf_token", ""))
    expected = str(request.session.get("csrf", ""))
    if not expected or not hmac.compare_digest(sent, expected):
        raise HTTPException(403, "the form has expired or did not come from this gallery; reload the page")
    return dict(form)


def reviewer(request: Request) -> str:
    """The signed-in reviewer's token; sends everyone else to sign in."""
    token = request.session.get("token")
    if not token:
        raise HTTPException(303, headers={"Location": f"/signin?next={request.url.path}"})
    return str(token)


def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    flash = request.session.pop("flash", None)
    return _gallery(request).templates.TemplateResponse(
        request,
        template,
        {
            "csrf_token": csrf_token(request),
            "signed_in": bool(request.session.get("token")),
            "flash": flash,
            **context,
        },
        status_code=status,
    )


def _safe_next(target: str) -> str:
    # Only paths of this app: an open redirect would let a link sign someone in elsewhere.
    return (
        target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/jobs"
    )


async def signin_page(request: Request) -> Response:
    """The sign-in form."""
    return render(request, "signin.html", next=_safe_next(request.query_params.get("next", "/jobs")))


async def signin(request: Request) -> Response:
    """Check the token (the gallery's, then the coordinator's acceptance of it) and sign in."""
    form = await _form(request)
    gallery = _gallery(request)
    token = str(form.get("token", "")).strip()
    target = _safe_next(str(form.get("next", "/jobs")))
    if not hmac.compare_digest(token.encode(), gallery.auth_token.encode()):
        return render(
            request, "signin.html", 401, error="That token is not valid for this gallery.", next=target
        )
    try:
        await gallery.jobs.probe(token)
    except grpc.aio.AioRpcError as exc:
        message = (
            "The coordinator refused this token: it needs the same one as the gallery."
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED
            else f"The coordinator at {gallery.jobs.target} is not answering ({exc.code().name}); try again."
        )
        return render(request, "signin.html", 502, error=message, next=target)
    # A fresh session on sign-in: a CSRF token planted before it is not carried over.
    request.session.clear()
    request.session["token"] = token
    csrf_token(request)
    return RedirectResponse(target, 303)


async def signout(request: Request) -> Response:
    """End the session."""
    await _form(request)
    request.session.clear()
    return RedirectResponse("/signin", 303)


# ---------------------------------------------------------------- pages


def _rpc_error(request: Request, exc: grpc.aio.AioRpcError) -> Response:
    status = HTTP_STATUS.get(exc.code(), 502)
    if status == 401:
        request.session.clear()
        return RedirectResponse("/signin", 303)
    return render(
        request, "error.html", status, message=exc.details() or exc.code().name, code=exc.code().name
    )


async def home(request: Request) -> Response:
    """The jobs list is the front page."""
    return RedirectResponse("/jobs", 303)


async def jobs_page(request: Request) -> Response:
    """Collections and portrait jobs with their state and live progress."""
    token = reviewer(request)
    try:
        jobs = await _gallery(request).jobs.list(token)
    except grpc.aio.AioRpcError as exc:
        return _rpc_error(request, exc)
    return render(request, "jobs.html", rows=ops.overview(jobs))


async def collection_page(request: Request) -> Response:
    """A collection as a grid of its portraits, filtered by review state."""
    token = reviewer(request)
    wanted = request.query_params.get("filter", "")
    try:
        job_id = ops.check_job_id(request.path_params["job_id"])
        parent = await _gallery(request).jobs.get(token, job_id)
        children = await _children(request, token, parent)
        portraits = ops.collection_portraits(parent, children, wanted)
    except InvalidArgument as exc:
        return render(request, "error.html", 400, message=str(exc), code="INVALID_ARGUMENT")
    except grpc.aio.AioRpcError as exc:
        return _rpc_error(request, exc)
    if not parent.spec.collection_size:
        return RedirectResponse(f"/jobs/{job_id}", 303)
    return render(
        request,
        "collection.html",
        job=ops.summary(parent),
        portraits=portraits,
        wanted=wanted,
        total=len(parent.children),
    )


async def _children(request: Request, token: str, parent: jobs_pb2.Job) -> dict[str, jobs_pb2.Job]:
    jobs = _gallery(request).jobs
    found = await asyncio.gather(*(jobs.get(token, c) for c in parent.children), return_exceptions=True)
    out = {}
    for child in found:
        if isinstance(child, jobs_pb2.Job):
            out[child.job_id] = child
        elif isinstance(child, grpc.aio.AioRpcError) and child.code() != grpc.StatusCode.NOT_FOUND:
            raise child
    return out


async def portrait_page(request: Request) -> Response:
    """One portrait: images, candidates, snapshots, text, provenance, token, review forms."""
    token = reviewer(request)
    try:
        job_id = ops.check_job_id(request.path_params["job_id"])
        job = await _gallery(request).jobs.get(token, job_id)
    except InvalidArgument as exc:
        return render(request, "error.html", 400, message=str(exc), code="INVALID_ARGUMENT")
    except grpc.aio.AioRpcError as exc:
        return _rpc_error(request, exc)
    if job.spec.collection_size:
        return RedirectResponse(f"/collections/{job_id}", 303)
    return _portrait(request, job)


def _portrait(
    request: Request,
    job: jobs_pb2.Job,
    status: int = 200,
    error: str = "",
    form: dict[str, Any] | None = None,
) -> Response:
    form = form or {}
    return render(
        request,
        "portrait.html",
        status,
        job=ops.summary(job),
        spec=job.spec,
        version=job.review_version,
        awaiting=job.state == S.JOB_STATE_AWAITING_REVIEW,
        mints=job.spec.mint,
        pictures=ops.pictures(job),
        first_name=form.get("first_name", job.first_name),
        last_name=form.get("last_name", job.last_name),
        backstory=form.get("backstory", job.backstory),
        description=job.description,
        provenance=ops.provenance(job),
        warnings=ops.warnings(job),
        token=ops.token(job),
        history=ops.history(job),
        error=error,
    )


async def review(request: Request) -> Response:
    """A review action (approve, revise, choose, regenerate, reject) through the jobs API."""
    token = reviewer(request)
    form = {k: v for k, v in (await _form(request)).items() if isinstance(v, str)}
    gallery = _gallery(request)
    job_id = request.path_params["job_id"]
    try:
        ask = ops.review_request(job_id, form)
        job = await gallery.jobs.review(token, ask)
    except (InvalidArgument, grpc.aio.AioRpcError) as exc:
        if isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            return _rpc_error(request, exc)
        message = str(exc) if isinstance(exc, InvalidArgument) else (exc.details() or exc.code().name)
        status = 400 if isinstance(exc, InvalidArgument) else HTTP_STATUS.get(exc.code(), 502)
        try:
            current = await gallery.jobs.get(token, ops.check_job_id(job_id))
        except (InvalidArgument, grpc.aio.AioRpcError):
            return render(request, "error.html", status, message=message, code=str(status))
        return _portrait(request, current, status, error=message, form=form)
    action = form.get("action", "")
    request.session["flash"] = {
        "approve": "Approved." + (" Minting the token now." if job.spec.mint else ""),
        "revise": "Saved the name and backstory.",
        "choose": f"Refining candidate {int(form.get('candidate', '0')) + 1}; the portrait is made again.",
        "regenerate_name": "Asking for a new name and backstory.",
        "regenerate_backstory": "Asking for a new backstory.",
        "reject": "Rejected.",
    }.get(action, "Done.")
    return RedirectResponse(f"/jobs/{job.job_id}", 303)


async def events(request: Request) -> Response:
    """Server-sent events of a job's progress, fed by the jobs API's Watch, until it ends."""
    token = reviewer(request)
    try:
        job_id = ops.check_job_id(request.path_params["job_id"])
    except InvalidArgument as exc:
        return PlainTextResponse(str(exc), 400)
    gallery = _gallery(request)

    async def stream() -> AsyncIterator[str]:
        yield "retry: 3000\n\n"
        try:
            # Watch replays the job from its start; the page already shows the job as it is now.
            now = (await gallery.jobs.get(token, job_id)).updated_at.ToNanoseconds()
            async for update in gallery.jobs.watch(token, job_id):
                job, event = update.job, update.event
                if job.updated_at.ToNanoseconds() < now:
                    continue
                data = {
                    "job_id": job.job_id,
                    "state": ops.state_name(job.state),
                    "terminal": job.state in ops.TERMINAL,
                    "percent": round(job.percent, 1),
                    "stage": ops.stage_name(event.stage or job.stage),
                    "message": event.message,
                    "version": job.review_version,
                }
                yield f"event: update\ndata: {json.dumps(data)}\n\n"
                if await request.is_disconnected():
                    return
        except grpc.aio.AioRpcError as exc:
            yield f"event: failure\ndata: {json.dumps({'message': exc.details() or exc.code().name})}\n\n"
        yield "event: end\ndata: {}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


async def image(request: Request) -> Response:
    """A job's image through the coordinator's outputs RPC, as a cached thumbnail or whole."""
    token = reviewer(request)
    gallery = _gallery(request)
    try:
        job_id = ops.check_job_id(request.path_params["job_id"])
        name = ops.check_output_name(request.path_params["name"])
        size = int(request.query_params.get("size", "0") or 0)
        if size and size not in core.THUMBNAIL_SIZES:
            raise InvalidArgument(f"size must be one of {', '.join(map(str, core.THUMBNAIL_SIZES))}")
    except (InvalidArgument, ValueError) as exc:
        return PlainTextResponse(str(exc), 400)
    try:
        job = await gallery.jobs.get(token, job_id)
        sha = _output_sha(job, name)
        if size and sha:
            cached = gallery.cache.get(sha, size)
            if cached is not None:
                return _image_response(cached, "image/png")
        data, sha, media = await gallery.jobs.output(token, job_id, name)
        if not size:
            await asyncio.to_thread(core.decode, data, gallery.settings.max_image_pixels)
            return _image_response(data, media)
        thumb = await asyncio.to_thread(core.thumbnail, data, size, gallery.settings.max_image_pixels)
        gallery.cache.put(sha, size, thumb)
        return _image_response(thumb, "image/png")
    except grpc.aio.AioRpcError as exc:
        status = HTTP_STATUS.get(exc.code(), 502)
        return _placeholder(status, exc.details() or exc.code().name)
    except (OutputUnavailable, core.ImageUnreadable) as exc:
        log.warning("image %s of %s unavailable: %s", name, job_id, exc)
        return _placeholder(404 if isinstance(exc, OutputUnavailable) else 502, str(exc))


def _output_sha(job: jobs_pb2.Job, name: str) -> str:
    """The sha256 the job records for an output (names an immutable image: the cache key)."""
    direct = {"final": job.final_image, "refined": job.refined_image, "best_sample": job.best_sample}
    if name in direct:
        return direct[name].sha256
    if name.startswith("ranked_"):
        for status in job.stages:
            if status.stage == S.STAGE_RANK and int(name[7:]) < len(status.images):
                return status.images[int(name[7:])].sha256
    return ""


def _image_response(data: bytes, media: str) -> Response:
    return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=300"})


def _placeholder(status: int, why: str) -> Response:
    return Response(
        PLACEHOLDER,
        status_code=status,
        media_type="image/svg+xml",
        headers={
            "X-Ganfolk-Error": why.encode("ascii", "replace").decode()[:200],
            "Cache-Control": "no-store",
        },
    )


# ---------------------------------------------------------------- exports and re-import


async def _collection(request: Request, token: str) -> tuple[jobs_pb2.Job, list[jobs_pb2.Job]]:
    job_id = ops.check_job_id(request.path_params["job_id"])
    parent = await _gallery(request).jobs.get(token, job_id)
    if not parent.spec.collection_size:
        raise InvalidArgument(f"job {job_id} is a single portrait, not a collection")
    children = await _children(request, token, parent)
    return parent, [children[c] for c in parent.children if c in children]


async def contact_sheet(request: Request) -> Response:
    """The collection's portraits on one PNG with names and states."""
    token = reviewer(request)
    gallery = _gallery(request)
    try:
        parent, children = await _collection(request, token)
    except InvalidArgument as exc:
        return PlainTextResponse(str(exc), 400)
    except grpc.aio.AioRpcError as exc:
        return PlainTextResponse(exc.details() or exc.code().name, HTTP_STATUS.get(exc.code(), 502))
    entries = []
    for child in children:
        data: bytes | None = None
        if ops.has(child.final_image):
            try:
                data, _, _ = await gallery.jobs.output(token, child.job_id, "final")
            except (OutputUnavailable, grpc.aio.AioRpcError) as exc:
                log.warning("contact sheet: no image for %s: %s", child.job_id, exc)
        entries.append(
            core.SheetEntry(data, ops.full_name(child) or "(no name yet)", ops.state_name(child.state))
        )
    title = f"GANfolk collection {parent.job_id}: {len(children)} portraits"
    png = await asyncio.to_thread(core.contact_sheet, entries, gallery.settings.max_image_pixels, title)
    return Response(
        png,
        media_type="image/png",
        headers={"Content-Disposition": f'attachment; filename="{parent.job_id}-contact-sheet.png"'},
    )


async def names_csv(request: Request) -> Response:
    """Names and backstories of the collection as CSV, for proofreading offline."""
    token = reviewer(request)
    try:
        parent, children = await _collection(request, token)
    except InvalidArgument as exc:
        return PlainTextResponse(str(exc), 400)
    except grpc.aio.AioRpcError as exc:
        return PlainTextResponse(exc.details() or exc.code().name, HTTP_STATUS.get(exc.code(), 502))
    rows = [
        {
            "job_id": c.job_id,
            "state": ops.state_name(c.state),
            "prompt": c.prompt,
            "first_name": c.first_name,
            "last_name": c.last_name,
            "backstory": c.backstory,
        }
        for c in children
    ]
    return Response(
        core.export_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{parent.job_id}-names.csv"'},
    )


async def import_csv(request: Request) -> Response:
    """Apply a proofread CSV: each changed row becomes a review edit (REVISE) of its portrait."""
    token = reviewer(request)
    form = await _form(request)
    gallery = _gallery(request)
    try:
        parent, children = await _collection(request, token)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidArgument("choose the CSV file to import")
        rows = core.import_csv(await upload.read())
    except InvalidArgument as exc:
        return render(request, "error.html", 400, message=str(exc), code="INVALID_ARGUMENT")
    except grpc.aio.AioRpcError as exc:
        return _rpc_error(request, exc)
    by_id = {c.job_id: c for c in children}
    results = []
    for row in rows:
        job = by_id.get(row.job_id)
        if job is None:
            results.append((row.line, row.job_id, "skipped", "not a portrait of this collection"))
            continue
        ask = jobs_pb2.ReviewRequest(
            job_id=job.job_id,
            decision=S.REVIEW_DECISION_REVISE,
            expected_version=job.review_version,
        )
        # Only what changed: an unchanged name needs no notability check.
        if row.first_name and row.first_name != job.first_name:
            ask.first_name = row.first_name
        if row.last_name and row.last_name != job.last_name:
            ask.last_name = row.last_name
        if row.backstory and row.backstory != job.backstory:
            ask.backstory = row.backstory
        if not (ask.first_name or ask.last_name or ask.backstory):
            results.append((row.line, row.job_id, "unchanged", ""))
            continue
        try:
            await gallery.jobs.review(token, ask)
            results.append((row.line, row.job_id, "applied", ""))
        except grpc.aio.AioRpcError as exc:
            results.append((row.line, row.job_id, "refused", exc.details() or exc.code().name))
    status = 200 if all(r[2] != "refused" for r in results) else 400
    return render(request, "imported.html", status, job=ops.summary(parent), results=results)


# ---------------------------------------------------------------- the app


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 303 and exc.headers:
        return RedirectResponse(exc.headers["Location"], 303)
    return render(request, "error.html", exc.status_code, message=exc.detail, code=str(exc.status_code))


def security_headers(app: Any) -> Callable[..., Awaitable[None]]:
    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items())
                message["headers"] = headers
            await send(message)

        await app(scope, receive, with_headers)

    return wrapped


def build_app(gallery: Gallery, session_secret: str) -> Starlette:
    """The Starlette app of a gallery."""
    settings = gallery.settings
    routes = [
        Route("/", home),
        Route("/signin", signin_page, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/jobs", jobs_page),
        Route("/jobs/{job_id}", portrait_page),
        Route("/jobs/{job_id}/events", events),
        Route("/jobs/{job_id}/review", review, methods=["POST"]),
        Route("/jobs/{job_id}/images/{name}", image),
        Route("/collections/{job_id}", collection_page),
        Route("/collections/{job_id}/contact-sheet.png", contact_sheet),
        Route("/collections/{job_id}/names.csv", names_csv, methods=["GET"]),
        Route("/collections/{job_id}/names.csv", import_csv, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(security_headers),
            Middleware(
                SessionMiddleware,
                secret_key=session_secret,
                session_cookie="ganfolk_gallery",
                max_age=settings.gallery_session_max_age_s,
                same_site="strict",
                https_only=settings.gallery_secure_cookies,
            ),
        ],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.gallery = gallery
    return app
