"""A hostile spool: input meant to make the daemon read, write or run what it should not, through the real
daemon. (The bad-input cases every client can make by mistake are in test_bad_input.py; the burst of
40,000 small files in test_load.py.)

- hard links to files the daemon can read, a request naming a path, files of owners outside the
  producers' group (``run --producers``), a world-writable spool;
- a request as large as the limit allows;
- fuzzing: any bytes through the request parser (in-process), and any bytes under any name through the
  real daemon: each file is run or rejected with a reason, the daemon never crashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, DataDir, run_burst, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobrunner.errors import InvalidRequest
from jobrunner.handlers import load_handlers
from jobrunner.layout import Layout
from jobrunner.request import JobRequest, decode, validate

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to other users)")
pytestmark = pytest.mark.usefixtures("keys_never_leak")


def fingerprint(path: Path) -> tuple[int, int, int, str]:
    st_ = os.stat(path)
    return st_.st_ino, st_.st_mtime_ns, st_.st_nlink, hashlib.sha256(path.read_bytes()).hexdigest()


def assert_never_copied(data: DataDir, secret: bytes) -> None:
    """No file the daemon wrote holds ``secret`` (the bytes of a file it must not have read)."""
    for dirpath, _dirs, files in os.walk(data.root):
        for name in files:
            path = Path(dirpath, name)
            if path.is_symlink() or path.stat().st_nlink > 1:
                continue  # the planted link itself, kept as it was
            assert secret not in path.read_bytes(), f"{path} holds a copy"


# --------------------------------------------------------------------------------------------------
# hard links


def test_hard_links_to_files_the_daemon_can_read_are_refused_and_left_alone(data: DataDir, tmp_path: Path) -> None:
    assert run_burst(data).returncode == 0  # its folders
    outside = tmp_path / "someone-elses.json"
    outside.write_bytes(json.dumps({"type": "noop", "id": "via-link"}).encode())
    data.drop("s.json", {"type": "noop", "id": "victim"})
    assert run_burst(data).returncode == 0
    victim_status = data.jobs / "victim.json"
    targets = {"link-outside.json": outside, "link-status.json": victim_status}
    if os.stat("/etc/passwd").st_dev == os.stat(data.queue).st_dev:
        targets["link-passwd.json"] = Path("/etc/passwd")
    before = {name: fingerprint(target) for name, target in targets.items()}
    for name, target in targets.items():
        os.link(target, data.queue / name)
    out = run_burst(data)
    assert out.returncode == 0, out.stderr
    notes = data.rejected()
    assert set(notes) == set(targets), out.stderr
    for name, target in targets.items():
        assert "other hard links" in notes[name]["reason"]
        kept = data.queue / ".rejected" / name
        assert os.path.samefile(kept, target)  # the link itself was set aside, nothing was copied
        ino, mtime, nlink, digest = before[name]
        assert fingerprint(target) == (ino, mtime, nlink + 1, digest)  # untouched (one more link: ours)
    assert data.status("via-link") is None
    assert data.status("victim")["status"] == "completed" and data.status("victim")["attempt"] == 1
    if "link-passwd.json" in targets:
        assert_never_copied(data, Path("/etc/passwd").read_bytes())


# --------------------------------------------------------------------------------------------------
# the daemon's own folders, planted in the spool before it made them


@pytest.mark.parametrize("plant", ["symlink", "file", "owned-by-another"])
def test_a_spool_folder_planted_by_a_producer_keeps_the_daemon_from_starting(data: DataDir, plant: str) -> None:
    """Producers may create entries in the spool. ``.rejected`` planted as a symlink to jobs/ made the daemon
    move producers' files among the status files (which only it may write); a folder of another user's
    would let that user delete accepted jobs. The daemon refuses to start, saying which and what to do."""
    planted = data.queue / ".rejected"
    if plant == "symlink":
        os.symlink("../jobs", planted)
    elif plant == "file":
        planted.write_bytes(b"")
    else:
        if os.geteuid() != 0:
            pytest.skip("needs root (chown to another user)")
        planted.mkdir()
        os.chown(planted, 65534, 65534)
    forged = {"schema": 1, "id": "victim", "type": "noop", "status": "completed", "result": {"leads": 10**6}}
    data.drop("victim.json", forged)
    out = run_burst(data)
    assert out.returncode == 78, out.stderr  # a configuration error: systemd does not restart-loop on it
    assert str(planted) in out.stderr and ("remove it" in out.stderr) and "Traceback" not in out.stderr
    assert not list(data.jobs.glob("*.json")), "something was written among the status files"
    assert json.loads((data.queue / "victim.json").read_bytes()) == forged  # untouched, not taken


# --------------------------------------------------------------------------------------------------
# a request naming a path


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "over-the-limit"])
def test_a_request_cannot_make_the_daemon_open_what_is_not_a_list_file(data: DataDir, daemons: Callable[..., Daemon],
                                                                     tmp_path: Path, kind: str) -> None:
    """``enrich``'s ``dnc_list`` is a path a producer writes. A FIFO blocked the daemon's event loop on open()
    (every job stalled, for good); a device or a huge file without a newline would be read into memory."""
    if kind == "fifo":
        target = tmp_path / "list.fifo"
        os.mkfifo(target)
    elif kind == "device":
        target = Path("/dev/zero")
    elif kind == "directory":
        target = tmp_path
    else:
        from jobrunner.providers.dnc import LocalList

        target = tmp_path / "sparse.txt"
        with open(target, "wb") as f:
            f.truncate(LocalList.MAX_BYTES + 1)  # sparse: no disk used, no newline in a GiB of zeros
    d = daemons()
    data.drop("e.json", {"type": "enrich", "id": "named", "leads": [{"name": "Ada Lovelace", "phone": "5125550100"}],
                         "options": {"dnc_list": str(target), "skip_trace": False, "carrier_lookup": False,
                                     "dnc": False}})
    data.drop("n.json", {"type": "noop", "id": "after"})
    doc = data.wait_status("named", ("failed", "completed"), timeout=20)
    assert doc["status"] == "failed" and doc["error"]["type"] == "PermanentError", doc
    assert ("not a regular file" if kind != "over-the-limit" else "the limit is") in doc["error"]["message"]
    assert [h["outcome"] for h in doc["history"]] == ["failed"]  # not retried: the request must change
    assert data.wait_status("after", timeout=10)["status"] == "completed"
    assert d.alive and d.term() == 0


# --------------------------------------------------------------------------------------------------
# owners: the producers' group


@needs_root
def test_files_of_owners_outside_the_producers_group_are_rejected(data: DataDir, daemons: Callable[..., Daemon],
                                                                  tmp_path: Path) -> None:
    """``run --producers daemon``: the group's members (here the user ``daemon``, by its primary group), root
    and the daemon's user are taken; anyone else's file is set aside with a reason naming its owner."""
    import pwd

    member = pwd.getpwnam("daemon").pw_uid
    outsider = pwd.getpwnam("nobody").pw_uid
    d = daemons("--producers", "daemon", start=False)
    staging = tmp_path / "staging"
    staging.mkdir()
    owners = {"by-root": 0, "by-member": member, "by-outsider": outsider, "by-unknown": 54321}
    for name, uid in owners.items():
        path = staging / f"{name}.json"
        path.write_bytes(json.dumps({"type": "noop", "id": name}).encode())
        os.chown(path, uid, -1)
        os.rename(path, data.queue / path.name)
    d.start()
    for name in ("by-root", "by-member"):
        assert data.wait_status(name)["status"] == "completed"
    wait_for(lambda: len(data.rejected()) == 2, 10, "the outsiders' files to be rejected")
    notes = data.rejected()
    reason = notes["by-outsider.json"]["reason"]
    assert "user nobody" in reason and "--producers" in reason
    assert "uid 54321" in notes["by-unknown.json"]["reason"]
    for name in ("by-outsider", "by-unknown"):
        # refused unread: an outsider cannot even take an id (a failed status would keep the id from its owner)
        assert notes[f"{name}.json"]["job_id"] is None and data.status(name) is None
    assert d.term() == 0


def test_an_unknown_producers_group_is_a_configuration_error(data: DataDir) -> None:
    out = run_burst(data, "--producers", "no-such-group-here")
    assert out.returncode == 78, out.stderr
    assert "no-such-group-here: there is no such group" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(("mode", "warned"), [(0o777, True), (0o1777, True), (0o2770, False), (0o755, False)])
def test_a_world_writable_spool_is_warned_about(data: DataDir, mode: int, warned: bool) -> None:
    assert run_burst(data).returncode == 0
    os.chmod(data.queue, mode)
    out = run_burst(data)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if "world-writable" in line]
    assert len(lines) == warned, out.stderr
    if warned:
        assert " WARNING " in lines[0] and "chmod o-w" in lines[0]
        assert ("delete or rename the requests of others" in lines[0]) == (not mode & stat.S_ISVTX)


# --------------------------------------------------------------------------------------------------
# log lines


def test_names_and_fields_from_the_spool_cannot_forge_log_lines(data: DataDir) -> None:
    """A file name, or a field name in a request, holding a newline (found by the fuzzing: a reason that
    spanned lines) went into the daemon's log as it was: a producer could write lines that look like the
    daemon's own. Each message stays one line, its control characters escaped."""
    forged = "\n2026-01-01T00:00:00.000Z ERROR jobrunner.worker: [pay-1] failed: forged\x1b[2J"
    data.drop(f"name{forged}.json", {"type": "nope"})
    data.drop("field.json", {"type": "scrape", "search": {forged: 1}})
    out = run_burst(data)
    assert out.returncode == 0, out.stderr
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR|DEBUG) ")
    assert all(stamp.match(line) for line in out.stderr.splitlines()), out.stderr
    assert "forged" not in "".join(line for line in out.stderr.splitlines() if line.startswith("2026-01-01"))
    assert "\x1b" not in out.stderr
    notes = data.rejected()
    assert len(notes) == 2 and all("\n" not in note["reason"] for note in notes.values()), notes
    assert "\\n2026-01-01" in notes["field.json"]["reason"]  # the field name is shown, escaped


# --------------------------------------------------------------------------------------------------
# giant, but within the limit


def test_a_request_just_under_the_size_limit_runs_and_others_go_on(data: DataDir,
                                                                  daemons: Callable[..., Daemon]) -> None:
    from jobrunner.request import MAX_REQUEST_BYTES

    d = daemons()
    pad = MAX_REQUEST_BYTES - 200
    data.drop("big.json", {"type": "noop", "id": "big", "metadata": {"pad": "x" * pad}})
    for i in range(5):
        data.drop(f"n{i}.json", {"type": "noop", "id": f"small{i}"})
    for i in range(5):
        assert data.wait_status(f"small{i}", timeout=30)["status"] == "completed"
    doc = data.wait_status("big", timeout=60)
    assert doc["status"] == "completed" and len(doc["metadata"]["pad"]) == pad
    assert d.alive and d.term() == 0


# --------------------------------------------------------------------------------------------------
# fuzzing


MODELS = {name: h.request_model for name, h in load_handlers().items()}
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                                              inner, max_size=4),
                    max_leaves=30)
COMMON = ["id", "metadata", "priority", "max_attempts", "not_before", "timeout_s", "search", "max_pages", "leads",
          "options", "names"]


def requests(types: list[str], fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda t, rest: {"type": t, **rest}, st.sampled_from(types) | st.text(max_size=6),
                     st.dictionaries(st.sampled_from(fields),
                                     JSON | st.integers(-5, 200) | st.text(string.printable, max_size=30), max_size=5))


def fuzz_bytes(types: list[str], fields: list[str]) -> st.SearchStrategy[bytes]:
    return (st.binary(max_size=400) | st.builds(as_bytes, JSON, st.integers(0, 4))
            | st.builds(as_bytes, requests(types, fields), st.integers(0, 4)))


def as_bytes(value: Any, how: int) -> bytes:
    """A JSON value as a client might write it: plain, with a BOM, cut short, or with garbage after it."""
    text = json.dumps(value, allow_nan=True).encode()
    return [text, b"\xef\xbb\xbf" + text, text[: len(text) // 2], text + b"\x00\xff", text.replace(b'"', b"'", 1)][how]


# the parser sees every installed type and field; the daemon, the types that end quickly without a
# provider (the testkit's crash, block, count and flaky kill, hang or sleep on purpose)
PARSER_BYTES = fuzz_bytes([*MODELS, "nope", ""], [*COMMON, "steps", "step_seconds", "fail_times", "permanent"])
SPOOL_BYTES = fuzz_bytes(["noop", "scrape", "enrich", "hello", "nope", ""], COMMON)
SCALE = int(os.environ.get("JOBRUNNER_FUZZ_SCALE", "1"))  # longer runs by hand: docs/RELIABILITY.md
PARSER_EXAMPLES = 10_000 * SCALE
SPOOL_RUNS = 50 * SCALE


@pytest.mark.timeout(300 * SCALE)
@settings(max_examples=PARSER_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PARSER_BYTES)
def test_fuzz_the_request_parser_accepts_or_gives_a_reason(blob: bytes) -> None:
    try:
        request = validate(decode(blob), MODELS)
    except InvalidRequest as exc:
        reason = str(exc)
        assert reason and "\n" not in reason and "Traceback" not in reason, reason
        assert len(reason) < 2000
        return
    assert isinstance(request, JobRequest) and request.type in MODELS


NAMES = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=40)


@pytest.mark.timeout(300 * SCALE)
@settings(max_examples=SPOOL_RUNS, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(NAMES, SPOOL_BYTES), min_size=1, max_size=40, unique_by=lambda x: x[0]))
def test_fuzz_the_spool_every_file_runs_or_is_rejected(tmp_path_factory: pytest.TempPathFactory,
                                                        files: list[tuple[str, bytes]]) -> None:
    """Any bytes under any name, through the real daemon (--burst): each file ends as a job or as a rejected
    file with its reason; nothing stays in the queue or a claim folder, and the daemon exits 0."""
    root = tmp_path_factory.mktemp("fuzz")
    data = DataDir(root / "data", root / "testkit")
    dropped = []
    for name, blob in files:
        name = f"{name}.json"
        if name.startswith(".") or len(os.fsencode(name)) > 250:
            continue
        data.drop(name, blob)
        dropped.append(name)
    out = run_burst(data, "--settle", "0", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert [n for n in os.listdir(data.queue) if not n.startswith(".")] == []
    assert not [p for p in (data.queue / ".claimed").rglob("*") if p.is_file() and p.suffix != ".lock"]
    layout = Layout(data.root)
    rejected = data.rejected()
    done = {p.name for p in layout.done.iterdir()}
    deferred = {p.name for p in layout.deferred.iterdir()}
    ran = len(done) + len(deferred)  # deferred: a valid request with a not_before, or a retry
    assert len(rejected) + ran == len(dropped), (sorted(rejected), sorted(done), sorted(deferred), dropped)
    for note in rejected.values():
        assert note["reason"] and "\n" not in note["reason"]
    data.statuses()  # every status parses
