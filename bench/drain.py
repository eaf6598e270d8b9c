"""Drain throughput: N queued no-op jobs, with full durability, against huey and persist-queue.

    python bench/drain.py [--dir DIR | --fs root|journaled|both] [--jobs 10000] [--reps 3]
                          [--concurrency 16,64] [--workers 1,2] [--peers huey,huey x2,...]

For each filesystem and each repetition, in a fresh directory each, in a rotating order:

- jobrunner: N files ``{"type": "noop"}`` written straight into queue/ and flushed (set-up, not timed);
  then ``jobrunner run --burst --data-dir D --concurrency C --workers W`` is timed from process start to
  exit (W worker processes share the data dir; CPU counts all of them).
  "after ready" divides N by the time from the daemon's ``ready:`` log line to exit (start-up excluded:
  interpreter, imports, recovery and the first scan of the queue). Every job is checked to have completed.
- huey: ``SqliteHuey(fsync=True)`` (WAL, ``synchronous=FULL``: every dequeue commit is fsynced). N no-op
  tasks are enqueued with synchronous=OFF and flushed (not timed); then huey's own ``dequeue()`` +
  ``execute()`` loop drains them in one process (one task at a time; a dequeued task is deleted from the
  queue before it runs, so huey is at-most-once where jobrunner is at-least-once).
- huey x2: the same, with two processes running that loop at once on one queue: what huey gets from a
  second core, the fair peer of ``--workers 2``.
- persist-queue: ``SQLiteAckQueue(auto_commit=True)`` (WAL, ``synchronous=FULL`` set explicitly: the
  ``get`` (mark unack) and the ``ack`` are each a fsynced commit, so a crash loses nothing). N items are
  put with synchronous=OFF and flushed (not timed); then get(raw=True)+ack(id) of all is timed.
- file-spool sketch: the floor the disk sets for a file spool keeping jobrunner's invariants (claim by
  rename, status written to a temp file, synced, renamed into jobs/, synced; request moved aside, never
  unlinked), 64 jobs per group of three syncfs calls, one thread, no framework. Not a product: it shows
  how much of the gap to huey is the filesystem and how much is jobrunner.

Peers run in their own processes. Ratios are taken between runs of the same repetition (same filesystem,
minutes apart), then the median ratio is reported, with its spread.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _common as c  # bench/_common.py (the script's own folder is first on sys.path)


# ---------------------------------------------------------------------------------------------- peers
def peer_huey(work: Path, n: int) -> dict[str, float]:
    from huey import SqliteHuey

    db = work / "huey.db"
    huey = SqliteHuey("bench", filename=str(db), fsync=True)

    @huey.task()
    def noop() -> None:
        return None

    conn = huey.storage.conn
    conn.execute("pragma synchronous=OFF")  # set-up only
    t = time.perf_counter()
    for _ in range(n):
        noop()
    setup = time.perf_counter() - t
    conn.execute("pragma synchronous=FULL")
    assert conn.execute("pragma synchronous").fetchone()[0] == 2
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    c.syncfs(work)
    cpu0 = os.times()
    t = time.perf_counter()
    done = 0
    while True:
        task = huey.dequeue()
        if task is None:
            break
        huey.execute(task)
        done += 1
    secs = time.perf_counter() - t
    cpu1 = os.times()
    huey.storage.close()
    assert done == n, (done, n)
    return {"seconds": secs, "done": done, "setup_s": setup,
            "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)}


def peer_huey_x2(work: Path, n: int) -> dict[str, float]:
    """huey's dequeue loop in two processes at once on one queue (the same set-up as ``huey``): what huey
    gets from a second core, to compare with ``jobrunner run --workers 2``."""
    from huey import SqliteHuey

    db = work / "huey.db"
    huey = SqliteHuey("bench", filename=str(db), fsync=True)

    @huey.task()
    def noop() -> None:
        return None

    conn = huey.storage.conn
    conn.execute("pragma synchronous=OFF")  # set-up only
    t = time.perf_counter()
    for _ in range(n):
        noop()
    setup = time.perf_counter() - t
    huey.storage.close()
    c.syncfs(work)
    r, w = os.pipe()
    pids = []
    cpu0 = os.times()
    t = time.perf_counter()
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            done = 0
            try:
                huey.storage.conn.execute("pragma synchronous=FULL")  # this process's own connection
                while True:
                    task = huey.dequeue()
                    if task is None:
                        break
                    huey.execute(task)
                    done += 1
                os.write(w, f"{done}\n".encode())
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    secs = time.perf_counter() - t
    cpu1 = os.times()
    os.close(w)
    with os.fdopen(r) as f:
        done = sum(int(x) for x in f.read().split())
    assert done == n, (done, n)
    return {"seconds": secs, "done": done, "setup_s": setup,
            "cpu_s": (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)}


def peer_persist_queue(work: Path, n: int) -> dict[str, float]:
    from persistqueue import SQLiteAckQueue
    from persistqueue.exceptions import Empty

    q = SQLiteAckQueue(str(work / "pq"), auto_commit=True, multithreading=False)
    conn = q._conn  # one connection when multithreading=False (getter and putter alike)
    conn.execute("PRAGMA synchronous=OFF")  # set-up only
    t = time.perf_counter()
    for i in range(n):
        q.put({"type": "noop", "n": i})
    setup = time.perf_counter() - t
    conn.execute("PRAGMA synchronous=FULL")
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    c.syncfs(work)
    cpu0 = os.times()
    t = time.perf_counter()
    done = 0
    while True:
        try:
            item = q.get(block=False, raw=True)
        except Empty:
            break
        q.ack(id=item["pqid"])
        done += 1
    secs = time.perf_counter() - t
    cpu1 = os.times()
    assert q.acked_count() == n, (q.acked_count(), n)
    q.close()
    return {"seconds": secs, "done": done, "setup_s": setup,
            "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)}


def peer_sketch(work: Path, n: int) -> dict[str, float]:
    """What the disk allows a file spool with jobrunner's invariants, with no framework around it: claim
    64 files by rename, one syncfs; read and parse each, write its (final) status to a temp file, one
    syncfs; rename the statuses into jobs/ and the requests aside into .done/, one syncfs. One thread."""
    queue, jobs = work / "queue", work / "jobs"
    claimed, done, tmp = queue / ".claimed", queue / ".done", jobs / ".tmp"
    c.write_noops(queue, n)
    for d in (claimed, done, tmp):
        d.mkdir(parents=True)
    c.syncfs(work)
    dfd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    cpu0 = os.times()
    t = time.perf_counter()
    count = 0
    while True:
        names = sorted(e.name for e in os.scandir(queue) if e.name.endswith(".json"))
        if not names:
            break
        for i in range(0, len(names), 64):
            batch = names[i:i + 64]
            for name in batch:
                os.rename(queue / name, claimed / name)
            c._libc.syncfs(dfd)
            staged = []
            for name in batch:
                request = json.loads((claimed / name).read_bytes())
                job_id = name[:-5]
                doc = {"schema": 1, "id": job_id, "type": request["type"], "status": "completed", "attempt": 1,
                       "finished_at": time.time()}
                tmp_path = tmp / f"{job_id}.json.tmp"
                fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, json.dumps(doc, indent=1).encode())
                os.close(fd)
                staged.append((name, job_id, tmp_path))
            c._libc.syncfs(dfd)
            for name, job_id, tmp_path in staged:
                os.rename(tmp_path, jobs / f"{job_id}.json")
                os.rename(claimed / name, done / name)
                count += 1
            c._libc.syncfs(dfd)
    secs = time.perf_counter() - t
    cpu1 = os.times()
    os.close(dfd)
    assert count == n, (count, n)
    return {"seconds": secs, "done": count, "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)}


PEERS = {"huey": peer_huey, "huey x2": peer_huey_x2, "persist-queue": peer_persist_queue,
         "file-spool sketch": peer_sketch}


def run_peer(name: str, work: Path, n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--_peer", name, "--_work", str(work), "--jobs", str(n)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------------------------------- jobrunner
def run_jobrunner(work: Path, n: int, concurrency: int, workers: int = 1) -> dict[str, float]:
    data = work / "data"
    c.write_noops(data / "queue", n)
    c.syncfs(work)
    log = c.log_file(f"drain-c{concurrency}-w{workers}")
    try:
        with open(log, "wb") as err:
            t0 = time.time()
            proc = subprocess.Popen([*c.jobrunner_cmd(), "run", "--burst", "--data-dir", str(data),
                                     "--concurrency", str(concurrency), "--workers", str(workers)],
                                    stdout=subprocess.DEVNULL, stderr=err)
            _, wstatus, ru = os.wait4(proc.pid, 0)
            t1 = time.time()
            proc.returncode = os.waitstatus_to_exitcode(wstatus)
        if proc.returncode != 0:
            raise RuntimeError(f"jobrunner exited {proc.returncode}; log: {log}")
        ready_lines = c.find_lines(log, " ready: ")  # one per worker: the last one counts
        ready = c.log_time(ready_lines[-1]) if len(ready_lines) == workers else None
        stats = c.stopped_stats(log)
        left = sum(1 for _ in os.scandir(data / "queue") if _.is_file())
        statuses = sum(1 for e in os.scandir(data / "jobs") if e.name.endswith(".json"))
        if stats.get("completed") != n or left or statuses != n:
            raise RuntimeError(f"not all jobs completed: {stats}, {left} left in queue, {statuses} statuses; "
                               f"log: {log}")
        log.unlink()
    except BaseException:
        print(f"(log kept: {log})", file=sys.stderr)
        raise
    return {"seconds": t1 - t0, "done": n, "startup_s": (ready - t0) if ready else float("nan"),
            "after_ready_s": (t1 - ready) if ready else float("nan"), "cpu_s": ru.ru_utime + ru.ru_stime,
            "maxrss_mb": ru.ru_maxrss / 1024}


# ---------------------------------------------------------------------------------------------- driver
def measure_fs(label: str, base: Path, args: argparse.Namespace) -> None:
    systems = [f"jobrunner c={k}" + (f" w={w}" if w > 1 else "") for w in args.workers for k in args.concurrency]
    systems += args.peers
    results: dict[str, list[dict[str, float]]] = {s: [] for s in systems}
    print(f"## {label}: {c.fs_note(base)}")
    print(f"{args.jobs} no-op jobs per run, {args.reps} repetitions; systems in rotating order per repetition")
    print(f"work dirs deleted: {'after each run' if args.cleanup == 'each' else 'after the last run here'}")
    used: list[Path] = []
    for rep in range(args.reps):
        order = systems[rep % len(systems):] + systems[: rep % len(systems)]
        line = []
        for system in order:
            work = base / f"rep{rep}-{system.replace(' ', '').replace('=', '')}"
            work.mkdir()
            used.append(work)
            try:
                if system.startswith("jobrunner"):
                    knobs = dict(part.split("=") for part in system.split()[1:])
                    r = run_jobrunner(work, args.jobs, int(knobs["c"]), int(knobs.get("w", 1)))
                else:
                    r = run_peer(system, work, args.jobs)
            finally:
                if args.cleanup == "each":
                    shutil.rmtree(work, ignore_errors=True)
                c.syncfs(base)
            results[system].append(r)
            line.append(f"{system} {r['done'] / r['seconds']:.0f}/s")
        print(f"  rep {rep + 1}: " + ", ".join(line), flush=True)
    print()
    for work in used:
        shutil.rmtree(work, ignore_errors=True)

    def rate(r: dict[str, float], key: str = "seconds") -> float:
        return r["done"] / r[key]

    rows = []
    for s in systems:
        rs = results[s]
        jr = s.startswith("jobrunner")
        row = [s, c.spread([rate(r) for r in rs]),
               c.spread([rate(r, "after_ready_s") for r in rs]) if jr else "-",
               c.spread([r["startup_s"] for r in rs], "{:.2f}") if jr else "-",
               c.spread([1000 * r["cpu_s"] / r["done"] for r in rs], "{:.2f}")]
        for peer in args.peers:
            ratios = [rate(a) / rate(b) for a, b in zip(rs, results[peer], strict=True)]
            row.append("-" if s == peer else c.spread(ratios, "{:.2f}", unit="x"))
            if peer == "huey" and jr:
                steady = [rate(a, "after_ready_s") / rate(b) for a, b in zip(rs, results[peer], strict=True)]
                row.append(c.spread(steady, "{:.2f}", unit="x"))
            elif peer == "huey":
                row.append("-")
        rows.append(row)
    head = ["system", "jobs/s", "jobs/s after ready", "start-up s", "CPU ms/job"]
    for peer in args.peers:
        head.append(f"/ {peer}")
        if peer == "huey":
            head.append("/ huey, after ready")
    c.table(rows, head)
    print("jobs/s: process start to exit for jobrunner, the timed loop for the others. \"after ready\": "
          "jobrunner's jobs / (exit - ready line). CPU ms/job: user+system CPU of the draining process. \"/ X\": "
          "ratio of jobs/s to X's in the same repetition, median (min-max) over repetitions.\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_fs_args(p)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64])
    p.add_argument("--cleanup", choices=["end", "each"], default="end",
                   help="when to delete the runs' files: after the last run on a filesystem (default), or after "
                        "each run. Deleting tens of thousands of files makes the next file creations slow on a "
                        "filesystem without a journal, which would tax whichever system runs next; a spool "
                        "moves files aside and never deletes them while it runs.")
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                   help="jobrunner run --workers values to measure (each with each --concurrency)")
    p.add_argument("--peers", type=lambda s: [x for x in s.split(",") if x], default=list(PEERS),
                   help="comma-separated subset of: " + ",".join(PEERS))
    p.add_argument("--_peer", help=argparse.SUPPRESS)
    p.add_argument("--_work", help=argparse.SUPPRESS)
    args = p.parse_args()
    c.setup(args)
    if args._peer:
        print(json.dumps(PEERS[args._peer](Path(args._work), args.jobs)))
        return
    c.header("drain throughput: jobrunner vs huey vs persist-queue")
    for label, ctx in c.filesystems(args):
        with ctx as base:
            measure_fs(label, base, args)


if __name__ == "__main__":
    main()
