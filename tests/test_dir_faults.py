"""Faults of the data dir under a running daemon: its folders' permissions changed, the whole dir moved away
and back, deleted and made again.

Each case must end with a clear line in the log (once, not at every scan while it lasts), no lost job, no
torn file, and recovery once the fault is gone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import JOBRUNNER, Daemon, DataDir, assert_counts_completed, lines_with, wait_for

pytestmark = pytest.mark.usefixtures("keys_never_leak")

# root without the capabilities that let it ignore permissions: the daemon then meets them as its service
# user does (the real process, under setpriv; nothing of jobrunner is changed)
NO_DAC = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--")


def drop_counts(data: DataDir, n: int, steps: int = 10, step_seconds: float = 0.2) -> None:
    for i in range(n):
        data.drop(f"c{i}.json", {"type": "count", "id": f"c{i}", "steps": steps, "step_seconds": step_seconds})


def chmod_tree(root: Path, dirs: int, files: int) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, dirs)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), files)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv (to run the daemon without CAP_DAC_OVERRIDE)")
def test_permissions_taken_away_under_the_daemon_and_given_back(data: DataDir,
                                                                daemons: Callable[..., Daemon]) -> None:
    d = daemons(wrap=NO_DAC)
    drop_counts(data, 3)
    wait_for(lambda: all(data.steps_done(f"c{i}") >= 1 for i in range(3)), 20, "the jobs to be running")
    chmod_tree(data.jobs, 0o555, 0o444)  # no status, step or results write can be made
    os.chmod(data.queue, 0o555)  # and no file can be taken from the queue
    data.drop("late.json", {"type": "noop", "id": "late"})
    try:
        wait_for(lambda: len(lines_with(d.output(), "could not record the job's outcome")) == 3, 20,
                 "each job to fail to record its outcome")
        wait_for(lambda: lines_with(d.output(), "cannot take late.json from the queue"), 10, "the claim to fail")
        time.sleep(6)  # a recovery round fails too, and must not say so at every round
        assert d.alive
        assert data.status("late") is None
    finally:
        chmod_tree(data.jobs, 0o755, 0o644)
        os.chmod(data.queue, 0o755)
    assert_counts_completed(data, 3, 10)
    assert data.wait_status("late", timeout=20)["status"] == "completed"
    log = d.output()
    assert "Permission denied" in lines_with(log, "[c0] could not record the job's outcome")[0]
    assert len(lines_with(log, "cannot take late.json from the queue")) == 1
    for i in range(3):
        assert len(lines_with(log, f"[c{i}] could not record the job's outcome")) == 1
        assert len(lines_with(log, f"[c{i}] could not recover")) <= 1
    assert "Traceback" not in log
    assert d.term() == 0


def test_the_data_dir_moved_away_and_back(data: DataDir, daemons: Callable[..., Daemon], tmp_path: Path) -> None:
    """As when its disk is unmounted for a moment, or an operator moves it by mistake: the daemon says once
    that it is gone, makes nothing in its place (a step or a results file must not make the data dir again),
    and carries on when it is back."""
    d = daemons()
    drop_counts(data, 3)
    wait_for(lambda: all(data.steps_done(f"c{i}") >= 1 for i in range(3)), 20, "the jobs to be running")
    away = tmp_path / "away"
    os.rename(data.root, away)
    try:
        wait_for(lambda: lines_with(d.output(), "is gone (moved, deleted or unmounted)"), 10, "the daemon to notice")
        time.sleep(3)
        assert not data.root.exists(), "something made the data dir again while it was away"
    finally:
        os.rename(away, data.root)
    wait_for(lambda: lines_with(d.output(), "is back; going on"), 10, "the daemon to notice it is back")
    assert_counts_completed(data, 3, 10)
    log = d.output()
    assert len(lines_with(log, "is gone (moved")) == 1
    assert len(lines_with(log, "scanning the spool failed")) <= 1
    assert "Traceback" not in log
    assert d.alive and d.term() == 0


def test_the_data_dir_deleted_and_made_again(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    """Deleted (its jobs with it: that is the operator's doing), then made again by a `jobrunner submit`: the
    daemon does not work in a directory it did not start on; it stops with status 1 (systemd's
    Restart=on-failure starts it again), and the next daemon runs the new job."""
    d = daemons()
    drop_counts(data, 2)
    wait_for(lambda: all(data.steps_done(f"c{i}") >= 1 for i in range(2)), 20, "the jobs to be running")
    while data.root.exists():
        shutil.rmtree(data.root, ignore_errors=True)
    wait_for(lambda: lines_with(d.output(), "is gone (moved, deleted or unmounted)"), 10, "the daemon to notice")
    out = subprocess.run([*JOBRUNNER, "submit", "-"], input='{"type": "noop", "id": "new"}',
                         env=data.env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert d.wait(30) == 1
    log = d.output()
    assert len(lines_with(log, "was replaced by another directory while the daemon ran")) == 1
    assert "Traceback" not in log
    assert not (data.jobs / "c0.json").exists()  # the old jobs are not made up again
    d2 = daemons()
    assert data.wait_status("new", timeout=20)["status"] == "completed"
    assert d2.term() == 0
