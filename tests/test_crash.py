"""kill -9 at many moments: every job still reaches a final state, no status or checkpoint file is torn,
and no completed step runs again (the testkit's `count` job records any step body that starts after
its checkpoint exists, in violations.log)."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter

import pytest
from conftest import DataDir, run_burst, wait_for

from jobrunner.failpoints import POINTS


def assert_nothing_torn(data: DataDir) -> None:
    for path in data.jobs.glob("*.json"):
        json.loads(path.read_bytes())
    for path in data.jobs.glob("*/steps.jsonl"):
        # a step log may hold a line a crash tore (its own line: every record starts with a newline);
        # every other line is a whole record
        lines = [line for line in path.read_bytes().split(b"\n") if line]
        whole = []
        for line in lines:
            try:
                whole.append(json.loads(line))
            except ValueError:
                continue
        assert all(isinstance(r, dict) and "key" in r and "result" in r for r in whole), path


def test_kill9_at_random_moments_while_jobs_run(data: DataDir, daemons) -> None:
    rng = random.Random(20261203)
    jobs = [f"job{i:02d}" for i in range(40)]
    for job in jobs[:20]:  # dropped while no daemon runs
        data.drop(f"{job}.json", {"type": "count", "id": job, "steps": 6, "step_seconds": 0.03, "max_attempts": 50})
    kills = 0
    for round_ in range(12):
        d = daemons("--concurrency", "8")
        if round_ == 2:
            for job in jobs[20:]:  # dropped while one runs
                data.drop(f"{job}.json", {"type": "count", "id": job, "steps": 6, "step_seconds": 0.03,
                                          "max_attempts": 50})
        time.sleep(rng.uniform(0.02, 0.5))
        d.kill()
        kills += 1
        assert_nothing_torn(data)
    final = daemons("--concurrency", "8")
    for job in jobs:
        doc = data.wait_status(job, timeout=60)
        assert doc["result"]["run"] + doc["result"]["reused"] == 6
    assert final.alive
    assert_nothing_torn(data)
    assert data.log_lines("violations.log") == []
    runs = Counter((x[0], x[1]) for x in data.log_lines("runs.log"))
    assert set(runs) == {(job, f"s{i}") for job in jobs for i in range(6)}
    # a step runs again only if a kill cut it short before its checkpoint: at most once per kill per slot
    assert sum(n - 1 for n in runs.values()) <= kills * 8
    interrupted = sum(h["outcome"] == "interrupted" for doc in data.statuses().values() for h in doc["history"])
    assert interrupted >= 1  # the kills did land mid-job
    leftover = [p for p in (data.queue / ".claimed").rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert leftover == []  # the dead daemons' claims were all recovered


def test_kill9_while_draining_a_backlog_loses_and_duplicates_nothing(data: DataDir, daemons) -> None:
    rng = random.Random(7)
    n = 300
    for i in range(n):
        data.drop(f"r{i:03d}.json", {"type": "noop", "id": f"r{i:03d}", "max_attempts": 20})
    for _ in range(5):
        d = daemons("--concurrency", "32")
        time.sleep(rng.uniform(0.05, 0.4))
        d.kill()
        assert_nothing_torn(data)
    daemons("--concurrency", "32")
    wait_for(lambda: sum(1 for doc in data.statuses().values() if doc["status"] == "completed") == n, 60,
             "all jobs completed")
    # each request moves to .done/ just after its final status is durable
    wait_for(lambda: len(list((data.queue / ".done").glob("*.json"))) == n, 10, "every request in .done/")
    assert not list(data.queue.glob("*.json"))
    assert not list((data.queue / ".rejected").iterdir())
    assert not list((data.queue / ".deferred").iterdir())


def test_kill9_during_a_drain(data: DataDir, daemons) -> None:
    d = daemons("--drain-timeout", "30")
    data.drop("l.json", {"type": "count", "id": "slow", "steps": 5, "step_seconds": 1.0})
    data.wait_status("slow", ("running",))
    time.sleep(0.3)
    d.signal(signal.SIGTERM)  # drain: waits for the step in progress...
    time.sleep(0.2)
    d.kill()  # ...and dies during it
    daemons()
    doc = data.wait_status("slow", timeout=30)
    assert doc["result"]["run"] + doc["result"]["reused"] == 5
    assert data.log_lines("violations.log") == []
    assert [h["outcome"] for h in doc["history"]] == ["interrupted", "completed"]


@pytest.mark.parametrize("point", POINTS)
def test_kill9_at_each_failpoint_then_restart(data: DataDir, point: str) -> None:
    """Die at one exact moment (a real SIGKILL, from inside), restart, and check every invariant."""
    for i in range(3):
        data.drop(f"c{i}.json", {"type": "count", "id": f"c{i}", "steps": 3, "step_seconds": 0.01})
    data.drop("f.json", {"type": "flaky", "id": "f", "fail_times": 1})  # a deferral, then a retry
    crashed = run_burst(data, env={"JOBRUNNER_FAILPOINT": point})
    assert crashed.returncode == -signal.SIGKILL, f"failpoint {point} was never reached: {crashed.stderr}"
    assert_nothing_torn(data)
    for _ in range(20):
        assert run_burst(data, "--retry-base", "0").returncode == 0
        docs = data.statuses()
        if len(docs) == 4 and all(d["status"] == "completed" for d in docs.values()):
            break
        time.sleep(0.05)
    docs = data.statuses()
    assert {k: d["status"] for k, d in docs.items()} == {"c0": "completed", "c1": "completed",
                                                          "c2": "completed", "f": "completed"}
    for i in range(3):
        assert docs[f"c{i}"]["result"]["run"] + docs[f"c{i}"]["result"]["reused"] == 3
    assert data.log_lines("violations.log") == []
    assert_nothing_torn(data)
    for folder in ("", ".active", ".deferred"):
        assert not list((data.queue / folder).glob("*.json")), folder
    assert not [p for p in (data.queue / ".claimed").rglob("*") if p.is_file()]
    assert sorted(p.name for p in (data.queue / ".done").iterdir()) == ["c0.json", "c1.json", "c2.json", "f.json"]
    assert data.rejected() == {}


def test_a_recovery_killed_half_way_counts_the_attempt_once(data: DataDir) -> None:
    data.drop("c.json", {"type": "count", "id": "c", "steps": 2})
    assert run_burst(data, env={"JOBRUNNER_FAILPOINT": "accepted"}).returncode == -signal.SIGKILL
    assert run_burst(data, env={"JOBRUNNER_FAILPOINT": "recovery-counted"}).returncode == -signal.SIGKILL
    assert data.status("c")["history"][-1]["outcome"] == "interrupted"
    for _ in range(10):
        run_burst(data, "--retry-base", "0")
        if data.status("c")["status"] == "completed":
            break
    doc = data.status("c")
    assert doc["status"] == "completed"
    assert [(h["attempt"], h["outcome"]) for h in doc["history"]] == [(1, "interrupted"), (2, "completed")]


def test_a_duplicate_left_in_active_by_a_crash_is_set_aside_not_run(data: DataDir) -> None:
    """The window between accepting a request and noticing its id exists: a crash there leaves the
    duplicate in .active/. Recovery must not let it replace the real job's request."""
    later = "2099-01-01T00:00:00Z"
    data.drop("real.json", {"type": "noop", "id": "x", "not_before": later, "metadata": {"copy": "real"}})
    assert run_burst(data).returncode == 0
    before = data.status("x")
    assert before["status"] == "pending"
    dup = json.dumps({"type": "noop", "id": "x", "metadata": {"copy": "dup"}}).encode()
    (data.queue / ".active" / "x.json").write_bytes(dup)  # as a daemon killed in that window leaves it
    assert run_burst(data).returncode == 0
    assert data.status("x") == before  # the real job is untouched
    assert json.loads((data.queue / ".deferred" / "x.json").read_bytes())["metadata"] == {"copy": "real"}
    kept = [p for p in (data.queue / ".rejected").iterdir() if not p.name.endswith(".reason")]
    assert [p.read_bytes() for p in kept] == [dup]
    assert "duplicate id x" in next(iter(data.rejected().values()))["reason"]
    assert not (data.queue / ".active" / "x.json").exists()
