"""`jobrunner stats`: how the jobs went over a window, and what waits now.

Finished jobs come from the ledger (``jobs/.ledger``: a line per finished job, so 100,000 jobs cost one
read, not 100,000), or from every status file when a data dir has no ledger yet. What waits now comes
from the spool: files in ``queue/`` (and claimed, not yet accepted), jobs in ``.deferred/`` and
``.active/``, and the status files of those (a few hundred at most).

The JSON form (``--json``) is stable; its schema is in ``tests/test_stats.py`` (``STATS_SCHEMA``). Times are
in seconds; rates are shares of the finished jobs (0..1), null when nothing finished.
"""

from __future__ import annotations

import contextlib
import os
import time
from bisect import bisect_right
from collections import Counter
from datetime import datetime
from itertools import compress
from typing import Any

from . import ledger, listing
from .layout import Layout, is_spool_name

Doc = dict[str, Any]


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def _floats(values: list[str]) -> list[float]:
    return sorted(map(float, filter("-".__ne__, values)))


def _spread(values: list[str]) -> Doc:
    nums = _floats(values)
    return {"p50": percentile(nums, 50), "p95": percentile(nums, 95), "max": nums[-1] if nums else None,
            "count": len(nums)}


def queue_state(layout: Layout, now: float | None = None, *, by_type: bool = False) -> Doc:
    """What waits now: queued files (not yet accepted), deferred jobs, active ones; the oldest pending.
    ``by_type`` adds ``by_type``: {(state, type): count} of the accepted jobs (for the metrics file)."""
    now = time.time() if now is None else now
    oldest: tuple[float, str | None] | None = None  # (epoch, job id if known)
    queued = 0
    folders = [layout.queue]
    with contextlib.suppress(FileNotFoundError):
        folders += [layout.worker_dir(w) for w in os.listdir(layout.claimed) if not w.endswith(".lock")]
    for folder in folders:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as it:
            for entry in it:
                if not is_spool_name(entry.name):
                    continue
                queued += 1
                with contextlib.suppress(FileNotFoundError):
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                    if oldest is None or mtime < oldest[0]:
                        oldest = (mtime, None)
    counts = {"running": 0, "pending": 0}
    typed: dict[tuple[str, str], int] = {}
    ids = {}
    for name, folder in (("active", layout.active), ("deferred", layout.deferred)):
        with contextlib.suppress(FileNotFoundError):
            for file_name in os.listdir(folder):
                if file_name.endswith(".json"):
                    ids[file_name[: -len(".json")]] = name
    for job_id in ids:
        doc = listing.read_doc(layout, job_id)
        if doc is None or doc.get("status") in listing.FINAL:
            continue  # just finished (its request is moving), or accepted a moment ago
        state = "pending" if doc.get("status") == "pending" else "running"
        counts[state] += 1
        key = (state, str(doc.get("type")))
        typed[key] = typed.get(key, 0) + 1
        created = doc.get("created_at")
        if state == "pending" and isinstance(created, str):
            with contextlib.suppress(ValueError):
                when = datetime.fromisoformat(created).timestamp()
                if oldest is None or when < oldest[0]:
                    oldest = (when, job_id)
    deferred = sum(1 for v in ids.values() if v == "deferred")
    active = len(ids) - deferred
    out: Doc = {
        "depth": queued + deferred + active, "queued": queued, "deferred": deferred, "active": active,
        "running": counts["running"], "pending": counts["pending"] + queued,
        "oldest_pending_age_s": None if oldest is None else round(max(0.0, now - oldest[0]), 3),
        "oldest_pending_id": None if oldest is None else oldest[1],
    }
    if by_type:
        out["by_type"] = typed
    return out


def compute(layout: Layout, *, window_s: float | None, job_type: str | None = None,
            now: float | None = None) -> Doc:
    """The stats document (the `--json` output)."""
    now = time.time() if now is None else now
    since = ledger.cutoff(window_s, now)
    found = ledger.read(layout, since)
    entries = found if found is not None else ledger.scan(layout)
    entries = entries.filtered(since=since, job_type=job_type)
    by_status = Counter(entries.status)
    total = len(entries)
    attempts = Counter(entries.attempts)
    retried = {int(a): n for a, n in attempts.items() if a.isdigit() and int(a) > 1}
    overall = _spread(entries.run_s)
    by_type: dict[str, Doc] = {}
    type_status = Counter(zip(entries.type, entries.status, strict=True))
    types = sorted({t for t, _ in type_status})
    for t in types:
        if len(types) == 1:
            run, leads = entries.run_s, entries.leads
        else:
            run = list(compress(entries.run_s, map(t.__eq__, entries.type)))
            leads = list(compress(entries.leads, map(t.__eq__, entries.type)))
        counted = [int(n) for n in filter("-".__ne__, leads)]
        jobs = len(run)
        completed = type_status[(t, "completed")]
        by_type[t] = {
            "jobs": jobs, "completed": completed, "failed": type_status[(t, "failed")],
            "cancelled": type_status[(t, "cancelled")],
            "success_rate": round(completed / jobs, 4) if jobs else None,
            "duration_s": overall if len(types) == 1 else _spread(run),
            "leads": sum(counted) if counted else None,
            "leads_per_job": round(sum(counted) / len(counted), 2) if counted else None,
        }
    errors = Counter(e for e in entries.error if e != "-")
    return {
        "generated_at": ledger.cutoff(0.0, now),
        "window": {"since": since, "seconds": window_s, "type": job_type},
        "source": entries.source,
        "finished": {"total": total, "completed": by_status["completed"], "failed": by_status["failed"],
                     "cancelled": by_status["cancelled"]},
        "rates": {name: round(by_status[name] / total, 4) if total else None
                  for name in ("completed", "failed", "cancelled")},
        "retries": {"jobs_retried": sum(retried.values()),
                    "extra_attempts": sum((a - 1) * n for a, n in retried.items())},
        "duration_s": overall,
        "queue_wait_s": _spread(entries.wait_s),
        "errors": dict(errors.most_common(10)),
        "by_type": by_type,
        "queue": queue_state(layout, now),
    }


def over_time(layout: Layout, *, window_s: float, buckets: int, job_type: str | None = None,
              now: float | None = None) -> Doc:
    """Finished jobs per slice of the window, oldest first, with each slice's success and failure rates:
    the dashboard's chart. Read from the ledger's tail like ``compute``; each entry is put in its slice by
    comparing its finish time, as stored (ISO strings sort as times), with the slices' bounds."""
    now = time.time() if now is None else now
    size = window_s / buckets
    bounds = [ledger.cutoff(window_s - size * i, now) or "" for i in range(buckets + 1)]
    since = bounds[0]
    found = ledger.read(layout, since)
    entries = (found if found is not None else ledger.scan(layout)).filtered(since=since, job_type=job_type)
    counts = [Counter[str]() for _ in range(buckets)]
    for finished, state in zip(entries.finished, entries.status, strict=True):
        slot = min(buckets, max(1, bisect_right(bounds, finished))) - 1
        counts[slot][state] += 1
    rows = []
    for i, c in enumerate(counts):
        total = c["completed"] + c["failed"] + c["cancelled"]
        rows.append({"start": bounds[i], "end": bounds[i + 1], "total": total, "completed": c["completed"],
                     "failed": c["failed"], "cancelled": c["cancelled"],
                     "success_rate": round(c["completed"] / total, 4) if total else None,
                     "failure_rate": round(c["failed"] / total, 4) if total else None})
    return {"window": {"since": since, "seconds": window_s, "type": job_type}, "bucket_s": size, "buckets": rows}


def _num(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "-"
    if unit != "s":
        return f"{value:,.1f}"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{value / 60:.1f}m"
    if value < 86400:
        return f"{value / 3600:.1f}h"
    return f"{value / 86400:.1f}d"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def window_label(secs: float) -> str:
    """86400 -> "24h", 1800 -> "30m", 604800 -> "7d"."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size and (secs / size).is_integer() and (unit != "d" or secs >= 2 * 86400):
            return f"{secs / size:g}{unit}"
    return f"{secs:g}s"


def render(doc: Doc) -> str:
    """The text form: a few lines and a table by type."""
    fin, w = doc["finished"], doc["window"]
    scope = "ever" if w["since"] is None else f"in the last {window_label(w['seconds'])} (since {w['since']})"
    what = f"{w['type']} jobs" if w["type"] else "jobs"
    out = [f"{what} finished {scope}: {fin['total']:,}" + ("" if doc["source"] == "ledger" else
                                                          f" (read from {doc['source']}: no ledger yet)")]
    for name in ("completed", "failed", "cancelled"):
        out.append(f"  {name:<10} {fin[name]:>8,}  {_pct(doc['rates'][name]):>6}")
    r = doc["retries"]
    out.append(f"retries: {r['jobs_retried']:,} job(s) took more than one attempt ({r['extra_attempts']:,} extra)")
    for key, title in (("duration_s", "duration (first start to finish)"), ("queue_wait_s", "queue wait (created to "
                                                                                            "first start)")):
        s = doc[key]
        out.append(f"{title}: p50 {_num(s['p50'])}  p95 {_num(s['p95'])}  max {_num(s['max'])}")
    q = doc["queue"]
    oldest = ""
    if q["oldest_pending_age_s"] is not None:
        oldest = f"; oldest pending: {_num(q['oldest_pending_age_s'])}" + (
            f" (job {q['oldest_pending_id']})" if q["oldest_pending_id"] else " (a file in the queue)")
    out.append(f"now: {q['depth']:,} in the spool ({q['queued']:,} queued, {q['deferred']:,} deferred, "
               f"{q['active']:,} active; {q['running']:,} running){oldest}")
    if doc["errors"]:
        out.append("errors: " + ", ".join(f"{k} {v:,}" for k, v in doc["errors"].items()))
    if doc["by_type"]:
        rows = [("TYPE", "JOBS", "COMPLETED", "FAILED", "CANCELLED", "SUCCESS", "P50", "P95", "LEADS", "LEADS/JOB")]
        for t, s in doc["by_type"].items():
            rows.append((t, f"{s['jobs']:,}", f"{s['completed']:,}", f"{s['failed']:,}", f"{s['cancelled']:,}",
                         _pct(s["success_rate"]), _num(s["duration_s"]["p50"]), _num(s["duration_s"]["p95"]),
                         "-" if s["leads"] is None else f"{s['leads']:,}", _num(s["leads_per_job"], "n")))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        out.append("by type:")
        for r in rows:
            out.append("  " + "  ".join(c.ljust(wd) if i == 0 else c.rjust(wd)
                                        for i, (c, wd) in enumerate(zip(r, widths, strict=True))).rstrip())
    return "\n".join(out)

