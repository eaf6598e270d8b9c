"""The HTTP API: submit, look, cancel, retry, results, logs, stats. Every answer is JSON (results: CSV or
JSON lines), every failure ``{"success": false, "error": "..."}`` with its status: 400 a bad request or
query, 401 no or a wrong token, 403 refused as cross-site, 404 no such job (or route), 405 wrong method,
409 refused by the job's state (a duplicate id, cancelling a finished job, retrying a running one), 413
a body over the limit, 415 a body that is not JSON (or CSV where one is taken), 503 the spool cannot be
written (permissions, a full disk).

Submitting writes a request file into the spool with ``control.submit``, exactly as `jobrunner submit`
does; cancel and retry are ``control.cancel`` and ``control.retry``, as the CLI's. The server never talks
to a daemon. The old platform's shapes are translated by ``legacy``; the native routes answer with the
status files' documents as stored (the same as `jobrunner status --json`).

No path in a request reaches the filesystem: a job id is checked by ``validate_id`` and turned into a path
by ``Layout`` alone, and an enrich request may not name a local DNC list file (``options.dnc_list``),
which the daemon would open.
"""

from __future__ import annotations

import io
import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import control, leads, listing, results, stats
from ..errors import ConfigError, DuplicateJob, InvalidRequest, JobrunnerError, NotFound
from ..layout import Layout, validate_id
from ..request import decode
from . import legacy, lookup
from .config import WebConfig

Doc = dict[str, Any]
MAX_LOG_EVENTS = 10_000


class Problem(Exception):
    """An answer other than success, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def status_of(exc: Exception) -> int:
    if isinstance(exc, Problem):
        return exc.status
    if isinstance(exc, DuplicateJob):
        return 409
    if isinstance(exc, InvalidRequest):
        return 400
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, ConfigError):
        return 503  # the data dir is not usable: nothing the request can change
    return 409  # a JobrunnerError: the job's state refuses it


def failure(status: int, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "error": message}, status_code=status)


def _config(request: Request) -> WebConfig:
    config: WebConfig = request.app.state.config
    return config


def _layout(request: Request) -> Layout:
    return _config(request).layout


def _job_id(request: Request) -> str:
    job_id = str(request.path_params["job_id"])
    try:
        return validate_id(job_id)
    except InvalidRequest as exc:
        raise Problem(400, str(exc)) from None


def _found(layout: Layout, job_id: str) -> Doc:
    doc = lookup.find(layout, job_id)
    if doc is None:
        raise NotFound(f"no job {job_id!r}")
    return doc


async def _json_body(request: Request) -> dict[str, Any]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise Problem(415, f"send the body as JSON (Content-Type: application/json), not {kind or 'nothing'}")
    return decode(await request.body())


def _no_paths(req: Doc) -> None:
    options = req.get("options")
    if isinstance(options, dict) and options.get("dnc_list") is not None:
        raise InvalidRequest("options.dnc_list names a file on the server; the HTTP API takes no file paths "
                             "(submit with `jobrunner enrich` on the server, or leave it out)")


def _submit(layout: Layout, req: Doc) -> str:
    _no_paths(req)
    job_id = req.get("id")
    if isinstance(job_id, str):
        validate_id(job_id)
        if lookup.find(layout, job_id) is not None:
            raise DuplicateJob(f"a job with id {job_id!r} exists already; an id runs once")
    try:
        return control.submit(layout, json.dumps(req, ensure_ascii=False).encode()).job_id
    except OSError as exc:  # the server's user may not write into the spool (or the disk is full)
        raise Problem(503, f"cannot drop the request into the spool: {exc.strerror or exc}") from None


async def _accepted(request: Request, req: Doc) -> JSONResponse:
    job_id = await run_in_threadpool(_submit, _layout(request), req)
    return JSONResponse({"success": True, "jobId": job_id}, status_code=202)


# ------------------------------------------------------------------------------------------ submitting
async def submit_any(request: Request) -> Response:
    """POST /api/jobs: a request in the native form, of any type (what a file in the spool would say)."""
    return await _accepted(request, await _json_body(request))


async def submit_scrape(request: Request) -> Response:
    return await _accepted(request, legacy.scrape_request(await _json_body(request)))


async def submit_enrich(request: Request) -> Response:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        req = await _enrich_upload(request)
    elif kind in ("text/csv", "application/csv"):
        rows = await run_in_threadpool(leads.read_csv, await request.body())
        req = {"type": "enrich", "leads": _some(rows)}
    else:
        body = await _json_body(request)
        if "fromJob" in body:
            req = await run_in_threadpool(_from_job, _layout(request), body)
        else:
            req = legacy.enrich_request(body)
    return await _accepted(request, req)


def _from_job(layout: Layout, body: dict[str, Any]) -> Doc:
    """``{fromJob: ID, options?, metadata?, id?}``: the leads a scrape job found (`jobrunner enrich --from-job`)."""
    extra = [k for k in body if k not in ("fromJob", "options", "metadata", "id")]
    if extra:
        raise InvalidRequest(f"unknown field(s) {', '.join(map(repr, extra))} with fromJob; it takes options, "
                             "metadata and id")
    source = body["fromJob"]
    try:
        validate_id(source)
    except InvalidRequest as exc:
        raise Problem(400, f"fromJob: {exc}") from None
    _found(layout, source)
    path = layout.results(source)
    if not path.exists():
        raise NotFound(f"job {source} has no results to enrich")
    rows = leads.from_scrape_rows(results.read_rows(path))
    if not rows:
        raise InvalidRequest(f"job {source} found no leads")
    if len(rows) > leads.MAX_LEADS:
        raise InvalidRequest(f"job {source} found {len(rows):,} leads; an enrich job takes at most {leads.MAX_LEADS:,}")
    metadata = body.get("metadata")
    req: Doc = {"type": "enrich", "leads": rows,
                "metadata": {**(metadata if isinstance(metadata, dict) else {}), "from_job": source}}
    req.update({k: body[k] for k in ("options", "id") if k in body})
    return req


def _some(rows: list[Doc]) -> list[Doc]:
    if not rows:
        raise InvalidRequest("the CSV has headers but no leads")
    return rows


async def _enrich_upload(request: Request) -> Doc:
    """A form with a CSV file (field ``file``) and optional ``options`` and ``metadata`` (JSON text) and ``id``."""
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidRequest("upload the CSV as the form field 'file'")
        data = await upload.read()
        req: Doc = {"type": "enrich", "leads": _some(await run_in_threadpool(leads.read_csv, data))}
        for name in ("options", "metadata"):
            text = form.get(name)
            if isinstance(text, str) and text.strip():
                try:
                    req[name] = json.loads(text)
                except ValueError:
                    raise InvalidRequest(f"the form field {name!r} must be a JSON object") from None
        job_id = form.get("id")
        if isinstance(job_id, str) and job_id.strip():
            req["id"] = job_id.strip()
    return req


# ------------------------------------------------------------------------------------------ looking
async def old_status(request: Request) -> Response:
    """GET /api/jobs/status?jobId=ID | activeOnly=true | limit=N, in the old shapes."""
    q = request.query_params
    job_id = q.get("jobId")
    active_only = lookup.parse_bool("activeOnly", q.get("activeOnly"))
    limit = lookup.parse_limit(q.get("limit"))
    layout = _layout(request)
    if job_id is not None:
        if active_only or q.get("limit"):
            raise InvalidRequest("jobId cannot be combined with activeOnly or limit")
        try:
            validate_id(job_id)
        except InvalidRequest as exc:
            raise Problem(400, str(exc)) from None
        doc = await run_in_threadpool(_found, layout, job_id)
        return JSONResponse({"success": True, "job": legacy.old_job(doc)})
    if active_only:
        docs = (await run_in_threadpool(listing.active, layout))[0][:limit]
    else:
        docs = await run_in_threadpool(listing.latest, layout, limit)
    jobs = [legacy.old_job(d) for d in docs]
    return JSONResponse({"success": True, "jobs": jobs, "count": len(jobs)})


async def list_jobs(request: Request) -> Response:
    """GET /api/jobs?status=&type=&since=&q=&active=&limit=: status documents, newest first."""
    filters = lookup.Filters.of(request.query_params)
    docs = await run_in_threadpool(lookup.runs, _layout(request), filters)
    return JSONResponse({"jobs": docs, "count": len(docs)})


async def one_job(request: Request) -> Response:
    job_id = _job_id(request)
    return JSONResponse(await run_in_threadpool(_found, _layout(request), job_id))


# ------------------------------------------------------------------------------------------ acting
def _cancel(layout: Layout, job_id: str) -> tuple[int, Doc]:
    outcome = control.cancel(layout, job_id)
    if outcome == "final":
        doc = _found(layout, job_id)
        raise JobrunnerError(f"job {job_id} is already {doc['status']}")
    if outcome == "requested":
        return 202, {"success": True, "jobId": job_id, "status": "cancelling",
                     "message": "the job is running: it stops at its next step"}
    return 200, {"success": True, "jobId": job_id, "status": "cancelled"}


async def cancel(request: Request) -> Response:
    job_id = _job_id(request)
    code, body = await run_in_threadpool(_cancel, _layout(request), job_id)
    return JSONResponse(body, status_code=code)


async def retry(request: Request) -> Response:
    job_id = _job_id(request)
    doc = await run_in_threadpool(control.retry, _layout(request), job_id)
    return JSONResponse({"success": True, "jobId": job_id, "status": str(doc.status),
                         "maxAttempts": doc.max_attempts})


# ------------------------------------------------------------------------------------------ results, logs, stats
def _export(layout: Layout, job_id: str, fmt: str) -> bytes:
    doc = _found(layout, job_id)
    path = layout.results(job_id)
    if not path.exists():
        final = doc.get("status") in listing.FINAL
        raise NotFound(f"job {job_id} ({doc.get('status')}) has no results" + ("" if final else " yet"))
    buf = io.StringIO()
    results.export(path, fmt, buf)
    return buf.getvalue().encode()


async def download_results(request: Request) -> Response:
    """GET /api/jobs/{id}/results?format=csv|jsonl: the results so far, as a file."""
    job_id = _job_id(request)
    fmt = request.query_params.get("format", "jsonl")
    if fmt not in ("jsonl", "csv"):
        raise InvalidRequest(f"format must be csv or jsonl (got {fmt[:20]!r})")
    data = await run_in_threadpool(_export, _layout(request), job_id, fmt)
    kind = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return Response(data, media_type=kind,
                    headers={"content-disposition": f'attachment; filename="{job_id}.{fmt}"'})


def _events(layout: Layout, job_id: str, tail: int) -> list[Doc]:
    from ..timeline import Follower

    _found(layout, job_id)
    return Follower(layout, job_id).poll()[-tail:]


async def job_logs(request: Request) -> Response:
    """GET /api/jobs/{id}/logs?tail=N: its attempts and its own log, in time order (`jobrunner logs --json`)."""
    job_id = _job_id(request)
    tail = lookup.parse_limit(request.query_params.get("tail"), default=1000, most=MAX_LOG_EVENTS)
    events = await run_in_threadpool(_events, _layout(request), job_id, tail)
    return JSONResponse({"jobId": job_id, "events": events, "count": len(events)})


async def job_stats(request: Request) -> Response:
    """GET /api/stats?since=24h&type=T: `jobrunner stats --json`."""
    q = request.query_params
    window = lookup.parse_since(q.get("since"), default="24h")
    job_type = lookup.parse_type(q.get("type"))
    doc = await run_in_threadpool(lambda: stats.compute(_layout(request), window_s=window, job_type=job_type))
    return JSONResponse(doc)


async def stats_over_time(request: Request) -> Response:
    """GET /api/stats/over-time?since=24h&buckets=24&type=T: finished jobs and rates per slice of time."""
    q = request.query_params
    window = lookup.parse_since(q.get("since"), default="24h")
    if window is None:
        raise InvalidRequest("over-time needs a window with a length (e.g. 24h, 7d), not 'all'")
    buckets = lookup.parse_limit(q.get("buckets"), default=24, most=500)
    job_type = lookup.parse_type(q.get("type"))
    doc = await run_in_threadpool(lambda: stats.over_time(_layout(request), window_s=window, buckets=buckets,
                                                          job_type=job_type))
    return JSONResponse(doc)


ROUTES = [
    Route("/api/jobs", submit_any, methods=["POST"]),
    Route("/api/jobs", list_jobs, methods=["GET"]),
    Route("/api/jobs/scrape", submit_scrape, methods=["POST"]),
    Route("/api/jobs/enrich", submit_enrich, methods=["POST"]),
    Route("/api/jobs/status", old_status, methods=["GET"]),
    Route("/api/jobs/{job_id}", one_job, methods=["GET"]),
    Route("/api/jobs/{job_id}/cancel", cancel, methods=["POST"]),
    Route("/api/jobs/{job_id}/retry", retry, methods=["POST"]),
    Route("/api/jobs/{job_id}/results", download_results, methods=["GET"]),
    Route("/api/jobs/{job_id}/logs", job_logs, methods=["GET"]),
    Route("/api/stats", job_stats, methods=["GET"]),
    Route("/api/stats/over-time", stats_over_time, methods=["GET"]),
]
