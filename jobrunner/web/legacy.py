"""The hosted platform's API shapes, translated at the edge: its request bodies into jobrunner requests,
and a status file into the job object its clients read. Nothing past this module knows the old names.

Old scrape body: ``{searchParams, maxPages, maxResults, metadata}``; ``searchParams`` takes the search
fields in camelCase (``titleKeywords``, ``currentCompany``, ``companyHeadcountMin``, ...; snake_case is
read too) and ``url`` (or ``searchUrl``) for a pasted Sales Navigator search. Old enrich body:
``{parsedData: {headers, rows}}``, the rows as lists in header order or as objects keyed by header; it is
read exactly as a CSV with those headers would be (``leads.read_csv``), so the same columns are
understood and the same mistakes are refused with the same words.

Old job: ``jobId``, ``type`` ("scraping", "enrichment"; other types by their own name), ``status``,
``progress {current, total, percentage}``, ``startedAt``, ``completedAt``, ``error`` (the message, or null)
and ``metadata``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from .. import leads
from ..errors import InvalidRequest

Doc = dict[str, Any]

OLD_TYPES = {"scrape": "scraping", "enrich": "enrichment"}
SEARCH_FIELDS = ("url", "keywords", "location", "current_company", "title_keywords", "industry",
                 "company_headcount_min", "company_headcount_max", "years_experience_min", "years_experience_max",
                 "school", "past_company", "changed_jobs", "first_name", "last_name")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


SEARCH_NAMES = {**{f: f for f in SEARCH_FIELDS}, **{_camel(f): f for f in SEARCH_FIELDS}, "searchUrl": "url"}
OLD_SCRAPE_KEYS = ("searchParams", "maxPages", "maxResults", "metadata")
OLD_ENRICH_KEYS = ("parsedData", "metadata", "options")
# fields of the native form every type shares, accepted beside the old ones too
COMMON_KEYS = ("id", "priority", "max_attempts", "not_before", "timeout_s")


def _unknown(body: Mapping[str, Any], allowed: tuple[str, ...], form: str) -> None:
    extra = [k for k in body if k not in allowed]
    if extra:
        raise InvalidRequest(f"unknown field(s) {', '.join(map(repr, extra))} in the {form}; "
                             f"it takes {', '.join(allowed)}")


def _with_type(body: Mapping[str, Any], job_type: str) -> Doc:
    if "type" in body and body["type"] != job_type:
        raise InvalidRequest(f"this route submits {job_type} jobs; the body says type {body['type']!r}")
    return {**body, "type": job_type}


def scrape_request(body: Mapping[str, Any]) -> Doc:
    """A scrape request from either form."""
    if "searchParams" not in body:
        if "search" not in body:
            raise InvalidRequest("give searchParams (with maxPages, maxResults: the old form) or search (with "
                                 "max_pages, max_results: the native form)")
        return _with_type(body, "scrape")
    _unknown(body, (*OLD_SCRAPE_KEYS, *COMMON_KEYS), "old scrape form")
    params = body["searchParams"]
    if not isinstance(params, dict):
        raise InvalidRequest("searchParams must be an object, e.g. {\"titleKeywords\": \"Head of Growth\"}")
    search: Doc = {}
    for key, value in params.items():
        field = SEARCH_NAMES.get(key)
        if field is None:
            known = ", ".join(_camel(f) for f in SEARCH_FIELDS)
            raise InvalidRequest(f"searchParams.{key}: unknown search parameter; known: {known}")
        if value not in (None, ""):
            search[field] = value
    out: Doc = {"type": "scrape", "search": search}
    for old, new in (("maxPages", "max_pages"), ("maxResults", "max_results"), ("metadata", "metadata")):
        if body.get(old) is not None:
            out[new] = body[old]
    out.update({k: body[k] for k in COMMON_KEYS if k in body})
    return out


def parsed_data_leads(parsed: Any) -> list[Doc]:
    """``{headers, rows}`` to leads, through the CSV reader."""
    if not isinstance(parsed, dict) or not isinstance(parsed.get("headers"), list) \
            or not isinstance(parsed.get("rows"), list):
        raise InvalidRequest("parsedData must be {\"headers\": [...], \"rows\": [[...], ...]}")
    headers = [str(h) for h in parsed["headers"]]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers)
    for i, row in enumerate(parsed["rows"]):
        if isinstance(row, dict):
            cells = [row.get(h) for h in headers]
        elif isinstance(row, list):
            cells = row
        else:
            raise InvalidRequest(f"parsedData.rows[{i}] must be a list of cells or an object keyed by header")
        writer.writerow(["" if c is None else c if isinstance(c, str) else _cell(c, i) for c in cells])
    rows = leads.read_csv(buf.getvalue().encode())
    if not rows:
        raise InvalidRequest("parsedData has headers but no rows")
    return rows


def _cell(value: Any, row: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"parsedData.rows[{row}]: a cell must be text or a number (got {type(value).__name__})")
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def enrich_request(body: Mapping[str, Any]) -> Doc:
    """An enrich request from the old ``parsedData`` form or the native ``leads`` form."""
    if "parsedData" in body:
        _unknown(body, (*OLD_ENRICH_KEYS, *COMMON_KEYS), "old enrich form")
        out: Doc = {"type": "enrich", "leads": parsed_data_leads(body["parsedData"])}
        out.update({k: body[k] for k in ("metadata", "options", *COMMON_KEYS) if k in body})
        return out
    if "leads" not in body:
        raise InvalidRequest("give leads (a list of objects), parsedData ({headers, rows}), or upload a CSV file")
    return _with_type(body, "enrich")


def old_job(doc: Mapping[str, Any]) -> Doc:
    """A status document as the old API showed a job."""
    progress = doc.get("progress")
    if not isinstance(progress, dict):
        progress = {}
    error = doc.get("error")
    return {
        "jobId": doc.get("id"),
        "type": OLD_TYPES.get(str(doc.get("type")), doc.get("type")),
        "status": doc.get("status"),
        "progress": {"current": progress.get("current", 0), "total": progress.get("total"),
                     "percentage": progress.get("percentage")},
        "startedAt": doc.get("started_at"),
        "completedAt": doc.get("finished_at"),
        "error": error.get("message") if isinstance(error, dict) else None,
        "metadata": doc.get("metadata") or {},
    }
