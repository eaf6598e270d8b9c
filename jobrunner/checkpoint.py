"""Checkpointed steps: a completed step's result is stored durably and returned on any later attempt
without running the step again (the durable-function idea). This is what keeps a paid API call that
succeeded from being paid for twice after a crash, a retry or a restart."""

from __future__ import annotations

import json
import os
from typing import Any

from . import status
from .durable import Committer
from .layout import Layout

_MISSING = object()


class StepStore:
    def __init__(self, layout: Layout, job_id: str, writer: Committer) -> None:
        self.layout = layout
        self.job_id = job_id
        self.writer = writer
        self._made_dir = False
        self._stored: set[str] | None = None  # names of the stored steps, listed once per attempt

    def load(self, key: str) -> Any:
        """The stored result of step ``key``, or ``StepStore.MISSING``."""
        path = self.layout.step(self.job_id, key)
        if self._stored is None:
            try:
                self._stored = set(os.listdir(path.parent))
            except FileNotFoundError:
                self._stored = set()
        if path.name not in self._stored:  # a job of thousands of steps: no failed open per new step
            return _MISSING
        try:
            with open(path, "rb") as f:
                record = json.loads(f.read())
        except FileNotFoundError:
            return _MISSING
        return record["result"]

    async def save(self, key: str, result: Any) -> None:
        data = json.dumps({"key": key, "result": result, "at": status.iso(status.now())}).encode()
        if not self._made_dir:
            self.layout.steps(self.job_id).mkdir(parents=True, exist_ok=True)
            self._made_dir = True
        path = self.layout.step(self.job_id, key)
        await self.writer.replace(path, data, durable=True)
        if self._stored is not None:
            self._stored.add(path.name)

    MISSING = _MISSING
