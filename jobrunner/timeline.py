"""A job's story in time order, for `jobrunner logs`: its attempts (from the status file's history, the
durable record) woven with its own log (``joblog``: steps, call retries, the handler's lines).

Everything here reads plain JSON; nothing imports pydantic, so `jobrunner logs -f` starts fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from . import joblog
from .layout import Layout
from .listing import FINAL, Doc, read_doc

Event = dict[str, Any]  # at, level, attempt, message (+ step, logger, kind)


def _error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return ""
    return f"{error.get('type')}: {error.get('message')}"


def _seconds(value: Any) -> str:
    return f"{value:g}s" if isinstance(value, int | float) else "?"


def attempt_events(doc: Doc) -> list[Event]:
    """What the status says happened: acceptance, each attempt's start and end, the current attempt."""
    events: list[Event] = []
    max_attempts = doc.get("max_attempts")
    of = f"/{max_attempts}" if max_attempts else ""
    if doc.get("created_at"):
        source = f" from {doc['source']}" if doc.get("source") else ""
        events.append({"at": doc["created_at"], "level": "info", "attempt": 0, "kind": "accepted",
                       "message": f"accepted {doc.get('type')} job{source}"})
    history = [h for h in doc.get("history") or [] if isinstance(h, dict)]
    for record in history:
        n = record.get("attempt")
        worker = f" on {record['worker']}" if record.get("worker") else ""
        if record.get("started_at"):
            events.append({"at": record["started_at"], "level": "info", "attempt": n, "kind": "attempt",
                           "message": f"attempt {n}{of} started{worker}"})
        outcome = record.get("outcome")
        error = _error_text(record.get("error"))
        delay = _seconds(record.get("delay_s"))
        text, level = {
            "completed": (f"attempt {n} completed", "info"),
            "retry": (f"attempt {n} failed: {error}; retry in {delay}", "warning"),
            "throttled": (f"attempt {n} throttled: {error}; waiting {delay} (no attempt used)", "warning"),
            "failed": (f"attempt {n} failed: {error}; the job failed", "error"),
            "interrupted": (f"attempt {n} interrupted: {error}; next in {delay}", "warning"),
            "requeued": (f"attempt {n} stopped by a daemon shutdown; it resumes from its last step", "info"),
            "cancelled": (f"attempt {n} cancelled", "info"),
            "timeout": (f"attempt {n} timed out: {error}", "warning"),
        }.get(str(outcome), (f"attempt {n} ended: {outcome} {error}".rstrip(), "info"))
        if record.get("ended_at"):
            took = _took(record.get("started_at"), record["ended_at"])
            events.append({"at": record["ended_at"], "level": level, "attempt": n, "kind": "attempt",
                           "message": text.replace(f"attempt {n} ", f"attempt {n} {took}", 1)})
    started = doc.get("attempt_started_at")
    if doc.get("status") == "running" and started and all(h.get("started_at") != started for h in history):
        n = doc.get("attempt")
        worker = f" on {doc['worker']}" if doc.get("worker") else ""
        events.append({"at": started, "level": "info", "attempt": n, "kind": "attempt",
                       "message": f"attempt {n}{of} started{worker}"})
    if doc.get("status") in FINAL and doc.get("finished_at"):
        summary = ""
        if doc.get("status") == "completed" and isinstance(doc.get("result"), dict):
            shown = ", ".join(f"{k} {v}" for k, v in doc["result"].items() if isinstance(v, int | float | str))
            summary = f": {shown}" if shown else ""
        elif doc.get("error"):
            summary = f": {_error_text(doc['error'])}"
        events.append({"at": doc["finished_at"], "level": "info" if doc["status"] == "completed" else "error",
                       "attempt": doc.get("attempt"), "kind": "final", "message": f"job {doc['status']}{summary}"})
    elif doc.get("status") == "pending" and doc.get("next_attempt_at"):
        events.append({"at": doc.get("updated_at") or doc["next_attempt_at"], "level": "info",
                       "attempt": doc.get("attempt"), "kind": "waiting",
                       "message": f"waiting; next attempt at {doc['next_attempt_at']}"})
    return events


def _took(start: Any, end: Any) -> str:
    """``(4.2s) `` between two ISO times, or nothing."""
    try:
        secs = datetime.fromisoformat(str(end)).timestamp() - datetime.fromisoformat(str(start)).timestamp()
    except ValueError:
        return ""
    return f"({secs:.2f}s) " if secs < 10 else f"({secs:.0f}s) "


def _when(event: Event) -> float:
    try:
        return datetime.fromisoformat(str(event.get("at"))).timestamp()
    except ValueError:
        return 0.0


def ordered(events: Iterable[Event]) -> list[Event]:
    """By time; at a tie, the status's events before the log's."""
    return sorted(events, key=lambda e: (_when(e), 0 if e.get("kind") else 1))


def _shown_time(at: Any) -> str:
    """``2026-12-03T21:43:44.767Z``: milliseconds, whatever precision the source had."""
    text = str(at)
    head, dot, frac = text.partition(".")
    if dot and frac.endswith("Z"):
        return f"{head}.{frac[:-1][:3].ljust(3, '0')}Z"
    return text


class Follower:
    """Reads a job's events incrementally: each ``poll`` returns only what is new since the last."""

    def __init__(self, layout: Layout, job_id: str) -> None:
        self.layout = layout
        self.job_id = job_id
        self.offset = 0
        self.seen: set[tuple[str, str]] = set()
        self.doc: Doc | None = None

    def poll(self) -> list[Event]:
        doc = read_doc(self.layout, self.job_id)
        if doc is not None:
            self.doc = doc
        lines, self.offset = joblog.read(self.layout, self.job_id, self.offset)
        new: list[Event] = []
        for event in attempt_events(self.doc or {}):
            key = (str(event["at"]), str(event["message"]))
            if key in self.seen:
                continue
            self.seen.add(key)
            new.append(event)
        new.extend(lines)
        return ordered(new)

    @property
    def final(self) -> bool:
        return self.doc is not None and self.doc.get("status") in FINAL


def render(event: Event) -> str:
    level = str(event.get("level") or "info")
    shown = "" if level == "info" else f"{level.upper()} "
    attempt = event.get("attempt")
    tag = f"#{attempt} " if isinstance(attempt, int) and attempt > 0 else ""
    return f"{_shown_time(event.get('at'))} {tag}{shown}{event.get('message')}"
