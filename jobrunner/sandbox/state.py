"""Everything the sandbox remembers between calls, behind one lock: counters, faults in effect, the
seeded RNG that picks faulted calls, rate-limit windows and DNC tokens.

The lock is held for bookkeeping only, never across a sleep, so a hung call does not stall the rest.
Credentials are kept as hashes: the sandbox needs to recognize them, not to know them.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import random
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ConfigError
from .config import FAULT_SCOPES, Faults, SandboxConfig

MAX_REQUESTS = 10_000


@dataclass(frozen=True)
class Outcome:
    """What a fault draw decided for one call: nothing, or one kind of fault."""

    kind: str | None = None  # None, "timeout", "throttle", "error", "malformed"
    status: int = 200
    malformed_form: str = ""  # "truncated" or "shape", alternating


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class State:
    def __init__(self, config: SandboxConfig) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._key = config.key
        self._ttl = config.dnc_token_ttl
        self._faults = replace(config.faults)
        self._per_provider = {name: replace(f) for name, f in config.per_provider.items()}
        self._windows: dict[str, deque[float]] = {}
        self._tokens: dict[str, int] = {_fingerprint(config.key): 0}  # DNC token fingerprint -> uses
        self._malformed_turn = 0
        self._calls: Counter[str] = Counter()
        self._ok: Counter[str] = Counter()
        self._status_counts: Counter[str] = Counter()
        self._ok_by_request: Counter[str] = Counter()
        self._requests: deque[dict[str, Any]] = deque(maxlen=MAX_REQUESTS)

    # --- faults ----------------------------------------------------------------------------------------
    def faults_for(self, provider: str) -> Faults:
        with self._lock:
            return self._per_provider.get(provider, self._faults)

    def set_faults(self, faults: Faults, provider: str | None = None) -> None:
        _check_scope(provider)
        with self._lock:
            if provider is None:
                self._faults = replace(faults)
            else:
                self._per_provider[provider] = replace(faults)

    def merge_faults(self, changes: dict[str, Any], provider: str | None = None) -> Faults:
        """Change the named fields of the faults in effect for ``provider`` (all providers without one).
        A provider without faults of its own starts from the global ones."""
        _check_scope(provider)
        with self._lock:
            current = self._faults if provider is None else self._per_provider.get(provider, self._faults)
            new = current.merged(changes)
            if provider is None:
                self._faults = new
            else:
                self._per_provider[provider] = new
            return replace(new)

    def draw(self, faults: Faults) -> Outcome:
        """Whether this call is faulted, in the documented order. A knob at 0 draws nothing, so turning
        one on does not shift which calls another one picks."""
        with self._lock:
            if faults.timeout_rate and self._rng.random() < faults.timeout_rate:
                return Outcome("timeout", 504)
            if faults.throttle_rate and self._rng.random() < faults.throttle_rate:
                return Outcome("throttle", 429)
            if faults.error_rate and self._rng.random() < faults.error_rate:
                return Outcome("error", self._rng.choice((500, 502, 503)))
            if faults.malformed_rate and self._rng.random() < faults.malformed_rate:
                self._malformed_turn += 1
                return Outcome("malformed", 200, "truncated" if self._malformed_turn % 2 else "shape")
            return Outcome()

    def take_slot(self, provider: str, faults: Faults) -> float | None:
        """Count a call against ``faults.rate_limit`` (a sliding window per provider; the sandbox accepts
        one key, so per provider is per key). Returns None when the call may go on, else the seconds until
        a slot frees; a refused call takes no slot."""
        if faults.rate_limit is None:
            return None
        calls, per_s = faults.rate_limit
        now = time.monotonic()
        with self._lock:
            window = self._windows.setdefault(provider, deque())
            while window and window[0] <= now - per_s:
                window.popleft()
            if len(window) >= calls:
                return window[len(window) - calls] + per_s - now
            window.append(now)
            return None

    # --- credentials ---------------------------------------------------------------------------------
    def is_key(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self._key.encode())

    def use_dnc_token(self, presented: str) -> int | None:
        """None if the token may be used (and count the use), else 401 (used up) or 403 (unknown)."""
        fingerprint = _fingerprint(presented)
        with self._lock:
            uses = self._tokens.get(fingerprint)
            if uses is None:
                return 403
            if self._ttl is not None and uses >= self._ttl:
                return 401
            self._tokens[fingerprint] = uses + 1
            return None

    def issue_token(self) -> str:
        token = "sbx_" + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[_fingerprint(token)] = 0
        return token

    # --- counters ------------------------------------------------------------------------------------
    def count_call(self, name: str) -> None:
        with self._lock:
            self._calls[name] += 1

    def record(self, *, t: float, provider: str, endpoint: str, status: int, key_ok: bool,
               ok_name: str | None = None, request_key: str | None = None, sold_at: float | None = None,
               buyer_gone: bool = False) -> None:
        """Note an answer; ``ok_name``/``request_key`` only for a 200 with a good body. Each answer is also
        kept in ``requests`` with its time ``t`` (the request's arrival), ``key`` (the request key, or None),
        ``sold_at`` (when it was counted) and ``buyer_gone`` (its client had hung up by then), which is how a
        test tells whether an answer was bought again after the step that stored it, and by whom."""
        with self._lock:
            self._status_counts[str(status)] += 1
            if ok_name is not None:
                self._ok[ok_name] += 1
            if request_key is not None:
                self._ok_by_request[request_key] += 1
            self._requests.append({"t": round(t, 6), "provider": provider, "endpoint": endpoint,
                                   "status": status, "key_ok": key_ok, "key": request_key,
                                   "sold_at": round(t if sold_at is None else sold_at, 6), "buyer_gone": buyer_gone})

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(self._calls),
                "ok": dict(self._ok),
                "status_counts": dict(self._status_counts),
                "ok_by_request": dict(self._ok_by_request),
                "requests": list(self._requests),
            }

    def reset(self) -> None:
        """Zero the counters (faults, rate windows and tokens stay as they are)."""
        with self._lock:
            for counter in (self._calls, self._ok, self._status_counts, self._ok_by_request):
                counter.clear()
            self._requests.clear()


def _check_scope(provider: str | None) -> None:
    if provider is not None and provider not in FAULT_SCOPES:
        raise ConfigError(f"unknown provider {provider!r}; providers are {', '.join(FAULT_SCOPES)}")


def retry_after_seconds(wait_s: float) -> int:
    """Whole seconds a client must wait to find a slot free: rounded up, at least 1."""
    return max(1, math.ceil(wait_s - 1e-9))
