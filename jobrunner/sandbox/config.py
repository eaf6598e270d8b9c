"""The sandbox's knobs: which faults to inject, and where and with what key to listen.

``Faults`` is plain data so the same object can come from Python, from the CLI or from a
``POST /_faults`` body. Values are checked when the object is made: a rate of 1.5 or a Retry-After form
nobody parses should fail where it was written, not show up later as a puzzling run.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..errors import ConfigError

PROVIDERS = ("linkedin", "skiptrace", "carrier", "dnc")
# The DNC identity service is a fifth mount; it is faulted by the global faults like the others, and
# may get its own with per_provider["dnc-identity"].
FAULT_SCOPES = (*PROVIDERS, "dnc-identity")
RETRY_AFTER_FORMS = ("seconds", "date")
_RATES = ("error_rate", "throttle_rate", "timeout_rate", "malformed_rate")


@dataclass
class Faults:
    """What goes wrong, and how often. The defaults are a provider on a good day."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    rate_limit: tuple[int, float] | None = None
    retry_after_form: str = "seconds"
    throttle_rate: float = 0.0
    timeout_rate: float = 0.0
    hang_s: float = 30.0
    malformed_rate: float = 0.0
    status_override: int | None = None

    def __post_init__(self) -> None:
        for name in (*_RATES, "latency_ms", "hang_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"faults: {name} must be a number, not {value!r}")
            setattr(self, name, float(value))
            if name in _RATES and not 0.0 <= value <= 1.0:
                raise ConfigError(f"faults: {name} is a fraction of calls, 0..1, not {value!r}")
            if value < 0:
                raise ConfigError(f"faults: {name} cannot be negative ({value!r})")
        if self.rate_limit is not None:
            self.rate_limit = _rate_limit(self.rate_limit)
        if self.retry_after_form not in RETRY_AFTER_FORMS:
            raise ConfigError(f"faults: retry_after_form is 'seconds' or 'date', not {self.retry_after_form!r}")
        status = self.status_override
        if status is not None and (isinstance(status, bool) or not isinstance(status, int)
                                   or not 400 <= status <= 599):
            raise ConfigError(f"faults: status_override is an HTTP error status (400..599), not {status!r}")

    def to_json(self) -> dict[str, Any]:
        """The ``POST /_faults`` form: the same fields, ``rate_limit`` as ``[N, S]``."""
        doc = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["rate_limit"] = list(self.rate_limit) if self.rate_limit is not None else None
        return doc

    def merged(self, doc: dict[str, Any]) -> Faults:
        """A copy with the fields ``doc`` names changed (a ``POST /_faults`` body, minus ``provider``).

        Fields a body leaves out keep their value, so ``{"error_rate": 0.1}`` does not also switch off a
        latency set earlier.
        """
        known = {f.name for f in fields(self)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ConfigError(f"faults: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        changes = dict(doc)
        if isinstance(changes.get("rate_limit"), list):
            changes["rate_limit"] = tuple(changes["rate_limit"])
        return replace(self, **changes)


def _rate_limit(value: object) -> tuple[int, float]:
    if isinstance(value, tuple | list) and len(value) == 2:
        calls, per_s = value
        if (isinstance(calls, int) and not isinstance(calls, bool) and calls >= 1
                and isinstance(per_s, int | float) and not isinstance(per_s, bool)
                and math.isfinite(per_s) and per_s > 0):
            return calls, float(per_s)
    raise ConfigError(f"faults: rate_limit is (N calls, S seconds) with N >= 1 and S > 0, not {value!r}")


@dataclass
class SandboxConfig:
    """Where the sandbox listens, the one key it accepts, and how its providers behave."""

    host: str = "127.0.0.1"
    port: int = 0
    key: str = "sandbox-key"
    seed: int = 1
    faults: Faults = field(default_factory=Faults)
    per_provider: dict[str, Faults] = field(default_factory=dict)
    search_total: int | None = None
    dnc_token_ttl: int | None = None

    def __post_init__(self) -> None:
        self.bind_host()  # refuse a non-loopback host now, not at start()
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"sandbox: port must be 0..65535, not {self.port!r}")
        if not isinstance(self.key, str) or not self.key or any(c in self.key for c in "\r\n\t "):
            raise ConfigError("sandbox: the key must be a non-empty string without whitespace")
        for name in self.per_provider:
            if name not in FAULT_SCOPES:
                raise ConfigError(f"sandbox: per_provider has {name!r}; providers are {', '.join(FAULT_SCOPES)}")
        if self.search_total is not None and (isinstance(self.search_total, bool) or self.search_total < 0):
            raise ConfigError(f"sandbox: search_total cannot be negative ({self.search_total!r})")
        if self.dnc_token_ttl is not None and (isinstance(self.dnc_token_ttl, bool) or self.dnc_token_ttl < 1):
            raise ConfigError(f"sandbox: dnc_token_ttl is a number of calls, at least 1 ({self.dnc_token_ttl!r})")

    def bind_host(self) -> str:
        """The address to bind. Only loopback: the sandbox accepts a known key and hands out fake people,
        and nothing off this machine has any business talking to it."""
        if self.host == "localhost":
            return "127.0.0.1"
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            address = None
        if address is None or not address.is_loopback:
            raise ConfigError(f"sandbox: refusing to listen on {self.host!r}: only a loopback address "
                              "(127.0.0.1, ::1) is allowed")
        return str(address)
