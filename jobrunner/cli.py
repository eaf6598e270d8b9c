"""The `jobrunner` command. Each subcommand is a thin layer over `control` (clients) or `worker` (daemon).

Exit codes: 0 ok; 1 a job failed (`submit --wait`) or an operation was refused; 2 usage; 4 no such job;
65 invalid request; 78 configuration error (systemd does not restart on it).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from . import spans
from .errors import ConfigError, JobrunnerError, NotFound
from .layout import DATA_DIR_ENV, Layout

# Only what every command needs is imported here; pydantic and asyncio load in the commands that use
# them, so `jobrunner --help` and `jobrunner status` start fast.
Doc = dict[str, Any]

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help=f"Data directory (default: ${DATA_DIR_ENV}, else ./data).",
)


def _parse_since(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """`--since 24h` as seconds (None: no window)."""
    if value is None:
        return None
    from .ledger import parse_since

    try:
        return parse_since(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _parse_statuses(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    known = ("pending", "running", "completed", "failed", "cancelled")
    states = [s.strip().lower() for s in value.split(",") if s.strip()]
    wrong = [s for s in states if s not in known]
    if wrong or not states:
        raise click.BadParameter(f"{', '.join(wrong) or value!r}: states are {', '.join(known)}")
    return states


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except JobrunnerError as exc:
            click.echo(f"jobrunner: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jobrunner")
def main() -> None:
    """Run background jobs from a spool of JSON files, with status files you can read.

    Submit by dropping a JSON request into DATA_DIR/queue/ (or `jobrunner submit`); a daemon
    (`jobrunner run`) claims it, runs it, and keeps DATA_DIR/jobs/<id>.json up to date.
    """


@main.command()
@data_dir_option
@click.option("--concurrency", type=click.IntRange(1, 10_000), default=16, show_default=True,
              help="Jobs run at once.")
@click.option("--burst", is_flag=True, help="Process everything that is due, then exit 0.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes (one per core helps only with many short jobs; network-bound "
                   "jobs want a higher --concurrency instead).")
@click.option("--drain-timeout", type=click.FloatRange(0), default=30.0, show_default=True,
              help="Seconds running jobs get to reach a step boundary on SIGTERM.")
@click.option("--settle", type=click.FloatRange(0), default=2.0, show_default=True,
              help="Seconds a file written in place must be quiet before an unparseable one is taken.")
@click.option("--rescan", type=click.FloatRange(0.01), default=1.0, show_default=True,
              help="Seconds between scans when no event wakes the daemon.")
@click.option("--retry-base", type=click.FloatRange(0), default=5.0, show_default=True,
              help="First job-level retry delay in seconds (doubles per attempt, jittered).")
@click.option("--retry-max", type=click.FloatRange(0), default=600.0, show_default=True,
              help="Longest job-level retry delay in seconds.")
@click.option("--retention", metavar="AGE", default=None,
              help="Prune final jobs that finished longer ago than AGE (30d, 12h, ...), hourly. Default: keep all.")
@click.option("--metrics-file", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PATH.prom",
              help="Write Prometheus metrics there (node_exporter's textfile collector format), every few seconds.")
@click.option("--metrics-interval", type=click.FloatRange(0.1), default=5.0, show_default=True, hidden=True)
@click.option("--producers", metavar="GROUP", default=None, envvar="JOBRUNNER_PRODUCERS",
              help="Take only request files owned by members of GROUP (and root and the daemon's user); others "
                   "are rejected with a reason. Default: any owner.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one JSON object a line. Under systemd, lines carry journald's priority prefix.")
def run(data_dir: str | None, concurrency: int, burst: bool, workers: int, drain_timeout: float, settle: float,
        rescan: float, retry_base: float, retry_max: float, retention: str | None, metrics_file: Path | None,
        metrics_interval: float, producers: str | None, log_level: str, log_format: str) -> None:
    """Run the daemon (until SIGTERM/SIGINT, or with --burst until nothing is due)."""
    import asyncio

    from . import logs
    from .retry import RetryPolicy
    from .worker import Settings, Worker

    logs.setup(log_level, log_format, process_tag=workers > 1)
    layout = Layout.resolve(data_dir)
    settings = Settings(concurrency=concurrency, burst=burst, drain_timeout_s=drain_timeout,
                        settle_s=settle, rescan_interval_s=rescan,
                        retry=RetryPolicy(base_s=retry_base, max_s=retry_max),
                        retention_s=None if retention is None else _window(retention, "--retention"),
                        metrics_file=_metrics_path(metrics_file), metrics_interval_s=metrics_interval,
                        producers=producers)
    if workers == 1:
        try:
            sys.exit(asyncio.run(Worker(layout, settings).run()))
        except OSError as exc:  # the data dir cannot be written (full, read-only, gone): said in one line
            raise JobrunnerError(f"the daemon cannot run on {layout.root}: {exc}") from None
    from dataclasses import replace

    from .supervisor import supervise

    layout.ensure(own=True)  # a bad data dir is one clear error here, not one per worker
    sys.exit(supervise(workers, lambda i: asyncio.run(Worker(layout, replace(settings, shard=(i, workers))).run()),
                       burst=burst))


@main.command()
@data_dir_option
@click.argument("request", type=click.File("rb"))
@click.option("--wait", is_flag=True, help="Wait until the job is final; exit 1 unless it completed.")
@click.option("--timeout", type=click.FloatRange(0), default=None, help="With --wait: give up after N seconds.")
def submit(data_dir: str | None, request: Any, wait: bool, timeout: float | None) -> None:
    """Submit REQUEST (a JSON file, or - for stdin). Prints the job id."""
    from . import control

    layout = Layout.resolve(data_dir)
    done = control.submit(layout, request.read())
    click.echo(done.job_id)
    if wait:
        doc = _wait_final(layout, done.job_id, timeout)
        error = doc.get("error") if doc["status"] != "completed" else None
        click.echo(f"{doc['id']} {doc['status']}" + (f": {error['message']}" if error else ""), err=True)
        sys.exit(0 if doc["status"] == "completed" else 1)


def _wait_final(layout: Layout, job_id: str, timeout: float | None) -> Doc:
    from . import listing

    if sys.stderr.isatty():  # the live progress of `jobrunner watch`, on stderr (stdout has the job id)
        from . import watch

        if watch.is_terminal(sys.stderr):
            outcome = watch.watch(layout, [job_id], out=sys.stderr, timeout=timeout)
            if outcome.code == watch.INTERRUPTED:
                sys.exit(130)
            if outcome.timed_out:
                raise JobrunnerError(f"job {job_id} is not final after {timeout:g}s")
            return outcome.docs[job_id]
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.02
    while True:
        doc = listing.read_doc(layout, job_id)
        if doc is not None and doc.get("status") in listing.FINAL:
            return doc
        if deadline is not None and time.monotonic() > deadline:
            raise JobrunnerError(f"job {job_id} is not final after {timeout:g}s")
        time.sleep(delay)
        delay = min(0.5, delay * 1.5)


@main.command()
@data_dir_option
@click.argument("job_id", required=False)
@click.option("--active", is_flag=True, help="Only pending and running jobs.")
@click.option("--status", "statuses", metavar="S[,S...]", default=None, callback=_parse_statuses,
              help="Only jobs in these states (pending, running, completed, failed, cancelled).")
@click.option("--type", "job_type", metavar="TYPE", default=None, help="Only jobs of this type.")
@click.option("--since", metavar="AGE", default=None, callback=_parse_since,
              help="Only jobs that finished within AGE (30m, 24h, 7d, all), and the active ones.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="How many of the latest jobs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (stable).")
def status(data_dir: str | None, job_id: str | None, active: bool, statuses: list[str] | None,
           job_type: str | None, since: float | None, limit: int, as_json: bool) -> None:
    """Show one job, the active jobs, or the latest jobs (filtered by state, type and age)."""
    from . import listing
    from .layout import validate_id

    layout = Layout.resolve(data_dir)
    layout.check_exists()
    filtered = statuses is not None or job_type is not None or since is not None
    if job_id and (filtered or active):
        raise click.UsageError("a job ID cannot be combined with --active, --status, --type or --since")
    if active and statuses is not None:
        raise click.UsageError("--active is --status pending,running: give one of them")
    if job_id:
        try:
            validate_id(job_id)
        except JobrunnerError:
            raise NotFound(f"no job {job_id!r}") from None
        doc = listing.read_doc(layout, job_id)
        if doc is None and layout.active_request(job_id).exists():
            doc = listing.starting(job_id)
        if doc is None:
            from . import control

            control.read_status(layout, job_id)  # raises NotFound, with a hint if it is still queued
            raise NotFound(f"no job {job_id!r}")
        if as_json:
            click.echo(json.dumps(doc, indent=1))
        else:
            _show_one(doc)
        return
    queued = None
    if filtered:
        from . import ledger

        docs = ledger.jobs(layout, statuses=["pending", "running"] if active else statuses, job_type=job_type,
                           since=ledger.cutoff(since), limit=limit)
    elif active:
        docs, queued = listing.active(layout)
        docs = docs[:limit]
    else:
        docs = listing.latest(layout, limit)
    if as_json:
        out: dict[str, Any] = {"jobs": docs, "count": len(docs)}
        if queued is not None:
            out["queued"] = queued
        click.echo(json.dumps(out, indent=1))
        return
    _table(docs)
    if queued:
        click.echo(f"{queued} request file(s) in the queue, not yet taken by a daemon")


@main.command()
@data_dir_option
@click.argument("job_ids", nargs=-1, metavar="[ID]...")
@click.option("--follow", is_flag=True, help="Without IDs: keep watching for new jobs when none is left (until "
              "Ctrl-C).")
@click.option("--interval", type=click.FloatRange(0.05), default=0.5, show_default=True, hidden=True)
def watch(data_dir: str | None, job_ids: tuple[str, ...], follow: bool, interval: float) -> None:
    """Live progress of the given jobs, or of the active ones, until they are final.

    On a terminal, a line per job redrawn in place (bar, progress, rate, ETA, attempt, last error);
    elsewhere, a plain line per job each time it changes. NO_COLOR turns colours off.
    Exit 0 when every job it saw end had completed, 1 when one failed or was cancelled, 4 for an ID that
    names no job, 130 on Ctrl-C.
    """
    from . import watch as watching

    layout = Layout.resolve(data_dir)
    layout.check_exists()
    for job_id in job_ids:
        if not _valid_id(job_id):
            raise NotFound(f"no job {job_id!r}")
    if job_ids and follow:
        raise click.UsageError("--follow is for watching the active jobs: give no IDs with it")
    try:
        outcome = watching.watch(layout, list(job_ids) or None, follow=follow, interval=interval)
    except BrokenPipeError:  # `jobrunner watch | head`
        sys.stderr.close()
        sys.exit(0)
    sys.exit(outcome.code)


@main.command()
@data_dir_option
@click.option("--since", metavar="AGE", default="24h", show_default=True, callback=_parse_since,
              help="The window: jobs that finished within AGE (30m, 24h, 7d, all).")
@click.option("--type", "job_type", metavar="TYPE", default=None, help="Only jobs of this type.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (stable; see the README).")
def stats(data_dir: str | None, since: float | None, job_type: str | None, as_json: bool) -> None:
    """Jobs finished by state, success and failure rates, retries, p50/p95 duration and queue wait, what waits
    now and for how long, leads per job type."""
    from . import stats as statistics

    layout = Layout.resolve(data_dir)
    layout.check_exists()
    doc = statistics.compute(layout, window_s=since, job_type=job_type)
    if as_json:
        click.echo(json.dumps(doc, indent=1))
    else:
        click.echo(statistics.render(doc))


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _ago(value: str | None) -> str:
    when = _when(value)
    if when is None:
        return "-"
    secs = (datetime.now(UTC) - when).total_seconds()
    if secs < 0:
        return f"in {spans.short(-secs)}"
    return f"{spans.short(secs)} ago"


def _progress(doc: Doc) -> str:
    p = doc.get("progress") or {}
    note = f" {p['note']}" if p.get("note") else ""
    if p.get("total"):
        return f"{p['current']}/{p['total']} {p.get('percentage') or 0:.0f}%{note}"
    return f"{p['current']}{note}" if p.get("current") else "-"


def _error(doc: Doc) -> str:
    err = doc.get("error")
    return f"{err['type']}: {err['message']}" if err else ""


def _table(docs: list[Doc]) -> None:
    if not docs:
        click.echo("no jobs")
        return
    rows = [("ID", "TYPE", "STATUS", "PROGRESS", "ATTEMPT", "UPDATED", "ERROR")]
    for d in docs:
        rows.append((d["id"], d.get("type", "?"), d["status"], _progress(d),
                     f"{d.get('attempt')}/{d.get('max_attempts') or '-'}", _ago(d.get("updated_at")),
                     _error(d)[:60]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])


def _show_one(d: Doc) -> None:
    lines = [
        ("id", d["id"]), ("type", d.get("type", "?")), ("status", d["status"]), ("progress", _progress(d)),
        ("attempt", f"{d.get('attempt')} of {d.get('max_attempts')}"),
        ("created", f"{d.get('created_at') or '-'} ({_ago(d.get('created_at'))})"),
        ("started", d.get("started_at") or "-"), ("updated", d.get("updated_at") or "-"),
        ("finished", d.get("finished_at") or "-"),
    ]
    if d.get("next_attempt_at") and d["status"] == "pending":
        lines.append(("next attempt", f"{d['next_attempt_at']} ({_ago(d['next_attempt_at'])})"))
    if d.get("error"):
        lines.append(("error", _error(d) + (" (retryable)" if d["error"].get("retryable") else "")))
    if d.get("result"):
        lines.append(("result", json.dumps(d["result"])))
    if d.get("metadata"):
        lines.append(("metadata", json.dumps(d["metadata"])))
    for h in d.get("history") or []:
        what = f"attempt {h['attempt']}: {h['outcome']}"
        if h.get("error"):
            what += f" ({h['error']['type']}: {h['error']['message']})"
        if h.get("delay_s"):
            what += f", next in {h['delay_s']:g}s"
        lines.append(("history", what))
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        click.echo(f"{k.ljust(width)}  {v}")


@main.command()
@data_dir_option
@click.argument("job_id")
def cancel(data_dir: str | None, job_id: str) -> None:
    """Cancel a pending or running job (completed steps and partial results are kept)."""
    from . import control

    layout = Layout.resolve(data_dir)
    layout.check_exists()
    outcome = control.cancel(layout, job_id)
    if outcome == "final":
        doc = control.read_status(layout, job_id)
        raise JobrunnerError(f"job {job_id} is already {doc.status}")
    if outcome == "requested":
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            doc = control.read_status(layout, job_id)
            if doc.status.final:
                click.echo(f"{job_id} {doc.status}")
                return
            time.sleep(0.05)
        click.echo(f"{job_id} cancel requested; it stops at its next await")
        return
    click.echo(f"{job_id} cancelled")


@main.command()
@data_dir_option
@click.argument("job_id")
def retry(data_dir: str | None, job_id: str) -> None:
    """Run a failed or cancelled job again, reusing its completed steps."""
    from . import control

    layout = Layout.resolve(data_dir)
    layout.check_exists()
    doc = control.retry(layout, job_id)
    click.echo(f"{doc.id} pending (attempts allowed: {doc.max_attempts})")


@main.command()
@data_dir_option
@click.argument("job_id")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to this file (default: standard output).")
def results(data_dir: str | None, job_id: str, fmt: str, output: str | None) -> None:
    """Export a job's results (while it runs: the results so far)."""
    from . import control, listing
    from .results import export

    layout = Layout.resolve(data_dir)
    layout.check_exists()
    doc = listing.read_doc(layout, job_id) if _valid_id(job_id) else None
    if doc is None:
        control.read_status(layout, job_id)  # raises NotFound, with a hint if it is still queued
        raise NotFound(f"no job {job_id!r}")
    path = layout.results(job_id)
    if not path.exists():
        raise NotFound(f"job {job_id} ({doc['status']}) has no results" + ("" if doc["status"] in
                       ("completed", "failed", "cancelled") else " yet"))
    if doc["status"] != "completed":
        click.echo(f"job {job_id} is {doc['status']}: these are the results so far", err=True)
    if output is None:
        export(path, fmt, sys.stdout)
        return
    import io

    from .durable import write_atomic

    buf = io.StringIO()
    rows = export(path, fmt, buf)
    write_atomic(Path(output).absolute(), buf.getvalue().encode())
    click.echo(f"{rows} rows written to {output}", err=True)


@main.command()
@data_dir_option
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job is final.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@click.option("--interval", type=click.FloatRange(0.05), default=0.5, show_default=True, hidden=True)
def logs(data_dir: str | None, job_id: str, follow: bool, as_json: bool, interval: float) -> None:
    """A job's execution log: each attempt (start, end, error, retry delay), each step, each retried
    provider call with its reason and delay, and the handler's own lines."""
    from . import control, listing
    from .timeline import Follower, render

    layout = Layout.resolve(data_dir)
    layout.check_exists()
    if not _valid_id(job_id) or listing.read_doc(layout, job_id) is None:
        control.read_status(layout, job_id)  # raises NotFound, with a hint if it is still queued
        raise NotFound(f"no job {job_id!r}")
    follower = Follower(layout, job_id)
    try:
        while True:
            for event in follower.poll():
                click.echo(json.dumps(event, ensure_ascii=False) if as_json else render(event))
            if not follow or follower.final:
                if follow:  # the last lines a finishing attempt wrote
                    for event in follower.poll():
                        click.echo(json.dumps(event, ensure_ascii=False) if as_json else render(event))
                return
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `jobrunner logs ID | head`
        sys.stderr.close()
        sys.exit(0)


def _metrics_path(path: Path | None) -> Path | None:
    if path is None:
        return None
    if path.suffix != ".prom":
        raise click.BadParameter(f"{path}: node_exporter's textfile collector reads only *.prom files",
                                 param_hint="--metrics-file")
    if not path.parent.is_dir():
        raise click.BadParameter(f"{path.parent} is not a directory", param_hint="--metrics-file")
    return path.absolute()


def _window(value: str, what: str) -> float:
    from .ledger import parse_since

    try:
        seconds = parse_since(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=what) from None
    if seconds is None:
        raise click.BadParameter("a retention needs a length, e.g. 30d", param_hint=what)
    return seconds


@main.command()
@data_dir_option
@click.option("--older-than", required=True, metavar="AGE",
              help="Prune jobs that finished longer ago than this: 90m, 12h, 30d, 8w.")
@click.option("--status", "states", default="completed,failed,cancelled", show_default=True,
              help="Which final jobs (comma-separated); 'rejected' prunes set-aside requests too.")
@click.option("--dry-run", is_flag=True, help="Say what would go; delete nothing.")
@click.option("--json", "as_json", is_flag=True)
def prune(data_dir: str | None, older_than: str, states: str, dry_run: bool, as_json: bool) -> None:
    """Delete final jobs (status, request, steps, results, log) older than AGE. Pending and running
    jobs are never touched."""
    from .prune import CHOICES
    from .prune import prune as run_prune

    seconds = _window(older_than, "--older-than")
    chosen = [s.strip() for s in states.split(",") if s.strip()]
    bad = [s for s in chosen if s not in CHOICES]
    if bad or not chosen:
        raise click.BadParameter(f"{', '.join(bad) or 'nothing'}: choose from {', '.join(CHOICES)}",
                                 param_hint="--status")
    layout = Layout.resolve(data_dir)
    layout.check_exists()
    out = run_prune(layout, seconds, chosen, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "jobs": out.jobs, "rejected": out.rejected, "bytes": out.bytes,
                               "skipped": out.skipped}))
        return
    verb = "would prune" if dry_run else "pruned"
    if dry_run:
        for job_id in out.jobs:
            click.echo(f"  {job_id}")
        for name in out.rejected:
            click.echo(f"  rejected/{name}")
    for job_id, why in out.skipped.items():
        click.echo(f"kept {job_id}: {why}", err=True)
    rejected = f" and {len(out.rejected):,} rejected request(s)" if "rejected" in chosen else ""
    click.echo(f"{verb} {len(out.jobs):,} job(s){rejected}, {out.bytes / 1e6:.1f} MB, finished over {older_than} ago")


def _valid_id(job_id: str) -> bool:
    from .layout import validate_id

    try:
        validate_id(job_id)
    except JobrunnerError:
        return False
    return True


@main.command()
@data_dir_option
@click.argument("csv_file", type=click.File("rb"), required=False)
@click.option("--from-job", "from_job", default=None, metavar="ID", help="Enrich the leads a scrape job found.")
@click.option("--options", "options_json", default=None, metavar="JSON",
              help='Enrichment options as a JSON object, e.g. \'{"max_age": 65, "dnc": false}\' '
                   "(`jobrunner schema enrich` lists them).")
@click.option("--id", "job_id", default=None, help="The job id (your idempotency key).")
@click.option("--wait", is_flag=True, help="Wait until the job is final; exit 1 unless it completed.")
def enrich(data_dir: str | None, csv_file: Any, from_job: str | None, options_json: str | None,
           job_id: str | None, wait: bool) -> None:
    """Submit an enrich job for the leads of CSV_FILE (- for stdin) or of a scrape job. Prints the job id.

    CSV headers are matched loosely (Name, First Name, Last Name, Title, Company, City, State, Zip, Phone,
    Email, LinkedIn URL, and common variants); other columns are kept as they are, into the results.
    """
    from . import control, leads
    from .errors import InvalidRequest
    from .results import read_rows

    layout = Layout.resolve(data_dir)
    if (csv_file is None) == (from_job is None):
        raise click.UsageError("give a CSV file or --from-job ID (one of them)")
    if csv_file is not None:
        rows = leads.read_csv(csv_file.read())
        if not rows:
            raise InvalidRequest("the CSV has headers but no leads")
    else:
        assert from_job is not None
        layout.check_exists()
        if not _valid_id(from_job) or not layout.status(from_job).exists():
            raise NotFound(f"no job {from_job!r}")
        path = layout.results(from_job)
        if not path.exists():
            raise NotFound(f"job {from_job} has no results to enrich")
        rows = leads.from_scrape_rows(read_rows(path))
        if not rows:
            raise InvalidRequest(f"job {from_job} found no leads")
        if len(rows) > leads.MAX_LEADS:
            raise InvalidRequest(f"job {from_job} found {len(rows)} leads; an enrich job takes at most "
                                 f"{leads.MAX_LEADS:,}")
    request: Doc = {"type": "enrich", "leads": rows}
    if options_json:
        try:
            request["options"] = json.loads(options_json)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--options") from None
    if job_id:
        request["id"] = job_id
    if from_job:
        request["metadata"] = {"from_job": from_job}
    done = control.submit(layout, json.dumps(request).encode())
    click.echo(done.job_id)
    if wait:
        doc = _wait_final(layout, done.job_id, None)
        error = doc.get("error") if doc["status"] != "completed" else None
        click.echo(f"{doc['id']} {doc['status']}" + (f": {error['message']}" if error else ""), err=True)
        sys.exit(0 if doc["status"] == "completed" else 1)


@main.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0 picks a free port.")
@click.option("--latency", type=click.FloatRange(0), default=0.0, show_default=True, help="Milliseconds per answer.")
@click.option("--error-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of calls answered 5xx.")
@click.option("--rate-limit", default=None, metavar="N/S", help="At most N calls per S seconds per provider (429 "
              "with Retry-After beyond).")
@click.option("--throttle-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of calls answered 429 with Retry-After: 1.")
@click.option("--timeout-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of calls that hang (the client times out).")
@click.option("--malformed-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of calls answered with a broken body.")
@click.option("--total", type=click.IntRange(1), default=None, help="Results per search (default: 150-3000, "
              "fixed per search).")
@click.option("--seed", type=int, default=1, show_default=True)
def sandbox(port: int, latency: float, error_rate: float, rate_limit: str | None, throttle_rate: float,
            timeout_rate: float, malformed_rate: float, total: int | None, seed: int) -> None:
    """Serve every provider's API on 127.0.0.1 with made-up, deterministic data (for tests and demos).

    It accepts the key `sandbox-key`. Point jobrunner at it with JOBRUNNER_<PROVIDER>_URL set to
    http://127.0.0.1:PORT/<provider> (linkedin, skiptrace, carrier, dnc). Call counts: GET /_stats.
    """
    from .providers.config import RateLimit
    from .sandbox import Faults, SandboxConfig, serve_forever

    limit = RateLimit.parse(rate_limit, "--rate-limit") if rate_limit else None
    faults = Faults(latency_ms=latency, error_rate=error_rate, throttle_rate=throttle_rate,
                    timeout_rate=timeout_rate, malformed_rate=malformed_rate,
                    rate_limit=(limit.calls, limit.per_s) if limit else None)
    serve_forever(SandboxConfig(port=port, seed=seed, faults=faults, search_total=total))


@main.command()
@data_dir_option
@click.option("--pages", type=click.IntRange(1, 100), default=8, show_default=True, help="Pages to scrape.")
def demo(data_dir: str | None, pages: int) -> None:
    """Scrape leads end to end against the sandbox: no API keys needed, nothing left running after."""
    from .demo import run_demo

    sys.exit(run_demo(Layout.resolve(data_dir), pages))


@main.command()
@data_dir_option
@click.option("--bind", default="127.0.0.1:8288", show_default=True, metavar="HOST:PORT",
              help="Where to listen (port 0 picks a free one). Any address but loopback needs a token.")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="A file holding the bearer token, read when neither $JOBRUNNER_WEB_TOKEN nor the systemd "
                   "credential web_token is set. Without a token only loopback clients are answered.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--no-access-log", is_flag=True, help="Do not log a line per request.")
@click.option("--refresh-ms", type=click.IntRange(100, 600_000), default=2000, hidden=True)
def serve(data_dir: str | None, bind: str, token_file: str | None, log_level: str, log_format: str,
          no_access_log: bool, refresh_ms: int) -> None:
    """Serve the HTTP API and the web dashboard on the data dir (reads the files; submits by dropping them).

    API: POST /api/jobs/scrape, /api/jobs/enrich, /api/jobs; GET /api/jobs/status?jobId=|activeOnly=|limit=,
    /api/jobs, /api/jobs/ID, .../results?format=csv|jsonl, .../logs, /api/stats; POST .../cancel, .../retry.
    Dashboard: / (background jobs), /runs, /jobs/ID. See the README.
    """
    from . import logs
    from .web.config import Bind, WebConfig, load_token
    from .web.server import serve as run_server

    logs.setup(log_level, log_format)
    config = WebConfig(layout=Layout.resolve(data_dir), bind=Bind.parse(bind), token=load_token(token_file),
                       refresh_ms=refresh_ms)
    sys.exit(run_server(config, access_log=not no_access_log))


@main.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(data_dir: str | None, as_json: bool) -> None:
    """Check what keeps jobs from running, and say how to fix it (read-only).

    Is a daemon alive and beating, can you drop files, are jobs stuck and why, are provider keys set,
    inotify limits, disk space, recently rejected requests. Exit 1 when something is broken.
    """
    from .doctor import exit_code, render, run_checks, to_json

    checks = run_checks(Layout.resolve(data_dir))
    click.echo(to_json(checks) if as_json else render(checks))
    sys.exit(exit_code(checks))


@main.command()
@click.argument("job_type", required=False)
def schema(job_type: str | None) -> None:
    """Print the JSON Schema of requests (all types, or one TYPE)."""
    from typing import Annotated, Union

    from pydantic import Field, TypeAdapter

    from .handlers import load_handlers

    handlers = load_handlers()
    if job_type is not None:
        if job_type not in handlers:
            raise ConfigError(f"unknown type {job_type!r}; known types: {', '.join(sorted(handlers))}")
        out = handlers[job_type].request_model.model_json_schema()
    else:
        models = tuple(h.request_model for h in handlers.values())
        union: Any = models[0] if len(models) == 1 else Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007
        out = TypeAdapter(union).json_schema()
        out["title"] = "jobrunner request"
    click.echo(json.dumps(out, indent=1))


if __name__ == "__main__":  # pragma: no cover
    main()
