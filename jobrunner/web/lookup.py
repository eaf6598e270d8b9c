"""Finding jobs for the API and the pages: one job (wherever it is in its life), and filtered lists.

Everything is read from the files with the modules the CLI uses (``listing`` for the latest and active
jobs, ``ledger`` for filters, ``control`` for a request still in the queue), so the server keeps no state
and shows exactly what `jobrunner status` would. Query values are checked here, each with a message that
says what is allowed: a bad limit is an error, never NaN, a negative number or "all".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import control, ledger, listing
from ..errors import InvalidRequest
from ..layout import Layout, validate_id

Doc = dict[str, Any]
STATES = ("pending", "running", "completed", "failed", "cancelled")
MAX_LIMIT = 1000
_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_LIMIT = re.compile(r"^[0-9]{1,7}$")


def find(layout: Layout, job_id: str) -> Doc | None:
    """The status document of ``job_id`` (validated here), a stand-in while its first status write is on its
    way or while it waits in the queue, or None."""
    validate_id(job_id)
    doc = listing.read_doc(layout, job_id)
    if doc is not None:
        return doc
    if layout.active_request(job_id).exists():
        return listing.starting(job_id)
    request = control.queued_request(layout, job_id)
    if request is None:
        return None
    metadata = request.get("metadata")
    return {"id": job_id, "type": str(request.get("type", "?")), "status": "pending", "queued": True,
            "progress": {"current": 0, "total": None, "percentage": None}, "attempt": 0,
            "max_attempts": request.get("max_attempts", 4), "created_at": None, "started_at": None,
            "updated_at": None, "finished_at": None, "metadata": metadata if isinstance(metadata, dict) else {},
            "result": None, "error": None, "history": []}


def parse_limit(value: str | None, default: int = 50, most: int = MAX_LIMIT) -> int:
    if value is None or value == "":
        return default
    if not _LIMIT.match(value.strip()) or not 1 <= int(value) <= most:
        raise InvalidRequest(f"limit must be a whole number from 1 to {most} (got {value[:40]!r})")
    return int(value)


def parse_bool(name: str, value: str | None) -> bool:
    if value is None or value == "":
        return False
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise InvalidRequest(f"{name} must be true or false (got {value[:40]!r})")


def parse_states(value: str | None) -> list[str] | None:
    if value is None or value.strip() == "":
        return None
    states = [s.strip().lower() for s in value.split(",") if s.strip()]
    wrong = [s for s in states if s not in STATES]
    if wrong or not states:
        raise InvalidRequest(f"status {', '.join(repr(s[:40]) for s in wrong)}: states are {', '.join(STATES)}")
    return states


def parse_type(value: str | None) -> str | None:
    if value is None or value.strip() == "":
        return None
    if not _TYPE.match(value):
        raise InvalidRequest(f"type {value[:40]!r} is not a job type name")
    return value


def parse_since(value: str | None, default: str | None = None) -> float | None:
    """Seconds of a window (``24h``), None for ``all`` or nothing."""
    chosen = value if value not in (None, "") else default
    if chosen is None:
        return None
    try:
        return ledger.parse_since(chosen)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def parse_query(value: str | None) -> str | None:
    """An id search: a part of an id, so only id characters."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if len(text) > 128 or not re.fullmatch(r"[A-Za-z0-9._-]+", text):
        raise InvalidRequest("search by id: up to 128 of A-Z a-z 0-9 . _ -")
    return text


@dataclass(frozen=True)
class Filters:
    statuses: list[str] | None = None
    job_type: str | None = None
    since_s: float | None = None
    query: str | None = None
    limit: int = 50

    @classmethod
    def of(cls, params: Mapping[str, str]) -> Filters:
        statuses = parse_states(params.get("status"))
        if parse_bool("active", params.get("active")):
            if statuses is not None:
                raise InvalidRequest("active is status=pending,running: give one of them")
            statuses = ["pending", "running"]
        return cls(statuses=statuses, job_type=parse_type(params.get("type")),
                   since_s=parse_since(params.get("since")), query=parse_query(params.get("q")),
                   limit=parse_limit(params.get("limit")))

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.statuses, self.job_type, self.since_s, self.query))


def runs(layout: Layout, filters: Filters) -> list[Doc]:
    """The jobs a filter selects, newest first (an id search that names a job exactly shows it first)."""
    if not filters.any:
        return listing.latest(layout, filters.limit)
    found = ledger.jobs(layout, statuses=filters.statuses, job_type=filters.job_type,
                        since=ledger.cutoff(filters.since_s), limit=filters.limit, id_contains=filters.query)
    if filters.query is not None:
        try:
            exact = find(layout, filters.query)
        except InvalidRequest:
            exact = None
        if exact is not None and (filters.statuses is None or exact.get("status") in filters.statuses) \
                and (filters.job_type is None or exact.get("type") == filters.job_type):
            found = [exact, *(d for d in found if d.get("id") != exact.get("id"))][: filters.limit]
    return found
