"""Where each provider's base URL, key and limits come from, and the one type that holds a key.

For a provider P (``linkedin``, ``skiptrace``, ``carrier``, ``dnc``), first found wins:

- key: ``JOBRUNNER_P_KEY``; else the systemd credential ``P_key`` (a file in ``$CREDENTIALS_DIRECTORY``,
  from ``LoadCredential=``/``SetCredentialEncrypted=``); else ``key`` in the config file's
  ``[providers.P]`` table.
- base URL: ``JOBRUNNER_P_URL``; else ``url`` in the config file; else the provider's public address.
- rate limit ``N/S`` (N calls per S seconds; waits, never fails): ``JOBRUNNER_P_RATE``; else ``rate``
  in the config file; else the provider's published limit.
- concurrency (calls in flight at once): ``JOBRUNNER_P_CONCURRENCY``; else ``concurrency``; else a default.

The config file is TOML, at ``$JOBRUNNER_CONFIG`` when set. A key is held in a ``Secret``, whose repr
and str are masked, so it cannot reach a status file, a log line or an error message by accident.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from .client import CallPolicy

CONFIG_ENV = "JOBRUNNER_CONFIG"


class Secret:
    """An API key or token. Only ``reveal()`` gives the value, for the one header that needs it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class RateLimit:
    calls: int
    per_s: float

    @classmethod
    def parse(cls, text: str, where: str) -> RateLimit:
        """``"5/60"`` (5 calls per 60 s), ``"5/min"``, ``"10/s"``."""
        calls, sep, per = text.strip().partition("/")
        units = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0,
                 "hour": 3600.0}
        try:
            n = int(calls)
            seconds = units[per.strip()] if per.strip() in units else float(per)
        except ValueError:
            n, seconds = 0, 0.0
        if not sep or n < 1 or seconds <= 0:
            raise ConfigError(f"{where}: rate {text!r} is not N/SECONDS (for example 5/60, or 5/min)")
        return cls(n, seconds)

    def __str__(self) -> str:
        return f"{self.calls}/{self.per_s:g}s"


@dataclass(frozen=True)
class ProviderSpec:
    """What jobrunner knows about a provider before any configuration."""

    name: str
    default_url: str | None
    rate: RateLimit | None
    concurrency: int
    description: str
    auth: str  # how the key is sent: "rapidapi" (x-rapidapi-key + x-rapidapi-host) or "bearer"


SPECS: dict[str, ProviderSpec] = {
    s.name: s
    for s in (
        ProviderSpec("linkedin", "https://realtime-linkedin-sales-navigator-data.p.rapidapi.com",
                     RateLimit(5, 60.0), 1, "LinkedIn Sales Navigator search (RapidAPI)", "rapidapi"),
        ProviderSpec("skiptrace", "https://skip-tracing-working-api.p.rapidapi.com", None, 16,
                     "skip tracing (RapidAPI)", "rapidapi"),
        ProviderSpec("carrier", "https://api.telnyx.com", None, 16, "phone carrier lookup (Telnyx)", "bearer"),
        ProviderSpec("dnc", None, None, 16, "DNC scrub (your agency's API)", "bearer"),
    )
}


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    url: str | None
    key: Secret | None
    rate: RateLimit | None
    concurrency: int
    timeout_s: float = 30.0
    extra: Mapping[str, Any] = field(default_factory=dict)  # provider-specific settings from the file

    @property
    def key_variable(self) -> str:
        return env_name(self.name, "KEY")

    def require_key(self) -> Secret:
        from ..errors import PermanentError

        if self.key is None:
            raise PermanentError(
                f"no API key for {self.name}: set {self.key_variable} (or the systemd credential "
                f"{self.name}_key, or key in [providers.{self.name}] of the file in ${CONFIG_ENV})")
        return self.key

    def require_url(self) -> str:
        from ..errors import PermanentError

        if not self.url:
            raise PermanentError(f"no base URL for {self.name}: set {env_name(self.name, 'URL')} "
                                 f"(or url in [providers.{self.name}] of the file in ${CONFIG_ENV})")
        return self.url


def call_policy(environ: Mapping[str, str] | None = None) -> CallPolicy:
    """How one call is retried: ``JOBRUNNER_CALL_TRIES`` (5), ``JOBRUNNER_CALL_BACKOFF_S`` (first wait,
    0.5), ``JOBRUNNER_CALL_MAX_WAIT_S`` (the longest Retry-After slept through, 30; longer ones defer the
    job), or ``tries``/``backoff_s``/``max_wait_s`` in the config file's ``[calls]`` table."""
    from .client import CallPolicy

    env = os.environ if environ is None else environ
    table = read_table(env.get(CONFIG_ENV), "calls")
    default = CallPolicy()

    def value(var: str, key: str, fallback: float) -> float:
        raw = env.get(f"JOBRUNNER_CALL_{var}", table.get(key))
        if raw is None:
            return fallback
        try:
            number = float(raw)
        except (TypeError, ValueError):
            number = -1.0
        if number < 0:
            raise ConfigError(f"JOBRUNNER_CALL_{var} / [calls] {key}: {raw!r} is not a number >= 0")
        return number

    return CallPolicy(tries=max(1, int(value("TRIES", "tries", default.tries))),
                      backoff_initial_s=value("BACKOFF_S", "backoff_s", default.backoff_initial_s),
                      max_wait_s=value("MAX_WAIT_S", "max_wait_s", default.max_wait_s))


def env_name(provider: str, what: str) -> str:
    return f"JOBRUNNER_{provider.upper()}_{what}"


def load(environ: Mapping[str, str] | None = None) -> dict[str, ProviderConfig]:
    """Every provider's configuration. A config file that is named but unreadable is a ConfigError."""
    env = os.environ if environ is None else environ
    table = read_table(env.get(CONFIG_ENV))
    creds = env.get("CREDENTIALS_DIRECTORY")
    out = {}
    for name, spec in SPECS.items():
        section = table.get(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{env.get(CONFIG_ENV)}: [providers.{name}] must be a table")
        where = f"[providers.{name}]"
        key = env.get(env_name(name, "KEY")) or credential(creds, f"{name}_key") or section.get("key")
        if key is not None and not isinstance(key, str):
            raise ConfigError(f"{where}: key must be a string")
        rate_text = env.get(env_name(name, "RATE")) or section.get("rate")
        conc = env.get(env_name(name, "CONCURRENCY")) or section.get("concurrency")
        try:
            concurrency = int(conc) if conc is not None else spec.concurrency
            timeout_s = float(section.get("timeout_s", 30.0))
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: concurrency must be an integer and timeout_s a number") from None
        if concurrency < 1 or timeout_s <= 0:
            raise ConfigError(f"{where}: concurrency must be at least 1 and timeout_s positive")
        out[name] = ProviderConfig(
            name=name,
            url=(env.get(env_name(name, "URL")) or section.get("url") or spec.default_url or None),
            key=Secret(key.strip()) if key and key.strip() else None,
            rate=RateLimit.parse(str(rate_text), env_name(name, "RATE")) if rate_text else spec.rate,
            concurrency=concurrency,
            timeout_s=timeout_s,
            extra={k: v for k, v in section.items() if k not in {"key", "url", "rate", "concurrency", "timeout_s"}},
        )
    return out


def read_table(path: str | None, table: str = "providers") -> dict[str, Any]:
    """One top-level table of the config file at ``path`` (empty without a file or without the table)."""
    if not path:
        return {}
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"config file {path} ({CONFIG_ENV}) cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} ({CONFIG_ENV}) is not valid TOML: {exc}") from None
    section = data.get(table, {})
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [{table}] must be a table")
    return section


def credential(directory: str | None, name: str) -> str | None:
    """A systemd credential's value (a file in ``$CREDENTIALS_DIRECTORY``), or None."""
    if not directory:
        return None
    try:
        return Path(directory, name).read_text().strip() or None
    except OSError:
        return None
