"""The one module that knows where things live under the data directory.

    queue/                    the spool: clients drop <name>.json here
    queue/.tmp/               staging for `jobrunner submit` (same filesystem, so rename is atomic)
    queue/.claimed/<worker>/  requests taken by the live daemon <worker>, being validated
    queue/.claimed/<worker>.lock   flock held for that daemon's whole life (the kernel drops it on death)
    queue/.active/<id>.json   accepted requests; each flocked by the process running it
    queue/.deferred/<id>.json accepted jobs waiting for their next attempt (file mtime = due time)
    queue/.rejected/<name>    requests that could not be accepted, byte for byte, + <name>.reason
    queue/.done/<id>.json     the request of a final job (moved aside, never deleted: `retry` reuses it)
    jobs/<id>.json            the status document of job <id>
    jobs/<id>/                that job's artifacts, made only when it has some:
    jobs/<id>/steps.jsonl     checkpointed step results, one line a step, appended
    jobs/<id>/cancel          a cancellation request (its presence is the request)
    jobs/<id>/results.jsonl   the job's results, one JSON object a line
    jobs/<id>/log.jsonl       the job's execution log (steps, call retries, the handler's lines), appended
    jobs/.tmp/                temp files for atomic status writes
    jobs/.recent              job ids appended at each change of state (a hint for fast listings)
    jobs/.ledger              one line per job that reached a final state, appended (a hint for stats)
    jobs/.outbox/<id>.json    a webhook to deliver for job <id> (readable by the daemon's user only)

Nothing else in the package builds a path under the data dir by hand.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from .errors import ConfigError, InvalidRequest

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DEFAULT_DATA_DIR = "./data"
DATA_DIR_ENV = "JOBRUNNER_DATA_DIR"


def validate_id(job_id: object) -> str:
    """Return ``job_id`` if it is a safe job id, else raise InvalidRequest (never used as a path)."""
    if not isinstance(job_id, str) or not ID_PATTERN.match(job_id) or job_id in (".", ".."):
        shown = repr(job_id) if len(repr(job_id)) <= 80 else repr(job_id)[:77] + "..."
        raise InvalidRequest(
            f"invalid id {shown}: an id is 1-128 characters of letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    if job_id.endswith(".json") or job_id.endswith(".tmp"):
        raise InvalidRequest(f"invalid id {job_id!r}: an id may not end in .json or .tmp")
    return job_id


def is_spool_name(name: str) -> bool:
    """Whether a file in queue/ is a client's request the daemon may take."""
    return (
        name.endswith(".json")
        and not name.startswith(".")
        and not name.endswith(".tmp")
        and not name.endswith(".part")
    )


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def resolve(cls, data_dir: str | os.PathLike[str] | None) -> Layout:
        """The data dir from the argument, else $JOBRUNNER_DATA_DIR, else ./data."""
        chosen = data_dir if data_dir else os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
        return cls(Path(chosen).absolute())

    # --- the spool -------------------------------------------------------------------------
    @cached_property
    def queue(self) -> Path:
        return self.root / "queue"

    @cached_property
    def staging(self) -> Path:
        return self.queue / ".tmp"

    @cached_property
    def claimed(self) -> Path:
        return self.queue / ".claimed"

    def worker_dir(self, worker: str) -> Path:
        return self.claimed / worker

    def worker_lock(self, worker: str) -> Path:
        return self.claimed / f"{worker}.lock"

    @cached_property
    def active(self) -> Path:
        return self.queue / ".active"

    @lru_cache(maxsize=256)  # noqa: B019 - the daemon asks for the same job's paths several times
    def active_request(self, job_id: str) -> Path:
        return self.active / f"{validate_id(job_id)}.json"

    @cached_property
    def deferred(self) -> Path:
        return self.queue / ".deferred"

    @lru_cache(maxsize=256)  # noqa: B019 - the daemon asks for the same job's paths several times
    def deferred_request(self, job_id: str) -> Path:
        return self.deferred / f"{job_id}.json"

    @cached_property
    def rejected(self) -> Path:
        return self.queue / ".rejected"

    @cached_property
    def done(self) -> Path:
        return self.queue / ".done"

    # --- jobs ----------------------------------------------------------------------------
    @cached_property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @cached_property
    def recent(self) -> Path:
        return self.jobs / ".recent"

    @cached_property
    def ledger(self) -> Path:
        return self.jobs / ".ledger"

    @cached_property
    def outbox(self) -> Path:
        return self.jobs / ".outbox"

    def outbox_entry(self, job_id: str) -> Path:
        return self.outbox / f"{job_id}.json"

    @cached_property
    def jobs_tmp(self) -> Path:
        return self.jobs / ".tmp"

    @lru_cache(maxsize=256)  # noqa: B019 - the daemon asks for the same job's paths several times
    def status(self, job_id: str) -> Path:
        return self.jobs / f"{validate_id(job_id)}.json"

    @lru_cache(maxsize=256)  # noqa: B019 - the daemon asks for the same job's paths several times
    def job_dir(self, job_id: str) -> Path:
        return self.jobs / validate_id(job_id)

    @lru_cache(maxsize=256)  # noqa: B019 - the daemon asks for the same job's paths several times
    def request(self, job_id: str) -> Path:
        """Where a final job's request is kept."""
        return self.done / f"{validate_id(job_id)}.json"

    @lru_cache(maxsize=256)  # noqa: B019 - the daemon asks for the same job's paths several times
    def steps_log(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "steps.jsonl"

    @lru_cache(maxsize=256)  # noqa: B019 - the daemon asks for the same job's paths several times
    def results(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "results.jsonl"

    def job_log(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "log.jsonl"

    @lru_cache(maxsize=256)  # noqa: B019 - the daemon asks for the same job's paths several times
    def cancel_flag(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "cancel"

    # --- set-up ----------------------------------------------------------------------------
    def ensure(self, *, own: bool = False) -> None:
        """Create the directories (idempotent). A data dir that cannot be made is a ConfigError.

        With ``own`` (the daemon), the spool's own folders must be real directories of the daemon's user.
        Producers may create entries in the spool (it is theirs, group-writable, sticky), so one could plant
        ``.rejected`` as a symlink to jobs/ (the daemon would then move producers' files among the status
        files, which only it may write) or ``.active`` as a folder of their own (and delete accepted jobs
        from it). A folder made by ``mkdir`` here is the daemon's; one found in place is checked."""
        try:
            for path in (
                self.queue,
                self.staging,
                self.claimed,
                self.active,
                self.deferred,
                self.rejected,
                self.done,
                self.jobs,
                self.jobs_tmp,
            ):
                path.mkdir(parents=True, exist_ok=True)
            self.outbox.mkdir(mode=0o700, exist_ok=True)  # entries hold webhook URLs, which may hold tokens
        except FileExistsError as exc:  # a file where a folder should be
            raise ConfigError(f"data dir {self.root} is not usable: {exc.filename} is not a directory; remove it "
                              "(the daemon makes its own)") from exc
        except OSError as exc:
            raise ConfigError(f"data dir {self.root} is not usable: {exc.strerror or exc}") from exc
        if own:
            for path in (self.staging, self.claimed, self.active, self.deferred, self.rejected, self.done):
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
                    kind = "symlink" if stat.S_ISLNK(st.st_mode) else "file"
                    raise ConfigError(f"{path} is not a directory but a {kind}: someone who can write the spool "
                                      "put it there; remove it (the daemon makes its own)")
                if st.st_uid != os.geteuid() and path != self.staging:
                    raise ConfigError(f"{path} belongs to uid {st.st_uid}, not to the daemon's user (uid "
                                      f"{os.geteuid()}): remove it, or chown it to the daemon's user")

    def check_exists(self) -> None:
        """For read-only commands: a data dir that does not exist is a ConfigError, not an empty list."""
        if not self.jobs.is_dir() or not self.queue.is_dir():
            raise ConfigError(
                f"{self.root} is not a jobrunner data dir (no queue/ and jobs/): "
                f"pass --data-dir or set {DATA_DIR_ENV}"
            )
