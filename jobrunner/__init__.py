"""jobrunner: background jobs from a spool of JSON files, with status files anyone can read.

The public API for handler authors is what ``__all__`` lists; everything else is internal.
"""

from .context import JobContext
from .errors import JobrunnerError, PermanentError, RetryableError
from .handlers import Handler
from .request import JobRequest

__all__ = ["Handler", "JobContext", "JobRequest", "JobrunnerError", "PermanentError", "RetryableError"]
