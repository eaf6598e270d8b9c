"""Checkpointed steps: a completed step's result is stored durably and returned on any later attempt
without running the step again (the durable-function idea). This is what keeps a paid API call that
succeeded from being paid for twice after a crash, a retry or a restart.

A job's steps are one log, ``jobs/<id>/steps.jsonl``: a line per completed step, appended, then made
durable by the daemon's group commit (a ``syncfs`` shared with every other write of the moment). Appending
to one file instead of creating a file per step matters: an enrich job of 2,000 leads stores 6,000
answers, and creating a file costs far more than appending a line (most of all on a filesystem without a
journal). Every record starts with a newline, so a line a crash tore is a line of its own: it does not
parse, and that step (never confirmed as stored) runs again. That is the one window, as short as one write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from . import status
from .durable import Committer
from .layout import Layout

_MISSING = object()


def records(layout: Layout, job_id: str) -> Iterator[dict[str, Any]]:
    """The stored steps of a job, oldest first (a torn line is skipped)."""
    try:
        with open(layout.steps_log(job_id), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # torn by a crash: that step was never confirmed stored
        if isinstance(record, dict) and isinstance(record.get("key"), str) and "result" in record:
            yield record


class StepStore:
    def __init__(self, layout: Layout, job_id: str, writer: Committer) -> None:
        self.layout = layout
        self.job_id = job_id
        self.writer = writer
        self._stored: dict[str, Any] | None = None  # read once per attempt

    def load(self, key: str) -> Any:
        """The stored result of step ``key``, or ``StepStore.MISSING``."""
        if self._stored is None:
            self._stored = {r["key"]: r["result"] for r in records(self.layout, self.job_id)}
        return self._stored.get(key, _MISSING)

    async def save(self, key: str, result: Any) -> None:
        line = b"\n" + json.dumps({"key": key, "result": result, "at": status.iso(status.now())}).encode() + b"\n"
        path = self.layout.steps_log(self.job_id)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(exist_ok=True)  # not its parents: a data dir gone is not made again here
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        await self.writer.barrier()  # durable before the step returns
        if self._stored is not None:
            self._stored[key] = result

    MISSING = _MISSING
