"""Wake-ups from the kernel: a watchdog observer on queue/ and queue/.deferred/ (non-recursive) that
only says "look".

Events are hints, never the truth: the daemon scans the directory when woken, and on a timer, because
inotify drops events silently when its queue overflows and an observer thread can die. Opened and
closed-without-write events (which newer watchdog emits) wake nothing: they mean no new file.

watchdog holds every moved-from event for up to 0.5 s, to pair it with a moved-to, and its queue is
first-in first-out: every event behind a held one waits too. Each claim is a rename *out of* queue/ (a
moved-from that never pairs), so with the hold, a drop arriving after a claim was seen up to half a
second late (measured: p50 224 ms with drops 30-60 ms apart). We need no pairing, only "something
changed": the hold is switched off for the observers this module makes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CLOSED_NO_WRITE,
    EVENT_TYPE_OPENED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch


def _no_move_hold() -> None:
    try:
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
    except ImportError:  # pragma: no cover - another platform or watchdog version: the hold stays
        return
    InotifyMoveEventGrouper.delay = 0.0  # read when each watch's grouper is made

log = logging.getLogger("jobrunner.watcher")


class _QuietStop(logging.Filter):
    """watchdog logs an error when an event arrives while its thread is stopping; it is harmless."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_QuietStop())

_IGNORED = {EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE}


class _Wake(FileSystemEventHandler):
    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _IGNORED:
            self.wake()


class SpoolWatcher:
    def __init__(self, folders: dict[Path, Callable[[], None]]) -> None:
        """``folders`` maps each watched folder to what to call (from the observer's thread) on a change."""
        self.folders = folders
        self.observer: BaseObserver | None = None
        self.watches: dict[Path, ObservedWatch] = {}
        self.paused: set[Path] = set()

    def start(self) -> None:
        _no_move_hold()
        observer = Observer()
        observer.daemon = True
        self.watches = {folder: observer.schedule(_Wake(wake), str(folder), recursive=False)
                        for folder, wake in self.folders.items() if folder not in self.paused}
        observer.start()
        self.observer = observer

    def pause(self, folder: Path) -> None:
        """Stop watching ``folder`` (blocking: call it from a thread). A daemon with a backlog of files
        to take has no use for a wake-up per file, and each one costs watchdog's threads CPU time."""
        self.paused.add(folder)
        watch = self.watches.pop(folder, None)
        if watch is not None and self.observer is not None:
            self.observer.unschedule(watch)

    def resume(self, folder: Path) -> None:
        """Watch ``folder`` again. Changes made while it was paused were not seen: scan after this."""
        self.paused.discard(folder)
        if self.observer is not None and folder not in self.watches:
            self.watches[folder] = self.observer.schedule(_Wake(self.folders[folder]), str(folder),
                                                          recursive=False)

    @property
    def alive(self) -> bool:
        return self.observer is not None and self.observer.is_alive()

    def ensure_alive(self) -> None:
        """Restart a dead observer (the periodic scan covered for it meanwhile)."""
        if not self.alive:
            log.warning("the spool watcher was not running; restarting it")
            self.stop()
            try:
                self.start()
            except OSError as exc:
                log.error("cannot watch %s (%s); relying on periodic scans", list(self.folders), exc)

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=2)
            self.observer = None
            self.watches = {}
