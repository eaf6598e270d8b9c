"""The status document of a job: ``jobs/<id>.json``, the one file a person or a program reads.

Only this module turns a status into bytes or bytes into a status. Writers replace the whole file
atomically (see ``durable``); readers therefore see one complete version or the previous one.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from .durable import write_atomic

SCHEMA_VERSION = 1


class State(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (State.COMPLETED, State.FAILED, State.CANCELLED)


ACTIVE_STATES = (State.PENDING, State.RUNNING)


def now() -> datetime:
    return datetime.now(UTC)


def iso(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Progress(BaseModel):
    current: int = 0
    total: int | None = None
    percentage: float | None = None
    note: str | None = None  # what the numbers count, and anything else worth a glance ("pages; 75 leads")

    @classmethod
    def of(cls, current: int, total: int | None, note: str | None = None) -> Progress:
        pct = None
        if total:
            pct = round(min(100.0, max(0.0, 100.0 * current / total)), 1)
        return cls(current=current, total=total, percentage=pct, note=note)


class ErrorInfo(BaseModel):
    type: str
    message: str
    retryable: bool


class AttemptRecord(BaseModel):
    attempt: int
    worker: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str  # completed | failed | retry | throttled | interrupted | requeued | cancelled | timeout
    error: ErrorInfo | None = None
    delay_s: float | None = None


class JobStatus(BaseModel):
    """Everything known about one job. ``claim`` names the spool entry that the current (or last)
    attempt ran from, as ``<worker>/<file>``; recovery uses it to tell whose claim a file is."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    id: str
    type: str
    status: State
    progress: Progress = Field(default_factory=Progress)
    attempt: int = 0
    max_attempts: int = 4
    priority: int = 0
    created_at: datetime
    started_at: datetime | None = None  # the first attempt's start
    attempt_started_at: datetime | None = None  # the current (or last) attempt's start
    updated_at: datetime
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    worker: str | None = None
    claim: str | None = None
    source: str | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    result: dict[str, JsonValue] | None = None
    error: ErrorInfo | None = None
    history: list[AttemptRecord] = Field(default_factory=list)

    def dump(self) -> bytes:
        """The file's bytes: pretty enough to read, serialised in Rust (this is on the hot path)."""
        return self.model_dump_json(by_alias=True, indent=1).encode() + b"\n"

    @classmethod
    def parse(cls, data: bytes) -> JobStatus:
        return cls.model_validate_json(data)



def read(path: os.PathLike[str] | str) -> JobStatus | None:
    """The status at ``path``, or None if there is none. A file that does not parse is an error: it
    can only come from outside jobrunner, since every write is atomic."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return JobStatus.parse(data)


def save(path: Path, doc: JobStatus, *, tmp_dir: Path, exclusive: bool = False) -> None:
    """Durably write one status (one writer, its own fsyncs): for the CLI and for recovery."""
    write_atomic(path, doc.dump(), tmp_dir=tmp_dir, exclusive=exclusive)
