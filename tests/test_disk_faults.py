"""Faults of the disk, for real: the data dir is a 1 MB tmpfs (``mount -t tmpfs -o size=1m``), filled until
ENOSPC or remounted read-only under a running daemon, and freed again.

Each case must end with a clear line in the log (one per job or file, not a traceback, not a line at every
scan while the fault lasts), no lost job, no torn file, and every job done once the fault is gone.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, DataDir, assert_counts_completed, lines_with, run_burst, wait_for

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root (CI runs as root)"),
              pytest.mark.usefixtures("keys_never_leak")]


class Tmpfs:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        """Take every free block: the next write anywhere on it fails with ENOSPC."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == 28, exc
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink()

    def remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Tmpfs]:
    mnt = tmp_path / "data"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)], check=True)
    try:
        yield Tmpfs(mnt)
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.25)
        else:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def data(disk: Tmpfs, tmp_path: Path) -> DataDir:
    """The data dir is the tmpfs itself; the daemons' logs and the testkit's records stay off it."""
    return DataDir(disk.path, tmp_path / "testkit")


def staged(data: DataDir, requests: dict[str, dict[str, Any] | bytes]) -> Callable[[], None]:
    """Write requests next to the queue now (while there is room); the returned call renames them in."""
    folder = data.root / "client-staging"
    folder.mkdir(exist_ok=True)
    for name, request in requests.items():
        (folder / name).write_bytes(request if isinstance(request, bytes) else json.dumps(request).encode())

    def drop() -> None:
        for name in requests:
            os.rename(folder / name, data.queue / name)

    return drop


def counts(n: int, steps: int = 6) -> dict[str, dict[str, Any] | bytes]:
    return {f"c{i}.json": {"type": "count", "id": f"c{i}", "steps": steps, "step_seconds": 0.05} for i in range(n)}


def assert_whole(data: DataDir) -> None:
    data.statuses()  # every status parses (a torn one raises here)
    for path in data.jobs.glob("*/results.jsonl"):
        for line in path.read_bytes().splitlines():
            json.loads(line)


def assert_all_completed(data: DataDir, n: int, steps: int = 6) -> list[dict[str, Any]]:
    docs = assert_counts_completed(data, n, steps)
    assert_whole(data)
    return docs


def test_a_full_disk_while_jobs_run_costs_an_attempt_and_loses_nothing(disk: Tmpfs, data: DataDir,
                                                                     daemons: Callable[..., Daemon]) -> None:
    """ENOSPC at the status write (and at the steps' appends): the outcome cannot be recorded, so the
    request stays in .active/ and is recovered once the disk has room."""
    d = daemons()
    drop = staged(data, counts(4))
    disk.fill()
    drop()
    wait_for(lambda: len(lines_with(d.output(), "could not record the job's outcome")) == 4, 20,
             "each job to fail to record its outcome")
    time.sleep(6)  # more than a recovery round: it fails too, and must not say so again
    assert_whole(data)
    log = d.output()
    assert d.alive
    disk.free()
    docs = assert_all_completed(data, 4)
    for doc in docs:
        assert [h["outcome"] for h in doc["history"]] == ["interrupted", "completed"]
    log = d.output()
    assert "Traceback" not in log
    for i in range(4):  # one line for each failure, not one at every scan or round while it lasted
        assert len(lines_with(log, f"[c{i}] could not record the job's outcome (")) == 1
        assert "No space left on device" in lines_with(log, f"[c{i}] could not record")[0]
        assert len(lines_with(log, f"[c{i}] could not recover: [Errno 28]")) <= 1
    assert d.term() == 0


def test_a_full_disk_when_a_bad_request_arrives_keeps_it_until_its_reason_can_be_written(
        disk: Tmpfs, data: DataDir, daemons: Callable[..., Daemon]) -> None:
    """ENOSPC at claim: the claim (a rename) works, but the reason cannot be written. The file must not
    land in .rejected/ without its reason: it goes back to the queue and is set aside once there is room,
    tried again now and then (not at every scan), and said once."""
    d = daemons()
    drop = staged(data, {"bad.json": {"type": "nope", "id": "bad1"}, **counts(1)})
    disk.fill()
    drop()
    wait_for(lambda: lines_with(d.output(), "could not set bad.json aside"), 10, "the set-aside to fail")
    time.sleep(3)
    kept = data.queue / ".rejected" / "bad.json"
    assert not kept.exists() or kept.with_name("bad.json.reason").exists()
    disk.free()
    note = wait_for(lambda: data.rejected().get("bad.json"), 20, "bad.json to be rejected, with its reason")
    assert "unknown type 'nope'" in note["reason"]
    assert data.wait_status("bad1", ("failed",), timeout=20)["error"]["type"] == "InvalidRequest"
    assert_all_completed(data, 1)
    log = d.output()
    assert len(lines_with(log, "rejected bad.json")) == 1 and len(lines_with(log, "could not set bad.json")) == 1
    assert len(lines_with(log, "set bad.json aside at last")) == 1
    assert "Traceback" not in log
    assert d.term() == 0


def test_a_full_disk_during_a_scrape_pays_for_each_stored_page_once(disk: Tmpfs, data: DataDir,
                                                                    daemons: Callable[..., Daemon]) -> None:
    """ENOSPC at the results write (and the page's step, and the status): the scrape is interrupted and
    recovered; its results hold every lead once, and no page stored before the fault is bought again."""
    from jobrunner import checkpoint
    from jobrunner.layout import Layout
    from jobrunner.sandbox import Faults, Sandbox, SandboxConfig
    from jobrunner.sandbox.paid import request_key

    request = {"type": "scrape", "id": "s", "max_pages": 12, "max_results": 10_000,
               "search": {"title_keywords": "Head of Growth", "location": "Denver"}}
    with Sandbox(SandboxConfig(key="key-" + os.urandom(8).hex(), faults=Faults(latency_ms=150))) as sb:
        data.extra_env.update({**sb.env(), "JOBRUNNER_LINKEDIN_RATE": "1000/1", "JOBRUNNER_CALL_BACKOFF_S": "0.05"})
        d = daemons()
        data.drop("s.json", request)
        wait_for(lambda: data.steps_done("s") >= 3, 30, "three pages")
        disk.fill()
        stored_before = {r["key"] for r in checkpoint.records(Layout(data.root), "s")}
        wait_for(lambda: lines_with(d.output(), "[s] could not record the job's outcome"), 20, "the fault to hit")
        disk.free()
        doc = data.wait_status("s", timeout=60)
        ok = sb.stats()["ok_by_request"]
    assert doc["status"] == "completed" and doc["result"]["pages"] == 12, doc
    rows = [json.loads(line) for line in (data.jobs / "s" / "results.jsonl").read_bytes().splitlines()]
    urls = [r["navigationUrl"] for r in rows]
    assert len(urls) == len(set(urls)) == doc["result"]["leads"]
    assert {k: ok[request_key("scrape", request, k)] for k in stored_before} == dict.fromkeys(stored_before, 1)
    assert sum(ok.values()) <= 12 + 1  # at most the page in flight when the disk filled is bought again
    assert "Traceback" not in d.output()
    assert_whole(data)
    assert d.term() == 0


def test_a_daemon_started_on_a_full_disk_says_so_in_one_line(disk: Tmpfs, data: DataDir) -> None:
    assert run_burst(data).returncode == 0  # its folders exist
    disk.fill()
    out = run_burst(data)
    assert out.returncode == 1, out.stderr
    assert "cannot run on" in out.stderr and "No space left on device" in out.stderr
    assert "Traceback" not in out.stderr
    disk.free()
    data.drop("n.json", {"type": "noop", "id": "n"})
    assert run_burst(data).returncode == 0
    assert data.status("n")["status"] == "completed"


def test_a_data_dir_that_is_read_only_after_a_crash(disk: Tmpfs, data: DataDir,
                                                    daemons: Callable[..., Daemon]) -> None:
    """A daemon dies (kill -9) mid-jobs and comes back to a read-only data dir: it says so in one line and
    changes nothing; once the dir is writable again, the next start recovers every job. (The kernel refuses
    to remount read-only under a running daemon, which keeps its lock file open for writing; a failing
    disk gives it EROFS instead, which takes the path of tests/test_dir_faults.py's unwritable folders.)"""
    first = daemons()
    for name, request in counts(3, steps=10).items():
        request["step_seconds"] = 0.2  # type: ignore[index]
        data.drop(name, request)
    wait_for(lambda: all(data.steps_done(f"c{i}") >= 1 for i in range(3)), 20, "the jobs to be running")
    first.kill()
    before = {p: p.read_bytes() for p in data.jobs.glob("*.json")}
    disk.remount("ro")
    try:
        out = run_burst(data)
        assert out.returncode == 1, out.stderr
        assert "cannot run on" in out.stderr and "Read-only file system" in out.stderr
        assert "Traceback" not in out.stderr
        assert {p: p.read_bytes() for p in data.jobs.glob("*.json")} == before
    finally:
        disk.remount("rw")
    second = daemons()
    docs = assert_all_completed(data, 3, steps=10)
    for doc in docs:
        assert [h["outcome"] for h in doc["history"]] == ["interrupted", "completed"]
    assert second.term() == 0
