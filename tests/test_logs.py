"""Log lines as a terminal, journald and a JSON reader see them; the journal is faked by $JOURNAL_STREAM
naming a real file's or pipe's device and inode, which is all journald's detection looks at."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from jobrunner.context import JobLogger
from jobrunner.logs import journal_stream, setup

TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    yield
    for handler in root.handlers[:]:
        if handler not in saved[0]:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(saved[1])
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TextIO]:
    """A stream that is "the journal": a real file whose dev:ino is in $JOURNAL_STREAM."""
    with open(tmp_path / "journal", "w+", encoding="utf-8") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        yield stream


def lines(stream: TextIO) -> list[str]:
    stream.flush()
    stream.seek(0)
    return stream.read().splitlines()


def fail() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        raise RuntimeError("wrapped") from exc


def test_text_on_a_terminal() -> None:
    out = io.StringIO()
    setup("info", stream=out)
    log = logging.getLogger("jobrunner.worker")
    log.info("ready: %d jobs", 3)
    log.debug("not shown at info")
    log.warning("two\nlines")
    got = out.getvalue().splitlines()
    assert re.fullmatch(rf"{TS} INFO jobrunner\.worker: ready: 3 jobs", got[0])
    assert re.fullmatch(rf"{TS} WARNING jobrunner\.worker: two", got[1])
    assert got[2:] == ["lines"]  # a terminal keeps real newlines
    stamp = time.strptime(got[0][:19], "%Y-%m-%dT%H:%M:%S")
    assert abs(time.mktime(stamp) - time.mktime(time.gmtime())) < 5  # UTC, not local time


def test_traceback_on_a_terminal_keeps_its_lines() -> None:
    out = io.StringIO()
    setup("info", stream=out)
    try:
        fail()
    except RuntimeError:
        logging.getLogger("jobrunner.worker").exception("job failed")
    got = out.getvalue().splitlines()
    assert re.fullmatch(rf"{TS} ERROR jobrunner\.worker: job failed", got[0])
    assert got[1] == "Traceback (most recent call last):"
    assert got[-1] == "RuntimeError: wrapped"


def test_journal_gets_priority_prefixes_and_no_timestamp(journal: TextIO) -> None:
    assert journal_stream(journal)
    setup("debug", stream=journal)
    log = logging.getLogger("jobrunner.worker")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    log.log(25, "between info and warning")
    log.log(5, "below debug")  # not shown at debug
    assert lines(journal) == ["<7>jobrunner.worker: d", "<6>jobrunner.worker: i", "<4>jobrunner.worker: w",
                              "<3>jobrunner.worker: e", "<2>jobrunner.worker: c",
                              "<6>jobrunner.worker: between info and warning"]


def test_a_traceback_is_one_journal_entry(journal: TextIO) -> None:
    setup("info", stream=journal)
    try:
        fail()
    except RuntimeError:
        logging.getLogger("jobrunner.worker").exception("job %s failed", "j1")
    logging.getLogger("jobrunner.worker").warning("first\nsecond\n")
    got = lines(journal)
    assert len(got) == 2
    assert got[0].startswith("<3>jobrunner.worker: job j1 failed | Traceback (most recent call last): | ")
    assert "KeyError: 'missing' | The above exception was the direct cause" in got[0]
    assert got[0].endswith(" | RuntimeError: wrapped")
    assert got[1] == "<4>jobrunner.worker: first | second"


def test_process_tag() -> None:
    out = io.StringIO()
    setup("info", stream=out, process_tag=True)
    logging.getLogger("jobrunner.worker").info("hi")
    assert re.fullmatch(rf"{TS} INFO jobrunner\.worker \[{os.getpid()}\]: hi\n", out.getvalue())


def test_process_tag_in_the_journal(journal: TextIO) -> None:
    setup("info", stream=journal, process_tag=True)
    logging.getLogger("jobrunner.worker").info("hi")
    assert lines(journal) == [f"<6>jobrunner.worker [{os.getpid()}]: hi"]


def test_json_lines_parse_and_carry_the_job_id() -> None:
    out = io.StringIO()
    setup("info", "json", stream=out)
    JobLogger(logging.getLogger("jobrunner.job"), {"job_id": "job-1"}).info("greeted %s", "ana")
    logging.getLogger("jobrunner.worker").warning("no job here: ünïcode")
    try:
        fail()
    except RuntimeError:
        logging.getLogger("jobrunner.worker").exception("boom")
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(got) == 3
    first, second, third = got
    assert re.fullmatch(TS, first.pop("ts"))
    assert first == {"level": "info", "logger": "jobrunner.job", "message": "[job-1] greeted ana",
                     "pid": os.getpid(), "job_id": "job-1"}
    assert second["level"] == "warning"
    assert second["message"] == "no job here: ünïcode"
    assert "job_id" not in second and "exc" not in second
    assert third["level"] == "error"
    assert third["exc"].startswith("Traceback (most recent call last):")
    assert third["exc"].endswith("RuntimeError: wrapped")


def test_json_escapes_what_it_must() -> None:
    out = io.StringIO()
    setup("debug", "json", stream=out)
    awkward = 'say "hi"\n\ttab \\ back \u2028 \x00 ünï'
    logging.getLogger('odd "name"').info("%s", awkward, extra={"job_id": 7})
    logging.getLogger("jobrunner.worker").log(25, "custom level")
    assert out.getvalue().isascii()
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == awkward
    assert first["logger"] == 'odd "name"'
    assert first["job_id"] == 7
    assert second["level"] == "level 25"


def test_json_in_the_journal_is_prefixed(journal: TextIO) -> None:
    setup("info", "json", stream=journal)
    try:
        fail()
    except RuntimeError:
        logging.getLogger("jobrunner.worker").exception("boom")
    got = lines(journal)
    assert len(got) == 1
    assert got[0].startswith("<3>{")
    doc = json.loads(got[0][3:])
    assert doc["message"] == "boom"
    assert doc["exc"].endswith("RuntimeError: wrapped")


def test_httpx_is_quieted() -> None:
    out = io.StringIO()
    setup("debug", stream=out)
    logging.getLogger("httpx").info('HTTP Request: GET https://example.test "HTTP/1.1 200 OK"')
    logging.getLogger("httpcore.connection").debug("connect_tcp.started")
    logging.getLogger("httpx").warning("shown")
    assert out.getvalue().count("\n") == 1
    assert "WARNING httpx: shown" in out.getvalue()


def test_setup_again_replaces_its_handler_only() -> None:
    foreign = logging.NullHandler()
    logging.getLogger().addHandler(foreign)
    first, second = io.StringIO(), io.StringIO()
    setup("info", stream=first)
    setup("warning", "json", stream=second)
    logging.getLogger("jobrunner.worker").warning("once")
    logging.getLogger("jobrunner.worker").info("filtered")
    assert first.getvalue() == ""
    assert [json.loads(line)["message"] for line in second.getvalue().splitlines()] == ["once"]
    assert foreign in logging.getLogger().handlers


def test_unknown_format() -> None:
    with pytest.raises(ValueError):
        setup("info", "xml", stream=io.StringIO())


def test_journal_stream_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd), os.fdopen(write_fd, "w") as pipe, open(tmp_path / "other", "w") as other:
        st = os.fstat(pipe.fileno())
        assert not journal_stream(pipe)  # no $JOURNAL_STREAM
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert journal_stream(pipe)
        assert not journal_stream(other)  # inherited variable, stderr redirected elsewhere
        assert not journal_stream(io.StringIO())  # no file descriptor
        for bad in ("", "12", "a:b", "1:2:3"):
            monkeypatch.setenv("JOURNAL_STREAM", bad)
            assert not journal_stream(pipe)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert not journal_stream(pipe)  # closed


def test_journal_stream_defaults_to_stderr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with open(tmp_path / "stderr", "w") as fake:
        st = os.fstat(fake.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        monkeypatch.setattr("sys.stderr", fake)
        assert journal_stream()
