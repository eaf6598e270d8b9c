"""Daemon memory and start-up with a large backlog.

    python bench/rss.py [--dir DIR | --fs root|journaled|both] [--backlog 100000] [--reps 3]
                        [--max-drain-s 150]

Per filesystem, each in a fresh data dir:
1. idle: ``jobrunner run`` on an empty data dir; VmRSS and VmHWM (from /proc/PID/status) 3 s after its
   ``ready:`` line, then SIGTERM.
2. start-up with a backlog: ``--backlog`` files ``{"type": "noop"}`` written into queue/ and flushed (not
   timed); ``jobrunner run`` is started and the time from process start to its ``ready:`` line is taken
   (the line's own timestamp, ms), with VmRSS at that moment; then SIGTERM. Repeated ``--reps`` times,
   the queue topped up to the full backlog between runs.
3. peak while draining: ``jobrunner run --burst`` on the backlog, /proc/PID/status sampled every 100 ms;
   the peak is the kernel's own high-water mark (ru_maxrss from wait4, the same as VmHWM at exit). The
   drain is stopped (SIGTERM) after ``--max-drain-s`` seconds if it has not finished; the table then says
   how many jobs it had completed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

import _common as c  # bench/_common.py (the script's own folder is first on sys.path)


def proc_mem(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def start(data: Path, log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], float]:
    with open(log, "wb") as err:
        t0 = time.time()
        proc = subprocess.Popen([*c.jobrunner_cmd(), "run", "--data-dir", str(data), *extra],
                                stdout=subprocess.DEVNULL, stderr=err)
    return proc, t0


def idle(base: Path) -> dict[str, float]:
    data = base / "idle"
    log = c.log_file("rss-idle")
    proc, _ = start(data, log)
    try:
        c.wait_for_line(log, " ready: ", proc, 30)
        time.sleep(3)
        mem = proc_mem(proc.pid)
    finally:
        c.stop(proc)
    log.unlink()
    shutil.rmtree(data, ignore_errors=True)
    return mem


def top_up(queue: Path, n: int, rep: int) -> int:
    have = sum(1 for e in os.scandir(queue) if e.name.endswith(".json"))
    if have < n:
        c.write_noops(queue, n - have, prefix=f"topup{rep}")
    return n - have


def ready_times(base: Path, n: int, reps: int) -> list[dict[str, float]]:
    data = base / "backlog"
    out = []
    for rep in range(reps):
        top_up(data / "queue", n, rep)
        c.syncfs(base)
        log = c.log_file("rss-ready")
        proc, t0 = start(data, log)
        try:
            line = c.wait_for_line(log, " ready: ", proc, 120)
            mem = proc_mem(proc.pid)
        finally:
            c.stop(proc, timeout=60)
        ready = c.log_time(line)
        assert ready is not None
        out.append({"ready_s": ready - t0, "rss_mb": mem.get("VmRSS", float("nan")),
                    "hwm_mb": mem.get("VmHWM", float("nan"))})
        print(f"  start-up {rep + 1}: ready after {ready - t0:.2f} s, VmRSS {mem.get('VmRSS', 0):.1f} MB",
              flush=True)
        log.unlink()
    return out


def drain(base: Path, n: int, max_s: float) -> dict[str, float]:
    data = base / "backlog"
    top_up(data / "queue", n, 99)
    c.syncfs(base)
    log = c.log_file("rss-drain")
    proc, t0 = start(data, log, "--burst")
    samples: list[tuple[float, float]] = []
    capped = False
    while True:
        pid, wstatus, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        mem = proc_mem(proc.pid)
        if "VmRSS" in mem:
            samples.append((time.time() - t0, mem["VmRSS"]))
        if time.time() - t0 > max_s and not capped:
            capped = True
            proc.terminate()
        time.sleep(0.1)
    t1 = time.time()
    proc.returncode = os.waitstatus_to_exitcode(wstatus)
    done = c.stopped_stats(log).get("completed", 0)
    ready_line = c.find_line(log, " ready: ")
    ready = c.log_time(ready_line) if ready_line else None
    log.unlink()
    def at(frac: float) -> float:  # the sample nearest to that fraction of the run
        if not samples:
            return float("nan")
        return min(samples, key=lambda s: abs(s[0] - (t1 - t0) * frac))[1]

    quarter = [at(q) for q in (0.25, 0.5, 0.75)]
    return {"peak_mb": ru.ru_maxrss / 1024, "sampled_max_mb": max((r for _, r in samples), default=float("nan")),
            "done": done, "seconds": t1 - t0, "capped": float(capped),
            "ready_s": (ready - t0) if ready else float("nan"),
            "q25": quarter[0], "q50": quarter[1], "q75": quarter[2],
            "end_mb": samples[-1][1] if samples else float("nan")}


def measure_fs(label: str, base: Path, args: argparse.Namespace) -> None:
    print(f"## {label}: {c.fs_note(base)}")
    mem_idle = idle(base)
    print(f"  idle: VmRSS {mem_idle.get('VmRSS', 0):.1f} MB, VmHWM {mem_idle.get('VmHWM', 0):.1f} MB", flush=True)
    t = time.perf_counter()
    c.write_noops(base / "backlog" / "queue", args.backlog)
    c.syncfs(base)
    print(f"  wrote a backlog of {args.backlog} files in {time.perf_counter() - t:.1f} s (set-up)", flush=True)
    rt = ready_times(base, args.backlog, args.reps)
    d = drain(base, args.backlog, args.max_drain_s)
    how = (f"stopped after {d['seconds']:.0f} s (cap), {d['done']:.0f} of {args.backlog} done" if d["capped"]
           else f"all {d['done']:.0f} done in {d['seconds']:.0f} s")
    print(f"  drain: {how}; peak {d['peak_mb']:.1f} MB\n", flush=True)
    rows = [
        ["idle (empty data dir, 3 s after ready)", f"{mem_idle.get('VmRSS', float('nan')):.1f}",
         f"{mem_idle.get('VmHWM', float('nan')):.1f}", "-"],
        [f"at ready with {args.backlog} queued", c.spread([r["rss_mb"] for r in rt], "{:.1f}"),
         c.spread([r["hwm_mb"] for r in rt], "{:.1f}"), c.spread([r["ready_s"] for r in rt], "{:.2f}")],
        [f"draining ({how}): at 25/50/75% of the run", f"{d['q25']:.1f} / {d['q50']:.1f} / {d['q75']:.1f}",
         "-", f"{d['ready_s']:.2f}"],
        ["draining: peak (ru_maxrss) / last sample", f"{d['end_mb']:.1f} (last)", f"{d['peak_mb']:.1f}", "-"],
    ]
    c.table(rows, ["daemon state", "VmRSS MB", "peak (VmHWM) MB", "start -> ready s"])
    shutil.rmtree(base / "backlog", ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_fs_args(p)
    p.add_argument("--backlog", type=int, default=100_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--max-drain-s", type=float, default=150.0)
    args = p.parse_args()
    c.setup(args)
    c.header("daemon RSS and start-up with a backlog")
    print("cells with several runs: median (min-max)\n")
    for label, ctx in c.filesystems(args):
        with ctx as base:
            measure_fs(label, base, args)


if __name__ == "__main__":
    main()
