"""`jobrunner run --workers N`: N daemons under one command, for many short jobs on several cores.

Each worker is a forked daemon exactly like one started by hand: its own worker id, claim folder and
lock, sharing the data dir by the spool's rules (renames decide, flocks tell the living from the dead).
So nothing here is needed for correctness; the supervisor only starts the workers, passes a stop signal
on to them, and starts a new one when one dies (its claims are recovered by the others as a dead
daemon's). Each worker takes its own share of a backlog first (by a hash of the file name), so workers
draining one backlog do not race for the same files.

One asyncio process runs about a thousand short jobs a second here (Python's time, not the disk's);
jobs that wait on the network need no more than one worker: raise ``--concurrency`` instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable

log = logging.getLogger("jobrunner.supervisor")

_PR_SET_PDEATHSIG = 1
RESTART_DELAY_S = 1.0


def supervise(count: int, run_worker: Callable[[int], int], *, burst: bool) -> int:
    """Fork ``count`` workers, each calling ``run_worker(index)``; return the exit code for the command:
    0 when every worker stopped cleanly, else the first failing worker's code."""
    children: dict[int, int] = {}  # pid -> index
    stopping = False
    failed = 0

    supervisor = os.getpid()

    def start(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker handles it (a reload)
                os.setpgid(0, 0)  # a terminal's ^C reaches the supervisor only, which passes it on once
                _die_with(supervisor)
                code = run_worker(index)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        children[pid] = index

    def pass_on(sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = stopping or sig != signal.SIGHUP  # a reload is passed on, and is no stop
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, pass_on)
    for index in range(count):
        start(index)
    log.info("supervising %d workers (pids %s)", count, " ".join(map(str, children)))
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, -1)
        code = os.waitstatus_to_exitcode(wait_status)
        if code == 0:
            continue
        shown = f"signal {-code}" if code < 0 else f"code {code}"
        if stopping or burst or index < 0:
            log.error("worker %d (pid %d) exited with %s", index, pid, shown)
            failed = failed or (code if code > 0 else 1)
            continue
        log.error("worker %d (pid %d) exited with %s; starting another in %.0fs", index, pid, shown,
                  RESTART_DELAY_S)
        time.sleep(RESTART_DELAY_S)
        if not stopping:
            start(index)
    return failed


def _die_with(supervisor: int) -> None:
    """Ask the kernel to send us SIGTERM if the supervisor dies (kill -9), so no worker outlives it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
