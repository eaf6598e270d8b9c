"""Reading status files for display, fast: plain JSON (no models), and no scan of every file.

`jobrunner status` must answer in milliseconds with 100,000 jobs on disk. It reads only what it shows:
the active jobs (found from .active/ and .deferred/, where their requests are) and the latest ones (from
the tail of jobs/.recent). Docs here are the status files' JSON objects, exactly as stored.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from . import index
from .layout import Layout, is_spool_name

Doc = dict[str, Any]
FINAL = ("completed", "failed", "cancelled")


def read_doc(layout: Layout, job_id: str) -> Doc | None:
    try:
        with open(layout.status(job_id), "rb") as f:
            doc: Doc = json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None
    return doc


def starting(job_id: str) -> Doc:
    """A job accepted a moment ago whose first status write is on its way."""
    return {"id": job_id, "type": "?", "status": "running", "progress": {"current": 0, "total": None,
            "percentage": None}, "attempt": 1, "max_attempts": None, "updated_at": None, "error": None}


def active_ids(layout: Layout) -> set[str]:
    ids: set[str] = set()
    for folder in (layout.active, layout.deferred):
        with contextlib.suppress(FileNotFoundError):
            ids.update(n[: -len(".json")] for n in os.listdir(folder) if n.endswith(".json"))
    return ids


def active(layout: Layout) -> tuple[list[Doc], int]:
    """Pending and running jobs, newest first; and how many files wait in the queue, not yet accepted."""
    docs = []
    for job_id in active_ids(layout):
        doc = read_doc(layout, job_id) or starting(job_id)
        if doc.get("status") not in FINAL:
            docs.append(doc)
    docs.sort(key=lambda d: d.get("created_at") or "~", reverse=True)
    queued = sum(1 for n in os.listdir(layout.queue) if is_spool_name(n))
    with contextlib.suppress(FileNotFoundError):
        for worker in os.listdir(layout.claimed):
            with contextlib.suppress(NotADirectoryError, FileNotFoundError):
                queued += len(os.listdir(layout.worker_dir(worker)))
    return docs, queued


def latest(layout: Layout, limit: int) -> list[Doc]:
    """The ``limit`` most recently updated jobs, newest first."""
    ids = index.recent(layout, limit)
    if ids is None:
        ids = _by_mtime(layout, limit)
    docs = {}
    for job_id in [*ids, *active_ids(layout)]:
        doc = read_doc(layout, job_id)
        if doc is not None:
            docs[job_id] = doc
    ordered = sorted(docs.values(), key=lambda d: d.get("updated_at") or "", reverse=True)
    return ordered[:limit]


def _by_mtime(layout: Layout, limit: int) -> list[str]:
    """Without an index: stat every status file (slow with many jobs, but always right)."""
    entries = []
    with os.scandir(layout.jobs) as it:
        for entry in it:
            if entry.name.endswith(".json") and not entry.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    entries.append((entry.stat().st_mtime_ns, entry.name[: -len(".json")]))
    entries.sort(reverse=True)
    return [job_id for _, job_id in entries[:limit]]
