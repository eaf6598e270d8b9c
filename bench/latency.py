"""Wake-up latency: from an atomic drop (rename from a staging dir into queue/) to the handler starting.

    python bench/latency.py [--dir DIR | --fs root|journaled|both] [--drops 2000] [--reps 3]
                            [--gap-ms 5,10] [--no-baseline]

How the handler's start is seen, without changing jobrunner: the daemon runs the test kit's ``count``
job type (installed in the venv; one step, no sleep). At the start of its step body it opens
``$JOBRUNNER_TESTKIT_DIR/runs.log`` and appends "<job> <step> <attempt>". Here runs.log is a FIFO whose
read end this script holds, so the append lands in a pipe and wakes this script's ``select()`` at once;
the script stamps it with ``time.time()`` (the same clock it stamped the drop with, just before the
``rename``). That is a resolution of tens of microseconds (a pipe wake-up), where the status file's
``started_at`` has milliseconds and is taken *before* the status file is created and synced, i.e. before
the handler runs; it is reported beside it as a cross-check. The script does nothing but rename and
wait between drops (every request is staged beforehand), so a line is never stamped late because the
script was busy.

Drops are spaced by a random gap (default 5-10 ms) to a running daemon (``jobrunner run``, default
settings), after 20 warm-up drops that are not counted. The baseline is a naive poller in its own
process, measured the same way in the same run: every 100 ms list queue/, rename each file to a claimed
dir, read it, and "start" it by writing the same line to the same FIFO.

Also one run of ``--light-drops`` drops spaced ``--light-gap-ms`` apart: the wake-up path when no other
job's completion happens to wake the daemon. With ``--what-if``, the same two series again with the
daemon's watchdog told not to hold unpaired IN_MOVED_FROM events for 0.5 s (diagnosis only).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import random
import select
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import _common as c  # bench/_common.py (the script's own folder is first on sys.path)

WARMUP = 20

POLLER = r"""
import json, os, sys, time
queue, claimed, fifo = sys.argv[1:4]
while True:
    for name in sorted(os.listdir(queue)):
        if not name.endswith(".json"):
            continue
        try:
            os.rename(os.path.join(queue, name), os.path.join(claimed, name))
        except FileNotFoundError:
            continue
        with open(os.path.join(claimed, name), "rb") as f:
            req = json.loads(f.read())
        fd = os.open(fifo, os.O_WRONLY | os.O_APPEND)  # the handler starts: same record as `count`
        os.write(fd, f"{req['id']} s0 1\n".encode())
        os.close(fd)
    time.sleep(0.1)
"""


class Fifo:
    """The read end of runs.log, plus a write end of our own so that it never reads as EOF."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.keep = os.open(path, os.O_WRONLY)
        self.buf = b""
        self.seen: dict[str, float] = {}

    def pump(self, until: float) -> None:
        """Stamp lines as they arrive, until monotonic time ``until``."""
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                return
            now = time.time()
            with contextlib.suppress(BlockingIOError):
                self.buf += os.read(self.fd, 1 << 16)
            *lines, self.buf = self.buf.split(b"\n")
            for line in lines:
                job = line.split(b" ", 1)[0].decode()
                self.seen.setdefault(job, now)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.keep)


def drop_series(base: Path, tag: str, start: list[str], queue: Path, n: int, gap: tuple[float, float],
                env: dict[str, str]) -> dict[str, object]:
    """Stage n+WARMUP requests, start the system under test, drop them one by one; latencies in ms."""
    stage = base / "stage"
    kit = base / "kit"
    for d in (stage, kit, queue):
        d.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n + WARMUP):
        job = f"lat-{tag}-{i:05d}"
        (stage / f"{job}.json").write_bytes(json.dumps({"type": "count", "steps": 1, "id": job}).encode())
        names.append(job)
    c.syncfs(base)
    fifo = Fifo(kit / "runs.log")
    log = c.log_file(f"latency-{tag}")
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(log, "wb") as err:
            proc = subprocess.Popen(start, stdout=subprocess.DEVNULL, stderr=err,
                                    env={**os.environ, **env, "JOBRUNNER_TESTKIT_DIR": str(kit)})
        if tag == "jobrunner":
            c.wait_for_line(log, " ready: ", proc, 30)
        else:
            time.sleep(0.3)
        dropped: dict[str, float] = {}
        rng = random.Random(42)
        next_at = time.monotonic() + 0.2
        for job in names:
            fifo.pump(next_at)
            t = time.time()
            os.rename(stage / f"{job}.json", queue / f"{job}.json")
            dropped[job] = t
            next_at = time.monotonic() + rng.uniform(*gap)
        deadline = time.monotonic() + 15
        while len(fifo.seen) < len(names) and time.monotonic() < deadline:
            fifo.pump(min(deadline, time.monotonic() + 0.1))
        if proc.poll() is not None:
            raise RuntimeError(f"{tag} exited early ({proc.returncode}); log: {log}")
    finally:
        cpu = c.stop(proc) if proc is not None else None
        fifo.close()
    counted = names[WARMUP:]
    in_order = [1000 * (fifo.seen[j] - dropped[j]) for j in counted if j in fifo.seen]
    lat = sorted(in_order)
    quarter = max(1, len(in_order) // 4)
    out: dict[str, object] = {"lat": lat, "missing": sum(1 for j in counted if j not in fifo.seen),
                              # queueing shows as latency growing over the series
                              "first_q_p50": c.percentile(sorted(in_order[:quarter]), 50),
                              "last_q_p50": c.percentile(sorted(in_order[-quarter:]), 50),
                              "cpu_ms_per_job": 1000 * cpu / len(names) if cpu is not None else float("nan")}
    if tag == "jobrunner":
        by_status = []
        for j in counted:
            with contextlib.suppress(OSError, ValueError, KeyError):
                doc = json.loads((queue.parent / "jobs" / f"{j}.json").read_bytes())
                started = datetime.fromisoformat(doc["started_at"].replace("Z", "+00:00")).timestamp()
                by_status.append(1000 * (started - dropped[j]))
        out["status_lat"] = sorted(by_status)
        repeated = find_violations(base / "kit")
        if repeated:
            raise RuntimeError(f"the test kit saw completed steps run again: {repeated}")
    log.unlink()
    return out


def find_violations(kit: Path) -> str:
    try:
        return (kit / "violations.log").read_text()
    except FileNotFoundError:
        return ""


WHAT_IF = """# written by bench/latency.py --what-if: not part of jobrunner
try:
    from watchdog.observers import inotify_move_event_grouper as _g

    _g.InotifyMoveEventGrouper.delay = 0  # no 0.5 s hold of unpaired moved-from events
except Exception:
    pass
"""


def what_if_env() -> dict[str, str]:
    """PYTHONPATH with a sitecustomize that sets watchdog's move-pairing hold to 0 in the daemon."""
    folder = tempfile.mkdtemp(prefix="jobrunner-bench-whatif-")
    atexit.register(shutil.rmtree, folder, True)
    Path(folder, "sitecustomize.py").write_text(WHAT_IF)
    old = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": folder + (os.pathsep + old if old else "")}


def run_one(base: Path, name: str, system: str, drops: int, gap: tuple[float, float]) -> dict[str, object]:
    work = base / name
    data = work / "data"
    try:
        if system.startswith("jobrunner"):
            cmd = [*c.jobrunner_cmd(), "run", "--data-dir", str(data)]
            env = {"JOBRUNNER_DATA_DIR": str(data), **(what_if_env() if system == "jobrunner-what-if" else {})}
            return drop_series(work, "jobrunner", cmd, data / "queue", drops, gap, env)
        claimed = work / "claimed"
        claimed.mkdir(parents=True)
        cmd = [sys.executable, "-c", POLLER, str(data / "queue"), str(claimed), str(work / "kit" / "runs.log")]
        return drop_series(work, system, cmd, data / "queue", drops, gap, {})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_fs(label: str, base: Path, args: argparse.Namespace) -> None:
    print(f"## {label}: {c.fs_note(base)}")
    lo, hi = args.gap_ms
    print(f"{args.drops} drops per run (+{WARMUP} warm-up), {lo:g}-{hi:g} ms apart, {args.reps} repetitions"
          + (f"; then one run of {args.light_drops} drops {args.light_gap_ms[0]:g}-{args.light_gap_ms[1]:g} ms "
             "apart (the wake-up path without a backlog)" if args.light_drops else ""))
    series = [(f"jobrunner, {lo:g}-{hi:g} ms apart", "jobrunner")]
    if not args.no_baseline:
        series.append((f"poll-100ms, {lo:g}-{hi:g} ms apart", "poll-100ms"))
    res: dict[str, list[dict[str, object]]] = {title: [] for title, _ in series}
    runs = [(rep, title, system, args.drops, (lo / 1000, hi / 1000))
            for rep in range(args.reps) for title, system in (series if rep % 2 == 0 else series[::-1])]
    if args.light_drops:
        llo, lhi = args.light_gap_ms
        title = f"jobrunner, {llo:g}-{lhi:g} ms apart"
        res[title] = []
        runs.append((0, title, "jobrunner", args.light_drops, (llo / 1000, lhi / 1000)))
    if args.what_if:
        for (a, b), drops in (((lo, hi), args.drops), (args.light_gap_ms, args.light_drops or 300)):
            title = f"what-if: no watchdog move hold, {a:g}-{b:g} ms apart"
            res[title] = []
            runs.append((0, title, "jobrunner-what-if", drops, (a / 1000, b / 1000)))
    for i, (rep, title, system, drops, gap) in enumerate(runs):
        r = run_one(base, f"run{i}", system, drops, gap)
        res[title].append(r)
        lat = r["lat"]
        assert isinstance(lat, list)
        print(f"  rep {rep + 1} {title}: p50 {c.percentile(lat, 50):.2f} ms, p99 {c.percentile(lat, 99):.2f} ms,"
              f" max {max(lat):.1f} ms, missing {r['missing']}; p50 of the first/last quarter of drops "
              f"{r['first_q_p50']:.1f}/{r['last_q_p50']:.1f} ms; CPU {r['cpu_ms_per_job']:.2f} ms/job",
              flush=True)
    print()
    rows = []
    for title, rs in res.items():
        for key, what in (("lat", "handler start (FIFO stamp)"), ("status_lat", "status started_at (ms)")):
            xs: list[list[float]] = [r[key] for r in rs if key in r]  # type: ignore[misc]
            if not xs:
                continue
            rows.append([title, what] + [c.spread([c.percentile(x, q) for x in xs], "{:.2f}") for q in (50, 90, 99)]
                        + [c.spread([max(x) for x in xs], "{:.1f}"), len(xs),
                           sum(int(r["missing"]) for r in rs)])  # type: ignore[call-overload]
    c.table(rows, ["system, drops", "measured at", "p50 ms", "p90 ms", "p99 ms", "max ms", "runs", "missing"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_fs_args(p)
    p.add_argument("--drops", type=int, default=2000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--gap-ms", type=lambda s: tuple(float(x) for x in s.split(",")), default=(5.0, 10.0))
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--what-if", action="store_true",
                   help="also run the daemon with watchdog's 0.5 s hold of unpaired moved-from events set to 0 (a "
                        "sitecustomize on its PYTHONPATH; jobrunner unchanged): shows what that hold costs")
    p.add_argument("--light-drops", type=int, default=300, help="0 to skip the widely spaced run")
    p.add_argument("--light-gap-ms", type=lambda s: tuple(float(x) for x in s.split(",")), default=(30.0, 60.0))
    args = p.parse_args()
    c.setup(args)
    c.header("wake-up latency: atomic drop -> handler start")
    print("cells: median over repetitions (min-max); each repetition's percentile is over its drops\n")
    for label, ctx in c.filesystems(args):
        with ctx as base:
            measure_fs(label, base, args)


if __name__ == "__main__":
    main()
