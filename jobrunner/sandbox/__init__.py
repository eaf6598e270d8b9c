"""The sandbox: a real HTTP server on loopback that impersonates the paid provider APIs.

It speaks LinkedIn Sales Navigator search, skip tracing, Telnyx carrier lookup and a DNC scrub (with its
token refresh) as /work/shared/providers.md describes them, with deterministic data and knobs for what
goes wrong in production: latency, 5xx, 429 with Retry-After, rate limits, hangs, malformed bodies.
Tests, the demo and the benchmarks point jobrunner at it instead of spending money, and count its calls
to prove nothing was paid for twice.

    config.py     Faults and SandboxConfig: the knobs, checked when made
    data.py       the fake world: leads, people, phones, carriers, DNC, each a pure function of the request
    providers.py  the endpoints: paths, auth kinds, request checks, answers (no HTTP)
    state.py      counters, faults in effect, the seeded RNG, rate windows, DNC tokens (one lock)
    server.py     the HTTP server, the order of faults, Sandbox and serve_forever

Control endpoints (no auth): ``GET /_stats``, ``POST /_faults``, ``POST /_reset``, ``GET /_health``.
"""

from __future__ import annotations

from .config import PROVIDERS, Faults, SandboxConfig
from .data import search_identity
from .server import Sandbox, serve_forever

__all__ = ["PROVIDERS", "Faults", "Sandbox", "SandboxConfig", "search_identity", "serve_forever"]
