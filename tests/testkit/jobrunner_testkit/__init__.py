"""Job types that let tests see inside a run, through files in $JOBRUNNER_TESTKIT_DIR:

- ``count``: N checkpointed steps, each sleeping ``step_seconds``. Every execution of a step's body
  appends "<job> <step> <attempt>" to ``runs.log``; if the step's checkpoint already exists when its body
  starts, it appends to ``violations.log`` (a completed step running again: what must never happen).
- ``flaky``: fails with a retryable error on its first ``fail_times`` attempts (or permanently).
- ``crash``: SIGKILLs its own daemon in the middle of the attempt (a job that kills the daemon).
- ``block``: blocks the daemon's event loop (a hung daemon) on its first attempts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from jobrunner import Handler, JobContext, JobRequest, PermanentError, RetryableError, checkpoint
from jobrunner.layout import Layout


def _record(name: str, line: str) -> None:
    folder = os.environ.get("JOBRUNNER_TESTKIT_DIR")
    if not folder:
        return
    fd = os.open(Path(folder) / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class CountRequest(JobRequest):
    type: Literal["count"]
    steps: int = Field(default=5, ge=0, le=100_000)
    step_seconds: float = Field(default=0.0, ge=0)


async def run_count(req: CountRequest, ctx: JobContext) -> dict[str, int]:
    layout = Layout.resolve(None)
    for i in range(req.steps):
        key = f"s{i}"

        async def body(key: str = key) -> int:
            if any(r["key"] == key for r in checkpoint.records(layout, ctx.job_id)):
                _record("violations.log", f"{ctx.job_id} {key} {ctx.attempt}")
            _record("runs.log", f"{ctx.job_id} {key} {ctx.attempt}")
            await asyncio.sleep(req.step_seconds)
            return len(key)

        await ctx.step(key, body)
        ctx.progress(i + 1, req.steps)
    return {"steps": req.steps, "run": ctx.steps_run, "reused": ctx.steps_reused}


class FlakyRequest(JobRequest):
    type: Literal["flaky"]
    fail_times: int = Field(default=1, ge=0)
    permanent: bool = False
    defer_s: float | None = None


async def run_flaky(req: FlakyRequest, ctx: JobContext) -> dict[str, int]:
    _record("flaky.log", f"{ctx.job_id} {ctx.attempt}")
    if req.permanent:
        raise PermanentError("the provider said no (401: bad credentials)")
    if ctx.attempt <= req.fail_times:
        raise RetryableError(f"provider answered 503 on attempt {ctx.attempt}", defer_s=req.defer_s)
    return {"attempts": ctx.attempt}


class CrashRequest(JobRequest):
    type: Literal["crash"]


async def run_crash(req: CrashRequest, ctx: JobContext) -> None:
    _record("crash.log", f"{ctx.job_id} {ctx.attempt}")
    await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)


class BlockRequest(JobRequest):
    type: Literal["block"]
    seconds: float = Field(default=3600.0, ge=0)
    on_attempts: int = Field(default=1, ge=0, description="Block on attempts up to this one; then complete.")


async def run_block(req: BlockRequest, ctx: JobContext) -> dict[str, int]:
    """A buggy handler that blocks the event loop (a synchronous call that never returns): the daemon
    hangs, and only a watchdog outside it can tell."""
    _record("block.log", f"{ctx.job_id} {ctx.attempt}")
    if ctx.attempt <= req.on_attempts:
        time.sleep(req.seconds)
    return {"attempt": ctx.attempt}


COUNT = Handler("count", CountRequest, run_count, "Counts step executions (tests).")
BLOCK = Handler("block", BlockRequest, run_block, "Blocks the daemon's event loop (tests).")
FLAKY = Handler("flaky", FlakyRequest, run_flaky, "Fails on purpose (tests).")
CRASH = Handler("crash", CrashRequest, run_crash, "Kills its daemon (tests).")
