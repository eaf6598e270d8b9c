"""Many files, several daemons, and an inotify queue that overflows: nothing is missed or run twice."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
from conftest import DataDir, wait_for


def completed(data: DataDir) -> int:
    return sum(1 for doc in data.statuses().values() if doc["status"] == "completed")


def test_200_dropped_while_running_and_200_while_stopped(data: DataDir, daemons) -> None:
    d = daemons("--concurrency", "32")
    for i in range(100):
        data.drop(f"a{i}.json", {"type": "noop", "id": f"a{i}"})
    for i in range(100):  # write-in-place clients too
        data.write_in_place(f"b{i}.json", {"type": "noop", "id": f"b{i}"})
    wait_for(lambda: completed(data) == 200, 60, "200 jobs completed")
    assert d.term() == 0
    for i in range(100):
        data.drop(f"c{i}.json", {"type": "noop", "id": f"c{i}"})
        data.write_in_place(f"d{i}.json", {"type": "noop", "id": f"d{i}"})
    daemons("--concurrency", "32")
    wait_for(lambda: completed(data) == 400, 60, "400 jobs completed")
    assert data.rejected() == {}


def test_four_daemons_never_run_a_job_twice_and_recover_a_dead_peer(data: DataDir, daemons) -> None:
    ds = [daemons("--concurrency", "8") for _ in range(4)]
    n = 400
    for i in range(n):
        data.drop(f"j{i:03d}.json", {"type": "count", "id": f"j{i:03d}", "steps": 2, "step_seconds": 0.01})
        if i == 200:
            ds[0].kill()  # its claims must go to the others
    wait_for(lambda: completed(data) == n, 90, f"{n} jobs completed")
    runs = Counter((x[0], x[1]) for x in data.log_lines("runs.log"))
    assert set(runs) == {(f"j{i:03d}", f"s{s}") for i in range(n) for s in range(2)}
    assert data.log_lines("violations.log") == []
    # each job ran under exactly one daemon unless the killed one had it
    workers = {doc["worker"] for doc in data.statuses().values()}
    assert len(workers) >= 2
    twice = [k for k, v in runs.items() if v > 1]
    assert len(twice) <= 8 * 2  # only what the killed daemon had in flight (8 slots, 2 steps)
    assert all(d.alive for d in ds[1:])


@pytest.mark.slow
def test_40000_files_in_one_burst_overflow_inotify_and_all_are_taken(data: DataDir, daemons) -> None:
    d = daemons("--concurrency", "64")
    staging = data.root / "staging"
    staging.mkdir()
    n = 40_000
    body = b'{"type": "noop"}'
    for i in range(n):  # written outside, then renamed in as fast as possible: one moved-in event each
        with open(staging / f"{i:05d}.json", "wb") as f:
            f.write(body)
    started = time.monotonic()
    for i in range(n):
        os.rename(staging / f"{i:05d}.json", data.queue / f"{i:05d}.json")
    dropped = time.monotonic() - started

    def left() -> int:
        return sum(1 for name in os.listdir(data.queue) if name.endswith(".json"))

    wait_for(lambda: left() == 0, 170, "every file claimed")
    assert d.alive
    print(f"dropped {n} in {dropped:.1f}s; all claimed after {time.monotonic() - started:.1f}s")
