"""Job types: the built-in ones in this package, plus any that installed packages register.

A handler is a ``Handler``: a type ``name``, a request model (a ``JobRequest`` subclass with
``type: Literal[name]``) and an async ``run(request, ctx)`` returning a small JSON-able result summary.
A third-party package adds a type by pointing an entry point of the group ``jobrunner.handlers`` at a
``Handler`` object (see the README for a complete example).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from ..request import JobRequest

if TYPE_CHECKING:
    from ..context import JobContext

ENTRY_POINT_GROUP = "jobrunner.handlers"
log = logging.getLogger("jobrunner.handlers")

Result = Mapping[str, Any] | None


@dataclass(frozen=True)
class Handler:
    name: str
    request_model: type[JobRequest]
    run: Callable[[Any, JobContext], Awaitable[Result]]
    description: str = ""


def builtin_handlers() -> list[Handler]:
    from .enrich import HANDLER as enrich
    from .noop import HANDLER as noop
    from .scrape import HANDLER as scrape

    return [noop, scrape, enrich]


def load_handlers() -> dict[str, Handler]:
    """Built-in handlers, then those of installed plugins (a plugin may not shadow a built-in)."""
    found = {h.name: h for h in builtin_handlers()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            handler = ep.load()
        except Exception as exc:  # a broken plugin must not take the daemon down
            log.error("plugin %s (%s) failed to load: %s", ep.name, ep.value, exc)
            continue
        if not isinstance(handler, Handler):
            log.error("plugin %s (%s) is not a jobrunner Handler; ignored", ep.name, ep.value)
            continue
        if handler.name in found:
            log.error("plugin %s registers type %r, which exists already; ignored", ep.name, handler.name)
            continue
        found[handler.name] = handler
    return found
