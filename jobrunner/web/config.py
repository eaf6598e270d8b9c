"""What `jobrunner serve` is told: where to listen, which data dir, and the bearer token (if any).

The token comes from configuration only, first found wins: ``$JOBRUNNER_WEB_TOKEN``, the systemd
credential ``web_token`` (a file in ``$CREDENTIALS_DIRECTORY``, from ``LoadCredential=``), or the file
named by ``--token-file``. It is held in a ``Secret`` (masked repr) and never printed. Without a token
the server answers loopback clients only, so it refuses to bind to any other address: an open server
on a LAN that spends paid API credits is the one mistake this module exists to prevent.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..layout import Layout
from ..providers.config import Secret

TOKEN_ENV = "JOBRUNNER_WEB_TOKEN"
TOKEN_CREDENTIAL = "web_token"
DEFAULT_BIND = "127.0.0.1:8288"
MIN_TOKEN_CHARS = 16  # a guessable token is no token


@dataclass(frozen=True)
class Bind:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Bind:
        """``HOST:PORT`` (``[::1]:PORT`` for IPv6); port 0 picks a free one."""
        host, sep, port = text.strip().rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ConfigError(f"--bind {text!r}: give HOST:PORT, e.g. {DEFAULT_BIND} or [::1]:8288")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        number = int(port)
        if number > 65535:
            raise ConfigError(f"--bind {text!r}: port {number} is out of range (0-65535)")
        if host == "localhost":
            host = "127.0.0.1"  # what "localhost" should mean here, without asking a resolver
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"--bind {text!r}: {host!r} is not an IP address (use 127.0.0.1, 0.0.0.0, ::1, ...)") \
                from None
        return cls(host, number)

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback

    def url(self, port: int | None = None) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port if port is None else port}"


@dataclass(frozen=True)
class WebConfig:
    layout: Layout
    bind: Bind = field(default_factory=lambda: Bind.parse(DEFAULT_BIND))
    token: Secret | None = None
    refresh_ms: int = 2000  # how often the dashboard's live parts reload

    @property
    def open_on_loopback(self) -> bool:
        """No token: loopback clients are let in without one (and only they)."""
        return self.token is None


def load_token(token_file: str | None, environ: Mapping[str, str] | None = None) -> Secret | None:
    env = os.environ if environ is None else environ
    value = env.get(TOKEN_ENV) or None
    where = f"${TOKEN_ENV}"
    creds = env.get("CREDENTIALS_DIRECTORY")
    if value is None and creds:
        try:
            value = Path(creds, TOKEN_CREDENTIAL).read_text().strip() or None
            where = f"the credential {TOKEN_CREDENTIAL}"
        except OSError:
            value = None
    if value is None and token_file:
        try:
            value = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--token-file {token_file}: cannot be read ({exc.strerror or exc})") from None
        where = f"--token-file {token_file}"
        if not value:
            raise ConfigError(f"--token-file {token_file} is empty")
    if value is None:
        return None
    value = value.strip()
    if len(value) < MIN_TOKEN_CHARS or any(c.isspace() or not c.isprintable() for c in value):
        raise ConfigError(f"the token from {where} must be at least {MIN_TOKEN_CHARS} printable characters "
                          "without spaces (e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return Secret(value)


def check(config: WebConfig) -> None:
    """Refuse a configuration that would serve the jobs to the network without a token."""
    if config.token is None and not config.bind.loopback:
        raise ConfigError(f"refusing to listen on {config.bind.host} without a token: set ${TOKEN_ENV} (or the "
                          f"credential {TOKEN_CREDENTIAL}, or --token-file), or bind to 127.0.0.1")
    config.layout.check_exists()
