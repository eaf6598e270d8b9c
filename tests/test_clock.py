"""The wall clock stepped back and forward under a running daemon.

A real step (NTP, a VM resumed) moves CLOCK_REALTIME and leaves CLOCK_MONOTONIC alone. We cannot step the
machine's clock (it is shared, and a time namespace offsets only the monotonic and boot clocks), so the
daemon runs under libfaketime (Debian's ``faketime`` package): LD_PRELOAD'ed, it offsets what the daemon's
libc answers for the wall clock by the contents of a file we rewrite mid-run (``FAKETIME_TIMESTAMP_FILE``
with ``FAKETIME_NO_CACHE``), and ``FAKETIME_DONT_FAKE_MONOTONIC`` keeps the monotonic clock real, as a real
step does. jobrunner's code is the real one, unchanged. One difference from a real step remains: the
kernel still stamps files with the real time, so to the daemon every file it did not stamp itself looks as
if written before the step: that is the case of a file dropped just before a real step.

What must hold: a retry's delay is a duration (not an hour late after a step back, not at once after a step
forward), a job's timeout and the rate limits run on the monotonic clock, a file written in place still
settles in its settle time, a ``not_before`` is a time of day (it moves with the clock), and the step is
said in the log.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Daemon, DataDir, lines_with, wait_for

LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)
pytestmark = [pytest.mark.skipif(LIBFAKETIME is None, reason="needs libfaketime (apt-get install faketime; "
                                                             ".ci/run installs it)"),
              pytest.mark.usefixtures("keys_never_leak")]


class Clock:
    """The offset of the daemons' wall clock from the real one, changed while they run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.path.write_text("+0\n")

    def step(self, seconds: int) -> None:
        self.offset += seconds
        self.path.write_text(f"{self.offset:+d}\n")


@pytest.fixture
def clock(data: DataDir, tmp_path: Path) -> Clock:
    c = Clock(tmp_path / "faketime.rc")
    assert LIBFAKETIME is not None
    data.extra_env.update({"LD_PRELOAD": LIBFAKETIME, "FAKETIME_TIMESTAMP_FILE": str(c.path),
                           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    return c


def test_the_daemon_sees_the_clock_we_step(data: DataDir, daemons: Callable[..., Daemon], clock: Clock) -> None:
    """The harness itself: the daemon's own timestamps move with the offset, and the step is logged."""
    d = daemons()
    data.drop("a.json", {"type": "noop", "id": "a"})
    before = datetime.fromisoformat(data.wait_status("a")["finished_at"].replace("Z", "+00:00"))
    assert abs((before - datetime.now(UTC)).total_seconds()) < 5
    clock.step(-3600)
    data.drop("b.json", {"type": "noop", "id": "b"})
    after = datetime.fromisoformat(data.wait_status("b")["finished_at"].replace("Z", "+00:00"))
    assert 3590 < (datetime.now(UTC) - after).total_seconds() < 3610
    wait_for(lambda: lines_with(d.output(), "the wall clock stepped back by 3600"), 10, "the step to be logged")
    assert d.term() == 0


@pytest.mark.parametrize("step", [-3600, 3600], ids=["back", "forward"])
def test_a_retry_delay_is_a_duration_whatever_the_wall_clock_does(data: DataDir, daemons: Callable[..., Daemon],
                                                                  clock: Clock, step: int) -> None:
    """Stepped back an hour, a retry due in 2 s waited an hour; stepped forward, it ran at once."""
    d = daemons("--retry-base", "2", "--retry-max", "2")
    data.drop("f.json", {"type": "flaky", "id": "f", "fail_times": 1})
    pending = data.wait_status("f", ("pending",))
    failed_at = time.monotonic()
    delay = pending["history"][0]["delay_s"]
    assert 0.9 <= delay <= 2.0
    clock.step(step)
    doc = data.wait_status("f", timeout=15)
    took = time.monotonic() - failed_at
    assert doc["status"] == "completed" and doc["attempt"] == 2, doc
    assert delay - 0.3 <= took <= delay + 3, f"retried {took:.2f}s after the failure; its delay was {delay}s"
    assert "Traceback" not in d.output()
    assert d.term() == 0


def test_timeouts_run_on_the_monotonic_clock(data: DataDir, daemons: Callable[..., Daemon], clock: Clock) -> None:
    d = daemons()
    data.drop("t.json", {"type": "count", "id": "t", "steps": 10, "step_seconds": 0.15, "timeout_s": 4})
    data.wait_status("t", ("running",))
    clock.step(3600)
    time.sleep(0.5)
    clock.step(-7200)
    doc = data.wait_status("t", ("completed", "failed"), timeout=20)
    assert doc["status"] == "completed" and [h["outcome"] for h in doc["history"]] == ["completed"], doc
    assert d.term() == 0


def test_a_file_written_in_place_settles_in_its_settle_time_after_a_step_back(
        data: DataDir, daemons: Callable[..., Daemon], clock: Clock) -> None:
    """A file that does not parse is taken once it has been quiet for the settle time. Its mtime, an hour
    ahead of the daemon's clock, made it wait an hour."""
    d = daemons()
    clock.step(-3600)
    wait_for(lambda: lines_with(d.output(), "the wall clock stepped back"), 10, "the step to be logged")
    data.write_in_place("half.json", b'{"type": "noop", "id": "ha')
    dropped = time.monotonic()
    note = wait_for(lambda: data.rejected().get("half.json"), 10, "half.json to be rejected")
    assert time.monotonic() - dropped >= 0.3  # not before its settle time (0.3 s) either
    assert "invalid JSON" in note["reason"]
    assert d.term() == 0


def test_not_before_is_a_time_of_day_and_moves_with_the_clock(data: DataDir, daemons: Callable[..., Daemon],
                                                              clock: Clock) -> None:
    d = daemons()
    when = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    data.drop("later.json", {"type": "noop", "id": "later", "not_before": when})
    assert data.wait_status("later", ("pending",))["next_attempt_at"]
    time.sleep(1)
    assert data.status("later")["status"] == "pending"
    clock.step(3600)  # an hour later by the clock: past its time
    assert data.wait_status("later", timeout=10)["status"] == "completed"
    assert d.term() == 0
