"""A hint of which jobs changed most recently: ``jobs/.recent``, one job id per line, appended.

`jobrunner status` lists the latest jobs from its tail instead of stat-ing every status file (100,000
stats take about a second; reading the tail, a millisecond). It is only a hint: every line names a job
whose status file is the truth, a torn line (a crash mid-append) stays a line of its own, and a data dir without
it is listed the slow way. Appends are single small O_APPEND writes, atomic between processes.
"""

from __future__ import annotations

import os

from .layout import ID_PATTERN, Layout

_CHUNK = 64 * 1024


def note(layout: Layout, *job_ids: str) -> None:
    """Record that ``job_ids`` changed state, in one append (best effort: a failure only makes listings
    slower)."""
    if not job_ids:
        return
    try:
        fd = os.open(layout.recent, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    try:
        # each line is led by a newline too, which ends a line a crash tore
        os.write(fd, b"".join(b"\n" + job_id.encode() + b"\n" for job_id in job_ids))
    except OSError:
        pass
    finally:
        os.close(fd)


def recent(layout: Layout, want: int) -> list[str] | None:
    """Up to ``want`` distinct ids, most recently noted first; None if there is no index."""
    try:
        fd = os.open(layout.recent, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        end = os.fstat(fd).st_size
        seen: dict[str, None] = {}
        tail = b""
        while end > 0 and len(seen) < want:
            start = max(0, end - _CHUNK)
            block = os.pread(fd, end - start, start) + tail
            lines = block.split(b"\n")
            tail = lines[0] if start > 0 else b""  # maybe cut: joined with the next block
            for raw in reversed(lines[1:] if start > 0 else lines):
                name = raw.decode(errors="replace")
                if name and ID_PATTERN.match(name) and name not in seen:
                    seen[name] = None
                    if len(seen) >= want:
                        break
            end = start
        return list(seen)
    finally:
        os.close(fd)
