"""Checkpointed steps: a completed step's result is stored durably and returned on any later attempt
without running the step again (the durable-function idea). This is what keeps a paid API call that
succeeded from being paid for twice after a crash, a retry or a restart."""

from __future__ import annotations

import json
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

    def load(self, key: str) -> Any:
        """The stored result of step ``key``, or ``StepStore.MISSING``."""
        try:
            with open(self.layout.step(self.job_id, key), "rb") as f:
                record = json.loads(f.read())
        except FileNotFoundError:
            return _MISSING
        return record["result"]

    async def save(self, key: str, result: Any) -> None:
        data = json.dumps({"key": key, "result": result, "at": status.iso(status.now())}).encode()
        if not self._made_dir:
            self.layout.steps(self.job_id).mkdir(parents=True, exist_ok=True)
            self._made_dir = True
        await self.writer.replace(self.layout.step(self.job_id, key), data, durable=True)

    MISSING = _MISSING
