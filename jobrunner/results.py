"""A job's results: ``jobs/<id>/results.jsonl``, one JSON object a line, and its export.

A handler writes through ``ResultsFile``. Each attempt starts the file anew and rebuilds it from its
steps (a reused step costs nothing), so whatever a crash left half-written is replaced, and the results
of a completed job hold every row once. The file is flushed to disk before the job is recorded as
completed. ``export`` turns it into JSON lines or CSV for ``jobrunner results``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any


class ResultsFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self.rows = 0

    def start(self) -> None:
        """Begin this attempt's results (an earlier attempt's file is replaced)."""
        self.path.parent.mkdir(exist_ok=True)  # not its parents: a data dir gone is not made again here
        self.close()
        self._file = open(self.path, "wb")  # noqa: SIM115 - held open for the attempt; closed by finish()
        self.rows = 0

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        if self._file is None:
            self.start()
        assert self._file is not None
        data = b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows)
        if data:
            self._file.write(data)
            self._file.flush()  # readable by `jobrunner results` while the job runs
            self.rows += data.count(b"\n")

    def finish(self) -> None:
        """Make the results durable (before the job's completed status is written)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)


def export(path: Path, fmt: str, out: IO[str]) -> int:
    """Write the results at ``path`` to ``out`` as ``jsonl`` or ``csv``; return the number of rows.
    CSV columns are the union of the rows' fields in order of first appearance; nested objects become
    dotted columns (``currentPosition.title``)."""
    if fmt == "jsonl":
        n = 0
        for row in read_rows(path):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
        return n
    flat = [flatten(row) for row in read_rows(path)]
    columns: dict[str, None] = {}
    for row in flat:
        columns.update(dict.fromkeys(row))
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return len(flat)


def flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A row with nested objects as dotted columns (``currentPosition.title``), lists as JSON text."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, list):
            out[name] = json.dumps(value, ensure_ascii=False)
        else:
            out[name] = value
    return out
