"""`jobrunner run --workers N`: one command, several daemons sharing the data dir, supervised."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable

from conftest import Daemon, DataDir, run_burst, wait_for


def _worker_pids(supervisor: int) -> list[int]:
    """The live children of ``supervisor`` (its workers), from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == supervisor and fields[0] != "Z":
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_two_workers_drain_a_backlog_each_job_once(data: DataDir) -> None:
    for i in range(300):
        data.drop(f"r{i:03}.json", {"type": "count", "id": f"j{i:03}", "steps": 2})
    out = run_burst(data, "--workers", "2", "--concurrency", "8")
    assert out.returncode == 0, out.stderr
    statuses = data.statuses()
    assert len(statuses) == 300 and {d["status"] for d in statuses.values()} == {"completed"}
    runs = Counter((x[0], x[1]) for x in data.log_lines("runs.log"))
    assert len(runs) == 600 and set(runs.values()) == {1}  # every step of every job ran exactly once
    assert data.log_lines("violations.log") == []
    stopped = [line for line in out.stderr.splitlines() if " stopped: " in line]
    assert len(stopped) == 2, out.stderr
    # both did a share of the work (each takes its own share of a backlog first)
    done = [int(line.split("stopped: ")[1].split()[0]) for line in stopped]
    assert sum(done) == 300 and min(done) > 50, stopped
    assert not list((data.root / "queue" / ".claimed").iterdir())  # both left cleanly


def test_sigterm_stops_every_worker_and_exits_0(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    d = daemons("--workers", "2")
    assert d.proc is not None
    wait_for(lambda: len(_worker_pids(d.proc.pid)) == 2 and d.output().count(" ready: ") == 2,  # type: ignore[union-attr]
             20, "two workers ready")
    workers = _worker_pids(d.proc.pid)
    data.drop("long.json", {"type": "count", "id": "long", "steps": 50, "step_seconds": 0.1})
    data.wait_status("long", ("running",))
    assert d.term(60) == 0, d.output()
    assert not any(_alive(pid) for pid in workers)
    assert data.status("long")["status"] == "pending"  # parked at a step, to resume at the next start
    run_burst(data)
    assert data.wait_status("long")["status"] == "completed"
    assert data.log_lines("violations.log") == []


def test_a_killed_worker_is_replaced_and_its_jobs_recovered(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    d = daemons("--workers", "2", "--concurrency", "4")
    assert d.proc is not None
    wait_for(lambda: d.output().count(" ready: ") == 2, 20, "two workers ready")
    for i in range(8):
        data.drop(f"r{i}.json", {"type": "count", "id": f"k{i}", "steps": 20, "step_seconds": 0.05})
    wait_for(lambda: sum(1 for s in data.statuses().values() if s["status"] == "running") >= 4, 20, "jobs running")
    victim = _worker_pids(d.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: d.output().count(" ready: ") == 3, 20, "a new worker ready")
    assert "exited with signal 9; starting another" in d.output()
    for i in range(8):
        assert data.wait_status(f"k{i}", timeout=60)["status"] == "completed"
    assert data.log_lines("violations.log") == []  # no completed step ran again
    assert d.term() == 0


def test_workers_do_not_outlive_a_killed_supervisor(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    d = daemons("--workers", "2")
    assert d.proc is not None
    wait_for(lambda: d.output().count(" ready: ") == 2, 20, "two workers ready")
    workers = _worker_pids(d.proc.pid)
    assert len(workers) == 2
    d.kill()
    wait_for(lambda: not any(_alive(pid) for pid in workers), 30, "workers gone after the supervisor")
    # they were told to stop (SIGTERM from the kernel), so they stopped cleanly: no claim folder, no lock left
    assert sorted(p.name for p in (data.root / "queue" / ".claimed").iterdir()) == []
