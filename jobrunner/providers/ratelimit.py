"""A provider's rate limit as seen from the daemon: N calls in any window of S seconds, never more.

Callers wait for a slot; nothing fails for being over the limit. The window is a log of the last N calls
(exact, unlike a token bucket that allows a burst at the window's edge). The provider clocks a call when
it arrives, which we do not know: only that it is after we started sending and before its answer came
back. So a call counts from its answer (from now, while it is in flight), plus a small margin, and
the next call waits S seconds from there. A provider that answers 429 anyway (its account limit is lower
than configured, or another client shares the key) pauses every caller for its Retry-After.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .config import RateLimit

_POLL_S = 0.02  # while the call that decides the wait is still in flight


class _Call:
    __slots__ = ("at", "done")

    def __init__(self, at: float) -> None:
        self.at = at
        self.done = False


class RateLimiter:
    def __init__(self, limit: RateLimit | None, *, margin_s: float = 0.02) -> None:
        self.limit = limit
        self.margin_s = margin_s
        self._calls: collections.deque[_Call] = collections.deque()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()  # first come, first served
        self.waited_s = 0.0  # total time callers spent waiting, for stats

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait until a call may be sent; the block sends it. The call counts until S seconds after
        the block ends (its answer, or its failure)."""
        call = await self._acquire()
        try:
            yield
        finally:
            call.at = time.monotonic()
            call.done = True

    async def _acquire(self) -> _Call:
        async with self._lock:
            started = time.monotonic()
            while True:
                now = time.monotonic()
                wait = self._paused_until - now
                if self.limit is not None and len(self._calls) >= self.limit.calls:
                    deciding = self._calls[-self.limit.calls]
                    until = (deciding.at if deciding.done else now) + self.limit.per_s + self.margin_s
                    wait = max(wait, until - now if deciding.done else max(_POLL_S, until - now))
                if wait <= 0:
                    break
                await asyncio.sleep(min(wait, 1.0))  # and look again (a pause may have been added)
            call = _Call(time.monotonic())
            if self.limit is not None:
                self._calls.append(call)
                while len(self._calls) > self.limit.calls:
                    self._calls.popleft()
            self.waited_s += time.monotonic() - started
            return call

    def pause(self, seconds: float) -> None:
        """The provider said to wait (429 with Retry-After): hold every caller that long."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
