"""A job's life through the real daemon and CLI: run, retry, fail, defer, cancel, retry by hand, drain."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from conftest import DataDir, run_burst, wait_for


def test_completes_with_progress_steps_and_metadata(data: DataDir, daemons) -> None:
    daemons()
    data.drop("a.json", {"type": "count", "id": "job-a", "steps": 4, "metadata": {"campaign": "q4", "n": 1}})
    doc = data.wait_status("job-a")
    assert doc["schema"] == 1
    assert doc["progress"] == {"current": 4, "total": 4, "percentage": 100.0, "note": None}
    assert doc["attempt"] == 1 and doc["max_attempts"] == 4
    assert doc["metadata"] == {"campaign": "q4", "n": 1}
    assert doc["result"] == {"steps": 4, "run": 4, "reused": 0}
    assert doc["error"] is None
    for key in ("created_at", "started_at", "updated_at", "finished_at"):
        assert doc[key].endswith("Z")
        datetime.fromisoformat(doc[key])
    assert [h["outcome"] for h in doc["history"]] == ["completed"]
    # the request is kept with the job (moved there just after the final status is durable)...
    done = data.queue / ".done" / "job-a.json"
    wait_for(done.exists, 5, "the request moved to .done/")
    assert json.loads(done.read_bytes())["id"] == "job-a"
    # ...and nothing is left in the spool
    assert not list(data.queue.glob("*.json"))
    assert not list((data.queue / ".deferred").iterdir())


def test_transient_failures_are_retried_with_backoff(data: DataDir) -> None:
    data.drop("f.json", {"type": "flaky", "id": "flaky-1", "fail_times": 2})
    deadline = time.monotonic() + 30
    while (data.status("flaky-1") or {}).get("status") != "completed" and time.monotonic() < deadline:
        assert run_burst(data).returncode == 0
        time.sleep(0.05)
    doc = data.wait_status("flaky-1", timeout=1)
    assert doc["attempt"] == 3
    outcomes = [(h["attempt"], h["outcome"]) for h in doc["history"]]
    assert outcomes == [(1, "retry"), (2, "retry"), (3, "completed")]
    assert doc["history"][0]["error"] == {"type": "RetryableError", "message": "provider answered 503 on attempt 1",
                                          "retryable": True}
    assert all(h["delay_s"] > 0 for h in doc["history"][:2])
    assert [line[1] for line in data.log_lines("flaky.log")] == ["1", "2", "3"]


def test_attempts_run_out(data: DataDir, daemons) -> None:
    daemons()
    data.drop("f.json", {"type": "flaky", "id": "never", "fail_times": 99, "max_attempts": 3})
    doc = data.wait_status("never", ("failed",))
    assert doc["attempt"] == 3
    assert doc["error"]["type"] == "RetryableError" and doc["error"]["retryable"] is False
    assert [h["outcome"] for h in doc["history"]] == ["retry", "retry", "failed"]
    wait_for((data.queue / ".done" / "never.json").exists, 5, "the request moved to .done/")


def test_permanent_error_fails_at_once(data: DataDir) -> None:
    data.drop("p.json", {"type": "flaky", "id": "perm", "permanent": True})
    assert run_burst(data).returncode == 0
    doc = data.wait_status("perm", ("failed",), timeout=1)
    assert doc["attempt"] == 1
    assert doc["error"] == {"type": "PermanentError", "message": "the provider said no (401: bad credentials)",
                            "retryable": False}


def test_retry_after_becomes_a_deferral_not_a_sleep(data: DataDir, daemons) -> None:
    d = daemons()
    data.drop("r.json", {"type": "flaky", "id": "later", "fail_times": 1, "defer_s": 1.5})
    doc = data.wait_status("later", ("pending",))
    assert doc["attempt"] == 1 and doc["next_attempt_at"]
    due = datetime.fromisoformat(doc["next_attempt_at"])
    wait_for((data.queue / ".deferred" / "later.json").exists, 5, "the request moved to .deferred/")
    # the daemon is free meanwhile: another job runs at once
    data.drop("n.json", {"type": "noop", "id": "meanwhile"})
    data.wait_status("meanwhile", timeout=1.2)
    done = data.wait_status("later", timeout=10)
    assert datetime.fromisoformat(done["history"][-1]["started_at"]) >= due - timedelta(milliseconds=50)
    assert d.alive


def test_deferral_survives_a_restart(data: DataDir, daemons) -> None:
    d = daemons()
    data.drop("r.json", {"type": "flaky", "id": "persisted", "fail_times": 1, "defer_s": 1.0})
    data.wait_status("persisted", ("pending",))
    assert d.term() == 0
    d2 = daemons()
    data.wait_status("persisted", timeout=10)
    assert d2.alive


def test_not_before(data: DataDir, daemons) -> None:
    daemons()
    when = datetime.now(UTC) + timedelta(seconds=1.5)
    data.drop("nb.json", {"type": "noop", "id": "scheduled", "not_before": when.isoformat()})
    doc = data.wait_status("scheduled", ("pending",))
    assert doc["attempt"] == 0
    done = data.wait_status("scheduled", timeout=10)
    assert datetime.fromisoformat(done["started_at"]) >= when - timedelta(milliseconds=50)


def test_priority_orders_waiting_jobs(data: DataDir) -> None:
    for i in range(5):
        data.drop(f"low{i}.json", {"type": "count", "id": f"low{i}", "steps": 1, "priority": 0})
    data.drop("high.json", {"type": "count", "id": "high", "steps": 1, "priority": 10})
    assert run_burst(data, "--concurrency", "1").returncode == 0
    order = [line[0] for line in data.log_lines("runs.log")]
    assert order[0] == "high" and sorted(order) == sorted(["high"] + [f"low{i}" for i in range(5)])


def test_timeout(data: DataDir) -> None:
    data.drop("t.json", {"type": "noop", "id": "slow", "steps": 1, "step_seconds": 5, "timeout_s": 0.2,
                         "max_attempts": 1})
    assert run_burst(data).returncode == 0
    doc = data.wait_status("slow", ("failed",), timeout=1)
    assert doc["error"]["type"] == "JobTimeout" and "timeout_s=0.2" in doc["error"]["message"]


def test_cancel_running_job_keeps_completed_steps_and_retry_reuses_them(data: DataDir, daemons) -> None:
    daemons()
    data.drop("c.json", {"type": "count", "id": "long", "steps": 40, "step_seconds": 0.05})
    wait_for(lambda: (data.status("long") or {}).get("progress", {}).get("current", 0) >= 3, 10, "progress")
    out = data.cli("cancel", "long")
    assert out.returncode == 0, out.stderr
    assert "long cancelled" in out.stdout
    doc = data.wait_status("long", ("cancelled",))
    assert doc["error"]["type"] == "Cancelled"
    done_steps = data.steps_done("long")
    assert 3 <= done_steps < 40
    again = data.cli("cancel", "long")
    assert again.returncode == 1 and "already cancelled" in again.stderr

    out = data.cli("retry", "long")
    assert out.returncode == 0, out.stderr
    doc = data.wait_status("long", ("completed",), timeout=20)
    assert doc["result"]["reused"] == done_steps and doc["result"]["run"] == 40 - done_steps
    runs = Counter((line[0], line[1]) for line in data.log_lines("runs.log"))
    assert len(runs) == 40
    # only the step that was cut short by the cancel may run again; no completed step ever does
    assert sum(n - 1 for n in runs.values()) <= 1
    assert data.log_lines("violations.log") == []


def test_cancel_pending_and_queued_jobs(data: DataDir, daemons) -> None:
    # deferred (pending) job: cancelled by the CLI itself, no daemon needed
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    data.drop("p.json", {"type": "noop", "id": "waiting", "not_before": later})
    assert run_burst(data).returncode == 0
    assert data.status("waiting")["status"] == "pending"
    out = data.cli("cancel", "waiting")
    assert out.returncode == 0 and "waiting cancelled" in out.stdout
    assert data.status("waiting")["status"] == "cancelled"
    assert (data.queue / ".done" / "waiting.json").exists()
    assert not (data.queue / ".deferred" / "waiting.json").exists()
    # a request still in the queue (no daemon running)
    data.drop("q.json", {"type": "noop", "id": "queued"})
    out = data.cli("cancel", "queued")
    assert out.returncode == 0, out.stderr
    assert data.status("queued")["status"] == "cancelled"
    assert not (data.queue / "q.json").exists()
    assert run_burst(data).returncode == 0
    assert data.status("queued")["status"] == "cancelled"  # the daemon ran nothing
    assert data.log_lines("runs.log") == []


def test_cli_errors(data: DataDir) -> None:
    missing = data.cli("status", "nope")
    assert missing.returncode == 4 and "no job 'nope'" in missing.stderr
    assert data.cli("cancel", "nope").returncode == 4
    bad = data.cli("status", "--data-dir", str(data.root / "absent"))
    assert bad.returncode == 78 and "not a jobrunner data dir" in bad.stderr
    usage = data.cli("status", "--limit", "-3")
    assert usage.returncode == 2
    invalid = data.cli("submit", "-", input=b'{"type": "noop", "steps": -1}')
    assert invalid.returncode == 65 and "steps: Input should be greater than or equal to 0" in invalid.stderr
    assert not list(data.queue.glob("*.json"))
    data.drop("c.json", {"type": "noop", "id": "done"})
    assert run_burst(data).returncode == 0
    refused = data.cli("retry", "done")
    assert refused.returncode == 1 and "only failed or cancelled" in refused.stderr


def test_submit_wait_status_and_schema(data: DataDir, daemons) -> None:
    daemons()
    ok = data.cli("submit", "--wait", "-", input=b'{"type": "noop", "steps": 2, "metadata": {"who": "cli"}}')
    assert ok.returncode == 0, ok.stderr
    job_id = ok.stdout.strip()
    assert data.status(job_id)["status"] == "completed"
    assert data.status(job_id)["metadata"] == {"who": "cli"}
    failed = data.cli("submit", "--wait", "-", input=b'{"type": "flaky", "permanent": true}')
    assert failed.returncode == 1 and "failed: the provider said no" in failed.stderr
    table = data.cli("status")
    assert table.returncode == 0 and job_id in table.stdout and "STATUS" in table.stdout
    listing = json.loads(data.cli("status", "--json", "--limit", "1").stdout)
    assert listing["count"] == 1 and listing["jobs"][0]["status"] == "failed"
    one = json.loads(data.cli("status", job_id, "--json").stdout)
    assert one["id"] == job_id and one["progress"]["percentage"] == 100.0
    schema = json.loads(data.cli("schema").stdout)
    assert {"noop", "count"} <= set(schema["discriminator"]["mapping"])
    noop = json.loads(data.cli("schema", "noop").stdout)
    assert "steps" in noop["properties"] and noop["additionalProperties"] is False


def test_status_active(data: DataDir, daemons) -> None:
    daemons("--concurrency", "1")
    data.drop("a.json", {"type": "count", "id": "running-one", "steps": 200, "step_seconds": 0.05})
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    data.drop("b.json", {"type": "noop", "id": "pending-one", "not_before": later})
    data.drop("c.json", {"type": "noop", "id": "done-one", "priority": 5})
    data.wait_status("running-one", ("running",))
    data.wait_status("pending-one", ("pending",))
    active = json.loads(data.cli("status", "--active", "--json").stdout)
    ids = {j["id"]: j["status"] for j in active["jobs"]}
    assert ids == {"running-one": "running", "pending-one": "pending"}


def test_sigterm_drains_and_the_job_resumes_from_its_last_step(data: DataDir, daemons) -> None:
    d = daemons("--drain-timeout", "5")
    data.drop("l.json", {"type": "count", "id": "long", "steps": 30, "step_seconds": 0.1})
    wait_for(lambda: (data.status("long") or {}).get("progress", {}).get("current", 0) >= 5, 10, "progress")
    started = time.monotonic()
    assert d.term() == 0
    assert time.monotonic() - started < 5
    doc = data.status("long")
    assert doc["status"] == "pending"
    assert doc["history"][-1]["outcome"] == "requeued"
    assert doc["attempt"] == 0  # a stop we asked for does not use up an attempt
    assert (data.queue / ".deferred" / "long.json").exists()
    assert "requeued at shutdown" in d.output()
    done_before = data.steps_done("long")
    daemons()
    doc = data.wait_status("long", timeout=20)
    assert doc["result"]["reused"] == done_before
    assert data.log_lines("violations.log") == []
    assert Counter((x[0], x[1]) for x in data.log_lines("runs.log")).most_common(1)[0][1] == 1


def test_sigint_also_drains(data: DataDir, daemons) -> None:
    d = daemons()
    data.drop("l.json", {"type": "noop", "id": "x", "steps": 100, "step_seconds": 0.05})
    data.wait_status("x", ("running",))
    d.signal(signal.SIGINT)
    assert d.wait(10) == 0
    assert data.status("x")["status"] == "pending"


def test_a_job_that_kills_the_daemon_runs_out_of_attempts(data: DataDir, daemons) -> None:
    data.drop("k.json", {"type": "crash", "id": "poison", "max_attempts": 3})
    for _ in range(20):
        if (data.status("poison") or {}).get("status") == "failed":
            break
        run_burst(data, "--retry-base", "0", timeout=30)  # killed by its job, or done recovering
    doc = data.status("poison")
    assert doc["status"] == "failed", doc
    assert len(data.log_lines("crash.log")) == 3
    assert "daemon running it" in doc["error"]["message"] and "no attempts left" in doc["error"]["message"]
    assert [h["outcome"] for h in doc["history"]] == ["interrupted"] * 3
    data.drop("ok.json", {"type": "noop", "id": "after"})
    assert run_burst(data).returncode == 0
    assert data.status("after")["status"] == "completed"


def test_a_flood_of_quick_jobs_is_logged_in_summary_lines_and_failures_one_by_one(data: DataDir) -> None:
    for i in range(300):
        data.drop(f"{i:03d}.json", {"type": "noop", "id": f"q{i:03d}"})
    data.drop("bad.json", {"type": "flaky", "id": "bad", "permanent": True})
    out = run_burst(data, "--concurrency", "64")
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    one_by_one = [line for line in lines if "] completed noop in " in line]
    summaries = [int(line.split("completed ", 1)[1].split(" more", 1)[0].replace(",", ""))
                 for line in lines if " more job(s) in the last " in line]
    assert len(one_by_one) + sum(summaries) == 300  # every job is told, in a line of its own or in a count
    assert len(one_by_one) < 300 and summaries  # not a line each: they came faster than a person reads
    assert sum(1 for line in lines if "[bad] failed: PermanentError" in line) == 1
