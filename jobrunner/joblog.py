"""A job's own execution log: ``jobs/<id>/log.jsonl``, what `jobrunner logs ID` shows.

The attempts themselves (start, end, outcome, error, retry delay) are in the status file's history,
written durably with each state change; this log holds what happened inside them: each step run, each
retry of a provider call with its reason and delay, and whatever the handler logs through ``ctx.log``
(or any logger, while it runs). A line is one JSON object: ``at`` (UTC, ms), ``level``, ``attempt``,
``message``, and ``step``/``logger`` where they apply.

The log is bound to the handler's task through a context variable, so the tasks a handler starts (one per
lead, say) write to the same log without being told. The file is created at its first line (a job that
logs nothing costs no file) and appended with single ``O_APPEND`` writes, not synced: a crash of the
daemon loses nothing (the kernel has the bytes), a crash of the machine may lose the last lines, and a
torn last line is skipped by readers. A log stops growing at ``MAX_BYTES``, with a line that says so.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .layout import Layout

MAX_BYTES = 16 * 1024 * 1024
# Loggers whose records in a job's context are about the daemon, not the job (the status has those).
_DAEMON_LOGGERS = ("jobrunner.worker", "jobrunner.spool", "jobrunner.recovery", "jobrunner.watcher",
                   "jobrunner.durable", "asyncio")

_current: contextvars.ContextVar[JobLog | None] = contextvars.ContextVar("jobrunner_job_log", default=None)


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"


class JobLog:
    """Appends lines to one job's log for one attempt."""

    def __init__(self, path: Path, attempt: int, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.attempt = attempt
        self.max_bytes = max_bytes
        self._fd: int | None = None
        self._size = 0
        self._broken = False

    def write(self, message: str, *, level: str = "info", **fields: Any) -> None:
        """Append one line (best effort: a log that cannot be written never fails the job)."""
        if self._broken:
            return
        line = {"at": _iso(time.time()), "level": level, "attempt": self.attempt, "message": message, **fields}
        data = b"\n" + json.dumps(line, ensure_ascii=False, default=str).encode("utf-8", "replace") + b"\n"
        try:
            if self._fd is None:
                self.path.parent.mkdir(exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                self._size = os.fstat(self._fd).st_size
            if self._size + len(data) > self.max_bytes:
                note = {"at": line["at"], "level": "warning", "attempt": self.attempt,
                        "message": f"the log reached {self.max_bytes:,} bytes; later lines are dropped"}
                os.write(self._fd, b"\n" + json.dumps(note).encode() + b"\n")
                self._broken = True
                return
            os.write(self._fd, data)
            self._size += len(data)
        except OSError:
            self._broken = True  # a full disk, say: the status file still records the attempt

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def bound(layout: Layout, job_id: str, attempt: int) -> Iterator[JobLog]:
    """Make ``job_id``'s log the current one for this task (and the tasks it starts) while inside."""
    job_log = JobLog(layout.job_log(job_id), attempt)
    token = _current.set(job_log)
    try:
        yield job_log
    finally:
        _current.reset(token)
        job_log.close()


def current() -> JobLog | None:
    return _current.get()


def event(message: str, *, level: str = "info", **fields: Any) -> None:
    """A line in the current job's log, if code runs for a job (else nothing)."""
    job_log = _current.get()
    if job_log is not None:
        job_log.write(message, level=level, **fields)


class JobLogHandler(logging.Handler):
    """Copies log records made while a job runs into that job's log (INFO and up)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        job_log = _current.get()
        if job_log is None or record.name.startswith(_DAEMON_LOGGERS):
            return
        try:
            message = record.getMessage()
        except Exception:  # a handler's bad format string must not fail its job
            message = str(record.msg)
        prefix = f"[{job_log.path.parent.name}] "
        if message.startswith(prefix):  # JobLogger's prefix says nothing in the job's own log
            message = message[len(prefix):]
        if record.exc_info and record.exc_info[1] is not None:
            message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        job_log.write(message, level=record.levelname.lower(), logger=record.name)


def install() -> None:
    """Attach the handler to the root logger (once), and let INFO records be made even when the
    daemon's own output shows fewer: the job's log always gets them."""
    root = logging.getLogger()
    if not any(isinstance(h, JobLogHandler) for h in root.handlers):
        root.addHandler(JobLogHandler())
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def read(layout: Layout, job_id: str, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The log's complete lines from byte ``offset`` on, and the offset after the last complete line
    (a line still being written is left for the next read)."""
    try:
        with open(layout.job_log(job_id), "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    lines = []
    for raw in data[:end].split(b"\n"):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # torn by a crash mid-append: the next line starts fresh
        if isinstance(line, dict):
            lines.append(line)
    return lines, offset + end + 1
