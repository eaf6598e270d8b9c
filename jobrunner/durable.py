"""Atomic, durable file operations: the only place that calls fsync, syncfs or renameat2.

Two ways to make a write survive a power cut:
- ``write_atomic``: temp file, write, fsync, rename, fsync the directory. One writer, two syncs per file;
  the CLI uses it (a few writes per command).
- ``GroupSync``: the daemon writes many temp files, then one ``syncfs`` makes all of them durable, then
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
from pathlib import Path

from . import failpoints

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_libc.renameat2.restype = ctypes.c_int
_libc.syncfs.argtypes = [ctypes.c_int]
_libc.syncfs.restype = ctypes.c_int


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


def write_tmp(tmp_dir: Path, name: str, data: bytes, *, fsync: bool) -> Path:
    """Create a unique temp file in ``tmp_dir`` holding ``data``; return its path."""
    tmp = tmp_dir / f"{name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
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


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class GroupSync:
    """Coalesces concurrent durability requests into shared ``syncfs`` calls.

    ``await sync()`` returns once a syncfs that *started after the call* has finished, so every write
    made before the call is on disk. Callers arriving while a sync runs share the next one.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._next: asyncio.Future[None] | None = None
        self._running = False
        self.count = 0  # syncs performed, for stats and tests

    async def sync(self) -> None:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            if not self._running:
                asyncio.get_running_loop().create_task(self._run())
        await asyncio.shield(self._next)

    async def _run(self) -> None:
        self._running = True
        try:
            while self._next is not None:
                batch, self._next = self._next, None
                try:
                    await asyncio.to_thread(syncfs, self._fd)
                    self.count += 1
                except OSError as exc:
                    batch.set_exception(exc)
                else:
                    batch.set_result(None)
        finally:
            self._running = False

    def close(self) -> None:
        os.close(self._fd)


class AsyncWriter:
    """Atomic file writes for the daemon whose syncs are shared through a ``GroupSync``.

    The order is what makes them safe: temp data on disk (sync), then the rename, then (when the caller
    needs the new name to survive a power cut before it goes on) a second sync.
    """

    def __init__(self, group: GroupSync, tmp_dir: Path) -> None:
        self.group = group
        self.tmp_dir = tmp_dir

    async def replace(self, path: Path, data: bytes, *, durable: bool = True) -> None:
        tmp = write_tmp(self.tmp_dir, path.name, data, fsync=False)
        try:
            await self.group.sync()
            failpoints.hit("tmp-written")
            os.replace(tmp, path)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        failpoints.hit("renamed")
        if durable:
            await self.group.sync()

    async def create(self, path: Path, data: bytes, *, durable: bool = True) -> bool:
        """Create ``path`` only if it does not exist; False if it did (then nothing was written)."""
        tmp = write_tmp(self.tmp_dir, path.name, data, fsync=False)
        try:
            await self.group.sync()
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            _unlink_quietly(tmp)
        if durable:
            await self.group.sync()
        return True
