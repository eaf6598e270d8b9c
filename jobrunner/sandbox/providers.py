"""The four provider APIs as the sandbox speaks them: their paths, how each authenticates, and the answer
to a well-authenticated, unfaulted call (see /work/shared/providers.md for the wire formats).

Nothing here knows about HTTP sockets, faults or counters: an endpoint turns a ``Call`` into an
``Answer``, which makes every answer checkable without a server. ``Answer.request_key`` names what a
successful answer "sold" (a search page, a person, a number), so ``/_stats`` can show that each was paid
for once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import data

PAGE_LIMIT = 25
E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")


@dataclass(frozen=True)
class Call:
    """One request, as an endpoint sees it."""

    params: dict[str, str]  # from the path, e.g. {"number": "+15125550142"}
    query: dict[str, str]  # first value of each query parameter
    body: bytes
    search_total: int | None = None
    issue_token: Callable[[], str] = lambda: ""


@dataclass
class Answer:
    status: int
    body: Any
    request_key: str | None = None  # set on a good 200: what this answer delivered
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    """A JSON error answer. The message is ours: it never quotes a request header (keys travel there)."""
    return Answer(status, {"error": {"status": status, "message": message}}, headers=headers or {})


@dataclass(frozen=True)
class Endpoint:
    mount: str  # the provider's URL prefix: linkedin, skiptrace, carrier, dnc, dnc-identity
    method: str
    template: str  # the path under the mount; one "{name}" segment at most
    auth: str  # "rapidapi" (x-rapidapi-key), "bearer" (the key), "dnc-token" (the key or an issued token),
    # "refresh" (the key, as Bearer or as {"refresh_token": ...})
    answer: Callable[[Call], Answer]

    @property
    def name(self) -> str:
        """How ``/_stats`` names the endpoint, e.g. ``POST /premium_search_person``."""
        return f"{self.method} {self.template}"

    def match(self, path: str) -> dict[str, str] | None:
        want, got = self.template.split("/"), path.split("/")
        if len(want) != len(got):
            return None
        params: dict[str, str] = {}
        for pattern, segment in zip(want, got, strict=True):
            if pattern.startswith("{") and pattern.endswith("}"):
                if not segment:
                    return None
                params[pattern[1:-1]] = segment
            elif pattern != segment:
                return None
        return params


# --- LinkedIn ----------------------------------------------------------------------------------------------
def _search(call: Call, *, via_url: bool) -> Answer:
    try:
        body = json.loads(call.body)
    except ValueError:
        return error(400, "the body is not JSON")
    if not isinstance(body, dict):
        return error(400, "the body must be a JSON object")
    page, limit = body.get("page", 1), body.get("limit", PAGE_LIMIT)
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        return error(400, f"page must be an integer >= 1, not {json.dumps(page)[:40]}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= PAGE_LIMIT:
        return error(400, f"limit must be an integer 1..{PAGE_LIMIT}, not {json.dumps(limit)[:40]}")
    if via_url:
        if not isinstance(body.get("url"), str) or not body["url"].strip():
            return error(400, "url is required: a Sales Navigator search URL")
    else:
        if not isinstance(body.get("filters", []), list):
            return error(400, "filters must be a list")
        if not isinstance(body.get("keywords", ""), str):
            return error(400, "keywords must be a string")
    identity = data.search_identity(body)
    response = data.search_page(body, page, limit, call.search_total)
    return Answer(200, {"success": True, "status": 200, "response": response},
                  request_key=f"linkedin search={identity[:12]} page={page}")


# --- Skip tracing ------------------------------------------------------------------------------------------
def _page(call: Call) -> int | None:
    text = call.query.get("page", "1")
    return int(text) if text.isdigit() and int(text) >= 1 else None


def _people(call: Call, *, with_address: bool) -> Answer:
    name = data.normalize_name(call.query.get("name", ""))
    if not name:
        return error(400, "name is required")
    place = data.normalize_name(call.query.get("citystatezip", ""))
    if with_address and not place:
        return error(400, "citystatezip is required")
    page = _page(call)
    if page is None:
        return error(400, "page must be an integer >= 1")
    people = data.candidates(name, place if with_address else None) if page == 1 else []
    kind = "bynameaddress" if with_address else "byname"
    where = f" citystatezip={place}" if with_address else ""
    return Answer(200, {"PeopleDetails": people, "Status": 200},
                  request_key=f"skiptrace {kind} name={name}{where} page={page}")


def _details(call: Call) -> Answer:
    peo_id = call.query.get("peo_id", "").strip()
    if not peo_id:
        return error(400, "peo_id is required")
    details = data.person_details(peo_id)
    if details is None:
        return error(404, "no person with that id")
    return Answer(200, details, request_key=f"skiptrace details peo_id={peo_id}")


# --- Carrier -----------------------------------------------------------------------------------------------
def _lookup(call: Call) -> Answer:
    number = call.params["number"]
    if not E164.match(number):
        return error(400, "the number must be in E.164 form, e.g. +15125550142")
    return Answer(200, {"data": data.carrier_lookup(number)}, request_key=f"carrier number={number}")


# --- DNC ---------------------------------------------------------------------------------------------------
def _scrub(call: Call) -> Answer:
    if not call.query.get("currentContextAgentNumber", "").strip():
        return error(400, "currentContextAgentNumber is required")
    phone = call.query.get("phone", "")
    if phone.isdigit() and len(phone) == 11 and phone.startswith("1"):
        phone = phone[1:]
    if not (phone.isdigit() and len(phone) == 10):
        return error(400, "phone must be 10 digits")
    return Answer(200, {"data": data.dnc_scrub(phone)}, request_key=f"dnc phone={phone}")


def _refresh(call: Call) -> Answer:
    token = call.issue_token()
    return Answer(200, {"tokenResult": {"access_token": token, "token_type": "Bearer", "expires_in": 3600}},
                  request_key="dnc-identity refresh")


ENDPOINTS = (
    Endpoint("linkedin", "POST", "/premium_search_person", "rapidapi", lambda c: _search(c, via_url=False)),
    Endpoint("linkedin", "POST", "/premium_search_person_via_url", "rapidapi", lambda c: _search(c, via_url=True)),
    Endpoint("skiptrace", "GET", "/search/bynameaddress", "rapidapi", lambda c: _people(c, with_address=True)),
    Endpoint("skiptrace", "GET", "/search/byname", "rapidapi", lambda c: _people(c, with_address=False)),
    Endpoint("skiptrace", "GET", "/search/detailsbyID", "rapidapi", _details),
    Endpoint("carrier", "GET", "/v2/number_lookup/{number}", "bearer", _lookup),
    Endpoint("dnc", "GET", "/Leads/api/leads/scrubphonenumber", "dnc-token", _scrub),
    Endpoint("dnc-identity", "POST", "/account/refresh", "refresh", _refresh),
)
MOUNTS = frozenset(e.mount for e in ENDPOINTS)


def route(mount: str, path: str, method: str) -> tuple[Endpoint | None, dict[str, str], list[str]]:
    """The endpoint for a request, its path parameters, and the methods allowed at that path (an empty
    list: no such path, 404; no endpoint but some methods: 405)."""
    allowed: list[str] = []
    for endpoint in ENDPOINTS:
        if endpoint.mount != mount:
            continue
        params = endpoint.match(path)
        if params is None:
            continue
        if endpoint.method == method:
            return endpoint, params, [method]
        allowed.append(endpoint.method)
    return None, {}, allowed
