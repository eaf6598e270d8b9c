"""The daemon: find requests, claim them, run their handlers, and record every outcome.

``Worker.process`` is a job's whole life on one screen: accept (or take back from the deferred queue),
run the handler under its timeout and cancellation, then complete, retry later, fail, or requeue at
shutdown.
Everything else here feeds it: the scan loop (wake-ups, periodic scans, deferred jobs coming due), the
recovery of dead peers' claims, and the drain on SIGTERM.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import heapq
import itertools
import logging
import os
import signal
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import failpoints, index, joblog, ledger, status, webhooks
from .checkpoint import StepStore
from .context import JobContext
from .durable import Committer
from .errors import (
    DuplicateJob,
    Interrupted,
    InvalidRequest,
    JobrunnerError,
    JobTimeout,
    error_type,
)
from .handlers import Handler, load_handlers
from .layout import Layout
from .logs import one_line
from .metrics import METRICS
from .notify import Notifier
from .providers import Providers
from .recovery import recover
from .request import MAX_REQUEST_BYTES, JobRequest, decode, generated_id, validate
from .results import ResultsFile
from .retry import RetryPolicy, decide, is_retryable
from .spool import ActiveClaim, Spool, WorkerLock, new_worker_id, producer_uids, spool_warnings
from .status import AttemptRecord, ErrorInfo, JobStatus, Progress, State
from .watcher import SpoolWatcher
from .webhooks import Outbox, WebhookConfig

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("jobrunner.worker")

WEBHOOK_GRACE_S = 5.0  # how long a stopping daemon waits for webhooks under way (the rest: next start)


@dataclass(frozen=True)
class Settings:
    concurrency: int = 16
    burst: bool = False
    drain_timeout_s: float = 30.0
    rescan_interval_s: float = 1.0
    settle_s: float = 2.0
    recover_interval_s: float = 5.0
    progress_interval_s: float = 0.5
    cancel_poll_s: float = 0.25
    running_status_delay_s: float = 0.05  # a job this quick gets one status write, not two
    prefetch: int = 64
    max_request_bytes: int = MAX_REQUEST_BYTES
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    watch: bool = True
    shard: tuple[int, int] = (0, 1)  # (index, count) of the workers of one `run --workers`: see supervisor
    retention_s: float | None = None  # prune final jobs older than this (`run --retention`), hourly
    prune_interval_s: float = 3600.0
    metrics_file: Path | None = None  # `run --metrics-file`: node_exporter's textfile format, rewritten
    metrics_interval_s: float = 5.0
    producers: str | None = None  # `run --producers GROUP`: take only files its members own (None: any owner)


@dataclass(order=True)
class Ready:
    """A valid request waiting for a slot (highest priority, then oldest, first): a new one still in our
    claim folder (``path``), or a deferred one that is due (``previous`` is its status)."""

    sort_key: tuple[int, float, int]
    job_id: str = field(compare=False)
    request: JobRequest = field(compare=False)
    created_at: datetime = field(compare=False)
    path: Path | None = field(compare=False, default=None)
    previous: JobStatus | None = field(compare=False, default=None)
    early: bool = field(compare=False, default=False)  # a retry of ours whose delay has passed (see retry_due)


@dataclass
class Running:
    job_id: str
    job_type: str
    handler: asyncio.Task[Any] | None = None  # the handler's own task: the one a stop cancels
    stop_reason: str | None = None  # "cancel" | "shutdown"
    in_slot: bool = True  # counts against the concurrency until its handler has returned

    def stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        if self.handler is not None:
            self.handler.cancel()


class Job:
    """One attempt in memory: the latest status, the writes that record it, and the owned request."""

    def __init__(self, worker: Worker, doc: JobStatus, claim: ActiveClaim, notify_url: str | None = None) -> None:
        self.worker = worker
        self.doc = doc
        self.claim = claim
        self.notify_url = notify_url  # the request's own webhook URL
        self.path = worker.layout.status(doc.id)
        self.lock = asyncio.Lock()
        self.final = False
        self.last_flush = 0.0
        self.flush_timer: asyncio.TimerHandle | None = None  # a write is due (cheap to make and cancel)
        self.flush_task: asyncio.Task[None] | None = None  # a write is under way

    async def write(self, *, durable: bool) -> None:
        async with self.lock:
            self.doc = self.doc.model_copy(update={"updated_at": status.now()})
            await self.worker.writer.replace(self.path, self.doc.dump(), durable=durable)

    def progress(self, current: int, total: int | None, note: str | None = None) -> None:
        self.doc = self.doc.model_copy(update={"progress": Progress.of(current, total, note)})
        self.flush_soon(self.last_flush + self.worker.settings.progress_interval_s - time.monotonic())

    def flush_soon(self, delay: float) -> None:
        """Write the status after ``delay`` unless a write is already due or under way (coalescing)."""
        if self.flush_timer is None and self.flush_task is None and not self.final:
            self.flush_timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._flush_now)

    def _flush_now(self) -> None:
        self.flush_timer = None
        if not self.final:
            self.flush_task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            await self.write(durable=False)
            self.last_flush = time.monotonic()
        except OSError as exc:
            log.warning("[%s] status not written: %s", self.doc.id, exc)
        finally:
            self.flush_task = None

    async def settle(self, move: Callable[[], None], **changes: Any) -> None:
        """Write a state change durably, then ``move`` the request to match it (``claim.finish``,
        ``claim.defer``); no progress write may land after it. The move runs in the committer's thread,
        right after the sync that made the status durable."""
        self.final = True
        if self.flush_timer is not None:
            self.flush_timer.cancel()
            self.flush_timer = None
        if self.flush_task is not None:  # let a write under way finish; ours replaces it
            with contextlib.suppress(OSError):
                await self.flush_task
        noted, job_id = self.worker.noted, self.doc.id
        webhook = self.worker.webhooks.wanted(self.doc.type, changes.get("status"), self.notify_url)
        if webhook:  # the delivery is on disk before the final status is (this batch's syncs persist it)
            await self.worker.writer.replace(self.worker.layout.outbox_entry(job_id),
                                             webhooks.entry(job_id, self.notify_url), durable=False)

        def after_durable() -> None:
            noted.append(job_id)  # in jobs/.recent at the end of the batch, in one append
            if self.doc.status.final:
                self.worker.finished.append(self.doc)  # and in jobs/.ledger
            failpoints.hit("before-move")
            move()
            if webhook:
                self.worker.webhooks.kick(job_id)

        async with self.lock:
            self.doc = self.doc.model_copy(update={**changes, "updated_at": status.now()})
            await self.worker.writer.replace(self.path, self.doc.dump(), durable=True, then=after_durable)


class Worker:
    def __init__(self, layout: Layout, settings: Settings | None = None,
                 handlers: dict[str, Handler] | None = None) -> None:
        self.layout = layout
        self.settings = settings or Settings()
        self.handlers = handlers if handlers is not None else load_handlers()
        self.models = {name: h.request_model for name, h in self.handlers.items()}
        self.worker_id = new_worker_id()
        self.stopping = asyncio.Event()
        self.wake = asyncio.Event()
        self.ready: list[Ready] = []
        self.waiting_ids: set[str] = set()  # ids in `ready`
        self.running: dict[str, Running] = {}  # every job in flight, from acceptance to its recorded outcome
        self.busy = 0  # of those, the ones holding a slot: being started or running their handler
        self.backlog: list[str] = []  # names from the last scan, not yet tried
        self.waiting_settle = False
        self.seq = itertools.count()
        self.next_deferred_due: float | None = None
        self.deferred_changed = True  # set by the watcher too: a client may put a job back (retry)
        self.outbox_changed = False
        self.last_deferred_scan = 0.0
        self.last_recover = 0.0
        self._http: httpx.AsyncClient | None = None
        self.noted: list[str] = []  # ids whose state changed in the batch being committed
        self.finished: list[JobStatus] = []  # of those, the final statuses (for jobs/.ledger)
        self.failures: collections.deque[float] = collections.deque()  # when jobs failed (for the status line)
        self.deferred_waiting = 0
        self.untakable: set[str] = set()  # queue files a claim failed on (logged once each)
        self.unrejectable: dict[str, float] = {}  # bad requests not set aside yet -> when that last failed
        self.scan_error: str | None = None  # why the last scan of the spool failed (logged once, until it works)
        self.root_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the data dir we started on
        self.root_gone = False
        self.exit_code = 0
        # Retries this daemon scheduled: job id -> (monotonic due, the wall-clock due stamped on its deferred
        # file). A retry's delay is a duration, so it is timed on the monotonic clock: a step of the wall
        # clock (NTP, a VM resumed) makes it neither an hour late nor at once. The file's mtime stays the
        # due time for everyone else (other daemons, the next start).
        self.retry_due: dict[str, tuple[float, float]] = {}
        self.clock_offset = time.time() - time.monotonic()  # to notice a step of the wall clock
        self.stats = {"completed": 0, "failed": 0, "retried": 0, "rejected": 0, "cancelled": 0}
        self.completions = CompletionLog()

    # ------------------------------------------------------------------ life of the daemon
    async def run(self) -> int:
        self.layout.ensure(own=True)
        st = os.stat(self.layout.root)
        self.root_id = (st.st_dev, st.st_ino)
        s = self.settings
        _quiet_gc()
        self.lock = WorkerLock(self.layout, self.worker_id)
        self.spool = Spool(self.layout, self.worker_id, settle_s=s.settle_s, max_bytes=s.max_request_bytes,
                           producers=producer_uids(s.producers) if s.producers else None)
        for warning in spool_warnings(self.layout):
            log.warning("%s", warning)
        self.writer = Committer(self.layout.root, self.layout.jobs_tmp)
        self.providers = Providers()  # reads the providers' configuration: a bad file stops us here
        self.webhooks = Outbox(self.layout, WebhookConfig.load())
        self.writer.after_batch = self._note_changed
        self.notifier = Notifier()
        joblog.install()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.watcher = watcher = SpoolWatcher({self.layout.queue: _ThreadWake(loop, self.wake.set),
                                               self.layout.deferred: _ThreadWake(loop, self._deferred_event),
                                               self.layout.outbox: _ThreadWake(loop, self._outbox_event)})
        if s.watch:
            watcher.start()
        try:
            await self._recover()
            self.webhooks.scan()  # deliveries an earlier daemon did not finish
            await self._fill()
            log.info("ready: worker %s on %s (concurrency %d, types: %s)", self.worker_id,
                     self.layout.root, s.concurrency, ", ".join(sorted(self.handlers)))
            self._start_ready()
            self.notifier.ready(self.status_line())
            cancel_poller = loop.create_task(self._poll_cancellations())
            ticker = loop.create_task(self._tick())
            pruner = loop.create_task(self._prune_periodically()) if s.retention_s and s.shard[0] == 0 else None
            metrics = loop.create_task(self._write_metrics_periodically()) if s.metrics_file else None
            await self._loop(watcher)
            cancel_poller.cancel()
            await self._drain()
            await self.webhooks.settle(WEBHOOK_GRACE_S)
            ticker.cancel()
            if pruner is not None:
                pruner.cancel()
            if metrics is not None:
                metrics.cancel()
                await self._write_metrics()  # the last figures, for a collector that reads after we stop
        finally:
            watcher.stop()
            await self.webhooks.aclose()
            if self._http is not None:
                await self._http.aclose()
            await self.providers.aclose()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self.notifier.close()
            self.writer.close()
            self.lock.release()
        self.completions.flush()
        log.info("stopped: %s", ", ".join(f"{v} {k}" for k, v in self.stats.items()))
        return self.exit_code

    def _note_changed(self) -> None:
        index.note(self.layout, *self.noted)
        self.noted.clear()
        if self.finished:
            ledger.record(self.layout, self.finished)
            self.finished.clear()

    def status_line(self) -> str:
        """What `systemctl status` shows: "3 running, 120 queued, 2 deferred, 0 failed in the last hour"."""
        hour_ago = time.monotonic() - 3600
        while self.failures and self.failures[0] < hour_ago:
            self.failures.popleft()
        queued = len(self.backlog) + len(self.ready)
        return (f"{len(self.running)} running, {queued} queued, {self.deferred_waiting} deferred, "
                f"{len(self.failures)} failed in the last hour")

    async def _tick(self) -> None:
        """Every few seconds: the status line, the heartbeat on our lock file, and systemd's watchdog, which
        is fed only from here (so a stuck event loop stops feeding it) and only while the spool watcher
        runs (or is not wanted)."""
        interval = 2.0
        if self.notifier.watchdog_interval_s:
            interval = min(interval, self.notifier.watchdog_interval_s / 3)
        last_heartbeat = 0.0
        while True:
            offset = time.time() - time.monotonic()  # from one tick to the next: a slew never adds up to 1 s
            if abs(offset - self.clock_offset) >= 1.0:
                log.warning("the wall clock stepped %s by %.1fs: retry delays this daemon set still run their "
                            "length (on the monotonic clock), timeouts too; not_before times are times of day and "
                            "move with the clock", "forward" if offset > self.clock_offset else "back",
                            abs(offset - self.clock_offset))
                self.wake.set()
            self.clock_offset = offset
            if not self.settings.watch or self.watcher.alive:
                self.notifier.watchdog()
            self.notifier.status(("stopping: " if self.stopping.is_set() else "") + self.status_line())
            self.completions.flush_if_due()
            if time.monotonic() - last_heartbeat >= 5.0:
                with contextlib.suppress(OSError):
                    self.lock.heartbeat()
                last_heartbeat = time.monotonic()
            await asyncio.sleep(interval)

    async def _prune_periodically(self) -> None:
        """`run --retention`: prune final jobs past the window now and then (in a thread: it lists jobs/)."""
        from . import prune

        retention_s = self.settings.retention_s
        assert retention_s is not None
        while True:
            try:
                out = await asyncio.to_thread(prune.prune, self.layout, retention_s)
            except Exception as exc:  # a full disk, a permission: try again at the next round
                log.error("pruning old jobs failed: %s", exc)
            else:
                if out.jobs:
                    log.info("pruned %d job(s) finished over %s ago (%.1f MB)", len(out.jobs),
                             _duration(retention_s), out.bytes / 1e6)
            await asyncio.sleep(self.settings.prune_interval_s)

    async def _write_metrics_periodically(self) -> None:
        """`run --metrics-file`: rewrite the file every few seconds. Reading the queue's state costs a
        listing (and a stat a queued file): with a deep backlog the interval stretches to keep that cost
        near 5% of one core."""
        while True:
            spent = await self._write_metrics()
            await asyncio.sleep(max(self.settings.metrics_interval_s, 20 * spent))

    async def _write_metrics(self) -> float:
        from . import metrics
        from .stats import queue_state

        path = self.settings.metrics_file
        assert path is not None
        began = time.monotonic()
        try:
            running: collections.Counter[tuple[str, ...]] = collections.Counter(
                (slot.job_type,) for slot in self.running.values())
            gauges = metrics.own_gauges(running)
            if self.settings.shard[0] == 0:  # the spool's state once, not once per worker of `--workers`
                gauges |= metrics.spool_gauges(await asyncio.to_thread(partial(queue_state, self.layout,
                                                                               by_type=True)))
            target, worker = metrics.file_for(path, self.settings.shard)
            text = METRICS.render(gauges, worker=worker)
            await asyncio.to_thread(metrics.write, target, text)
        except OSError as exc:
            log.warning("metrics file %s not written: %s", path, exc)
        return time.monotonic() - began

    def reload(self) -> None:
        """SIGHUP: read the providers' configuration again; running jobs carry on."""
        self.notifier.reloading()
        try:
            webhook_config = WebhookConfig.load()  # read before anything changes: a bad file changes nothing
            self.providers.reload()
            self.webhooks.config = webhook_config
        except JobrunnerError as exc:
            log.error("reload failed, the configuration in use is unchanged: %s", exc)
        else:
            log.info("reloaded the configuration")
        self.notifier.ready(self.status_line())

    def request_stop(self, sig: int | None = None) -> None:
        if self.stopping.is_set():
            log.warning("second stop signal: interrupting running jobs now")
            self.settings = replace(self.settings, drain_timeout_s=0.0)
        else:
            log.info("stopping (%s): no new jobs; running ones stop at their next step",
                     signal.Signals(sig).name if sig else "requested")
        self.stopping.set()
        self.wake.set()
        self.notifier.stopping(f"stopping: draining {len(self.running)} running job(s)")
        self.notifier.extend_timeout(self.settings.drain_timeout_s + 15)

    async def _loop(self, watcher: SpoolWatcher) -> None:
        s = self.settings
        while not self.stopping.is_set():
            if s.burst and not self.running and not self.ready and not self.backlog \
                    and not self.waiting_settle and not self._deferred_due_now():
                return
            timeout = s.rescan_interval_s
            if self.next_deferred_due is not None:
                timeout = min(timeout, max(0.0, self.next_deferred_due - time.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
            self.wake.clear()
            if self.stopping.is_set():
                return
            if not self._data_dir_here():
                await asyncio.sleep(s.rescan_interval_s)  # nothing to scan: no wake-up or due time counts
                continue
            if s.watch and not watcher.alive:
                watcher.ensure_alive()
            if time.monotonic() - self.last_recover >= s.recover_interval_s:
                await self._recover()
            if self.outbox_changed or time.monotonic() - self.webhooks.last_scan >= webhooks.SCAN_INTERVAL_S:
                self.outbox_changed = False
                self.webhooks.scan()
            await self._fill()
            self._start_ready()

    def _data_dir_here(self) -> bool:
        """Whether the data dir is still the one we started on. Gone (moved away, deleted, its disk gone):
        said once, and we wait for it to come back. Another one in its place (deleted and made again): we
        stop, with exit status 1, so that the service manager starts a daemon on the new one."""
        try:
            st = os.stat(self.layout.root)
            here: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            here = None
        if here == self.root_id:
            if self.root_gone:
                log.info("the data dir %s is back; going on", self.layout.root)
                self.root_gone = False
            return True
        if here is None:
            if not self.root_gone:
                log.error("the data dir %s is gone (moved, deleted or unmounted); waiting for it to come back",
                          self.layout.root)
                self.root_gone = True
            return False
        log.error("the data dir %s was replaced by another directory while the daemon ran; stopping (start it "
                  "again to use the new one)", self.layout.root)
        self.exit_code = 1
        self.request_stop()
        return False

    def _deferred_event(self) -> None:
        self.deferred_changed = True
        self.wake.set()

    def _outbox_event(self) -> None:
        """A delivery was recorded: by us (already being made), or by `jobrunner cancel` or a peer's recovery."""
        self.outbox_changed = True
        self.wake.set()

    def _deferred_due_now(self) -> bool:
        if self.retry_due and min(mono for mono, _ in self.retry_due.values()) <= time.monotonic():
            return True
        return self.next_deferred_due is not None and self.next_deferred_due <= time.time()

    def _retimed(self, due: list[tuple[float, str]]) -> tuple[list[tuple[float, str]], set[str]]:
        """The due list with our own retries timed on the monotonic clock: those whose delay has passed are
        due whatever the wall clock says (returned as ``early``), those whose delay has not are not."""
        now = time.monotonic()
        listed = {job_id for _, job_id in due}
        early: set[str] = set()
        not_yet: set[str] = set()
        for job_id, (mono_due, wall_due) in list(self.retry_due.items()):
            if mono_due > now and job_id not in listed:
                continue  # not due by either clock: nothing to look at yet
            try:
                mtime: float | None = os.lstat(self.layout.deferred_request(job_id)).st_mtime
            except FileNotFoundError:
                mtime = None
            if mtime is None or abs(mtime - wall_due) > 1.0:  # taken since, by us or another daemon (1 s: the
                del self.retry_due[job_id]                   # mtimes of some filesystems are that coarse)
            elif mono_due > now:
                not_yet.add(job_id)
            elif job_id not in listed:
                due.append((mtime, job_id))
                early.add(job_id)
        return [d for d in due if d[1] not in not_yet], early

    async def _recover(self) -> None:
        self.last_recover = time.monotonic()
        try:
            handled = await asyncio.to_thread(recover, self.layout, self.spool, self.settings.retry)
        except OSError as exc:
            log.error("recovery of stopped daemons failed: %s", exc)
            return
        if handled:
            self.deferred_changed = True
            self.webhooks.scan()  # a job recovery failed may have a delivery to make

    # ------------------------------------------------------------------ finding and claiming work
    def _room(self) -> int:
        return self.settings.concurrency + self.settings.prefetch - self.busy - len(self.ready)

    async def _fill(self) -> None:
        """Top up the ready heap: deferred jobs that are due, then new files from the queue."""
        if self.stopping.is_set():
            return
        try:
            rescan_due = time.monotonic() - self.last_deferred_scan >= self.settings.rescan_interval_s
            if self._room() > 0 and (self._deferred_due_now() or self.deferred_changed or rescan_due):
                await self._take_deferred()
            if self._room() > 0:
                await self._take_queue()
        except OSError as exc:
            if str(exc) != self.scan_error:  # once, not at every scan while it lasts
                log.error("scanning the spool failed: %s; retrying at every scan until it works", exc)
                self.scan_error = str(exc)
            return
        if self.scan_error is not None:
            log.info("the spool can be scanned again")
            self.scan_error = None

    async def _take_deferred(self) -> None:
        """Queue up deferred jobs that are due. They are taken (renamed) only when they start."""
        self.last_deferred_scan = time.monotonic()
        self.deferred_changed = False
        due, later, self.deferred_waiting = await asyncio.to_thread(self.spool.due_deferred, time.time())
        self.next_deferred_due = later
        if self.retry_due:
            due, early = self._retimed(due)
        else:
            early = set()
        for when, job_id in due:
            if job_id in self.waiting_ids or job_id in self.running:
                continue
            if self._room() <= 0:
                self.next_deferred_due = when
                break
            try:
                doc = status.read(self.layout.status(job_id))
                data = self.layout.deferred_request(job_id).read_bytes()
            except FileNotFoundError:
                continue  # taken by another daemon meanwhile
            except ValueError as exc:
                log.error("[%s] status does not parse (%s); left deferred", job_id, exc)
                continue
            try:
                request = validate(decode(data, limit=self.settings.max_request_bytes), self.models)
            except InvalidRequest as exc:
                request = None
                error = exc
            if doc is None or request is None:
                claim = self.spool.take(self.layout.deferred, job_id)
                if claim is not None:
                    reason = "no status file" if doc is None else f"the request is no longer valid: {error}"
                    await self._fail_unrunnable(claim, doc, InvalidRequest(reason))
                continue
            self._push(Ready((-request.priority, when, next(self.seq)), job_id, request, doc.created_at,
                             previous=doc, early=job_id in early))

    def _push(self, item: Ready) -> None:
        heapq.heappush(self.ready, item)
        self.waiting_ids.add(item.job_id)

    async def _take_queue(self) -> None:
        now = time.time()
        if not self.backlog:
            names = self.spool.list_queue()  # here, not in a thread: see durable.Committer
            if self.settings.shard[1] > 1:
                names = _own_share_first(names, *self.settings.shard)
            await self._watch_queue(backlogged=len(names) > self._room())
            names.reverse()  # pop() takes the oldest
            self.backlog = names
        if not self.backlog:
            self.waiting_settle = False
            return
        batch: list[str] = []
        while self.backlog and len(batch) < self._room():
            batch.append(self.backlog.pop())
        claimed, unsettled = self._claim_batch(batch, now)
        self.waiting_settle = unsettled > 0
        for path in claimed:
            failpoints.hit("claimed")
            await self._admit(path)
        if self.backlog or unsettled:
            # more to take once there is room, or files still being written: look again soon
            asyncio.get_running_loop().call_later(
                min(self.settings.settle_s / 4, 0.25) if unsettled else 0, self.wake.set)

    async def _watch_queue(self, *, backlogged: bool) -> None:
        """No wake-ups from queue/ while it holds more than we can take: each claim is an event there,
        and the jobs we run wake us anyway. Watched again (then scanned once more) when we catch up."""
        folder = self.layout.queue
        if not self.settings.watch or backlogged == (folder in self.watcher.paused):
            return
        if backlogged:
            await asyncio.to_thread(self.watcher.pause, folder)
        else:
            await asyncio.to_thread(self.watcher.resume, folder)
            self.wake.set()  # a file dropped before the watch was back was not seen: look again

    def _claim_batch(self, names: list[str], now: float) -> tuple[list[Path], int]:
        claimed, unsettled = [], 0
        self.spool.peeked.clear()
        for name in names:
            failed_at = self.unrejectable.get(name)
            if failed_at is not None and time.monotonic() - failed_at < self.settings.recover_interval_s:
                continue  # could not be set aside a moment ago (a full disk): not again at every scan
            try:
                if not self.spool.settled(name, now):
                    if (self.layout.queue / name).exists():
                        unsettled += 1
                    continue
                path = self.spool.claim(name)
            except OSError as exc:  # this file cannot be taken (say, immutable): the others still can
                if name not in self.untakable:
                    log.error("cannot take %s from the queue (%s); it stays there, the others go on", one_line(name),
                              exc)
                    self.untakable.add(name)
                continue
            if path is not None:
                claimed.append(path)
        return claimed, unsettled

    async def _admit(self, path: Path) -> None:
        """Validate a freshly claimed file; a bad one is set aside with its reason, never raised."""
        try:
            try:
                path.name.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRequest("the file name is not valid UTF-8; rename it") from None
            data, st = self.spool.read(path)
            request = validate(decode(data, limit=self.settings.max_request_bytes), self.models)
        except InvalidRequest as exc:
            await self._reject(path, exc)
            return
        except Exception as exc:  # a bug must cost one request, not the daemon
            log.exception("unexpected error reading %s", one_line(path.name))
            await self._reject(path, InvalidRequest(f"could not be read ({error_type(exc)}: {exc})"))
            return
        item = Ready((-request.priority, st.st_mtime, next(self.seq)), request.id or generated_id(st), request,
                     status.now(), path=path)
        if request.not_before is not None and request.not_before > item.created_at:
            await self._accept_for_later(item)  # needs no slot: it only waits
        else:
            self._push(item)

    async def _reject(self, path: Path, exc: InvalidRequest, claim: ActiveClaim | None = None) -> None:
        job_id = exc.job_id
        again = path.name in self.unrejectable  # setting it aside failed before: said once, not at every try
        if not again:
            self.stats["rejected"] += 1
            METRICS.rejected += 1
            log.warning("rejected %s: %s", one_line(path.name), exc)
        if job_id is not None and not isinstance(exc, DuplicateJob):
            # a failed status for a request whose id is known, unless that id belongs to another job
            now = status.now()
            doc = JobStatus(id=job_id, type=str(_peek_type(path)), status=State.FAILED, created_at=now,
                            updated_at=now, finished_at=now, source=path.name,
                            error=ErrorInfo(type=error_type(exc), message=str(exc), retryable=False))
            try:
                if await self.writer.create(self.layout.status(job_id), doc.dump()):
                    index.note(self.layout, job_id)
                    ledger.record(self.layout, [doc])
            except (OSError, ValueError) as err:
                if not again:
                    log.error("could not write the failed status of %s: %s", job_id, err)
        try:
            if claim is not None:
                claim.reject(self.spool, str(exc), error=error_type(exc), name=path.name)
            else:
                await asyncio.to_thread(self.spool.reject, path, str(exc), error=error_type(exc), job_id=job_id)
        except (OSError, ValueError) as err:
            if not again:
                log.error("could not set %s aside (%s); it goes back to the queue, to be set aside once that "
                          "works", one_line(path.name), err)
            self.unrejectable[path.name] = time.monotonic()
            with contextlib.suppress(OSError):
                if claim is None:
                    self.spool.to_queue(path)
        else:
            if again:
                log.info("set %s aside at last, with its reason", one_line(path.name))
                del self.unrejectable[path.name]

    # ------------------------------------------------------------------ running jobs
    def _start_ready(self) -> None:
        s = self.settings
        while self.ready and self.busy < s.concurrency and len(self.running) < 2 * s.concurrency + s.prefetch \
                and not self.stopping.is_set():
            item = heapq.heappop(self.ready)
            self.waiting_ids.discard(item.job_id)
            if item.job_id in self.running:
                if item.path is not None:  # the same id twice in one batch: the second is a duplicate
                    asyncio.get_running_loop().create_task(self._reject(item.path, DuplicateJob(
                        f"duplicate id {item.job_id}: a job with this id is running; this request was not run",
                        job_id=item.job_id)))
                continue
            slot = Running(item.job_id, item.request.type)
            self.running[item.job_id] = slot
            self.busy += 1
            asyncio.get_running_loop().create_task(self._process_guarded(item, slot))

    async def _process_guarded(self, item: Ready, slot: Running) -> None:
        try:
            await self.process(item, slot)
        except OSError as exc:  # a full disk, a read-only or vanished data dir: one line, not a traceback
            log.error("[%s] could not record the job's outcome (%s); it is recovered once the data dir can be "
                      "written again", item.job_id, exc)
        except Exception:
            # Not a handler error (those are recorded): the spool or disk failed under us. The request
            # stays where it is (and its lock is dropped below), so it is recovered, never lost.
            log.exception("[%s] could not record the job's outcome; it will be recovered", item.job_id)
        finally:
            self._free_slot(slot)
            self.running.pop(item.job_id, None)
            self.wake.set()

    def _free_slot(self, slot: Running) -> None:
        """The handler has returned: its slot goes to the next job while the outcome is being recorded
        (that wait is the disk's, shared by every job finishing meanwhile)."""
        if slot.in_slot:
            slot.in_slot = False
            self.busy -= 1
            self.wake.set()

    async def process(self, item: Ready, slot: Running) -> None:
        """One attempt of one job, from acceptance to its recorded outcome."""
        job = await self._begin(item)
        if job is None:
            return
        try:
            if self.layout.cancel_flag(item.job_id).exists():
                await self._end_cancelled(job)
                return
            handler = self.handlers[item.request.type]
            steps = StepStore(self.layout, item.job_id, self.writer)
            ctx = JobContext(job_id=item.job_id, attempt=job.doc.attempt, max_attempts=job.doc.max_attempts,
                             steps=steps, on_progress=job.progress, http=self.http, stopping=self.stopping,
                             providers=self.providers, results=ResultsFile(self.layout.results(item.job_id)))
            log.debug("[%s] started %s (attempt %d of %d)", item.job_id, item.request.type, job.doc.attempt,
                      job.doc.max_attempts)
            started = time.monotonic()
            slot.handler = asyncio.get_running_loop().create_task(self._run_handler(handler, item, ctx))
            job.flush_soon(self.settings.running_status_delay_s)  # "running", unless it is done by then
            if slot.stop_reason is not None:  # a stop came while the attempt was being registered
                slot.handler.cancel()
            try:
                try:
                    result = await slot.handler  # only the handler's task is ever cancelled, never this one
                finally:
                    self._free_slot(slot)
            except asyncio.CancelledError:
                if slot.stop_reason is None:
                    raise
                await self._end_stopped(job, slot)
            except Exception as exc:
                if slot.stop_reason is not None and isinstance(exc, Interrupted):
                    await self._end_stopped(job, slot)  # it parked itself at a step boundary
                else:
                    await self._end_failed(job, exc)
            else:
                await self._end_completed(job, result, time.monotonic() - started)
        finally:
            job.claim.release()  # after a recorded outcome the request has moved on; else it is recovered

    async def _run_handler(self, handler: Handler, item: Ready, ctx: JobContext) -> Any:
        timeout_s = item.request.timeout_s
        with joblog.bound(self.layout, item.job_id, ctx.attempt):  # this task's and its children's log lines
            try:
                async with asyncio.timeout(timeout_s):
                    return await handler.run(item.request, ctx)
            except TimeoutError:
                if timeout_s is not None and not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise JobTimeout(f"the attempt ran longer than timeout_s={timeout_s:g}") from None
                raise
            finally:
                if ctx.steps_reused:
                    joblog.event(f"{ctx.steps_reused} step(s) from earlier attempts reused, not run again")

    async def _begin(self, item: Ready) -> Job | None:
        """Own the job's request in .active/ and make the attempt's status (written soon, or at the end)."""
        now = status.now()
        req = item.request
        if item.previous is None:
            assert item.path is not None
            try:
                claim = self.spool.accept(item.path, item.job_id)
            except InvalidRequest as exc:
                await self._reject(item.path, exc)
                return None
            if claim is None:
                await self._reject(item.path, DuplicateJob(
                    f"duplicate id {item.job_id}: a job with this id is active; this request was not run",
                    job_id=item.job_id))
                return None
            if (dup := self._existing(item.job_id)) is not None:  # an id used before (checked once ours)
                await self._reject(item.path, dup, claim)
                return None
            failpoints.hit("accepted")
            if req.not_before is None:
                METRICS.queue_waited(req.type, (now - item.created_at).total_seconds())
            doc = JobStatus(
                id=item.job_id, type=req.type, status=State.RUNNING, attempt=1, max_attempts=req.max_attempts,
                priority=req.priority, created_at=item.created_at, started_at=now, attempt_started_at=now,
                updated_at=now, worker=self.worker_id, claim=claim.token, source=item.path.name,
                metadata=req.metadata,
            )
            return Job(self, doc, claim, req.notify_url)
        claim = self.spool.take(self.layout.deferred, item.job_id, due_by=None if item.early else time.time())
        self.retry_due.pop(item.job_id, None)
        if claim is None:
            return None  # another daemon took it, or it was cancelled or rescheduled meanwhile
        prev = status.read(self.layout.status(item.job_id)) or item.previous
        if prev.status.final:  # cancelled while it waited
            claim.finish()
            return None
        if prev.started_at is None:  # its first attempt (it waited for not_before)
            METRICS.queue_waited(prev.type, (now - prev.created_at).total_seconds())
        doc = prev.model_copy(update={
            "status": State.RUNNING, "attempt": prev.attempt + 1, "worker": self.worker_id,
            "claim": claim.token, "started_at": prev.started_at or now, "attempt_started_at": now,
            "next_attempt_at": None, "updated_at": now,
        })
        return Job(self, doc, claim, req.notify_url)

    def _existing(self, job_id: str) -> DuplicateJob | None:
        """The error for a request whose id has a status file already (readable or not), else None."""
        path = self.layout.status(job_id)
        if not path.exists():
            return None
        existing = None
        with contextlib.suppress(ValueError, OSError):
            existing = status.read(path)
        what = f" ({existing.status}, created {status.iso(existing.created_at)})" if existing else ""
        return DuplicateJob(f"duplicate id {job_id}: the job exists already{what}; this request was not run",
                            job_id=job_id)

    async def _accept_for_later(self, item: Ready) -> None:
        job = await self._begin(item)
        if job is None:
            return
        due = item.request.not_before or status.now()
        await job.settle(partial(job.claim.defer, due), status=State.PENDING, attempt=0, started_at=None,
                         attempt_started_at=None, next_attempt_at=due)
        self._note_deferred(due)
        log.info("[%s] accepted; not before %s", item.job_id, status.iso(due))

    def _note_deferred(self, due: datetime) -> None:
        when = due.timestamp()
        if self.next_deferred_due is None or when < self.next_deferred_due:
            self.next_deferred_due = when

    def _record(self, job: Job, outcome: str, at: datetime, error: ErrorInfo | None = None,
                delay_s: float | None = None) -> list[AttemptRecord]:
        started = job.doc.attempt_started_at
        METRICS.attempt_ended(job.doc.type, outcome, None if started is None else (at - started).total_seconds())
        return [*job.doc.history, AttemptRecord(
            attempt=job.doc.attempt, worker=self.worker_id, started_at=job.doc.attempt_started_at, ended_at=at,
            outcome=outcome, error=error, delay_s=None if delay_s is None else round(delay_s, 3))]

    async def _end_completed(self, job: Job, result: Any, seconds: float) -> None:
        at = status.now()
        progress = job.doc.progress
        if progress.total is None and progress.current == 0:
            progress = Progress.of(1, 1)
        await job.settle(job.claim.finish, status=State.COMPLETED, finished_at=at, error=None, progress=progress,
                         result=dict(result) if result else None, history=self._record(job, "completed", at))
        self.stats["completed"] += 1
        self.completions.completed(job.doc.id, job.doc.type, seconds, job.doc.attempt)

    async def _end_failed(self, job: Job, exc: Exception) -> None:
        at = status.now()
        info = ErrorInfo(type=error_type(exc), message=str(exc) or error_type(exc), retryable=is_retryable(exc))
        decision = decide(exc, job.doc.attempt, job.doc.max_attempts, self.settings.retry)
        if decision.retry:
            due = at + timedelta(seconds=decision.delay_s)
            given_back = {} if decision.counts else {"attempt": job.doc.attempt - 1}
            await job.settle(partial(job.claim.defer, due), status=State.PENDING, error=info, next_attempt_at=due,
                             history=self._record(job, "retry" if decision.counts else "throttled", at, info,
                                                  decision.delay_s), **given_back)
            self._note_deferred(due)
            self.retry_due[job.doc.id] = (time.monotonic() + decision.delay_s, due.timestamp())
            self.stats["retried"] += 1
            log.warning("[%s] attempt %d failed (%s: %s); retrying in %.1fs", job.doc.id, job.doc.attempt,
                        info.type, info.message, decision.delay_s)
            return
        info = info.model_copy(update={"retryable": False}) if info.retryable else info
        await job.settle(job.claim.finish, status=State.FAILED, error=info, finished_at=at,
                         history=self._record(job, "failed", at, info))
        self.stats["failed"] += 1
        self.failures.append(time.monotonic())
        log.error("[%s] failed: %s: %s (%s)", job.doc.id, info.type, info.message, decision.reason)

    async def _end_stopped(self, job: Job, slot: Running) -> None:
        if slot.stop_reason == "cancel":
            await self._end_cancelled(job)
            return
        at = status.now()
        info = ErrorInfo(type="Interrupted", message="the daemon stopped during the attempt; it resumes "
                         "from its last completed step", retryable=True)
        # a stop we asked for is not the job's fault: the attempt is given back
        await job.settle(partial(job.claim.defer, at), status=State.PENDING, error=info, next_attempt_at=at,
                         history=self._record(job, "requeued", at, info), attempt=max(0, job.doc.attempt - 1))
        log.info("[%s] requeued at shutdown", job.doc.id)

    async def _end_cancelled(self, job: Job) -> None:
        at = status.now()
        info = ErrorInfo(type="Cancelled", message="cancelled on request", retryable=False)
        await job.settle(job.claim.finish, status=State.CANCELLED, error=info, finished_at=at,
                         history=self._record(job, "cancelled", at, info))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.layout.cancel_flag(job.doc.id))
        self.stats["cancelled"] += 1
        log.info("[%s] cancelled", job.doc.id)

    async def _fail_unrunnable(self, claim: ActiveClaim, doc: JobStatus | None, exc: InvalidRequest) -> None:
        """A deferred job that can no longer run (its type was uninstalled, its status is gone)."""
        at = status.now()
        info = ErrorInfo(type=error_type(exc), message=str(exc), retryable=False)
        if doc is None:
            doc = JobStatus(id=claim.job_id, type="unknown", status=State.FAILED, created_at=at, updated_at=at)
        job = Job(self, doc.model_copy(update={"claim": claim.token}), claim)
        await job.settle(claim.finish, status=State.FAILED, error=info, finished_at=at)
        log.error("[%s] failed: %s", claim.job_id, exc)

    async def _poll_cancellations(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cancel_poll_s)
            for job_id, slot in list(self.running.items()):
                if slot.stop_reason is None and self.layout.cancel_flag(job_id).exists():
                    slot.stop("cancel")

    # ------------------------------------------------------------------ shutdown
    async def _drain(self) -> None:
        while self.ready:  # new requests claimed but never started go back to the queue
            item = heapq.heappop(self.ready)
            if item.path is not None:
                try:
                    await asyncio.to_thread(self.spool.to_queue, item.path)
                except OSError as exc:
                    log.error("could not return %s: %s (recovered at the next start)", one_line(item.path.name), exc)
        self.waiting_ids.clear()
        if not self.running:
            return
        log.info("draining %d running job(s) (deadline %.0fs)", len(self.running), self.settings.drain_timeout_s)
        for slot in self.running.values():
            slot.stop_reason = "shutdown"  # handlers see `stopping` and park at their next step
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while self.running and time.monotonic() < deadline and self.settings.drain_timeout_s > 0:
            await asyncio.sleep(0.02)
        for slot in list(self.running.values()):
            slot.stop("shutdown")
        while self.running:
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ shared resources
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0),
                                           limits=httpx.Limits(max_connections=100))
        return self._http


class CompletionLog:
    """A log line per completed job, unless they come faster than a person reads: past ``per_s`` in one
    second, the rest are counted and told in one line a second ("completed 3,120 more jobs ..."). Every job
    still has its status file and ledger line; failures and retries always get a line of their own. A drain
    of no-op jobs spent about 7% of its CPU on these lines (and flooded the journal)."""

    def __init__(self, per_s: int = 20) -> None:
        self.per_s = per_s
        self.window = time.monotonic()
        self.logged = 0
        self.quiet: collections.Counter[str] = collections.Counter()

    def completed(self, job_id: str, job_type: str, seconds: float, attempt: int) -> None:
        self.flush_if_due()
        self.logged += 1
        if self.logged <= self.per_s:
            log.info("[%s] completed %s in %.2fs (attempt %d)", job_id, job_type, seconds, attempt)
        else:
            self.quiet[job_type] += 1

    def flush_if_due(self) -> None:
        if time.monotonic() - self.window >= 1.0:
            self.flush()

    def flush(self) -> None:
        if self.quiet:
            total = sum(self.quiet.values())
            kinds = ", ".join(f"{t} {n:,}" for t, n in self.quiet.most_common())
            log.info("completed %s more job(s) in the last %.1fs (%s), without a line each", f"{total:,}",
                     time.monotonic() - self.window, kinds)
            self.quiet.clear()
        self.window = time.monotonic()
        self.logged = 0


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _quiet_gc() -> None:
    """Keep the cycle collector off what lives for the daemon's whole life (modules, handlers, models:
    frozen out of its sight) and make it run less often. Every job allocates tasks, futures and models,
    and with the defaults the collector ran every few jobs, walking everything: 8% of the drain's CPU."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _own_share_first(names: list[str], index: int, count: int) -> list[str]:
    """The names of this worker's share of a backlog, then the others' (each oldest first): workers of one
    command draining one backlog each take their own files first instead of racing for the same ones."""
    mine: list[str] = []
    theirs: list[str] = []
    for name in names:
        (mine if zlib.crc32(name.encode("utf-8", "surrogateescape")) % count == index else theirs).append(name)
    return mine + theirs


class _ThreadWake:
    """Called from the watcher's thread: runs ``fn`` on the loop, once for a burst of events (one
    self-pipe write, not one per event). Dropped silently once the loop has closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
        self.loop = loop
        self.fn = fn
        self.pending = False

    def __call__(self) -> None:
        if not self.pending:
            self.pending = True
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:
        self.pending = False  # events after this schedule another call, so none is missed
        self.fn()


def _peek_type(path: Path) -> object:
    try:
        obj = decode(path.read_bytes())
    except (InvalidRequest, OSError):
        return "unknown"
    value = obj.get("type")
    return value if isinstance(value, str) and len(value) <= 64 else "unknown"
