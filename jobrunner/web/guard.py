"""The one gate every HTTP request passes: the Host check, authentication, the CSRF rule, the body cap and
the security headers. Routes behind it can assume the caller is allowed and the body is bounded.

Authentication, in order:
- ``Authorization: Bearer <token>`` (API clients). Compared in constant time (``hmac.compare_digest``). A
  wrong or malformed header is a 401 even if a session cookie would have passed.
- the dashboard's session cookie, set by ``POST /login`` after the token was typed in. Its value is an
  HMAC of a fixed label keyed with the token, never the token itself: a leaked cookie does not reveal the
  token, and changing the token ends every session. ``HttpOnly; SameSite=Strict``.
- no token configured: loopback clients are let in (the server refuses to bind elsewhere then), and the
  ``Host`` header must name a loopback address or ``localhost``, so a page that re-binds its own domain
  name to 127.0.0.1 (DNS rebinding) gets a 403, not the jobs.

CSRF: GET and HEAD never change anything. Any other method must come with a bearer token (a header a
browser never adds by itself), or else pass a same-origin check (``Origin``, when sent, equal to this
server's origin; ``Sec-Fetch-Site``, when sent, ``same-origin`` or ``none``) and, when it comes from a
browser (it has an ``Origin``, a ``Sec-Fetch-Site`` or a cookie), carry ``X-Jobrunner-Request: 1``, which
the dashboard's script adds. A cross-site form cannot set a custom header, and a cross-site ``fetch`` that
tries needs a CORS preflight this server never grants. That covers the cookie sessions and the open
loopback mode, where the attack is a web page in the user's own browser posting to
http://127.0.0.1:8288 to spend their credits. A program on the machine (curl, a web app's backend) sends
none of those headers and needs no extra one, as with the old API. The residual risk is a browser that
sends neither ``Origin`` nor ``Sec-Fetch-Site`` on a cross-site POST (none released since 2019); JSON
routes also demand ``Content-Type: application/json``, which no form can send. The login form is a plain
form: it gets the same-origin check only.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from .config import WebConfig

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SESSION_COOKIE = "jobrunner_session"
CSRF_HEADER = "x-jobrunner-request"
MAX_BODY_BYTES = 16 * 1024 * 1024 + 64 * 1024  # a spool request's limit, and room for a multipart envelope
PUBLIC_PREFIXES = ("/static/", "/login")
SAFE_METHODS = ("GET", "HEAD")

SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # not no-referrer: with it Chrome sends "Origin: null" on form posts
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class BodyTooLarge(Exception):
    """The request's body went past MAX_BODY_BYTES while it was read."""


def session_value(config: WebConfig) -> str:
    """The session cookie's value: derived from the token, not the token."""
    assert config.token is not None
    return hmac.new(config.token.reveal().encode(), b"jobrunner dashboard session v1", hashlib.sha256).hexdigest()


def token_matches(config: WebConfig, offered: str) -> bool:
    """Constant time, also in the length: digests of equal size are compared, not the strings."""
    if config.token is None:
        return False
    digest = hashlib.sha256
    return hmac.compare_digest(digest(offered.encode()).digest(), digest(config.token.reveal().encode()).digest())


def _loopback_name(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_part(value: str) -> str:
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


class Guard:
    def __init__(self, app: ASGIApp, config: WebConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_security_headers(send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path: str = scope["path"]
        method: str = scope["method"]
        api = path.startswith("/api/")

        async def refuse(status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
            await _error(send, status, message, api=api, extra=extra)

        host = headers.get("host", "")
        if self.config.open_on_loopback and not _loopback_name(_host_part(host)):
            await refuse(403, "this server answers only requests addressed to a loopback name (127.0.0.1, "
                              "localhost, ::1) while no token is configured")
            return
        how = self._authenticate(scope, headers)
        if how is None:
            if "authorization" in headers:
                await refuse(401, "the bearer token is wrong or malformed",
                             [(b"www-authenticate", b'Bearer realm="jobrunner", error="invalid_token"')])
                return
            if not path.startswith(PUBLIC_PREFIXES):
                if api or method not in SAFE_METHODS:
                    await refuse(401, "a bearer token is required (Authorization: Bearer <token>)",
                                 [(b"www-authenticate", b'Bearer realm="jobrunner"')])
                else:
                    target = path + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else "")
                    await _redirect(send, "/login?next=" + quote(target, safe=""))
                return
        if method not in SAFE_METHODS and how != "bearer":
            problem = self._cross_site(scope, headers, form_ok=path in ("/login", "/logout"))
            if problem:
                await refuse(403, problem)
                return
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await refuse(400, "Content-Length is not a number")
                return
            if int(length) > MAX_BODY_BYTES:
                await refuse(413, f"the request body is {int(length):,} bytes; the limit is {MAX_BODY_BYTES:,}")
                return
        scope.setdefault("state", {})["auth"] = how
        await self.app(scope, _capped(receive), send)

    def _authenticate(self, scope: Scope, headers: dict[str, str]) -> str | None:
        """"bearer", "cookie", "loopback", or None (not authenticated)."""
        auth = headers.get("authorization")
        if auth is not None:
            scheme, _, offered = auth.partition(" ")
            if scheme.lower() == "bearer" and offered.strip() and token_matches(self.config, offered.strip()):
                return "bearer"
            return None
        if self.config.token is None:
            client = scope.get("client")
            return "loopback" if client and _loopback_name(str(client[0])) else None
        cookie = _cookie(headers.get("cookie", ""), SESSION_COOKIE)
        if cookie and hmac.compare_digest(cookie.encode(), session_value(self.config).encode()):
            return "cookie"
        return None

    def _cross_site(self, scope: Scope, headers: dict[str, str], *, form_ok: bool) -> str | None:
        """Why an unsafe request without a bearer token may be a forgery, or None."""
        origin = headers.get("origin")
        own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
        if origin is not None and origin != own:
            return f"cross-origin request refused (Origin {origin[:100]} is not {own})"
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return f"cross-site request refused (Sec-Fetch-Site: {site[:40]})"
        from_browser = origin is not None or site is not None or "cookie" in headers
        if from_browser and not form_ok and headers.get(CSRF_HEADER) != "1":
            return (f"a request that changes something needs a bearer token, or the header "
                    f"{CSRF_HEADER.title()}: 1 from the dashboard")
        return None


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


def _capped(receive: Receive) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise BodyTooLarge(f"the request body is over the limit of {MAX_BODY_BYTES:,} bytes")
        return message

    return wrapped


def _with_security_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
            if b"cache-control" not in present:
                extra.append((b"cache-control", b"no-store"))
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return wrapped


async def _error(send: Send, status: int, message: str, *, api: bool,
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
    if api:
        body = json.dumps({"success": False, "error": message}).encode()
        kind = b"application/json"
    else:
        body = (message + "\n").encode()
        kind = b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str) -> None:
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
