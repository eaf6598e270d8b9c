"""The ASGI application: the API's and the dashboard's routes behind the ``Guard``, and how errors become
answers (JSON under /api/, a short page elsewhere). The app holds its configuration and nothing else."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..errors import JobrunnerError
from ..handlers import load_handlers
from . import api, pages
from .config import WebConfig
from .guard import MAX_BODY_BYTES, BodyTooLarge, Guard

log = logging.getLogger("jobrunner.web")


def _answer(request: Request, status: int, message: str) -> Response:
    if request.url.path == "/api" or request.url.path.startswith("/api/"):
        return api.failure(status, message)
    return PlainTextResponse(message + "\n", status_code=status)


async def _jobrunner_error(request: Request, exc: Exception) -> Response:
    return _answer(request, api.status_of(exc), str(exc))


async def _too_large(request: Request, exc: Exception) -> Response:
    return _answer(request, 413, f"the request body is over the limit of {MAX_BODY_BYTES:,} bytes")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    words = {404: "no such route", 405: "method not allowed"}
    response = _answer(request, exc.status_code, words.get(exc.status_code, str(exc.detail)))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc,
              exc_info=(type(exc), exc, exc.__traceback__))
    return _answer(request, 500, "internal error (logged by the server)")


def create_app(config: WebConfig) -> Starlette:
    app = Starlette(
        routes=[*api.ROUTES, *pages.ROUTES],
        middleware=[Middleware(Guard, config=config)],
        exception_handlers={
            JobrunnerError: _jobrunner_error,
            api.Problem: _jobrunner_error,
            BodyTooLarge: _too_large,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    app.state.config = config
    app.state.types = sorted(load_handlers())
    return app
