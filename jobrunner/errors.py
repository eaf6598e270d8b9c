"""Every error jobrunner raises on purpose, in one tree.

    JobrunnerError                 root; ``retryable`` says whether trying again can help
    ├── ConfigError                bad data dir or settings (CLI exit 78: systemd must not restart-loop)
    ├── NotFound                   no such job (CLI exit 4)
    ├── InvalidRequest             a request that can never run: the file is set aside with this reason
    │   └── DuplicateJob           a second request for an existing job id
    └── JobError                   raised by handlers (or for them) while a job runs
        ├── RetryableError         transient: the job is rescheduled with backoff
        │   ├── Interrupted        the daemon stopped or died during the attempt
        │   └── Throttled          a provider said "come back in N seconds": a wait, not a failed attempt
        ├── PermanentError         retrying cannot help: the job fails at once
        │   └── ProviderRejected   a provider refused the call for good (bad key, not found, bad request)
        ├── JobTimeout             the attempt ran past the job's ``timeout_s`` (retryable)
        └── Cancelled              the job was cancelled by a person

A handler signals a transient failure by raising ``RetryableError`` (optionally with ``defer_s`` to ask
for a specific delay, e.g. a long Retry-After), and a permanent one with ``PermanentError``. Any other
exception escaping a handler is treated as retryable: a bug can be fixed and the job retried, and the
attempt limit stops it from looping.
"""

from __future__ import annotations


class JobrunnerError(Exception):
    """Something went wrong in jobrunner."""

    retryable: bool = False
    exit_code: int = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(JobrunnerError):
    """The configuration or the data directory is not usable."""

    exit_code = 78  # EX_CONFIG: RestartPreventExitStatus=78 keeps systemd from restart-looping


class NotFound(JobrunnerError):
    """No job with that id."""

    exit_code = 4


class InvalidRequest(JobrunnerError):
    """The request cannot be accepted."""

    exit_code = 65  # EX_DATAERR

    def __init__(self, message: str | None = None, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class DuplicateJob(InvalidRequest):
    """A job with this id already exists; the second request runs nothing."""


class JobError(JobrunnerError):
    """The job's attempt failed."""


class RetryableError(JobError):
    """A transient failure; another attempt may succeed."""

    retryable = True

    def __init__(self, message: str | None = None, *, defer_s: float | None = None) -> None:
        super().__init__(message)
        self.defer_s = defer_s


class Interrupted(RetryableError):
    """The attempt was interrupted before it finished (daemon stopped or died)."""


class Throttled(RetryableError):
    """A provider asked us to come back later (a long Retry-After, or its quota is spent). The job waits
    in the spool for that long; the wait does not use up one of its attempts."""


class PermanentError(JobError):
    """A failure that retrying cannot fix."""


class ProviderRejected(PermanentError):
    """A provider refused the call in a way no retry fixes (401/403: the key; 404; another 4xx)."""

    def __init__(self, message: str | None = None, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class JobTimeout(RetryableError):
    """The attempt ran longer than the job's timeout."""


class Cancelled(JobError):
    """The job was cancelled."""


def error_type(exc: BaseException) -> str:
    """The name a status file records for an exception: the class name."""
    return type(exc).__name__
