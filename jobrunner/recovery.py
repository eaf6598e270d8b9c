"""Bringing back the claims of a daemon that died: every one of its requests goes where it belongs.

A claim's fate is read from the status file, whose ``claim`` field names the spool entry the current
attempt ran from. If the dead daemon had registered the claim:
- final status: only the request's last move was missing; finish it;
- running: the attempt was interrupted; it counts (so a job that kills the daemon every time runs out of
  attempts and fails with a reason instead of looping), and the job is deferred with backoff;
- pending: the deferral was written but the move was not; finish the move.
If it had not, no attempt of this claim started: a client's file goes back to the queue, a `.job`
taken from the deferred folder goes back there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from datetime import timedelta
from pathlib import Path

from . import status
from .errors import InvalidRequest
from .layout import Layout, validate_id
from .request import decode, generated_id
from .retry import RetryPolicy
from .spool import Spool, claim_id, dead_workers, finish_request
from .status import AttemptRecord, ErrorInfo, JobStatus, State

log = logging.getLogger("jobrunner.recovery")


def recover_dead_workers(layout: Layout, spool: Spool, policy: RetryPolicy) -> int:
    """Recover every dead worker's folder; returns the number of claims handled."""
    sweep_temp(layout)
    handled = 0
    for worker, fd in dead_workers(layout, spool.worker):
        folder = layout.worker_dir(worker)
        try:
            names = sorted(os.listdir(folder))
        except FileNotFoundError:
            names = []
        for name in names:
            try:
                recover_claim(layout, spool, policy, folder / name, worker)
                handled += 1
            except OSError as exc:
                log.error("could not recover %s/%s: %s (will try again)", worker, name, exc)
        try:
            os.rmdir(folder)
        except FileNotFoundError:
            pass
        except OSError:
            if fd is not None:
                os.close(fd)
            continue  # something is left; the next round tries again
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(layout.worker_lock(worker))
            os.close(fd)
        if names:
            log.info("recovered %d request(s) of stopped daemon %s", len(names), worker)
    return handled


def _job_id_of(spool: Spool, path: Path) -> str | None:
    job_id = claim_id(path)
    if job_id is not None:
        return job_id
    try:
        data, st = spool.read(path)
        obj = decode(data, limit=spool.max_bytes)
        raw_id = obj.get("id")
        return validate_id(raw_id) if raw_id is not None else generated_id(st)
    except InvalidRequest:
        return None


def recover_claim(layout: Layout, spool: Spool, policy: RetryPolicy, path: Path, dead: str) -> None:
    job_id = _job_id_of(spool, path)
    if job_id is None:
        spool.to_queue(path)  # never accepted; the next claimer rejects it with a reason
        return
    try:
        doc = status.read(layout.status(job_id))
    except ValueError:
        log.error("status of %s does not parse; its request goes back to the queue", job_id)
        doc = None
    registered = doc is not None and doc.claim == f"{dead}/{path.name}"
    if doc is None:
        spool.to_queue(path, f"{job_id}.json" if claim_id(path) else None)
    elif not registered and claim_id(path) is None:
        spool.to_queue(path)  # a client's file that was never accepted (maybe a duplicate)
    elif doc.status.final:
        finish_request(layout, path, job_id)
    elif registered and doc.status == State.RUNNING:
        _count_interrupted_attempt(layout, spool, policy, path, doc, dead)
    else:
        due = doc.next_attempt_at or status.now()
        spool.defer(path, job_id, due)


def _count_interrupted_attempt(
    layout: Layout, spool: Spool, policy: RetryPolicy, path: Path, doc: JobStatus, dead: str
) -> None:
    at = status.now()
    attempt = doc.attempt
    message = f"attempt {attempt} was interrupted: the daemon running it ({dead}) died"
    history = [*doc.history]
    if attempt >= doc.max_attempts:
        err = ErrorInfo(
            type="Interrupted",
            message=f"{message}; no attempts left ({attempt} of {doc.max_attempts}). A job that stops "
            "the daemon every time ends here instead of looping.",
            retryable=False,
        )
        history.append(AttemptRecord(attempt=attempt, worker=dead, started_at=doc.attempt_started_at,
                                     ended_at=at, outcome="interrupted", error=err))
        new = doc.model_copy(update={"status": State.FAILED, "error": err, "updated_at": at,
                                     "finished_at": at, "history": history, "next_attempt_at": None})
        status.save(layout.status(doc.id), new, tmp_dir=layout.jobs_tmp)
        finish_request(layout, path, doc.id)
        log.warning("[%s] failed: %s", doc.id, err.message)
        return
    delay = policy.backoff(attempt)
    due = at + timedelta(seconds=delay)
    err = ErrorInfo(type="Interrupted", message=message, retryable=True)
    history.append(AttemptRecord(attempt=attempt, worker=dead, started_at=doc.attempt_started_at, ended_at=at,
                                 outcome="interrupted", error=err, delay_s=round(delay, 3)))
    new = doc.model_copy(update={"status": State.PENDING, "error": err, "updated_at": at,
                                 "next_attempt_at": due, "history": history})
    status.save(layout.status(doc.id), new, tmp_dir=layout.jobs_tmp)
    spool.defer(path, doc.id, due)
    log.warning("[%s] %s; retrying in %.1fs", doc.id, message, delay)


def sweep_temp(layout: Layout, *, older_than_s: float = 600.0) -> int:
    """Delete temp files that writers killed mid-write left behind (a live writer renames its temp file
    within milliseconds; a client's staged submit within seconds)."""
    removed = 0
    cutoff = time.time() - older_than_s
    for folder in (layout.jobs_tmp, layout.staging):
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
    return removed
