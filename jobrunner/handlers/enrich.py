"""``enrich``: turn leads into contactable leads, one checkpointed paid call at a time.

Per lead, in this order (cheapest first, so a lead dropped early costs nothing more):
1. normalise (names, E.164 phone, email, ZIP, state);
2. skip trace when it has no phone: a search, then the details only of the one candidate that is the
   person (exact name, same place). None or several: ``no_match``, nothing more spent;
3. carrier lookup, then gatekeeping: line type, carrier block list, age;
4. DNC: the local list (free), then the scrub, which fails closed (``UNKNOWN``, not contactable).

Every paid call is a step named by what it buys (``carrier:+15125550142``, ``skip-details:<person id>``):
once answered it is never bought again, through crashes, retries and restarts, nor for a second lead
that needs the same answer (two leads with one phone number cost one lookup, even when they run at
once). A lead whose provider calls fail after the call-level retries is recorded with its error and the
job goes on; the job fails (and is retried later, re-running only those leads) when more than
``max_failure_share`` of the leads failed. A bad key fails the whole job at once. Leads run
``concurrency`` at a time; each provider's rate limit and concurrency cap are the daemon's, shared.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import leads as lead_rules
from ..context import JobContext
from ..errors import PermanentError, ProviderRejected, RetryableError, Throttled
from ..providers import CallStats, carrier, dnc, skiptrace
from ..request import JobRequest
from . import Handler, Result

DEFAULT_BLOCKED = ["Google", "TextNow", "Burner", "Hushed", "Line2", "Bandwidth", "Twilio"]


class EnrichOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    skip_trace: bool = Field(default=True, description="Look up a phone for leads without one.")
    carrier_lookup: bool = Field(default=True, description="Look up line type and carrier, and gatekeep on them.")
    dnc: bool = Field(default=True, description="Scrub against the DNC API (fails closed).")
    dnc_list: str | None = Field(default=None, description="A local DNC list file: one 10-digit number a line (a "
                                 "regular file of at most 1 GiB, read by the daemon's user).")
    dnc_agent_number: str = Field(default="1", max_length=32, description="currentContextAgentNumber for the scrub.")
    allowed_line_types: list[str] = Field(default_factory=lambda: ["mobile"],
                                          description="Line types kept (others dropped: voip, fixed line, landline).")
    blocked_carriers: list[str] = Field(default_factory=lambda: list(DEFAULT_BLOCKED),
                                        description="Carriers dropped (a case-insensitive part of the name).")
    max_age: int | None = Field(default=None, ge=18, le=120, description="Drop leads older than this.")
    concurrency: int = Field(default=16, ge=1, le=256, description="Leads enriched at once.")
    max_failure_share: float = Field(default=0.5, ge=0, le=1,
                                     description="The job fails when more than this share of leads failed.")

    @field_validator("allowed_line_types")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [v.lower() for v in value]


class EnrichRequest(JobRequest):
    type: Literal["enrich"]
    leads: list[dict[str, Any]] = Field(min_length=1, max_length=lead_rules.MAX_LEADS)
    options: EnrichOptions = Field(default_factory=EnrichOptions)


class _Failed(Exception):
    """A lead's provider call failed after its retries: the lead is recorded with the error."""


async def run(request: EnrichRequest, ctx: JobContext) -> Result:
    opts = request.options
    clients = {name: ctx.provider(name) for name, wanted in
               (("skiptrace", opts.skip_trace), ("carrier", opts.carrier_lookup), ("dnc", opts.dnc)) if wanted}
    for client in clients.values():
        client.config.require_key()  # a missing key fails the job now, naming the variable
        client.config.require_url()
    local_dnc = dnc.LocalList.load(opts.dnc_list) if opts.dnc_list else frozenset()
    stats = CallStats()
    results = ctx.results
    results.start()
    total = len(request.leads)
    counts: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    inflight: dict[str, asyncio.Future[Any]] = {}  # a call being bought now, shared by the leads that need it
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def enrich_one(i: int) -> tuple[dict[str, Any], bool]:
        """The output lead, and whether a provider call failed for it (then it is not final)."""
        row = lead_rules.normalize(request.leads[i])
        out: dict[str, Any] = {**row, "row": i + 1, "phone": row.get("phone"), "email": row.get("email"),
                               "age": None, "line_type": None, "carrier": None, "dnc_status": None,
                               "can_contact": False, "drop_reason": None, "errors": []}
        try:
            return await steps(i, row, out), False
        except _Failed:
            out["dnc_status"] = out["dnc_status"] or "UNKNOWN"  # fail closed: never "not on the list"
            out["can_contact"] = False
            return out, True

    async def steps(i: int, row: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:

        async def paid(call: str, what: str, fn: Any) -> Any:
            key = f"{call}:{what}"
            try:
                task = inflight.get(key)
                if task is None:
                    task = inflight[key] = asyncio.get_running_loop().create_task(ctx.step(key, fn))
                    task.add_done_callback(lambda _: inflight.pop(key, None))
                return await asyncio.shield(task)
            except (Throttled, ProviderRejected):
                raise  # the whole job waits, or fails: not this lead's problem alone
            except (RetryableError, PermanentError) as exc:
                out["errors"].append(f"{call}: {exc}")
                raise _Failed from None

        def drop(reason: str) -> dict[str, Any]:
            out["drop_reason"] = reason
            return out

        if not out["phone"]:
            if "skiptrace" not in clients:
                return drop("no_phone")
            if not lead_rules.identity(row) or not row.get("first_name") or not row.get("last_name"):
                return drop("no_identity")
            where = "|".join(str(row.get(k) or "") for k in ("first_name", "last_name", "city", "state", "zip"))
            found = await paid("skip-search", where, lambda: _search(clients["skiptrace"], row, stats))
            match = skiptrace.the_match([skiptrace.Candidate.model_validate(c) for c in found], row)
            if match is None:
                return drop("no_match")
            info = skiptrace.Details.model_validate(await paid(
                "skip-details", match.person_id, lambda: _details(clients["skiptrace"], match.person_id, stats)))
            phone = lead_rules.normalize({"phone": skiptrace.best_phone(info)}).get("phone")
            out["phone"] = phone
            out["email"] = out["email"] or next(iter(info.emails), None)
            out["age"] = info.age
            if not phone:
                return drop("no_phone")
        if opts.max_age is not None and out["age"] is not None and out["age"] > opts.max_age:
            return drop("age")
        if "carrier" in clients:
            found_carrier = carrier.Carrier.model_validate(await paid(
                "carrier", out["phone"], lambda: _lookup(clients["carrier"], out["phone"], stats)))
            out["line_type"], out["carrier"] = found_carrier.line_type, found_carrier.name
            if found_carrier.line_type not in opts.allowed_line_types:
                return drop(f"line_type:{found_carrier.line_type or 'unknown'}")
            names = f"{found_carrier.name or ''} {found_carrier.normalized or ''}".lower()
            blocked = next((b for b in opts.blocked_carriers if b.lower() in names), None)
            if blocked:
                return drop(f"carrier:{blocked}")
        digits = out["phone"][-10:] if out["phone"].startswith("+1") else None
        if digits and digits in local_dnc:
            out["dnc_status"], out["can_contact"] = "DNC", False
            return drop("dnc")
        if "dnc" in clients:
            if digits is None:
                out["dnc_status"] = "UNKNOWN"  # the scrub covers US numbers only
                return out
            answer = dnc.Scrub.model_validate(await paid(
                "dnc", digits, lambda: _scrub(clients["dnc"], digits, opts.dnc_agent_number, stats)))
            if answer.do_not_call:
                out["dnc_status"], out["can_contact"] = "DNC", False
                return drop("dnc")
            out["dnc_status"], out["can_contact"] = "CLEAR", answer.can_contact
        else:
            out["can_contact"] = True
        return out

    done = 0
    failed = 0

    async def worker() -> None:
        nonlocal done, failed
        while not queue.empty():
            out, lead_failed = await enrich_one(queue.get_nowait())
            if lead_failed:
                failed += 1
            else:
                if out["drop_reason"]:
                    dropped[out["drop_reason"].split(":")[0]] += 1
                    counts["dropped"] += 1
                else:
                    counts["enriched"] += 1
            results.append([out])
            done += 1
            ctx.progress(done, total, note=f"leads; {counts['enriched']} enriched, {counts['dropped']} dropped, "
                                           f"{failed} failed")

    workers = [asyncio.create_task(worker()) for _ in range(min(opts.concurrency, total))]
    try:
        await asyncio.gather(*workers)
    except BaseException as exc:
        calls = list(inflight.values())  # now: one that ends while the leads are cancelled leaves inflight
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await _settle_calls(calls, cancel=isinstance(exc, asyncio.CancelledError))
        results.close()
        raise
    summary = {"leads": total, "enriched": counts["enriched"], "dropped": dict(dropped), "failed": failed,
               "no_match": dropped.get("no_match", 0), "results": "results.jsonl", **stats.as_dict()}
    if failed > opts.max_failure_share * total:
        results.finish()
        raise RetryableError(f"{failed} of {total} leads failed (more than {opts.max_failure_share:.0%}); a retry "
                             f"runs only those: {summary}")
    results.finish()
    return summary


async def _settle_calls(calls: list[asyncio.Future[Any]], *, cancel: bool) -> None:
    """The paid calls in flight when the attempt ended (they are shielded from the leads that wait on
    them, so cancelling the leads does not stop them). None may outlive the attempt: the next attempt, in
    this daemon or another, would not find its answer stored and would buy it again, while this one went on
    storing answers for a job it no longer runs. When the attempt ends on its own (a throttle, a refused key)
    they are waited for, so an answer being bought is stored; when it is cancelled from outside (its timeout,
    a cancel, the drain's deadline) they are cancelled. Either way each one's outcome is collected here: a
    lead that was cancelled takes its shield's callback with it, and an error nobody collects is logged by
    asyncio as "Task exception was never retrieved"."""
    if cancel:
        for task in calls:
            task.cancel()
    try:
        await asyncio.gather(*calls, return_exceptions=True)
    except asyncio.CancelledError:  # cancelled while waiting for them: stop them too
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        raise


async def _search(client: Any, row: dict[str, Any], stats: CallStats) -> list[dict[str, Any]]:
    return [c.model_dump() for c in await skiptrace.search(client, row, stats)]


async def _details(client: Any, person_id: str, stats: CallStats) -> dict[str, Any]:
    return (await skiptrace.details(client, person_id, stats)).model_dump()


async def _lookup(client: Any, e164: str, stats: CallStats) -> dict[str, Any]:
    return (await carrier.lookup(client, e164, stats)).model_dump()


async def _scrub(client: Any, digits: str, agent: str, stats: CallStats) -> dict[str, Any]:
    return (await dnc.scrub(client, digits, agent, stats)).model_dump()


HANDLER = Handler("enrich", EnrichRequest, run, "Find, check and scrub phones of leads (skip trace, carrier, DNC).")
