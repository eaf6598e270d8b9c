"""`jobrunner watch` (and the same progress in `submit --wait`) through the real process: in a pseudo-terminal
(a bar redrawn in place, colours unless NO_COLOR, Ctrl-C), and through a pipe (a plain line per change)."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

from conftest import JOBRUNNER, Daemon, DataDir, wait_for

BAR = re.compile(r"\[(#*)(-*)\]\s+(\d+)/(\d+)")
COLOUR = re.compile(r"\x1b\[\d+m")  # an SGR sequence: a colour or a reset


class Pty:
    """A command in a pseudo-terminal of 120x30, as a person runs it; output read as it comes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = os.forkpty()
        if self.pid == 0:  # the child: the terminal is its stdin, stdout and stderr
            try:
                os.execvpe(args[0], args, {**env, "TERM": "xterm-256color"})
            finally:
                os._exit(127)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
        self.out = b""
        self.status: int | None = None

    def read_until(self, pred: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not pred(self.text):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; the terminal shows:\n{self.text!r}")
            if not self._read(0.1):
                break
        return self.text

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], wait)
        if ready:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                return False
            if not chunk:
                return False
            self.out += chunk
        return True

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self._read(0.1) and time.monotonic() < deadline:
            pass
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"still running after {timeout}s; the terminal shows:\n{self.text!r}")

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")


def slow(job_id: str, steps: int = 8, step_seconds: float = 0.3) -> dict[str, object]:
    return {"type": "noop", "id": job_id, "steps": steps, "step_seconds": step_seconds}


def bars(text: str) -> list[tuple[int, int, int]]:
    """(filled, current, total) of every bar drawn."""
    return [(len(m.group(1)), int(m.group(3)), int(m.group(4))) for m in BAR.finditer(text)]


def test_a_terminal_sees_the_bar_advance_in_place_and_watch_exits_when_final(
        data: DataDir, daemons: Callable[..., Daemon]) -> None:
    daemons()
    data.drop("w.json", slow("bar-1"))
    term = Pty([*JOBRUNNER, "watch", "bar-1"], data.env)
    assert term.wait(60) == 0, term.text
    text = term.text
    drawn = bars(text)
    currents = [c for _, c, _ in drawn]
    assert len(set(currents)) >= 3, text  # it advanced while we watched
    assert currents == sorted(currents) and drawn[-1] == (20, 8, 8)
    fills = [f for f, _, _ in drawn]
    assert fills == sorted(fills) and fills[0] < 20
    assert "\x1b[2K" in text and re.search(r"\x1b\[1A", text)  # redrawn in place, not scrolled
    assert "\x1b[36mrunning" in text and "\x1b[32mcompleted" in text  # coloured states
    last = text.rsplit("\x1b[2K", 1)[1]
    assert "bar-1" in last and "completed" in last and "8/8 100%" in last and "attempt 1/4" in last
    assert re.search(r"\d+(\.\d)?/s\s+ETA \d", text), text  # a rate and an ETA while it ran
    assert "Traceback" not in text


def test_no_color_keeps_the_bar_and_drops_the_colours(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    daemons()
    data.drop("w.json", slow("plain-colours", steps=4, step_seconds=0.3))
    term = Pty([*JOBRUNNER, "watch", "plain-colours"], {**data.env, "NO_COLOR": "1"})
    assert term.wait(60) == 0, term.text
    assert not COLOUR.search(term.text), term.text
    assert "\x1b[2K" in term.text and bars(term.text)[-1] == (20, 4, 4)


def test_ctrl_c_exits_130_without_a_traceback(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    daemons()
    data.drop("w.json", slow("long", steps=200, step_seconds=0.5))
    term = Pty([*JOBRUNNER, "watch", "long"], data.env)
    term.read_until(lambda t: "running" in t and "[" in t, 30)
    os.write(term.fd, b"\x03")  # a Ctrl-C typed at the terminal: SIGINT to its foreground process group
    assert term.wait(20) == 130, term.text
    assert "Traceback" not in term.text and "Aborted" not in term.text
    assert data.status("long")["status"] == "running"  # watching changed nothing


def test_without_a_terminal_a_plain_line_per_change(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    daemons()
    data.drop("w.json", slow("piped", steps=6, step_seconds=0.3))
    out = data.cli("watch", "piped")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "\x1b" not in out.stdout
    assert all(line.startswith("piped ") for line in lines), lines
    assert all(line.startswith("piped noop ") for line in lines[1:]), lines  # the first may be before its status
    assert all(a != b for a, b in itertools.pairwise(lines))  # a line only when something changed
    counts = [int(m.group(1)) for m in re.finditer(r" (\d+)/6 ", out.stdout)]
    assert len(set(counts)) >= 2 and counts == sorted(counts), lines
    assert lines[-1].startswith("piped noop completed 6/6 100% attempt 1/4 took "), lines
    assert any(re.search(r" running [1-5]/6 \d+% \d+\.\d/s ETA [\d.]+s attempt 1/4$", line) for line in lines), lines


def test_exit_codes_say_how_the_jobs_ended(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    daemons()
    data.drop("f.json", {"type": "flaky", "id": "no-luck", "permanent": True})
    data.drop("ok.json", {"type": "noop", "id": "fine"})
    failed = data.cli("watch", "no-luck")
    assert failed.returncode == 1, failed
    assert "no-luck flaky failed" in failed.stdout and "error: PermanentError: the provider said no" in failed.stdout
    assert data.cli("watch", "fine").returncode == 0
    both = data.cli("watch", "fine", "no-luck")
    assert both.returncode == 1 and both.stdout.count("\n") == 2  # one line each: both were final already
    missing = data.cli("watch", "fine", "never-submitted")
    assert missing.returncode == 4 and "no job 'never-submitted'" in missing.stderr
    assert data.cli("watch", "../etc").returncode == 4
    usage = data.cli("watch", "--follow", "fine")
    assert usage.returncode == 2 and "--follow" in usage.stderr


def test_a_queued_job_is_watched_until_a_daemon_runs_it(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    job_id = data.cli("submit", "-", input=json.dumps(slow("later", steps=2, step_seconds=0.2)).encode()).stdout
    assert job_id.strip() == "later"
    proc = subprocess.Popen([*JOBRUNNER, "watch", "later"], env=data.env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "later ? queued"
        daemons()
        assert proc.wait(30) == 0
        rest = proc.stdout.read().splitlines()
        assert rest[-1].startswith("later noop completed 2/2"), rest
    finally:
        if proc.poll() is None:
            proc.kill()


def test_without_ids_it_follows_the_active_jobs_until_none_is_left(
        data: DataDir, daemons: Callable[..., Daemon]) -> None:
    empty = data.cli("watch")
    assert (empty.returncode, empty.stdout) == (0, "no active jobs\n")
    daemons()
    data.drop("a.json", slow("first", steps=5, step_seconds=0.3))
    data.drop("b.json", slow("second", steps=8, step_seconds=0.3))
    wait_for(lambda: all((data.status(j) or {}).get("status") == "running" for j in ("first", "second")), 20,
             "both running")
    out = data.cli("watch")
    assert out.returncode == 0, out
    ends = [line for line in out.stdout.splitlines() if " completed " in line]
    assert [line.split()[0] for line in ends] == ["first", "second"], out.stdout


def test_follow_waits_for_new_jobs_until_interrupted(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    daemons()
    proc = subprocess.Popen([*JOBRUNNER, "watch", "--follow"], env=data.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert proc.poll() is None  # nothing active, and it keeps watching
        data.drop("n.json", slow("newcomer", steps=4, step_seconds=0.3))
        assert proc.stdout is not None
        seen = []
        while not seen or " completed " not in seen[-1]:
            line = proc.stdout.readline()
            assert line, seen
            seen.append(line)
        assert seen[-1].startswith("newcomer noop completed 4/4")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130
        assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_submit_wait_on_a_terminal_shows_the_same_bar(data: DataDir, daemons: Callable[..., Daemon],
                                                       tmp_path: Path) -> None:
    daemons()
    request = tmp_path / "req.json"
    request.write_text(json.dumps(slow("waited", steps=5, step_seconds=0.3)))
    term = Pty([*JOBRUNNER, "submit", "--wait", str(request)], data.env)
    assert term.wait(60) == 0, term.text
    assert term.text.startswith("waited\r\n")  # the id first, as without a terminal
    drawn = bars(term.text)
    assert len({c for _, c, _ in drawn}) >= 2 and drawn[-1] == (20, 5, 5), term.text
    assert "\x1b[32mcompleted" in term.text and "\x1b[2K" in term.text
    assert term.text.rstrip().endswith("waited completed")
