"""`jobrunner status` with a large history: 100,000 finished jobs on disk.

    python bench/status.py [--dir DIR | --fs root|journaled|both] [--jobs 100000] [--reps 5] [--profile]

The data dir is generated directly in jobrunner's formats (not timed): for each finished job a status
file ``jobs/<id>.json`` written from a ``jobrunner.status.JobStatus`` built like the daemon builds it
(``.dump()`` bytes; ~90% completed, ~8% failed after 4 attempts with an error, ~2% cancelled; one to four
history records; metadata), its mtime set to its ``updated_at`` (spread over 7 days), and its
request file where the current ``Layout.request(id)`` keeps a final job's request. Besides the history,
a realistic amount of live work: 16 running jobs (their requests where the layout keeps accepted ones),
100 deferred (pending) jobs, and 500 request files waiting in queue/. If this jobrunner keeps a
``jobs/.recent`` index, it is written as the daemon writes it (``index.note`` at each settled state
change, in time order), and if it keeps a ``jobs/.ledger``, a line per final job in finish order.

Timed, warm page cache (one untimed run first), each ``--reps`` times, median (min-max):
- wall time of the CLI process: ``jobrunner status --limit 50`` and ``jobrunner status --active``
  (stdout to a pipe, read by this script), with a ``jobs/.ledger``: ``jobrunner stats`` (24h, all, 7d as
  JSON) and ``jobrunner status`` with filters (--status, --type, --since), and ``jobrunner --help``,
  ``python -c pass`` (the floor), ``python -c 'import jobrunner.cli'``;
- in-process time of the listings alone: ``latest(layout, 50)`` and ``active(layout)`` of the module the
  CLI lists with (``jobrunner.listing``, or ``jobrunner.control`` in older versions);
- ``python -X importtime -c 'import jobrunner.cli'``: the costliest imports.
With --profile, a cProfile of each listing (top functions by cumulative time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _common as c  # bench/_common.py (the script's own folder is first on sys.path)

# jobrunner itself is imported inside the functions: after --commit has chosen which jobrunner to import


def generate(root: Path, n: int) -> dict[str, float]:
    from jobrunner.layout import Layout
    from jobrunner.status import AttemptRecord, ErrorInfo, JobStatus, Progress, State

    layout = Layout(root)
    layout.ensure()
    rng = random.Random(7)
    worker = "20261201T080000-4242-a1b2c3"
    end = datetime.now(UTC) - timedelta(minutes=5)
    start = end - timedelta(days=7)
    step = (end - start) / n
    t = time.perf_counter()
    req_flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    made: set[Path] = set()
    settled: list[tuple[datetime, str]] = []
    try:
        from jobrunner import ledger
    except ImportError:
        ledger = None  # type: ignore[assignment]
    ledger_lines: list[tuple[datetime, bytes]] = []
    for i in range(n):
        created = start + step * i
        started = created + timedelta(milliseconds=rng.uniform(1, 50))
        ended = started + timedelta(seconds=rng.uniform(0.05, 30))
        job_id = f"{created:%Y%m%d-%H%M%S-%f}-{0x10000 + i:x}"
        roll = rng.random()
        src = f"{job_id}.{rng.getrandbits(24):06x}.json"
        meta = {"client": "batch-importer", "batch": i // 1000, "row": i}
        history: list[AttemptRecord] = []
        error = None
        if roll < 0.90:
            state, attempts = State.COMPLETED, 1 if rng.random() < 0.9 else 2
        elif roll < 0.98:
            state, attempts = State.FAILED, 4
            error = ErrorInfo(type="ProviderError", message="provider answered 503 Service Unavailable",
                              retryable=False)
        else:
            state, attempts = State.CANCELLED, 1
            error = ErrorInfo(type="Cancelled", message="cancelled on request", retryable=False)
        for a in range(1, attempts + 1):
            last = a == attempts
            outcome = {State.COMPLETED: "completed", State.FAILED: "failed", State.CANCELLED: "cancelled"}[state]
            history.append(AttemptRecord(
                attempt=a, worker=worker, started_at=started, ended_at=ended if last else started,
                outcome=outcome if last else "retry",
                error=None if last and state == State.COMPLETED else (error or ErrorInfo(
                    type="ProviderError", message="provider answered 503", retryable=True)),
                delay_s=None if last else round(5.0 * 2 ** (a - 1), 3)))
        doc = JobStatus(
            id=job_id, type="noop", status=state, progress=Progress.of(1, 1) if state == State.COMPLETED
            else Progress.of(0, 1), attempt=attempts, max_attempts=4, created_at=created, started_at=started,
            attempt_started_at=started, updated_at=ended, finished_at=ended, worker=worker,
            claim=f"{worker}/{src}", source=src, metadata=meta,
            result={"steps": 0} if state == State.COMPLETED else None, error=error, history=history)
        settled.extend((h.ended_at, job_id) for h in history)
        if ledger is not None:
            ledger_lines.append((ended, ledger.line_of(doc)))
        path = layout.jobs / f"{job_id}.json"
        fd = os.open(path, req_flags, 0o644)
        os.write(fd, doc.dump())
        os.close(fd)
        stamp = int(ended.timestamp() * 1e9)
        os.utime(path, ns=(stamp, stamp))
        request = layout.request(job_id)  # wherever the current layout keeps a final job's request
        if request.parent not in made:
            request.parent.mkdir(parents=True, exist_ok=True)
            made.add(request.parent)
        fd = os.open(request, req_flags, 0o644)
        os.write(fd, json.dumps({"type": "noop", "id": job_id, "metadata": meta}).encode())
        os.close(fd)
    # jobs/.recent, if this jobrunner keeps one: the daemon notes a job at each settled state change (each
    # retry and the final state), in time order; written with jobrunner's own index.note
    notes = 0
    try:
        from jobrunner import index
    except ImportError:
        index = None  # type: ignore[assignment]
    if index is not None and hasattr(index, "note"):
        for _, job_id in sorted(settled):
            index.note(layout, job_id)
            notes += 1
    # jobs/.ledger, if this jobrunner keeps one: a line per final job, appended after each group commit (in
    # finish order, here 64 jobs a write, as a busy daemon's batches)
    if ledger is not None:
        ledger_lines.sort(key=lambda pair: pair[0])
        fd = os.open(layout.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        for k in range(0, len(ledger_lines), 64):
            os.write(fd, b"".join(line for _, line in ledger_lines[k:k + 64]))
        os.close(fd)
    gen_s = time.perf_counter() - t
    # live work: 16 running (claimed by a daemon), 100 deferred, 500 waiting in the queue
    now = datetime.now(UTC)
    live = "20261203T090000-5151-d4e5f6"
    (layout.claimed / f"{live}.lock").write_text("5151\n")
    layout.worker_dir(live).mkdir(exist_ok=True)
    active_dir = getattr(layout, "active", None)  # newer layouts: accepted requests in queue/.active/<id>.json
    if isinstance(active_dir, Path):
        active_dir.mkdir(exist_ok=True)
    for i in range(16):
        job_id = f"run-{i:03d}"
        where = (active_dir / f"{job_id}.json" if isinstance(active_dir, Path)
                 else layout.worker_dir(live) / f"{job_id}.aa{i:04x}.json")
        where.write_text(json.dumps({"type": "noop", "id": job_id}))
        doc = JobStatus(id=job_id, type="noop", status=State.RUNNING, attempt=1, created_at=now, started_at=now,
                        updated_at=now, worker=live, claim=f"{live}/{job_id}.aa{i:04x}.json")
        (layout.jobs / f"{job_id}.json").write_bytes(doc.dump())
    for i in range(100):
        job_id = f"def-{i:03d}"
        due = now + timedelta(seconds=30 + i)
        (layout.deferred / f"{job_id}.json").write_text(json.dumps({"type": "noop", "id": job_id}))
        os.utime(layout.deferred / f"{job_id}.json", (due.timestamp(), due.timestamp()))
        doc = JobStatus(id=job_id, type="noop", status=State.PENDING, attempt=1, created_at=now, updated_at=now,
                        next_attempt_at=due, error=ErrorInfo(type="ProviderError", message="503", retryable=True))
        (layout.jobs / f"{job_id}.json").write_bytes(doc.dump())
    for i in range(500):
        (layout.queue / f"q-{i:04d}.json").write_text('{"type": "noop"}')
    c.syncfs(root)
    return {"gen_s": gen_s, "notes": notes, "ledger": len(ledger_lines)}


def wall(cmd: list[str], reps: int) -> list[float]:
    out = []
    for i in range(reps + 1):  # the first is a warm-up, untimed
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, check=False, cwd="/")  # no ./jobrunner on sys.path
        took = 1000 * (time.perf_counter() - t)
        if done.returncode != 0:
            raise RuntimeError(f"{cmd} exited {done.returncode}:\n{done.stderr.decode(errors='replace')[-3000:]}")
        if i:
            out.append(took)
    return out


def inproc(fn: object, reps: int) -> list[float]:
    fn()  # type: ignore[operator]
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(1000 * (time.perf_counter() - t))
    return out


def profile(fn: object, title: str) -> None:
    prof = cProfile.Profile()
    prof.enable()
    fn()  # type: ignore[operator]
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(14)
    text = s.getvalue()
    print(f"cProfile of {title} (top by cumulative time):")
    print("```")
    print("\n".join(line for line in text.splitlines()[4:] if line.strip()))
    print("```\n")


def importtime() -> None:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import jobrunner.cli"],
                         capture_output=True, text=True, check=True, cwd="/").stderr
    rows = []
    for line in out.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append((int(self_us.strip()), int(cum_us.strip()), depth, name.strip()))
    total = sum(r[0] for r in rows)
    print(f"`python -X importtime -c 'import jobrunner.cli'`: {total / 1000:.0f} ms of imports in all "
          f"({len(rows)} modules).\n")
    by_pkg: dict[str, list[int]] = {}
    for self_us, _, _, name in rows:
        top = name.split(".")[0]
        by_pkg.setdefault(top, [0, 0])
        by_pkg[top][0] += self_us
        by_pkg[top][1] += 1
    print("Import time by top-level package (sum of self times):")
    c.table([[pkg, n, f"{us / 1000:.1f}", f"{100 * us / total:.0f}%"]
             for pkg, (us, n) in sorted(by_pkg.items(), key=lambda kv: -kv[1][0])[:10]],
            ["package", "modules", "self ms", "share"])
    print("jobrunner's own modules as an import tree (a module above the ones it imported first; cumulative "
          "includes those):")
    c.table([["  " * depth + name, f"{cum / 1000:.1f}", f"{self_us / 1000:.1f}"]
             for self_us, cum, depth, name in reversed(rows) if name.startswith("jobrunner") and cum >= 1000],
            ["module (indent = imported by the line above)", "cumulative ms", "self ms"])


def listing_module() -> tuple[object, str]:
    """The module `jobrunner status` lists with: ``jobrunner.listing`` in newer versions, else ``control``."""
    try:
        from jobrunner import listing

        return listing, "listing"
    except ImportError:
        from jobrunner import control

        return control, "control"


def measure_fs(label: str, base: Path, args: argparse.Namespace) -> None:
    from jobrunner.layout import Layout

    mod, mod_name = listing_module()
    latest, active = mod.latest, mod.active  # type: ignore[attr-defined]

    print(f"## {label}: {c.fs_note(base)}")
    root = base / "data"
    g = generate(root, args.jobs)
    entries = sum(1 for _ in os.scandir(root / "jobs"))
    print(f"generated {args.jobs} finished jobs ({entries} entries in jobs/"
          + (f", {g['notes']:.0f} lines in jobs/.recent" if g["notes"] else ", no jobs/.recent index")
          + (f", {g['ledger']:.0f} lines in jobs/.ledger" if g.get("ledger") else "")
          + f") in {g['gen_s']:.1f} s (set-up, not timed); {args.reps} timed runs each after one warm-up\n")
    jr = c.jobrunner_cmd()
    layout = Layout(root)
    rows = []
    for title, cmd in (
        ("jobrunner status --limit 50", [*jr, "status", "--data-dir", str(root), "--limit", "50"]),
        ("jobrunner status --active", [*jr, "status", "--data-dir", str(root), "--active"]),
        *(((title, [*jr, *cmd[:1], "--data-dir", str(root), *cmd[1:]]) for title, cmd in (
            ("jobrunner stats (--since 24h)", ["stats"]),
            ("jobrunner stats --since all", ["stats", "--since", "all"]),
            ("jobrunner stats --since 7d --json", ["stats", "--since", "7d", "--json"]),
            ("jobrunner status --status failed", ["status", "--status", "failed"]),
            ("jobrunner status --status completed --type noop --since 24h --json",
             ["status", "--status", "completed", "--type", "noop", "--since", "24h", "--json"]),
            ("jobrunner status --status cancelled --since all --limit 500",
             ["status", "--status", "cancelled", "--since", "all", "--limit", "500"]),
        )) if g.get("ledger") else ()),
        ("jobrunner --help", [*jr, "--help"]),
        ("python -c pass (interpreter floor)", [sys.executable, "-c", "pass"]),
        ("python -c 'import jobrunner.cli'", [sys.executable, "-c", "import jobrunner.cli"]),
    ):
        rows.append([title, "CLI process wall", c.spread(wall(cmd, args.reps), "{:.1f}")])
    rows.append([f"{mod_name}.latest(layout, 50)", "in-process",
                 c.spread(inproc(lambda: latest(layout, 50), args.reps), "{:.2f}")])
    rows.append([f"{mod_name}.active(layout)", "in-process",
                 c.spread(inproc(lambda: active(layout), args.reps), "{:.2f}")])
    if g.get("ledger"):
        from jobrunner import ledger, stats

        rows.append(["ledger.read(layout) (all lines)", "in-process",
                     c.spread(inproc(lambda: ledger.read(layout), args.reps), "{:.2f}")])
        rows.append(["stats.compute(layout, window_s=None)", "in-process",
                     c.spread(inproc(lambda: stats.compute(layout, window_s=None), args.reps), "{:.2f}")])
    c.table(rows, ["what", "measured", "ms: median (min-max)"])
    if args.profile:
        profile(lambda: latest(layout, 50), f"{mod_name}.latest(layout, 50)")
        profile(lambda: active(layout), f"{mod_name}.active(layout)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_fs_args(p)
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    c.setup(args)
    c.header("jobrunner status with 100,000 finished jobs")
    importtime()
    for label, ctx in c.filesystems(args):
        with ctx as base:
            measure_fs(label, base, args)


if __name__ == "__main__":
    main()
