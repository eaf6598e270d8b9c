"""``noop``: a job that does nothing, or sleeps through a number of checkpointed steps.

It is the sample job of the quickstart and what the benchmarks drain; ``steps``/``step_seconds``
make it a long job with progress, for trying out cancellation, shutdown and crash recovery.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field

from ..context import JobContext
from ..request import JobRequest
from . import Handler, Result


class NoopRequest(JobRequest):
    type: Literal["noop"]
    steps: int = Field(default=0, ge=0, le=100_000, description="Checkpointed steps to run.")
    step_seconds: float = Field(default=0.0, ge=0, le=3600, description="Sleep in each step.")


async def run(request: NoopRequest, ctx: JobContext) -> Result:
    async def one_step() -> None:
        await asyncio.sleep(request.step_seconds)

    for i in range(request.steps):
        await ctx.step(f"step-{i}", one_step)
        ctx.progress(i + 1, request.steps)
    return {"steps": request.steps}


HANDLER = Handler("noop", NoopRequest, run, "Does nothing, or sleeps through checkpointed steps.")
