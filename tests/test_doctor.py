"""`doctor`: each check on a real data dir, with the real daemon where a daemon matters.

What a user must get from each problem: the right check not ok, at the right severity, with a summary that
names what was found and a fix they can act on; and doctor itself must change nothing (no write, no
rename, no lock kept) and never show a key.

A live daemon is the real `jobrunner run`; where a test needs one that does nothing (so the state under
test stays put), it holds a worker lock itself, exactly as a daemon does: an flock on
queue/.claimed/<worker>.lock with its pid inside. A stale heartbeat is shown by moving the clock doctor
reads (``now``) or by setting the lock file's mtime.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Daemon, DataDir, run_burst, wait_for

from jobrunner.doctor import Check, exit_code, render, run_checks, to_json
from jobrunner.layout import Layout

SECRET = "sk-live-7f3a9c2e41d8b6"


def checks(root: Path, *, now: float | None = None, environ: dict[str, str] | None = None) -> dict[str, Check]:
    found = run_checks(Layout(root), now=now, environ={} if environ is None else environ)
    assert len({c.name for c in found}) == len(found)
    return {c.name: c for c in found}


def made(data: DataDir) -> Layout:
    """A data dir as a daemon's first start leaves it."""
    layout = Layout(data.root)
    layout.ensure()
    return layout


@contextlib.contextmanager
def live_lock(layout: Layout, worker: str = "20261203T180000-4242-abcdef") -> Iterator[Path]:
    """A daemon that is alive and does nothing: its lock, held the way WorkerLock holds it."""
    path = layout.worker_lock(worker)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{os.getpid()}\n".encode())
    layout.worker_dir(worker).mkdir(exist_ok=True)
    try:
        yield path
    finally:
        os.close(fd)
        os.unlink(path)
        shutil.rmtree(layout.worker_dir(worker), ignore_errors=True)


def dead_lock(layout: Layout, pid: int = 999_999, worker: str = "20261203T170000-999999-0badc0") -> Path:
    """What a daemon killed with -9 leaves: its lock file (no one holds it) and its claim folder."""
    path = layout.worker_lock(worker)
    path.write_text(f"{pid}\n")
    layout.worker_dir(worker).mkdir()
    return path


def unlocked(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def snapshot(root: Path) -> dict[str, tuple[int, int, int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_ino, st.st_size, st.st_mtime_ns,
                                                                        st.st_ctime_ns)
    return out


def noop(job_id: str, **fields: object) -> dict[str, object]:
    return {"type": "noop", "id": job_id, **fields}


# --------------------------------------------------------------------------------------------------
# data-dir


def test_no_data_dir_is_one_failure_with_one_fix(tmp_path: Path) -> None:
    for root in (tmp_path / "nowhere", tmp_path):  # missing; a dir without queue/ and jobs/
        found = run_checks(Layout(root), environ={})
        assert [c.name for c in found] == ["data-dir"]
        assert not found[0].ok and found[0].severity == "error"
        assert "--data-dir" in (found[0].fix or "") and "jobrunner run" in (found[0].fix or "")
        assert exit_code(found) == 1
        assert render(found).startswith(f"[FAIL] data-dir: {root}")


# --------------------------------------------------------------------------------------------------
# daemon and stuck-pending, with no daemon


def test_no_daemon_and_queued_files_say_start_the_daemon(data: DataDir) -> None:
    made(data)
    data.drop("a.json", noop("a"))
    data.drop("b.json", noop("b"))
    found = checks(data.root)
    assert not found["daemon"].ok and found["daemon"].severity == "warning"
    assert "no daemon is running" in found["daemon"].summary
    stuck = found["stuck-pending"]
    assert not stuck.ok and stuck.severity == "error"
    assert "nothing is running them: 2 queued" in stuck.summary
    assert stuck.fix and "start the daemon" in stuck.fix and "systemctl start jobrunner" in stuck.fix
    assert exit_code(list(found.values())) == 1
    assert "[FAIL] stuck-pending: nothing is running them" in render(list(found.values()))


def test_a_dead_daemons_lock_is_reported_and_left_alone(data: DataDir) -> None:
    layout = made(data)
    lock = dead_lock(layout, pid=999_999)
    (layout.worker_dir("20261203T170000-999999-0badc0") / "x.json").write_text("{}")
    before = snapshot(data.root)
    found = checks(data.root)
    daemon = found["daemon"]
    assert "1 stopped daemon left its lock behind (pid 999999): recovered at the next daemon start" in daemon.summary
    assert daemon.severity == "warning"  # no daemon runs at all: that is the warning; the leftovers are a note
    assert "nothing is running them: 1 claimed by a stopped daemon" in found["stuck-pending"].summary
    assert snapshot(data.root) == before  # read-only: not a rename, not a touch
    assert unlocked(lock)  # and no lock kept
    # beside a live daemon, leftovers are only a note
    with live_lock(layout) as alive:
        before = snapshot(data.root)
        daemon = checks(data.root)["daemon"]
        assert not daemon.ok and daemon.severity == "info", daemon
        assert daemon.summary.startswith(f"1 running (pid {os.getpid()}, heartbeat 0s ago)")
        assert "a running daemon recovers them within seconds" in daemon.summary
        assert snapshot(data.root) == before
        assert not unlocked(alive)
    assert unlocked(lock)


def test_orphaned_active_job_left_by_a_crash(data: DataDir) -> None:
    layout = made(data)
    data.drop("job.json", noop("orphan"))
    assert run_burst(data, env={"JOBRUNNER_FAILPOINT": "accepted"}).returncode == -signal.SIGKILL
    assert (layout.active / "orphan.json").exists()
    before = snapshot(data.root)
    found = checks(data.root)
    stuck = found["stuck-pending"]
    assert stuck.severity == "error" and "1 orphaned active job (orphan: a daemon died running it)" in stuck.summary
    assert stuck.fix and "start the daemon" in stuck.fix
    assert "recovered at the next daemon start" in found["daemon"].summary
    assert snapshot(data.root) == before
    with live_lock(layout):
        stuck = checks(data.root)["stuck-pending"]
        assert stuck.severity == "info" and "orphaned active job" in stuck.summary
        assert stuck.fix and "a running daemon recovers them" in stuck.fix
    # doctor took nothing: the next start recovers the job (counts the attempt, defers it with backoff)
    assert run_burst(data).returncode == 0
    recovered = data.status("orphan")
    assert recovered is not None and recovered["history"][0]["outcome"] == "interrupted"
    assert not (layout.active / "orphan.json").exists()


# --------------------------------------------------------------------------------------------------
# the real daemon


def test_live_daemon_is_ok_with_its_pid_and_a_stale_heartbeat_is_a_warning(data: DataDir,
                                                                           daemons: Callable[..., Daemon]) -> None:
    d = daemons()
    assert d.proc is not None
    pid = d.proc.pid
    later = "2099-01-01T00:00:00Z"
    data.drop("later.json", noop("later", not_before=later))
    wait_for(lambda: (data.queue / ".deferred" / "later.json").exists(), what="the job to be deferred")
    found = checks(data.root)
    daemon = found["daemon"]
    assert daemon.ok, daemon
    assert daemon.summary.startswith(f"1 running (pid {pid}, heartbeat ") and daemon.fix is None
    assert found["spool-writable"].ok
    assert found["inotify"].ok  # and the daemon holds its inotify instance (read from /proc/<pid>/fd)
    stuck = found["stuck-pending"]
    assert stuck.severity == "info", stuck
    assert "0 running (concurrency 16)" in stuck.summary
    assert "1 deferred, not due yet: next later at 2099-01-01T00:00:00Z" in stuck.summary
    assert "not_before" in stuck.summary
    assert exit_code(list(found.values())) == 0

    # the heartbeat is the lock file's mtime: 2 minutes without one is a hung daemon
    hung = checks(data.root, now=time.time() + 120)["daemon"]
    assert hung.severity == "warning" and f"pid {pid}: last heartbeat 2m ago: hung?" in hung.summary
    assert hung.fix and f"kill {pid}" in hung.fix and "WatchdogSec=" in hung.fix
    d.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T", 5, "SIGSTOP")
        stopped = checks(data.root, now=time.time() + 120)["daemon"]
        assert f"pid {pid} is stopped" in stopped.summary and stopped.fix == f"let it go on: kill -CONT {pid}."
    finally:
        d.signal(signal.SIGCONT)

    # killed: its lock stays behind, and the deferred job has no one to start it
    d.kill()
    found = checks(data.root)
    assert "no daemon is running" in found["daemon"].summary
    assert "recovered at the next daemon start" in found["daemon"].summary
    assert found["stuck-pending"].severity == "warning"
    assert "no daemon is running to start them then" in found["stuck-pending"].summary


def test_concurrency_full_is_why_files_wait(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    daemons("--concurrency", "1")
    data.drop("long.json", noop("long", steps=60, step_seconds=0.25))
    data.wait_status("long", ("running",))
    data.drop("b.json", noop("b"))
    data.drop("c.json", noop("c"))
    # taken from queue/ at once (validated, waiting for a slot in the daemon's claim folder)
    wait_for(lambda: not list(data.queue.glob("*.json")), what="the files to be claimed")
    now = checks(data.root)["stuck-pending"]
    assert now.ok and "1 running (concurrency 1)" in now.summary and "2 queued, being taken" in now.summary
    stuck = checks(data.root, now=time.time() + 120)["stuck-pending"]
    assert stuck.severity == "warning"
    assert "2 queued for over 60 s" in stuck.summary
    assert "running 1 = concurrency 1: the rest wait their turn" in stuck.summary
    assert stuck.fix and "--concurrency N" in stuck.fix


# --------------------------------------------------------------------------------------------------
# deferred jobs


def test_deferred_jobs_due_and_not_yet_due(data: DataDir) -> None:
    layout = made(data)
    now = time.time()
    for job_id, due in (("soon", now + 3600), ("overdue", now - 300)):
        path = layout.deferred / f"{job_id}.json"
        path.write_text(json.dumps(noop(job_id)))
        os.utime(path, (due, due))
    found = checks(data.root, now=now)
    stuck = found["stuck-pending"]
    assert stuck.severity == "error"
    assert "nothing is running them: 1 deferred and due (oldest due 5m ago)" in stuck.summary
    assert "1 deferred, not due yet: next soon at" in stuck.summary and "(in 1.0h" in stuck.summary
    with live_lock(layout):
        stuck = checks(data.root, now=now)["stuck-pending"]
        assert stuck.severity == "warning", stuck
        assert "1 deferred job due for over 60 s (oldest overdue, due 5m ago)" in stuck.summary
        assert stuck.fix and "journalctl" in stuck.fix  # a live daemon, not busy, not hung: its log says why
        (layout.deferred / "overdue.json").unlink()
        stuck = checks(data.root, now=now)["stuck-pending"]
        assert stuck.severity == "info" and "next soon at" in stuck.summary
        assert exit_code(run_checks(layout, now=now, environ={})) == 0


def test_stale_heartbeat_set_on_the_lock_file(data: DataDir) -> None:
    layout = made(data)
    with live_lock(layout) as lock:
        old = time.time() - 95
        os.utime(lock, (old, old))
        daemon = checks(data.root)["daemon"]
        assert daemon.severity == "warning"
        assert f"pid {os.getpid()}: last heartbeat 2m ago: hung? (systemd's watchdog restarts it; else kill it)" \
            in daemon.summary


# --------------------------------------------------------------------------------------------------
# spool-writable: needs another user (root passes every os.access)

PROBE = """
import os, sys
from pathlib import Path
from jobrunner import doctor, errors, listing
from jobrunner.layout import Layout
from jobrunner.providers import config
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
print(doctor.to_json(doctor.run_checks(Layout(Path(sys.argv[1])), environ={})))
"""


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A data dir another user can reach (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="jobrunner-doctor-"))
    base.chmod(0o755)
    try:
        yield base / "data"
    finally:
        shutil.rmtree(base)


def as_nobody(root: Path) -> dict[str, dict[str, object]]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(root)], capture_output=True, text=True, timeout=30,
                         cwd="/")
    assert out.returncode == 0, out.stderr
    return {c["name"]: c for c in json.loads(out.stdout)["checks"]}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the check as another user (nobody)")
def test_spool_not_writable_by_this_user_says_how_to_get_access(shared_root: Path) -> None:
    layout = Layout(shared_root)
    layout.ensure()
    layout.queue.chmod(0o555)
    check = as_nobody(shared_root)["spool-writable"]
    assert check["ok"] is False and check["severity"] == "error"
    assert f"user nobody cannot create files in {layout.queue} (owner root, group root, mode dr-xr-xr-x)" \
        == check["summary"]
    assert "sudo -u root jobrunner submit FILE" in str(check["fix"])
    # writable by a group nobody is not in: join it
    gid = 1
    group = grp.getgrgid(gid).gr_name
    os.chown(layout.queue, 0, gid)
    layout.queue.chmod(0o775)
    os.chown(layout.staging, 0, gid)
    layout.staging.chmod(0o775)
    check = as_nobody(shared_root)["spool-writable"]
    assert check["ok"] is False
    assert f"sudo usermod -aG {group} nobody, then log out and in again" in str(check["fix"])
    # and once it may write, it is fine
    layout.queue.chmod(0o777)
    layout.staging.chmod(0o777)
    assert as_nobody(shared_root)["spool-writable"]["ok"] is True


# The real daemon as nobody. The interpreter's standard library is under /root here, which nobody cannot
# read: what the daemon imports lazily is imported before the switch (a ModuleNotFoundError in the log
# means this list needs one more module).
DAEMON_AS_NOBODY = """
import asyncio, asyncio.unix_events, concurrent.futures.thread, hashlib, json, logging, os, sys, tomllib, zlib
import httpx
import watchdog.observers, watchdog.observers.inotify
from jobrunner import checkpoint, cli, context, durable, index, recovery, results, retry, supervisor, worker
from jobrunner.handlers import load_handlers
from jobrunner.providers import config
load_handlers()
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
sys.argv = ["jobrunner", "run", "--data-dir", sys.argv[1], "--rescan", "0.2"]
cli.main()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the daemon as another user (nobody)")
def test_a_daemon_that_may_not_take_files_from_the_queue(shared_root: Path) -> None:
    shared_root.mkdir()
    os.chown(shared_root, 65534, 65534)
    log_path = shared_root.parent / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", DAEMON_AS_NOBODY, str(shared_root)], stdout=log,
                                stderr=subprocess.STDOUT, cwd="/")
    try:
        wait_for(lambda: b"ready:" in log_path.read_bytes() or proc.poll() is not None, 30, "daemon ready")
        assert proc.poll() is None, log_path.read_text()
        layout = Layout(shared_root)
        os.chown(layout.queue, 0, 0)  # what a `sudo cp -r` of a data dir or a `sudo chown -R root` leaves
        staged = shared_root.parent / "req.json"
        staged.write_text(json.dumps(noop("waits")))
        os.rename(staged, layout.queue / "req.json")
        wait_for(lambda: b"cannot take req.json from the queue" in log_path.read_bytes(), 10, "the daemon to try")
        stuck = checks(shared_root, now=time.time() + 120)["stuck-pending"]
        assert stuck.severity == "warning", stuck
        assert "1 queued for over 60 s (oldest req.json, 2m)" in stuck.summary
        assert (f"the daemon (pid {proc.pid}, user nobody) cannot take files from {layout.queue} (owner root, "
                "group root, mode drwxr-xr-x)") in stuck.summary
        assert stuck.fix and f"sudo chown nobody {layout.queue}" in stuck.fix
        assert checks(shared_root)["daemon"].ok  # it is alive and beating; it just cannot work
        # "make it writable for everyone" the way /tmp is: the sticky bit still keeps root's file from it
        layout.queue.chmod(0o1777)
        stuck = checks(shared_root, now=time.time() + 120)["stuck-pending"]
        assert (f"{layout.queue} has the sticky bit (mode drwxrwxrwt): the daemon (user nobody) may not move the "
                "1 file(s) other users own") in stuck.summary
        assert stuck.fix and f"sudo chmod -t {layout.queue}" in stuck.fix
    finally:
        proc.kill()
        proc.wait(10)


# --------------------------------------------------------------------------------------------------
# provider-keys: never a key in the output


def test_bad_config_file_is_an_error_with_its_message_and_no_key(data: DataDir, tmp_path: Path) -> None:
    made(data)
    config = tmp_path / "jobrunner.toml"
    config.write_text(f'[providers.linkedin]\nkey = "{SECRET}\nrate = "5/60"\n')  # an unterminated string
    env = {"JOBRUNNER_CONFIG": str(config), "JOBRUNNER_SKIPTRACE_KEY": SECRET}
    found = run_checks(Layout(data.root), environ=env)
    check = {c.name: c for c in found}["provider-keys"]
    assert not check.ok and check.severity == "error"
    assert f"config file {config} (JOBRUNNER_CONFIG) is not valid TOML" in check.summary
    assert check.fix and str(config) in check.fix
    assert exit_code(found) == 1
    for text in (render(found), to_json(found)):
        assert SECRET not in text and SECRET[3:12] not in text


def test_provider_keys_say_which_are_missing_and_where_a_key_comes_from(data: DataDir, tmp_path: Path) -> None:
    layout = made(data)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "carrier_key").write_text(SECRET + "\n")
    env = {"JOBRUNNER_LINKEDIN_KEY": SECRET, "JOBRUNNER_SKIPTRACE_KEY": "  ", "CREDENTIALS_DIRECTORY": str(creds)}
    # a key that ends up in something doctor shows (a reason a client's request caused) is masked too
    (layout.rejected / "x.json").write_text("{}")
    (layout.rejected / "x.json.reason").write_text(json.dumps({"reason": f"field token: {SECRET} is not allowed",
                                                               "error": "InvalidRequest"}))
    found = run_checks(layout, environ=env)
    check = {c.name: c for c in found}["provider-keys"]
    assert check.severity == "warning"
    assert "linkedin (key from $JOBRUNNER_LINKEDIN_KEY)" in check.summary
    assert "carrier (key from the systemd credential carrier_key)" in check.summary
    assert "skiptrace (key (JOBRUNNER_SKIPTRACE_KEY is set but blank); enrich jobs need it)" in check.summary
    assert "dnc (key and URL; enrich jobs need it)" in check.summary
    assert check.fix and "JOBRUNNER_DNC_URL" in check.fix and "JOBRUNNER_LINKEDIN_KEY" not in check.fix
    assert "field token: ******** is not allowed" in {c.name: c for c in found}["rejected"].summary
    for text in (render(found), to_json(found)):
        assert SECRET not in text


# --------------------------------------------------------------------------------------------------
# the machine: disk and inotify (real, not faked)


def test_disk_space_and_inotify_are_ok_here(data: DataDir) -> None:
    made(data)
    found = checks(data.root)
    disk = found["disk-space"]
    assert disk.ok and disk.fix is None, disk
    assert " free of " in disk.summary
    inotify = found["inotify"]
    assert inotify.ok, inotify
    assert "max_queued_events" in inotify.summary and "max_user_instances" in inotify.summary


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs")
def test_a_small_disk_is_an_error_with_what_to_delete(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,nr_inodes=2000", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        layout = Layout(mnt / "data")
        layout.ensure()
        disk = checks(layout.root)["disk-space"]
        assert not disk.ok and disk.severity == "error", disk
        assert disk.summary.startswith("8.0 MiB free of 8.0 MiB (100%); too little to write status files")
        assert "inodes free; every job needs a few files: few inodes left" in disk.summary
        assert disk.fix and "queue/.done/" in disk.fix and "grow the disk" in disk.fix
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_low_inotify_limits_are_a_warning_with_the_sysctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          data: DataDir) -> None:
    from jobrunner import doctor

    made(data)
    fake = tmp_path / "inotify"  # the kernel's limits are the machine's: not ours to lower for a test
    fake.mkdir()
    for name, value in (("max_user_watches", 8192), ("max_user_instances", 4), ("max_queued_events", 1024)):
        (fake / name).write_text(f"{value}\n")
    monkeypatch.setattr(doctor, "INOTIFY", fake)
    check = checks(data.root)["inotify"]
    assert check.severity == "warning"
    assert "max_user_instances 4, max_queued_events 1024" in check.summary
    assert "falls back to scanning" in check.summary
    assert check.fix and "sudo sysctl -w fs.inotify.max_queued_events=16384 fs.inotify.max_user_instances=128" \
        in check.fix


# --------------------------------------------------------------------------------------------------
# rejected


def test_rejected_requests_name_the_newest_reason(data: DataDir) -> None:
    layout = made(data)
    data.drop("broken.json", b'{"type": "noop", ')
    data.drop("nosuch.json", {"type": "no-such-type", "id": "x1"})
    data.drop("first.json", noop("same"))
    assert run_burst(data).returncode == 0
    data.drop("again.json", noop("same"))
    assert run_burst(data).returncode == 0
    reasons = data.rejected()
    assert set(reasons) == {"broken.json", "nosuch.json", "again.json"}
    check = checks(data.root)["rejected"]
    assert not check.ok and check.severity == "warning"
    assert check.summary.startswith("3 in the last 24 h (2 invalid, 1 duplicate id); newest: ")
    newest = check.summary.split("newest: ", 1)[1].split(":", 1)[0]
    assert newest in ("broken.json", "nosuch.json")  # the newest that needs fixing, not the duplicate
    assert reasons[newest]["reason"][:150] in check.summary
    assert check.fix and f"queue/.rejected/{newest}.reason" in check.fix and "drop it again" in check.fix
    later = checks(data.root, now=time.time() + 2 * 86400)["rejected"]
    assert later.ok and later.summary == "none in the last 24 h (3 older in queue/.rejected/)"
    # only duplicates: a note (resubmitting an id is how idempotency works)
    for name in ("broken.json", "nosuch.json"):
        (layout.rejected / name).unlink()
        (layout.rejected / f"{name}.reason").unlink()
    only = checks(data.root)["rejected"]
    assert only.severity == "info" and "1 in the last 24 h (0 invalid, 1 duplicate id)" in only.summary


def test_webhooks_waiting_and_how_old(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    import socket

    assert checks(data.root)["webhooks"].summary == "none waiting"
    silent = socket.socket()  # a receiver that takes the connection and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        daemon = daemons()
        data.drop("w.json", noop("hooked", notify_url=f"http://127.0.0.1:{silent.getsockname()[1]}/hook"))
        data.wait_status("hooked")
        daemon.kill()  # mid-delivery: the entry stays for the next daemon
    finally:
        silent.close()
    now = checks(data.root)["webhooks"]
    assert now.severity == "info" and now.summary.startswith("1 delivery waiting in jobs/.outbox/, the oldest for ")
    assert now.summary.endswith("(job hooked)")
    later = checks(data.root, now=time.time() + 3600)["webhooks"]
    assert not later.ok and later.severity == "warning" and later.summary.startswith("1 delivery waiting")
    assert later.fix == "start the daemon: it posts them at start-up."


# --------------------------------------------------------------------------------------------------
# render and exit code


def test_render_is_ascii_with_fixes_under_problems() -> None:
    found = [
        Check("daemon", True, "1 running (pid 123, heartbeat 2s ago)", None, "info"),
        Check("rejected", False, "1 in the last 24 h; newest: a.json: bad", "fix it.", "warning"),
        Check("spool-writable", False, "user bob cannot create files", "sudo usermod -aG jobs bob.", "error"),
        Check("stuck-pending", False, "1 deferred, not due yet", "nothing to do.", "info"),
    ]
    text = render(found)
    text.encode("ascii")
    assert text.splitlines() == [
        "[ok]   daemon: 1 running (pid 123, heartbeat 2s ago)",
        "[WARN] rejected: 1 in the last 24 h; newest: a.json: bad",
        "       fix: fix it.",
        "[FAIL] spool-writable: user bob cannot create files",
        "       fix: sudo usermod -aG jobs bob.",
        "[info] stuck-pending: 1 deferred, not due yet",
        "       fix: nothing to do.",
        "1 error, 1 warning",
    ]
    assert exit_code(found) == 1
    assert exit_code(found[:2] + found[3:]) == 0
    assert render(found[:1]).endswith("all good\n")
    assert render(found[3:]).endswith("all good (see the notes above)\n")
    doc = json.loads(to_json(found))
    assert doc["ok"] is False and doc["exit_code"] == 1
    assert doc["checks"][2] == {"name": "spool-writable", "ok": False, "summary": "user bob cannot create files",
                                "fix": "sudo usermod -aG jobs bob.", "severity": "error"}


def test_names_with_control_characters_are_shown_escaped(data: DataDir) -> None:
    layout = made(data)
    (layout.rejected / "evil\x1b[2J.json").write_text("{}")
    (layout.rejected / "evil\x1b[2J.json.reason").write_text(json.dumps({"reason": "bad\nline"}))
    check = checks(data.root)["rejected"]
    assert "\x1b" not in check.summary and "\n" not in check.summary
    assert "evil\\x1b[2J.json: bad\\nline" in check.summary
