"""Housekeeping: delete final jobs older than a retention window (`jobrunner prune`, `run --retention`).

A job is pruned only when its status file says it is final (completed, failed or cancelled) and it
finished before the cutoff; pending and running jobs are never touched, nor a job whose request is in
``.active/`` or ``.deferred/`` (a retry under way). For each job, holding an flock on its kept request
(``queue/.done/<id>.json``) so that a concurrent `jobrunner retry` cannot take it meanwhile:

1. the request is deleted, then 2. the status file, then 3. the job's artifacts (``jobs/<id>/``: steps,
results, log).

A crash between two steps leaves a final status without its request (or artifacts without a status),
which the next prune finishes; a job is never left looking runnable. The ``jobs/.recent`` index keeps
the pruned ids (readers skip ids without a status); the stats ledger forgets them.

``rejected`` (not a job state) prunes requests set aside in ``queue/.rejected/`` (and their ``.reason``)
by their age.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import ledger
from .layout import ID_PATTERN, Layout

FINAL = ("completed", "failed", "cancelled")
CHOICES = (*FINAL, "rejected")


@dataclass
class Pruned:
    jobs: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    bytes: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # id -> why it was left alone


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _finished(doc: dict[str, object]) -> float | None:
    when = doc.get("finished_at") or doc.get("updated_at")
    try:
        return datetime.fromisoformat(str(when)).timestamp()
    except ValueError:
        return None


def _candidates(layout: Layout, cutoff: float) -> Iterator[str]:
    """Status files last written before the cutoff (a final status is not rewritten, so its mtime is
    when it became final): the only ones worth reading."""
    with os.scandir(layout.jobs) as it:
        for entry in it:
            name = entry.name
            if not name.endswith(".json") or name.startswith("."):
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff and ID_PATTERN.match(name[:-5]):
                    yield name[:-5]


@contextlib.contextmanager
def _holding_request(layout: Layout, job_id: str) -> Iterator[bool]:
    """Hold an exclusive flock on the job's kept request while pruning (True), or yield True when there
    is none; False when another process holds it (a retry taking it)."""
    path = layout.request(job_id)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            same = os.fstat(fd).st_ino == os.lstat(path).st_ino
        except FileNotFoundError:
            same = False
        yield same or not path.exists()
    finally:
        os.close(fd)


def prune(layout: Layout, older_than_s: float, states: Iterable[str] = FINAL, *, dry_run: bool = False,
          now: float | None = None) -> Pruned:
    """Delete what ``states`` selects that is older than ``older_than_s``; with ``dry_run``, only say."""
    wanted = set(states)
    unknown = wanted - set(CHOICES)
    if unknown:
        raise ValueError(f"unknown state(s) {', '.join(sorted(unknown))}: choose from {', '.join(CHOICES)}")
    cutoff = (time.time() if now is None else now) - older_than_s
    out = Pruned()
    if wanted & set(FINAL):
        for job_id in _candidates(layout, cutoff):
            why = _prune_job(layout, job_id, wanted, cutoff, dry_run, out)
            if why:
                out.skipped[job_id] = why
        if out.jobs and not dry_run:
            ledger.forget(layout, out.jobs)
    if "rejected" in wanted:
        _prune_rejected(layout, cutoff, dry_run, out)
    return out


def _prune_job(layout: Layout, job_id: str, wanted: set[str], cutoff: float, dry_run: bool,
               out: Pruned) -> str | None:
    status_path = layout.status(job_id)
    with _holding_request(layout, job_id) as ours:
        if not ours:
            return "its request is being taken by another process (a retry?)"
        try:
            doc = json.loads(status_path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            return "its status file does not parse"
        if not isinstance(doc, dict) or doc.get("status") not in wanted or doc.get("status") not in FINAL:
            return None  # not final, or not a state asked for: not ours to say
        finished = _finished(doc)
        if finished is None or finished >= cutoff:
            return None
        if layout.active_request(job_id).exists() or layout.deferred_request(job_id).exists():
            return "it is being run again"
        size = _size(status_path) + _size(layout.request(job_id)) + _size(layout.job_dir(job_id))
        if not dry_run:
            with contextlib.suppress(FileNotFoundError):
                layout.request(job_id).unlink()
            status_path.unlink()
            shutil.rmtree(layout.job_dir(job_id), ignore_errors=True)
        out.jobs.append(job_id)
        out.bytes += size
    return None


def _prune_rejected(layout: Layout, cutoff: float, dry_run: bool, out: Pruned) -> None:
    try:
        names = os.listdir(layout.rejected)
    except FileNotFoundError:
        return
    for name in names:
        if name.endswith(".reason") or name.startswith("."):
            continue
        path = layout.rejected / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if st.st_mtime >= cutoff:
            continue
        reason = layout.rejected / f"{name}.reason"
        out.bytes += st.st_size + _size(reason)
        out.rejected.append(name)
        if not dry_run:
            for doomed in (path, reason):
                with contextlib.suppress(FileNotFoundError):
                    if doomed.is_dir() and not doomed.is_symlink():
                        shutil.rmtree(doomed, ignore_errors=True)
                    else:
                        doomed.unlink()
