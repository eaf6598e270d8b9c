"""systemd's notification protocol (sd_notify(3)) in a few lines, so ``Type=notify`` needs no dependency.

A notification is one datagram of ``KEY=value`` lines to the socket named by ``$NOTIFY_SOCKET``. Outside
systemd the variable is unset and every call does nothing, so the daemon calls these unconditionally.

A notification is a courtesy to the service manager, never a reason to stop working: a send that fails
(systemd restarted, the socket went away, a full queue) returns False instead of raising. The one error
that is raised is ours: a newline (or NUL) in a value, which would smuggle in another field, such as a
``STATUS`` holding an error message that forges ``READY=1``.

The environment is left alone (``sd_notify(unset_environment=1)`` is not copied): ``--workers`` forks
daemons that may notify too, which systemd accepts with ``NotifyAccess=all``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("jobrunner.notify")


class Notifier:
    """systemd's notification protocol (sd_notify(3)): datagrams to $NOTIFY_SOCKET. Does nothing when the
    variable is unset (not under systemd). Abstract sockets ('@' prefix -> leading NUL) included.

    One socket is kept for the life of the notifier, connected on the first send; after a failed send it
    is dropped and the next send connects again (a restarted manager binds a new socket at the same name).
    ``watchdog_interval_s`` is decided once, in the process that makes the notifier: like
    sd_watchdog_enabled(3), it is set only when ``$WATCHDOG_PID`` is unset or names this process.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _address(env.get("NOTIFY_SOCKET", ""))
        self.enabled: bool = self._address is not None
        self.watchdog_interval_s: float | None = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._warned = False

    def send(self, **fields: str | int) -> bool:
        """Send ``fields`` as one notification (``send(status="x")`` sends ``STATUS=x``). True if sent;
        False when disabled or when the send failed. A newline or NUL in a value raises ValueError."""
        message = _encode(fields)
        if self._address is None:
            return False
        try:
            sock = self._sock
            if sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                try:
                    sock.connect(self._address)
                except OSError:
                    sock.close()
                    raise
                self._sock = sock
            sock.sendall(message)
        except OSError as exc:
            self.close()
            # once at warning (a unit file or a sandbox problem), then quietly: the watchdog sends often
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "systemd notification not sent to %s: %s", self._address.replace("\0", "@"), exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete (``Type=notify``: systemd starts the units ordered after this one)."""
        return self.send(ready=1) if status is None else self.send(ready=1, status=status)

    def status(self, text: str) -> bool:
        """A one-line state for ``systemctl status``."""
        return self.send(status=text)

    def watchdog(self) -> bool:
        """Keep-alive: send at least every ``watchdog_interval_s`` / 2 or systemd kills the service."""
        return self.send(watchdog=1)

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun (systemctl shows "deactivating" instead of a daemon that looks hung)."""
        return self.send(stopping=1) if status is None else self.send(stopping=1, status=status)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before the start or stop timeout (a long drain on SIGTERM)."""
        if not 0 <= seconds < float("inf"):
            raise ValueError(f"extend_timeout needs a finite number of seconds >= 0, not {seconds!r}")
        return self.send(extend_timeout_usec=int(seconds * 1_000_000))

    def reloading(self) -> bool:
        """A reload has begun; ``ready()`` ends it. The timestamp lets systemd >= 253 (``Type=notify-reload``)
        tell this reload's READY=1 from an older one."""
        return self.send(reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def close(self) -> None:
        """Release the socket (a later send opens another)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def _address(value: str) -> str | None:
    """The socket address to connect to, or None when there is none we can use: unset, empty, or a
    relative path or other address family (sd_notify(3) ignores those too)."""
    if value.startswith("@"):
        return "\0" + value[1:]  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
        pid = env.get("WATCHDOG_PID")
        if pid is not None and int(pid) != os.getpid():
            return None
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


def _encode(fields: Mapping[str, str | int]) -> bytes:
    if not fields:
        raise ValueError("a notification needs at least one field")
    lines = []
    for key, value in fields.items():
        text = str(int(value)) if isinstance(value, bool) else str(value)  # READY=1, not READY=True
        if "\n" in text or "\0" in text:
            raise ValueError(f"a newline or NUL in {key}={text!r} would start another field")
        if not key or "=" in key or "\n" in key or "\0" in key:
            raise ValueError(f"not a field name: {key!r}")
        lines.append(f"{key.upper()}={text}")
    return "\n".join(lines).encode()
