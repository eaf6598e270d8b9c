"""Job-level retry policy: a pure function from (error, attempt) to a decision, tested by a table.

There are two retry layers and this is the outer one. The inner one (tenacity, in the provider layer)
retries a single HTTP call for seconds. This one reschedules the whole job: the decision and its due
time are written to the status file, so a backoff survives a restart, and a long wait (e.g. a
Retry-After of minutes) is a deferral in the spool, never a sleep in the daemon.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import Cancelled, JobError, RetryableError, Throttled


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 5.0
    max_s: float = 600.0
    jitter: float = 0.5  # the delay is drawn from [(1 - jitter) * d, d]

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay after failed attempt number ``attempt`` (1-based): base * 2^(attempt-1), capped, jittered."""
        ceiling = min(self.max_s, self.base_s * 2.0 ** max(0, attempt - 1))
        draw: float = (rng or random).random()
        return ceiling * (1 - self.jitter * draw)


@dataclass(frozen=True)
class Decision:
    retry: bool
    delay_s: float = 0.0
    reason: str = ""
    counts: bool = True  # whether the attempt counts against max_attempts (a throttle does not)


def is_retryable(exc: BaseException) -> bool:
    """Transient unless it says otherwise: a handler bug can be fixed and retried; attempts bound it."""
    if isinstance(exc, Cancelled):
        return False
    if isinstance(exc, JobError):
        return exc.retryable
    return True


def decide(
    exc: BaseException,
    attempt: int,
    max_attempts: int,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> Decision:
    """Whether a failed attempt is retried, and after how long."""
    if not is_retryable(exc):
        return Decision(False, reason="permanent error")
    if isinstance(exc, Throttled) and exc.defer_s is not None:
        return Decision(True, max(0.0, exc.defer_s), reason="the provider asked us to wait", counts=False)
    if attempt >= max_attempts:
        return Decision(False, reason=f"gave up after {attempt} of {max_attempts} attempts")
    delay = policy.backoff(attempt, rng)
    if isinstance(exc, RetryableError) and exc.defer_s is not None:
        delay = max(0.0, exc.defer_s)
    return Decision(True, delay, reason=f"attempt {attempt} of {max_attempts} failed")
