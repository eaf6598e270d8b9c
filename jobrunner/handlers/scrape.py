"""``scrape``: page through a LinkedIn Sales Navigator people search into the job's results.

Each page is a checkpointed step: a page fetched once is never paid for again, whatever happens after
(a crash, a retry, a restart, `jobrunner retry`). The results file is rebuilt from the steps on every
attempt, so leads are de-duplicated by their profile URL (``navigationUrl``) across all pages, once.
The scrape stops at ``max_pages``, at ``max_results`` leads, or at the last page. The provider's rate
limit (about 5 calls a minute) makes it wait, never fail.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from ..context import JobContext
from ..providers import CallStats
from ..providers.linkedin import PAGE_SIZE, Page, Search, search_page
from ..request import JobRequest
from . import Handler, Result


class ScrapeRequest(JobRequest):
    type: Literal["scrape"]
    search: Search = Field(description="Search parameters, or a Sales Navigator search url.")
    max_pages: int = Field(default=10, ge=1, le=100, description=f"Pages to fetch at most ({PAGE_SIZE} leads a page).")
    max_results: int = Field(default=250, ge=1, le=10_000, description="Leads to keep at most.")


async def run(request: ScrapeRequest, ctx: JobContext) -> Result:
    linkedin = ctx.provider("linkedin")
    linkedin.config.require_key()  # no key: a permanent error naming the variable, before anything else
    stats = CallStats()
    results = ctx.results
    results.start()
    seen: set[str] = set()
    leads = duplicates = pages = 0
    expected = request.max_pages
    stopped = "max_pages"
    try:
        for page in range(1, request.max_pages + 1):
            async def fetch(page: int = page) -> dict[str, Any]:
                return (await search_page(linkedin, request.search, page, stats)).model_dump()

            got = Page.model_validate(await ctx.step(f"page-{page}", fetch))
            pages = page
            fresh = []
            for lead in got.leads:
                url = lead["navigationUrl"]
                if url in seen:
                    duplicates += 1
                    continue
                seen.add(url)
                fresh.append(lead)
            fresh = fresh[: request.max_results - leads]
            results.append(fresh)
            leads += len(fresh)
            if got.total:
                expected = max(page, min(request.max_pages, math.ceil(got.total / PAGE_SIZE)))
            ctx.progress(page, expected, note=f"pages; {leads} leads")
            if leads >= request.max_results:
                stopped = "max_results"
                break
            if not got.has_more or not got.leads:
                stopped = "last_page"
                break
        results.finish()
    finally:
        results.close()
    ctx.progress(pages, pages, note=f"pages; {leads} leads")
    return {"leads": leads, "pages": pages, "duplicates_dropped": duplicates, "stopped_at": stopped,
            "results": "results.jsonl", **stats.as_dict()}


HANDLER = Handler("scrape", ScrapeRequest, run, "Page through a Sales Navigator people search into leads.")
