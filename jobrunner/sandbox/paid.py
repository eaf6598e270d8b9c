"""What each stored step of the ``scrape`` and ``enrich`` handlers bought from the sandbox: the key under
which the sandbox counts that answer (``/_stats``: ``ok_by_request``, and ``key`` in ``requests``).

A handler turns every paid call into a checkpointed step named by what it buys. Tests and
``bench/torture.py`` join a job's stored steps to the sandbox's counts through this one mapping, to prove
that a step, once stored, was never paid for again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .data import search_identity


def request_key(job_type: str, request: Mapping[str, Any], step: str) -> str | None:
    """The sandbox's key of the answer that step ``step`` of a ``job_type`` job (its request ``request``)
    stored; None for a step that bought nothing from the sandbox."""
    if job_type == "scrape" and step.startswith("page-"):
        from ..providers.linkedin import Search

        page = int(step.removeprefix("page-"))
        _, body = Search.model_validate(request["search"]).body(page)
        return f"linkedin search={search_identity(body)[:12]} page={page}"
    if job_type != "enrich":
        return None
    call, _, what = step.partition(":")
    if call == "carrier":
        return f"carrier number={what}"
    if call == "dnc":
        return f"dnc phone={what}"
    if call == "skip-details":
        return f"skiptrace details peo_id={what}"
    if call == "skip-search":
        first, last, city, state, zip_code = what.split("|")
        place = ", ".join(p for p in (city, " ".join(x for x in (state, zip_code) if x)) if p)
        return f"skiptrace bynameaddress name={first} {last} citystatezip={place} page=1"
    return None
