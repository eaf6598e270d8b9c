"""Bad input through the real daemon: every kind of bad request is set aside, the daemon keeps running.

For each bad drop a user must find, under data/queue/.rejected/:
- the original entry, byte for byte (a symlink, FIFO or directory is moved there as itself, never
  followed, opened or copied);
- ``<name>.reason``: JSON whose "reason" is one sentence a person can act on;
and, when the request names a valid id, a failed status data/jobs/<id>.json (except for a duplicate:
the existing job's status is left exactly as it was).

Most payload cases share one daemon (the ``batch`` fixture drops them all at once, then checks each in
its own test); cases that need input to arrive while the daemon runs, or a burst, have their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, DataDir, run_burst, wait_for

from jobrunner.layout import Layout
from jobrunner.request import MAX_REQUEST_BYTES

SETTLE_S = 0.3  # what the `daemons` fixture and run_burst pass as --settle
MiB = 1024 * 1024


# --------------------------------------------------------------------------------------------------
# helpers


def rejected_dir(data: DataDir) -> Path:
    return data.queue / ".rejected"


def kept_request(data: DataDir, job_id: str) -> Path:
    """Where a final job's request is kept (the layout module is the one place that knows)."""
    return Layout(data.root).request(job_id)


def wait_kept_request(data: DataDir, job_id: str) -> bytes:
    """The request of a final job; it is moved there just after the final status is written."""
    path = kept_request(data, job_id)
    wait_for(path.exists, 5, f"the request of {job_id} to be kept at {path}")
    return path.read_bytes()


def assert_actionable(reason: Any, *words: str) -> None:
    """A reason is one readable sentence (no traceback, no repr of an exception) naming the problem."""
    assert isinstance(reason, str), reason
    assert len(reason) >= 15, f"reason too short to act on: {reason!r}"
    assert "\n" not in reason and "Traceback" not in reason, reason
    assert not reason.startswith(("InvalidRequest", "ValueError", "<")), reason
    low = reason.lower()
    for word in words:
        assert word.lower() in low, f"reason {reason!r} does not mention {word!r}"


def assert_no_crash(log: str) -> None:
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log


def iso_ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> set[str]:
    """Every path under root (not following symlinks), relative to root."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def expect_rejected(data: DataDir, name: str, timeout: float = 15.0) -> dict[str, Any]:
    return wait_for(lambda: data.rejected().get(name), timeout, f"{name} to be rejected")  # type: ignore[no-any-return]


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


# --------------------------------------------------------------------------------------------------
# the batch: one daemon, every payload case dropped at once


@dataclass(frozen=True)
class Case:
    name: str  # the file name in the spool
    content: bytes | None  # dropped atomically; None for a special entry made by the batch fixture
    words: tuple[str, ...]  # the reason must mention each of these
    job_id: str | None = None  # a failed status is expected for this id
    job_type: str | None = None  # ...with this type
    unparseable: bool = False  # not JSON: must only be taken once quiet for the settle time


def j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


BIG = (
    b'{"type": "noop", "id": "too-big", "metadata": {"pad": "'
    + b"x" * (17 * MiB - 60)
)
BIG = BIG + b" " * (17 * MiB - 3 - len(BIG)) + b'"}}'
assert len(BIG) == 17 * MiB > MAX_REQUEST_BYTES

PAYLOAD_CASES = [
    # invalid JSON
    Case("invalid-truncated.json", b'{"type": "noop", "id": "trunc-1",', ("invalid json", "line 1"),
         unparseable=True),
    Case("invalid-single-quotes.json", b"{'type': 'noop'}", ("invalid json",), unparseable=True),
    Case("invalid-trailing.json", b'{"type": "noop"} {"type": "noop"}', ("invalid json",), unparseable=True),
    Case("invalid-whitespace.json", b"  \n\t \n", ("invalid json",), unparseable=True),
    # valid JSON, not an object
    Case("not-object-array.json", b'[{"type": "noop"}]', ("array", "object", "type")),
    Case("not-object-string.json", b'"noop"', ("string", "object", "type")),
    Case("not-object-number.json", b"42", ("number", "object", "type")),
    Case("not-object-null.json", b"null", ("null", "object", "type")),
    Case("not-object-bool.json", b"true", ("boolean", "object", "type")),
    # unknown / missing type
    Case("unknown-type.json", j({"type": "no-such-type", "id": "unknown-type-1"}),
         ("unknown type", "no-such-type", "noop"), job_id="unknown-type-1", job_type="no-such-type"),
    Case("type-not-string.json", j({"type": 7, "id": "type-int-1"}), ("type", "7", "noop"),
         job_id="type-int-1", job_type="unknown"),
    Case("missing-type.json", j({"id": "missing-type-1", "steps": 1}), ("missing", "type", "noop"),
         job_id="missing-type-1", job_type="unknown"),
    Case("missing-type-no-id.json", j({"steps": 1}), ("missing", "type", "noop")),
    # schema violations: the reason names the field path
    Case("schema-max-attempts.json", j({"type": "noop", "id": "schema-max-attempts", "max_attempts": 0}),
         ("max_attempts", "1", "got 0"), job_id="schema-max-attempts", job_type="noop"),
    Case("schema-steps-type.json", j({"type": "noop", "id": "schema-steps", "steps": "many"}),
         ("steps", "integer", "many"), job_id="schema-steps", job_type="noop"),
    Case("schema-steps-negative.json", j({"type": "noop", "id": "schema-steps-neg", "steps": -1}),
         ("steps", "0", "got -1"), job_id="schema-steps-neg", job_type="noop"),
    Case("schema-unknown-field.json", j({"type": "noop", "id": "schema-extra", "colour": "red"}),
         ("colour", "unknown field"), job_id="schema-extra", job_type="noop"),
    Case("schema-metadata.json", j({"type": "noop", "id": "schema-metadata", "metadata": [1, 2]}),
         ("metadata",), job_id="schema-metadata", job_type="noop"),
    Case("schema-not-before.json", j({"type": "noop", "id": "schema-nb", "not_before": "2030-01-01T00:00:00"}),
         ("not_before", "timezone"), job_id="schema-nb", job_type="noop"),
    Case("schema-two-errors.json", j({"type": "noop", "id": "schema-two", "steps": -5, "priority": 5000}),
         ("steps", "priority"), job_id="schema-two", job_type="noop"),
    Case("schema-no-id.json", j({"type": "noop", "max_attempts": 1000}), ("max_attempts", "100")),
    # not UTF-8
    Case("latin1.json", b'{"type": "noop", "id": "latin1-1", "metadata": {"name": "caf\xe9"}}',
         ("utf-8", "0xe9"), unparseable=True),
    Case("utf16.json", '{"type": "noop", "id": "utf16-1"}'.encode("utf-16"), ("utf-8",)),
    Case("garbage-bytes.json", bytes(range(256)) * 4, ("utf-8",), unparseable=True),
    # deep nesting
    Case("deep-open.json", b"[" * 100_000, ("nested", "32"), unparseable=True),
    Case("deep-closed.json", b"[" * 100_000 + b"]" * 100_000, ("nested", "32"), unparseable=True),
    Case("deep-objects.json", j({"type": "noop", "id": "deep-meta", "metadata": nested(200)}), ("nested", "32")),
    # size
    Case("empty.json", b"", ("empty", "object"), unparseable=True),
    Case("too-big.json", BIG, ("limit", str(MAX_REQUEST_BYTES))),
    # special entries (made by the fixture; `content` is None)
    Case("symlink-to-request.json", None, ("symlink", "regular file")),
    Case("symlink-to-passwd.json", None, ("symlink", "regular file")),
    Case("dir.json", None, ("directory", "regular file")),
]
CASES = {c.name: c for c in PAYLOAD_CASES}
IDS_WITH_STATUS = {c.job_id for c in PAYLOAD_CASES if c.job_id}


@dataclass
class Batch:
    data: DataDir
    daemon: Daemon
    outside: Path  # a valid request file outside the spool, the target of a symlink
    outside_stat: os.stat_result
    outside_bytes: bytes
    passwd_stat: os.stat_result
    passwd_sha: str
    dropped_at: dict[str, float] = field(default_factory=dict)
    all_rejected: bool = False
    good: dict[str, Any] | None = None
    log: str = ""


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Batch]:
    root = tmp_path_factory.mktemp("bad-input")
    data = DataDir(root / "data", root / "testkit")
    # same options as the `daemons` fixture, but one daemon for the whole module section
    daemon = Daemon(data, "--settle", str(SETTLE_S), "--rescan", "0.2", "--retry-base", "0.05").start()
    outside = root / "outside" / "valid.json"
    outside.parent.mkdir()
    outside.write_bytes(j({"type": "noop", "id": "via-symlink"}))
    passwd = Path("/etc/passwd")
    b = Batch(data, daemon, outside, os.stat(outside), outside.read_bytes(), os.stat(passwd), sha(passwd))
    try:
        for case in PAYLOAD_CASES:
            if case.content is not None:
                b.dropped_at[case.name] = time.time()
                data.drop(case.name, case.content)
        os.symlink(outside, data.queue / "symlink-to-request.json")
        os.symlink(passwd, data.queue / "symlink-to-passwd.json")
        (data.queue / "dir.json").mkdir()
        (data.queue / "dir.json" / "inner.txt").write_bytes(b"inside the directory\n")
        try:
            wait_for(lambda: set(data.rejected()) >= set(CASES), 30, "every bad case to be rejected")
            b.all_rejected = True
        except AssertionError:
            pass  # each case's own test says which one is missing
        # after all of that, a good request still runs
        data.drop("good-after.json", {"type": "noop", "id": "good-after", "steps": 2})
        try:
            b.good = data.wait_status("good-after", ("completed", "failed"), timeout=15)
        except AssertionError:
            b.good = None
        b.log = daemon.output()
        yield b
    finally:
        if daemon.alive:
            rc = daemon.term(30)
            assert rc == 0, daemon.output()


@pytest.mark.parametrize("case", PAYLOAD_CASES, ids=lambda c: c.name.removesuffix(".json"))
def test_bad_request_is_set_aside_with_a_reason(batch: Batch, case: Case) -> None:
    data = batch.data
    assert batch.daemon.alive, batch.daemon.output()
    note = data.rejected().get(case.name)
    assert note is not None, f"{case.name} was not rejected; spool: {sorted(os.listdir(data.queue))}\n{batch.log}"
    assert_actionable(note["reason"], *case.words)
    assert note["original_name"] == case.name and note["file"] == case.name
    assert note["error"] == "InvalidRequest"
    assert note["job_id"] == case.job_id
    # gone from the spool, and no claim left behind
    assert not os.path.lexists(data.queue / case.name)
    for worker_dir in (data.queue / ".claimed").iterdir():
        if worker_dir.is_dir():
            assert case.name not in os.listdir(worker_dir)
    kept = rejected_dir(data) / case.name
    if case.content is not None:
        assert stat.S_ISREG(os.lstat(kept).st_mode)
        assert kept.read_bytes() == case.content, "the rejected file's bytes differ from what was dropped"
    if case.unparseable:
        # a file that does not parse is left alone until it has been quiet for the settle time
        quiet = iso_ts(note["rejected_at"]) - os.lstat(kept).st_mtime
        assert quiet >= SETTLE_S - 0.01, f"taken {quiet:.3f}s after its last write (settle {SETTLE_S}s)"
    # a failed status exactly when the request names a valid id
    if case.job_id is not None:
        doc = data.status(case.job_id)
        assert doc is not None, f"no failed status for {case.job_id}"
        assert doc["id"] == case.job_id and doc["status"] == "failed"
        assert doc["type"] == case.job_type
        assert doc["source"] == case.name
        assert doc["error"]["type"] == "InvalidRequest" and doc["error"]["retryable"] is False
        assert doc["error"]["message"] == note["reason"]
        assert doc["finished_at"] and doc["history"] == []
        assert not kept_request(data, case.job_id).exists()  # it never ran


def json_depth(text: bytes) -> int:
    depth = best = 0
    for chunk in text.replace(b'\\"', b"").split(b'"')[0::2]:  # outside strings (no escapes in these cases)
        for byte in chunk:
            if byte in b"[{":
                depth += 1
                best = max(best, depth)
            elif byte in b"]}":
                depth -= 1
    return best


@pytest.mark.parametrize("name", ["deep-open.json", "deep-closed.json", "deep-objects.json"])
def test_deep_nesting_reason_states_the_depth_truthfully(batch: Batch, name: str) -> None:
    """The reason may give the real depth or say "more than <limit>", but must not understate it."""
    content = CASES[name].content
    assert content is not None
    depth = json_depth(content)
    assert depth > 100
    note = batch.data.rejected().get(name)
    assert note is not None, name
    reason = note["reason"]
    claimed = re.search(r"(\d+) levels", reason)
    assert "more than" in reason.lower() or (claimed is not None and int(claimed.group(1)) == depth), (
        f"the request is nested {depth} levels deep, but the reason says: {reason!r}")


def test_no_status_without_a_valid_id(batch: Batch) -> None:
    """Only requests naming a valid id get a status; nothing else gets a made-up job."""
    statuses = batch.data.statuses()
    assert set(statuses) - {"good-after"} == IDS_WITH_STATUS
    assert all(doc["status"] == "failed" for job_id, doc in statuses.items() if job_id != "good-after")
    for never in ("trunc-1", "latin1-1", "utf16-1", "deep-meta", "too-big", "via-symlink"):
        assert batch.data.status(never) is None


def test_symlink_is_moved_not_followed(batch: Batch) -> None:
    data = batch.data
    kept = rejected_dir(data) / "symlink-to-request.json"
    assert os.path.islink(kept), "the symlink itself must be kept under .rejected"
    assert os.readlink(kept) == str(batch.outside)
    # the target was neither moved, changed, nor run
    after = os.stat(batch.outside)
    assert batch.outside.read_bytes() == batch.outside_bytes
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        batch.outside_stat.st_ino, batch.outside_stat.st_mtime_ns, batch.outside_stat.st_size)
    assert data.status("via-symlink") is None
    assert not (data.jobs / "via-symlink").exists() and not kept_request(data, "via-symlink").exists()


def test_symlink_to_etc_passwd_is_not_read_or_copied(batch: Batch) -> None:
    data = batch.data
    kept = rejected_dir(data) / "symlink-to-passwd.json"
    assert os.path.islink(kept)
    assert os.readlink(kept) == "/etc/passwd"
    passwd = Path("/etc/passwd")
    after = os.stat(passwd)
    assert sha(passwd) == batch.passwd_sha
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        batch.passwd_stat.st_ino, batch.passwd_stat.st_mtime_ns, batch.passwd_stat.st_size)
    secret = passwd.read_bytes()
    for dirpath, _dirs, files in os.walk(data.root):
        for name in files:
            path = Path(dirpath, name)
            if not path.is_symlink():
                assert secret not in path.read_bytes(), f"{path} holds a copy of /etc/passwd"
    note = data.rejected()["symlink-to-passwd.json"]
    assert "root:" not in json.dumps(note)


def test_directory_is_moved_with_its_contents(batch: Batch) -> None:
    kept = rejected_dir(batch.data) / "dir.json"
    assert stat.S_ISDIR(os.lstat(kept).st_mode)
    assert os.listdir(kept) == ["inner.txt"]
    assert (kept / "inner.txt").read_bytes() == b"inside the directory\n"


def test_daemon_survives_the_batch_and_still_runs_good_requests(batch: Batch) -> None:
    assert batch.all_rejected, f"not every case was rejected; see the per-case tests\n{batch.log}"
    assert batch.daemon.alive, batch.daemon.output()
    assert batch.good is not None, f"a good request dropped after the bad ones did not finish\n{batch.log}"
    assert batch.good["status"] == "completed", batch.good
    assert batch.good["result"] == {"steps": 2}
    assert_no_crash(batch.daemon.output())
    # nothing left in the spool's top level, and nothing in the daemon's claim folder
    assert [n for n in os.listdir(batch.data.queue) if not n.startswith(".")] == []
    for entry in (batch.data.queue / ".claimed").iterdir():
        if entry.is_dir():
            assert os.listdir(entry) == []


# --------------------------------------------------------------------------------------------------
# ids that are not ids


BAD_IDS = {
    "id-dotdot.json": "../x",
    "id-deep-dotdot.json": "../../../../../../tmp/jobrunner-escape",
    "id-absolute.json": "/etc/passwd",
    "id-empty.json": "",
    "id-long.json": "a" * 500,
    "id-dot-dot.json": "..",
    "id-slash.json": "a/b",
    "id-nul.json": "a\x00b",
    "id-number.json": 12345,
}


def test_path_like_ids_are_rejected_and_never_used_as_paths(data: DataDir, tmp_path: Path) -> None:
    assert run_burst(data).returncode == 0  # let it make its folders first
    (data.root / "client-staging").mkdir()
    passwd = Path("/etc/passwd")
    passwd_before = (sha(passwd), os.stat(passwd).st_mtime_ns)
    before = tree(tmp_path)
    for name, job_id in BAD_IDS.items():
        data.drop(name, {"type": "noop", "id": job_id})
    res = run_burst(data)
    assert res.returncode == 0, res.stderr
    assert_no_crash(res.stderr)

    notes = data.rejected()
    assert set(notes) == set(BAD_IDS), res.stderr
    for name, job_id in BAD_IDS.items():
        note = notes[name]
        assert note["job_id"] is None
        assert_actionable(note["reason"], "id")
        if isinstance(job_id, str):
            assert_actionable(note["reason"], "invalid id", "letters, digits")
        assert (rejected_dir(data) / name).read_bytes() == j({"type": "noop", "id": job_id})
    assert len(notes["id-long.json"]["reason"]) < 400  # names the id without pasting all of it
    # no status, and nothing created anywhere but the rejected folder
    assert data.statuses() == {}
    created = tree(tmp_path) - before
    outside = {p for p in created if not p.startswith(os.path.join("data", "queue", ".rejected") + os.sep)}
    outside = {p for p in outside if not p.endswith(".log")}  # the daemon's own log
    assert outside == set(), f"created outside .rejected: {sorted(outside)}"
    assert (sha(passwd), os.stat(passwd).st_mtime_ns) == passwd_before
    for escaped in (Path("/etc/passwd.json"), Path("/tmp/jobrunner-escape.json"), Path("/tmp/jobrunner-escape"),
                    data.root / "x.json", data.queue / "x.json", tmp_path / "x.json"):
        assert not escaped.exists(), escaped


# --------------------------------------------------------------------------------------------------
# duplicates


def test_duplicate_id_is_rejected_and_the_first_job_is_untouched(data: DataDir, daemons) -> None:
    daemon = daemons()
    first = j({"type": "noop", "id": "dup-1", "steps": 1})
    data.drop("first.json", first)
    doc = data.wait_status("dup-1")
    status_path = data.jobs / "dup-1.json"
    status_before = status_path.read_bytes()

    second = j({"type": "noop", "id": "dup-1", "steps": 3, "metadata": {"try": 2}})
    data.drop("second.json", second)
    note = expect_rejected(data, "second.json")
    assert_actionable(note["reason"], "duplicate", "dup-1")
    assert note["job_id"] == "dup-1"
    assert (rejected_dir(data) / "second.json").read_bytes() == second

    # a bad request reusing the id does not touch the existing job either
    bad = j({"type": "no-such-type", "id": "dup-1"})
    data.drop("third.json", bad)
    note3 = expect_rejected(data, "third.json")
    assert_actionable(note3["reason"], "unknown type")
    assert (rejected_dir(data) / "third.json").read_bytes() == bad

    time.sleep(2 * SETTLE_S)  # give a wrong second run time to show
    assert status_path.read_bytes() == status_before, "the existing job's status was changed"
    assert doc["status"] == "completed" and doc["attempt"] == 1
    assert [h["outcome"] for h in doc["history"]] == ["completed"]
    assert doc["result"] == {"steps": 1} and doc["metadata"] == {}
    assert wait_kept_request(data, "dup-1") == first
    assert daemon.alive
    data.drop("good.json", {"type": "noop", "id": "after-dup"})
    data.wait_status("after-dup")
    assert_no_crash(daemon.output())


def test_duplicate_ids_in_one_burst_run_once(data: DataDir) -> None:
    a = j({"type": "noop", "id": "twin", "steps": 1})
    b = j({"type": "noop", "id": "twin", "steps": 2})
    data.drop("twin-a.json", a)
    data.drop("twin-b.json", b)
    res = run_burst(data)
    assert res.returncode == 0, res.stderr
    assert_no_crash(res.stderr)
    doc = data.wait_status("twin", timeout=1)
    assert doc["attempt"] == 1 and [h["outcome"] for h in doc["history"]] == ["completed"]
    ran, other = ("twin-a.json", "twin-b.json") if doc["source"] == "twin-a.json" else ("twin-b.json", "twin-a.json")
    assert doc["result"] == {"steps": 1 if ran == "twin-a.json" else 2}
    notes = data.rejected()
    assert set(notes) == {other}
    assert_actionable(notes[other]["reason"], "duplicate", "twin")
    assert (rejected_dir(data) / other).read_bytes() == (a if other == "twin-a.json" else b)
    assert wait_kept_request(data, "twin") == (a if ran == "twin-a.json" else b)


# --------------------------------------------------------------------------------------------------
# input arriving while the daemon runs


def test_fifo_is_rejected_without_hanging_the_daemon(data: DataDir, daemons) -> None:
    daemon = daemons()
    fifo = data.queue / "pipe.json"
    os.mkfifo(fifo)  # nobody ever opens the other end: opening it for reading would block forever
    data.drop("after-fifo.json", {"type": "noop", "id": "after-fifo"})
    assert data.wait_status("after-fifo", timeout=10)["status"] == "completed"
    note = expect_rejected(data, "pipe.json", timeout=10)
    assert_actionable(note["reason"], "fifo", "regular file")
    assert note["job_id"] is None
    assert stat.S_ISFIFO(os.lstat(rejected_dir(data) / "pipe.json").st_mode)
    assert not os.path.lexists(fifo)
    # still alive and still taking work
    assert daemon.alive
    data.drop("after-fifo-2.json", {"type": "noop", "id": "after-fifo-2"})
    data.wait_status("after-fifo-2", timeout=10)
    assert_no_crash(daemon.output())


def test_empty_file_is_left_for_the_settle_time_then_rejected(data: DataDir, daemons) -> None:
    daemon = daemons()
    data.drop("empty.json", b"")
    mtime = os.lstat(data.queue / "empty.json").st_mtime
    note = expect_rejected(data, "empty.json", timeout=10)
    assert_actionable(note["reason"], "empty")
    assert iso_ts(note["rejected_at"]) - mtime >= SETTLE_S - 0.01
    assert (rejected_dir(data) / "empty.json").read_bytes() == b""
    assert data.statuses() == {}
    assert daemon.alive
    assert_no_crash(daemon.output())


def _write_slowly(path: Path, data: bytes, pause: float, finish: bool, opened: threading.Event,
                  release: threading.Event) -> None:
    half = len(data) // 2
    with open(path, "wb") as f:
        f.write(data[:half])
        f.flush()
        opened.set()
        if finish:
            time.sleep(pause)
            f.write(data[half:])
        else:
            release.wait(30)  # a writer that stalled for good (its file stays open)


def _start_writer(path: Path, data: bytes, *, pause: float = 0.0, finish: bool) -> Callable[[], None]:
    opened, release = threading.Event(), threading.Event()
    t = threading.Thread(target=_write_slowly, args=(path, data, pause, finish, opened, release), daemon=True)
    t.start()
    assert opened.wait(5)

    def stop() -> None:
        release.set()
        t.join(10)

    return stop


def test_file_written_slowly_in_place_completes(data: DataDir, daemons) -> None:
    daemon = daemons()
    body = j({"type": "noop", "id": "slow-ok", "steps": 1, "metadata": {"note": "written in two parts"}})
    stop = _start_writer(data.queue / "slow-ok.json", body, pause=SETTLE_S * 2 / 3, finish=True)
    stop()
    doc = data.wait_status("slow-ok", ("completed", "failed"), timeout=10)
    assert doc["status"] == "completed", (doc, data.rejected())
    assert "slow-ok.json" not in data.rejected()
    assert wait_kept_request(data, "slow-ok") == body
    assert daemon.alive
    assert_no_crash(daemon.output())


def test_file_abandoned_half_written_is_rejected_after_the_settle_time(data: DataDir, daemons) -> None:
    daemon = daemons()
    body = j({"type": "noop", "id": "slow-stuck", "steps": 1})
    stop = _start_writer(data.queue / "stuck.json", body, finish=False)
    try:
        note = expect_rejected(data, "stuck.json", timeout=10)
    finally:
        stop()
    reason = note["reason"]
    assert_actionable(reason, "json")
    assert "invalid json" in reason.lower() or "incomplete" in reason.lower(), reason
    kept = rejected_dir(data) / "stuck.json"
    assert kept.read_bytes() == body[: len(body) // 2]
    assert iso_ts(note["rejected_at"]) - os.lstat(kept).st_mtime >= SETTLE_S - 0.01
    assert data.status("slow-stuck") is None
    assert daemon.alive
    data.drop("after-stuck.json", {"type": "noop", "id": "after-stuck"})
    data.wait_status("after-stuck", timeout=10)
    assert_no_crash(daemon.output())


# --------------------------------------------------------------------------------------------------
# input that trips Python's own decoding (each with its own daemon: a crash here must not hide the rest)


def expect_rejected_alive(data: DataDir, daemon: Daemon, name: str, timeout: float = 8.0) -> dict[str, Any]:
    wait_for(lambda: data.rejected().get(name) or not daemon.alive, timeout, f"{name} to be rejected")
    assert daemon.alive, f"the daemon died on {name!r}:\n{daemon.output()}"
    return data.rejected()[name]


def expect_final_alive(data: DataDir, daemon: Daemon, name: str, job_id: str, timeout: float = 8.0) -> None:
    """Either outcome is acceptable, as long as there is one: the job ran, or it was rejected with a reason."""
    def done() -> bool:
        doc = data.status(job_id)
        return name in data.rejected() or (doc is not None and doc["status"] == "completed") or not daemon.alive

    try:
        wait_for(done, timeout, f"{name} to be run or rejected")
    except AssertionError as exc:
        claimed = [str(p.relative_to(data.queue)) for p in (data.queue / ".claimed").rglob("*") if p.is_file()]
        raise AssertionError(f"{exc}; still claimed: {claimed}; status: {data.status(job_id)}\n"
                             f"{daemon.output()}") from None
    assert daemon.alive, f"the daemon died on {name!r}:\n{daemon.output()}"


def assert_still_works(data: DataDir, daemon: Daemon, job_id: str) -> None:
    data.drop(f"{job_id}.json", {"type": "noop", "id": job_id})
    assert data.wait_status(job_id, timeout=10)["status"] == "completed"
    assert daemon.alive
    assert_no_crash(daemon.output())


def test_integer_with_thousands_of_digits(data: DataDir, daemons) -> None:
    """Python refuses to convert an int of more than 4300 digits (ValueError, not JSONDecodeError)."""
    daemon = daemons()
    body = b'{"type": "noop", "id": "bigint-1", "steps": ' + b"1" * 5000 + b"}"
    data.drop("bigint.json", body)
    note = expect_rejected_alive(data, daemon, "bigint.json")
    assert_actionable(note["reason"], "digits")
    assert "set_int_max_str_digits" not in note["reason"], "not something a client can act on"
    assert (rejected_dir(data) / "bigint.json").read_bytes() == body
    assert_still_works(data, daemon, "after-bigint")


def test_lone_surrogate_in_the_type(data: DataDir, daemons) -> None:
    """A \\ud800 escape is valid JSON syntax but not Unicode text: it cannot be written as UTF-8."""
    daemon = daemons()
    body = b'{"type": "\\ud800", "id": "surrogate-type"}'
    data.drop("surrogate-type.json", body)
    note = expect_rejected_alive(data, daemon, "surrogate-type.json")
    assert_actionable(note["reason"])
    assert (rejected_dir(data) / "surrogate-type.json").read_bytes() == body
    doc = data.status("surrogate-type")
    assert doc is None or doc["status"] == "failed", doc
    assert_still_works(data, daemon, "after-surrogate-type")


def test_lone_surrogate_in_metadata(data: DataDir, daemons) -> None:
    daemon = daemons()
    body = b'{"type": "noop", "id": "surrogate-meta", "metadata": {"name": "\\udc80"}}'
    data.drop("surrogate-meta.json", body)
    expect_final_alive(data, daemon, "surrogate-meta.json", "surrogate-meta")
    if "surrogate-meta.json" in data.rejected():
        assert_actionable(data.rejected()["surrogate-meta.json"]["reason"])
        assert (rejected_dir(data) / "surrogate-meta.json").read_bytes() == body
    doc = data.status("surrogate-meta")
    assert doc is None or doc["status"] in ("completed", "failed"), doc
    assert_still_works(data, daemon, "after-surrogate-meta")


NON_UTF8_NAME = os.fsdecode(b"\xffname.json")


@pytest.mark.parametrize("request_body", [
    {"type": "no-such-type", "id": "bad-name"},  # must be rejected (for its name or its type)
    {"type": "noop", "id": "bad-name"},  # a good request in a badly named file
], ids=["bad-request", "good-request"])
def test_non_utf8_file_name(data: DataDir, daemons, request_body: dict[str, Any]) -> None:
    """Run it or reject it (with a reason), but never crash or leave it stuck in the claim folder."""
    daemon = daemons()
    body = j(request_body)
    data.drop(NON_UTF8_NAME, body)
    expect_final_alive(data, daemon, NON_UTF8_NAME, "bad-name")
    note = data.rejected().get(NON_UTF8_NAME)
    if note is not None:
        assert_actionable(note["reason"])
        assert (rejected_dir(data) / NON_UTF8_NAME).read_bytes() == body
    else:
        assert request_body["type"] == "noop", "an unknown type must be rejected"
    doc = data.status("bad-name")
    assert doc is None or doc["status"] in ("completed", "failed"), doc
    assert_still_works(data, daemon, "after-bad-name")


def test_unterminated_string_of_escapes_does_not_stall_the_daemon(data: DataDir, daemons) -> None:
    """200 KB: brackets (so the depth check runs) and an unterminated string of \\" escapes."""
    daemon = daemons()
    body = b"[" * 40 + b'"' + b'\\"' * 100_000
    data.drop("stall.json", body)
    wait_for(lambda: not (data.queue / "stall.json").exists(), 10, "stall.json to be taken")
    note = expect_rejected_alive(data, daemon, "stall.json", timeout=10)
    assert_actionable(note["reason"], "json")
    assert (rejected_dir(data) / "stall.json").read_bytes() == body
    assert_still_works(data, daemon, "after-stall")


def test_a_file_its_client_keeps_locked_is_rejected_not_taken_for_a_duplicate(data: DataDir) -> None:
    import fcntl

    staged = data.root / "locked.json"
    staged.write_bytes(b'{"type": "noop", "id": "locked"}')
    fd = os.open(staged, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held by "the client" across the drop
        os.rename(staged, data.queue / "locked.json")
        out = run_burst(data)
        assert out.returncode == 0, out.stderr
    finally:
        os.close(fd)
    reason = data.rejected()["locked.json"]["reason"]
    assert "another process holds a lock on the file" in reason
    assert (data.queue / ".rejected" / "locked.json").read_bytes() == b'{"type": "noop", "id": "locked"}'


def test_a_file_that_cannot_be_taken_does_not_hold_up_the_others(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    """An immutable file (chattr +i: not even root may rename it) stays in the queue with one error logged;
    every other request is still taken and run."""
    import shutil
    import subprocess

    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("needs root and chattr")
    stuck = data.drop("a-stuck.json", {"type": "noop", "id": "stuck"})
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable attribute")
    try:
        d = daemons()
        for i in range(5):
            data.drop(f"b{i}.json", {"type": "noop", "id": f"fine{i}"})
        for i in range(5):
            assert data.wait_status(f"fine{i}")["status"] == "completed"
        assert stuck.exists() and data.status("stuck") is None
        assert d.output().count("cannot take a-stuck.json from the queue") == 1
        assert d.alive
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=False)
