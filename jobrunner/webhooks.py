"""Webhooks: an HTTP POST when a job completes or fails for good, delivered at least once, never in the
job's way.

Where a job's webhook goes, first found wins: the request's ``notify_url``; else the URL for its type
(``JOBRUNNER_WEBHOOK_URL_<TYPE>``, or ``[webhooks.types]`` in the config file); else the default
(``JOBRUNNER_WEBHOOK_URL``, or ``url`` in ``[webhooks]``). No URL, no webhook. Which final states are
posted: ``events`` in ``[webhooks]`` or ``JOBRUNNER_WEBHOOK_EVENTS`` (default ``completed,failed``;
``cancelled`` may be added).

Delivery is at least once, through an outbox: the daemon writes ``jobs/.outbox/<id>.json`` (the job's
id, and the request's ``notify_url`` if it has one) *before* the final status, in the group commit that
precedes it, so a job that is final on disk always has its delivery on disk too, through any crash. A
configured URL is looked up when the delivery is made, so it is never copied into the data dir. Once
the status is durable a task posts it; the entry is deleted when the receiver answers 2xx, or when the
delivery gives up. Entries from elsewhere (a daemon that died, `jobrunner cancel`) are posted by the next
scan (at start-up, when the watched outbox changes, and every 30 s), by whichever daemon first takes the
entry's flock. Receivers de-duplicate by the
``X-Jobrunner-Delivery`` header, which is the same on every try of one delivery.

A delivery is retried (tenacity) on network errors, timeouts, 408, 425, 429 and 5xx, with exponential
backoff, for ``tries`` tries (default 8: about two minutes); another 4xx gives up at once. Nothing of it
touches the job: its status is final before the first try, and a delivery that fails is an ERROR line
in the daemon's log and in the job's log (``jobrunner logs ID``), and a count in the metrics.

Signing: with a secret configured (``JOBRUNNER_WEBHOOK_SECRET``, the systemd credential
``webhook_secret``, or ``secret`` in ``[webhooks]``), each POST carries ``X-Jobrunner-Signature:
t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>``; a receiver recomputes it and
rejects old ``t`` values to stop replays. A URL can hold a secret of its own (a Slack hook's path), so
logs name only its scheme and host.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .durable import write_atomic
from .errors import ConfigError
from .layout import Layout
from .metrics import METRICS
from .providers.config import CONFIG_ENV, Secret, credential, read_table

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("jobrunner.webhooks")

EVENTS = ("completed", "failed", "cancelled")
RETRY_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))
SCAN_INTERVAL_S = 30.0
MAX_URL_CHARS = 2048


def check_url(url: str) -> str:
    """A webhook URL as a request or the configuration gives it: http(s), with a host. ValueError if not."""
    parts = urlsplit(url)
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"at most {MAX_URL_CHARS} characters")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if any(c.isspace() for c in url):
        raise ValueError("must not contain white space")
    return url


def shown(url: str) -> str:
    """The part of a URL that may be logged: scheme and host (a path or query may hold a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


@dataclass(frozen=True)
class WebhookConfig:
    url: str | None = None
    by_type: Mapping[str, str] = field(default_factory=dict)
    secret: Secret | None = None
    events: frozenset[str] = frozenset({"completed", "failed"})
    tries: int = 8
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    timeout_s: float = 10.0

    def url_for(self, job_type: str, requested: str | None) -> str | None:
        if requested or not self.by_type:  # (asked at every job's end: no key to build when there are no types)
            return requested or self.url
        return self.by_type.get(_type_key(job_type)) or self.url

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> WebhookConfig:
        env = os.environ if environ is None else environ
        table = read_table(env.get(CONFIG_ENV), "webhooks")
        where = f"[webhooks] in {env.get(CONFIG_ENV)}"

        def url(value: object, name: str) -> str:
            if not isinstance(value, str):
                raise ConfigError(f"{name}: a webhook URL must be a string")
            try:
                return check_url(value.strip())
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None

        types = table.get("types", {})
        if not isinstance(types, dict):
            raise ConfigError(f"{where}: types must be a table of job type = URL")
        by_type = {_type_key(str(t)): url(u, f"{where} types.{t}") for t, u in types.items()}
        prefix = "JOBRUNNER_WEBHOOK_URL_"
        for name, value in env.items():
            if name.startswith(prefix) and value.strip():
                by_type[_type_key(name[len(prefix):])] = url(value.strip(), name)
        default = env.get("JOBRUNNER_WEBHOOK_URL") or table.get("url")
        secret = (env.get("JOBRUNNER_WEBHOOK_SECRET") or credential(env.get("CREDENTIALS_DIRECTORY"), "webhook_secret")
                  or table.get("secret"))
        if secret is not None and not isinstance(secret, str):
            raise ConfigError(f"{where}: secret must be a string")
        events_raw = env.get("JOBRUNNER_WEBHOOK_EVENTS") or table.get("events") or ["completed", "failed"]
        events = [e.strip() for e in events_raw.split(",")] if isinstance(events_raw, str) else events_raw
        if not isinstance(events, list) or not events or any(e not in EVENTS for e in events):
            raise ConfigError(f"JOBRUNNER_WEBHOOK_EVENTS / {where} events: {events_raw!r}: choose from "
                              f"{', '.join(EVENTS)}")
        try:
            tries = int(env.get("JOBRUNNER_WEBHOOK_TRIES") or table.get("tries", 8))
            backoff_s = float(table.get("backoff_s", 1.0))
            timeout_s = float(table.get("timeout_s", 10.0))
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: tries must be an integer, backoff_s and timeout_s numbers") from None
        if tries < 1 or backoff_s < 0 or timeout_s <= 0:
            raise ConfigError(f"{where}: tries must be at least 1, backoff_s >= 0 and timeout_s > 0")
        return cls(url=url(default, "JOBRUNNER_WEBHOOK_URL / [webhooks] url") if default else None,
                   by_type=by_type, secret=Secret(secret.strip()) if secret and secret.strip() else None,
                   events=frozenset(events), tries=tries, backoff_s=backoff_s, timeout_s=timeout_s)


def _type_key(job_type: str) -> str:
    """Job types as environment variable names can spell them: ``JOBRUNNER_WEBHOOK_URL_MY_TYPE`` is the
    URL of type ``my-type`` (and ``my_type``, ``My.Type``)."""
    return "".join(c if c.isalnum() else "_" for c in job_type.lower())


def entry(job_id: str, requested_url: str | None) -> bytes:
    """An outbox entry: the job, and the request's own URL (None: the configured one, looked up later)."""
    return json.dumps({"id": job_id, "url": requested_url}).encode() + b"\n"


def requested_url(request: bytes) -> str | None:
    """The ``notify_url`` of a request's bytes, if it has a valid one."""
    try:
        value = json.loads(request).get("notify_url")
        return check_url(value) if isinstance(value, str) else None
    except (ValueError, AttributeError):
        return None


def enqueue(layout: Layout, job_id: str, requested: str | None) -> None:
    """Record a delivery durably, before the final status it is for, for writers outside the daemon's
    group commit (recovery, `jobrunner cancel`). Whether it is sent is the daemon's call."""
    write_atomic(layout.outbox_entry(job_id), entry(job_id, requested), tmp_dir=layout.jobs_tmp)


def sign(secret: Secret, body: bytes, at: int) -> str:
    mac = hmac.new(secret.reveal().encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


class Outbox:
    """The daemon's deliveries: posts entries as jobs end, and whatever earlier daemons left."""

    def __init__(self, layout: Layout, config: WebhookConfig, *, concurrency: int = 8) -> None:
        self.layout = layout
        self.config = config
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self.slots = asyncio.Semaphore(concurrency)
        self._client: httpx.AsyncClient | None = None
        self.last_scan = 0.0
        self.not_final: dict[str, int] = {}  # entries whose job was not final yet: looked at again soon

    def wanted(self, job_type: str, state: object, requested: str | None) -> bool:
        """Whether a job reaching ``state`` gets a delivery (the configuration as it is now)."""
        return state in self.config.events and self.config.url_for(job_type, requested) is not None

    def kick(self, job_id: str) -> None:
        """Deliver ``job_id``'s entry now (a no-op if one of our tasks is on it already)."""
        if job_id not in self.in_flight:
            task = asyncio.get_running_loop().create_task(self._deliver(job_id))
            self.in_flight[job_id] = task
            task.add_done_callback(partial(self._forget, job_id))

    def _forget(self, job_id: str, _task: asyncio.Task[None]) -> None:
        self.in_flight.pop(job_id, None)

    def scan(self) -> None:
        """Deliver every entry on disk: left by a dead daemon, by recovery, or by `jobrunner cancel`."""
        self.last_scan = time.monotonic()
        try:
            names = os.listdir(self.layout.outbox)
        except FileNotFoundError:
            return
        for name in names:
            if name.endswith(".json"):
                self.kick(name[: -len(".json")])

    async def settle(self, timeout_s: float) -> None:
        """At exit, after the drain: give deliveries under way a few seconds to land (a `run --burst` from
        cron posts its jobs' webhooks before it exits, unless a receiver is slow or down)."""
        tasks = list(self.in_flight.values())
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    async def aclose(self) -> None:
        """At exit: deliveries still under way stop; their entries stay for the next start."""
        for task in list(self.in_flight.values()):
            task.cancel()
        for task in list(self.in_flight.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._client is not None:
            await self._client.aclose()

    def http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=self.config.timeout_s, follow_redirects=False,
                                             headers={"User-Agent": "jobrunner-webhook/1"})
        return self._client

    async def _deliver(self, job_id: str) -> None:
        path = self.layout.outbox_entry(job_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return  # delivered meanwhile
        except OSError as exc:
            log.error("[%s] webhook entry %s cannot be opened: %s", job_id, path.name, exc)
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another daemon is delivering it
            if os.fstat(fd).st_nlink == 0:
                return  # delivered by another daemon between our open and our lock
            with open(fd, "rb", closefd=False) as f:
                data = f.read()
            try:
                requested = json.loads(data)["url"]
                requested = None if requested is None else check_url(requested)
            except (ValueError, KeyError, TypeError, AttributeError):
                log.error("[%s] webhook entry %s is not readable; removed", job_id, path.name)
                self._done(path)
                return
            doc = self._final_status(job_id)
            if doc is None:  # not final yet: its status is being written (look again in a moment), or the
                self._look_again(job_id)  # job will run again (a later scan, once it is final)
                return
            self.not_final.pop(job_id, None)
            event = str(doc["status"])
            url = self.config.url_for(str(doc.get("type")), requested)
            if url is None or event not in self.config.events:
                METRICS.webhooks[(event, "skipped")] += 1
                self._done(path)
                return
            async with self.slots:
                await self._post(job_id, url, event, doc)
            self._done(path)
        finally:
            os.close(fd)

    def _look_again(self, job_id: str) -> None:
        tries = self.not_final[job_id] = self.not_final.get(job_id, 0) + 1
        if tries <= 5:
            asyncio.get_running_loop().call_later(0.2 * tries, self.kick, job_id)
        else:
            del self.not_final[job_id]

    def _final_status(self, job_id: str) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.layout.status(job_id).read_bytes())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) and doc.get("status") in EVENTS else None

    async def _post(self, job_id: str, url: str, event: str, doc: dict[str, Any]) -> None:
        import httpx
        from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

        doc.pop("claim", None)
        delivery = f"{job_id}:{doc.get('finished_at') or doc.get('updated_at')}"
        body = json.dumps({"event": f"job.{event}", "delivery": delivery, "job": doc}, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "X-Jobrunner-Event": f"job.{event}",
                   "X-Jobrunner-Delivery": delivery}
        tries = 0
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Transient), stop=stop_after_attempt(self.config.tries),
            wait=wait_exponential_jitter(initial=self.config.backoff_s, max=self.config.max_backoff_s,
                                         jitter=self.config.backoff_s),
            reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    tries += 1
                    if self.config.secret is not None:
                        headers["X-Jobrunner-Signature"] = sign(self.config.secret, body, int(time.time()))
                    try:
                        response = await self.http().post(url, content=body, headers=headers)
                    except httpx.HTTPError as exc:
                        raise _Transient(type(exc).__name__) from None
                    if response.status_code in RETRY_STATUSES:
                        raise _Transient(f"HTTP {response.status_code}")
                    if not 200 <= response.status_code < 300:
                        raise _Refused(f"HTTP {response.status_code}")
        except (_Transient, _Refused) as exc:
            METRICS.webhooks[(event, "failed")] += 1
            why = "gave up after" if isinstance(exc, _Transient) else "refused on"
            message = (f"webhook job.{event} to {shown(url)} not delivered: {exc} ({why} {tries} "
                       f"tr{'y' if tries == 1 else 'ies'})")
            log.error("[%s] %s", job_id, message)
            self._job_log(job_id, doc, message, "error")
            return
        METRICS.webhooks[(event, "delivered")] += 1
        message = f"webhook job.{event} delivered to {shown(url)} (HTTP {response.status_code}, try {tries})"
        log.info("[%s] %s", job_id, message)
        self._job_log(job_id, doc, message, "info")

    def _job_log(self, job_id: str, doc: Mapping[str, Any], message: str, level: str) -> None:
        from .joblog import JobLog

        attempt = doc.get("attempt")
        job_log = JobLog(self.layout.job_log(job_id), attempt if isinstance(attempt, int) else 0)
        job_log.write(message, level=level)
        job_log.close()

    def _done(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class _Transient(Exception):
    """A try another try may fix."""


class _Refused(Exception):
    """An answer no retry fixes (a 4xx other than 408, 425 and 429)."""
