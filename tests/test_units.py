"""Unit tests of the pure parts: policy tables, request decoding, ids, atomic writes."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path

import pytest

from jobrunner.durable import Committer, rename_noreplace, write_atomic
from jobrunner.errors import Cancelled, InvalidRequest, JobTimeout, PermanentError, RetryableError
from jobrunner.handlers import load_handlers
from jobrunner.layout import Layout, is_spool_name, validate_id
from jobrunner.request import decode, generated_id, validate
from jobrunner.retry import RetryPolicy, decide

POLICY = RetryPolicy(base_s=2.0, max_s=60.0, jitter=0.5)


@pytest.mark.parametrize(
    ("exc", "attempt", "max_attempts", "retry", "low", "high"),
    [
        (RetryableError("503"), 1, 4, True, 1.0, 2.0),
        (RetryableError("503"), 2, 4, True, 2.0, 4.0),
        (RetryableError("503"), 3, 4, True, 4.0, 8.0),
        (RetryableError("503"), 4, 4, False, 0, 0),
        (RetryableError("429", defer_s=300), 1, 4, True, 300, 300),
        (RuntimeError("handler bug"), 1, 4, True, 1.0, 2.0),
        (JobTimeout("slow"), 1, 2, True, 1.0, 2.0),
        (PermanentError("401"), 1, 4, False, 0, 0),
        (Cancelled(), 1, 4, False, 0, 0),
        (RetryableError("503"), 10, 20, True, 30.0, 60.0),  # capped at max_s
    ],
)
def test_retry_decision_table(exc: Exception, attempt: int, max_attempts: int, retry: bool, low: float,
                              high: float) -> None:
    for seed in range(20):
        d = decide(exc, attempt, max_attempts, POLICY, random.Random(seed))
        assert d.retry is retry
        if retry:
            assert low <= d.delay_s <= high


def test_backoff_is_jittered() -> None:
    delays = {round(POLICY.backoff(3, random.Random(seed)), 6) for seed in range(50)}
    assert len(delays) > 40


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "", "a" * 129, ".hidden", "a/b", "x y", "é", "..",
                                 "a.json", None, 5])
def test_invalid_ids(bad: object) -> None:
    with pytest.raises(InvalidRequest):
        validate_id(bad)


@pytest.mark.parametrize("good", ["a", "A1", "lead-batch_2026.12.03", "x" * 128])
def test_valid_ids(good: str) -> None:
    assert validate_id(good) == good


@pytest.mark.parametrize(("name", "taken"), [("a.json", True), (".a.json", False), ("a.json.tmp", False),
                                              ("a.part", False), ("a.txt", False), ("a.tmp", False)])
def test_spool_names(name: str, taken: bool) -> None:
    assert is_spool_name(name) is taken


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "empty file"),
        (b"{", "invalid JSON at line 1"),
        (b"[1, 2]", "JSON array"),
        (b'"x"', "JSON string"),
        (b"3", "JSON number"),
        (b"null", "JSON null"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000, "nested"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested more than 32 levels"),
        (b'{"n": ' + b"1" * 5000 + b"}", "send very long numbers as strings"),
        (b'{"type": "\\ud800"}', "lone surrogate"),
    ],
)
def test_decode_errors(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        decode(data)
    assert needle in str(info.value)


def test_depth_check_is_linear_on_unterminated_escapes() -> None:
    started = time.monotonic()
    with pytest.raises(InvalidRequest):
        decode(("[" * 40 + '"' + '\\"' * 200_000).encode())
    assert time.monotonic() - started < 2


def test_decode_ignores_brackets_in_strings() -> None:
    assert decode(json.dumps({"type": "noop", "note": "[" * 1000}).encode())["type"] == "noop"


def test_decode_size_limit() -> None:
    with pytest.raises(InvalidRequest, match="limit is 10"):
        decode(b"{" + b" " * 20 + b"}", limit=10)


def test_validation_names_the_field() -> None:
    models = {n: h.request_model for n, h in load_handlers().items()}
    with pytest.raises(InvalidRequest) as info:
        validate({"type": "noop", "max_attempts": 0, "steps": "many", "bogus": 1}, models)
    text = str(info.value)
    assert "max_attempts: Input should be greater than or equal to 1 (got 0)" in text
    assert "steps:" in text and "bogus: unknown field" in text
    with pytest.raises(InvalidRequest, match=r"unknown type 'nope'; known types: .*noop"):
        validate({"type": "nope"}, models)
    with pytest.raises(InvalidRequest, match='missing field "type"'):
        validate({"id": "x"}, models)
    with pytest.raises(InvalidRequest) as info:
        validate({"type": "noop", "id": "x", "not_before": "tomorrow"}, models)
    assert info.value.job_id == "x"


def test_generated_id_is_stable_and_sortable(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.write_text("{}")
    first = generated_id(os.stat(a))
    os.rename(a, tmp_path / "b")  # a claim renames the file: the id must not change
    assert generated_id(os.stat(tmp_path / "b")) == first
    validate_id(first)
    os.utime(tmp_path / "b", (1e9, 1e9))
    assert generated_id(os.stat(tmp_path / "b")) < first


def test_write_atomic_and_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    with pytest.raises(FileExistsError):
        write_atomic(path, b"three", exclusive=True)
    assert path.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temp files left behind


def test_rename_noreplace(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    with pytest.raises(FileExistsError):
        rename_noreplace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "b"
    rename_noreplace(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").read_text() == "a" and not (tmp_path / "a").exists()


def test_committer_shares_syncs(tmp_path: Path) -> None:
    async def main() -> tuple[int, bool, bool]:
        writer = Committer(tmp_path, tmp_path)
        await asyncio.gather(*(writer.replace(tmp_path / f"f{i}", b"x") for i in range(200)))
        made = await writer.create(tmp_path / "f0", b"y")
        made_new = await writer.create(tmp_path / "new", b"y")
        writer.close()
        return writer.syncs, made, made_new

    count, made, made_new = asyncio.run(main())
    assert count < 100  # 200 writes, two syncs each if alone: shared instead
    assert made is False and made_new is True
    assert (tmp_path / "f0").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_layout_never_builds_a_path_from_a_bad_id(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    with pytest.raises(InvalidRequest):
        layout.status("../../etc/passwd")
    assert layout.status("ok").parent == tmp_path / "jobs"


def test_recent_index_tail(tmp_path: Path) -> None:
    from jobrunner import index

    layout = Layout(tmp_path)
    layout.ensure()
    assert index.recent(layout, 5) is None
    for i in range(20_000):  # longer than one read chunk, with repeats
        index.note(layout, f"job{i % 7000:05d}")
    with open(layout.recent, "ab") as f:
        f.write(b"job-torn-by-a-cra")  # a crash mid-append leaves no newline...
    index.note(layout, "last")  # ...and the next record still stands on a line of its own
    got = index.recent(layout, 4)
    assert got == ["last", "job-torn-by-a-cra", "job05999", "job05998"]  # the torn one names no job: skipped
    assert len(index.recent(layout, 7000) or []) == 7000
    with open(layout.recent, "ab") as f:
        f.write(b"../../etc/passwd\n")
    assert "../../etc/passwd" not in (index.recent(layout, 10) or [])


def test_watcher_does_not_hold_events_behind_a_claim(tmp_path: Path) -> None:
    """A claim renames a file out of the spool (a moved-from that never pairs). watchdog would hold it
    for 0.5 s, and every later event behind it; a drop right after a claim must still wake at once."""
    import threading

    from jobrunner.watcher import SpoolWatcher

    spool, elsewhere = tmp_path / "queue", tmp_path / "claimed"
    spool.mkdir()
    elsewhere.mkdir()
    (spool / "old.json").write_text("{}")
    (tmp_path / "new.json").write_text("{}")
    woken = threading.Event()
    watcher = SpoolWatcher({spool: woken.set})
    watcher.start()
    try:
        time.sleep(0.2)
        started = time.monotonic()
        os.rename(spool / "old.json", elsewhere / "old.json")  # the claim
        os.rename(tmp_path / "new.json", spool / "new.json")  # the next drop, right behind it
        assert woken.wait(2)
        assert time.monotonic() - started < 0.25  # with the hold, nothing wakes for 0.5 s
    finally:
        watcher.stop()


def test_step_log_skips_a_torn_line_and_a_barrier_waits_for_a_sync(tmp_path: Path) -> None:
    from jobrunner import checkpoint
    from jobrunner.durable import Committer

    layout = Layout(tmp_path)
    layout.ensure()
    log = layout.steps_log("j1")
    log.parent.mkdir(parents=True)
    log.write_bytes(b'\n{"key": "a", "result": 1}\n\n{"key": "b", "res')  # a crash tore the second record

    async def main() -> tuple[object, object, int]:
        writer = Committer(tmp_path, layout.jobs_tmp)
        store = checkpoint.StepStore(layout, "j1", writer)
        first = store.load("a"), store.load("b")
        await store.save("b", {"x": 2})
        writer.close()
        return first, store.load("b"), writer.syncs

    (a, b_before), b_after, syncs = asyncio.run(main())
    assert a == 1 and b_before is checkpoint.StepStore.MISSING and b_after == {"x": 2} and syncs == 1
    assert [r["key"] for r in checkpoint.records(layout, "j1")] == ["a", "b"]  # the torn line is skipped
