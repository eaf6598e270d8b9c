"""What a client does to the spool and the jobs from outside the daemon: submit, look, cancel, retry.

The CLI (and later the HTTP API) call these; they never talk to a daemon, only to the files. Cancel and
retry take a request file the way a daemon does (into .active/, flocked), so a client and the daemons
never both own one job, and a client killed half-way is recovered like a daemon.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import index, ledger, status, webhooks
from .durable import fsync_dir, rename_noreplace, write_tmp
from .errors import InvalidRequest, JobrunnerError, NotFound
from .handlers import load_handlers
from .layout import Layout, is_spool_name, validate_id
from .request import JobRequest, decode, generated_id, validate
from .spool import Spool, WorkerLock, new_worker_id
from .status import AttemptRecord, ErrorInfo, JobStatus, State


@dataclass(frozen=True)
class Submitted:
    job_id: str
    path: Path


def check_request(data: bytes) -> JobRequest:
    """Validate request bytes exactly as the daemon will (InvalidRequest says why not)."""
    models = {name: h.request_model for name, h in load_handlers().items()}
    return validate(decode(data), models)


def submit(layout: Layout, data: bytes) -> Submitted:
    """Drop a request atomically and durably: stage in queue/.tmp, fsync, rename into queue/."""
    request = check_request(data)
    layout.ensure()
    tmp = write_tmp(layout.staging, request.id or "request", data, fsync=True)
    job_id = request.id or generated_id(os.stat(tmp))
    for _ in range(100):
        dest = layout.queue / f"{job_id}.{os.urandom(3).hex()}.json"
        try:
            rename_noreplace(tmp, dest)
            break
        except FileExistsError:
            continue
    fsync_dir(layout.queue)
    return Submitted(job_id, dest)


def read_status(layout: Layout, job_id: str) -> JobStatus:
    try:
        validate_id(job_id)
    except InvalidRequest as exc:
        raise NotFound(f"no job {job_id!r}: {exc}") from None
    doc = status.read(layout.status(job_id))
    if doc is None and layout.active_request(job_id).exists():  # accepted a moment ago
        now = status.now()
        return JobStatus(id=job_id, type="?", status=State.RUNNING, created_at=now, updated_at=now)
    if doc is None:
        hint = " (it is still in the queue, not yet taken by a daemon)" if _queued_ids(layout, job_id) else ""
        raise NotFound(f"no job {job_id!r}{hint}")
    return doc


def _request_id(path: Path) -> str | None:
    try:
        data = path.read_bytes()
        raw = decode(data).get("id")
        return validate_id(raw) if raw is not None else generated_id(os.stat(path))
    except (OSError, InvalidRequest):
        return None


def _queued_ids(layout: Layout, job_id: str) -> list[str]:
    names = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(layout.queue):
            if is_spool_name(name) and _request_id(layout.queue / name) == job_id:
                names.append(name)
    return names


def queued_request(layout: Layout, job_id: str, *, scan_limit: int = 2000) -> dict[str, object] | None:
    """The request of a job still waiting in queue/ (dropped, not yet taken by a daemon), or None.

    Files named as `submit` names them (``<id>.<random>.json``) are looked at first; any other file is read
    to learn its id only while the queue holds at most ``scan_limit`` files, so that a lookup of an unknown
    id in a backlog of 100,000 files does not read them all (the job is found once a daemon takes it)."""
    validate_id(job_id)
    try:
        names = [n for n in os.listdir(layout.queue) if is_spool_name(n)]
    except FileNotFoundError:
        return None
    likely = [n for n in names if n.startswith(job_id + ".")]
    rest = [n for n in names if not n.startswith(job_id + ".")] if len(names) <= scan_limit else []
    for name in likely + rest:
        if _request_id(layout.queue / name) == job_id:
            with contextlib.suppress(OSError, InvalidRequest):
                return decode((layout.queue / name).read_bytes())
    return None


@contextlib.contextmanager
def _acting_as_worker(layout: Layout) -> Iterator[Spool]:
    """Hold a worker lock of our own while we own a request, like a daemon does."""
    layout.ensure()
    worker = f"cli-{new_worker_id()}"
    lock = WorkerLock(layout, worker)
    try:
        yield Spool(layout, worker)
    finally:
        lock.release()


def cancel(layout: Layout, job_id: str) -> str:
    """Cancel a job. Returns what happened: "cancelled" (it was waiting), "requested" (it is running;
    its daemon stops it at its next await), or "final" (it had already ended)."""
    validate_id(job_id)
    doc = status.read(layout.status(job_id))
    queued = _queued_ids(layout, job_id) if doc is None else []
    if doc is None and not queued:
        raise NotFound(f"no job {job_id!r}")
    if doc is not None and doc.status.final:
        return "final"
    layout.job_dir(job_id).mkdir(parents=True, exist_ok=True)
    flag = layout.cancel_flag(job_id)
    flag.write_bytes(b"")  # seen by the daemon running it, or by the one that takes it next
    fsync_dir(flag.parent)
    with _acting_as_worker(layout) as spool:
        # take the request if it is waiting (deferred, or still in the queue); a daemon may win the race
        claim = spool.take(layout.deferred, job_id) if doc is not None else None
        for name in queued:
            if claim is None and (taken := spool.claim(name)) is not None:
                claim = spool.accept(taken, job_id)
                if claim is None:
                    spool.to_queue(taken)
        if claim is None:
            return "requested"
        try:
            now = status.now()
            info = ErrorInfo(type="Cancelled", message="cancelled on request", retryable=False)
            current = status.read(layout.status(job_id))
            if current is None:
                request = check_request(claim.read())
                new = JobStatus(id=job_id, type=request.type, status=State.CANCELLED, created_at=now,
                                updated_at=now, finished_at=now, max_attempts=request.max_attempts,
                                metadata=request.metadata, claim=claim.token, error=info)
            else:
                new = current.model_copy(update={"status": State.CANCELLED, "updated_at": now, "finished_at": now,
                                                 "error": info, "claim": claim.token, "next_attempt_at": None})
            with contextlib.suppress(OSError):  # a webhook for "cancelled", if the daemon's configuration wants one
                webhooks.enqueue(layout, job_id, webhooks.requested_url(claim.read()))
            status.save(layout.status(job_id), new, tmp_dir=layout.jobs_tmp)
            index.note(layout, job_id)
            ledger.record(layout, [new])
            claim.finish()
        finally:
            claim.release()
        with contextlib.suppress(FileNotFoundError):
            flag.unlink()
    return "cancelled"


def retry(layout: Layout, job_id: str) -> JobStatus:
    """Run a failed or cancelled job again. Completed steps are kept, so it resumes where it stopped;
    it gets a fresh budget of attempts."""
    doc = read_status(layout, job_id)
    if doc.status not in (State.FAILED, State.CANCELLED):
        raise JobrunnerError(f"job {job_id} is {doc.status}; only failed or cancelled jobs can be retried")
    with contextlib.suppress(FileNotFoundError):
        layout.cancel_flag(job_id).unlink()
    spool = Spool(layout, f"cli-{new_worker_id()}")
    claim = spool.take(layout.done, job_id)
    deadline = time.monotonic() + 5
    while claim is None and layout.active_request(job_id).exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # its daemon wrote the final status and is moving the request to .done/ now
        claim = spool.take(layout.done, job_id)
    if claim is None:
        raise NotFound(f"job {job_id} has no stored request ({layout.request(job_id)}); submit it again")
    try:
        now = status.now()
        try:
            budget = check_request(claim.read()).max_attempts
        except InvalidRequest:
            budget = doc.max_attempts
        history = [*doc.history, AttemptRecord(attempt=doc.attempt, outcome="retry requested", ended_at=now)]
        new = doc.model_copy(update={
            "status": State.PENDING, "updated_at": now, "finished_at": None, "next_attempt_at": now,
            "max_attempts": doc.attempt + budget, "claim": claim.token, "history": history,
        })
        status.save(layout.status(job_id), new, tmp_dir=layout.jobs_tmp)
        index.note(layout, job_id)
        ledger.reopen(layout, job_id)  # its earlier line stops counting: it is not final any more
        claim.defer(now)
        fsync_dir(layout.deferred)
    finally:
        claim.release()
    return new
