"""What a request file may say, and how its bytes become a validated request (or a clear reason not to).

A request is a JSON object. The fields every type shares live on ``JobRequest``; each handler type
subclasses it with ``type: Literal["name"]`` and its own fields. Together they form a discriminated union
on ``type`` (``jobrunner schema`` prints its JSON Schema).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from .errors import InvalidRequest
from .layout import validate_id

MAX_REQUEST_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 32


class JobRequest(BaseModel):
    """Fields common to every job type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="The job type; selects the handler.")
    id: str | None = Field(
        default=None,
        description="Idempotency key and job id (1-128 of A-Z a-z 0-9 . _ -). A second request with "
        "the same id runs nothing. Generated when absent.",
    )
    metadata: dict[str, JsonValue] = Field(
        default_factory=dict, description="Client data kept as-is in the status file."
    )
    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher runs first among waiting jobs.")
    max_attempts: int = Field(default=4, ge=1, le=100, description="Attempts before the job fails.")
    not_before: AwareDatetime | None = Field(
        default=None, description="Do not start before this time (ISO 8601 with a UTC offset)."
    )
    timeout_s: float | None = Field(
        default=None, gt=0, le=7 * 24 * 3600, description="Time limit for one attempt, in seconds."
    )
    notify_url: str | None = Field(
        default=None, max_length=2048,
        description="POST the job's final status here when it completes or fails (http or https; see the "
        "README's webhooks). Overrides the configured URL for the job's type.",
    )

    @field_validator("notify_url")
    @classmethod
    def _check_notify_url(cls, value: str | None) -> str | None:
        from .webhooks import check_url

        return None if value is None else check_url(value)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return validate_id(value)
        except InvalidRequest as exc:
            raise ValueError(str(exc)) from None


def generated_id(stat: os.stat_result) -> str:
    """The id of a request that names none: time-sortable, and the same every time it is computed for
    the same spool file (drop time + inode), so a daemon recovering a dead peer's claim finds the job."""
    when = datetime.fromtimestamp(stat.st_mtime_ns / 1e9, UTC)
    return f"{when:%Y%m%d-%H%M%S-%f}-{stat.st_ino:x}"


def decode(data: bytes, *, limit: int = MAX_REQUEST_BYTES) -> dict[str, Any]:
    """Bytes to a JSON object, or InvalidRequest saying what is wrong with them."""
    if not data:
        raise InvalidRequest("empty file: a request is a JSON object such as {\"type\": \"noop\"}")
    if len(data) > limit:
        raise InvalidRequest(f"request is {len(data)} bytes; the limit is {limit}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} ({exc.reason}); "
            "save the file as UTF-8"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    depth = _max_depth(text)
    if depth > MAX_DEPTH:
        raise InvalidRequest(f"JSON nested more than {MAX_DEPTH} levels deep; the limit is {MAX_DEPTH}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:  # pragma: no cover - _max_depth rejects these first
        raise InvalidRequest("JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise InvalidRequest(f"invalid JSON: {str(exc).split(';')[0]}; send very long numbers as strings") from None
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise InvalidRequest(
            "the request contains a lone surrogate escape (\\udXXX), which is not Unicode text; remove it"
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"the request is a JSON {_json_kind(value)}; it must be a JSON object with a \"type\" field"
        )
    return value


# possessive, and ending at the end of text too: linear time even on an unterminated string of escapes
_STRING = re.compile(r'"(?:[^"\\]|\\.?)*+(?:"|\Z)', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def _max_depth(text: str) -> int:
    """Nesting depth of brackets outside strings, without recursion (the regexes run at C speed)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0
    depth = best = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > best:
                best = depth
                if best > MAX_DEPTH:
                    return best
        else:
            depth -= 1
    return best


def _json_kind(value: object) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field path, e.g. ``max_pages: must be <= 100 (got 500)``."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(_shown(str(part)) for part in err["loc"]) or "(request)"
        got = ""
        if err["type"] not in ("missing", "extra_forbidden") and "input" in err:
            shown = json.dumps(err["input"], default=str)
            got = f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
        msg = "unknown field; remove it" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}{got}")
    return "; ".join(lines)


def _shown(name: str) -> str:
    """A field name from the request, as it may be shown in one line: one with a newline or another control
    character (a key is any string) is quoted with escapes."""
    return name if name.isprintable() else json.dumps(name)


def validate(obj: Mapping[str, Any], models: Mapping[str, type[JobRequest]]) -> JobRequest:
    """A decoded object to the request model of its type, or InvalidRequest with the field paths."""
    job_type = obj.get("type")
    known = ", ".join(sorted(models)) or "(none installed)"
    if job_type is None:
        raise InvalidRequest(f"missing field \"type\"; known types: {known}", job_id=_safe_id(obj))
    if not isinstance(job_type, str) or job_type not in models:
        raise InvalidRequest(f"unknown type {job_type!r}; known types: {known}", job_id=_safe_id(obj))
    try:
        return models[job_type].model_validate(obj)
    except ValidationError as exc:
        raise InvalidRequest(format_validation_error(exc), job_id=_safe_id(obj)) from None


def _safe_id(obj: Mapping[str, Any]) -> str | None:
    """The request's id if it is a valid one (so a failed status can be written for it)."""
    try:
        return validate_id(obj.get("id"))
    except InvalidRequest:
        return None
