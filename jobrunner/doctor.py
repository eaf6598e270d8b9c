"""`jobrunner doctor`: what is wrong with this data dir, and for each problem what to do about it.

Each check looks at one thing a user has asked "why?" about (no daemon, a spool they cannot write to,
jobs that wait, a missing key, a full disk, rejected requests) and says what it found in one line, with a
fix a person can act on. Doctor only reads: files are opened read-only, nothing is renamed or written,
and the locks it probes (a daemon's lock file, an active request) are tried without blocking and let go
at once, so a doctor run can never take a job or stall a daemon. The worst it can do is make a daemon's
recovery pass skip a dead peer for one round (a few seconds), if it probes that lock at the same moment.

Severities: a check that is ``ok`` needs nothing (its severity is "info"). Otherwise "info" is worth
knowing but heals itself (a stopped daemon's leftovers), "warning" may need a person, "error" stops work
(jobs wait and nothing will run them, the spool cannot be written, the configuration is refused).
`exit_code` is 1 only for errors.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import pwd
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .layout import DATA_DIR_ENV, Layout, is_spool_name
from .spans import short

__all__ = ["Check", "exit_code", "render", "run_checks", "to_json"]

HUNG_AFTER_S = 30.0  # a live daemon touches its lock file every 5 s: six missed beats
STUCK_AFTER_S = 60.0  # a live daemon takes a file within a second or two; a minute is not a backlog blip
REJECTED_WINDOW_S = 24 * 3600.0
WEBHOOK_STALE_S = 600.0  # a delivery this old is far past its retries (about two minutes)
DISK_ERROR_BYTES = 100 * 1024**2
DISK_WARN_BYTES = 1024**3
DISK_WARN_FRACTION = 0.05
INODES_WARN = 10_000
INODES_ERROR = 1_000
INOTIFY_MIN_QUEUED_EVENTS = 16_384
INOTIFY_MIN_INSTANCES = 8
INOTIFY = Path("/proc/sys/fs/inotify")
START_DAEMON = ("systemctl start jobrunner (or: jobrunner run --data-dir {root}; `jobrunner run --burst` runs what is "
                "due, then exits)")
# which job types need which provider (a missing key only matters to those)
USED_BY = {"linkedin": "scrape", "skiptrace": "enrich", "carrier": "enrich", "dnc": "enrich"}
_LEVELS = ("ok", "info", "warning", "error")


@dataclass(frozen=True)
class Check:
    name: str  # short id: "daemon", "spool-writable", "stuck-pending", "provider-keys", ...
    ok: bool
    summary: str  # one line a person reads: what was found
    fix: str | None  # when not ok: what to do, concretely (a command, a setting, a file to look at)
    severity: str = "error"  # "error" | "warning" | "info"


def run_checks(layout: Layout, *, now: float | None = None, environ: Mapping[str, str] | None = None) -> list[Check]:
    """Every check, in the order a person would look. Without a data dir there is nothing else to look at
    (one failed check); one this user cannot read is a warning, and the rest say what they could see.

    ``now`` is the clock (ages and due times are measured against it); ``environ`` is where provider keys
    are looked up (the caller's environment by default: a daemon started by systemd may see another)."""
    when = time.time() if now is None else now
    env = os.environ if environ is None else environ
    secrets = _secrets(env)
    first = _guard("data-dir", lambda: _check_data_dir(layout))
    if not first.ok and first.severity == "error":
        return [_scrub(first, secrets)]
    daemons = _survey_daemons(layout)
    checks = [
        first,
        _guard("daemon", lambda: _check_daemon(layout, daemons, when)),
        _guard("spool-writable", lambda: _check_spool_writable(layout)),
        _guard("stuck-pending", lambda: _check_stuck(layout, daemons, when)),
        _guard("provider-keys", lambda: _check_providers(env)),
        _guard("inotify", lambda: _check_inotify(daemons)),
        _guard("disk-space", lambda: _check_disk(layout)),
        _guard("rejected", lambda: _check_rejected(layout, when)),
        _guard("webhooks", lambda: _check_webhooks(layout, daemons, when)),
    ]
    return [_scrub(c, secrets) for c in checks]


def exit_code(checks: Iterable[Check]) -> int:
    """0 when nothing is an error (warnings and notes are fine), else 1."""
    return 1 if any(not c.ok and c.severity == "error" for c in checks) else 0


_MARKERS = {"ok": "[ok]  ", "info": "[info]", "warning": "[WARN]", "error": "[FAIL]"}


def render(checks: list[Check]) -> str:
    """For people, in plain ASCII (readable in any terminal, a log or a mail): one line per check, the fix
    indented under it, and a last line that says whether anything needs doing."""
    lines = []
    for c in checks:
        marker = _MARKERS["ok"] if c.ok else _MARKERS.get(c.severity, _MARKERS["error"])
        lines.append(f"{marker} {c.name}: {c.summary}")
        if not c.ok and c.fix:
            lines.append(f"{' ' * (len(marker) + 1)}fix: {c.fix}")
    errors = sum(1 for c in checks if not c.ok and c.severity == "error")
    warnings = sum(1 for c in checks if not c.ok and c.severity == "warning")
    if errors or warnings:
        lines.append(f"{_count(errors, 'error')}, {_count(warnings, 'warning')}")
    else:
        lines.append("all good" + (" (see the notes above)" if any(not c.ok for c in checks) else ""))
    return "\n".join(lines) + "\n"


def to_json(checks: list[Check]) -> str:
    """For scripts: ``{"ok": bool, "exit_code": n, "checks": [{name, ok, severity, summary, fix}, ...]}``."""
    return json.dumps({"ok": exit_code(checks) == 0, "exit_code": exit_code(checks),
                       "checks": [asdict(c) for c in checks]}, indent=1) + "\n"


# ---------------------------------------------------------------------------------------------------
# building a check from findings


@dataclass
class _Findings:
    """What one check found: parts of its summary, fixes, and the worst level so far. The fix shown is
    that of the worst findings (a "nothing to do" note does not dilute a fix that matters)."""

    name: str
    parts: list[str] = field(default_factory=list)
    fixes: list[tuple[str, str]] = field(default_factory=list)  # (level, fix)
    level: str = "ok"

    def add(self, text: str, level: str = "ok", fix: str | None = None) -> None:
        self.parts.append(text)
        if fix and (level, fix) not in self.fixes:
            self.fixes.append((level, fix))
        if _LEVELS.index(level) > _LEVELS.index(self.level):
            self.level = level

    def check(self) -> Check:
        ok = self.level == "ok"
        fixes = [fix.strip().rstrip(".") for level, fix in self.fixes if level == self.level]
        return Check(self.name, ok, "; ".join(self.parts) or "ok", None if ok or not fixes else "; ".join(fixes) + ".",
                     "info" if ok else self.level)


def _guard(name: str, run: Callable[[], Check]) -> Check:
    """One check that breaks must not hide the others."""
    try:
        return run()
    except Exception as exc:  # doctor is where people go when things are odd: report, never crash
        return Check(name, False, f"could not check: {type(exc).__name__}: {_clean(str(exc))}",
                     "run doctor as root or as the daemon's user; if it persists, report it with this line",
                     "warning")


# ---------------------------------------------------------------------------------------------------
# 1. data-dir


def _check_data_dir(layout: Layout) -> Check:
    root = layout.root
    fix = (f"pass the data dir the daemon uses (--data-dir DIR, or set ${DATA_DIR_ENV}), or run the daemon "
           f"once to create it: jobrunner run --burst --data-dir {root}")
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return Check("data-dir", False, f"{_clean(str(root))} does not exist", fix)
    except PermissionError:
        return Check("data-dir", False, f"{_clean(str(root))} cannot be reached by user {_user(os.geteuid())}",
                     f"run as the daemon's user (sudo -u USER jobrunner doctor) or as root; {fix}")
    if not stat.S_ISDIR(st.st_mode):
        return Check("data-dir", False, f"{_clean(str(root))} is not a directory", fix)
    missing = [p.name + "/" for p in (layout.queue, layout.jobs) if not p.is_dir()]
    if missing:
        return Check("data-dir", False, f"{_clean(str(root))} is not a jobrunner data dir (no "
                     f"{' and no '.join(missing)})", fix)
    if not _access(layout.queue, os.R_OK | os.X_OK) or not _access(layout.jobs, os.R_OK | os.X_OK):
        return Check("data-dir", False, f"{_clean(str(root))}: user {_user(os.geteuid())} cannot read queue/ "
                     "or jobs/, so what follows is incomplete",
                     "run doctor as the daemon's user (sudo -u USER jobrunner doctor) or as root", "warning")
    return Check("data-dir", True, _clean(str(root)), None, "info")


# ---------------------------------------------------------------------------------------------------
# 2. daemon


@dataclass(frozen=True)
class _Daemon:
    """A lock file in queue/.claimed/ and what can be learned about its owner."""

    worker: str
    state: str  # "alive" (the lock is held), "dead" (we could take it), "unknown" (we cannot open it)
    pid: int | None
    heartbeat: float  # the lock file's mtime
    uid: int  # who the daemon runs as (from /proc when we can read it, else the lock file's owner)
    gids: frozenset[int] = frozenset()
    concurrency: int | None = None  # its --concurrency, read from its command line; None if unknown
    proc_state: str | None = None  # the kernel's one-letter state (R, S, D, T, Z)
    inotify: bool | None = None  # whether it holds an inotify instance; None if we cannot see its fds


def _survey_daemons(layout: Layout) -> list[_Daemon]:
    try:
        names = sorted(os.listdir(layout.claimed))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError:  # not ours to list: say so, rather than "no daemon"
        return [_Daemon("", "unknown", None, 0.0, -1)]
    found = []
    for name in names:
        if not name.endswith(".lock") or name.startswith("."):  # .<w>.lock.tmp: a daemon being born
            continue
        probed = _probe_lock(layout.claimed / name)
        if probed is None:
            continue
        held, st, data = probed
        pid = _pid(data)
        daemon = _Daemon(name[: -len(".lock")], {True: "alive", False: "dead", None: "unknown"}[held], pid,
                         st.st_mtime, st.st_uid)
        if held and pid is not None:
            daemon = _with_process(daemon, pid)
        found.append(daemon)
    return found


def _probe_lock(path: Path) -> tuple[bool | None, os.stat_result, bytes] | None:
    """(held by someone, stat, first bytes) of a lock file; None if it is gone. ``held`` is None when the
    file cannot be opened. The probe is a shared, non-blocking flock, let go at once."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        try:
            return None, os.lstat(path), b""
        except OSError:
            return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        data = os.pread(fd, 64, 0)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True, st, data
        fcntl.flock(fd, fcntl.LOCK_UN)
        try:
            there = os.lstat(path)
        except FileNotFoundError:
            return None  # its daemon exited cleanly (it unlinks, then closes) while we looked
        if (there.st_ino, there.st_dev) != (st.st_ino, st.st_dev):
            return None
        return False, st, data
    finally:
        os.close(fd)


def _pid(data: bytes) -> int | None:
    try:
        pid = int(data.split(b"\n", 1)[0].strip() or b"x")
    except ValueError:
        return None
    return pid if pid > 0 else None


def _with_process(daemon: _Daemon, pid: int) -> _Daemon:
    """What /proc says about a live daemon (its user, groups, --concurrency, state, inotify use). The pid is
    the one it wrote in its own pid namespace: if /proc shows no jobrunner there, learn nothing."""
    proc = Path(f"/proc/{pid}")
    try:
        argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return daemon
    if not any("jobrunner" in a for a in argv):
        return daemon
    uid, gids = daemon.uid, frozenset[int]()
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
        uid = int(fields["Uid"].split()[1])
        gids = frozenset({int(fields["Gid"].split()[1]), *(int(g) for g in fields.get("Groups", "").split())})
    state = None
    with contextlib.suppress(OSError, IndexError):
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    inotify = None
    with contextlib.suppress(OSError):  # another user's fds are root's to see
        fds = os.listdir(proc / "fd")
        inotify = False
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(proc / "fd" / fd) == "anon_inode:inotify":
                    inotify = True
                    break
    return _Daemon(daemon.worker, daemon.state, pid, daemon.heartbeat, uid, gids, _concurrency(argv), state,
                   inotify)


def _concurrency(argv: list[str]) -> int | None:
    for i, arg in enumerate(argv):
        value = None
        if arg == "--concurrency" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--concurrency="):
            value = arg.partition("=")[2]
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return None
    if "run" in argv:
        from .worker import Settings  # here: only when a daemon runs with the default

        return Settings().concurrency
    return None


def _check_daemon(layout: Layout, daemons: list[_Daemon], now: float) -> Check:
    f = _Findings("daemon")
    alive = [d for d in daemons if d.state == "alive"]
    dead = [d for d in daemons if d.state == "dead"]
    unknown = [d for d in daemons if d.state == "unknown"]
    if alive:
        shown = ", ".join(f"pid {d.pid if d.pid is not None else '?'}, heartbeat {short(now - d.heartbeat)} ago"
                          for d in alive[:4])
        more = f", and {len(alive) - 4} more" if len(alive) > 4 else ""
        f.add(f"{len(alive)} running ({shown}{more})")
        for d in alive:
            age = now - d.heartbeat
            if age <= HUNG_AFTER_S:
                continue
            pid = d.pid if d.pid is not None else "PID"
            if d.proc_state == "T":
                f.add(f"pid {pid} is stopped (SIGSTOP or a debugger): no heartbeat for {short(age)}", "warning",
                      f"let it go on: kill -CONT {pid}")
                continue
            f.add(f"pid {pid}: last heartbeat {short(age)} ago: hung? (systemd's watchdog restarts it; else kill "
                  "it)", "warning",
                  f"if it runs under systemd with WatchdogSec=, it is restarted by itself; else kill {pid} (it "
                  f"drains and exits; kill -9 {pid} if it has not after its drain timeout) and start it again: "
                  "the next daemon recovers its jobs")
    elif not unknown:  # else: whether one runs is unknown, and said so below
        f.add(f"no daemon is running on {_clean(str(layout.root))}", "warning",
              f"start one: {START_DAEMON.format(root=_clean(str(layout.root)))}. Leaving it stopped is fine if "
              "cron runs `jobrunner run --burst`")
    if dead:
        pids = ", ".join(str(d.pid) for d in dead[:4] if d.pid is not None)
        what = f"{len(dead)} stopped daemon{'s' if len(dead) > 1 else ''} left {'its' if len(dead) == 1 else 'their'}" \
               f" lock{'s' if len(dead) > 1 else ''} behind{f' (pid {pids})' if pids else ''}"
        when = "a running daemon recovers them within seconds" if alive else "recovered at the next daemon start"
        f.add(f"{what}: {when}", "info",
              "nothing to do: recovery returns their claimed requests to the queue and removes the locks")
    if any(not d.worker for d in unknown):
        f.add(f"user {_user(os.geteuid())} cannot list queue/.claimed/: cannot tell whether a daemon runs",
              "warning", "run doctor as root or as the daemon's user (sudo -u USER jobrunner doctor)")
        unknown = [d for d in unknown if d.worker]
    if unknown:
        whose = "those daemons live" if len(unknown) > 1 else "it lives"
        f.add(f"{len(unknown)} lock file{'s' if len(unknown) > 1 else ''} in queue/.claimed/ cannot be opened by "
              f"user {_user(os.geteuid())}: cannot tell whether {whose}",
              "warning", "run doctor as root or as the daemon's user (sudo -u USER jobrunner doctor)")
    return f.check()


# ---------------------------------------------------------------------------------------------------
# 3. spool-writable


def _check_spool_writable(layout: Layout) -> Check:
    me = os.geteuid()
    user = _user(me)
    for folder in (layout.queue, layout.staging):
        if folder == layout.staging and not os.path.lexists(folder):
            continue  # made by the daemon's first start; `submit` needs it, a dropped file does not
        if _access(folder, os.W_OK | os.X_OK):
            continue
        st = os.stat(folder)
        where = _clean(str(folder))
        summary = (f"user {user} cannot create files in {where} (owner {_user(st.st_uid)}, group "
                   f"{_group(st.st_gid)}, mode {stat.filemode(st.st_mode)})")
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return Check("spool-writable", False, f"{where} is on a filesystem mounted read-only",
                         "remount it read-write (mount -o remount,rw MOUNTPOINT), or use a data dir on a writable disk")
        return Check("spool-writable", False, summary, _writable_fix(layout, st, me))
    return Check("spool-writable", True, f"user {user} can drop requests in {_clean(str(layout.queue))}", None,
                 "info")


def _writable_fix(layout: Layout, st: os.stat_result, me: int) -> str:
    """How this user gets to drop files, most direct first. Never "join group root": a spool's group is
    one made for its clients."""
    user, owner, group = _user(me), _user(st.st_uid), _group(st.st_gid)
    folders = f"{_clean(str(layout.queue))} {_clean(str(layout.staging))}"
    as_owner = f"run as {owner}: sudo -u {owner} jobrunner submit FILE"
    group_may = bool(st.st_mode & stat.S_IWGRP and st.st_mode & stat.S_IXGRP)
    share = (f"give the spool a group for its clients: sudo groupadd -f jobrunner; sudo chgrp jobrunner {folders}; "
             f"sudo chmod g+rwxs {folders}; sudo usermod -aG jobrunner {user} (then log in again)")
    if me == st.st_uid:
        return f"give yourself write access: chmod u+wx {folders}"
    if group_may and st.st_gid != 0 and st.st_gid not in _my_groups():
        if st.st_gid in _groups_of(me):
            return (f"you are in group {group}, but this login session began before you were added: log out and "
                    f"in again (or run `newgrp {group}`)")
        return (f"join its group: sudo usermod -aG {group} {user}, then log out and in again (or run "
                f"`newgrp {group}`); or {as_owner}")
    if (group_may and st.st_gid in _my_groups()) or st.st_mode & stat.S_IWOTH:
        where = _clean(str(layout.queue))
        return (f"the mode allows it, so something else refuses: an ACL (getfacl {where}) or a folder above it "
                f"(namei -l {where})")
    if st.st_gid != 0:
        return (f"{as_owner}; or let group {group} write it (sudo chmod g+rwxs {folders}) and join it: sudo "
                f"usermod -aG {group} {user}, then log in again")
    return f"{as_owner}; or {share}"


def _access(path: Path, mode: int) -> bool:
    if os.access in os.supports_effective_ids:
        return os.access(path, mode, effective_ids=True)
    return os.access(path, mode)


def _my_groups() -> set[int]:
    return {os.getegid(), *os.getgroups()}


def _may(st: os.stat_result, uid: int, gids: frozenset[int], bits: int) -> bool:
    """Whether ``uid`` (in ``gids``) has the permission ``bits`` (rwx as 4/2/1) on a file, by its mode (ACLs
    aside). An approximation for another user, where os.access cannot ask."""
    if uid == 0:
        return True
    if uid == st.st_uid:
        have = (st.st_mode >> 6) & 7
    elif st.st_gid in gids:
        have = (st.st_mode >> 3) & 7
    else:
        have = st.st_mode & 7
    return have & bits == bits


# ---------------------------------------------------------------------------------------------------
# 4. stuck-pending


@dataclass
class _Waiting:
    queued: list[tuple[float, str, os.stat_result]] = field(default_factory=list)  # (since, name, stat) in queue/
    claimed: list[tuple[float, str]] = field(default_factory=list)  # (since, name) taken by a live daemon
    dead_claimed: int = 0  # taken by a daemon that died: back to the queue at the next recovery
    deferred_due: list[tuple[float, str]] = field(default_factory=list)  # (due, id)
    deferred_later: list[tuple[float, str]] = field(default_factory=list)
    running: int = 0
    orphans: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # folders we cannot list


def _scan_waiting(layout: Layout, daemons: list[_Daemon], now: float) -> _Waiting:
    w = _Waiting()
    for entry in _entries(layout.queue, w):
        if is_spool_name(entry.name):
            with contextlib.suppress(FileNotFoundError):
                st = entry.stat(follow_symlinks=False)
                # ctime, not mtime: a file renamed in keeps the mtime it was written with, days ago maybe
                w.queued.append((max(st.st_ctime, st.st_mtime), entry.name, st))
    w.queued.sort()
    for d in daemons:
        if not d.worker:
            continue
        for entry in _entries(layout.worker_dir(d.worker), w, quiet=True):
            if d.state == "alive":
                with contextlib.suppress(FileNotFoundError):
                    w.claimed.append((entry.stat(follow_symlinks=False).st_ctime, entry.name))
            else:
                w.dead_claimed += 1
    w.claimed.sort()
    for entry in _entries(layout.deferred, w):
        if entry.name.endswith(".json") and not entry.name.startswith("."):
            with contextlib.suppress(FileNotFoundError):
                due = entry.stat(follow_symlinks=False).st_mtime
                (w.deferred_due if due <= now else w.deferred_later).append((due, entry.name[: -len(".json")]))
    w.deferred_due.sort()
    w.deferred_later.sort()
    for entry in _entries(layout.active, w):
        if entry.name.endswith(".json") and not entry.name.startswith("."):
            held = _probe_lock(Path(entry.path))
            if held is None:
                continue
            if held[0] is False:
                w.orphans.append(entry.name[: -len(".json")])
            else:
                w.running += 1  # held, or not ours to open: count it as its owner's
    return w


def _entries(folder: Path, w: _Waiting, *, quiet: bool = False) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except PermissionError:
        if not quiet:
            w.unreadable.append(folder.name if folder.name.startswith(".") else folder.name + "/")
        return []


def _check_stuck(layout: Layout, daemons: list[_Daemon], now: float) -> Check:
    f = _Findings("stuck-pending")
    w = _scan_waiting(layout, daemons, now)
    alive = [d for d in daemons if d.state == "alive"]
    unknown = [d for d in daemons if d.state == "unknown"]
    start = f"start the daemon: {START_DAEMON.format(root=_clean(str(layout.root)))}"
    if w.unreadable:
        f.add(f"user {_user(os.geteuid())} cannot list {', '.join(w.unreadable)}: counts are incomplete", "warning",
              "run doctor as root or as the daemon's user (sudo -u USER jobrunner doctor)")
    later = _next_due(layout, w, now)
    if not alive:
        parts = []
        if w.queued:
            parts.append(f"{len(w.queued)} queued (oldest {short(now - w.queued[0][0])})")
        if w.dead_claimed:
            parts.append(f"{w.dead_claimed} claimed by a stopped daemon")
        if w.deferred_due:
            parts.append(f"{len(w.deferred_due)} deferred and due (oldest due {short(now - w.deferred_due[0][0])} "
                         "ago)")
        if w.orphans:
            parts.append(f"{_count(len(w.orphans), 'orphaned active job')} ({_list(w.orphans)}: a daemon died "
                         f"running {_it(w.orphans)})")
        level = "warning" if unknown else "error"  # a daemon we cannot see may be running them
        lead = "no daemon seen to run them" if unknown else "nothing is running them"
        if parts:
            f.add(f"{lead}: " + ", ".join(parts), level, start)
        if later:
            f.add(f"{later}; no daemon is running to start them then", "warning", start)
        if not parts and not later:
            f.add("nothing waiting")
        return f.check()
    # a daemon lives: say why anything waits longer than it should
    capacity = _capacity(alive)
    f.add(f"{w.running} running" + (f" (concurrency {capacity})" if capacity else ""))
    waiting = sorted([(since, name) for since, name, _ in w.queued] + w.claimed)
    old = [x for x in waiting if now - x[0] > STUCK_AFTER_S]
    if waiting and not old:
        f.add(f"{len(waiting)} queued, being taken (oldest {short(now - waiting[0][0])})")
    suspects: dict[Path, list[os.stat_result]] = {}  # folders a daemon should have taken files from
    if old:
        f.add(f"{len(old)} queued for over {STUCK_AFTER_S:.0f} s (oldest {_clean(old[0][1])}, "
              f"{short(now - old[0][0])})", "warning")
        stuck_in_queue = [st for since, _, st in w.queued if now - since > STUCK_AFTER_S]
        if stuck_in_queue:
            suspects[layout.queue] = stuck_in_queue
    if w.dead_claimed:
        f.add(f"{w.dead_claimed} claimed by a stopped daemon: a running daemon returns them to the queue within "
              "seconds", "info", "nothing to do: recovery puts them back in queue/")
    old_due = [d for d in w.deferred_due if now - d[0] > STUCK_AFTER_S]
    if w.deferred_due and not old_due:
        f.add(f"{len(w.deferred_due)} deferred and due, being taken")
    if old_due:
        f.add(f"{_count(len(old_due), 'deferred job')} due for over {STUCK_AFTER_S:.0f} s (oldest "
              f"{_clean(old_due[0][1])}, due {short(now - old_due[0][0])} ago)", "warning")
        suspects[layout.deferred] = []
    if old or old_due:
        _why_not_taken(f, suspects, alive, w, now)
    if w.orphans:
        f.add(f"{_count(len(w.orphans), 'orphaned active job')} ({_list(w.orphans)}: a daemon died running "
              f"{_it(w.orphans)})",
              "info", "nothing to do: a running daemon recovers them within seconds (the attempt is counted and the "
              "job retried with backoff)")
    if later:
        f.add(later, "info", "nothing to do: they start at their due time (`jobrunner status --active` lists them)")
    return f.check()


def _capacity(alive: list[_Daemon]) -> int | None:
    """Jobs the live daemons run at once, when every one's --concurrency is known."""
    if not alive or any(d.concurrency is None for d in alive):
        return None
    return sum(d.concurrency or 0 for d in alive)


def _next_due(layout: Layout, w: _Waiting, now: float) -> str | None:
    """"3 deferred, not due yet: next job-7 at 2026-12-03T18:00:00Z (in 5m, retry after attempt 1 failed)"."""
    if not w.deferred_later:
        return None
    due, job_id = w.deferred_later[0]
    why = ""
    with contextlib.suppress(Exception):  # the status only adds the reason; a bad one must not hide the rest
        from .listing import read_doc

        doc = read_doc(layout, job_id) or {}
        history = doc.get("history") or []
        if history and isinstance(history[-1], dict):
            outcome = history[-1].get("outcome")
            why = {"retry": f", retry after attempt {history[-1].get('attempt')} failed",
                   "throttled": ", the provider asked to come back later (Retry-After)",
                   "interrupted": ", retry after its daemon died",
                   "timeout": ", retry after a timeout",
                   "requeued": ", put back at a daemon's shutdown"}.get(str(outcome), "")
        elif doc and not doc.get("started_at"):
            why = ", waiting for its not_before"
    return (f"{len(w.deferred_later)} deferred, not due yet: next {_clean(job_id)} at {_iso(due)} "
            f"(in {short(due - now)}{why})")


def _why_not_taken(f: _Findings, folders: dict[Path, list[os.stat_result]], alive: list[_Daemon], w: _Waiting,
                   now: float) -> None:
    """A live daemon should have taken them: name what stops it (the usual suspects, most likely first).
    ``folders`` maps each folder it should have taken files from to the files (for the sticky-bit rule)."""
    found = False
    capacity = _capacity(alive)
    if capacity and w.running >= capacity:
        f.add(f"running {w.running} = concurrency {capacity}: the rest wait their turn", "warning",
              "nothing to do if that pace is fine; else raise it: jobrunner run --concurrency N (or start more "
              "daemons, or --workers N)")
        found = True
    if any(now - d.heartbeat > HUNG_AFTER_S for d in alive):
        f.add("a daemon looks hung (see the daemon check)", "warning", "see the daemon check's fix")
        found = True
    for folder, files in folders.items():
        try:
            st = os.stat(folder)
        except OSError:
            continue
        where = _clean(str(folder))
        for d in alive:
            if d.uid == 0:
                continue
            gids = d.gids or frozenset(_groups_of(d.uid))
            if not _may(st, d.uid, gids, 7):
                if st.st_gid in gids and st.st_gid != 0:
                    fix = f"let its group write it: sudo chmod g+rwxs {where}"
                else:
                    fix = (f"give it back to the daemon's user: sudo chown {_user(d.uid)} {where} (its group stays "
                           f"{_group(st.st_gid)}), or run the daemon as {_user(st.st_uid)}")
                f.add(f"the daemon (pid {d.pid}, user {_user(d.uid)}) cannot take files from {where} (owner "
                      f"{_user(st.st_uid)}, group {_group(st.st_gid)}, mode {stat.filemode(st.st_mode)})", "warning",
                      fix)
                found = True
            elif st.st_mode & stat.S_ISVTX:
                blocked = [s for s in files if d.uid not in (s.st_uid, st.st_uid)]  # the kernel's rule for +t
                if blocked:
                    f.add(f"{where} has the sticky bit (mode {stat.filemode(st.st_mode)}): the daemon (user "
                          f"{_user(d.uid)}) may not move the {len(blocked)} file(s) other users own", "warning",
                          f"drop files as {_user(d.uid)}, or remove the bit: sudo chmod -t {where}")
                    found = True
    if not found:
        f.add("the daemon is not taking them", "warning",
              "look at the daemon's log (journalctl -u jobrunner -e, or the output of `jobrunner run`) for "
              "\"cannot take ... from the queue\" or \"scanning the spool failed\"")


def _groups_of(uid: int) -> set[int]:
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return set()
    return {pw.pw_gid, *(g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem)}


# ---------------------------------------------------------------------------------------------------
# 5. provider-keys


def _check_providers(env: Mapping[str, str]) -> Check:
    from .errors import ConfigError
    from .providers.config import CONFIG_ENV, SPECS, call_policy, env_name, load

    f = _Findings("provider-keys")
    try:
        configs = load(env)
        call_policy(env)
    except ConfigError as exc:
        named = env.get(CONFIG_ENV)
        f.add(f"the configuration is refused: {_clean(str(exc))}", "error",
              f"fix {_clean(named) if named else 'the setting named'} (${CONFIG_ENV}); until then the daemon "
              "will not start (exit 78) and a reload (SIGHUP) keeps the old configuration")
        return f.check()
    configured, missing, needs = [], [], set()
    for name in SPECS:
        cfg = configs[name]
        lacks = []
        key_var = env_name(name, "KEY")
        if cfg.key is None:
            blank = key_var in env and not env[key_var].strip()
            lacks.append(f"key ({key_var} is set but blank)" if blank else "key")
            needs.add(key_var)
        url_var = env_name(name, "URL")
        if not cfg.url:
            lacks.append("URL")
            needs.add(url_var)
        elif not cfg.url.startswith(("http://", "https://")):
            lacks.append(f"a URL starting with http:// or https:// ({url_var} or url in the file)")
            needs.add(url_var)
        if lacks:
            missing.append(f"{name} ({' and '.join(lacks)}; {USED_BY.get(name, 'its')} jobs need it)")
        else:
            configured.append(f"{name} (key from {_key_source(name, env)})")
    if configured:
        f.add("configured: " + ", ".join(configured))
    if missing:
        f.add("missing: " + ", ".join(missing), "warning",
              f"set {', '.join(sorted(needs))} where the daemon runs (systemd: Environment= in the unit, or "
              f"LoadCredential=<provider>_key for a key), or key/url in [providers.<provider>] of the file in "
              f"${CONFIG_ENV}; then restart the daemon. Only the job types named need them. (Checked against "
              "this shell's environment: the daemon's may differ.)")
    return f.check()


def _key_source(name: str, env: Mapping[str, str]) -> str:
    from .providers.config import CONFIG_ENV, env_name

    if (env.get(env_name(name, "KEY")) or "").strip():
        return f"${env_name(name, 'KEY')}"
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds and os.path.isfile(os.path.join(creds, f"{name}_key")):
        return f"the systemd credential {name}_key"
    return f"the file in ${CONFIG_ENV}"


def _secrets(env: Mapping[str, str]) -> list[str]:
    """Every key we can find, to make sure none reaches the output (no check prints one on purpose)."""
    from .providers.config import SPECS, env_name, load

    found = {env.get(env_name(name, "KEY"), "") for name in SPECS}
    with contextlib.suppress(Exception):
        found.update(c.key.reveal() for c in load(env).values() if c.key is not None)
    found = {s.strip() for s in found}
    return sorted((s for s in found if len(s) >= 6), key=len, reverse=True)


def _scrub(check: Check, secrets: list[str]) -> Check:
    def clean(text: str | None) -> str | None:
        if text is None:
            return None
        for secret in secrets:
            text = text.replace(secret, "********")
        return text

    return Check(check.name, check.ok, clean(check.summary) or "", clean(check.fix), check.severity)


# ---------------------------------------------------------------------------------------------------
# 6. inotify


def _check_inotify(daemons: list[_Daemon]) -> Check:
    f = _Findings("inotify")
    values: dict[str, int] = {}
    for name in ("max_user_watches", "max_user_instances", "max_queued_events"):
        with contextlib.suppress(OSError, ValueError):
            values[name] = int((INOTIFY / name).read_text().split()[0])
    fallback = "the daemon falls back to scanning every second, so nothing is lost, only wake-ups are slower"
    if not values:
        f.add(f"no inotify here ({INOTIFY} is missing): {fallback}", "info", "nothing to do")
        return f.check()
    f.add(", ".join(f"{k} {v}" for k, v in values.items()))
    low = []
    if values.get("max_queued_events", INOTIFY_MIN_QUEUED_EVENTS) < INOTIFY_MIN_QUEUED_EVENTS:
        low.append(f"fs.inotify.max_queued_events={INOTIFY_MIN_QUEUED_EVENTS}")
    if values.get("max_user_instances", INOTIFY_MIN_INSTANCES) < INOTIFY_MIN_INSTANCES:
        low.append("fs.inotify.max_user_instances=128")
    if values.get("max_user_watches", 64) < 64:
        low.append("fs.inotify.max_user_watches=65536")
    if low:
        f.add(f"below what a busy spool needs: {fallback}", "warning",
              f"sudo sysctl -w {' '.join(low)}, and keep it across reboots in /etc/sysctl.d/60-jobrunner.conf")
    blind = [d for d in daemons if d.state == "alive" and d.inotify is False]
    if blind:
        f.add(f"daemon pid {', '.join(str(d.pid) for d in blind)} has no inotify watch: {fallback}", "warning",
              "look in its log for the watcher's error (often max_user_instances reached: "
              "sudo sysctl -w fs.inotify.max_user_instances=512), then restart it")
    return f.check()


# ---------------------------------------------------------------------------------------------------
# 7. disk-space


def _check_disk(layout: Layout) -> Check:
    f = _Findings("disk-space")
    vfs = os.statvfs(layout.root)
    free = vfs.f_bavail * vfs.f_frsize
    total = vfs.f_blocks * vfs.f_frsize
    share = free / total if total else 1.0
    f.add(f"{_size(free)} free of {_size(total)} ({share:.0%})")
    low = free < DISK_WARN_BYTES or share < DISK_WARN_FRACTION or (vfs.f_files and vfs.f_favail < INODES_WARN)
    prune = ""
    if low:  # only then: counting a big .done/ takes a moment
        prune = (f"free space: `jobrunner prune` (coming), or delete old final jobs' queue/.done/<id>.json, "
                 f"jobs/<id>.json and jobs/<id>/ ({_count_entries(layout.done)} final jobs kept in queue/.done/); "
                 "or grow the disk")
    if free < DISK_ERROR_BYTES:
        f.add("too little to write status files and results safely", "error", prune)
    elif free < DISK_WARN_BYTES or share < DISK_WARN_FRACTION:
        f.add("running low", "warning", prune)
    if vfs.f_files:  # 0: a filesystem without an inode limit (btrfs, ...)
        f.add(f"{vfs.f_favail:,} inodes free")
        if vfs.f_favail < INODES_WARN:
            f.add("every job needs a few files: few inodes left", "error" if vfs.f_favail < INODES_ERROR else "warning",
                  prune)
    return f.check()


def _count_entries(folder: Path) -> int:
    try:
        with os.scandir(folder) as it:
            return sum(1 for _ in it)
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------------
# 8. rejected


def _check_rejected(layout: Layout, now: float) -> Check:
    f = _Findings("rejected")
    entries = []
    try:
        with os.scandir(layout.rejected) as it:
            names = {e.name for e in it}
    except FileNotFoundError:
        names = set()
    except PermissionError:
        f.add(f"user {_user(os.geteuid())} cannot list queue/.rejected/", "warning",
              "run doctor as root or as the daemon's user (sudo -u USER jobrunner doctor)")
        return f.check()
    for name in names:
        if name.startswith(".") or name.endswith((".reason", ".tmp")):
            continue
        reason = layout.rejected / f"{name}.reason"
        try:  # when it was rejected: its reason's mtime (the entry keeps the mtime the client gave it)
            when = os.lstat(reason).st_mtime if f"{name}.reason" in names else os.lstat(layout.rejected / name).st_ctime
        except FileNotFoundError:
            continue
        entries.append((when, name))
    recent = sorted((e for e in entries if now - e[0] <= REJECTED_WINDOW_S), reverse=True)
    older = len(entries) - len(recent)
    if not recent:
        f.add("none in the last 24 h" + (f" ({older} older in queue/.rejected/)" if older else ""))
        return f.check()
    notes = [(name, _read_reason(layout.rejected / f"{name}.reason")) for _, name in recent[:1000]]
    duplicates = sum(1 for _, note in notes if note.get("error") == "DuplicateJob")
    invalid = len(notes) - duplicates
    newest_name, newest = next(((n, r) for n, r in notes if r.get("error") != "DuplicateJob"), notes[0])
    text = _clean(str(newest.get("reason") or "no .reason file beside it"))
    if len(text) > 200:
        text = text[:197] + "..."
    counts = f"{len(recent)} in the last 24 h"
    if duplicates:
        counts += f" ({invalid} invalid, {duplicates} duplicate id{'s' if duplicates > 1 else ''})"
    reason_file = f"queue/.rejected/{_clean(newest_name)}.reason"
    f.add(f"{counts}; newest: {_clean(newest_name)}: {text}", "warning" if invalid else "info",
          f"fix the file named in {reason_file} (the request is beside it, byte for byte) and drop it again"
          if invalid else
          "nothing to do if resubmitting the same id was meant (it never runs twice); else give the request a "
          f"new id and drop it again (see {reason_file})")
    return f.check()


# ---------------------------------------------------------------------------------------------------
# 9. webhooks


def _check_webhooks(layout: Layout, daemons: list[_Daemon], now: float) -> Check:
    """Deliveries still in jobs/.outbox/: a few for a moment is normal (each waits out its retries); old ones
    mean no daemon runs, or the job is not final yet (it runs again), or a receiver keeps failing."""
    f = _Findings("webhooks")
    ages: list[tuple[float, str]] = []
    try:
        with os.scandir(layout.outbox) as it:
            for entry in it:
                if entry.name.endswith(".json") and not entry.name.startswith("."):
                    with contextlib.suppress(FileNotFoundError):
                        ages.append((now - entry.stat(follow_symlinks=False).st_mtime, entry.name[: -len(".json")]))
    except FileNotFoundError:
        pass
    except PermissionError:
        f.add(f"user {_user(os.geteuid())} cannot list jobs/.outbox/ (the daemon's own)", "info",
              "run doctor as root or as the daemon's user to see the webhooks waiting")
        return f.check()
    if not ages:
        f.add("none waiting")
        return f.check()
    ages.sort(reverse=True)
    oldest, job_id = ages[0]
    waiting = (f"{_count(len(ages), 'delivery')} waiting in jobs/.outbox/, the oldest for {short(oldest)} "
               f"(job {_clean(job_id)})")
    if oldest < WEBHOOK_STALE_S:
        f.add(waiting, "info")
    elif not any(d.state == "alive" for d in daemons):
        f.add(waiting, "warning", "start the daemon: it posts them at start-up")
    else:
        f.add(waiting, "warning", f"see `jobrunner status {_clean(job_id)}` and `jobrunner logs {_clean(job_id)}`: "
              "a job that is not final yet (it runs again) keeps its delivery until it ends; a final one is posted "
              "within seconds, so an old one means the daemon cannot read it (its log says why)")
    return f.check()


def _read_reason(path: Path) -> dict[str, object]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}
        data = os.read(fd, 64 * 1024)
    finally:
        os.close(fd)
    try:
        note = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return note if isinstance(note, dict) else {}


# ---------------------------------------------------------------------------------------------------
# words


def _clean(text: str) -> str:
    """A file name or a reason as one printable line: control characters (a newline, an escape sequence in
    a name a client chose) are shown escaped, never sent to the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def _list(ids: list[str]) -> str:
    shown = ", ".join(_clean(i) for i in ids[:3])
    return shown + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def _it(items: list[str]) -> str:
    return "it" if len(items) == 1 else "them"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)

