"""The sandbox's HTTP side: a threaded server on loopback, the order in which a call meets its faults,
and the ``Sandbox`` object tests and the CLI hold.

A provider call goes through, in this order: counted; authenticated (401/403 come before anything
else and are never random); the rate-limit window (429, and the refused call takes no slot); the
status override; the random faults, drawn from one seeded RNG (timeout, throttle, 5xx, malformed);
the latency; the answer. The call is recorded before its answer is written, so a client that has its
answer already sees it in ``/_stats``.

The server writes no log at all: a request line can carry a key, and a sandbox that prints is noise in
every test run.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import select
import signal
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigError
from .config import FAULT_SCOPES, PROVIDERS, Faults, SandboxConfig
from .providers import MOUNTS, Answer, Call, Endpoint, error, route
from .state import Outcome, State, retry_after_seconds

MAX_BODY = 1 << 20


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: State, config: SandboxConfig) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.state = state
        self.config = config
        self.stopping = threading.Event()  # set by stop(): hung and slowed calls end at once
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's FQDN, which can take seconds; we know the name.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Silent: a client that hangs up mid-answer (as timeouts do) is normal here."""

    def close_connections(self) -> None:
        """Unblock every connection still open (idle keep-alives, hung calls), so stop() is prompt."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real clients use it
    server_version = "jobrunner-sandbox"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection is closed after this long
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing: see the module docstring."""

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def do_HEAD(self) -> None:
        self._handle(head=True)

    @property
    def _srv(self) -> _Server:
        return cast(_Server, self.server)

    # --- dispatch ------------------------------------------------------------------------------------
    def _handle(self, head: bool = False) -> None:
        t = time.time()
        try:
            body = self._read_body()
            if body is None:
                return
            parts = urlsplit(self.path)
            if parts.path.startswith("/_"):
                self._send(self._control(parts.path, body), head)
                return
            mount, _, rest = parts.path[1:].partition("/")
            endpoint, params, allowed = route(mount, "/" + rest, self.command)
            if endpoint is None:
                answer = (error(405, "method not allowed", {"Allow": ", ".join(allowed)}) if allowed
                          else error(404, "no such endpoint"))
                known = mount in MOUNTS
                self._srv.state.record(t=t, provider=mount if known else "", status=answer.status, key_ok=False,
                                       endpoint=f"{self.command} {'/' + rest if known else parts.path}"[:200])
                self._send(answer, head)
                return
            query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            params = {k: unquote(v) for k, v in params.items()}
            self._send(self._provider_call(t, endpoint, params, query, body), head)
        except OSError:  # the client went away (a timeout on its side, or stop())
            self.close_connection = True

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            self._send(error(411, "send a Content-Length"))
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._send(error(413 if length > MAX_BODY else 400, "bad Content-Length"))
            return None
        return self.rfile.read(length) if length else b""

    # --- a provider call -----------------------------------------------------------------------------
    def _provider_call(self, t: float, endpoint: Endpoint, params: dict[str, str], query: dict[str, str],
                       body: bytes) -> Answer:
        srv = self._srv
        state, mount = srv.state, endpoint.mount
        faults = state.faults_for(mount)
        calls_name = f"{mount} {endpoint.name}"
        state.count_call(calls_name)
        good = False
        denied = self._authenticate(endpoint, body)
        if denied is not None:
            answer = denied
        elif (wait := state.take_slot(mount, faults)) is not None:
            answer = error(429, "rate limit exceeded",
                           {"Retry-After": _retry_after(retry_after_seconds(wait), faults)})
        elif faults.status_override is not None:
            status = faults.status_override
            headers = {"Retry-After": _retry_after(1, faults)} if status in (429, 503) else {}
            answer = error(status, "the provider is failing (status_override)", headers)
        else:
            outcome = state.draw(faults)
            answer = self._faulted(outcome, faults) or endpoint.answer(
                Call(params, query, body, srv.config.search_total, state.issue_token))
            good = outcome.kind is None and answer.status == 200 and answer.request_key is not None
            if outcome.kind == "malformed" and answer.status == 200:
                answer = _malformed(answer, outcome.malformed_form)
        if faults.latency_ms:
            srv.stopping.wait(faults.latency_ms / 1000)
        state.record(t=t, provider=mount, endpoint=endpoint.name, status=answer.status, key_ok=denied is None,
                     ok_name=calls_name if good else None, request_key=answer.request_key if good else None,
                     sold_at=time.time(), buyer_gone=self._client_gone())
        return answer

    def _client_gone(self) -> bool:
        """Whether the client hung up before its answer (killed, or it gave up): the answer, sold all the same,
        reaches nobody. A server short of CPU can handle a request long after it was sent, after its sender
        died: this is how a test tells that sale from one made to a live client."""
        poller = select.poll()
        poller.register(self.connection, select.POLLIN)
        if not poller.poll(0):
            return False  # connected, nothing more sent (a peek would wait: the socket has a timeout)
        try:
            return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")  # end of stream: it hung up
        except OSError:
            return True  # reset

    def _faulted(self, outcome: Outcome, faults: Faults) -> Answer | None:
        if outcome.kind == "timeout":
            self._srv.stopping.wait(faults.hang_s)
            return error(504, "the provider did not answer in time")
        if outcome.kind == "throttle":
            return error(429, "too many requests", {"Retry-After": _retry_after(1, faults)})
        if outcome.kind == "error":
            return error(outcome.status, "the provider failed")
        return None

    def _authenticate(self, endpoint: Endpoint, body: bytes) -> Answer | None:
        """None if the call's credentials are good, else the 401 (none, or a used-up DNC token) or 403."""
        state = self._srv.state
        if endpoint.auth == "rapidapi":
            presented = self.headers.get("x-rapidapi-key") or None
        elif endpoint.auth == "refresh":
            presented = self._bearer() or _refresh_token(body)
        else:
            presented = self._bearer()
        if presented is None:
            return error(401, "missing credentials")
        if endpoint.auth == "dnc-token":
            status = state.use_dnc_token(presented)
            if status is None:
                return None
            return error(status, "token expired: refresh it" if status == 401 else "invalid token")
        if endpoint.auth == "refresh" and state.is_key(_refresh_token(body)):
            return None
        return None if state.is_key(presented) else error(403, "invalid credentials")

    def _bearer(self) -> str | None:
        scheme, _, credential = self.headers.get("Authorization", "").strip().partition(" ")
        return (credential.strip() or None) if scheme.lower() == "bearer" else None

    # --- control -------------------------------------------------------------------------------------
    def _control(self, path: str, body: bytes) -> Answer:
        state = self._srv.state
        methods = {"/_stats": "GET", "/_health": "GET", "/_faults": "POST", "/_reset": "POST"}
        if path not in methods:
            return error(404, "no such control endpoint")
        if self.command != methods[path]:
            return error(405, "method not allowed", {"Allow": methods[path]})
        if path == "/_health":
            return Answer(200, {"ok": True})
        if path == "/_stats":
            return Answer(200, state.stats())
        if path == "/_reset":
            state.reset()
            return Answer(200, {"ok": True})
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            return error(400, "the body is not JSON")
        if not isinstance(doc, dict):
            return error(400, "the body must be a JSON object of Faults fields")
        provider = doc.pop("provider", None)
        if provider is not None and provider not in FAULT_SCOPES:
            return error(400, f"provider must be one of {', '.join(FAULT_SCOPES)}")
        try:
            faults = state.merge_faults(doc, provider)
        except (ConfigError, TypeError) as exc:
            return error(400, str(exc))
        return Answer(200, {**faults.to_json(), "provider": provider})

    def _send(self, answer: Answer, head: bool = False) -> None:
        raw = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(raw)


def _refresh_token(body: bytes) -> str | None:
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        return None
    token = doc.get("refresh_token") if isinstance(doc, dict) else None
    return token if isinstance(token, str) and token else None


def _retry_after(seconds: int, faults: Faults) -> str:
    """Retry-After in the form the faults ask for. A date is rounded up to the whole second it names, so
    a client that waits until then finds the slot free."""
    if faults.retry_after_form == "date":
        return email.utils.formatdate(math.ceil(time.time() + seconds), usegmt=True)
    return str(seconds)


def _malformed(answer: Answer, form: str) -> Answer:
    """A 200 whose body is broken: cut in half (not JSON), or JSON with every top-level value null."""
    if form == "truncated":
        raw = json.dumps(answer.body).encode()
        return Answer(200, raw[: max(1, len(raw) // 2)])
    shape = {k: None for k in answer.body} if isinstance(answer.body, dict) else None
    return Answer(200, shape)


class Sandbox:
    """The fake providers, served on loopback from a daemon thread. ``with Sandbox() as sb:`` or
    ``sb = Sandbox(config).start()`` ... ``sb.stop()``."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config if config is not None else SandboxConfig()
        self._state = State(self.config)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self._lifecycle = threading.Lock()

    def start(self) -> Sandbox:
        """Listen and serve in a daemon thread (a second call does nothing). Counters and faults carry
        over a stop and start."""
        with self._lifecycle:
            if self._server is not None:
                return self
            host = self.config.bind_host()
            try:
                server = _Server((host, self.config.port), self._state, self.config)
            except OSError as exc:
                raise ConfigError(f"sandbox: cannot listen on {host} port {self.config.port}: "
                                  f"{exc.strerror or exc}") from exc
            port = int(server.server_address[1])
            self._url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="jobrunner-sandbox", daemon=True)
            self._thread.start()
            self._server = server
        return self

    def stop(self) -> None:
        """Stop serving and close every connection, hung calls included (a second call does nothing)."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, while running."""
        if self._server is None or self._url is None:
            raise RuntimeError("the sandbox is not running: call start() first")
        return self._url

    def base_url(self, provider: str) -> str:
        """Where ``provider`` is mounted (linkedin, skiptrace, carrier, dnc, dnc-identity)."""
        if provider not in FAULT_SCOPES:
            raise ValueError(f"unknown provider {provider!r}; providers are {', '.join(FAULT_SCOPES)}")
        return f"{self.url}/{provider}"

    def env(self) -> dict[str, str]:
        """The environment that points jobrunner's provider clients here."""
        env = {}
        for provider in PROVIDERS:
            env[f"JOBRUNNER_{provider.upper()}_URL"] = self.base_url(provider)
            env[f"JOBRUNNER_{provider.upper()}_KEY"] = self.config.key
        env["JOBRUNNER_DNC_IDENTITY_URL"] = self.base_url("dnc-identity")
        return env

    def stats(self) -> dict[str, Any]:
        """The ``GET /_stats`` document."""
        return self._state.stats()

    def set_faults(self, faults: Faults, provider: str | None = None) -> None:
        """Replace the faults of one provider, or the global ones (for providers without their own)."""
        self._state.set_faults(faults, provider)

    def reset(self) -> None:
        """Zero the counters, as ``POST /_reset`` does."""
        self._state.reset()


def serve_forever(config: SandboxConfig) -> None:
    """Serve until SIGTERM or SIGINT, for ``jobrunner sandbox``. Prints one line once listening:
    ``sandbox listening on http://127.0.0.1:PORT``."""
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    sandbox = Sandbox(config).start()
    try:
        print(f"sandbox listening on {sandbox.url}", flush=True)
        while not done.wait(1.0):
            pass
    finally:
        sandbox.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
