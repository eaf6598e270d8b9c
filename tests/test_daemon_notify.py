"""The daemon speaks systemd's notification protocol: a real datagram socket stands in for systemd."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Daemon, DataDir, wait_for


class FakeManager:
    """What systemd's side of NOTIFY_SOCKET sees: every datagram, in order."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def read(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.append(dict(line.split("=", 1) for line in data.decode().split("\n") if line))

    def first(self, key: str, timeout: float = 20) -> dict[str, str]:
        return wait_for(lambda: next((m for m in self.read() if key in m), None), timeout, f"{key} message")  # type: ignore[no-any-return]


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[FakeManager]:
    m = FakeManager(tmp_path / "notify.sock")
    yield m
    m.sock.close()


def test_ready_status_watchdog_stopping(data: DataDir, daemons: Callable[..., Daemon], manager: FakeManager,
                                        tmp_path: Path) -> None:
    data.extra_env.update({"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "600000"})
    for i in range(3):
        data.drop(f"q{i}.json", {"type": "count", "id": f"early{i}", "steps": 1})
    d = daemons()
    ready = manager.first("READY")
    assert ready["READY"] == "1" and "running" in ready["STATUS"] and "failed in the last hour" in ready["STATUS"]
    # READY comes after the start-up scan: the jobs dropped before the start were already taken
    assert ready["STATUS"].startswith(("3 running", "2 running", "1 running", "0 running"))
    t0 = time.monotonic()
    wait_for(lambda: sum(1 for m in manager.read() if "WATCHDOG" in m) >= 3, 5, "three watchdog pings")
    assert time.monotonic() - t0 < 2.0  # every WATCHDOG_USEC / 3 = 0.2 s
    data.drop("long.json", {"type": "count", "id": "long", "steps": 100, "step_seconds": 0.05})
    data.wait_status("long", ("running",))
    wait_for(lambda: any(m.get("STATUS", "").startswith("1 running") for m in manager.read()), 10, "status")
    d.signal(signal.SIGTERM)
    stopping = manager.first("STOPPING")
    assert stopping["STOPPING"] == "1" and "draining 1" in stopping["STATUS"]
    extend = manager.first("EXTEND_TIMEOUT_USEC")
    assert int(extend["EXTEND_TIMEOUT_USEC"]) >= 30_000_000
    assert d.wait() == 0


def test_sighup_reloads_the_configuration_without_dropping_jobs(
        data: DataDir, daemons: Callable[..., Daemon], manager: FakeManager, tmp_path: Path) -> None:
    conf = tmp_path / "jobrunner.toml"
    conf.write_text('[providers.linkedin]\nrate = "5/60"\n')
    data.extra_env.update({"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "JOBRUNNER_CONFIG": str(conf)})
    d = daemons()
    manager.first("READY")
    data.drop("long.json", {"type": "count", "id": "long", "steps": 30, "step_seconds": 0.05})
    data.wait_status("long", ("running",))
    conf.write_text("[providers.linkedin\nbroken")
    d.signal(signal.SIGHUP)
    manager.first("RELOADING")
    wait_for(lambda: "reload failed, the configuration in use is unchanged" in d.output(), 10, "reload error")
    conf.write_text('[providers.linkedin]\nrate = "10/60"\n')
    d.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded the configuration" in d.output(), 10, "reload")
    assert d.alive
    assert data.wait_status("long")["status"] == "completed"
    assert d.term() == 0


def test_the_lock_file_is_a_heartbeat(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    d = daemons()
    locks = wait_for(lambda: list((data.queue / ".claimed").glob("*.lock")), 10, "a lock file")
    first = os.stat(locks[0]).st_mtime
    os.utime(locks[0], (first - 60, first - 60))  # as if it had not beaten for a minute
    wait_for(lambda: os.stat(locks[0]).st_mtime > first - 1, 12, "a heartbeat")
    assert d.term() == 0


def test_without_notify_socket_the_daemon_runs_as_usual(data: DataDir, daemons: Callable[..., Daemon]) -> None:
    data.extra_env.pop("NOTIFY_SOCKET", None)
    os.environ.pop("NOTIFY_SOCKET", None)
    d = daemons()
    data.drop("a.json", {"type": "noop", "id": "plain"})
    assert data.wait_status("plain")["status"] == "completed"
    assert d.term() == 0
