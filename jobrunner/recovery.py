"""Bringing back what a dead process owned, so every accepted job still reaches a final state.

Two kinds of leftovers:
- A dead daemon's ``.claimed/<worker>/`` folder holds files it took but had not accepted: they go back
  to the queue, untouched (no attempt had started).
- An accepted request in ``.active/`` whose flock nobody holds lost its owner mid-attempt. The status
  file's ``claim`` says whether the owner wrote it during that stay in ``.active`` (the same token):

| the status                       | means                                    | so                          |
|----------------------------------|------------------------------------------|-----------------------------|
| final                            | only the move to .done was missing       | finish the move             |
| this stay, pending               | a deferral was written, not its move     | finish the move to .deferred|
| this stay, running               | attempt n was interrupted                | count it                    |
| older, or none                   | attempt n+1 had begun, not yet written   | count it                    |

Counting means: the attempt is recorded as interrupted, and the job is deferred with backoff or, if it
was its last attempt, failed. So a job that kills the daemon every time runs out of attempts and fails
with a reason instead of looping. Every row is idempotent: a recovery that is itself killed is redone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from datetime import timedelta

from . import failpoints, index, ledger, status, webhooks
from .errors import DuplicateJob, InvalidRequest
from .layout import Layout
from .logs import one_line
from .metrics import METRICS
from .request import decode
from .retry import RetryPolicy
from .spool import ActiveClaim, Spool, dead_workers
from .status import AttemptRecord, ErrorInfo, JobStatus, State

log = logging.getLogger("jobrunner.recovery")
_failing: dict[str, str] = {}  # job id -> why its recovery failed last (said once)


def recover(layout: Layout, spool: Spool, policy: RetryPolicy) -> int:
    """Recover dead workers' folders and orphaned active jobs; returns how many requests were moved."""
    sweep_temp(layout)
    moved = 0
    for worker, fd in dead_workers(layout, spool.worker):
        folder = layout.worker_dir(worker)
        try:
            names = sorted(os.listdir(folder))
        except FileNotFoundError:
            names = []
        for name in names:
            try:
                spool.to_queue(folder / name)
                moved += 1
            except OSError as exc:
                log.error("could not return %s/%s to the queue: %s (will try again)", worker, one_line(name), exc)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(folder)
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(layout.worker_lock(worker))
            os.close(fd)
        if names:
            log.info("returned %d request(s) taken by stopped daemon %s to the queue", len(names), worker)
    for claim in spool.orphans():
        try:
            recover_active(layout, claim, policy)
            moved += 1
        except DuplicateJob:
            log.warning("[%s] a duplicate request was left in .active/; set aside", claim.job_id)
        except (OSError, ValueError) as exc:
            if _failing.get(claim.job_id) != str(exc):  # once, not at every round while it lasts
                log.error("[%s] could not recover: %s (trying again at every round until it works)", claim.job_id,
                          exc)
                _failing[claim.job_id] = str(exc)
        else:
            _failing.pop(claim.job_id, None)
        finally:
            claim.release()
    return moved


def recover_active(layout: Layout, claim: ActiveClaim, policy: RetryPolicy) -> None:
    doc = status.read(layout.status(claim.job_id))
    same_stay = doc is not None and doc.claim == claim.token
    if not same_stay and claim.is_duplicate():  # a second request for the id, caught mid-rejection
        claim.set_aside_duplicate()
        return
    if doc is not None and doc.status.final:
        ledger.record(layout, [doc])  # its daemon died before its line was appended, most likely
        claim.finish()
        return
    if same_stay and doc is not None and doc.status == State.PENDING:
        claim.defer(doc.next_attempt_at or status.now())
        return
    if doc is None:
        doc = _status_from_request(claim)
    if not (same_stay and doc.status == State.RUNNING):
        doc = doc.model_copy(update={"attempt": doc.attempt + 1, "attempt_started_at": None})
    _count_interrupted_attempt(layout, claim, policy, doc)


def _status_from_request(claim: ActiveClaim) -> JobStatus:
    """A job whose first attempt died before its status was first written."""
    now = status.now()
    try:
        obj = decode(claim.read())
    except InvalidRequest:
        obj = {}
    meta = obj.get("metadata")
    max_attempts = obj.get("max_attempts")
    return JobStatus(
        id=claim.job_id, type=str(obj.get("type", "unknown"))[:64], status=State.PENDING, created_at=now,
        updated_at=now, metadata=meta if isinstance(meta, dict) else {},
        max_attempts=max_attempts if isinstance(max_attempts, int) and 1 <= max_attempts <= 100 else 4,
        priority=obj.get("priority", 0) if isinstance(obj.get("priority", 0), int) else 0,
    )


def _count_interrupted_attempt(layout: Layout, claim: ActiveClaim, policy: RetryPolicy, doc: JobStatus) -> None:
    at = status.now()
    attempt = doc.attempt
    message = (f"attempt {attempt} was interrupted: the daemon running it ({doc.worker or 'unknown'}) died, or "
               "its outcome could not be written")
    history = [*doc.history]
    common = {"claim": claim.token, "updated_at": at, "attempt": attempt}
    METRICS.attempt_ended(doc.type, "interrupted" if attempt < doc.max_attempts else "failed", None)
    if attempt >= doc.max_attempts:
        err = ErrorInfo(type="Interrupted", retryable=False, message=f"{message}; no attempts left ({attempt} "
                        f"of {doc.max_attempts}). A job that stops the daemon every time ends here, not in a loop.")
        history.append(AttemptRecord(attempt=attempt, worker=doc.worker, started_at=doc.attempt_started_at,
                                     ended_at=at, outcome="interrupted", error=err))
        new = doc.model_copy(update={**common, "status": State.FAILED, "error": err, "finished_at": at,
                                     "history": history, "next_attempt_at": None})
        webhooks.enqueue(layout, doc.id, webhooks.requested_url(claim.read()))  # before the status: see there
        status.save(layout.status(doc.id), new, tmp_dir=layout.jobs_tmp)
        index.note(layout, doc.id)
        ledger.record(layout, [new])
        claim.finish()
        log.warning("[%s] failed: %s", doc.id, err.message)
        return
    delay = policy.backoff(attempt)
    due = at + timedelta(seconds=delay)
    err = ErrorInfo(type="Interrupted", message=message, retryable=True)
    history.append(AttemptRecord(attempt=attempt, worker=doc.worker, started_at=doc.attempt_started_at,
                                 ended_at=at, outcome="interrupted", error=err, delay_s=round(delay, 3)))
    new = doc.model_copy(update={**common, "status": State.PENDING, "error": err, "next_attempt_at": due,
                                 "history": history})
    status.save(layout.status(doc.id), new, tmp_dir=layout.jobs_tmp)
    index.note(layout, doc.id)
    failpoints.hit("recovery-counted")
    claim.defer(due)
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
