"""Skip tracing (RapidAPI "skip-tracing-working-api"): find a person's phone from their name and place.

Money is spent in two calls: a search (candidates), then the details of one candidate. The details are
bought only for a candidate that really is the person: the exact first and last name, and the same city
and state when we know them. No candidate, or several, is "no match": nothing more is spent.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .client import BadShape, CallStats, ProviderClient


class Candidate(BaseModel):
    person_id: str
    name: str
    lives_in: str | None = None


class Details(BaseModel):
    phones: list[dict[str, str | None]]  # {number, type, last_reported}
    emails: list[str]
    age: int | None = None


async def search(client: ProviderClient, lead: dict[str, Any], stats: CallStats) -> list[Candidate]:
    name = f"{lead['first_name']} {lead['last_name']}"
    place = ", ".join(p for p in (lead.get("city"), " ".join(x for x in (lead.get("state"), lead.get("zip")) if x))
                      if p)
    if place:
        return await client.call("GET", "/search/bynameaddress", params={"name": name, "citystatezip": place,
                                                                        "page": 1}, stats=stats, parse=_candidates)
    return await client.call("GET", "/search/byname", params={"name": name, "page": 1}, stats=stats,
                             parse=_candidates)


def the_match(candidates: list[Candidate], lead: dict[str, Any]) -> Candidate | None:
    """The one candidate that is the lead, or None (none, or more than one, fit)."""
    want = _key(f"{lead['first_name']} {lead['last_name']}")
    city, state = _key(lead.get("city") or ""), _key(lead.get("state") or "")
    fits = []
    for c in candidates:
        if _key(c.name) != want:
            continue
        lived_city, _, lived_state = (c.lives_in or "").rpartition(",")
        if city and _key(lived_city) != city:
            continue
        if state and _key(lived_state) != state:
            continue
        fits.append(c)
    return fits[0] if len(fits) == 1 else None


async def details(client: ProviderClient, person_id: str, stats: CallStats) -> Details:
    return await client.call("GET", "/search/detailsbyID", params={"peo_id": person_id}, stats=stats,
                             parse=_details)


def best_phone(found: Details) -> str | None:
    """A Wireless number first, then the most recently reported."""
    if not found.phones:
        return None
    ranked = sorted(found.phones, key=lambda p: ((p.get("type") or "").lower() == "wireless",
                                                 p.get("last_reported") or ""), reverse=True)
    return ranked[0].get("number")


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def _candidates(body: Any) -> list[Candidate]:
    people = body.get("PeopleDetails") if isinstance(body, dict) else None
    if people is None and isinstance(body, dict) and body.get("Status") in (200, 404):
        return []
    if not isinstance(people, list):
        raise BadShape("no PeopleDetails list in the answer")
    out = []
    for p in people:
        if not isinstance(p, dict) or not isinstance(p.get("Person ID"), str) or not isinstance(p.get("Name"), str):
            raise BadShape("a candidate without Person ID or Name")
        lives_in = p.get("Lives in")
        out.append(Candidate(person_id=p["Person ID"], name=p["Name"],
                             lives_in=lives_in if isinstance(lives_in, str) else None))
    return out


def _details(body: Any) -> Details:
    if not isinstance(body, dict) or not isinstance(body.get("All Phone Details"), list):
        raise BadShape("no 'All Phone Details' list in the answer")
    phones = [{"number": p.get("number"), "type": p.get("phone_type"), "last_reported": p.get("last_reported")}
              for p in body["All Phone Details"] if isinstance(p, dict) and isinstance(p.get("number"), str)]
    emails = [e for e in body.get("Email Addresses") or [] if isinstance(e, str)]
    age = None
    person = body.get("Person Details")
    if isinstance(person, list) and person and isinstance(person[0], dict):
        raw = str(person[0].get("Age") or "")
        age = int(raw) if raw.isdigit() else None
    return Details(phones=phones, emails=emails, age=age)
