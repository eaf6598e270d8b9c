"""jobrunner: background jobs from a spool of JSON files, with status files anyone can read.

The public API for handler authors is what ``__all__`` lists; everything else is internal. The names
load on first use, so that commands which need none of them (``jobrunner --help``, ``jobrunner status``)
do not pay for pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import JobContext
    from .errors import JobrunnerError, PermanentError, RetryableError
    from .handlers import Handler
    from .request import JobRequest

__all__ = ["Handler", "JobContext", "JobRequest", "JobrunnerError", "PermanentError", "RetryableError"]

_WHERE = {"Handler": "handlers", "JobContext": "context", "JobRequest": "request", "JobrunnerError": "errors",
          "PermanentError": "errors", "RetryableError": "errors"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'jobrunner' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{_WHERE[name]}", __name__), name)
