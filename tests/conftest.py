"""Shared test tools: a real `jobrunner` process on a temp data dir, and the ways clients drop files.

Acceptance tests talk to jobrunner only as a user would: files in the spool, the status files, the
CLI's output and exit codes, and signals.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrunner.sandbox import Sandbox, SandboxConfig

JOBRUNNER = [sys.executable, "-m", "jobrunner"]


def wait_for(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(0.1, delay * 1.5)


class DataDir:
    def __init__(self, root: Path, testkit: Path) -> None:
        self.root = root
        self.queue = root / "queue"
        self.jobs = root / "jobs"
        self.testkit = testkit
        self.extra_env: dict[str, str] = {}  # for the processes the test starts (provider URLs, keys, ...)
        for d in (self.queue, self.jobs, testkit):
            d.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "JOBRUNNER_DATA_DIR": str(self.root), "JOBRUNNER_TESTKIT_DIR": str(self.testkit),
                "PYTHONUNBUFFERED": "1", **self.extra_env}

    # --- dropping requests, the ways clients do -------------------------------------------------
    def drop(self, name: str, request: dict[str, Any] | bytes) -> Path:
        """Atomic drop: write outside the spool's top level, then rename in."""
        data = request if isinstance(request, bytes) else json.dumps(request).encode()
        staging = self.root / "client-staging"
        staging.mkdir(exist_ok=True)
        tmp = staging / name
        tmp.write_bytes(data)
        dest = self.queue / name
        os.rename(tmp, dest)
        return dest

    def write_in_place(self, name: str, request: dict[str, Any] | bytes) -> Path:
        data = request if isinstance(request, bytes) else json.dumps(request).encode()
        dest = self.queue / name
        with open(dest, "wb") as f:
            f.write(data)
        return dest

    # --- reading what jobrunner wrote -----------------------------------------------------------
    def status(self, job_id: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.jobs / f"{job_id}.json").read_bytes())  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None

    def steps_done(self, job_id: str) -> int:
        """How many distinct steps of the job are stored (its steps.jsonl)."""
        from jobrunner import checkpoint
        from jobrunner.layout import Layout

        return len({r["key"] for r in checkpoint.records(Layout(self.root), job_id)})

    def statuses(self) -> dict[str, dict[str, Any]]:
        out = {}
        for path in self.jobs.glob("*.json"):
            doc = json.loads(path.read_bytes())  # a torn file fails the test right here
            out[doc["id"]] = doc
        return out

    def wait_status(self, job_id: str, states: tuple[str, ...] = ("completed",),
                    timeout: float = 20.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            doc = self.status(job_id)
            return doc if doc is not None and doc["status"] in states else None

        return wait_for(check, timeout, f"job {job_id} to be {'/'.join(states)} (now {self.status(job_id)})")  # type: ignore[no-any-return]

    def rejected(self) -> dict[str, dict[str, Any]]:
        folder = self.queue / ".rejected"
        if not folder.exists():
            return {}
        return {p.name[: -len(".reason")]: json.loads(p.read_bytes()) for p in folder.glob("*.reason")}

    def log_lines(self, name: str) -> list[list[str]]:
        path = self.testkit / name
        if not path.exists():
            return []
        return [line.split() for line in path.read_text().splitlines() if line]

    def cli(self, *args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*JOBRUNNER, *args], env=self.env, input=input.decode() if input else None,
                              capture_output=True, text=True, timeout=timeout)


class _Process:
    """A `jobrunner` process of a test, its output in a log file beside the data dir."""

    log_path: Path
    proc: subprocess.Popen[bytes] | None
    log: Any

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        rc = self.proc.wait(timeout)
        self.log.close()
        return rc

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Daemon(_Process):
    """A real `jobrunner run` process."""

    def __init__(self, data: DataDir, *args: str, name: str = "daemon", wrap: tuple[str, ...] = ()) -> None:
        self.data = data
        self.args = args
        self.wrap = wrap  # a command the daemon runs under (setpriv, to drop capabilities)
        self.log_path = data.root.parent / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str, wait_ready: bool = True) -> Daemon:
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([*self.wrap, *JOBRUNNER, "run", *self.args, *extra], env=self.data.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        if wait_ready:
            wait_for(lambda: b"ready:" in self.log_path.read_bytes() or self.proc.poll() is not None,  # type: ignore[union-attr]
                     30, "daemon ready")
            assert self.proc.poll() is None, self.output()
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def term(self, timeout: float = 60) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)



@pytest.fixture
def data(tmp_path: Path) -> DataDir:
    return DataDir(tmp_path / "data", tmp_path / "testkit")


@pytest.fixture
def daemons(data: DataDir) -> Iterator[Callable[..., Daemon]]:
    """Make daemons on the test's data dir; any still running at the end are killed."""
    made: list[Daemon] = []

    def make(*args: str, start: bool = True, wait_ready: bool = True, wrap: tuple[str, ...] = ()) -> Daemon:
        d = Daemon(data, "--settle", "0.3", "--rescan", "0.2", "--retry-base", "0.05", *args, wrap=wrap)
        made.append(d)
        return d.start(wait_ready=wait_ready) if start else d

    yield make
    for d in made:
        if d.alive:
            d.kill()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(key="test-key-" + secrets.token_hex(8))) as sb:
        yield sb


def run_burst(data: DataDir, *args: str, timeout: float = 120,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*JOBRUNNER, "run", "--burst", "--settle", "0.3", "--retry-base", "0.05", *args],
                          env={**data.env, **(env or {})}, capture_output=True, text=True, timeout=timeout)


class WebServer(_Process):
    """A real `jobrunner serve` process on 127.0.0.1, on a port the kernel picked (its `listening:` line)."""

    def __init__(self, data: DataDir, *args: str, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.args = args
        self.env = {**data.env, **(env or {})}
        self.log_path = data.root.parent / f"serve-{os.getpid()}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> WebServer:
        import re

        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([*JOBRUNNER, "serve", "--bind", "127.0.0.1:0", *self.args], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        line = wait_for(lambda: re.search(rb"listening: (http://127\.0\.0\.1:\d+)", self.log_path.read_bytes())
                        or self.proc.poll() is not None, 30, "the server's listening line")  # type: ignore[union-attr]
        assert self.proc.poll() is None, self.output()
        self.url = line.group(1).decode()
        return self

    def client(self, **kwargs: Any) -> Any:
        import httpx

        return httpx.Client(base_url=self.url, timeout=30, follow_redirects=False, **kwargs)

    def stop(self, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)


@pytest.fixture
def web_servers(data: DataDir) -> Iterator[Callable[..., WebServer]]:
    """Make `jobrunner serve` processes on the test's data dir; any still running at the end are stopped."""
    made: list[WebServer] = []

    def make(*args: str, env: dict[str, str] | None = None, start: bool = True) -> WebServer:
        server = WebServer(data, *args, env=env)
        made.append(server)
        return server.start() if start else server

    yield make
    for server in made:
        if server.alive:
            server.stop()

def lines_with(log: str, text: str) -> list[str]:
    """The lines of a daemon's log that hold ``text``."""
    return [line for line in log.splitlines() if text in line]


def assert_counts_completed(data: DataDir, n: int, steps: int, timeout: float = 60) -> list[dict[str, Any]]:
    """Jobs c0..c<n-1> (testkit ``count`` jobs of ``steps`` steps) all completed, every stored step used and
    none run again, and every status parses; their status documents."""
    docs = [data.wait_status(f"c{i}", timeout=timeout) for i in range(n)]
    for doc in docs:
        assert doc["status"] == "completed", doc
        assert doc["result"]["run"] + doc["result"]["reused"] == steps
    assert data.log_lines("violations.log") == []
    data.statuses()  # a torn status raises here
    return docs


def leaked_keys(data: DataDir) -> list[str]:
    """Files under the data dir, and the daemons' logs beside it, that hold one of the keys the test
    configured (``JOBRUNNER_*_KEY`` in ``data.extra_env``)."""
    keys = [v.encode() for k, v in data.extra_env.items() if k.endswith("_KEY") and len(v) >= 8]
    found = []
    for path in [*data.root.rglob("*"), *data.root.parent.glob("*.log")]:
        try:
            if path.is_file() and not path.is_symlink():
                blob = path.read_bytes()
                found += [f"{path}: {key[:4].decode()}..." for key in keys if key in blob]
        except OSError:  # a FIFO, a file the test made unreadable
            continue
    return found


@pytest.fixture
def keys_never_leak(data: DataDir) -> Iterator[None]:
    """Give the daemons a key for every provider (the sandbox's, when a test points them there), and after
    the test scan the data dir and the daemons' logs for them: zero hits."""
    import secrets

    for provider in ("LINKEDIN", "SKIPTRACE", "CARRIER", "DNC"):
        data.extra_env.setdefault(f"JOBRUNNER_{provider}_KEY", "key-" + secrets.token_hex(12))
    yield
    assert leaked_keys(data) == []
