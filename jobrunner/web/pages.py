"""The dashboard: server-rendered HTML with a little JavaScript (``static/app.js``) and no CDN.

Pages: ``/`` the Background Jobs panel (active jobs with progress bars, badges and error boxes, forms to
start a scrape or enrich a CSV, success and failure over time), ``/runs`` the runs list (filters by state,
type and time; search by id), ``/jobs/{id}`` a job (attempts, its step log, errors, a preview of the
results with downloads, cancel and retry). The live parts are fragments (``/fragments/...``) that the
script fetches again every few seconds while auto-refresh is on; a page works without the script, it just
does not refresh itself. Every value is escaped; nothing here writes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from html import escape
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import listing, results, stats
from ..errors import InvalidRequest
from ..layout import Layout, validate_id
from . import charts, guard, lookup
from .config import WebConfig

Doc = dict[str, Any]
PREVIEW_ROWS = 20
LOG_EVENTS = 300
RANGES = {"24h": (86400.0, 24), "7d": (7 * 86400.0, 28), "30d": (30 * 86400.0, 30)}
SINCE_CHOICES = (("", "any time"), ("1h", "last hour"), ("24h", "last 24 hours"), ("7d", "last 7 days"),
                 ("30d", "last 30 days"))
LIMIT_CHOICES = (50, 100, 500)


def e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


# ------------------------------------------------------------------------------------------ static files
def _load_static() -> dict[str, tuple[bytes, str]]:
    """The assets, read once from the package: the name in a request is looked up here, never opened."""
    kinds = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
    out = {}
    for entry in resources.files("jobrunner.web").joinpath("static").iterdir():
        suffix = entry.name[entry.name.rfind("."):]
        if suffix in kinds:
            out[entry.name] = (entry.read_bytes(), kinds[suffix])
    return out


STATIC = _load_static()
VERSION = hashlib.sha256(b"".join(data for data, _ in STATIC.values())).hexdigest()[:10]


async def static(request: Request) -> Response:
    found = STATIC.get(str(request.path_params["name"]))
    if found is None:
        return Response("no such file\n", status_code=404, media_type="text/plain")
    return Response(found[0], media_type=found[1], headers={"cache-control": "public, max-age=300"})


# ------------------------------------------------------------------------------------------ pieces
def page(request: Request, title: str, body: str, status: int = 200) -> HTMLResponse:
    config: WebConfig = request.app.state.config
    auth = request.scope.get("state", {}).get("auth")
    logout = ('<form method="post" action="/logout" class="logout"><button type="submit">Log out</button></form>'
              if auth == "cookie" else "")
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · jobrunner</title>
<link rel="stylesheet" href="/static/app.css?v={VERSION}">
<script src="/static/app.js?v={VERSION}" defer></script></head>
<body data-refresh-ms="{config.refresh_ms}">
<header class="top"><a class="brand" href="/">jobrunner</a>
<nav><a href="/">Background jobs</a><a href="/runs">Runs</a></nav>{logout}</header>
<main>
{body}
</main></body></html>
"""
    return HTMLResponse(html, status_code=status)


def badge(state: object) -> str:
    return f'<span class="badge badge-{e(state)}">{e(state)}</span>'


def bar(doc: Doc) -> str:
    p = doc.get("progress")
    if not isinstance(p, dict):
        p = {}
    current, total, pct = p.get("current") or 0, p.get("total"), p.get("percentage")
    if total:
        meter = f'<progress max="100" value="{float(pct or 0):.1f}">{float(pct or 0):.0f}%</progress>'
        text = f"{current}/{total} · {float(pct or 0):.0f}%"
    elif doc.get("status") == "completed":
        meter, text = '<progress max="100" value="100">100%</progress>', str(current or "")
    else:
        meter, text = "<progress></progress>", str(current) if current else ""
    note = f" · {e(p.get('note'))}" if p.get("note") else ""
    return f'<span class="meter">{meter}<span class="pct">{e(text)}{note}</span></span>'


def error_box(doc: Doc) -> str:
    err = doc.get("error")
    if not isinstance(err, dict):
        return ""
    when = ""
    if doc.get("status") == "pending" and doc.get("next_attempt_at"):
        when = f' <span class="muted">next attempt at {e(doc["next_attempt_at"])}</span>'
    return (f'<div class="error-box" role="alert"><strong>{e(err.get("type"))}</strong> '
            f'{e(err.get("message"))}{when}</div>')


def job_link(job_id: object) -> str:
    return f'<a class="job-id" href="/jobs/{e(job_id)}">{e(job_id)}</a>'


def attempt_text(doc: Doc) -> str:
    return f"{doc.get('attempt') or 0}/{doc.get('max_attempts') or '-'}"


def short_time(value: object) -> str:
    text = str(value or "")
    return text[:19].replace("T", " ") if text else "-"


# ------------------------------------------------------------------------------------------ the panel
def _job_item(doc: Doc, detail: str, extra: str = "") -> str:
    """One job of the panel: its id, type, badge and ``detail``, then ``extra`` (a bar) and its error."""
    return (f'<li class="job" data-job-id="{e(doc.get("id"))}" data-status="{e(doc.get("status"))}">'
            f'<div class="job-line">{job_link(doc.get("id"))} <span class="type">{e(doc.get("type"))}</span>'
            f' {badge(doc.get("status"))} <span class="muted">{e(detail)}</span></div>{extra}{error_box(doc)}</li>')


def panel_fragment(layout: Layout) -> str:
    docs, queued = listing.active(layout)
    running = sum(1 for d in docs if d.get("status") == "running")
    pending = len(docs) - running
    recent = [d for d in listing.latest(layout, 8) if d.get("status") in listing.FINAL][:5]
    out = ['<div id="panel" data-refresh="/fragments/panel">',
           f'<p class="counts"><span data-count="running">{running} running</span> · '
           f'<span data-count="pending">{pending} pending</span> · '
           f'<span data-count="queued">{queued} queued file(s)</span></p>']
    if docs:
        out.append('<ul class="jobs">')
        for d in docs:
            out.append(_job_item(d, f"attempt {attempt_text(d)}", bar(d)))
        out.append("</ul>")
    else:
        out.append('<p class="empty">No active jobs.</p>')
    if recent:
        out.append('<h2 class="sub">Recently finished</h2><ul class="jobs recent">')
        for d in recent:
            out.append(_job_item(d, short_time(d.get("finished_at"))))
        out.append("</ul>")
    out.append("</div>")
    return "".join(out)


def rates_fragment(layout: Layout, chosen: str) -> str:
    window, buckets = RANGES[chosen]
    doc = stats.over_time(layout, window_s=window, buckets=buckets)
    total = sum(b["total"] for b in doc["buckets"])
    done = {s: sum(b[s] for b in doc["buckets"]) for s in ("completed", "failed", "cancelled")}
    links = " ".join(f'<a href="/?range={r}" data-range="{r}"' + (' class="on"' if r == chosen else "") + f">{r}</a>"
                     for r in RANGES)
    if total:
        summary = (f'<p class="rates-summary"><span class="ok">{done["completed"] / total:.1%} success</span> · '
                   f'<span class="bad">{done["failed"] / total:.1%} failure</span> · '
                   f'{done["cancelled"] / total:.1%} cancelled · {total:,} finished</p>')
    else:
        summary = '<p class="rates-summary">No job finished in this window.</p>'
    legend = ('<p class="legend"><span class="key key-completed"></span>completed '
              '<span class="key key-failed"></span>failed <span class="key key-cancelled"></span>cancelled</p>')
    return (f'<div id="rates" data-refresh="/fragments/rates?range={chosen}">'
            f'<div class="panel-head"><h2>Success and failure over time</h2><span class="ranges">{links}</span></div>'
            f'{summary}{charts.rates_svg(doc)}{legend}</div>')


SCRAPE_FORM = """<form class="api-form" data-api="/api/jobs/scrape" data-json="scrape" id="scrape-form">
<label>Title keywords <input name="titleKeywords" placeholder="Head of Growth"></label>
<label>Location <input name="location" placeholder="Denver"></label>
<label>Keywords <input name="keywords"></label>
<label>Current company <input name="currentCompany"></label>
<label>Max pages <input name="maxPages" type="number" min="1" max="100" value="10"></label>
<label>Max results <input name="maxResults" type="number" min="1" max="10000" value="250"></label>
<button type="submit">Start scrape</button><output class="form-result" aria-live="polite"></output></form>"""

ENRICH_FORM = """<form class="api-form" data-api="/api/jobs/enrich" data-multipart="1" id="enrich-form">
<label>Leads CSV <input name="file" type="file" accept=".csv,text/csv" required></label>
<button type="submit">Start enrichment</button><output class="form-result" aria-live="polite"></output></form>"""


async def dashboard(request: Request) -> Response:
    chosen = request.query_params.get("range", "24h")
    if chosen not in RANGES:
        chosen = "24h"
    layout: Layout = request.app.state.config.layout
    panel, rates = await run_in_threadpool(lambda: (panel_fragment(layout), rates_fragment(layout, chosen)))
    body = f"""<section class="card" id="background-jobs">
<div class="panel-head"><h1>Background Jobs</h1>
<label class="toggle"><input type="checkbox" id="auto-refresh" checked> Auto-refresh</label></div>
{panel}
</section>
<div class="grid">
<section class="card"><h2>New scrape</h2>{SCRAPE_FORM}</section>
<section class="card"><h2>Enrich a CSV of leads</h2>{ENRICH_FORM}</section>
</div>
<section class="card">{rates}</section>"""
    return page(request, "Background jobs", body)


# ------------------------------------------------------------------------------------------ runs
def runs_fragment(layout: Layout, filters: lookup.Filters, query: str) -> str:
    docs = lookup.runs(layout, filters)
    out = [f'<div id="runs" data-refresh="/fragments/runs?{e(query)}">',
           f'<p class="muted">{len(docs)} job(s) shown, newest first'
           + (f" (the first {filters.limit})" if len(docs) >= filters.limit else "") + "</p>"]
    if not docs:
        out.append('<p class="empty">No job matches.</p></div>')
        return "".join(out)
    out.append('<table class="runs"><thead><tr><th>Job</th><th>Type</th><th>Status</th><th>Progress</th>'
               "<th>Attempt</th><th>Created</th><th>Finished</th><th>Error</th></tr></thead><tbody>")
    for d in docs:
        err = d.get("error") if isinstance(d.get("error"), dict) else None
        out.append(f'<tr data-job-id="{e(d.get("id"))}" data-status="{e(d.get("status"))}"><td>{job_link(d.get("id"))}'
                   f'</td><td>{e(d.get("type"))}</td><td>{badge(d.get("status"))}</td><td>{bar(d)}</td>'
                   f'<td>{e(attempt_text(d))}</td><td>{e(short_time(d.get("created_at")))}</td>'
                   f'<td>{e(short_time(d.get("finished_at")))}</td>'
                   f'<td class="err">{e(str(err.get("type")) + ": " + str(err.get("message"))[:80]) if err else ""}'
                   "</td></tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _select(name: str, choices: list[tuple[str, str]], chosen: str) -> str:
    opts = "".join(f'<option value="{e(v)}"' + (" selected" if v == chosen else "") + f">{e(label)}</option>"
                   for v, label in choices)
    return f'<select name="{name}" id="filter-{name}">{opts}</select>'


async def runs(request: Request) -> Response:
    q = request.query_params
    try:
        filters = lookup.Filters.of(q)
    except InvalidRequest as exc:
        return page(request, "Runs", f'<div class="error-box" role="alert">{e(exc)}</div>', status=400)
    known: list[str] = request.app.state.types
    kept = {k: q[k] for k in ("status", "type", "since", "q", "limit") if q.get(k)}
    query = urlencode(kept)
    layout: Layout = request.app.state.config.layout
    table = await run_in_threadpool(runs_fragment, layout, filters, query)
    form = (f'<form class="filters" method="get" action="/runs" id="filters">'
            f'<label>Id <input name="q" id="filter-q" value="{e(q.get("q", ""))}" placeholder="part of an id"></label>'
            f'<label>Status {_select("status", [("", "any"), *((s, s) for s in lookup.STATES)], q.get("status", ""))}'
            f'</label><label>Type {_select("type", [("", "any"), *((t, t) for t in known)], q.get("type", ""))}</label>'
            f'<label>Finished {_select("since", list(SINCE_CHOICES), q.get("since", ""))}</label>'
            f'<label>Show {_select("limit", [(str(n), str(n)) for n in LIMIT_CHOICES], str(filters.limit))}</label>'
            '<button type="submit">Filter</button></form>')
    body = (f'<section class="card"><div class="panel-head"><h1>Runs</h1><label class="toggle"><input type="checkbox" '
            f'id="auto-refresh" checked> Auto-refresh</label></div>{form}{table}</section>')
    return page(request, "Runs", body)


# ------------------------------------------------------------------------------------------ a job
def _history(doc: Doc) -> str:
    rows = [h for h in doc.get("history") or [] if isinstance(h, dict)]
    if not rows:
        return '<p class="muted">No attempt has ended yet.</p>'
    out = ['<table class="attempts"><thead><tr><th>#</th><th>Outcome</th><th>Started</th><th>Ended</th>'
           "<th>Worker</th><th>Error</th><th>Next in</th></tr></thead><tbody>"]
    for h in rows:
        err = h.get("error") if isinstance(h.get("error"), dict) else None
        delay = h.get("delay_s")
        out.append(f'<tr><td>{e(h.get("attempt"))}</td><td>{e(h.get("outcome"))}</td>'
                   f'<td>{e(short_time(h.get("started_at")))}</td><td>{e(short_time(h.get("ended_at")))}</td>'
                   f'<td>{e(h.get("worker") or "")}</td>'
                   f'<td class="err">{e(str(err.get("type")) + ": " + str(err.get("message"))) if err else ""}</td>'
                   f'<td>{e(f"{delay:g}s") if isinstance(delay, int | float) else ""}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _log(layout: Layout, job_id: str) -> str:
    from ..timeline import Follower, render

    events = Follower(layout, job_id).poll()
    if not events:
        return '<p class="muted">Nothing logged yet.</p>'
    shown = events[-LOG_EVENTS:]
    cut = f'<p class="muted">the last {len(shown)} of {len(events)} lines</p>' if len(events) > len(shown) else ""
    lines = "\n".join(f'<span class="lvl-{e(ev.get("level") or "info")}">{e(render(ev))}</span>' for ev in shown)
    return f'{cut}<pre class="log" id="step-log">{lines}</pre>'


def _preview(layout: Layout, job_id: str, doc: Doc) -> str:
    path = layout.results(job_id)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return '<p class="muted">No results' + ("" if doc.get("status") in listing.FINAL else " yet") + ".</p>"
    total = sum(1 for line in data.split(b"\n") if line.strip())
    rows = [results.flatten(r) for r in itertools.islice(_rows(data), PREVIEW_ROWS)]
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    head = "".join(f"<th>{e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{e(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    url = f"/api/jobs/{e(job_id)}/results"
    links = (f'<p class="downloads"><a class="button" id="download-csv" href="{url}?format=csv" download>'
             f'Download CSV</a> <a class="button" id="download-jsonl" href="{url}?format=jsonl" download>'
             "Download JSON lines</a></p>")
    shown = f", the first {len(rows)} shown" if total > len(rows) else ""
    return (f'<p class="muted" id="results-count">{total:,} row(s){shown}</p>{links}<div class="scroll">'
            f'<table class="preview"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')


def _rows(data: bytes) -> Any:
    for line in data.split(b"\n"):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # the line being written right now
            if isinstance(row, dict):
                yield row


def job_fragment(layout: Layout, job_id: str, doc: Doc) -> str:
    state = doc.get("status")
    final = state in listing.FINAL
    actions = []
    if state in ("pending", "running"):
        actions.append(f'<button class="act danger" id="cancel" data-post="/api/jobs/{e(job_id)}/cancel">'
                       "Cancel</button>")
    if state in ("failed", "cancelled"):
        actions.append(f'<button class="act" id="retry" data-post="/api/jobs/{e(job_id)}/retry">Retry</button>')
    if state == "completed" and doc.get("type") == "scrape" and layout.results(job_id).exists():
        body = json.dumps({"fromJob": job_id})
        actions.append(f'<button class="act" id="enrich-these" data-post="/api/jobs/enrich" data-json="{e(body)}" '
                       'data-then="open">Enrich these leads</button>')
    facts = [("Type", doc.get("type")), ("Attempt", attempt_text(doc)), ("Priority", doc.get("priority")),
             ("Created", doc.get("created_at")), ("Started", doc.get("started_at")),
             ("Updated", doc.get("updated_at")), ("Finished", doc.get("finished_at")),
             ("Next attempt", doc.get("next_attempt_at")), ("Worker", doc.get("worker"))]
    if doc.get("queued"):
        facts.append(("Where", "in the queue, not yet taken by a daemon"))
    dl = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in facts if v not in (None, ""))
    extra = ""
    for name in ("result", "metadata"):
        if doc.get(name):
            extra += (f'<h3>{name.capitalize()}</h3><pre class="json">'
                      f'{e(json.dumps(doc[name], indent=1, ensure_ascii=False))}</pre>')
    refresh = "" if final else f' data-refresh="/fragments/job/{e(job_id)}"'
    return f"""<div id="job"{refresh} data-status="{e(state)}">
<div class="panel-head"><h1>{e(job_id)} {badge(state)}</h1><span class="actions">{"".join(actions)}</span></div>
<output class="form-result" id="action-result" aria-live="polite"></output>
<div class="progress-row">{bar(doc)}</div>
{error_box(doc)}
<dl class="facts">{dl}</dl>{extra}
<h2>Attempts</h2>{_history(doc)}
<h2>Step log</h2>{_log(layout, job_id)}
<h2>Results</h2>{_preview(layout, job_id, doc)}
</div>"""


async def job_page(request: Request) -> Response:
    job_id = str(request.path_params["job_id"])
    layout: Layout = request.app.state.config.layout
    try:
        validate_id(job_id)
    except InvalidRequest as exc:
        return page(request, "No such job", f'<div class="error-box" role="alert">{e(exc)}</div>', status=400)
    doc = await run_in_threadpool(lookup.find, layout, job_id)
    if doc is None:
        return page(request, "No such job", f'<section class="card"><h1>No job {e(job_id)}</h1>'
                    '<p><a href="/runs">All runs</a></p></section>', status=404)
    inner = await run_in_threadpool(job_fragment, layout, job_id, doc)
    toggle = ('<label class="toggle"><input type="checkbox" id="auto-refresh" checked> Auto-refresh</label>')
    return page(request, f"Job {job_id}", f'<section class="card">{toggle}{inner}</section>')


# ------------------------------------------------------------------------------------------ fragments
async def fragment(request: Request) -> Response:
    which = str(request.path_params["which"])
    layout: Layout = request.app.state.config.layout
    if which == "panel":
        html = await run_in_threadpool(panel_fragment, layout)
    elif which == "rates":
        chosen = request.query_params.get("range", "24h")
        html = await run_in_threadpool(rates_fragment, layout, chosen if chosen in RANGES else "24h")
    elif which == "runs":
        try:
            filters = lookup.Filters.of(request.query_params)
        except InvalidRequest as exc:
            return HTMLResponse(f'<div class="error-box">{e(exc)}</div>', status_code=400)
        kept = {k: v for k, v in request.query_params.items() if k in ("status", "type", "since", "q", "limit") and v}
        html = await run_in_threadpool(runs_fragment, layout, filters, urlencode(kept))
    else:
        return HTMLResponse("no such fragment", status_code=404)
    return HTMLResponse(html)


async def job_part(request: Request) -> Response:
    job_id = str(request.path_params["job_id"])
    layout: Layout = request.app.state.config.layout
    try:
        validate_id(job_id)
    except InvalidRequest as exc:
        return HTMLResponse(f'<div class="error-box">{e(exc)}</div>', status_code=400)
    doc = await run_in_threadpool(lookup.find, layout, job_id)
    if doc is None:
        return HTMLResponse(f"no job {e(job_id)}", status_code=404)
    return HTMLResponse(await run_in_threadpool(job_fragment, layout, job_id, doc))


# ------------------------------------------------------------------------------------------ login
def _next(value: str | None) -> str:
    """Only a path on this server (no scheme, no //host): no open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


async def login_form(request: Request) -> Response:
    config: WebConfig = request.app.state.config
    if config.token is None:
        return RedirectResponse("/", status_code=303)
    return _login_page(request, _next(request.query_params.get("next")), "")


def _login_page(request: Request, target: str, problem: str, status: int = 200) -> Response:
    box = f'<div class="error-box" role="alert">{e(problem)}</div>' if problem else ""
    body = f"""<section class="card narrow"><h1>Log in</h1>{box}
<form method="post" action="/login" id="login"><input type="hidden" name="next" value="{e(target)}">
<label>Token <input type="password" name="token" id="token" autocomplete="current-password" required></label>
<button type="submit">Log in</button></form>
<p class="muted">The token is the server's configured bearer token.</p></section>"""
    return page(request, "Log in", body, status=status)


async def login(request: Request) -> Response:
    config: WebConfig = request.app.state.config
    if config.token is None:
        return RedirectResponse("/", status_code=303)
    async with request.form(max_files=0, max_fields=4) as form:
        offered = form.get("token")
        target = _next(str(form.get("next") or "/"))
    if not isinstance(offered, str) or not guard.token_matches(config, offered.strip()):
        return _login_page(request, target, "That is not the token.", status=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(guard.SESSION_COOKIE, guard.session_value(config), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(guard.SESSION_COOKIE, path="/")
    return response


ROUTES = [
    Route("/", dashboard, methods=["GET"]),
    Route("/runs", runs, methods=["GET"]),
    Route("/jobs/{job_id}", job_page, methods=["GET"]),
    Route("/fragments/job/{job_id}", job_part, methods=["GET"]),
    Route("/fragments/{which}", fragment, methods=["GET"]),
    Route("/static/{name}", static, methods=["GET"]),
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
