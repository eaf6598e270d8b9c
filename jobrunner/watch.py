"""`jobrunner watch`: live progress of jobs in a terminal, from their status files.

One renderer for every command that follows jobs (`watch`, `submit --wait`, `enrich --wait`, `demo`):
on a terminal, a block of lines redrawn in place, one per job, with a progress bar, rate, ETA, attempt
and last error; elsewhere (a pipe, a file, TERM=dumb), a plain line per job each time something about it
changes (state, progress, attempt, error), with no escape codes. NO_COLOR (set and not empty) turns the
colours off; the bar and the redrawing stay.

It reads what `jobrunner status` reads (the status files, found from the spool's folders), a few times a
second; it never talks to a daemon and never writes anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from . import listing
from .errors import NotFound
from .layout import Layout, is_spool_name
from .spans import span

Doc = dict[str, Any]
FINAL = listing.FINAL
BAR_WIDTH = 20
RATE_WINDOW_S = 60.0
_COLOURS = {"completed": "32", "failed": "31", "cancelled": "35", "running": "36", "pending": "33", "queued": "2"}

# exit codes of `watch` (and of what follows jobs with it)
OK, FAILED, INTERRUPTED = 0, 1, 130


def use_colour(out: TextIO) -> bool:
    return is_terminal(out) and not os.environ.get("NO_COLOR")


def is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty() and os.environ.get("TERM") != "dumb"
    except ValueError:  # closed
        return False


# ---------------------------------------------------------------------------------------------- numbers
def _epoch(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _rate_text(rate: float) -> str:
    if rate >= 1:
        return f"{rate:.1f}/s"
    if rate * 60 >= 1:
        return f"{rate * 60:.1f}/min"
    return f"{rate * 3600:.1f}/h"


class Rates:
    """Progress per second of each job, from the (updated_at, current) pairs its status file showed over
    the last minute; reset when an attempt begins (its replayed steps would count as instant)."""

    def __init__(self) -> None:
        self.samples: dict[str, deque[tuple[float, int]]] = {}
        self.attempt: dict[str, object] = {}

    def see(self, doc: Doc) -> None:
        job_id = str(doc.get("id"))
        current = (doc.get("progress") or {}).get("current") or 0
        when = _epoch(doc.get("updated_at"))
        if when is None or not isinstance(current, int):
            return
        samples = self.samples.setdefault(job_id, deque())
        if self.attempt.get(job_id) != doc.get("attempt") or (samples and current < samples[-1][1]):
            samples.clear()
            self.attempt[job_id] = doc.get("attempt")
        if not samples or samples[-1] != (when, current):
            samples.append((when, current))
        while len(samples) > 2 and samples[-1][0] - samples[1][0] >= RATE_WINDOW_S:
            samples.popleft()

    def rate(self, doc: Doc) -> float | None:
        samples = self.samples.get(str(doc.get("id")))
        if samples and len(samples) >= 2:
            (t0, c0), (t1, c1) = samples[0], samples[-1]
            if t1 > t0 and c1 > c0:
                return (c1 - c0) / (t1 - t0)
            return None
        # one look so far: from the attempt's start, if nothing was replayed (the first attempt)
        current = (doc.get("progress") or {}).get("current") or 0
        start, now = _epoch(doc.get("attempt_started_at")), _epoch(doc.get("updated_at"))
        if doc.get("attempt") == 1 and current and start is not None and now is not None and now - start >= 0.5:
            return float(current) / (now - start)
        return None

    def forget(self, job_id: str) -> None:
        self.samples.pop(job_id, None)
        self.attempt.pop(job_id, None)


# ---------------------------------------------------------------------------------------------- lines
Segment = tuple[str, str | None]  # text, colour code


@dataclass
class Row:
    """One job's line in parts: a terminal pads and colours them, a plain line joins them."""

    type: str
    id: str
    status: str
    bar: str | None
    counts: str
    rest: list[str] = field(default_factory=list)
    key: tuple[object, ...] = ()  # what counts as a change (plain mode prints a line when it changes)


def queued(job_id: str) -> Doc:
    """A job whose request waits in the queue: no status file yet."""
    return {"id": job_id, "type": "?", "status": "queued", "progress": {"current": 0, "total": None}}


def row(doc: Doc, rates: Rates, now: float) -> Row:
    state = str(doc.get("status"))
    p = doc.get("progress") or {}
    current, total = p.get("current") or 0, p.get("total")
    bar = None
    counts = f"{current}" if current else ""
    if total:
        frac = max(0.0, min(1.0, current / total))
        filled = round(BAR_WIDTH * frac)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        counts = f"{current}/{total} {100 * frac:3.0f}%"
    rest: list[str] = []
    if state == "running":
        rate = rates.rate(doc)
        if rate:
            rest.append(_rate_text(rate))
            if total and total > current:
                seen = _epoch(doc.get("updated_at")) or now
                rest.append(f"ETA {span(max(0.0, (total - current) / rate - (now - seen)))}")
    if state not in ("queued",):
        rest.append(f"attempt {doc.get('attempt') or 0}/{doc.get('max_attempts') or '?'}")
    if p.get("note"):
        rest.append(str(p["note"]))
    if state == "pending":
        due = _epoch(doc.get("next_attempt_at"))
        if due is not None:
            rest.append(f"next attempt in {span(due - now)}" if due > now else "next attempt due")
    if state in FINAL:
        started, finished = _epoch(doc.get("started_at")), _epoch(doc.get("finished_at"))
        if started is not None and finished is not None:
            rest.append(f"took {span(finished - started)}")
        result = doc.get("result") or {}
        if isinstance(result, dict) and isinstance(result.get("leads"), int):
            rest.append(f"{result['leads']} leads")
    err = doc.get("error")
    if isinstance(err, dict) and state != "completed":
        label = "error" if state in FINAL else "last error"
        rest.append(f"{label}: {err.get('type')}: {str(err.get('message') or '')[:200]}".replace("\n", " "))
    key = (state, current, total, doc.get("attempt"), p.get("note"), json.dumps(err, sort_keys=True))
    return Row(str(doc.get("type") or "?"), str(doc.get("id")), state, bar, counts, rest, key)


def plain(r: Row) -> str:
    return " ".join(" ".join(x.split()) for x in (r.id, r.type, r.status, r.counts, *r.rest) if x)


def _fit(segments: list[Segment], width: int, colour: bool) -> str:
    """Join segments, cut at ``width`` visible characters, colour (escape codes do not count)."""
    out, left = [], width
    for text, code in segments:
        if left <= 0:
            break
        piece = text[:left]
        left -= len(piece)
        out.append(f"\x1b[{code}m{piece}\x1b[0m" if colour and code and piece.strip() else piece)
    return "".join(out).rstrip()


def terminal_lines(rows: Sequence[Row], width: int, colour: bool) -> list[str]:
    """Aligned lines for a terminal: the type, id and status columns padded to the widest."""
    if not rows:
        return []
    w_type = min(12, max(len(r.type) for r in rows))
    w_id = min(40, max(len(r.id) for r in rows))
    w_counts = max(len(r.counts) for r in rows)
    lines = []
    for r in rows:
        job_id = r.id if len(r.id) <= w_id else r.id[: w_id - 1] + "~"
        bar = f"[{r.bar}]" if r.bar is not None else " " * (BAR_WIDTH + 2)
        segments: list[Segment] = [
            (r.type[:w_type].ljust(w_type) + "  ", None), (job_id.ljust(w_id) + "  ", None),
            (r.status.ljust(9), _COLOURS.get(r.status)), (" " + bar + " ", None),
            (r.counts.rjust(w_counts), None),
        ]
        if r.rest:
            segments.append(("  " + "  ".join(r.rest), "31" if r.status in ("failed",) and r.rest else None))
        lines.append(_fit(segments, width, colour))
    return lines


class Screen:
    """A block of lines at the bottom of a terminal, redrawn in place; lines printed above it stay."""

    def __init__(self, out: TextIO, colour: bool) -> None:
        self.out = out
        self.colour = colour
        self.height = 0

    def draw(self, above: list[Row], block: list[Row], footer: list[str]) -> None:
        cols, rows = shutil.get_terminal_size((100, 24))
        width = max(20, cols - 1)  # never wrap: a wrapped line would break the redraw
        room = max(1, rows - 1 - len(footer))
        if len(block) > room:
            hidden = len(block) - room + 1
            block = block[: room - 1]
            footer = [f"... and {hidden} more", *footer]
        parts = []
        if self.height:
            parts.append(f"\r\x1b[{self.height}A")
        lines = terminal_lines([*above, *block], width, self.colour)
        lines += [f[:width] for f in footer]
        parts += [f"\x1b[2K{line}\n" for line in lines]
        parts.append("\x1b[J")
        self.out.write("".join(parts))
        self.out.flush()
        self.height = len(lines) - len(above)


class Lines:
    """Plain output: a line per job each time it changes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.shown: dict[str, tuple[object, ...]] = {}

    def draw(self, above: list[Row], block: list[Row], footer: list[str]) -> None:
        wrote = False
        for r in [*above, *block]:
            if self.shown.get(r.id) != r.key:
                self.shown[r.id] = r.key
                self.out.write(plain(r) + "\n")
                wrote = True
        if wrote:
            self.out.flush()


# ---------------------------------------------------------------------------------------------- following
@dataclass
class Outcome:
    docs: dict[str, Doc]  # the last status seen of every job that was watched
    code: int  # OK, FAILED (a job ended failed or cancelled), INTERRUPTED (Ctrl-C)
    timed_out: bool = False


def known(layout: Layout, job_id: str) -> bool:
    """Whether a job exists: a status, an accepted request, or a request waiting in the queue."""
    if layout.status(job_id).exists() or layout.active_request(job_id).exists() \
            or layout.deferred_request(job_id).exists():
        return True
    folders = [layout.queue]
    with contextlib.suppress(FileNotFoundError):
        folders += [layout.worker_dir(w) for w in os.listdir(layout.claimed) if not w.endswith(".lock")]
    others = []
    for folder in folders:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for name in os.listdir(folder):
                if name.startswith(job_id + "."):  # how `jobrunner submit` names its files
                    return True
                if is_spool_name(name):
                    others.append(folder / name)
    for path in others:  # a request dropped under another name, with its id inside
        with contextlib.suppress(OSError, ValueError):
            obj = json.loads(path.read_bytes())
            if isinstance(obj, dict) and obj.get("id") == job_id:
                return True
    return False


def _look(layout: Layout, job_id: str) -> Doc:
    doc = listing.read_doc(layout, job_id)
    if doc is not None:
        return doc
    if layout.active_request(job_id).exists():
        return listing.starting(job_id)
    return queued(job_id)


def watch(layout: Layout, job_ids: Sequence[str] | None = None, *, out: TextIO | None = None,
          follow: bool = False, interval: float = 0.5, timeout: float | None = None) -> Outcome:
    """Show jobs until they are final: ``job_ids``, or (None) the active jobs until none is left (with
    ``follow``, until interrupted). NotFound for an id that names no job."""
    out = out or sys.stdout
    view: Screen | Lines = Screen(out, use_colour(out)) if is_terminal(out) else Lines(out)
    ids = list(dict.fromkeys(job_ids or []))
    for job_id in ids:
        if not known(layout, job_id):
            time.sleep(0.2)  # it may have been between two places: look once more
            if not known(layout, job_id):
                raise NotFound(f"no job {job_id!r}")
    rates = Rates()
    last: dict[str, Doc] = {}
    tracked: dict[str, Doc] = {}  # without ids: jobs seen active and not yet final
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            now = time.time()
            above: list[Doc] = []
            footer: list[str] = []
            if ids:
                block = [_look(layout, job_id) for job_id in ids]
                done = all(d.get("status") in FINAL for d in block)
            else:
                active, waiting = listing.active(layout)
                current = {d["id"]: d for d in active}
                for job_id in [j for j in tracked if j not in current]:
                    doc = listing.read_doc(layout, job_id)  # left the active folders: final, most likely
                    if doc is not None and doc.get("status") in FINAL:
                        above.append(doc)
                        del tracked[job_id]
                        rates.forget(job_id)
                    elif doc is not None:
                        current[job_id] = doc
                tracked.update(current)
                block = sorted(tracked.values(), key=lambda d: (d.get("created_at") or "~", d["id"]))
                if waiting:
                    footer.append(f"{waiting} request file(s) in the queue, not yet taken by a daemon")
                done = not tracked and not waiting and not follow
                if not tracked and not waiting and follow:
                    footer.append("no active jobs; watching for new ones (Ctrl-C to stop)")
                if done and not last and not above:
                    out.write("no active jobs\n")
                    out.flush()
            for doc in [*above, *block]:
                rates.see(doc)
                last[str(doc["id"])] = doc
            view.draw([row(d, rates, now) for d in above], [row(d, rates, now) for d in block], footer)
            if done:
                break
            if deadline is not None and time.monotonic() > deadline:
                return Outcome(last, FAILED, timed_out=True)
            time.sleep(interval)
    except KeyboardInterrupt:  # the screen's cursor is below the block already: nothing to tidy
        return Outcome(last, INTERRUPTED)
    ended = [d for d in last.values() if d.get("status") in FINAL]
    code = FAILED if any(d.get("status") != "completed" for d in ended) else OK
    return Outcome(last, code)
