"""The `enrich` job end to end: a real daemon calling the sandbox's skip-trace, carrier and DNC APIs."""

from __future__ import annotations

import csv
import io
import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, DataDir, wait_for

from jobrunner import checkpoint
from jobrunner.layout import Layout
from jobrunner.sandbox import Faults, Sandbox
from jobrunner.sandbox.data import candidates
from jobrunner.sandbox.paid import request_key

FAST_CALLS = {"JOBRUNNER_CALL_BACKOFF_S": "0.02", "JOBRUNNER_CALL_MAX_WAIT_S": "5"}
FIRST = ["Ava", "Ben", "Cara", "Dan", "Eve", "Finn", "Gia", "Hugo", "Ines", "Jack", "Kira", "Liam", "Mona", "Noah",
         "Olga", "Paul", "Quinn", "Rosa", "Sam", "Tara", "Uma", "Vic", "Wes", "Xena", "Yuri"]
LAST = ["Abbott", "Barnes", "Cole", "Diaz", "Ellis", "Flores", "Grant", "Hayes", "Irwin", "Jensen", "Klein", "Lowe",
        "Mason", "Nolan", "Ortiz", "Price", "Quade", "Reyes", "Stone", "Tate"]
PLACES = [("Austin", "TX", "78701"), ("Denver", "CO", "80202"), ("Miami", "FL", "33101"), ("Boston", "MA", "02108"),
          ("Seattle", "WA", "98101")]


def use(data: DataDir, sb: Sandbox, **extra: str) -> None:
    data.extra_env.update({**sb.env(), **FAST_CALLS, **extra})


def make_leads(n: int, *, with_phone_every: int = 3, place: bool = True) -> list[dict[str, Any]]:
    """``n`` different people; every ``with_phone_every``-th has a phone already (no skip trace; 0: none has)."""
    out = []
    for i in range(n):
        first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
        lead: dict[str, Any] = {"first_name": first, "last_name": f"{last}{i // (len(FIRST) * len(LAST)) or ''}",
                                "company": f"Co {i}", "campaign": f"c{i % 7}"}
        if place:
            city, state, zip_code = PLACES[i % len(PLACES)]
            lead.update(city=city, state=state, zip=zip_code)
        if with_phone_every and i % with_phone_every == 0:
            lead["phone"] = f"(512) 555-{i % 10000:04d}"
        out.append(lead)
    return out


def results(data: DataDir, job_id: str) -> list[dict[str, Any]]:
    path = data.jobs / job_id / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def paid_counts(sb: Sandbox) -> Counter[str]:
    return Counter({k: v for k, v in sb.stats()["ok_by_request"].items() if not k.startswith("dnc-identity")})


def test_500_leads_through_faults_and_a_kill9(data: DataDir, daemons: Callable[..., Daemon], sandbox: Sandbox) -> None:
    sandbox.set_faults(Faults(error_rate=0.1, latency_ms=2))
    use(data, sandbox, JOBRUNNER_FAILPOINT="step-saved:400")
    first = daemons()
    data.drop("e.json", {"type": "enrich", "id": "big", "leads": make_leads(500)})
    assert first.wait(180) == -signal.SIGKILL, first.output()
    stored_at_kill = {r["key"] for r in checkpoint.records(Layout(data.root), "big")}
    assert len(stored_at_kill) >= 400  # the 400th, and any others appended in the same commit
    del data.extra_env["JOBRUNNER_FAILPOINT"]
    second = daemons()
    doc = data.wait_status("big", timeout=300)
    assert doc["status"] == "completed", doc
    s = doc["result"]
    assert s["leads"] == 500 and s["enriched"] + sum(s["dropped"].values()) + s["failed"] == 500
    assert s["failed"] == 0 and s["enriched"] > 100
    rows = results(data, "big")
    assert sorted(r["row"] for r in rows) == list(range(1, 501))  # every lead once in the results
    assert all(r["campaign"] == f"c{(r['row'] - 1) % 7}" for r in rows)  # input columns kept
    for r in rows:
        if r["drop_reason"] is None:
            assert r["phone"].startswith("+1") and r["line_type"] == "mobile" and r["dnc_status"] == "CLEAR"
            assert r["can_contact"] is True
    counts = paid_counts(sandbox)
    # every answer stored before the kill was bought exactly once, never again
    assert {key: counts[request_key("enrich", {}, key)] for key in stored_at_kill} == {key: 1 for key in stored_at_kill}
    # an answer the sandbox gave while the daemon was being killed, before it was stored, is bought again:
    # at most one per call in flight (16 leads at a time, one call each)
    repeats = {k: n for k, n in counts.items() if n > 1}
    assert sum(n - 1 for n in repeats.values()) <= 16 and max(counts.values()) <= 2, repeats
    assert second.term() == 0


def test_ambiguous_candidates_cost_no_details_call(data: DataDir, daemons: Callable[..., Daemon],
                                                   sandbox: Sandbox) -> None:
    use(data, sandbox, JOBRUNNER_CARRIER_KEY="", JOBRUNNER_DNC_KEY="")
    people = make_leads(120, with_phone_every=0, place=False)
    kinds = Counter(min(len(candidates(f"{p['first_name']} {p['last_name']}", None)), 2) for p in people)
    assert kinds[0] > 0 and kinds[1] > 0 and kinds[2] > 0  # none, one, several: all three happen
    d = daemons()
    data.drop("e.json", {"type": "enrich", "id": "amb", "leads": people,
                         "options": {"carrier_lookup": False, "dnc": False}})
    doc = data.wait_status("amb", timeout=120)
    assert doc["status"] == "completed", doc
    by_row = {r["row"]: r for r in results(data, "amb")}
    for i, p in enumerate(people):
        n = len(candidates(f"{p['first_name']} {p['last_name']}", None))
        assert (by_row[i + 1]["drop_reason"] == "no_match") == (n != 1), (p, n, by_row[i + 1])
    calls = sandbox.stats()["calls"]
    assert calls["skiptrace GET /search/byname"] == 120
    assert calls["skiptrace GET /search/detailsbyID"] == kinds[1]  # only for the one-candidate names
    assert doc["result"]["no_match"] == kinds[0] + kinds[2]
    assert d.term() == 0


def test_a_dnc_outage_fails_closed_and_a_retry_reruns_only_those_calls(
        data: DataDir, daemons: Callable[..., Daemon], sandbox: Sandbox) -> None:
    sandbox.set_faults(Faults(status_override=503), provider="dnc")
    use(data, sandbox, JOBRUNNER_CALL_TRIES="2")
    d = daemons()
    data.drop("e.json", {"type": "enrich", "id": "outage", "leads": make_leads(40), "max_attempts": 1})
    doc = data.wait_status("outage", ("failed",), timeout=120)
    assert "leads failed" in doc["error"]["message"]
    rows = results(data, "outage")
    scrubbed = [r for r in rows if r["line_type"] == "mobile" and r["drop_reason"] is None]
    assert scrubbed and all(r["dnc_status"] == "UNKNOWN" and r["can_contact"] is False for r in scrubbed)
    assert all(r["errors"] for r in scrubbed)
    before = paid_counts(sandbox)
    sandbox.set_faults(Faults(), provider="dnc")
    assert data.cli("retry", "outage").returncode == 0
    doc = data.wait_status("outage", timeout=120)
    assert doc["status"] == "completed", doc
    after = paid_counts(sandbox)
    bought_again = {k: n - before[k] for k, n in after.items() if n > before[k] and before[k] > 0}
    assert bought_again == {}  # skip traces and carrier lookups were not bought again
    assert all(k.startswith("dnc ") for k in after if after[k] > before[k])
    assert d.term() == 0


def test_local_dnc_list_and_gatekeeping_options(data: DataDir, daemons: Callable[..., Daemon], sandbox: Sandbox,
                                                tmp_path: Path) -> None:
    use(data, sandbox)
    people = [{"name": f"Person {i}", "phone": f"512-555-01{i:02d}"} for i in range(30)]
    listed = tmp_path / "dnc.txt"
    listed.write_text("5125550100\n1-512-555-0101\n")
    d = daemons()
    data.drop("e.json", {"type": "enrich", "id": "gate", "leads": people,
                         "options": {"dnc_list": str(listed), "allowed_line_types": ["mobile", "voip"],
                                     "blocked_carriers": ["TextNow"]}})
    doc = data.wait_status("gate", timeout=60)
    by_phone = {r["phone"]: r for r in results(data, "gate")}
    assert by_phone["+15125550100"]["drop_reason"] == "dnc" and by_phone["+15125550101"]["dnc_status"] == "DNC"
    reasons = Counter((r["drop_reason"] or "").split(":")[0] for r in by_phone.values())
    assert sum(reasons.values()) == 30 and doc["status"] == "completed"
    assert all(r["carrier"] is None or "textnow" not in r["carrier"].lower() or r["drop_reason"]
               for r in by_phone.values())
    assert d.term() == 0


def test_csv_in_and_out_keeps_the_extra_columns(data: DataDir, daemons: Callable[..., Daemon], sandbox: Sandbox,
                                                tmp_path: Path) -> None:
    use(data, sandbox)
    source = tmp_path / "leads.csv"
    with open(source, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["First Name", "Last Name", "City", "State", "Phone", "Campaign", "Notes, free text"])
        for i, lead in enumerate(make_leads(12)):
            w.writerow([lead["first_name"], lead["last_name"], lead["city"], lead["state"], lead.get("phone", ""),
                        f"Q{i}", f'said "call me", twice — ok {i}'])
    d = daemons()
    out = data.cli("enrich", str(source), "--id", "fromcsv")
    assert out.returncode == 0 and out.stdout.strip() == "fromcsv", out.stderr
    assert data.wait_status("fromcsv", timeout=60)["status"] == "completed"
    exported = data.cli("results", "fromcsv", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == 12
    for row in rows:
        i = int(row["row"]) - 1
        assert row["Campaign"] == f"Q{i}" and row["Notes, free text"] == f'said "call me", twice — ok {i}'
    assert d.term() == 0


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty"),
    (b"Colour,Shape\nred,round\n", "header"),
    ("First Name,Last Name\nJos\u00e9,Ruiz\n".encode("latin-1"), "UTF-8"),
    (b"Name,Phone\n" + b"".join(b"P %d,512555%04d\n" % (i, i) for i in range(10_001)), "10,000"),
])
def test_csv_that_cannot_be_understood_gets_a_clear_error(data: DataDir, tmp_path: Path, content: bytes,
                                                           message: str) -> None:
    source = tmp_path / "bad.csv"
    source.write_bytes(content)
    out = data.cli("enrich", str(source))
    assert out.returncode == 65, out.stdout + out.stderr
    assert message.lower() in out.stderr.lower(), out.stderr
    assert not [p for p in data.queue.iterdir() if p.is_file()]  # nothing was submitted


def test_enrich_the_leads_of_a_scrape_job(data: DataDir, daemons: Callable[..., Daemon], sandbox: Sandbox) -> None:
    use(data, sandbox, JOBRUNNER_LINKEDIN_RATE="1000/1")
    d = daemons()
    data.drop("s.json", {"type": "scrape", "id": "found", "search": {"keywords": "founder", "location": "Austin"},
                         "max_pages": 2})
    scraped = data.wait_status("found", timeout=60)
    out = data.cli("enrich", "--from-job", "found", "--id", "enriched", "--options", '{"max_age": 70}')
    assert out.returncode == 0, out.stderr
    doc = data.wait_status("enriched", timeout=120)
    assert doc["status"] == "completed" and doc["result"]["leads"] == scraped["result"]["leads"], doc
    rows = results(data, "enriched")
    assert all(r["linkedin_url"].startswith("https://www.linkedin.com/") for r in rows)
    assert any(r["drop_reason"] is None for r in rows)
    assert d.term() == 0


def test_a_bad_key_fails_the_job_at_once(data: DataDir, daemons: Callable[..., Daemon], sandbox: Sandbox) -> None:
    use(data, sandbox, JOBRUNNER_SKIPTRACE_KEY="wrong")
    d = daemons()
    data.drop("e.json", {"type": "enrich", "id": "badkey", "leads": make_leads(30, with_phone_every=0)})
    doc = data.wait_status("badkey", ("failed",), timeout=60)
    assert doc["error"]["type"] == "ProviderRejected" and "JOBRUNNER_SKIPTRACE_KEY" in doc["error"]["message"]
    assert [h["outcome"] for h in doc["history"]] == ["failed"]
    assert sandbox.stats()["calls"].get("skiptrace GET /search/bynameaddress", 0) <= 16  # stopped at once
    assert d.term() == 0


def test_no_paid_call_of_an_attempt_outlives_it(data: DataDir, daemons: Callable[..., Daemon],
                                               sandbox: Sandbox) -> None:
    """A skip trace throttled (Retry-After over what a call may sleep) ends the attempt while carrier lookups
    of other leads are still in flight. Those answers are being bought: they are stored by this attempt, not
    left running beside the next one (which would buy them again, in another daemon maybe)."""
    sandbox.set_faults(Faults(latency_ms=1500), provider="carrier")
    sandbox.set_faults(Faults(status_override=429), provider="skiptrace")  # Retry-After: 1
    use(data, sandbox, JOBRUNNER_CALL_MAX_WAIT_S="0.5")
    d = daemons()
    leads = make_leads(8, with_phone_every=2)  # 4 with a phone (a slow carrier lookup), 4 to skip-trace
    data.drop("e.json", {"type": "enrich", "id": "overlap", "leads": leads, "options": {"dnc": False}})
    wait_for(lambda: any(h["outcome"] == "throttled" for h in (data.status("overlap") or {}).get("history", [])),
             30, "the attempt to be throttled")
    sandbox.set_faults(Faults(), provider="skiptrace")
    doc = data.wait_status("overlap", timeout=60)
    assert doc["status"] == "completed", doc
    stored = [r["key"] for r in checkpoint.records(Layout(data.root), "overlap")]
    assert len(stored) == len(set(stored)), "a step was stored twice"
    carrier_counts = {k: n for k, n in paid_counts(sandbox).items() if k.startswith("carrier ")}
    assert carrier_counts and set(carrier_counts.values()) == {1}, carrier_counts
    assert d.term() == 0


def test_an_attempt_that_times_out_stops_its_paid_calls(data: DataDir, daemons: Callable[..., Daemon],
                                                        sandbox: Sandbox) -> None:
    """timeout_s cancels the attempt from outside: its calls in flight are cancelled with it, and nothing is
    stored for the job after its attempts have ended."""
    sandbox.set_faults(Faults(latency_ms=1500), provider="carrier")
    use(data, sandbox)
    d = daemons()
    data.drop("e.json", {"type": "enrich", "id": "late", "leads": make_leads(4, with_phone_every=1),
                         "options": {"dnc": False}, "timeout_s": 0.4, "max_attempts": 2})
    doc = data.wait_status("late", ("failed",), timeout=30)
    assert [h["outcome"] for h in doc["history"]] == ["retry", "failed"], doc["history"]
    time.sleep(2.0)  # longer than a carrier answer takes
    assert list(checkpoint.records(Layout(data.root), "late")) == []
    assert d.term() == 0


def test_calls_that_fail_as_the_attempt_ends_are_all_collected(data: DataDir, daemons: Callable[..., Daemon],
                                                               sandbox: Sandbox) -> None:
    """Every skip trace throttled at once: the calls that end while the leads are being cancelled are
    collected too, not left for asyncio to log as "Task exception was never retrieved"."""
    sandbox.set_faults(Faults(status_override=429, latency_ms=5), provider="skiptrace")
    use(data, sandbox, JOBRUNNER_CALL_MAX_WAIT_S="0.5")
    d = daemons()
    data.drop("e.json", {"type": "enrich", "id": "crowd", "leads": make_leads(48, with_phone_every=0)})
    wait_for(lambda: any(h["outcome"] == "throttled" for h in (data.status("crowd") or {}).get("history", [])),
             30, "the attempt to be throttled")
    sandbox.set_faults(Faults(), provider="skiptrace")
    assert data.wait_status("crowd", timeout=60)["status"] == "completed"
    assert "never retrieved" not in d.output()
    assert d.term() == 0
    assert "never retrieved" not in d.output()
