"""Shared helpers of the bench/ scripts (not a benchmark itself).

- where to measure: a temp dir on the root filesystem, and/or a journaled ext4 loop mount made (and
  always unmounted and deleted) by the script itself;
- how to start the installed ``jobrunner`` and read its log (the ``ready:`` line, the ``stopped:`` line);
- statistics (median and spread of repeated runs) and plain-text tables;
- a note of the machine and the commit measured, printed at the top of every report.
"""

from __future__ import annotations

import argparse
import atexit
import calendar
import contextlib
import ctypes
import ctypes.util
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
LOG_DIR_BASE = "/dev/shm" if os.path.isdir("/dev/shm") else None  # daemon logs: off the measured disk


# ---------------------------------------------------------------------------------------------- machine
_MEASURED: str | None = None  # set by use_commit(): a snapshot of a commit instead of the working tree


def git_commit() -> str:
    if _MEASURED:
        return _MEASURED
    try:
        out = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %cI %s"], capture_output=True,
                             text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "jobrunner"],
                           capture_output=True, text=True).stdout.strip()
    return "working tree at " + out + (" + UNCOMMITTED changes under jobrunner/" if dirty else " (clean)")


def use_commit(rev: str) -> None:
    """Measure jobrunner exactly as committed at ``rev``, whatever the working tree holds: extract the
    package with ``git archive`` (read-only) into a temp dir that goes first on PYTHONPATH (ahead of the
    venv's editable install, which is a meta-path finder appended after the path finder)."""
    global _MEASURED
    desc = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %cI %s", rev], capture_output=True,
                          text=True, check=True).stdout.strip()
    dest = tempfile.mkdtemp(prefix=f"jobrunner-bench-src-{desc.split()[0]}-")
    atexit.register(shutil.rmtree, dest, True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "jobrunner"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", dest], input=archive.stdout, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", dest], check=True)  # no first-import compile cost
    os.environ["PYTHONPATH"] = dest + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    sys.path.insert(0, dest)
    where = subprocess.run([sys.executable, "-c", "import jobrunner; print(jobrunner.__file__)"], cwd="/",
                           capture_output=True, text=True, check=True).stdout.strip()
    if not where.startswith(dest):
        raise RuntimeError(f"the snapshot is not what gets imported: {where}")
    _MEASURED = f"{desc} (exactly that commit: a git-archive snapshot, not the working tree)"


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = f"{int(f.readline().split()[1]) // 1024} MiB"
    load = "?"
    with contextlib.suppress(OSError), open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return (f"{os.cpu_count()} cores ({cpu}), {mem} RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}, load avg {load}")


def header(title: str) -> None:
    print(f"# {title}")
    print(f"date:    {datetime.now().astimezone():%Y-%m-%d %H:%M:%S %z}")
    print(f"commit:  {git_commit()}")
    print(f"machine: {machine()}")
    print()


def fs_note(path: Path) -> str:
    """'ext4 (rw,relatime,...)' for the mount holding ``path``, with whether it has a journal."""
    best, info = "", "?"
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, kind, opts, *_ = line.split()
            mnt = mnt.replace("\\040", " ")
            if (str(path) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best):
                best, info = mnt, f"{kind} on {dev} at {mnt} ({opts})"
                journal = _has_journal(dev) if kind == "ext4" else None
                if journal is not None:
                    info += ", journal" if journal else ", NO journal"
    return info


def _has_journal(dev: str) -> bool | None:
    """A mounted ext4 has a journal iff jbd2 lists its device (/proc/fs/jbd2/<dev>-<n>)."""
    name = os.path.basename(os.path.realpath(dev))
    if not os.path.isdir(f"/proc/fs/ext4/{name}"):
        return None
    try:
        return any(e.startswith(name + "-") for e in os.listdir("/proc/fs/jbd2"))
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------------------------------------- where
@contextlib.contextmanager
def journaled_mount(base: str = "/tmp", size: str = "8G") -> Iterator[Path]:
    """A fresh journaled ext4 filesystem on a loop device (root only); unmounted and deleted after."""
    img = Path(tempfile.mkstemp(prefix="jobrunner-bench-", suffix=".img", dir=base)[1])
    mnt = Path(tempfile.mkdtemp(prefix="jobrunner-bench-jext4-", dir=base))
    mounted = False
    try:
        subprocess.run(["truncate", "-s", size, str(img)], check=True)
        # eager inode-table/journal init: no ext4lazyinit thread writing in the background during runs
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(img)],
                       check=True)
        subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
        mounted = True
        yield mnt
    finally:
        if mounted:
            for attempt in range(20):
                if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                    break
                time.sleep(0.25 * (attempt + 1))
            else:
                subprocess.run(["umount", "-l", str(mnt)], check=False)
        with contextlib.suppress(OSError):
            mnt.rmdir()
        with contextlib.suppress(OSError):
            img.unlink()


@contextlib.contextmanager
def root_dir(base: str = "/tmp") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="jobrunner-bench-root-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def given_dir(path: str) -> Iterator[Path]:
    """A dir the user named: we work in a fresh subdir of it and delete only that."""
    Path(path).mkdir(parents=True, exist_ok=True)
    sub = Path(tempfile.mkdtemp(prefix="jobrunner-bench-", dir=path))
    try:
        yield sub
    finally:
        shutil.rmtree(sub, ignore_errors=True)


def add_fs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--commit", metavar="REV", help="measure jobrunner as committed at REV (e.g. HEAD) instead of "
                   "the working tree, from a git-archive snapshot")
    p.add_argument("--dir", action="append", default=[],
                   help="measure in (a fresh subdir of) DIR; repeatable. Default: see --fs")
    p.add_argument("--fs", choices=["root", "journaled", "both"], default="both",
                   help="without --dir: a temp dir under /tmp on the root fs, a journaled ext4 loop mount "
                        "made for the run (needs root), or both (default)")


def setup(args: argparse.Namespace) -> None:
    """Apply the common options that must act before jobrunner is imported or started."""
    if args.commit:
        use_commit(args.commit)


def filesystems(args: argparse.Namespace) -> Iterator[tuple[str, contextlib.AbstractContextManager[Path]]]:
    """(label, context manager yielding a dir) for each place to measure."""
    if args.dir:
        for d in args.dir:
            yield d, given_dir(d)
        return
    fs: str = args.fs
    if fs in ("root", "both"):
        yield "root fs (/tmp)", root_dir()
    if fs in ("journaled", "both"):
        yield "journaled ext4 loop", journaled_mount()


def syncfs(path: Path) -> None:
    """Flush everything dirty on the filesystem holding ``path``: set-up writes stay out of timings."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- jobrunner
def jobrunner_cmd() -> list[str]:
    exe = BIN / "jobrunner"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "jobrunner"]


def log_file(tag: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f"jobrunner-bench-{tag}-", suffix=".log", dir=LOG_DIR_BASE)
    os.close(fd)
    return Path(name)


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")  # logging's default asctime (local time)
_ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z ")  # jobrunner.logs (UTC)


def log_time(line: str) -> float | None:
    """The epoch time of a daemon log line: jobrunner's UTC ISO stamp, or (older commits) logging's
    default asctime in local time."""
    m = _ISO.match(line)
    if m:
        return calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) + int(m.group(2)) / 1000
    m = _STAMP.match(line)
    if not m:
        return None
    return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000


def find_line(path: Path, needle: str) -> str | None:
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        for line in f:
            if needle in line:
                return line
    return None


def find_lines(path: Path, needle: str) -> list[str]:
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        return [line for line in f if needle in line]
    return []


def stopped_stats(path: Path) -> dict[str, int]:
    """The counts of the daemon's ``stopped:`` line, summed over the workers of ``run --workers N``."""
    out: dict[str, int] = {}
    for line in find_lines(path, " stopped: "):
        for part in line.split("stopped:", 1)[1].split(","):
            n, _, what = part.strip().partition(" ")
            with contextlib.suppress(ValueError):
                out[what] = out.get(what, 0) + int(n)
    return out


def wait_for_line(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = find_line(path, needle)
        if line:
            return line
        if proc.poll() is not None:
            raise RuntimeError(f"jobrunner exited ({proc.returncode}) before {needle!r}; log: {path}")
        time.sleep(0.005)
    raise RuntimeError(f"no {needle!r} within {timeout}s; log: {path}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> float | None:
    """SIGTERM (a drain), then SIGKILL if it does not exit. Returns the CPU seconds (user + system) the
    process used, when this call is what reaped it."""
    if proc.poll() is not None:
        return None
    proc.terminate()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, wstatus, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(wstatus)
            return float(ru.ru_utime + ru.ru_stime)
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    return None


def write_noops(queue: Path, n: int, prefix: str = "job") -> None:
    """Drop n ``{"type": "noop"}`` requests straight into queue/ (set-up, not timed)."""
    queue.mkdir(parents=True, exist_ok=True)
    body = b'{"type": "noop"}\n'
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for i in range(n):
        fd = os.open(queue / f"{prefix}-{i:06d}.json", flags, 0o644)
        os.write(fd, body)
        os.close(fd)


# ---------------------------------------------------------------------------------------------- numbers
def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float], fmt: str = "{:.0f}", unit: str = "") -> str:
    """'median (min-max)' of repeated runs."""
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0]) + unit
    return f"{fmt.format(med(values))}{unit} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def table(rows: Sequence[Sequence[object]], head: Sequence[str]) -> None:
    cells = [[str(c) for c in head]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print("| " + " | ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths, strict=True))
              + " |")
    print()


def _numeric(cell: str) -> bool:
    return bool(cell) and (cell[0].isdigit() or cell[0] in "-.<>~") and cell not in ("-",)
