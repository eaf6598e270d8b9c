"""A ledger of finished jobs: ``jobs/.ledger``, one line per job that reached a final state, appended.

`jobrunner stats` and the filters of `jobrunner status` read it instead of 100,000 status files (reading
and parsing every status file takes seconds; the ledger, tens of milliseconds). Like ``jobs/.recent`` it
is a hint, never the truth: the status files are. Whoever writes a final status appends its line once
that status is durable (the daemon once per group commit, in one write for the batch; recovery and
`jobrunner cancel` for the job they finalise), so a crash in between can lose a line, never invent one.
`jobrunner retry` appends a line saying the job is no longer final. A job may have several lines (a job
retried by hand and finished again, a recovery finishing a move): the last one counts.

A line is tab-separated, led and ended by a newline (so a line a crash tore stays a line of its own,
and is skipped), with a fixed first and last field that show it is whole::

    1  finished  id  type  status  created  started  attempts  wait_s  run_s  leads  error  .

``1`` is the format's version; times are the status file's (UTC ISO 8601, milliseconds, ``Z``), so they
sort as strings; ``wait_s`` is created to first start (the queue wait), ``run_s`` first start to finish,
in seconds; ``leads`` the result's ``leads`` count when it has one; ``error`` the error's type. An empty
value is ``-``. No value holds white space (job types and error types that would are cleaned), which is
what lets the reader split the whole file at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import compress
from typing import TYPE_CHECKING, Any

from .layout import Layout

if TYPE_CHECKING:
    from .status import JobStatus

VERSION = "1"
FIELDS = ("version", "finished", "id", "type", "status", "created", "started", "attempts", "wait_s", "run_s",
          "leads", "error", "end")
WIDTH = len(FIELDS)
FINAL = ("completed", "failed", "cancelled")
REOPENED = "reopened"  # the status of the line `retry` appends: the job is no longer final
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f]+")
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_CHUNK = 1 << 20
_ORDER_SLACK_S = 3600.0  # how far out of finish order a line may be (a batch commits in well under that)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# ---------------------------------------------------------------------------------------------- writing
def _iso(when: datetime | None) -> str:
    if when is None:
        return "-"
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clean(value: object, limit: int = 64) -> str:
    text = _UNSAFE.sub("_", str(value))[:limit]
    return text or "-"


def _secs(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    return f"{max(0.0, (end - start).total_seconds()):.3f}"


def _line(job_id: str, job_type: str, state: str, created: datetime | None, started: datetime | None,
          finished: datetime | None, attempts: int, result: Mapping[str, Any] | None, error: str | None) -> bytes:
    leads = result.get("leads") if result else None
    fields = (
        VERSION, _iso(finished), _clean(job_id, 128), _clean(job_type), _clean(state), _iso(created), _iso(started),
        str(int(attempts)), _secs(created, started), _secs(started, finished),
        str(leads) if isinstance(leads, int) and not isinstance(leads, bool) else "-",
        _clean(error) if error else "-", ".",
    )
    return ("\n" + "\t".join(fields) + "\n").encode()


def line_of(doc: JobStatus) -> bytes:
    """The ledger line of a final status (the daemon's model)."""
    return _line(doc.id, doc.type, str(doc.status), doc.created_at, doc.started_at, doc.finished_at or doc.updated_at,
                 doc.attempt, doc.result, doc.error.type if doc.error else None)


def _when(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def line_of_doc(doc: Mapping[str, Any]) -> bytes:
    """The ledger line of a status file's JSON object, as stored."""
    error = doc.get("error")
    result = doc.get("result")
    attempt = doc.get("attempt")
    return _line(str(doc.get("id")), str(doc.get("type", "?")), str(doc.get("status")), _when(doc.get("created_at")),
                 _when(doc.get("started_at")), _when(doc.get("finished_at")) or _when(doc.get("updated_at")),
                 attempt if isinstance(attempt, int) else 0, result if isinstance(result, dict) else None,
                 str(error.get("type")) if isinstance(error, dict) and error.get("type") else None)


def _append(layout: Layout, data: bytes) -> None:
    """One O_APPEND write (atomic between appenders), under a shared flock so that ``forget`` (which holds
    it exclusively while it rewrites) loses no line. Best effort: a lost line only makes stats miss a job."""
    if not data:
        return
    for _ in range(10):
        try:
            fd = os.open(layout.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.fstat(fd).st_ino != os.stat(layout.ledger).st_ino:
                continue  # rewritten by `forget` since we opened it: append to the new one
            os.write(fd, data)
            return
        except OSError:
            continue
        finally:
            os.close(fd)  # and the lock with it


def record(layout: Layout, docs: Iterable[JobStatus]) -> None:
    """Append the lines of final statuses that were just made durable, in one write."""
    _append(layout, b"".join(line_of(doc) for doc in docs if doc.status.final))


def reopen(layout: Layout, job_id: str) -> None:
    """Say that a job is no longer final (`jobrunner retry`): its earlier lines stop counting."""
    now = datetime.now(UTC)
    _append(layout, _line(job_id, "-", REOPENED, None, None, now, 0, None, None))


def forget(layout: Layout, job_ids: Iterable[str]) -> int:
    """Rewrite the ledger without the lines of ``job_ids`` (for `jobrunner prune`); returns how many
    lines went. Atomic: a new file is written, made durable and renamed over the old one, while an
    exclusive flock on the old one holds appenders back (they then append to the new one)."""
    drop = {j.encode() for j in job_ids}
    if not drop:
        return 0
    from .durable import fsync_dir, write_tmp

    while True:
        try:
            fd = os.open(layout.ledger, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(layout.ledger).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # another `forget` replaced it meanwhile: take the new one
    try:
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        kept: list[bytes] = []
        gone = 0
        for raw in data.split(b"\n"):
            if not raw:
                continue
            fields = raw.split(b"\t")
            if len(fields) == WIDTH and fields[2] in drop:
                gone += 1
            else:
                kept.append(raw)  # a torn line is kept as it is: readers skip it anyway
        if not gone:
            return 0
        tmp = write_tmp(layout.jobs_tmp, ".ledger", b"".join(b"\n" + raw + b"\n" for raw in kept), fsync=True)
        try:
            os.replace(tmp, layout.ledger)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_dir(layout.jobs)
        return gone
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- reading
@dataclass
class Entries:
    """Ledger entries as columns (lists of the field's string values, oldest first), one entry per job:
    its last line, final jobs only."""

    finished: list[str]
    id: list[str]
    type: list[str]
    status: list[str]
    created: list[str]
    started: list[str]
    attempts: list[str]
    wait_s: list[str]
    run_s: list[str]
    leads: list[str]
    error: list[str]
    source: str = "ledger"  # or "status files" when there was no ledger to read

    def __len__(self) -> int:
        return len(self.id)

    @classmethod
    def of(cls, cols: Mapping[str, list[str]], source: str = "ledger") -> Entries:
        made = cls([], [], [], [], [], [], [], [], [], [], [], source)
        for name in _COLUMNS:
            setattr(made, name, cols[name])
        return made

    def filtered(self, *, since: str | None = None, job_type: str | None = None,
                 statuses: Iterable[str] | None = None) -> Entries:
        """The entries finished at or after ``since`` (an ISO string as stored), of a type, in statuses.
        (Masks made with map() and applied with compress(): no Python loop per entry.)"""
        masks: list[Iterable[bool]] = []
        if since is not None and self.finished and min(self.finished) < since:
            cut = bisect_left(self.finished, since)  # lines are in about finish order: a cut is likely exact
            if max(self.finished[:cut], default="") < since <= min(self.finished[cut:], default="~"):
                return Entries.of({name: getattr(self, name)[cut:] for name in _COLUMNS}, self.source).filtered(
                    job_type=job_type, statuses=statuses)
            masks.append(map(since.__le__, self.finished))
        if job_type is not None and set(self.type) != {job_type}:
            masks.append(map(job_type.__eq__, self.type))
        if statuses is not None and not set(self.status) <= set(statuses):
            masks.append(map(frozenset(statuses).__contains__, self.status))
        if not masks:
            return self
        mask = list(masks[0]) if len(masks) == 1 else list(map(all, zip(*masks, strict=True)))
        return Entries.of({name: list(compress(getattr(self, name), mask)) for name in _COLUMNS}, self.source)


_COLUMNS = ("finished", "id", "type", "status", "created", "started", "attempts", "wait_s", "run_s", "leads", "error")


def _columns(fields: list[str], count: int) -> dict[str, list[str]]:
    if len(fields) == count * WIDTH:
        return {name: fields[FIELDS.index(name)::WIDTH] for name in _COLUMNS}
    return {name: fields[FIELDS.index(name)::WIDTH][:count] for name in _COLUMNS}


def parse(text: str) -> Entries:
    """Entries from the ledger's text. Whole lines are split at once; if any line is torn or foreign,
    line by line, skipping those."""
    fields = text.split()  # no value holds white space, and an empty value is "-"
    count = len(fields) // WIDTH
    if (len(fields) == count * WIDTH and fields[0::WIDTH].count(VERSION) == count
            and fields[WIDTH - 1::WIDTH].count(".") == count):
        cols = _columns(fields, count)
    else:
        good: list[str] = []
        for raw in text.split("\n"):
            parts = raw.split("\t")
            if len(parts) == WIDTH and parts[0] == VERSION and parts[-1] == "." and all(p and " " not in p
                                                                                        for p in parts):
                good.extend(parts)
        cols = _columns(good, len(good) // WIDTH)
    ids = cols["id"]
    last = dict(zip(ids, range(len(ids)), strict=True))
    statuses = cols["status"]
    if len(last) == len(ids) and all(s in FINAL for s in set(statuses)):
        return Entries.of(cols)
    keep = sorted(i for i in last.values() if statuses[i] in FINAL)
    return Entries.of({name: [col[i] for i in keep] for name, col in cols.items()})


def read(layout: Layout, since: str | None = None) -> Entries | None:
    """The ledger's entries (with ``since``: at least those finished since then, read from the end of the
    file only), or None if there is no ledger."""
    try:
        fd = os.open(layout.ledger, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        end = os.fstat(fd).st_size
        if since is None:
            return parse(os.pread(fd, end, 0).decode(errors="replace"))
        # lines are appended in about the order jobs finish: go back until a line is well before `since`
        stop = _iso(datetime.fromisoformat(since) - timedelta(seconds=_ORDER_SLACK_S))
        start = end
        while start > 0:
            start = max(0, start - _CHUNK)
            head = os.pread(fd, min(4096, end - start), start).split(b"\n")
            first = head[1] if start > 0 and len(head) > 1 else head[0]
            if not first:
                first = next((raw for raw in head[1:] if raw), b"")
            fields = first.split(b"\t")
            if len(fields) == WIDTH and fields[1].decode(errors="replace") < stop:
                break
        data = os.pread(fd, end - start, start)
        if start > 0:
            data = data[data.find(b"\n"):]  # from a line's start: a cut line would read as a torn one
        return parse(data.decode(errors="replace"))
    finally:
        os.close(fd)


def _newest_first(layout: Layout) -> Iterator[Entries] | None:
    """The ledger's entries a chunk at a time from its end (for listings that want only the latest few);
    None if there is no ledger."""
    try:
        fd = os.open(layout.ledger, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None

    def chunks() -> Iterator[Entries]:
        try:
            end = os.fstat(fd).st_size
            while end > 0:
                start = max(0, end - _CHUNK)
                data = os.pread(fd, end - start, start)
                if start > 0 and (cut := data.find(b"\n")) >= 0:
                    data = data[cut:]  # the bytes before are the end of a line the next chunk reads whole
                    end = start + cut
                else:
                    end = start
                yield parse(data.decode(errors="replace"))
        finally:
            os.close(fd)

    return chunks()


def scan(layout: Layout) -> Entries:
    """Entries made from every status file: the slow way, for a data dir that has no ledger."""
    lines: list[bytes] = []
    with os.scandir(layout.jobs) as it:
        for entry in it:
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            try:
                with open(entry.path, "rb") as f:
                    doc = json.loads(f.read())
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and doc.get("status") in FINAL:
                lines.append(line_of_doc(doc))
    lines.sort(key=lambda raw: raw.split(b"\t", 2)[1])  # finish order, as the ledger is
    entries = parse(b"".join(lines).decode(errors="replace"))
    entries.source = "status files"
    return entries


def entries(layout: Layout) -> Entries:
    """The ledger's entries, or, without a ledger, the same made from the status files."""
    found = read(layout)
    return found if found is not None else scan(layout)


# ---------------------------------------------------------------------------------------------- windows
def parse_since(value: str) -> float | None:
    """Seconds in a window like ``30m``, ``24h``, ``7d``, ``2w``, ``90s``; None for ``all``. ValueError
    for anything else."""
    if value.strip().lower() == "all":
        return None
    match = _SINCE.match(value.lower())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a time window: use a number and a unit (s, m, h, d, w), e.g. 30m, "
                         "24h, 7d, or 'all'")
    return float(match.group(1)) * _UNITS[match.group(2)]


def cutoff(window_s: float | None, now: float | None = None) -> str | None:
    """The ISO time (as the ledger stores times) ``window_s`` seconds ago; None for no window."""
    if window_s is None:
        return None
    when = datetime.fromtimestamp((time.time() if now is None else now) - window_s, UTC)
    return _iso(when)


# ---------------------------------------------------------------------------------------------- listings
def jobs(layout: Layout, *, statuses: Iterable[str] | None = None, job_type: str | None = None,
         since: str | None = None, limit: int = 50, id_contains: str | None = None) -> list[dict[str, Any]]:
    """Status documents of the jobs in ``statuses`` (all when None) of ``job_type`` (whose id contains
    ``id_contains``, when given), newest first: the active ones (pending, running: from the spool, whatever
    ``since`` says, since they are current) and the final ones that finished at or after ``since`` (from the
    ledger, each checked against its status file, which is the truth)."""
    from . import listing

    wanted = set(statuses) if statuses is not None else None
    out: list[dict[str, Any]] = []
    if wanted is None or wanted & {"pending", "running"}:
        docs, _ = listing.active(layout)
        out += [d for d in docs if (wanted is None or d.get("status") in wanted)
                and (job_type is None or d.get("type") == job_type)
                and (id_contains is None or id_contains in str(d.get("id")))]
    final = set(FINAL) if wanted is None else wanted & set(FINAL)
    if final:
        chunks = _newest_first(layout)
        if chunks is None:
            chunks = iter([scan(layout)])
        stop = None if since is None else _iso(datetime.fromisoformat(since) - timedelta(seconds=_ORDER_SLACK_S))
        seen: set[str] = set()
        taken = 0
        for chunk in chunks:
            entries = chunk.filtered(since=since, job_type=job_type, statuses=final)
            for job_id in reversed(entries.id):
                if job_id in seen:
                    continue  # a later line of this job was read already
                seen.add(job_id)
                if id_contains is not None and id_contains not in job_id:
                    continue
                doc = listing.read_doc(layout, job_id)
                if doc is None or doc.get("status") not in final or (job_type is not None
                                                                     and doc.get("type") != job_type):
                    continue  # the ledger is a hint: the status file says otherwise now
                out.append(doc)
                taken += 1
                if taken >= limit:
                    break
            seen.update(chunk.id)
            if taken >= limit or (stop is not None and chunk.finished and max(chunk.finished) < stop):
                break
    out.sort(key=lambda d: d.get("updated_at") or "", reverse=True)
    return out[:limit]
