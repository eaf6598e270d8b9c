"""The ``enrich`` job: throughput against the bound the provider latency sets, daemon memory, and paid
calls per delivered lead against a naive pipeline.

    python bench/enrich.py [--dir DIR | --fs root|journaled|both] [--leads 2000] [--reps 3]
                           [--compare-leads 1000] [--compare-reps 1] [--seed 7] [--what-if] [--commit REV]

Leads (``make_leads``, seeded): distinct people (first x last name from the sandbox's own name lists,
drawn without repetition), each in a city of the sandbox's list with a ZIP of that city. One lead in
three has a phone already: ``(NPA) 555-01XX`` (the fictional block), every number distinct and with an
area code that is no city's, so a given phone never equals another lead's, given or skip-traced. The
other two thirds are skip-traced by name + city, state, ZIP. Skip-traced phones come from the sandbox's
small space (100 numbers per area code of the city), so a few of them are shared between leads: the
table says how many calls the leads needed and how many were bought (a shared call is bought once).

1. Throughput. Per filesystem and repetition, a fresh sandbox (in this process, ``Faults(latency_ms=50)``,
   no rate limit) and a fresh data dir; ``jobrunner run --data-dir D`` with default settings and the
   sandbox's ``Sandbox.env()`` (nothing else: call retries, backoff and concurrency caps at their
   defaults) is started and waited for (``ready:``); then one ``enrich`` job with ``--leads`` leads and
   default options is written next to the queue, flushed, and renamed into queue/ (the submit time is
   taken just before the rename). The status file is polled every 0.2 s until the job is final, and
   /proc/PID/status VmRSS is sampled at the same time, from the daemon's start to its exit; then the
   daemon gets SIGTERM and is reaped with wait4 (ru_maxrss), VmHWM read until it is gone.
   - leads/s: leads / (finished_at - started_at) of the status file, and leads / (finished_at - submit);
   - paid calls: successful answers the sandbox counted (``ok`` of /_stats), per second of the job
     (started_at to finished_at), and per lead ("sequential calls per lead": a lead's calls run one after
     the other, ``concurrency`` leads at a time);
   - the bound: ``concurrency / latency`` calls/s (16 / 0.050 s = 320 calls/s with the defaults), and
     320 / (paid calls per lead) leads/s; "% of bound" is leads/s over that (the same number as paid
     calls/s over 320 calls/s). Target: >= 70%;
   - RSS: the peak of the VmRSS samples, VmHWM (the daemon's own high-water mark) as last read before it
     exited, and ru_maxrss from wait4. Target: < 150 MB, judged on the first two: Linux carries a
     process's pre-exec high-water mark into ru_maxrss, so a daemon spawned by this (larger, sandbox-
     holding) process reports at least this process's RSS there;
   - CPU, from the submit to the poll that saw the job final: the daemon's (/proc/PID/stat), its main
     thread's, which runs the event loop (/proc/PID/task/PID/stat), and this process's (the sandbox's
     server threads and the polling), per paid call and over the wall time: a loop thread near 100% is
     a daemon bound by its own CPU, not by the providers;
   - the calls the leads needed (by jobrunner's rules, lead by lead, from the results) beside those paid
     for: the difference is what sharing saved (two leads, one phone or one person: one call);
   - the job's own ``result`` counters (calls, retries, rate_wait_s).
   With ``--what-if``, each repetition also runs a daemon whose ``import sniffio`` succeeds (a stub put
   in sys.modules by a sitecustomize on its PYTHONPATH; jobrunner itself unchanged): httpcore tries that
   import on every lock and cancellation shield it makes, and without the package each try is a full,
   failing search of sys.path. Diagnosis only; the two series alternate in order.

2. Paid calls per delivered lead, on ``--compare-leads`` seeded leads with 10% transient faults
   (``Faults(error_rate=0.1, latency_ms=2)``, 500/502/503), each system on its own fresh sandbox (the
   same fault seed for both within a repetition) so their counters are separate:
   - jobrunner: the ``enrich`` job, default options, a default ``jobrunner run`` as above;
   - naive: a pipeline in this process (httpx, 16 leads at a time, each lead's calls in sequence) that
     calls every provider for every lead:
       * skip-trace search by name + "City, ST ZIP" (the same request jobrunner makes), for EVERY lead,
         also those that have a phone;
       * the details of the FIRST candidate, whenever there is one (even when several came back, even
         when the lead has a phone);
       * the phone: the lead's own if it has one, else the details' best phone (jobrunner's rule:
         Wireless first, then the most recently reported);
       * carrier lookup, then DNC scrub, for every lead with a phone (whatever the line type);
       * each call is retried up to 3 times (4 tries), at once, on a network error, a 408/425/429/5xx or
         a 2xx that is not JSON;
       * when a call still fails, that lead's later calls are skipped (a failed carrier lookup still gets
         its DNC scrub), the run goes on, and at its end the whole batch is run again from the start
         (every call again, nothing kept), up to 4 runs in all (jobrunner's default max_attempts);
       * delivered: the leads its last run judged contactable by jobrunner's default rules: line type
         ``mobile``, carrier not matching the default block list (Google, TextNow, Burner, Hushed, Line2,
         Bandwidth, Twilio), not on DNC (isDoNotCall false and canContact true).
   "Paid" = the sandbox's ``ok`` (successful answers); "all calls" counts failed ones too. Delivered for
   jobrunner = result leads with ``can_contact`` true and no ``drop_reason``. The naive count also says
   how many of its delivered leads carry another person's phone (it took the first of several
   candidates, who lives elsewhere than the lead). Whether the naive batch runs once or more is luck (a
   run repeats when any of its calls fails 4 tries in a row), so the table adds its expected cost: paid
   calls of one run x (1 + q + q^2 + q^3), q = 1 - (1 - 0.1^4)^(calls per run).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import _common as c  # bench/_common.py (the script's own folder is first on sys.path)

NAIVE_TRIES = 4  # the first try and up to 3 retries
NAIVE_RUNS = 4  # jobrunner's default max_attempts
NAIVE_CONCURRENCY = 16
RETRY_STATUSES = {408, 425, 429} | set(range(500, 600))
SAMPLE_S = 0.2


# ---------------------------------------------------------------------------------------------- leads
def make_leads(n: int, seed: int) -> list[dict[str, Any]]:
    """n distinct people (see the module docstring); every third (i % 3 == 0) has a phone already."""
    from jobrunner.sandbox.data import CITIES, FIRST_NAMES, LAST_NAMES

    rng = random.Random(seed)
    pairs = [(f, last) for f in FIRST_NAMES for last in LAST_NAMES]
    rng.shuffle(pairs)
    city_codes = {code for city in CITIES for code in city[4]}
    npas = [a for a in range(201, 990) if a % 100 != 11 and a // 10 % 10 != 9 and a not in city_codes]
    numbers = [(a, x) for a in npas for x in range(100)]
    rng.shuffle(numbers)
    out = []
    for i in range(n):
        first, last = pairs[i % len(pairs)]
        if i >= len(pairs):
            last = f"{last}{i // len(pairs) + 1}"  # beyond 6,400 leads: still distinct people
        city, _, state, zip3, _ = rng.choice(CITIES)
        lead: dict[str, Any] = {"first_name": first, "last_name": last, "city": city, "state": state,
                                "zip": f"{zip3}{rng.randrange(100):02d}", "company": f"Co {i}",
                                "crm_id": f"L{i:06d}"}
        if i % 3 == 0:
            npa, x = numbers[(i // 3) % len(numbers)]
            lead["phone"] = f"({npa}) 555-01{x:02d}"
        out.append(lead)
    return out


# ---------------------------------------------------------------------------------------------- helpers
def ts(text: str | None) -> float:
    if not text:
        return float("nan")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Memory:
    """The daemon's VmRSS samples and its VmHWM (the high-water mark of its own address space), from
    /proc/PID/status."""

    def __init__(self) -> None:
        self.rss: list[float] = []
        self.hwm = float("nan")

    def sample(self, pid: int) -> None:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        self.rss.append(int(line.split()[1]) / 1024)
                    elif line.startswith("VmHWM:"):
                        self.hwm = int(line.split()[1]) / 1024
        except (FileNotFoundError, ProcessLookupError):
            pass


TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int, tid: int | None = None) -> tuple[float, float]:
    """CPU seconds (user, system) of a process, or of one of its threads, so far."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    try:
        with open(path) as f:
            fields = f.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return float("nan"), float("nan")
    return int(fields[11]) / TICK, int(fields[12]) / TICK  # utime, stime: fields 14 and 15 of stat(5)


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def daemon_env(sb: Any, data: Path) -> dict[str, str]:
    """This environment without any JOBRUNNER_ setting, plus the sandbox's and the data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_")}
    return {**env, **sb.env(), "JOBRUNNER_DATA_DIR": str(data)}


def reap(proc: subprocess.Popen[bytes], timeout: float = 60, mem: Memory | None = None) -> tuple[int | None, Any]:
    """SIGTERM (a drain), SIGKILL if it does not exit; (exit code, rusage) from wait4. ``mem`` goes on
    reading VmHWM until the process is gone."""
    if proc.poll() is not None:
        return proc.returncode, None
    proc.terminate()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mem is not None:
            mem.sample(proc.pid)
        pid, wstatus, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(wstatus)
            return proc.returncode, ru
        time.sleep(0.01)
    proc.kill()
    _, wstatus, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(wstatus)
    return proc.returncode, ru


def run_job(work: Path, sb: Any, request: dict[str, Any], timeout: float,
            extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Start a default daemon on work/data against ``sb``, submit ``request``, wait until the job is final,
    stop the daemon. Returns the status document, the results, the submit time, RSS samples and rusage."""
    data = work / "data"
    (data / "queue").mkdir(parents=True)
    staged = work / "request.json"  # next to data/, same filesystem: the rename into queue/ is atomic
    with open(staged, "wb") as f:
        f.write(json.dumps(request).encode())
        f.flush()
        os.fsync(f.fileno())
    c.syncfs(work)
    job_id = request["id"]
    status_path = data / "jobs" / f"{job_id}.json"
    log = c.log_file(f"enrich-{job_id}")
    proc: subprocess.Popen[bytes] | None = None
    mem = Memory()
    ru: Any = None
    ok = False
    try:
        with open(log, "wb") as err:
            proc = subprocess.Popen([*c.jobrunner_cmd(), "run", "--data-dir", str(data)],
                                    env={**daemon_env(sb, data), **(extra_env or {})},
                                    stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 30
        while c.find_line(log, " ready: ") is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not get ready (exit {proc.poll()}); log: {log}")
            mem.sample(proc.pid)
            time.sleep(0.02)
        cpu0 = cpu_s(proc.pid), cpu_s(proc.pid, proc.pid), own_cpu_s()  # daemon, its event loop, this process
        submitted = time.time()
        os.rename(staged, data / "queue" / f"{job_id}.json")
        deadline = time.monotonic() + timeout
        doc: dict[str, Any] | None = None
        while True:
            mem.sample(proc.pid)
            with contextlib.suppress(FileNotFoundError, ValueError):
                doc = json.loads(status_path.read_bytes())
            if doc is not None and doc["status"] in ("completed", "failed", "cancelled"):
                cpu1 = cpu_s(proc.pid), cpu_s(proc.pid, proc.pid), own_cpu_s()
                seen_final = time.time()
                break
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({proc.returncode}) during the job; log: {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} not final after {timeout:.0f}s: {doc and doc['progress']}; "
                                   f"log: {log}")
            time.sleep(SAMPLE_S)
        rc, ru = reap(proc, mem=mem)
        if rc != 0:
            raise RuntimeError(f"the daemon exited {rc} on SIGTERM; log: {log}")
        rows = [json.loads(line) for line in (data / "jobs" / job_id / "results.jsonl").read_text().splitlines()]
        ok = True
    finally:
        if proc is not None and proc.poll() is None:
            reap(proc)
        if ok:
            log.unlink()
        else:
            print(f"(log kept: {log})", file=sys.stderr)
    return {"doc": doc, "rows": rows, "submitted": submitted, "rss": mem.rss, "hwm_mb": mem.hwm,
            "maxrss_mb": ru.ru_maxrss / 1024 if ru is not None else float("nan"),
            "cpu_s": (ru.ru_utime + ru.ru_stime) if ru is not None else float("nan"),
            "job_cpu_s": sum(cpu1[0]) - sum(cpu0[0]), "loop_cpu_s": sum(cpu1[1]) - sum(cpu0[1]),
            "loop_sys_s": cpu1[1][1] - cpu0[1][1], "cpu_window_s": seen_final - submitted,
            "bench_cpu_s": cpu1[2] - cpu0[2]}


KINDS = {"skiptrace GET /search/bynameaddress": "search", "skiptrace GET /search/byname": "search",
         "skiptrace GET /search/detailsbyID": "details", "carrier GET /v2/number_lookup/{number}": "carrier",
         "dnc GET /Leads/api/leads/scrubphonenumber": "dnc"}


def needed_calls(rows: list[dict[str, Any]], leads: list[dict[str, Any]]) -> Counter[str]:
    """The paid calls jobrunner's rules needed, lead by lead, before any sharing (failed leads excluded)."""
    need: Counter[str] = Counter()
    for r in rows:
        if r["errors"]:
            continue
        had_phone = bool(leads[r["row"] - 1].get("phone"))
        reason = (r["drop_reason"] or "").split(":")[0]
        if not had_phone:
            need["search"] += 1
            if reason not in ("no_match", "no_identity"):
                need["details"] += 1
        if r["line_type"] is not None:
            need["carrier"] += 1
        if r["dnc_status"] in ("CLEAR", "DNC"):
            need["dnc"] += 1
    return need


def paid_by_kind(stats: dict[str, Any]) -> Counter[str]:
    out: Counter[str] = Counter()
    for name, n in stats["ok"].items():
        out[KINDS.get(name, name)] += n
    return out


def delivered(rows: list[dict[str, Any]]) -> int:
    return sum(1 for r in rows if r["can_contact"] is True and not r["drop_reason"])


# ---------------------------------------------------------------------------------------------- 1. throughput
WHAT_IF = """# written by bench/enrich.py --what-if: not part of jobrunner
import sys
import types

try:
    import sniffio  # noqa: F401
except ImportError:  # httpcore tries this import on every lock and shield it makes: make it a dict lookup
    _stub = types.ModuleType("sniffio")
    _stub.current_async_library = lambda: "asyncio"
    sys.modules["sniffio"] = _stub
"""


def what_if_env() -> dict[str, str]:
    """PYTHONPATH with a sitecustomize that makes ``import sniffio`` succeed in the daemon (diagnosis only)."""
    folder = tempfile.mkdtemp(prefix="jobrunner-bench-whatif-")
    atexit.register(shutil.rmtree, folder, True)
    Path(folder, "sitecustomize.py").write_text(WHAT_IF)
    old = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": folder + (os.pathsep + old if old else "")}


def throughput_rep(work: Path, leads: list[dict[str, Any]], latency_ms: float, rep: int,
                   extra_env: dict[str, str]) -> dict[str, Any]:
    from jobrunner.sandbox import Faults, Sandbox, SandboxConfig

    config = SandboxConfig(key="bench-" + secrets.token_hex(8), seed=rep + 1, faults=Faults(latency_ms=latency_ms))
    with Sandbox(config) as sb:
        run = run_job(work, sb, {"type": "enrich", "id": f"enrich-{rep}", "leads": leads},
                      timeout=120 + 0.25 * len(leads), extra_env=extra_env)
        stats = sb.stats()
    doc, rows = run["doc"], run["rows"]
    if doc["status"] != "completed" or len(rows) != len(leads) or doc["result"]["failed"]:
        raise RuntimeError(f"the job did not complete every lead: {doc['status']}, {len(rows)} rows, "
                           f"{doc.get('result')} {doc.get('error')}")
    start, end = ts(doc["started_at"]), ts(doc["finished_at"])
    paid = sum(stats["ok"].values())
    distinct = {k: n for k, n in stats["ok_by_request"].items() if not k.startswith("dnc-identity")}
    need = needed_calls(rows, leads)
    kept = {k: v for k, v in run.items() if k not in ("rows", "doc")}  # this process stays small
    return {**kept, "job_s": end - start, "submit_s": end - run["submitted"], "leads": len(leads), "paid": paid,
            "all_calls": sum(stats["calls"].values()), "needed": sum(need.values()),
            "bought_twice": sum(n - 1 for n in distinct.values()), "result": doc["result"],
            "attempts": doc["attempt"], "rss_peak": max(run["rss"], default=float("nan")),
            "delivered": delivered(rows), "paid_by_kind": paid_by_kind(stats), "need_by_kind": need}


def measure_throughput(base: Path, args: argparse.Namespace) -> None:
    from jobrunner.handlers.enrich import EnrichOptions

    concurrency = EnrichOptions().concurrency
    latency_s = args.latency_ms / 1000
    bound_calls = concurrency / latency_s
    leads = make_leads(args.leads, args.seed)
    series: dict[str, dict[str, str]] = {"jobrunner": {}}
    if args.what_if:
        series["what-if: sniffio importable"] = what_if_env()
    print(f"### throughput: {args.leads} leads ({sum(1 for x in leads if x.get('phone'))} with a phone), one "
          f"enrich job, default options; sandbox latency {args.latency_ms:g} ms, no faults, no rate limit; "
          f"{args.reps} repetitions" + ("; series in alternating order" if len(series) > 1 else ""))
    res: dict[str, list[dict[str, Any]]] = {name: [] for name in series}
    for rep in range(args.reps):
        names = list(series) if rep % 2 == 0 else list(series)[::-1]
        for name in names:
            work = base / f"tp{rep}-{len(res[name])}-{name.split(':')[0]}"
            work.mkdir()
            try:
                r = throughput_rep(work, leads, args.latency_ms, rep, series[name])
            finally:
                shutil.rmtree(work, ignore_errors=True)
                c.syncfs(base)
            res[name].append(r)
            print(f"  rep {rep + 1} {name}: {r['leads'] / r['job_s']:.1f} leads/s ({r['job_s']:.1f} s), "
                  f"{r['paid'] / r['job_s']:.0f} paid calls/s, {r['paid'] / r['leads']:.2f} calls/lead, "
                  f"{100 * (r['paid'] / r['job_s']) / bound_calls:.0f}% of bound; RSS peak {r['rss_peak']:.0f} MB, "
                  f"VmHWM {r['hwm_mb']:.0f} MB, ru_maxrss {r['maxrss_mb']:.0f} MB; daemon CPU during the job "
                  f"{r['job_cpu_s']:.1f} s (event-loop "
                  f"thread {r['loop_cpu_s']:.1f} s, of which system {r['loop_sys_s']:.1f} s) in "
                  f"{r['cpu_window_s']:.1f} s; result calls "
                  f"{r['result']['calls']}, retries {r['result']['retries']}, rate_wait_s "
                  f"{r['result']['rate_wait_s']}", flush=True)
    print()
    rows, mem = [], []
    for name, runs in res.items():
        rate = [r["leads"] / r["job_s"] for r in runs]
        per_lead = [r["paid"] / r["leads"] for r in runs]
        bound_leads = [bound_calls / m for m in per_lead]
        pct = [100 * x / b for x, b in zip(rate, bound_leads, strict=True)]
        rows.append([name, c.spread(rate, "{:.1f}"), c.spread([r["leads"] / r["submit_s"] for r in runs], "{:.1f}"),
                     c.spread([r["paid"] / r["job_s"] for r in runs], "{:.0f}"), c.spread(per_lead, "{:.2f}"),
                     c.spread(bound_leads, "{:.0f}"), f"{bound_calls:.0f}", c.spread(pct, "{:.0f}", "%"),
                     "yes" if min(pct) >= 70 else ("no" if max(pct) < 70 else "mixed")])
        rss = [r["rss_peak"] for r in runs]
        hwm = [r["hwm_mb"] for r in runs]
        maxrss = [r["maxrss_mb"] for r in runs]
        mem.append([name, c.spread(rss, "{:.0f}"), c.spread(hwm, "{:.0f}"), c.spread(maxrss, "{:.0f}"),
                    "yes" if max(max(rss), max(hwm)) < 150 else "no",
                    c.spread([1000 * r["job_cpu_s"] / r["paid"] for r in runs], "{:.2f}"),
                    c.spread([1000 * r["loop_cpu_s"] / r["paid"] for r in runs], "{:.2f}"),
                    c.spread([100 * r["job_cpu_s"] / r["cpu_window_s"] for r in runs], "{:.0f}", "%"),
                    c.spread([100 * r["loop_cpu_s"] / r["cpu_window_s"] for r in runs], "{:.0f}", "%"),
                    c.spread([100 * r["bench_cpu_s"] / r["cpu_window_s"] for r in runs], "{:.0f}", "%")])
    c.table(rows, ["daemon", "leads/s (job)", "leads/s (submit->done)", "paid calls/s", "paid calls/lead",
                   "bound leads/s", "bound calls/s", "% of bound", ">= 70%?"])
    c.table(mem, ["daemon", "peak VmRSS MB", "VmHWM MB", "ru_maxrss MB", "< 150 MB?", "CPU ms / paid call",
                  "loop thread CPU ms / paid call", "CPU / wall", "loop thread CPU / wall",
                  "sandbox process CPU / wall"])
    kinds = ("search", "details", "carrier", "dnc")
    r0 = res["jobrunner"][0]
    c.table([[k, r0["need_by_kind"][k], r0["paid_by_kind"][k], r0["need_by_kind"][k] - r0["paid_by_kind"][k]]
             for k in kinds] + [["all", r0["needed"], r0["paid"], r0["needed"] - r0["paid"]]],
            ["call", "needed by leads", "paid (sandbox ok)", "shared (needed - paid)"])
    c.table([[name, i + 1, r["result"]["calls"], r["result"]["retries"], r["result"]["rate_wait_s"], r["all_calls"],
              r["bought_twice"], r["attempts"], r["delivered"]]
             for name, runs in res.items() for i, r in enumerate(runs)],
            ["daemon", "rep", "result.calls", "result.retries", "result.rate_wait_s", "sandbox calls",
             "bought twice", "attempts", "delivered"])
    print(f"leads/s (job): leads / (finished_at - started_at) of the status; (submit->done): leads / (finished_at "
          f"- the rename into queue/). paid calls: successful answers counted by the sandbox. bound: concurrency "
          f"{concurrency} / latency {latency_s:g} s = {bound_calls:.0f} calls/s, / paid calls per lead for leads/s; "
          f"% of bound = leads/s over it (= paid calls/s over {bound_calls:.0f}). Peak VmRSS: the highest "
          f"/proc/PID/status sample, every {SAMPLE_S:g} s from the daemon's start to the job's end; VmHWM: the "
          f"kernel's high-water mark of the daemon's address space, last read before it exited (the target is "
          f"judged on these two); ru_maxrss: from wait4 at exit, which on Linux is also at least this process's "
          f"own RSS when it spawned the daemon (the pre-exec high-water mark is carried over), so an upper "
          f"bound. CPU: the daemon's /proc/PID/stat (the loop thread: "
          f"/proc/PID/task/PID/stat, the main thread, which runs the event loop), and this process's (the sandbox "
          f"and the polling), from the submit to the poll that saw the job final, over that wall time. Shared: "
          f"calls that two leads needed (one phone, one person) and that were bought once (repetition 1). "
          + ("what-if: the same daemon with a sitecustomize on its PYTHONPATH that puts a stub `sniffio` in "
             "sys.modules (jobrunner unchanged; diagnosis only). " if args.what_if else "")
          + "Cells: median (min-max) over repetitions.\n")


# ---------------------------------------------------------------------------------------------- 2. paid calls
class Naive:
    """The naive pipeline of the module docstring, against one sandbox."""

    def __init__(self, sb: Any) -> None:
        import httpx

        from jobrunner.handlers.enrich import DEFAULT_BLOCKED

        self.sb = sb
        self.key = sb.config.key
        self.blocked = [b.lower() for b in DEFAULT_BLOCKED]
        self.http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=NAIVE_CONCURRENCY * 2))
        self.failed_calls = 0
        self.logical_calls = 0  # calls the pipeline made (each of its up to NAIVE_TRIES tries counted once)

    async def get(self, provider: str, path: str, params: dict[str, str]) -> Any:
        """One call with up to 3 retries; None when it still failed."""
        import httpx

        self.logical_calls += 1
        url = self.sb.base_url(provider) + path
        if provider == "skiptrace":
            headers = {"x-rapidapi-key": self.key, "x-rapidapi-host": url.split("/")[2]}
        else:
            headers = {"Authorization": f"Bearer {self.key}"}
        for _ in range(NAIVE_TRIES):
            try:
                response = await self.http.get(url, params=params, headers=headers)
            except httpx.TransportError:
                continue
            if response.status_code in RETRY_STATUSES:
                continue
            if not 200 <= response.status_code < 300:
                break
            try:
                return response.json()
            except ValueError:
                continue
        self.failed_calls += 1
        return None

    async def lead(self, lead: dict[str, Any]) -> tuple[bool, bool, bool]:
        """(contactable, a call failed, the details bought were another person's: the first of several
        candidates, living elsewhere than the lead)."""
        from jobrunner import leads as lead_rules
        from jobrunner.providers import skiptrace

        row = lead_rules.normalize(lead)
        name = f"{row['first_name']} {row['last_name']}"
        place = ", ".join(p for p in (row.get("city"), " ".join(x for x in (row.get("state"), row.get("zip")) if x))
                          if p)
        found = await self.get("skiptrace", "/search/bynameaddress", {"name": name, "citystatezip": place, "page": "1"})
        if found is None:
            return False, True, False
        people = found.get("PeopleDetails") or []
        phone = row.get("phone")
        lives = (people[0].get("Lives in") or "").rpartition(",")[0].strip().lower() if people else ""
        other = bool(people) and lives != (row.get("city") or "").lower()
        if people:
            info = await self.get("skiptrace", "/search/detailsbyID", {"peo_id": people[0]["Person ID"]})
            if info is None:
                return False, True, other
            if not phone:
                details = skiptrace.Details(phones=[
                    {"number": p.get("number"), "type": p.get("phone_type"), "last_reported": p.get("last_reported")}
                    for p in info.get("All Phone Details") or []], emails=[])
                phone = lead_rules.normalize({"phone": skiptrace.best_phone(details)}).get("phone")
        if not phone:
            return False, False, other
        look = await self.get("carrier", f"/v2/number_lookup/{phone}", {"type": "carrier"})
        scrub = await self.get("dnc", "/Leads/api/leads/scrubphonenumber",
                               {"currentContextAgentNumber": "1", "phone": phone[-10:]})
        if look is None or scrub is None:
            return False, True, other
        carrier = look["data"]["carrier"]
        line_type = (look["data"]["portability"].get("line_type") or carrier.get("type") or "").lower()
        names = f"{carrier.get('name') or ''} {carrier.get('normalized_carrier') or ''}".lower()
        ok = (line_type == "mobile" and not any(b in names for b in self.blocked)
              and not scrub["data"]["isDoNotCall"] and bool(scrub["data"]["contactStatus"].get("canContact")))
        return ok, False, other

    async def batch(self, leads: list[dict[str, Any]]) -> list[tuple[bool, bool, bool]]:
        gate = asyncio.Semaphore(NAIVE_CONCURRENCY)

        async def one(lead: dict[str, Any]) -> tuple[bool, bool, bool]:
            async with gate:
                return await self.lead(lead)

        return list(await asyncio.gather(*(one(x) for x in leads)))

    async def run(self, leads: list[dict[str, Any]]) -> dict[str, Any]:
        runs = 0
        try:
            while True:
                out = await self.batch(leads)
                runs += 1
                if runs == NAIVE_RUNS or not any(failed for _, failed, _ in out):
                    break
        finally:
            await self.http.aclose()
        return {"runs": runs, "logical_per_run": self.logical_calls / runs,
                "delivered": sum(1 for ok, _, _ in out if ok),
                "delivered_other": sum(1 for ok, _, other in out if ok and other),
                "failed_last_run": sum(1 for _, failed, _ in out if failed), "failed_calls": self.failed_calls}


def compare(base: Path, args: argparse.Namespace) -> None:
    from jobrunner.sandbox import Faults, Sandbox, SandboxConfig

    leads = make_leads(args.compare_leads, args.seed)
    error_rate = 0.1
    faults = Faults(error_rate=error_rate, latency_ms=2)
    print(f"### paid calls per delivered lead: {len(leads)} leads (seed {args.seed}, "
          f"{sum(1 for x in leads if x.get('phone'))} with a phone), sandbox error_rate {error_rate:g} (500/502/503), "
          f"latency 2 ms; each system on a fresh sandbox; {args.compare_reps} repetition(s)")

    def sandbox(rep: int) -> Any:
        """Fresh counters; the same fault draws for both systems of a repetition, new ones per repetition."""
        return Sandbox(SandboxConfig(key="bench-" + secrets.token_hex(8), seed=args.seed + rep, faults=faults))

    jrs, nvs = [], []
    for rep in range(args.compare_reps):
        work = base / f"compare{rep}"
        work.mkdir()
        try:
            with sandbox(rep) as sb:
                t = time.perf_counter()
                run = run_job(work, sb, {"type": "enrich", "id": f"compare-{rep}", "leads": leads}, timeout=900)
                secs = time.perf_counter() - t
                stats = sb.stats()
        finally:
            shutil.rmtree(work, ignore_errors=True)
            c.syncfs(base)
        doc = run["doc"]
        jrs.append({"paid": sum(stats["ok"].values()), "all": sum(stats["calls"].values()),
                    "delivered": delivered(run["rows"])})
        print(f"  rep {rep + 1} jobrunner: {doc['status']} in {secs:.0f} s, attempt {doc['attempt']}; result calls "
              f"{doc['result']['calls']}, retries {doc['result']['retries']}, failed leads {doc['result']['failed']}; "
              f"delivered {jrs[-1]['delivered']}; paid by call {dict(paid_by_kind(stats))}", flush=True)
        with sandbox(rep) as sb:
            t = time.perf_counter()
            nv = asyncio.run(Naive(sb).run(leads))
            secs = time.perf_counter() - t
            stats = sb.stats()
        nvs.append({**nv, "paid": sum(stats["ok"].values()), "all": sum(stats["calls"].values())})
        print(f"  rep {rep + 1} naive: {nv['runs']} run(s) of the batch in {secs:.0f} s; calls still failing after "
              f"{NAIVE_TRIES} tries: {nv['failed_calls']}; leads failed in the last run {nv['failed_last_run']}; "
              f"delivered {nv['delivered']}, of which {nv['delivered_other']} with another person's phone (the first "
              f"of several candidates, living elsewhere); paid by call {dict(paid_by_kind(stats))}", flush=True)
    print()

    def per(x: dict[str, Any]) -> float:
        return x["paid"] / x["delivered"] if x["delivered"] else float("nan")

    ratio = [per(n) / per(j) for n, j in zip(nvs, jrs, strict=True)]
    runs = Counter(n["runs"] for n in nvs)
    # the model: a run is repeated when any of its logical calls fails NAIVE_TRIES tries in a row
    logical = c.med([n["logical_per_run"] for n in nvs])
    q = 1 - (1 - error_rate ** NAIVE_TRIES) ** logical
    expected_runs = sum(q ** k for k in range(NAIVE_RUNS))
    paid_per_run = c.med([n["paid"] / n["runs"] for n in nvs])
    exp_per = paid_per_run * expected_runs / c.med([n["delivered"] for n in nvs])
    rows = [["jobrunner enrich (defaults)", c.spread([j["all"] for j in jrs]), c.spread([j["paid"] for j in jrs]),
             c.spread([j["delivered"] for j in jrs]), c.spread([per(j) for j in jrs], "{:.2f}"), "-"],
            ["naive (" + ", ".join(f"{k} run{'s' if k > 1 else ''}" + (f" x{v}" if v > 1 else "")
                                   for k, v in sorted(runs.items())) + " of the batch)",
             c.spread([n["all"] for n in nvs]), c.spread([n["paid"] for n in nvs]),
             c.spread([n["delivered"] for n in nvs]), c.spread([per(n) for n in nvs], "{:.2f}"),
             c.spread(ratio, "{:.2f}", "x")],
            [f"naive, expected ({expected_runs:.2f} runs)", "-", f"{paid_per_run * expected_runs:.0f}",
             c.spread([n["delivered"] for n in nvs]), f"{exp_per:.2f}",
             f"{exp_per / c.med([per(j) for j in jrs]):.2f}x"]]
    c.table(rows, ["system", "all calls", "paid calls", "delivered leads", "paid calls / delivered lead",
                   "/ jobrunner"])
    print(f"all calls: every call the sandbox received (failed ones too); paid: its successful answers (`ok`); "
          f"delivered: leads with can_contact true and no drop_reason (jobrunner), leads the naive pipeline's last "
          f"run judged contactable. The naive pipeline's number of runs is luck: a run is repeated when any of its "
          f"~{logical:.0f} calls fails {NAIVE_TRIES} tries in a row, which happens to a run with probability "
          f"q = 1 - (1 - {error_rate:g}^{NAIVE_TRIES})^{logical:.0f} = {q:.2f}; \"expected\" is its paid calls of one "
          f"run ({paid_per_run:.0f}) times the expected number of runs, 1 + q + q^2 + q^3. Cells: median (min-max) "
          f"over repetitions.\n")


# ---------------------------------------------------------------------------------------------- driver
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_fs_args(p)
    p.add_argument("--leads", type=int, default=2000, help="leads in the throughput job")
    p.add_argument("--reps", type=int, default=3, help="throughput repetitions per filesystem")
    p.add_argument("--latency-ms", type=float, default=50.0, help="sandbox latency of the throughput runs")
    p.add_argument("--compare-leads", type=int, default=1000, help="leads of the paid-calls comparison (0: skip it)")
    p.add_argument("--compare-reps", type=int, default=1, help="repetitions of the comparison per filesystem")
    p.add_argument("--seed", type=int, default=7, help="seed of the lead sets")
    p.add_argument("--what-if", action="store_true",
                   help="also run each throughput repetition with a daemon in which `import sniffio` succeeds (a "
                        "stub, from a sitecustomize on its PYTHONPATH; jobrunner unchanged): shows what httpcore's "
                        "failed import of it on every request costs")
    args = p.parse_args()
    # Ctrl-C and SIGTERM unwind through the finally blocks: the daemon stopped, dirs and mounts removed
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    c.setup(args)
    c.header("enrich: throughput against the latency bound, daemon RSS, paid calls per delivered lead")
    for label, ctx in c.filesystems(args):
        with ctx as base:
            print(f"## {label}: {c.fs_note(base)}")
            measure_throughput(base, args)
            if args.compare_leads:
                compare(base, args)


if __name__ == "__main__":
    main()
