"""LinkedIn Sales Navigator search (RapidAPI "realtime-linkedin-sales-navigator-data"): the wire format.

``Search`` is what a scrape request may ask for: simple parameters, or a pasted Sales Navigator URL.
``search_page`` fetches one page of people and returns it as plain leads (the fields lead tools read).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .client import BadShape, CallStats, ProviderClient

PAGE_SIZE = 25

# Sales Navigator's company headcount buckets (filter id -> (min, max) employees)
_HEADCOUNT = [("B", 1, 10), ("C", 11, 50), ("D", 51, 200), ("E", 201, 500), ("F", 501, 1000),
              ("G", 1001, 5000), ("H", 5001, 10000), ("I", 10001, 10**9)]
# years of experience buckets
_EXPERIENCE = [("1", 0, 0), ("2", 1, 2), ("3", 3, 5), ("4", 6, 10), ("5", 11, 100)]


class Search(BaseModel):
    """A people search: either ``url`` (a Sales Navigator search URL) or simple parameters."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=4000,
                            description="A Sales Navigator search URL (https://www.linkedin.com/sales/...).")
    keywords: str | None = Field(default=None, max_length=500)
    location: str | None = Field(default=None, max_length=200,
                                 description="A region: its LinkedIn geo id (digits) or its name.")
    current_company: str | None = Field(default=None, max_length=200)
    title_keywords: str | None = Field(default=None, max_length=200)
    industry: str | None = Field(default=None, max_length=200)
    company_headcount_min: int | None = Field(default=None, ge=1)
    company_headcount_max: int | None = Field(default=None, ge=1)
    years_experience_min: int | None = Field(default=None, ge=0, le=100)
    years_experience_max: int | None = Field(default=None, ge=0, le=100)
    school: str | None = Field(default=None, max_length=200)
    past_company: str | None = Field(default=None, max_length=200)
    changed_jobs: bool | None = None
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _one_kind(self) -> Search:
        simple = {k: v for k, v in self.model_dump(exclude={"url"}).items() if v not in (None, "", False)}
        if self.url is not None:
            if simple:
                raise ValueError(f"give either url or search parameters, not both (got url and {', '.join(simple)})")
            if not self.url.startswith("https://www.linkedin.com/sales/"):
                raise ValueError("url must be a Sales Navigator search URL (https://www.linkedin.com/sales/...)")
        elif not simple:
            raise ValueError("a search needs url or at least one parameter (keywords, location, title_keywords, ...)")
        for low, high in (("company_headcount_min", "company_headcount_max"),
                          ("years_experience_min", "years_experience_max")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} ({lo}) is more than {high} ({hi})")
        return self

    def body(self, page: int, limit: int = PAGE_SIZE) -> tuple[str, dict[str, Any]]:
        """The endpoint's path and JSON body for ``page`` (1-based)."""
        if self.url is not None:
            return "/premium_search_person_via_url", {"url": self.url, "page": page, "limit": limit}
        return "/premium_search_person", {"filters": self.filters(), "keywords": self.keywords or "",
                                          "page": page, "limit": limit, "account_number": 1}

    def filters(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []

        def add(kind: str, *values: tuple[str | None, str]) -> None:
            out.append({"type": kind, "values": [
                {**({"id": vid} if vid is not None else {}), "text": text, "selectionType": "INCLUDED"}
                for vid, text in values]})

        if self.location:
            add("REGION", (self.location, self.location) if self.location.isdigit() else (None, self.location))
        for kind, text in (("CURRENT_COMPANY", self.current_company), ("CURRENT_TITLE", self.title_keywords),
                           ("INDUSTRY", self.industry), ("SCHOOL", self.school), ("PAST_COMPANY", self.past_company),
                           ("FIRST_NAME", self.first_name), ("LAST_NAME", self.last_name)):
            if text:
                add(kind, (None, text))
        if self.company_headcount_min is not None or self.company_headcount_max is not None:
            add("COMPANY_HEADCOUNT", *_buckets(_HEADCOUNT, self.company_headcount_min, self.company_headcount_max))
        if self.years_experience_min is not None or self.years_experience_max is not None:
            add("YEARS_OF_EXPERIENCE", *_buckets(_EXPERIENCE, self.years_experience_min, self.years_experience_max))
        if self.changed_jobs:
            add("RECENTLY_CHANGED_JOBS", ("RPC", "Changed jobs in the last 90 days"))
        return out


def _buckets(table: list[tuple[str, int, int]], low: int | None, high: int | None) -> list[tuple[str | None, str]]:
    lo, hi = low if low is not None else 0, high if high is not None else 10**9
    return [(bid, f"{a}-{b}" if b < 10**9 else f"{a}+") for bid, a, b in table if b >= lo and a <= hi]


class Page(BaseModel):
    leads: list[dict[str, Any]]
    total: int | None
    has_more: bool


LEAD_FIELDS = ("fullName", "firstName", "lastName", "geoRegion", "navigationUrl", "title", "headline")


def parse_page(body: Any) -> Page:
    """The leads of one answer, keeping the fields lead tools read. Raises BadShape when the answer is not
    the documented ``{"response": {"data": [...], "total": N, "hasMore": bool}}``."""
    response = body.get("response") if isinstance(body, dict) else None
    data = response.get("data") if isinstance(response, dict) else None
    if not isinstance(response, dict) or not isinstance(data, list):
        raise BadShape("no response.data list in the answer")
    leads = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("navigationUrl"), str):
            raise BadShape("a lead without a navigationUrl")
        lead = {k: item.get(k) for k in LEAD_FIELDS}
        position = item.get("currentPosition")
        lead["currentPosition"] = ({"title": position.get("title"), "companyName": position.get("companyName")}
                                   if isinstance(position, dict) else None)
        leads.append(lead)
    total = response.get("total")
    has_more = response.get("hasMore")
    return Page(leads=leads, total=total if isinstance(total, int) else None,
                has_more=has_more if isinstance(has_more, bool) else len(leads) >= PAGE_SIZE)


async def search_page(client: ProviderClient, search: Search, page: int, stats: CallStats) -> Page:
    path, body = search.body(page)
    return await client.call("POST", path, json=body, stats=stats, parse=parse_page)
