"""`jobrunner stats`, the filters of `jobrunner status`, and the ledger they read (jobs/.ledger), through the
real daemon and CLI. Every --json output is checked against its schema here (the documented contract)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
from conftest import Daemon, DataDir, run_burst, wait_for

from jobrunner.sandbox import Sandbox

NUM = {"type": ["number", "null"], "minimum": 0}
SPREAD = {"type": "object", "required": ["p50", "p95", "max", "count"], "additionalProperties": False,
          "properties": {"p50": NUM, "p95": NUM, "max": NUM, "count": {"type": "integer", "minimum": 0}}}
COUNT = {"type": "integer", "minimum": 0}
RATE = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
ISO = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"}

STATS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "jobrunner stats --json",
    "type": "object",
    "required": ["generated_at", "window", "source", "finished", "rates", "retries", "duration_s", "queue_wait_s",
                 "errors", "by_type", "queue"],
    "additionalProperties": False,
    "properties": {
        "generated_at": ISO,
        "window": {"type": "object", "required": ["since", "seconds", "type"], "additionalProperties": False,
                   "properties": {"since": {"anyOf": [ISO, {"type": "null"}]}, "seconds": NUM,
                                  "type": {"type": ["string", "null"]}}},
        "source": {"enum": ["ledger", "status files"]},
        "finished": {"type": "object", "required": ["total", "completed", "failed", "cancelled"],
                     "additionalProperties": False,
                     "properties": {k: COUNT for k in ("total", "completed", "failed", "cancelled")}},
        "rates": {"type": "object", "required": ["completed", "failed", "cancelled"], "additionalProperties": False,
                  "properties": {k: RATE for k in ("completed", "failed", "cancelled")}},
        "retries": {"type": "object", "required": ["jobs_retried", "extra_attempts"], "additionalProperties": False,
                    "properties": {"jobs_retried": COUNT, "extra_attempts": COUNT}},
        "duration_s": SPREAD,
        "queue_wait_s": SPREAD,
        "errors": {"type": "object", "additionalProperties": COUNT},
        "by_type": {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": False,
            "required": ["jobs", "completed", "failed", "cancelled", "success_rate", "duration_s", "leads",
                         "leads_per_job"],
            "properties": {"jobs": COUNT, "completed": COUNT, "failed": COUNT, "cancelled": COUNT,
                           "success_rate": RATE, "duration_s": SPREAD, "leads": {"type": ["integer", "null"]},
                           "leads_per_job": NUM}}},
        "queue": {"type": "object", "additionalProperties": False,
                  "required": ["depth", "queued", "deferred", "active", "running", "pending", "oldest_pending_age_s",
                               "oldest_pending_id"],
                  "properties": {"depth": COUNT, "queued": COUNT, "deferred": COUNT, "active": COUNT, "running": COUNT,
                                 "pending": COUNT, "oldest_pending_age_s": NUM,
                                 "oldest_pending_id": {"type": ["string", "null"]}}},
    },
}

JOB = {"type": "object", "required": ["id", "type", "status", "progress", "attempt", "max_attempts", "created_at",
                                      "updated_at", "error"],
       "properties": {"id": {"type": "string"}, "type": {"type": "string"},
                      "status": {"enum": ["pending", "running", "completed", "failed", "cancelled"]}}}
STATUS_LIST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "jobrunner status --json (a list)",
    "type": "object", "required": ["jobs", "count"], "additionalProperties": False,
    "properties": {"jobs": {"type": "array", "items": JOB}, "count": COUNT, "queued": COUNT},
}


def stats(data: DataDir, *args: str) -> dict[str, Any]:
    out = data.cli("stats", "--json", *args)
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    jsonschema.validate(doc, STATS_SCHEMA)
    return doc


def listed(data: DataDir, *args: str) -> list[dict[str, Any]]:
    out = data.cli("status", "--json", *args)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    jsonschema.validate(doc, STATUS_LIST_SCHEMA)
    assert doc["count"] == len(doc["jobs"])
    return doc["jobs"]  # type: ignore[no-any-return]


def later(hours: float = 1) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def test_stats_and_filters_over_a_mix_of_outcomes(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    d = daemons()
    for i in range(3):
        data.drop(f"n{i}.json", {"type": "noop", "id": f"ok-{i}"})
    data.drop("r.json", {"type": "flaky", "id": "second-time", "fail_times": 1})
    data.drop("p.json", {"type": "flaky", "id": "refused", "permanent": True})
    data.drop("c.json", {"type": "noop", "id": "to-cancel", "not_before": later()})
    data.drop("w.json", {"type": "noop", "id": "waiting", "not_before": later(2)})
    data.drop("l.json", {"type": "noop", "id": "long", "steps": 600, "step_seconds": 0.1})
    for job_id in ("ok-0", "ok-1", "ok-2", "second-time"):
        data.wait_status(job_id)
    data.wait_status("refused", ("failed",))
    data.wait_status("to-cancel", ("pending",))
    data.wait_status("waiting", ("pending",))
    data.wait_status("long", ("running",))
    assert data.cli("cancel", "to-cancel").returncode == 0  # the CLI finalises this one, not the daemon
    wait_for(lambda: stats(data)["finished"]["total"] == 6, 10, "six finished jobs in the stats")

    doc = stats(data)
    assert doc["source"] == "ledger" and doc["window"]["seconds"] == 86400
    assert doc["finished"] == {"total": 6, "completed": 4, "failed": 1, "cancelled": 1}
    assert doc["rates"] == {"completed": round(4 / 6, 4), "failed": round(1 / 6, 4), "cancelled": round(1 / 6, 4)}
    assert doc["retries"] == {"jobs_retried": 1, "extra_attempts": 1}
    assert doc["errors"] == {"PermanentError": 1, "Cancelled": 1}
    assert doc["duration_s"]["count"] == 5  # the job cancelled while it waited never started
    assert doc["queue_wait_s"]["count"] == 5 and doc["queue_wait_s"]["p95"] < 30
    assert set(doc["by_type"]) == {"noop", "flaky"}
    assert doc["by_type"]["noop"]["jobs"] == 4 and doc["by_type"]["noop"]["cancelled"] == 1
    assert doc["by_type"]["flaky"] == {**doc["by_type"]["flaky"], "jobs": 2, "completed": 1, "failed": 1,
                                       "success_rate": 0.5, "leads": None}
    q = doc["queue"]
    assert (q["depth"], q["queued"], q["deferred"], q["active"], q["running"], q["pending"]) == (2, 0, 1, 1, 1, 1)
    assert q["oldest_pending_id"] == "waiting" and q["oldest_pending_age_s"] >= 0

    assert stats(data, "--type", "flaky")["finished"] == {"total": 2, "completed": 1, "failed": 1, "cancelled": 0}
    assert stats(data, "--since", "all")["window"] == {"since": None, "seconds": None, "type": None}
    text = data.cli("stats")
    assert text.returncode == 0
    assert "jobs finished in the last 24h" in text.stdout and "  failed            1   16.7%" in text.stdout
    assert "oldest pending:" in text.stdout and "(job waiting)" in text.stdout
    assert any(line.split()[:3] == ["flaky", "2", "1"] for line in text.stdout.splitlines()), text.stdout

    # status filters: the same jobs, each read from its status file
    assert [j["id"] for j in listed(data, "--status", "failed")] == ["refused"]
    done = listed(data, "--status", "completed,cancelled", "--type", "noop")
    assert sorted(j["id"] for j in done) == ["ok-0", "ok-1", "ok-2", "to-cancel"]
    assert all(j["type"] == "noop" for j in done)
    assert [j["id"] for j in listed(data, "--status", "running")] == ["long"]
    assert [j["id"] for j in listed(data, "--status", "pending", "--type", "noop")] == ["waiting"]
    two = listed(data, "--status", "completed", "--limit", "2")
    assert len(two) == 2 and two[0]["updated_at"] >= two[1]["updated_at"]
    assert {j["id"] for j in listed(data, "--type", "flaky")} == {"second-time", "refused"}
    table = data.cli("status", "--status", "failed")
    assert table.returncode == 0 and "refused" in table.stdout and "PermanentError" in table.stdout

    # --since counts from now: nothing finished in the last second, then one job does
    time.sleep(1.5)
    assert stats(data, "--since", "1s")["finished"]["total"] == 0
    assert {j["id"] for j in listed(data, "--since", "1s")} == {"long", "waiting"}  # the active ones stay
    gap_ends = time.monotonic()  # the others finished 1.5 s or more before this
    data.drop("x.json", {"type": "noop", "id": "just-now"})
    data.wait_status("just-now")
    wait_for(lambda: stats(data)["finished"]["total"] == 7, 10, "the new job in the ledger")
    window = f"{time.monotonic() - gap_ends + 0.5:.2f}s"
    assert stats(data, "--since", window)["finished"]["total"] == 1
    assert [j["id"] for j in listed(data, "--since", window, "--status", "completed")] == ["just-now"]
    assert d.term() == 0


def test_bad_options_are_usage_errors(data: DataDir) -> None:
    for args in (["stats", "--since", "yesterday"], ["stats", "--since", "0h"], ["status", "--status", "done"],
                 ["status", "--since", "5"], ["status", "--active", "--status", "failed"],
                 ["status", "some-id", "--status", "failed"]):
        out = data.cli(*args)
        assert out.returncode == 2, (args, out)
        assert "Traceback" not in out.stderr
    missing = DataDir(data.root.parent / "nothing-here", data.testkit)
    for d in (missing.queue, missing.jobs):
        d.rmdir()
    assert missing.cli("stats").returncode == 78  # not a data dir: a configuration error


def test_what_waits_in_the_queue_and_since_when(data: DataDir) -> None:
    for i in range(3):
        data.drop(f"q{i}.json", {"type": "noop"})
    time.sleep(1.1)
    q = stats(data)["queue"]
    assert (q["depth"], q["queued"], q["pending"], q["running"]) == (3, 3, 3, 0)
    assert q["oldest_pending_age_s"] >= 1.0 and q["oldest_pending_id"] is None  # a file: no id yet
    assert stats(data)["finished"]["total"] == 0
    assert run_burst(data).returncode == 0
    doc = stats(data)
    assert doc["finished"]["completed"] == 3 and doc["queue"]["depth"] == 0
    assert doc["queue"]["oldest_pending_age_s"] is None


def test_the_ledger_is_a_hint_that_survives_torn_lines_retries_forgetting_and_absence(data: DataDir) -> None:
    from jobrunner import ledger
    from jobrunner.layout import Layout

    data.drop("a.json", {"type": "noop", "id": "a"})
    data.drop("b.json", {"type": "flaky", "id": "b", "fail_times": 1, "max_attempts": 1})
    assert run_burst(data).returncode == 0
    path = data.jobs / ".ledger"
    lines = [line for line in path.read_text().split("\n") if line]
    assert len(lines) == 2 and all(len(line.split("\t")) == 13 for line in lines)
    a = next(line.split("\t") for line in lines if "\ta\t" in line)
    assert a[0] == "1" and a[2:5] == ["a", "noop", "completed"] and a[-1] == "."
    finished = datetime.fromisoformat(data.status("a")["finished_at"])  # type: ignore[index]
    assert abs((datetime.fromisoformat(a[1]) - finished).total_seconds()) < 0.001  # milliseconds in the ledger
    with open(path, "ab") as f:  # what a crash in the middle of an append leaves
        f.write(b"\n1\t2026-12-03T10:00:00.000Z\ttorn\tnoop\tcomp")
    data.drop("c.json", {"type": "noop", "id": "c"})
    assert run_burst(data).returncode == 0
    assert stats(data)["finished"] == {"total": 3, "completed": 2, "failed": 1, "cancelled": 0}

    # a failed job run again by hand is no longer counted as failed; once it completes, it counts once
    assert data.cli("retry", "b").returncode == 0
    assert stats(data)["finished"] == {"total": 2, "completed": 2, "failed": 0, "cancelled": 0}
    assert listed(data, "--status", "failed") == []
    assert run_burst(data).returncode == 0
    assert data.status("b")["status"] == "completed"  # type: ignore[index]
    assert stats(data)["finished"] == {"total": 3, "completed": 3, "failed": 0, "cancelled": 0}

    # what `jobrunner prune` calls: the lines of the given jobs go, the others stay
    assert ledger.forget(Layout(data.root), ["a", "nope"]) == 1
    assert stats(data)["finished"]["total"] == 2
    assert "torn" in path.read_text()  # a torn line is left as it was (and still skipped)
    assert ledger.forget(Layout(data.root), []) == 0

    # no ledger (a data dir from before it): the same numbers, the slow way, from the status files
    path.unlink()
    doc = stats(data)
    assert doc["source"] == "status files" and doc["finished"]["total"] == 3
    assert [j["id"] for j in listed(data, "--status", "completed", "--type", "flaky")] == ["b"]


def test_a_job_failed_by_recovery_is_in_the_ledger(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    first = daemons()
    data.drop("k.json", {"type": "crash", "id": "killer", "max_attempts": 1})
    assert first.wait(30) == -signal.SIGKILL
    daemons()  # recovery counts the interrupted attempt: it was the last one
    data.wait_status("killer", ("failed",))
    wait_for(lambda: stats(data)["errors"] == {"Interrupted": 1}, 10, "the failure in the stats")
    assert [j["id"] for j in listed(data, "--status", "failed", "--type", "crash")] == ["killer"]


def test_leads_per_job_type(data: DataDir, sandbox: Sandbox) -> None:
    env = {**sandbox.env(), "JOBRUNNER_LINKEDIN_RATE": "1000/1"}
    for job_id, pages in (("two-pages", 2), ("one-page", 1)):
        data.drop(f"{job_id}.json", {"type": "scrape", "id": job_id, "max_pages": pages, "max_results": 10_000,
                                     "search": {"title_keywords": "Head of Growth", "location": "Denver"}})
    assert run_burst(data, env=env).returncode == 0
    leads = [data.status(j)["result"]["leads"] for j in ("two-pages", "one-page")]  # type: ignore[index]
    assert all(n > 0 for n in leads)
    scrape = stats(data)["by_type"]["scrape"]
    assert scrape["jobs"] == 2 and scrape["leads"] == sum(leads)
    assert scrape["leads_per_job"] == round(sum(leads) / 2, 2)
    text = data.cli("stats", "--type", "scrape").stdout
    assert "scrape jobs finished" in text and f"{sum(leads):,}" in text
