"""`jobrunner serve`: the app under uvicorn, on a socket bound here so that port 0 works and the address
actually listened on is printed (``listening: http://127.0.0.1:PORT``, a line tests and scripts wait for).
Stops cleanly on SIGTERM and SIGINT (uvicorn's own handlers: in-flight requests finish)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys

from .config import WebConfig, check

log = logging.getLogger("jobrunner.web")
MAX_CONNECTIONS = 200  # connections and requests at once; beyond, 503 (a bound on threads and memory)


def _quiet_refreshes(record: logging.LogRecord) -> bool:
    """Leave out of the access log the dashboard's own polling (a fragment or an asset fetched fine every
    few seconds by each open page, which would bury the requests that matter) and keep the rest."""
    args = record.args
    if isinstance(args, tuple) and len(args) >= 5:
        method, path, status = args[1], str(args[2]), args[4]
        if method == "GET" and status in (200, 304) and path.startswith(("/fragments/", "/static/")):
            return False
    return True


def serve(config: WebConfig, *, access_log: bool = True) -> int:
    import uvicorn

    from .app import create_app

    check(config)
    family = socket.AF_INET6 if ":" in config.bind.host else socket.AF_INET
    # proto given, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without it a small
    # answer (headers and body are two writes) waits ~40 ms for the client's delayed ACK (measured: bench/web.py)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.bind.host, config.bind.port))
    except OSError as exc:
        from ..errors import ConfigError

        sock.close()
        raise ConfigError(f"cannot listen on {config.bind.url()}: {exc.strerror or exc}") from None
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(
        create_app(config), log_config=None, access_log=access_log, server_header=False, lifespan="off",
        http="h11", loop="asyncio", timeout_graceful_shutdown=5, h11_max_incomplete_event_size=64 * 1024,
        limit_concurrency=MAX_CONNECTIONS))
    logging.getLogger("uvicorn.access").addFilter(_quiet_refreshes)
    who = "a bearer token required" if config.token else "no token: loopback clients only"
    print(f"listening: {config.bind.url(port)} ({who}; data dir {config.layout.root})", file=sys.stderr, flush=True)
    # uvicorn handles SIGTERM/SIGINT itself (a graceful stop), then raises the signal again for the handler
    # that was there before it: with this one in place, a stop that was asked for is a clean exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    asyncio.run(server.serve(sockets=[sock]))
    return 0
