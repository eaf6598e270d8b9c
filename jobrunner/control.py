"""What a client does to the spool and the jobs from outside the daemon: submit, look, cancel, retry.

The CLI (and later the HTTP API) call these; they never talk to a daemon, only to the files. Cancel and
retry take a request file the way a daemon does (by rename, under a worker lock of their own), so a
client and the daemons never both own one job, and a client killed half-way is recovered like a daemon.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import status
from .durable import fsync_dir, rename_noreplace, write_tmp
from .errors import InvalidRequest, JobrunnerError, NotFound
from .handlers import load_handlers
from .layout import Layout, is_spool_name, validate_id
from .request import JobRequest, decode, generated_id, validate
from .spool import JOB_SUFFIX, Spool, WorkerLock, claim_id, finish_request, new_worker_id
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
    if doc is None:
        hint = " (it is still in the queue, not yet taken by a daemon)" if _queued_ids(layout, job_id) else ""
        raise NotFound(f"no job {job_id!r}{hint}")
    return doc


def latest(layout: Layout, limit: int) -> list[JobStatus]:
    """The ``limit`` most recently updated jobs, newest first."""
    entries = []
    with os.scandir(layout.jobs) as it:
        for entry in it:
            if entry.name.endswith(".json") and not entry.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    entries.append((entry.stat().st_mtime_ns, entry.name))
    entries.sort(reverse=True)
    docs = []
    for _, name in entries[:limit]:
        with contextlib.suppress(ValueError, OSError):
            doc = status.read(layout.jobs / name)
            if doc is not None:
                docs.append(doc)
    return docs


def active(layout: Layout) -> tuple[list[JobStatus], int]:
    """Pending and running jobs (newest first), found from where their requests are, not by reading
    every status; and the number of files still in the queue, not yet taken."""
    ids: set[str] = set()
    with contextlib.suppress(FileNotFoundError):
        for worker in os.listdir(layout.claimed):
            folder = layout.worker_dir(worker)
            if worker.endswith(".lock") or not folder.is_dir():
                continue
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(folder):
                    job_id = claim_id(folder / name) or _request_id(folder / name)
                    if job_id:
                        ids.add(job_id)
    with contextlib.suppress(FileNotFoundError):
        ids.update(n[: -len(".json")] for n in os.listdir(layout.deferred) if n.endswith(".json"))
    docs = []
    for job_id in ids:
        with contextlib.suppress(ValueError, OSError, InvalidRequest):
            doc = status.read(layout.status(job_id))
            if doc is not None and not doc.status.final:
                docs.append(doc)
    docs.sort(key=lambda d: d.created_at, reverse=True)
    queued = sum(1 for n in os.listdir(layout.queue) if is_spool_name(n))
    return docs, queued


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
        taken: Path | None = None
        if doc is not None:
            taken = spool.claim_deferred(job_id)
        for name in queued:
            taken = taken or spool.claim(name)
        if taken is None:
            return "requested"
        now = status.now()
        info = ErrorInfo(type="Cancelled", message="cancelled on request", retryable=False)
        claim = f"{spool.worker}/{taken.name}"
        if doc is None:
            request = check_request(taken.read_bytes())
            doc = JobStatus(id=job_id, type=request.type, status=State.CANCELLED, created_at=now,
                            updated_at=now, finished_at=now, max_attempts=request.max_attempts,
                            metadata=request.metadata, source=taken.name, claim=claim, error=info)
            try:
                status.save(layout.status(job_id), doc, tmp_dir=layout.jobs_tmp, exclusive=True)
            except FileExistsError:
                spool.to_queue(taken)  # accepted by a daemon meanwhile: give it back and ask it instead
                return "requested"
        else:
            doc = doc.model_copy(update={"status": State.CANCELLED, "updated_at": now, "finished_at": now,
                                         "error": info, "claim": claim, "next_attempt_at": None})
            status.save(layout.status(job_id), doc, tmp_dir=layout.jobs_tmp)
        finish_request(layout, taken, job_id)
        with contextlib.suppress(FileNotFoundError):
            flag.unlink()
    return "cancelled"


def retry(layout: Layout, job_id: str) -> JobStatus:
    """Run a failed or cancelled job again. Completed steps are kept, so it resumes where it stopped;
    it gets a fresh budget of attempts."""
    doc = read_status(layout, job_id)
    if doc.status not in (State.FAILED, State.CANCELLED):
        raise JobrunnerError(f"job {job_id} is {doc.status}; only failed or cancelled jobs can be retried")
    request_path = layout.request(job_id)
    if not request_path.exists():
        raise NotFound(f"job {job_id} has no stored request ({request_path}); submit it again")
    with contextlib.suppress(FileNotFoundError):
        layout.cancel_flag(job_id).unlink()
    with _acting_as_worker(layout) as spool:
        taken = spool.mine / f"{job_id}{JOB_SUFFIX}"
        os.rename(request_path, taken)
        now = status.now()
        try:
            budget = check_request(taken.read_bytes()).max_attempts
        except InvalidRequest:
            budget = doc.max_attempts
        history = [*doc.history, AttemptRecord(attempt=doc.attempt, outcome="retry requested", ended_at=now)]
        new = doc.model_copy(update={
            "status": State.PENDING, "updated_at": now, "finished_at": None, "next_attempt_at": now,
            "max_attempts": doc.attempt + budget, "claim": f"{spool.worker}/{taken.name}", "history": history,
        })
        status.save(layout.status(job_id), new, tmp_dir=layout.jobs_tmp)
        spool.defer(taken, job_id, now)
        fsync_dir(layout.deferred)
    return new
