"""The HTTP API of `jobrunner serve`, through real HTTP against the real server process, with real daemons
running the jobs: every route, the old platform's request and response shapes, and every error status.

The server and the daemon never talk: a job submitted over HTTP is a file in the spool, and everything
the API answers comes from the files the daemon writes. Tests check both sides.
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import JOBRUNNER, Daemon, DataDir, WebServer, wait_for
from test_scrape import provider_env

from jobrunner.layout import Layout
from jobrunner.sandbox import Sandbox

OLD_JOB_KEYS = {"jobId", "type", "status", "progress", "startedAt", "completedAt", "error", "metadata"}
TOKEN = "tok-" + secrets.token_urlsafe(24)


@pytest.fixture
def web(web_servers: Callable[..., WebServer]) -> WebServer:
    return web_servers()


@pytest.fixture
def http(web: WebServer) -> Iterator[httpx.Client]:
    with web.client() as client:
        yield client


def queued_requests(data: DataDir) -> list[dict[str, Any]]:
    return [json.loads(p.read_bytes()) for p in sorted(data.queue.glob("*.json"))]


def assert_failure(answer: httpx.Response, status: int, words: str = "") -> str:
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    body = answer.json()
    assert body["success"] is False and isinstance(body["error"], str) and body["error"], body
    assert words.lower() in body["error"].lower(), body["error"]
    return str(body["error"])


# --------------------------------------------------------------------------------------------- submitting
def test_old_scrape_form_becomes_a_spool_file_and_its_job_is_pending_in_the_old_shape(
        data: DataDir, http: httpx.Client) -> None:
    body = {"searchParams": {"titleKeywords": "Head of Growth", "location": "Denver", "companyHeadcountMin": 11},
            "maxPages": 3, "maxResults": 60, "metadata": {"campaign": "q4"}}
    answer = http.post("/api/jobs/scrape", json=body)

    assert answer.status_code == 202, answer.text
    out = answer.json()
    assert out["success"] is True and set(out) == {"success", "jobId"}
    [request] = queued_requests(data)  # exactly one file, as a client's drop
    assert request == {"type": "scrape", "search": {"title_keywords": "Head of Growth", "location": "Denver",
                                                    "company_headcount_min": 11},
                       "max_pages": 3, "max_results": 60, "metadata": {"campaign": "q4"}}
    job = http.get("/api/jobs/status", params={"jobId": out["jobId"]}).json()
    assert job["success"] is True and set(job["job"]) == OLD_JOB_KEYS
    assert job["job"] | {"progress": None} == {"jobId": out["jobId"], "type": "scraping", "status": "pending",
                                               "progress": None, "startedAt": None, "completedAt": None,
                                               "error": None, "metadata": {"campaign": "q4"}}


def test_native_scrape_form_and_any_type_on_api_jobs(data: DataDir, http: httpx.Client) -> None:
    native = {"search": {"url": "https://www.linkedin.com/sales/search/people?query=x"}, "max_pages": 2,
              "id": "native-1", "priority": 5}
    assert http.post("/api/jobs/scrape", json=native).json() == {"success": True, "jobId": "native-1"}
    assert http.post("/api/jobs", json={"type": "noop", "id": "any-1"}).status_code == 202
    by_id = {r["id"]: r for r in queued_requests(data)}
    assert by_id["native-1"] == {**native, "type": "scrape"}
    assert by_id["any-1"] == {"type": "noop", "id": "any-1"}


@pytest.mark.parametrize(("route", "body", "words"), [
    ("/api/jobs/scrape", {"maxPages": 2}, "give searchParams"),
    ("/api/jobs/scrape", {"searchParams": {"shoeSize": 9}}, "searchParams.shoeSize: unknown search parameter"),
    ("/api/jobs/scrape", {"searchParams": "cto"}, "searchParams must be an object"),
    ("/api/jobs/scrape", {"searchParams": {"keywords": "cto"}, "maxPages": 500}, "max_pages"),
    ("/api/jobs/scrape", {"searchParams": {"keywords": "cto"}, "pages": 5}, "unknown field(s) 'pages'"),
    ("/api/jobs/scrape", {"searchParams": {}}, "a search needs url or at least one parameter"),
    ("/api/jobs/scrape", {"type": "enrich", "search": {"keywords": "x"}}, "this route submits scrape jobs"),
    ("/api/jobs/enrich", {"parsedData": {"headers": ["Colour"], "rows": [["red"]]}}, "none of the headers"),
    ("/api/jobs/enrich", {"parsedData": {"headers": ["Name"]}}, "parsedData must be"),
    ("/api/jobs/enrich", {"parsedData": {"headers": ["Name"], "rows": []}}, "no rows"),
    ("/api/jobs/enrich", {"leads": []}, "leads"),
    ("/api/jobs/enrich", {"nothing": 1}, "give leads"),
    ("/api/jobs/enrich", {"leads": [{"name": "Ada Lovelace"}], "options": {"dnc_list": "/etc/passwd"}},
     "takes no file paths"),
    ("/api/jobs", {"type": "teleport"}, "unknown type"),
    ("/api/jobs", {"type": "noop", "id": "../../etc/passwd"}, "invalid id"),
    ("/api/jobs", [1, 2], "must be a JSON object"),
])
def test_a_request_that_cannot_run_is_400_naming_what_to_fix_and_writes_nothing(
        data: DataDir, http: httpx.Client, route: str, body: Any, words: str) -> None:
    assert_failure(http.post(route, json=body), 400, words)
    assert queued_requests(data) == []


def test_bodies_that_are_not_json_are_415_or_400(data: DataDir, http: httpx.Client) -> None:
    assert_failure(http.post("/api/jobs/scrape", content=b"searchParams=x",
                             headers={"content-type": "application/x-www-form-urlencoded"}), 415, "JSON")
    assert_failure(http.post("/api/jobs", content=b"{nope", headers={"content-type": "application/json"}), 400,
                   "invalid JSON at line 1")
    deep = b"[" * 40 + b"]" * 40
    assert_failure(http.post("/api/jobs", content=deep, headers={"content-type": "application/json"}), 400,
                   "nested more than 32")
    assert queued_requests(data) == []


def test_enrich_takes_leads_parsed_data_a_csv_upload_and_a_csv_body(data: DataDir, http: httpx.Client) -> None:
    leads = [{"name": "Ada Lovelace", "phone": "512-555-0142", "crm_id": "A1"}]
    assert http.post("/api/jobs/enrich", json={"leads": leads, "id": "e-native"}).status_code == 202
    parsed = {"headers": ["First Name", "Last Name", "Phone", "CRM Id"],
              "rows": [["Ada", "Lovelace", "5125550142", "A1"], {"First Name": "Alan", "Last Name": "Turing",
                                                                 "Phone": 5125550143, "CRM Id": "A2"}]}
    assert http.post("/api/jobs/enrich", json={"parsedData": parsed, "id": "e-old",
                                               "metadata": {"from": "web"}}).status_code == 202
    text = "Name,Email,Zip\nGrace Hopper,grace@example.com,02134\n"
    upload = http.post("/api/jobs/enrich", files={"file": ("leads.csv", text.encode(), "text/csv")},
                       data={"id": "e-upload", "options": json.dumps({"dnc": False})})
    assert upload.status_code == 202, upload.text
    raw = http.post("/api/jobs/enrich", content=text.encode(), headers={"content-type": "text/csv"})
    assert raw.status_code == 202, raw.text
    by_id = {r.get("id", "raw"): r for r in queued_requests(data)}
    assert by_id["e-native"] == {"type": "enrich", "leads": leads, "id": "e-native"}
    assert by_id["e-old"] == {"type": "enrich", "id": "e-old", "metadata": {"from": "web"}, "leads": [
        {"first_name": "Ada", "last_name": "Lovelace", "phone": "5125550142", "CRM Id": "A1"},
        {"first_name": "Alan", "last_name": "Turing", "phone": "5125550143", "CRM Id": "A2"}]}
    assert by_id["e-upload"] == {"type": "enrich", "id": "e-upload", "options": {"dnc": False},
                                 "leads": [{"name": "Grace Hopper", "email": "grace@example.com", "zip": "02134"}]}
    assert by_id["raw"]["leads"] == by_id["e-upload"]["leads"]
    bad = http.post("/api/jobs/enrich", files={"file": ("x.csv", b"Name\n\xff\xfe\n", "text/csv")})
    assert_failure(bad, 400, "not UTF-8")
    assert_failure(http.post("/api/jobs/enrich", files={"other": ("x.csv", b"Name\nA B\n", "text/csv")}), 400,
                   "form field 'file'")


def test_a_second_submit_with_an_existing_id_is_409(data: DataDir, http: httpx.Client,
                                                     daemons: Callable[..., Daemon]) -> None:
    assert http.post("/api/jobs", json={"type": "noop", "id": "twice"}).status_code == 202
    assert_failure(http.post("/api/jobs", json={"type": "noop", "id": "twice"}), 409, "exists already")  # queued
    daemons()
    data.wait_status("twice")
    assert_failure(http.post("/api/jobs", json={"type": "noop", "id": "twice"}), 409, "exists already")  # done
    assert len(queued_requests(data)) == 0


# --------------------------------------------------------------------------------------------- status (old shapes)
def test_status_in_the_old_shapes_with_a_daemon_running_the_jobs(
        data: DataDir, http: httpx.Client, daemons: Callable[..., Daemon]) -> None:
    daemons()
    done = http.post("/api/jobs", json={"type": "noop", "id": "quick", "steps": 2, "metadata": {"k": 1}}).json()
    long = http.post("/api/jobs", json={"type": "count", "id": "long", "steps": 400, "step_seconds": 0.05}).json()
    assert done["jobId"] == "quick" and long["jobId"] == "long"
    data.wait_status("quick")
    data.wait_status("long", ("running",))

    job = http.get("/api/jobs/status", params={"jobId": "quick"}).json()["job"]
    status = data.status("quick")
    assert status is not None
    assert job == {"jobId": "quick", "type": "noop", "status": "completed",
                   "progress": {"current": 2, "total": 2, "percentage": 100.0},
                   "startedAt": status["started_at"], "completedAt": status["finished_at"], "error": None,
                   "metadata": {"k": 1}}
    active = http.get("/api/jobs/status", params={"activeOnly": "true"}).json()
    assert active["success"] is True and active["count"] == 1 == len(active["jobs"])
    assert active["jobs"][0]["jobId"] == "long" and active["jobs"][0]["status"] == "running"
    assert set(active["jobs"][0]) == OLD_JOB_KEYS
    latest = http.get("/api/jobs/status", params={"limit": "1"}).json()
    assert latest["count"] == 1 and latest["jobs"][0]["jobId"] in ("quick", "long")
    both = http.get("/api/jobs/status").json()
    assert {j["jobId"] for j in both["jobs"]} == {"quick", "long"} and both["count"] == 2
    assert http.get("/api/jobs/status", params={"activeOnly": "false"}).json()["count"] == 2


def test_old_status_shows_an_enrich_job_as_enrichment_and_a_failure_as_its_message(
        data: DataDir, http: httpx.Client, daemons: Callable[..., Daemon]) -> None:
    daemons()
    http.post("/api/jobs/enrich", json={"leads": [{"name": "Ada Lovelace"}], "id": "nokeys"})
    http.post("/api/jobs", json={"type": "flaky", "id": "bad", "permanent": True})
    data.wait_status("nokeys", ("failed",))
    data.wait_status("bad", ("failed",))
    enrich = http.get("/api/jobs/status", params={"jobId": "nokeys"}).json()["job"]
    assert enrich["type"] == "enrichment" and enrich["status"] == "failed"
    assert "JOBRUNNER_" in enrich["error"]  # names the variable to set, never a key's value
    flaky = http.get("/api/jobs/status", params={"jobId": "bad"}).json()["job"]
    assert flaky["error"] == "the provider said no (401: bad credentials)"


@pytest.mark.parametrize(("params", "status", "words"), [
    ({"limit": "abc"}, 400, "limit must be a whole number from 1 to 1000"),
    ({"limit": "NaN"}, 400, "limit must be"),
    ({"limit": "-1"}, 400, "limit must be"),
    ({"limit": "0"}, 400, "limit must be"),
    ({"limit": "1.5"}, 400, "limit must be"),
    ({"limit": "1001"}, 400, "limit must be"),
    ({"limit": " "}, 400, "limit must be"),
    ({"activeOnly": "maybe"}, 400, "activeOnly must be true or false"),
    ({"jobId": "../../etc/passwd"}, 400, "invalid id"),
    ({"jobId": ".hidden"}, 400, "invalid id"),
    ({"jobId": "x" * 200}, 400, "invalid id"),
    ({"jobId": "a", "activeOnly": "true"}, 400, "cannot be combined"),
    ({"jobId": "never-was"}, 404, "no job 'never-was'"),
])
def test_status_errors(http: httpx.Client, params: dict[str, str], status: int, words: str) -> None:
    assert_failure(http.get("/api/jobs/status", params=params), status, words)


# --------------------------------------------------------------------------------------------- native reads
def test_native_list_and_job_are_the_status_files_as_the_cli_shows_them(
        data: DataDir, http: httpx.Client, daemons: Callable[..., Daemon]) -> None:
    daemons()
    for i in range(3):
        http.post("/api/jobs", json={"type": "noop", "id": f"n-{i}"})
    http.post("/api/jobs", json={"type": "flaky", "id": "f-1", "permanent": True})
    for job_id in ("n-0", "n-1", "n-2"):
        data.wait_status(job_id)
    data.wait_status("f-1", ("failed",))

    assert http.get("/api/jobs/n-1").json() == data.status("n-1")
    cli = json.loads(data.cli("status", "--json").stdout)
    listed = http.get("/api/jobs").json()
    assert listed == cli
    failed = http.get("/api/jobs", params={"status": "failed"}).json()
    assert [d["id"] for d in failed["jobs"]] == ["f-1"]
    assert json.loads(data.cli("status", "--status", "failed", "--json").stdout) == failed
    noop = http.get("/api/jobs", params={"type": "noop", "since": "1h"}).json()
    assert sorted(d["id"] for d in noop["jobs"]) == ["n-0", "n-1", "n-2"]
    assert [d["id"] for d in http.get("/api/jobs", params={"q": "n-2"}).json()["jobs"]] == ["n-2"]
    assert sorted(d["id"] for d in http.get("/api/jobs", params={"q": "-"}).json()["jobs"]) == \
        ["f-1", "n-0", "n-1", "n-2"]
    assert http.get("/api/jobs", params={"q": "zzz"}).json() == {"jobs": [], "count": 0}
    assert http.get("/api/jobs", params={"limit": "2"}).json()["count"] == 2
    assert_failure(http.get("/api/jobs", params={"status": "done"}), 400, "states are")
    assert_failure(http.get("/api/jobs", params={"since": "yesterday"}), 400, "not a time window")
    assert_failure(http.get("/api/jobs", params={"q": "a/b"}), 400, "search by id")
    assert_failure(http.get("/api/jobs", params={"type": "no such/type"}), 400, "not a job type")
    assert_failure(http.get("/api/jobs", params={"active": "true", "status": "failed"}), 400, "give one of them")
    assert_failure(http.get("/api/jobs/nope"), 404, "no job 'nope'")
    assert http.get("/api/jobs/..").status_code == 404  # the client normalises it away: no such route
    assert_failure(http.get("/api/jobs/%2E%2E"), 400, "invalid id")
    assert_failure(http.get("/api/jobs/a%2Fb"), 404)  # a slash is not an id character: no such route


# --------------------------------------------------------------------------------------------- cancel, retry
def test_cancel_a_running_a_waiting_and_a_finished_job(
        data: DataDir, http: httpx.Client, daemons: Callable[..., Daemon]) -> None:
    daemons()
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    http.post("/api/jobs", json={"type": "count", "id": "runs", "steps": 400, "step_seconds": 0.05})
    http.post("/api/jobs", json={"type": "noop", "id": "waits", "not_before": later})
    http.post("/api/jobs", json={"type": "noop", "id": "ends"})
    data.wait_status("runs", ("running",))
    data.wait_status("waits", ("pending",))
    data.wait_status("ends")

    running = http.post("/api/jobs/runs/cancel")
    assert running.status_code == 202, running.text
    assert running.json() | {"message": ""} == {"success": True, "jobId": "runs", "status": "cancelling",
                                                "message": ""}
    assert data.wait_status("runs", ("cancelled",))["error"]["type"] == "Cancelled"
    waiting = http.post("/api/jobs/waits/cancel")
    assert (waiting.status_code, waiting.json()) == (200, {"success": True, "jobId": "waits", "status": "cancelled"})
    assert data.status("waits")["status"] == "cancelled"  # type: ignore[index]
    assert_failure(http.post("/api/jobs/ends/cancel"), 409, "already completed")
    assert_failure(http.post("/api/jobs/ghost/cancel"), 404, "no job")
    assert_failure(http.post("/api/jobs/%2E%2E/cancel"), 400, "invalid id")
    assert_failure(http.get("/api/jobs/runs/cancel"), 405, "method not allowed")


def test_cancel_a_job_still_in_the_queue_with_no_daemon_running(data: DataDir, http: httpx.Client) -> None:
    assert http.post("/api/jobs", json={"type": "noop", "id": "never-taken"}).status_code == 202
    assert http.get("/api/jobs/never-taken").json()["queued"] is True
    answer = http.post("/api/jobs/never-taken/cancel")
    assert (answer.status_code, answer.json()["status"]) == (200, "cancelled")
    assert data.status("never-taken")["status"] == "cancelled"  # type: ignore[index]
    assert queued_requests(data) == []
    assert http.get("/api/jobs/status", params={"jobId": "never-taken"}).json()["job"]["status"] == "cancelled"


def test_a_file_dropped_by_another_client_is_found_while_it_waits_in_the_queue(
        data: DataDir, http: httpx.Client) -> None:
    data.drop("from-cron.json", {"type": "noop", "id": "by-hand", "metadata": {"via": "cron"}})
    job = http.get("/api/jobs/status", params={"jobId": "by-hand"}).json()["job"]
    assert (job["status"], job["type"], job["metadata"]) == ("pending", "noop", {"via": "cron"})
    assert_failure(http.get("/api/jobs/status", params={"jobId": "by-foot"}), 404, "no job")


def test_a_spool_the_server_cannot_write_into_is_503(data: DataDir, http: httpx.Client) -> None:
    staging = data.queue / ".tmp"
    staging.mkdir(exist_ok=True)
    staging.rename(data.root / "staging-aside")
    staging.write_text("a file where the staging folder should be")  # refused even to root
    try:
        assert_failure(http.post("/api/jobs", json={"type": "noop"}), 503, "not usable")
    finally:
        staging.unlink()
        (data.root / "staging-aside").rename(staging)
    assert http.post("/api/jobs", json={"type": "noop"}).status_code == 202


def test_retry_a_failed_job_runs_it_again_and_other_states_are_409(
        data: DataDir, http: httpx.Client, daemons: Callable[..., Daemon]) -> None:
    daemons()
    http.post("/api/jobs", json={"type": "flaky", "id": "once", "fail_times": 1, "max_attempts": 1})
    http.post("/api/jobs", json={"type": "noop", "id": "fine"})
    data.wait_status("once", ("failed",))
    data.wait_status("fine")

    answer = http.post("/api/jobs/once/retry")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"success": True, "jobId": "once", "status": "pending", "maxAttempts": 2}
    assert data.wait_status("once")["attempt"] == 2
    assert_failure(http.post("/api/jobs/fine/retry"), 409, "only failed or cancelled jobs can be retried")
    assert_failure(http.post("/api/jobs/ghost/retry"), 404, "no job")
    assert_failure(http.post("/api/jobs/-x/retry"), 400, "invalid id")


# --------------------------------------------------------------------------------------------- results, logs
def test_results_download_as_csv_and_jsonl_and_the_logs_of_a_scrape(
        data: DataDir, http: httpx.Client, daemons: Callable[..., Daemon], sandbox: Sandbox) -> None:
    data.extra_env.update(provider_env(sandbox))
    daemons()
    http.post("/api/jobs/scrape", json={"searchParams": {"titleKeywords": "CTO"}, "maxPages": 2, "maxResults": 40,
                                        "id": "leads"})
    data.wait_status("leads", timeout=60)

    jsonl = http.get("/api/jobs/leads/results", params={"format": "jsonl"})
    assert jsonl.status_code == 200 and jsonl.headers["content-type"] == "application/x-ndjson"
    assert jsonl.headers["content-disposition"] == 'attachment; filename="leads.jsonl"'
    rows = [json.loads(line) for line in jsonl.text.splitlines()]
    assert len(rows) == 40 and jsonl.text == data.cli("results", "leads").stdout
    as_csv = http.get("/api/jobs/leads/results", params={"format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.headers["content-disposition"] == 'attachment; filename="leads.csv"'
    parsed = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(parsed) == 40 and "currentPosition.title" in parsed[0]
    assert as_csv.text == data.cli("results", "leads", "--format", "csv").stdout
    assert http.get("/api/jobs/leads/results").text == jsonl.text  # jsonl by default
    assert_failure(http.get("/api/jobs/leads/results", params={"format": "xml"}), 400, "csv or jsonl")
    http.post("/api/jobs", json={"type": "noop", "id": "none"})
    data.wait_status("none")
    assert_failure(http.get("/api/jobs/none/results"), 404, "has no results")
    assert_failure(http.get("/api/jobs/ghost/results"), 404, "no job")

    # enrich what the scrape found (`jobrunner enrich --from-job`)
    enrich = http.post("/api/jobs/enrich", json={"fromJob": "leads", "id": "enrich-leads", "options": {"dnc": False}})
    assert enrich.status_code == 202, enrich.text
    assert data.wait_status("enrich-leads", ("completed", "failed"))["metadata"] == {"from_job": "leads"}
    kept = Layout(data.root).request("enrich-leads")  # kept for `retry`; moved there after the final status
    request = json.loads(wait_for(lambda: kept.exists() and kept.read_bytes(), 10, "the request in .done/"))
    assert request["options"] == {"dnc": False}
    assert len(request["leads"]) == 40 and request["leads"][0]["linkedin_url"] == rows[0]["navigationUrl"]
    assert_failure(http.post("/api/jobs/enrich", json={"fromJob": "none"}), 404, "no results to enrich")
    assert_failure(http.post("/api/jobs/enrich", json={"fromJob": "ghost"}), 404, "no job")
    assert_failure(http.post("/api/jobs/enrich", json={"fromJob": "../x"}), 400, "fromJob: invalid id")
    assert_failure(http.post("/api/jobs/enrich", json={"fromJob": "leads", "leads": []}), 400, "unknown field(s)")

    logs = http.get("/api/jobs/leads/logs").json()
    cli = [json.loads(line) for line in data.cli("logs", "leads", "--json").stdout.splitlines()]
    assert logs["jobId"] == "leads" and logs["events"] == cli and logs["count"] == len(cli)
    messages = [e["message"] for e in logs["events"]]
    assert any("attempt 1/4 started" in m for m in messages) and messages[-1].startswith("job completed")
    assert http.get("/api/jobs/leads/logs", params={"tail": "2"}).json()["events"] == cli[-2:]
    assert_failure(http.get("/api/jobs/leads/logs", params={"tail": "-3"}), 400, "limit must be")
    assert_failure(http.get("/api/jobs/ghost/logs"), 404, "no job")


# --------------------------------------------------------------------------------------------- stats
def test_stats_and_rates_over_time(data: DataDir, http: httpx.Client, daemons: Callable[..., Daemon]) -> None:
    daemons()
    for i in range(4):
        http.post("/api/jobs", json={"type": "noop", "id": f"ok-{i}"})
    http.post("/api/jobs", json={"type": "flaky", "id": "no", "permanent": True})
    for i in range(4):
        data.wait_status(f"ok-{i}")
    data.wait_status("no", ("failed",))

    doc = http.get("/api/stats").json()
    cli = json.loads(data.cli("stats", "--json").stdout)
    assert set(doc) == set(cli)
    assert doc["finished"] == cli["finished"] == {"total": 5, "completed": 4, "failed": 1, "cancelled": 0}
    assert doc["rates"] == {"completed": 0.8, "failed": 0.2, "cancelled": 0.0}
    assert http.get("/api/stats", params={"type": "flaky"}).json()["finished"]["total"] == 1
    assert http.get("/api/stats", params={"since": "all"}).json()["window"]["seconds"] is None
    over = http.get("/api/stats/over-time", params={"since": "1h", "buckets": "6"}).json()
    assert len(over["buckets"]) == 6 and over["bucket_s"] == 600
    assert sum(b["total"] for b in over["buckets"]) == 5
    last = over["buckets"][-1]
    assert (last["completed"], last["failed"], last["success_rate"], last["failure_rate"]) == (4, 1, 0.8, 0.2)
    assert_failure(http.get("/api/stats", params={"since": "soon"}), 400, "not a time window")
    assert_failure(http.get("/api/stats/over-time", params={"since": "all"}), 400, "needs a window")
    assert_failure(http.get("/api/stats/over-time", params={"buckets": "0"}), 400, "limit must be")
    assert_failure(http.get("/api/stats", params={"type": "a b"}), 400, "not a job type")


# --------------------------------------------------------------------------------------------- routes, methods, paths
def test_unknown_routes_wrong_methods_and_paths_that_try_to_leave(data: DataDir, http: httpx.Client) -> None:
    assert_failure(http.get("/api/nothing"), 404, "no such route")
    assert_failure(http.delete("/api/jobs/x"), 405, "method not allowed")
    assert_failure(http.put("/api/jobs/scrape", json={}), 405)
    secret = data.root / "jobs" / "secret.txt"
    secret.write_text("do not serve me")
    for path in ("/static/..%2F..%2F..%2Fpyproject.toml", "/static/%2E%2E%2Fapp.py", "/static/app.py",
                 "/api/jobs/secret.txt/results", "/jobs/..%2Fjobs%2Fsecret.txt"):
        answer = http.get(path)
        assert answer.status_code in (400, 404), (path, answer.status_code)
        assert "do not serve me" not in answer.text and "[project]" not in answer.text
    assert http.get("/static/app.css").status_code == 200


def test_bodies_over_the_cap_are_413_whether_announced_or_streamed(data: DataDir, http: httpx.Client) -> None:
    big = b'{"type": "noop", "metadata": {"pad": "' + b"x" * (17 * 1024 * 1024) + b'"}}'
    assert_failure(http.post("/api/jobs", content=big, headers={"content-type": "application/json"}), 413,
                   "the limit is")

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 1 << 20):
            yield big[i:i + (1 << 20)]

    assert_failure(http.post("/api/jobs", content=chunks(), headers={"content-type": "application/json"}), 413,
                   "over the limit")
    assert queued_requests(data) == []


# --------------------------------------------------------------------------------------------- auth
def test_with_a_token_everything_needs_it_and_it_is_never_shown(
        data: DataDir, web_servers: Callable[..., WebServer]) -> None:
    web = web_servers(env={"JOBRUNNER_WEB_TOKEN": TOKEN})
    seen: list[str] = []
    with web.client() as anon, web.client(headers={"authorization": f"Bearer {TOKEN}"}) as ok:
        for method, path in (("GET", "/api/jobs/status"), ("GET", "/api/jobs"), ("POST", "/api/jobs/scrape"),
                             ("GET", "/api/stats"), ("POST", "/api/jobs/x/cancel"), ("GET", "/api/jobs/x/results")):
            answer = anon.request(method, path)
            assert_failure(answer, 401, "bearer token is required")
            assert answer.headers["www-authenticate"].startswith("Bearer")
            seen.append(answer.text)
        for header in (f"Bearer {TOKEN}x", f"bearer {TOKEN[:-1]}", f"Basic {TOKEN}", "Bearer", TOKEN):
            wrong = anon.get("/api/jobs/status", headers={"authorization": header})
            assert_failure(wrong, 401, "wrong or malformed")
            seen.append(wrong.text)
        page = anon.get("/runs?status=failed")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fruns%3Fstatus%3Dfailed"
        assert anon.get("/static/app.js").status_code == 200  # public: no data in it
        assert anon.get("/login").status_code == 200

        answer = ok.post("/api/jobs", json={"type": "noop", "id": "with-token"})
        assert answer.status_code == 202, answer.text  # no CSRF header needed with a bearer token
        assert ok.get("/api/jobs/status", params={"jobId": "with-token"}).json()["success"] is True
        assert ok.get("/").status_code == 200
        seen += [answer.text, ok.get("/").text, ok.get("/runs").text]

    # the dashboard's login: a cookie that is not the token
    with web.client() as browser:
        bad = browser.post("/login", data={"token": "guess-guess-guess", "next": "/runs"})
        assert bad.status_code == 401 and "That is not the token" in bad.text
        good = browser.post("/login", data={"token": TOKEN, "next": "/runs"})
        assert good.status_code == 303 and good.headers["location"] == "/runs"
        cookie = good.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert TOKEN not in cookie
        assert browser.get("/runs").status_code == 200
        assert browser.get("/api/jobs").status_code == 200
        own = web.url
        refused = browser.post("/api/jobs", json={"type": "noop"}, headers={"origin": own})
        assert_failure(refused, 403, "X-Jobrunner-Request")
        cross = browser.post("/api/jobs", json={"type": "noop"}, headers={"origin": "http://evil.example",
                                                                          "x-jobrunner-request": "1"})
        assert_failure(cross, 403, "cross-origin")
        fine = browser.post("/api/jobs", json={"type": "noop", "id": "by-cookie"},
                            headers={"origin": own, "x-jobrunner-request": "1", "sec-fetch-site": "same-origin"})
        assert fine.status_code == 202, fine.text
        offsite = browser.post("/login", data={"token": TOKEN}, headers={"origin": "http://evil.example"})
        assert offsite.status_code == 403
        assert browser.post("/login", data={"token": TOKEN, "next": "//evil.example/x"}).headers["location"] == "/"
        seen += [good.text, browser.get("/").text]
        out = browser.post("/logout", headers={"origin": own})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        browser.cookies.clear()
        assert browser.get("/runs").status_code == 303
    assert all(TOKEN not in text for text in seen)
    web.stop()
    assert TOKEN not in web.output()
    assert {r.get("id") for r in queued_requests(data)} == {"with-token", "by-cookie"}


def test_without_a_token_only_loopback_names_and_same_origin_browsers_get_in(
        data: DataDir, http: httpx.Client, web: WebServer) -> None:
    rebound = http.get("/api/jobs", headers={"host": "evil.example:8288"})
    assert_failure(rebound, 403, "loopback name")
    assert http.get("/", headers={"host": "evil.example"}).status_code == 403
    assert http.get("/api/jobs", headers={"host": "localhost:1"}).status_code == 200
    assert http.get("/api/jobs", headers={"host": "[::1]:1"}).status_code == 200
    # a page elsewhere posting into the user's loopback server
    for headers in ({"origin": "http://evil.example"}, {"origin": "null"}, {"sec-fetch-site": "cross-site"},
                    {"origin": web.url, "sec-fetch-site": "same-site"}, {"origin": web.url}):
        answer = http.post("/api/jobs/scrape", json={"searchParams": {"keywords": "x"}}, headers=headers)
        assert_failure(answer, 403)
    # the dashboard's own script, and a program on the machine (no browser headers at all)
    assert http.post("/api/jobs", json={"type": "noop", "id": "dash"},
                     headers={"origin": web.url, "x-jobrunner-request": "1"}).status_code == 202
    assert http.post("/api/jobs", json={"type": "noop", "id": "curl"}).status_code == 202
    assert http.get("/login").status_code == 303  # nothing to log in to
    assert {r["id"] for r in queued_requests(data)} == {"dash", "curl"}


def test_every_answer_carries_the_security_headers(http: httpx.Client) -> None:
    for path in ("/", "/runs", "/api/jobs", "/api/nothing", "/static/app.js"):
        headers = http.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"], path
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "same-origin"
    assert http.get("/api/jobs").headers["cache-control"] == "no-store"


def test_pages_escape_what_a_job_carries(data: DataDir, http: httpx.Client, daemons: Callable[..., Daemon]) -> None:
    daemons()
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    http.post("/api/jobs", json={"type": "noop", "id": "html-in-it", "metadata": {"note": evil, evil: 1}})
    data.wait_status("html-in-it")
    for path in ("/jobs/html-in-it", "/fragments/job/html-in-it", "/runs?q=html", "/", "/fragments/panel"):
        page = http.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
    assert "&lt;script&gt;alert(" in http.get("/jobs/html-in-it").text
    assert_failure(http.get("/api/jobs", params={"q": '"><script>'}), 400, "search by id")
    assert http.get("/runs", params={"q": '"><script>'}).status_code == 400
    assert http.get("/jobs/%3Cscript%3E").status_code == 400
    assert "<script>" not in http.get("/jobs/%3Cscript%3E").text


# --------------------------------------------------------------------------------------------- configuration
def serve(data: DataDir, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*JOBRUNNER, "serve", *args], env={**data.env, **(env or {})}, capture_output=True,
                          text=True, timeout=30)


def test_refuses_to_serve_the_network_without_a_token_and_a_bad_token(data: DataDir, tmp_path: Path) -> None:
    open_lan = serve(data, "--bind", "0.0.0.0:0")
    assert open_lan.returncode == 78 and "refusing to listen on 0.0.0.0 without a token" in open_lan.stderr
    short = serve(data, env={"JOBRUNNER_WEB_TOKEN": "short"})
    assert short.returncode == 78 and "at least 16" in short.stderr and "short" not in short.stderr.split(":")[-1]
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert serve(data, "--token-file", str(empty)).returncode == 78
    assert serve(data, "--bind", "nowhere").returncode == 78
    assert serve(data, "--bind", "example.com:80").returncode == 78
    missing = serve(data, "--data-dir", str(tmp_path / "nope"))
    assert missing.returncode == 78 and "not a jobrunner data dir" in missing.stderr


def test_token_from_a_file_and_from_a_systemd_credential(data: DataDir, tmp_path: Path,
                                                        web_servers: Callable[..., WebServer]) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    by_file = web_servers("--token-file", str(token_file))
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "web_token").write_text(TOKEN[::-1])
    by_cred = web_servers(env={"CREDENTIALS_DIRECTORY": str(creds)})
    for server, token in ((by_file, TOKEN), (by_cred, TOKEN[::-1])):
        with server.client() as client:
            assert client.get("/api/jobs").status_code == 401
            assert client.get("/api/jobs", headers={"authorization": f"Bearer {token}"}).status_code == 200
        assert re.search(r"listening: \S+ \(a bearer token required", server.output())


def test_the_access_log_keeps_requests_but_not_the_dashboards_polling_and_sigterm_stops_cleanly(
        web: WebServer) -> None:
    with web.client() as client:
        for _ in range(3):
            assert client.get("/fragments/panel").status_code == 200
            assert client.get("/static/app.css").status_code == 200
        assert client.get("/fragments/nothing").status_code == 404
        assert client.get("/api/jobs").status_code == 200
        assert client.post("/api/jobs", json={"type": "noop"}).status_code == 202
    assert web.stop() == 0
    wait_for(lambda: not web.alive, 5, "the server to exit")
    log = web.output()
    assert '"GET /api/jobs HTTP/1.1" 200' in log and '"POST /api/jobs HTTP/1.1" 202' in log, log
    assert '"GET /fragments/nothing HTTP/1.1" 404' in log  # a failure is kept
    assert "/fragments/panel" not in log and "/static/app.css" not in log, log
