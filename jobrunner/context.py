"""What a handler gets besides its request: progress, checkpointed steps, a logger, HTTP, a stop signal."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from . import failpoints, joblog
from .checkpoint import StepStore
from .errors import Interrupted

if TYPE_CHECKING:
    import httpx

    from .providers import ProviderClient, Providers
    from .results import ResultsFile

T = TypeVar("T")


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every message with the job id, and carries it as ``job_id`` for structured logs."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[{extra.get('job_id')}] {msg}", kwargs


class JobContext:
    """Handed to ``Handler.run``. Everything here is safe to call from the handler's own task."""

    def __init__(
        self,
        *,
        job_id: str,
        attempt: int,
        max_attempts: int,
        steps: StepStore,
        on_progress: Callable[[int, int | None, str | None], None],
        http: Callable[[], httpx.AsyncClient],
        stopping: asyncio.Event,
        providers: Providers | None = None,
        results: ResultsFile | None = None,
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.log = JobLogger(logging.getLogger("jobrunner.job"), {"job_id": job_id})
        self.stopping = stopping
        self._steps = steps
        self._on_progress = on_progress
        self._http = http
        self._providers = providers
        self._results = results
        self.steps_run = 0
        self.steps_reused = 0

    @property
    def http(self) -> httpx.AsyncClient:
        """The daemon's shared HTTP client (connection pooling across jobs)."""
        return self._http()

    def progress(self, current: int, total: int | None = None, note: str | None = None) -> None:
        """Report progress; cheap to call often (writes are coalesced by the daemon). ``note`` says what
        is counted, or more ("pages; 75 leads so far")."""
        self._on_progress(current, total, note)

    def provider(self, name: str) -> ProviderClient:
        """The daemon's client for provider ``name`` (shared rate limit, concurrency cap and retries)."""
        if self._providers is None:
            raise RuntimeError("this context has no providers")
        return self._providers.get(name)

    @property
    def results(self) -> ResultsFile:
        """This job's results file (``jobrunner results ID``)."""
        if self._results is None:
            raise RuntimeError("this context has no results file")
        return self._results

    @overload
    async def step(self, key: str, fn: Callable[[], Awaitable[T]]) -> T: ...
    @overload
    async def step(self, key: str, fn: Callable[[], T]) -> T: ...
    async def step(self, key: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` once for this job, ever: if step ``key`` completed in any earlier attempt, return
        its stored result without calling ``fn``. The result must be JSON-serialisable.

        A step is also where a stopping daemon parks the job: no new step starts after a stop request.
        """
        stored = self._steps.load(key)
        if stored is not StepStore.MISSING:
            self.steps_reused += 1
            return stored
        if self.stopping.is_set():
            raise Interrupted("the daemon is stopping; the job resumes from this step")
        began = time.monotonic()
        try:
            value = fn()
            result = await value if inspect.isawaitable(value) else value
            json.dumps(result)  # fail here, not at restore time, on a result that cannot be stored
        except Exception as exc:
            joblog.event(f"step {key} failed after {time.monotonic() - began:.2f}s: {type(exc).__name__}: {exc}",
                         level="warning", step=key)
            raise
        await self._steps.save(key, result)
        failpoints.hit("step-saved")
        self.steps_run += 1
        joblog.event(f"step {key} done in {time.monotonic() - began:.2f}s", step=key)
        return result
