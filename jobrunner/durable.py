"""Atomic, durable file operations: the only place that calls fsync, syncfs or renameat2.

Two ways to make a write survive a power cut:
- ``write_atomic``: temp file, write, fsync, rename, fsync the directory. One writer, two syncs per file;
  the CLI uses it (a few writes per command).
- ``Committer``: the daemon writes many temp files, then one ``syncfs`` makes all of them durable, then
  it renames, then one more ``syncfs`` makes the names durable. Concurrent jobs share the syncs (group
  commit), which is where the drain throughput comes from: the cost of a sync is paid per batch.

Either way a reader sees the old file or the new one, never a torn one: the rename happens only after
the data is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import failpoints

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_libc.renameat2.restype = ctypes.c_int
_libc.syncfs.argtypes = [ctypes.c_int]
_libc.syncfs.restype = ctypes.c_int


class _Pid:
    """os.getpid(), cached (a system call each time), and refreshed in a forked child."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        os.register_at_fork(after_in_child=self._refresh)

    def _refresh(self) -> None:
        self.pid = os.getpid()


_PID = _Pid()


def syncfs(fd: int) -> None:
    """Flush every dirty page and inode of the filesystem holding ``fd`` (Linux syncfs(2))."""
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def rename_noreplace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """rename(2) that fails with FileExistsError instead of replacing ``dst`` (renameat2 NOREPLACE)."""
    res = _libc.renameat2(
        _AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE
    )
    if res == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS):  # filesystem without renameat2 flags: link + unlink
        os.link(src, dst)
        os.unlink(src)
        return
    raise OSError(err, os.strerror(err), os.fspath(src), None, os.fspath(dst))


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_tmp(tmp_dir: Path, name: str, data: bytes, *, fsync: bool) -> str:
    """Create a unique temp file in ``tmp_dir`` holding ``data``; return its path."""
    tmp = f"{tmp_dir}/{name}.{_PID.pid}.{os.urandom(6).hex()}.tmp"  # a str: the daemon makes many
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    return tmp


def write_atomic(path: Path, data: bytes, *, tmp_dir: Path | None = None, exclusive: bool = False) -> None:
    """Durably replace (or, with ``exclusive``, create) ``path`` with ``data``, one file at a time.

    ``exclusive`` raises FileExistsError when ``path`` exists: the creation is the decision.
    """
    tmp = write_tmp(tmp_dir or path.parent, path.name, data, fsync=True)
    try:
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(path.parent)


def _unlink_quietly(path: str | Path | None) -> None:
    if path is None:
        return
    with contextlib.suppress(OSError):
        os.unlink(path)


@dataclass(eq=False)
class _Write:
    path: Path | None  # None: a barrier (what was written before it becomes durable; nothing to rename)
    data: bytes
    exclusive: bool
    durable: bool
    future: asyncio.Future[bool]
    then: Callable[[], None] | None = None
    tmp: str | None = None
    made: bool = False
    settled: bool = False
    error: Exception | None = None


class Committer:
    """The daemon's durable writes, committed in batches (group commit).

    Writes submitted while a batch is being committed form the next batch. A batch is committed in
    phases: every temp file is written, one ``syncfs`` makes all their data durable, every temp file is
    renamed into place, one more ``syncfs`` makes the names durable (when any write asked for it), and
    each write's ``then`` runs: what must follow it, such as moving the request whose state it records.
    The cost of a sync is paid per batch, not per write, which is where the drain throughput comes from.

    Only the syncs run in a thread; the loop runs other jobs meanwhile. The small file operations stay on
    the event loop's thread, on purpose: a thread making hundreds of short system calls releases and
    re-takes the GIL for each one, and waits for it every time (measured: 40 futex calls per job, and
    half the drain rate). No file of a batch is created while that batch's sync runs.

    ``await replace(...)`` returns once the write is in place (and durable, with ``durable=True``) and its
    ``then`` has run. A write once submitted is committed even if the caller stops waiting.
    """

    def __init__(self, root: Path, tmp_dir: Path) -> None:
        self._fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.tmp_dir = tmp_dir
        self._pending: list[_Write] = []
        self._runner: asyncio.Task[None] | None = None
        self.syncs = 0  # syncfs calls made, for stats and tests
        self.batches = 0
        self.after_batch: Callable[[], None] | None = None  # called once a batch's thens have run

    async def replace(self, path: Path, data: bytes, *, durable: bool = True,
                      then: Callable[[], None] | None = None) -> None:
        """Atomically replace (or create) ``path`` with ``data``; then call ``then``."""
        await self._submit(path, data, exclusive=False, durable=durable, then=then)

    async def barrier(self) -> None:
        """Return once a ``syncfs`` that began after this call has finished: whatever was written before
        it (an append to a log, say) is then durable. Shares the sync of the batch it joins."""
        loop = asyncio.get_running_loop()
        write = _Write(None, b"", False, False, loop.create_future())
        self._pending.append(write)
        if self._runner is None:
            self._runner = loop.create_task(self._run())
        await write.future

    async def create(self, path: Path, data: bytes, *, durable: bool = True) -> bool:
        """Create ``path`` only if it does not exist; False if it did (then nothing was written)."""
        return await self._submit(path, data, exclusive=True, durable=durable)

    async def _submit(self, path: Path, data: bytes, *, exclusive: bool, durable: bool,
                      then: Callable[[], None] | None = None) -> bool:
        loop = asyncio.get_running_loop()
        write = _Write(path, data, exclusive, durable, loop.create_future(), then)
        self._pending.append(write)
        if self._runner is None:
            self._runner = loop.create_task(self._run())
        return await write.future

    async def _run(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._commit(batch)
                finally:
                    for write in batch:
                        if write.future.done():
                            continue
                        if write.error is not None:
                            write.future.set_exception(write.error)
                        elif not write.settled:
                            write.future.set_exception(OSError("the write was interrupted"))
                        else:
                            write.future.set_result(write.made)
        finally:
            self._runner = None

    async def _commit(self, batch: list[_Write]) -> None:
        self.batches += 1
        for write in batch:
            if write.path is None:
                continue
            try:
                write.tmp = write_tmp(self.tmp_dir, write.path.name, write.data, fsync=False)
            except OSError as exc:
                write.error = exc
        staged = [w for w in batch if w.error is None]
        if not await self._sync(staged):
            for write in staged:
                _unlink_quietly(write.tmp)
            return
        for write in [w for w in staged if w.path is None]:
            write.made = True  # a barrier: the sync was all it needed
        staged = [w for w in staged if w.path is not None]
        for write in staged:
            assert write.tmp is not None and write.path is not None
            failpoints.hit("tmp-written")
            try:
                if write.exclusive:
                    os.link(write.tmp, write.path)
                    os.unlink(write.tmp)
                else:
                    os.replace(write.tmp, write.path)
                write.made = True
            except FileExistsError:
                _unlink_quietly(write.tmp)
            except OSError as exc:
                write.error = exc
                _unlink_quietly(write.tmp)
            failpoints.hit("renamed")
        await self._sync([w for w in staged if w.durable and w.made])
        for write in staged:
            if write.then is not None and write.made and write.error is None:
                try:
                    write.then()
                except Exception as exc:
                    write.error = exc
        if self.after_batch is not None:
            self.after_batch()
        for write in batch:
            write.settled = True

    async def _sync(self, writes: list[_Write]) -> bool:
        """One syncfs (in a thread) for ``writes``; on failure each of them gets the error."""
        if not writes:
            return False
        try:
            await asyncio.to_thread(syncfs, self._fd)
        except OSError as exc:
            for write in writes:
                write.error = exc
            return False
        self.syncs += 1
        return True

    def close(self) -> None:
        os.close(self._fd)
