"""sd_notify against a real datagram socket, bound where systemd would bind it: a path, or an abstract name."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobrunner.notify import Notifier


class Manager:
    """The service manager's end: a bound AF_UNIX datagram socket and the NOTIFY_SOCKET naming it."""

    def __init__(self, sock: socket.socket, notify_socket: str) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": notify_socket}

    def received(self) -> dict[str, str]:
        data = self.sock.recv(4096)
        return dict(line.split("=", 1) for line in data.decode().split("\n"))

    def nothing_more(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        finally:
            self.sock.setblocking(True)
        return False


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Manager]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(5)
    if request.param == "path":
        path = str(tmp_path / "notify")
        sock.bind(path)
        name = path
    else:
        name = f"@jobrunner-test-{os.urandom(8).hex()}"
        sock.bind("\0" + name[1:])
    try:
        yield Manager(sock, name)
    finally:
        sock.close()


def test_each_notification_is_one_datagram(manager: Manager) -> None:
    n = Notifier(manager.env)
    assert n.enabled
    assert n.ready()
    assert manager.received() == {"READY": "1"}
    assert n.ready(status="draining 3 jobs")
    assert manager.received() == {"READY": "1", "STATUS": "draining 3 jobs"}
    assert n.status("42 running, 7 queued")
    assert manager.received() == {"STATUS": "42 running, 7 queued"}
    assert n.watchdog()
    assert manager.received() == {"WATCHDOG": "1"}
    assert n.extend_timeout(30.5)
    assert manager.received() == {"EXTEND_TIMEOUT_USEC": "30500000"}
    assert n.stopping()
    assert manager.received() == {"STOPPING": "1"}
    assert n.stopping(status="stopping: 2 jobs to finish")
    assert manager.received() == {"STOPPING": "1", "STATUS": "stopping: 2 jobs to finish"}
    assert n.send(status="x", errno=5, ready=True)
    assert manager.received() == {"STATUS": "x", "ERRNO": "5", "READY": "1"}
    assert manager.nothing_more()
    n.close()


def test_reloading_carries_the_monotonic_clock(manager: Manager) -> None:
    n = Notifier(manager.env)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    got = manager.received()
    assert got.keys() == {"RELOADING", "MONOTONIC_USEC"}
    assert got["RELOADING"] == "1"
    assert before <= int(got["MONOTONIC_USEC"]) <= after
    n.close()


def test_socket_is_kept_and_reopened_after_close(manager: Manager) -> None:
    n = Notifier(manager.env)
    assert n.status("one")
    first = n._sock
    assert n.status("two")
    assert n._sock is first  # one socket, connected once
    n.close()
    n.close()  # twice is fine
    assert n.status("three")
    assert [manager.received()["STATUS"] for _ in range(3)] == ["one", "two", "three"]
    n.close()


def test_a_manager_that_comes_back_is_reached_again(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    n = Notifier({"NOTIFY_SOCKET": path})
    assert not n.status("nobody listens yet")  # no such socket: False, no exception
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.bind(path)
    try:
        assert n.status("listening now")
        assert sock.recv(4096) == b"STATUS=listening now"
    finally:
        sock.close()
    os.unlink(path)
    assert not n.watchdog()  # the manager went away: False, no exception
    n.close()


def test_disabled_without_notify_socket() -> None:
    for env in ({}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative/path"}):
        n = Notifier(env)
        assert not n.enabled
        assert not n.ready()
        assert not n.send(status="x")
        assert not n.watchdog()
        n.close()


def test_missing_socket_is_not_an_error(tmp_path: Path) -> None:
    for name in (str(tmp_path / "no-such-socket"), f"@jobrunner-test-{os.urandom(8).hex()}",
                 "/" + "x" * 200):  # too long for sockaddr_un
        n = Notifier({"NOTIFY_SOCKET": name})
        assert n.enabled
        assert not n.ready()
        assert not n.stopping("bye")
        n.close()


@pytest.mark.parametrize("bad", ["ok\nREADY=1", "nul\0byte", "trailing\n"])
def test_newline_injection_is_refused(manager: Manager, bad: str) -> None:
    n = Notifier(manager.env)
    with pytest.raises(ValueError):
        n.status(bad)
    with pytest.raises(ValueError):
        Notifier({}).status(bad)  # refused even when disabled: the bug shows outside systemd too
    with pytest.raises(ValueError):
        n.send(**{"A\nREADY": 1})
    with pytest.raises(ValueError):
        n.send()
    with pytest.raises(ValueError):
        n.extend_timeout(-1)
    assert manager.nothing_more()
    n.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "20000000"}, 20.0),
        ({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": str(os.getpid())}, 2.5),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),  # the watchdog is another's
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "nope"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert Notifier(env).watchdog_interval_s == expected


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier()
    assert not n.enabled
    assert n.watchdog_interval_s == 1.0
    assert "WATCHDOG_USEC" in os.environ  # the environment is left alone
