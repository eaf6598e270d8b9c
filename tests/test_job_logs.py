"""`jobrunner logs ID [-f]`: a job's execution log, through the real daemon and the real CLI."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from conftest import JOBRUNNER, Daemon, DataDir, wait_for
from test_scrape import provider_env, scrape

from jobrunner import joblog
from jobrunner.layout import Layout
from jobrunner.sandbox import Faults, Sandbox


def messages(data: DataDir, job_id: str) -> list[str]:
    out = data.cli("logs", job_id)
    assert out.returncode == 0, out.stderr
    return [line.split(" ", 1)[1] for line in out.stdout.splitlines()]


def test_attempts_steps_retries_and_reuse_in_order(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    d = daemons()
    data.drop("a.json", {"type": "count", "id": "c1", "steps": 3})
    data.wait_status("c1")
    data.drop("b.json", {"type": "flaky", "id": "f1", "fail_times": 2, "max_attempts": 4})
    data.wait_status("f1")
    assert d.term() == 0

    lines = messages(data, "c1")
    assert lines[0] == "accepted count job from a.json"
    assert lines[1].startswith("#1 attempt 1/4 started on ")
    assert [line.split(" done in ")[0] for line in lines[2:5]] == ["#1 step s0", "#1 step s1", "#1 step s2"]
    assert lines[5].startswith("#1 attempt 1 (") and lines[5].endswith(" completed")
    assert lines[6] == "#1 job completed: steps 3, run 3, reused 0"

    lines = messages(data, "f1")
    failed = [line for line in lines if "failed:" in line]
    assert len(failed) == 2 and all("RetryableError: provider answered 503 on attempt" in f for f in failed)
    assert all("; retry in " in f for f in failed) and all(f.startswith("#") and " WARNING " in f for f in failed)
    starts = [line for line in lines if " started on " in line]
    assert [s.split()[2] for s in starts] == ["1/4", "2/4", "3/4"]
    assert lines[-1] == "#3 job completed: attempts 3"

    out = data.cli("logs", "f1", "--json")
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert {"at", "level", "attempt", "message"} <= set(events[0])
    assert [e["attempt"] for e in events if e.get("kind") == "attempt"] == [1, 1, 2, 2, 3, 3]


def test_a_retry_says_which_steps_it_reused(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    d = daemons()
    data.drop("a.json", {"type": "count", "id": "r1", "steps": 3, "step_seconds": 0.3})
    wait_for(lambda: data.steps_done("r1") >= 1, 20, "one step done")
    assert d.term() == 0  # parks the job at its next step
    d = daemons()
    data.wait_status("r1")
    assert d.term() == 0
    lines = messages(data, "r1")
    assert any("stopped by a daemon shutdown" in line for line in lines), lines
    reused = [line for line in lines if "reused, not run again" in line]
    assert len(reused) == 1 and reused[0].startswith("#1 ")  # the attempt given back is attempt 1 again
    steps_run = [line.split(" done in ")[0] for line in lines if " done in " in line]
    assert sorted(steps_run) == ["#1 step s0", "#1 step s1", "#1 step s2"]  # each ran once, in one attempt


def test_follow_prints_lines_as_they_come_and_exits_when_final(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    d = daemons()
    data.drop("a.json", {"type": "count", "id": "slow", "steps": 4, "step_seconds": 0.4})
    wait_for(lambda: data.status("slow") is not None, 20, "status")
    proc = subprocess.Popen([*JOBRUNNER, "logs", "slow", "-f", "--interval", "0.1"], env=data.env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    seen: list[tuple[float, str]] = []
    for line in proc.stdout:
        seen.append((time.monotonic(), line.rstrip("\n")))
    assert proc.wait(30) == 0
    steps = [(t, line) for t, line in seen if " done in " in line]
    assert len(steps) == 4
    assert steps[-1][0] - steps[0][0] > 0.8, "lines came as the steps ran, not all at the end"
    assert seen[-1][1].endswith("job completed: steps 4, run 4, reused 0")
    assert d.term() == 0


def test_provider_retries_are_in_the_log_without_the_key(data: DataDir, daemons: Callable[..., Daemon],
                                                        sandbox: Sandbox) -> None:
    key = sandbox.env()["JOBRUNNER_LINKEDIN_KEY"]
    sandbox.set_faults(Faults(error_rate=0.5))
    data.extra_env.update(provider_env(sandbox))
    d = daemons()
    data.drop("s.json", scrape("sc", 4))
    data.wait_status("sc", timeout=60)
    assert d.term() == 0
    lines = messages(data, "sc")
    retries = [line for line in lines if "linkedin POST /premium_search_person: HTTP 5" in line]
    assert retries and all("; try " in line and " of 5 in " in line for line in retries), lines
    assert [line.split(" done in ")[0] for line in lines if " done in " in line] == \
        [f"#1 step page-{n}" for n in range(1, 5)]
    log_file = Layout(data.root).job_log("sc")
    assert key not in log_file.read_text()


def test_unknown_and_queued_jobs_exit_4(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    d = daemons()
    assert d.term() == 0
    out = data.cli("logs", "nope")
    assert out.returncode == 4 and "no job" in out.stderr
    data.drop("q.json", {"type": "noop", "id": "queued"})
    out = data.cli("logs", "queued")
    assert out.returncode == 4 and "queue" in out.stderr, out.stderr
    out = data.cli("logs", "../etc/passwd")
    assert out.returncode == 4


def test_a_log_stops_growing_at_its_cap_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.ensure()
    log = joblog.JobLog(layout.job_log("big"), attempt=1, max_bytes=2000)
    for i in range(100):
        log.write(f"line {i} " + "x" * 50)
    log.close()
    size = layout.job_log("big").stat().st_size
    assert 1900 < size < 2200
    lines, offset = joblog.read(layout, "big")
    assert lines[-1]["message"] == "the log reached 2,000 bytes; later lines are dropped"
    assert offset == size
    with open(layout.job_log("big"), "ab") as f:  # a crash mid-append, then a later line
        f.write(b'\n{"at": "2026-12-03T00:00:00Z", "mess')
    log = joblog.JobLog(layout.job_log("big"), attempt=2, max_bytes=10_000)
    log.write("after the tear")
    log.close()
    more, _ = joblog.read(layout, "big", offset)
    assert [m["message"] for m in more] == ["after the tear"]
