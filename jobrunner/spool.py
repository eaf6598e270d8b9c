"""The spool: how request files move between the queue's folders. Renames only; the daemon decides.

A request file's place is its scheduling state:

    queue/X                    dropped by a client, not yet taken
    .claimed/<worker>/X        taken by <worker>, being validated (not yet accepted)
    .active/<id>.json          accepted and owned: its owner holds an flock on it for as long as it is here
    .deferred/<id>.json        accepted, waiting; the file's mtime is its due time (as Postfix does)
    .rejected/X                refused; X.reason beside it says why
    .done/<id>.json            the job is final

Every move is a rename within one filesystem, so a file is always in exactly one place, and the rename
that succeeds decides who owns it. `.active/` is keyed by job id and entered with a no-replace rename, so
one id is active once; its flock is released by the kernel when the owner dies, which is how a dead
owner is told from a slow one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import json
import os
import pwd
import stat
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from . import status
from .durable import fsync_dir, rename_noreplace, write_atomic, write_tmp
from .errors import ConfigError, DuplicateJob, InvalidRequest
from .layout import Layout, is_spool_name, validate_id
from .request import MAX_REQUEST_BYTES


def new_worker_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{os.urandom(3).hex()}"


class WorkerLock:
    """The daemon's life, as the kernel sees it: an flock held until the process dies.

    The lock file is made and locked under a temporary name, then renamed into place, so no other
    daemon can ever see it unlocked while its owner lives.
    """

    def __init__(self, layout: Layout, worker: str) -> None:
        self.layout = layout
        self.worker = worker
        final = layout.worker_lock(worker)
        tmp = final.with_name(f".{final.name}.tmp")
        self.fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        os.rename(tmp, final)
        layout.worker_dir(worker).mkdir(exist_ok=True)

    def heartbeat(self) -> None:
        """Touch the lock file: its mtime says when this daemon last showed it was working (`doctor`)."""
        os.utime(self.fd)

    def release(self) -> None:
        """Clean exit: remove our (empty) claim folder and lock. Left-overs are recovered by others."""
        try:
            os.rmdir(self.layout.worker_dir(self.worker))
            os.unlink(self.layout.worker_lock(self.worker))
        except OSError:
            pass
        os.close(self.fd)


def dead_workers(layout: Layout, alive: str) -> Iterator[tuple[str, int | None]]:
    """Workers whose claim folder outlives them, each yielded while we hold its lock (fd), so two
    recovering daemons never recover the same folder. The caller closes the fd when done."""
    try:
        names = os.listdir(layout.claimed)
    except FileNotFoundError:
        return
    workers = {n for n in names if not n.startswith(".") and not n.endswith(".lock")}
    locks = {n[: -len(".lock")] for n in names if n.endswith(".lock") and not n.startswith(".")}
    for worker in sorted(workers | locks):
        if worker == alive:
            continue
        fd: int | None = None
        if worker in locks:
            try:
                fd = os.open(layout.worker_lock(worker), os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # alive
            if not os.path.exists(layout.worker_lock(worker)):  # recovered and removed meanwhile
                os.close(fd)
                continue
        yield worker, fd


def producer_uids(group: str) -> frozenset[int]:
    """The users whose files the daemon takes under ``run --producers GROUP``: the group's members (listed,
    or by their primary group), root, and the daemon's own user. Read once, at start-up."""
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        raise ConfigError(f"--producers {group}: there is no such group") from None
    uids = {0, os.geteuid()}
    for user in pwd.getpwall():
        if user.pw_gid == entry.gr_gid or user.pw_name in entry.gr_mem:
            uids.add(user.pw_uid)
    return frozenset(uids)


def spool_warnings(layout: Layout) -> list[str]:
    """What is unsafe about the spool's modes, for a warning at start-up (the daemon runs anyway)."""
    try:
        mode = os.stat(layout.queue).st_mode
    except OSError:
        return []
    if not mode & stat.S_IWOTH:
        return []
    sticky = "" if mode & stat.S_ISVTX else " and anyone may delete or rename the requests of others"
    return [f"the spool {layout.queue} is world-writable (mode {stat.filemode(mode)}): any user of this machine "
            f"can submit jobs{sticky}; give it to a group of producers instead: chmod o-w,g+rwxs,+t "
            f"{layout.queue} (and run with --producers GROUP to refuse other owners' files)"]


class Spool:
    def __init__(self, layout: Layout, worker: str, *, settle_s: float = 2.0, max_bytes: int = MAX_REQUEST_BYTES,
                 producers: frozenset[int] | None = None):
        self.layout = layout
        self.worker = worker
        self.settle_s = settle_s
        self.max_bytes = max_bytes
        self.producers = producers  # owners whose files are taken (None: any owner)
        self.mine = layout.worker_dir(worker)
        self.peeked: dict[str, tuple[tuple[int, int, int], bytes]] = {}  # name -> (identity, bytes) read by settled()
        self.seen: dict[str, tuple[tuple[int, int, int], float]] = {}  # name -> (identity, monotonic first seen)

    # --- finding work -------------------------------------------------------------------------
    def list_queue(self) -> list[str]:
        """Names of the files clients have dropped, oldest first (100,000 take a fraction of a second:
        this runs before the daemon reports ready)."""
        found: list[tuple[int, str]] = []
        with os.scandir(self.layout.queue) as it:
            for entry in it:
                name = entry.name
                if not is_spool_name(name):
                    continue
                try:
                    found.append((entry.stat(follow_symlinks=False).st_mtime_ns, name))
                except FileNotFoundError:
                    continue
        found.sort()
        return [name for _, name in found]

    def settled(self, name: str, now: float) -> bool:
        """Whether queue/<name> may be taken now. A file a client may still be writing in place is
        left alone until it parses as JSON or has been quiet for ``settle_s``. Anything that is not a
        regular file is taken at once (to be rejected)."""
        path = self.layout.queue / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode):
            return True
        quiet = now - st.st_mtime
        if quiet < 0:  # its mtime is ahead of our clock (stepped back, or a writer with another clock)
            quiet = self._watched(name, st)
        if quiet >= self.settle_s or st.st_size > self.max_bytes:
            return True
        if st.st_nlink > 1 or st.st_size == 0:
            return False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            opened = os.fstat(fd)
            data = os.read(fd, self.max_bytes + 1)
        finally:
            os.close(fd)
        try:
            json.loads(data)
        except (ValueError, RecursionError):
            return False
        self.peeked[name] = (_identity(opened), data)  # read() reuses them if the file has not changed
        return True

    def _watched(self, name: str, st: os.stat_result) -> float:
        """How long we have seen queue/<name> unchanged (on the monotonic clock): its quiet time when its
        mtime cannot tell (a file dropped before the wall clock stepped back would otherwise wait for the
        clock to catch up, an hour for a step of an hour)."""
        now = time.monotonic()
        seen = self.seen.get(name)
        if seen is None or seen[0] != _identity(st):
            if len(self.seen) >= 10_000:  # names of files gone since: forget them all now and then
                self.seen.clear()
            self.seen[name] = (_identity(st), now)
            return 0.0
        return now - seen[1]

    def claim(self, name: str) -> Path | None:
        """Take queue/<name>; None if another daemon took it first."""
        self.seen.pop(name, None)
        dest = self.mine / name
        try:
            os.rename(self.layout.queue / name, dest)
        except FileNotFoundError:
            return None
        return dest

    def read(self, path: Path) -> tuple[bytes, os.stat_result]:
        """The bytes of a claimed request, refusing anything but a regular file of our own."""
        st = os.lstat(path)
        kind = _kind(st.st_mode)
        if kind != "file":
            raise InvalidRequest(f"the spool entry is a {kind}, not a regular file; drop a file")
        if st.st_nlink > 1:
            raise InvalidRequest(
                "the file has other hard links; drop a file of its own (write it, then rename it in)"
            )
        if st.st_size > self.max_bytes:
            raise InvalidRequest(f"request is {st.st_size} bytes; the limit is {self.max_bytes}")
        if self.producers is not None and st.st_uid not in self.producers:
            raise InvalidRequest(f"the file is owned by {_user(st.st_uid)}, who is not one of the producers "
                                 "this daemon takes requests from (run --producers); submit as a member of "
                                 "that group")
        peeked = self.peeked.pop(path.name, None)
        if peeked is not None and peeked[0] == _identity(st):
            return peeked[1], st
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise InvalidRequest(f"cannot open the file: {exc.strerror}") from None
        try:
            fst = os.fstat(fd)
            if (fst.st_ino, fst.st_dev) != (st.st_ino, st.st_dev) or not stat.S_ISREG(fst.st_mode):
                raise InvalidRequest("the file changed while being opened")
            chunks = []
            remaining = self.max_bytes + 1
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if len(data) > self.max_bytes:
            raise InvalidRequest(f"request is over the limit of {self.max_bytes} bytes")
        return data, st

    # --- where a claim goes next ---------------------------------------------------------------
    def reject(self, path: Path, reason: str, *, error: str, job_id: str | None = None,
               name: str | None = None) -> Path:
        """Set a claimed entry aside byte for byte, with a reason file a person can act on."""
        dest = _unique_move(path, self.layout.rejected, name or path.name)
        note = {
            "file": dest.name,
            "original_name": name or path.name,
            "reason": reason,
            "error": error,
            "job_id": job_id,
            "rejected_at": status.iso(status.now()),
            "worker": self.worker,
        }
        reason_path = dest.with_name(dest.name + ".reason")
        try:
            write_atomic(reason_path, (json.dumps(note, indent=1) + "\n").encode(), tmp_dir=self.layout.rejected)
        except OSError:
            # no reason could be written (a full disk): not a rejected file nobody can explain, but the
            # entry back where it was, for the caller to return to the queue and try again later
            with contextlib.suppress(OSError):
                rename_noreplace(dest, path)
            raise
        return dest

    def to_queue(self, path: Path) -> Path:
        """Give a claim back to the queue (it was never accepted)."""
        return _unique_move(path, self.layout.queue, path.name)

    def due_deferred(self, now: float) -> tuple[list[tuple[float, str]], float | None, int]:
        """(due time, id) of deferred jobs due by ``now``, the earliest due time after it, and how many
        are waiting in all."""
        due: list[tuple[float, str]] = []
        later: float | None = None
        waiting = 0
        with os.scandir(self.layout.deferred) as it:
            for entry in it:
                if not entry.name.endswith(".json") or entry.name.startswith("."):
                    continue
                try:
                    when = entry.stat(follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue
                waiting += 1
                if when <= now:
                    due.append((when, entry.name[: -len(".json")]))
                elif later is None or when < later:
                    later = when
        due.sort()
        return due, later, waiting

    # --- accepted jobs ---------------------------------------------------------------------------
    def accept(self, path: Path, job_id: str) -> ActiveClaim | None:
        """Make a validated claim the active request of ``job_id``; None if that id is active already."""
        return self._enter_active(path, job_id)

    def take(self, folder: Path, job_id: str, *, due_by: float | None = None) -> ActiveClaim | None:
        """Take ``folder/<id>.json`` (deferred, or done for a retry) into .active; None if another
        process holds or moved it first, or (with ``due_by``) it is not due yet."""
        return self._enter_active(folder / f"{job_id}.json", job_id, shared=True, due_by=due_by)

    def _enter_active(self, path: Path, job_id: str, *, shared: bool = False,
                      due_by: float | None = None) -> ActiveClaim | None:
        """Open and flock ``path``, then rename it into .active/ without replacing anything. In a
        ``shared`` folder another process may race us: check that the file we locked is still there."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if shared:
                    raise  # another process is taking it: not ours
                raise InvalidRequest("another process holds a lock on the file; drop a file and let it go") from None
            if shared:
                held, there = os.fstat(fd), os.lstat(path)
                if (there.st_ino, there.st_dev) != (held.st_ino, held.st_dev):
                    raise FileNotFoundError
                if due_by is not None and held.st_mtime > due_by:
                    raise FileNotFoundError
            rename_noreplace(path, self.layout.active_request(job_id))
        except (FileNotFoundError, FileExistsError, BlockingIOError):
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return ActiveClaim(self.layout, job_id, fd)

    def orphans(self) -> Iterator[ActiveClaim]:
        """Active requests whose owner died: we can take their lock. Yielded locked, to be settled."""
        try:
            names = os.listdir(self.layout.active)
        except FileNotFoundError:
            return
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                job_id = validate_id(name[: -len(".json")])
            except InvalidRequest:
                continue
            try:
                fd = os.open(self.layout.active / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except (FileNotFoundError, OSError):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # its owner lives
            claim = ActiveClaim(self.layout, job_id, fd, new_stay=False)
            if not claim.still_active():
                claim.release()
                continue
            yield claim


class ActiveClaim:
    """An accepted job's request in .active/, and the open, flocked fd that says we own it.

    ``token`` names this stay in .active (inode and the ctime the move into .active gave it): a status
    written during the stay carries it as ``claim``, which is how recovery tells a status written by the
    owner it is recovering from one written before.
    """

    def __init__(self, layout: Layout, job_id: str, fd: int, *, new_stay: bool = True) -> None:
        self.layout = layout
        self.job_id = job_id
        self.fd = fd
        if new_stay:
            # A fresh ctime for this stay on any filesystem (Linux filesystems give one on rename already).
            # Not allowed on a producer's file without CAP_FOWNER: then the rename's ctime serves.
            with contextlib.suppress(PermissionError):
                os.utime(fd)
        st = os.fstat(fd)
        self.token = f"{st.st_ino}:{st.st_ctime_ns}"
        self.path = layout.active_request(job_id)

    def still_active(self) -> bool:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        return f"{st.st_ino}:{st.st_ctime_ns}" == self.token

    def read(self) -> bytes:
        return os.pread(self.fd, MAX_REQUEST_BYTES + 1, 0)

    def defer(self, due: datetime) -> None:
        dest = self.layout.deferred_request(self.job_id)
        self._move(dest)
        stamp = due.timestamp()
        try:
            os.utime(dest, (stamp, stamp))
        except PermissionError:
            # A producer's file, and no CAP_FOWNER to set its times: put a copy of our own in its place,
            # byte for byte, carrying the due time.
            data = os.pread(self.fd, MAX_REQUEST_BYTES + 1, 0)
            tmp = write_tmp(dest.parent, f".{dest.name}", data, fsync=True)
            os.utime(tmp, (stamp, stamp))
            os.replace(tmp, dest)
            fsync_dir(dest.parent)
        self.release()

    def finish(self) -> None:
        """The job is final: its request goes to .done/<id>.json (moved, never deleted)."""
        self._move(self.layout.request(self.job_id))
        self.release()

    def _move(self, dest: Path) -> None:
        """Never over another request: a job's request exists once, so a file already there means ours
        is a duplicate that a crash left in .active/; it is set aside, not lost."""
        try:
            rename_noreplace(self.path, dest)
        except FileExistsError:
            self.set_aside_duplicate()
            raise DuplicateJob(f"duplicate id {self.job_id}: set aside") from None

    def is_duplicate(self) -> bool:
        """Whether the job's request is already kept elsewhere (so this one is a second copy)."""
        return self.layout.deferred_request(self.job_id).exists() or self.layout.request(self.job_id).exists()

    def set_aside_duplicate(self) -> None:
        Spool(self.layout, "recovery").reject(
            self.path, f"duplicate id {self.job_id}: the job exists already; this request was not run",
            error="DuplicateJob", job_id=self.job_id)

    def reject(self, spool: Spool, reason: str, *, error: str, name: str) -> Path:
        try:
            return spool.reject(self.path, reason, error=error, job_id=self.job_id, name=name)
        finally:
            self.release()

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _unique_move(path: Path, folder: Path, name: str) -> Path:
    """Move ``path`` into ``folder`` as ``name``, or ``stem~N.json`` if that name is taken."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    for n in range(1000):
        candidate = name if n == 0 else f"{stem}~{n}{'.' + ext if ext else ''}"
        dest = folder / candidate
        try:
            rename_noreplace(path, dest)
            return dest
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, f"no free name for {name} in {folder}")


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


