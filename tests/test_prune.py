"""`jobrunner prune` and `run --retention`: final jobs go, everything else stays. Real daemon, real CLI."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable

from conftest import Daemon, DataDir, run_burst, wait_for

from jobrunner.layout import Layout

FAR = "2099-01-01T00:00:00Z"


def make_jobs(data: DataDir) -> Layout:
    """A completed, a failed (permanent error), a cancelled and a pending job; plus a rejected file."""
    layout = Layout(data.root)
    data.drop("a.json", {"type": "count", "id": "done1", "steps": 2})
    data.drop("b.json", {"type": "flaky", "id": "bad1", "permanent": True})
    data.drop("c.json", {"type": "noop", "id": "later1", "not_before": FAR})
    data.drop("d.json", b"{not json")
    assert run_burst(data).returncode == 0
    data.drop("e.json", {"type": "noop", "id": "gone1", "not_before": FAR})
    assert run_burst(data).returncode == 0
    assert data.cli("cancel", "gone1").returncode == 0
    assert {j: data.status(j)["status"] for j in ("done1", "bad1", "later1", "gone1")} == {  # type: ignore[index]
        "done1": "completed", "bad1": "failed", "later1": "pending", "gone1": "cancelled"}
    assert layout.job_dir("done1").is_dir() and layout.request("done1").exists()
    return layout


def test_prune_deletes_final_jobs_only_and_dry_run_deletes_nothing(data: DataDir) -> None:
    layout = make_jobs(data)
    time.sleep(1.2)
    out = data.cli("prune", "--older-than", "1s", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert sorted(line.strip() for line in out.stdout.splitlines()[:-1]) == ["bad1", "done1", "gone1"]
    assert out.stdout.splitlines()[-1].startswith("would prune 3 job(s), ")
    assert all(data.status(j) for j in ("done1", "bad1", "gone1"))

    out = data.cli("prune", "--older-than", "1s", "--status", "failed", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["jobs"] == ["bad1"]
    assert data.status("bad1") is None and not layout.request("bad1").exists()
    assert data.cli("status", "bad1").returncode == 4

    out = data.cli("prune", "--older-than", "1h")
    assert out.returncode == 0 and out.stdout.startswith("pruned 0 job(s)"), out.stdout
    out = data.cli("prune", "--older-than", "1s", "--status", "completed,cancelled,rejected")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("pruned 2 job(s) and 1 rejected request(s), "), out.stdout
    for job_id in ("done1", "gone1"):
        assert data.status(job_id) is None
        assert not layout.job_dir(job_id).exists() and not layout.request(job_id).exists()
    assert os.listdir(layout.rejected) == []
    # the pending job is untouched, whatever its age
    assert data.status("later1")["status"] == "pending"  # type: ignore[index]
    assert layout.deferred_request("later1").exists()
    # the stats ledger forgot them; the listing does not show them
    assert not any(j in layout.ledger.read_text() for j in ("done1", "bad1", "gone1") if layout.ledger.exists())
    listed = json.loads(data.cli("status", "--json").stdout)["jobs"]
    assert {d["id"] for d in listed} == {"later1"}
    # an id that was pruned is free again
    data.drop("again.json", {"type": "noop", "id": "done1"})
    assert run_burst(data).returncode == 0
    assert data.status("done1")["status"] == "completed"  # type: ignore[index]


def test_a_job_whose_request_is_being_taken_is_kept(data: DataDir) -> None:
    layout = make_jobs(data)
    time.sleep(1.2)
    fd = os.open(layout.request("done1"), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what `jobrunner retry` holds while it takes it
        out = data.cli("prune", "--older-than", "1s")
    finally:
        os.close(fd)
    assert out.returncode == 0
    assert "kept done1: its request is being taken by another process" in out.stderr
    assert data.status("done1") is not None and data.status("bad1") is None


def test_bad_arguments_are_usage_errors(data: DataDir) -> None:
    make_jobs(data)
    for args in (["--older-than", "soon"], ["--older-than", "all"], ["--older-than", "1d", "--status", "running"],
                 ["--older-than", "1d", "--status", "pending"]):
        out = data.cli("prune", *args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
    assert all(data.status(j) for j in ("done1", "bad1", "gone1", "later1"))


def test_the_daemon_prunes_with_retention(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    layout = make_jobs(data)
    time.sleep(2.2)
    d = daemons("--retention", "2s")
    wait_for(lambda: data.status("done1") is None and data.status("bad1") is None and data.status("gone1") is None,
             20, "the daemon to prune the old jobs")
    assert "pruned 3 job(s) finished over 2s ago" in d.output()
    assert data.status("later1")["status"] == "pending"  # type: ignore[index]
    assert os.listdir(layout.rejected)  # not asked for: kept
    # a job finishing now is young: it stays
    data.drop("n.json", {"type": "noop", "id": "fresh"})
    assert data.wait_status("fresh")["status"] == "completed"
    assert d.term() == 0
    assert data.status("fresh") is not None
    out = data.cli("run", "--retention", "forever", "--burst")
    assert out.returncode == 2 and "--retention" in out.stderr
