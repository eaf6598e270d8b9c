"""One provider's HTTP calls: the inner retry layer, its rate limit and its concurrency cap.

A call is retried here, for seconds, when the failure is transient: a network error or timeout, or HTTP
408, 425, 429 or 5xx, or a 2xx body that is not JSON. Between tries it waits what the provider asked
(``Retry-After``, in seconds or as an HTTP date) up to ``max_wait_s``, else an exponential backoff with
jitter. A Retry-After longer than that is not slept through: the call raises ``Throttled`` and the job
waits in the spool (the outer, job-level retry layer; see ``jobrunner.retry``), using no attempt.
When the tries run out the call raises ``RetryableError``: the job is retried later, from its last step.
A refusal no retry fixes (401/403, 404, another 4xx) raises ``ProviderRejected`` at once.

The key travels in a header built here and nowhere else; error messages quote a provider's answer only
with the key masked.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from .. import joblog
from ..errors import PermanentError, ProviderRejected, RetryableError, Throttled
from ..metrics import METRICS
from .config import SPECS, ProviderConfig, Secret
from .ratelimit import RateLimiter

if TYPE_CHECKING:
    import httpx
    from tenacity import RetryCallState

log = logging.getLogger("jobrunner.providers")

T = TypeVar("T")
RETRY_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))
MAX_DEFER_S = 24 * 3600.0


@dataclass(frozen=True)
class CallPolicy:
    tries: int = 5  # per call, first try included
    budget_s: float = 60.0  # no new try after this long
    max_wait_s: float = 30.0  # the longest Retry-After slept through; longer ones defer the job
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0


@dataclass
class CallStats:
    """What one job's calls cost, for its status: calls sent, retries among them, time spent waiting
    for the rate limit."""

    calls: int = 0
    retries: int = 0
    waited_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"calls": self.calls, "retries": self.retries, "rate_wait_s": round(self.waited_s, 1)}


class Transient(Exception):
    """A try that failed in a way another try may fix (kept inside this module)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BadShape(Transient):
    """A 2xx answer whose JSON is not what the provider's format says. Tried again within the call (a
    glitch); if every try gets it, the provider's format changed, and the job fails for good."""


class ProviderClient:
    """One provider's calls, for every job of the daemon.

    It has its own ``httpx.AsyncClient`` (a connection pool sized to its concurrency cap), not one shared
    by all providers: httpcore looks over every pooled connection, and for each one over all of them
    again, on every request it places, so one pool of all providers' connections cost the enrich
    benchmark ~1.7 ms of the event loop per call (bench/enrich.py, BENCHMARKS.md section 5)."""

    def __init__(self, config: ProviderConfig, policy: CallPolicy | None = None) -> None:
        self.config = config
        self.name = config.name
        self.policy = policy or CallPolicy()
        self._client: httpx.AsyncClient | None = None
        self.limiter = RateLimiter(config.rate)
        self.slots = asyncio.Semaphore(config.concurrency)
        self.token: Secret | None = None  # a token obtained at run time (DNC's refresh), used instead of the key

    def http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            size = max(self.config.concurrency, 1)
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout_s, connect=10.0),
                                             limits=httpx.Limits(max_connections=size * 2,
                                                                 max_keepalive_connections=size))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def reconfigure(self, config: ProviderConfig, policy: CallPolicy) -> None:
        """New settings for the calls that start from now (a reload). Calls in flight finish as they are."""
        if config.concurrency != self.config.concurrency:
            self.slots = asyncio.Semaphore(config.concurrency)
        self.limiter.limit = config.rate
        self.config = config
        self.policy = policy

    async def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                   json: Any = None, stats: CallStats | None = None, parse: Callable[[Any], T] | None = None,
                   base_url: str | None = None) -> T:
        """Send one request (retried while transient) and return ``parse(body)`` (the JSON body itself
        without ``parse``). ``parse`` raises ``BadShape`` for a body that is not what it expects."""
        from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_after_delay

        url = (base_url or self.config.require_url()).rstrip("/") + path
        headers = self._auth_headers()
        stats = stats if stats is not None else CallStats()
        started = time.monotonic()
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Transient),
            stop=stop_after_attempt(self.policy.tries) | stop_after_delay(self.policy.budget_s),
            wait=self._wait,
            reraise=True,
            before_sleep=lambda state: self._note_retry(state, method, path, stats),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    body = await self._try(method, url, path, headers, params, json, stats)
                    return parse(body) if parse is not None else cast(T, body)
        except BadShape as exc:
            raise PermanentError(f"{self.name}: {method} {path} answered in an unexpected format "
                                 f"({retrying.statistics.get('attempt_number', 1)} tries): {exc}") from None
        except Transient as exc:
            tries = retrying.statistics.get("attempt_number", self.policy.tries)
            raise RetryableError(f"{self.name}: {method} {path} failed {tries} times in "
                                 f"{time.monotonic() - started:.0f}s; last: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover - AsyncRetrying returns or raises

    async def _try(self, method: str, url: str, path: str, headers: dict[str, str],
                   params: Mapping[str, Any] | None, json: Any, stats: CallStats) -> Any:
        import httpx

        client = self.http()
        async with self.slots:
            before = time.monotonic()
            async with self.limiter.slot():  # inside the concurrency slot: the send follows at once
                waited = time.monotonic() - before
                stats.waited_s += waited
                if waited >= 0.5:
                    limit = self.limiter.limit
                    rate = f"{limit.calls} per {limit.per_s:g}s" if limit is not None else "none"
                    joblog.event(f"{self.name}: waited {waited:.1f}s for a call slot (rate limit {rate}, "
                                 f"at most {self.config.concurrency} at once)")
                stats.calls += 1
                try:
                    response = await client.request(method, url, params=params, json=json, headers=headers,
                                                    timeout=self.config.timeout_s)
                except httpx.TimeoutException as exc:
                    METRICS.provider_call(self.name, "timeout", waited)
                    raise Transient(f"timed out after {self.config.timeout_s:g}s ({type(exc).__name__})") from None
                except httpx.TransportError as exc:
                    METRICS.provider_call(self.name, "network", waited)
                    raise Transient(f"network error: {type(exc).__name__}: {self._masked(str(exc))}") from None
                METRICS.provider_call(self.name, str(response.status_code), waited)
        return self._read(method, path, response)

    def _read(self, method: str, path: str, response: httpx.Response) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            try:
                return response.json()
            except ValueError:
                raise Transient(f"HTTP {status} with a body that is not JSON: {self._excerpt(response)}") from None
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if status in RETRY_STATUSES:
            if status == 429:
                self.limiter.pause(retry_after if retry_after is not None else 1.0)
            if retry_after is not None and retry_after > self.policy.max_wait_s:
                raise Throttled(f"{self.name} answered HTTP {status} and asked us to come back in "
                                f"{retry_after:.0f}s; the job waits", defer_s=min(retry_after, MAX_DEFER_S))
            raise Transient(f"HTTP {status}", retry_after)
        if status in (401, 403):
            raise ProviderRejected(f"{self.name} refused the API key (HTTP {status}): check "
                                   f"{self.config.key_variable}", status=status)
        if status == 404:
            raise ProviderRejected(f"{self.name} answered HTTP 404 Not Found for {method} {path}", status=404)
        raise ProviderRejected(f"{self.name} refused {method} {path} (HTTP {status}): {self._excerpt(response)}",
                               status=status)

    def _wait(self, state: RetryCallState) -> float:
        from tenacity.wait import wait_exponential_jitter

        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, Transient) and exc.retry_after is not None:
            return min(exc.retry_after, self.policy.max_wait_s)
        backoff = wait_exponential_jitter(initial=self.policy.backoff_initial_s, max=self.policy.backoff_max_s,
                                          jitter=self.policy.backoff_initial_s)
        return float(backoff(state))

    def _note_retry(self, state: RetryCallState, method: str, path: str, stats: CallStats) -> None:
        stats.retries += 1
        METRICS.provider_retries[self.name] += 1
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.info("%s %s %s: %s; try %d of %d in %.1fs", self.name, method, path, exc, state.attempt_number + 1,
                 self.policy.tries, wait)

    def _auth_headers(self) -> dict[str, str]:
        key = (self.token or self.config.require_key()).reveal()
        if SPECS[self.name].auth == "rapidapi":
            host = urlsplit(self.config.require_url()).netloc
            return {"x-rapidapi-key": key, "x-rapidapi-host": host}
        return {"Authorization": f"Bearer {key}"}

    def _masked(self, text: str) -> str:
        for secret in (self.config.key, self.token):
            if secret is not None and secret.reveal():
                text = text.replace(secret.reveal(), "********")
        return text

    def _excerpt(self, response: httpx.Response) -> str:
        text = response.text[:200].replace("\n", " ")
        return repr(self._masked(text)) if text else "(empty body)"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
