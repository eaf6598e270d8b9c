"""Torture: a mixed load of ``scrape`` and ``enrich`` jobs against a faulty sandbox, daemons killed with
SIGKILL at random moments (sometimes two daemons on one data dir), restarted, and every promise checked.

    python bench/torture.py [--trials 300] [--seed 1] [--dir DIR] [--commit REV] [--keep] [-v]

One trial, all drawn from ``random.Random(seed * 100003 + trial)``:
- a fresh data dir, and a fresh sandbox (in this process) with faults on: 10% 5xx, 3% 429 with a
  Retry-After of 1 s (over the 0.5 s a call may sleep: a job-level deferral), 2% hung calls answered 504
  after 0.2 s, 2% malformed 200s, 1-4 ms of latency; a fresh key, only in the daemons' environment;
- 2-4 ``scrape`` jobs (2-8 pages, each job its own search) and 2-3 ``enrich`` jobs (8-30 leads, each job
  in a city of its own, so no two jobs ever buy the same answer); half are dropped before the first
  daemon starts, half while it runs (atomic drops: written aside, renamed in);
- daemon A, and in half the trials a second daemon B on the same data dir; 1-3 rounds of: wait
  0.05-2.5 s, SIGKILL A, B or both (B only when it exists), check that no status file is torn, start the
  killed ones again (not waiting for them to be ready: a kill can land during start-up);
- then the daemons run until every job is final (at most ``--deadline`` s), and get SIGTERM.

The checks, over the whole data dir and the sandbox's log of answers:
- lost: a job dropped (every request is valid, so every one must be accepted) without a final status at
  the end, or a request left in the queue, ``.claimed/``, ``.active/`` or ``.deferred/``;
- torn: a status file (jobs/<id>.json) that is not a whole status, after any kill or at the end; a
  results line, a rejection note or a ledger line that does not parse at the end (a torn line in a
  steps log is skipped by design and is counted apart, as ``torn step lines``);
- duplicated: a lead twice in a scrape's results (by its profile URL), a results count that is not the
  status' ``leads``, a scrape result that is not exactly the de-duplicated leads of its stored pages, an
  enrich row missing or twice, a step stored twice;
- repeated: an answer the sandbox sold (a 200 it counted, by request) to a connected daemon after the
  step that bought it had been stored (the step's ``at``; 5 ms of slack for its millisecond rounding), or
  sold twice to connected daemons before it was stored with no kill in between. An answer bought again
  before it was stored because its buyer was killed in between is allowed: that is the window of one
  write, counted as ``re-bought before stored``. The sandbox says for each sale when it was made and
  whether its buyer had hung up by then: a sandbox short of CPU handles a request the killed daemon sent
  after the kill, and judged by time alone that sale looks like one made to a live daemon;
- secrets: the trial's key anywhere in the data dir or the daemons' logs;
- the final SIGTERM ends each daemon with 0, and no daemon log has a traceback.

It prints one line per trial with ``-v``, then the totals. Exit status 1 when any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
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
from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import _common as c  # bench/_common.py (the script's own folder is first on sys.path)

FAST = {"JOBRUNNER_LINKEDIN_RATE": "1000/1", "JOBRUNNER_CALL_BACKOFF_S": "0.02", "JOBRUNNER_CALL_MAX_WAIT_S": "0.5"}
DAEMON_ARGS = ("--settle", "0.3", "--rescan", "0.2", "--retry-base", "0.05", "--retry-max", "1",
               "--concurrency", "8", "--drain-timeout", "5")
SLACK_S = 0.005
# A city per enrich job, none sharing an area code with another: skip-traced phones are drawn from the
# city's area codes, so no two jobs of a trial ever need the same carrier or DNC answer.
ENRICH_CITIES = ("Austin", "Denver", "Seattle", "Chicago")
GIVEN_NPAS = (234, 267, 330)  # given phones: area codes of no sandbox city


@dataclass
class Totals:
    trials: int = 0
    jobs: int = 0
    scrape: int = 0
    enrich: int = 0
    kills: int = 0
    second_daemon_kills: int = 0
    steps: int = 0
    paid: int = 0
    rebought: int = 0
    sold_to_the_dead: int = 0
    lost: int = 0
    torn: int = 0
    duplicated: int = 0
    repeated: int = 0
    secrets: int = 0
    failed: int = 0
    bad_exits: int = 0
    tracebacks: int = 0
    torn_step_lines: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)  # of one trial: id -> request
    kill_times: list[float] = field(default_factory=list)  # of one trial: when each kill landed (epoch)

    def add(self, other: Totals) -> None:
        for f in fields(self):
            if f.name not in ("problems", "requests", "kill_times"):
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        self.problems += other.problems

    @property
    def violations(self) -> int:
        return (self.lost + self.torn + self.duplicated + self.repeated + self.secrets + self.failed
                + self.bad_exits + self.tracebacks)


# ---------------------------------------------------------------------------------------------- the load
def scrape_request(rng: random.Random, trial: int, j: int) -> dict[str, Any]:
    return {"type": "scrape", "id": f"s{trial}-{j}", "max_attempts": 50, "max_pages": rng.randint(2, 8),
            "max_results": 10_000, "search": {"title_keywords": f"Head of Growth {trial}-{j}", "location": "Texas"}}


def enrich_request(rng: random.Random, trial: int, j: int) -> dict[str, Any]:
    from jobrunner.sandbox.data import CITIES, FIRST_NAMES, LAST_NAMES

    city, _, state, zip3, _ = next(x for x in CITIES if x[0] == ENRICH_CITIES[j])
    people = rng.sample([(f, last) for f in FIRST_NAMES for last in LAST_NAMES], rng.randint(8, 30))
    leads = []
    for i, (first, last) in enumerate(people):
        lead: dict[str, Any] = {"first_name": first, "last_name": last, "city": city, "state": state,
                                "zip": f"{zip3}{rng.randrange(100):02d}", "crm_id": f"L{i}"}
        if i % 3 == 0:
            lead["phone"] = f"({GIVEN_NPAS[j % len(GIVEN_NPAS)]}) 555-{j}{i:03d}"
        leads.append(lead)
    return {"type": "enrich", "id": f"e{trial}-{j}", "max_attempts": 50, "leads": leads}


def drop(data: Path, request: dict[str, Any]) -> None:
    staging = data / "client-staging"
    staging.mkdir(exist_ok=True)
    tmp = staging / f"{request['id']}.json"
    tmp.write_bytes(json.dumps(request).encode())
    os.rename(tmp, data / "queue" / tmp.name)


# ---------------------------------------------------------------------------------------------- daemons
class Daemon:
    def __init__(self, data: Path, logs: Path, name: str, env: dict[str, str]) -> None:
        self.data, self.logs, self.name, self.env = data, logs, name, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        log = open(self.logs / f"{self.name}-{self.runs}.log", "wb")  # noqa: SIM115 - the child holds it
        with log:
            self.proc = subprocess.Popen([*c.jobrunner_cmd(), "run", "--data-dir", str(self.data), *DAEMON_ARGS],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        log = self.logs / f"{self.name}-{self.runs}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc is not None and self.proc.poll() is None:
            if b" ready: " in log.read_bytes():
                return
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def term(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -signal.SIGKILL


# ---------------------------------------------------------------------------------------------- checks
def torn_statuses(data: Path) -> list[str]:
    """Status files that are not a whole status document."""
    from jobrunner.status import JobStatus

    bad = []
    for path in (data / "jobs").glob("*.json"):
        try:
            JobStatus.parse(path.read_bytes())
        except (ValueError, OSError) as exc:
            bad.append(f"{path.name}: {str(exc)[:80]}")
    return bad


def _unparsed_lines(path: Path) -> int:
    bad = 0
    for line in path.read_bytes().split(b"\n"):
        if line.strip():
            try:
                json.loads(line)
            except ValueError:
                bad += 1
    return bad


def _iso_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def check_trial(data: Path, logs: Path, requests: dict[str, dict[str, Any]], answers: list[dict[str, Any]],
                key: str, kills: list[float], t: Totals) -> None:
    """Every check of the module docstring, on a data dir whose daemons have all stopped."""
    from jobrunner import checkpoint, ledger
    from jobrunner.layout import Layout
    from jobrunner.sandbox.paid import request_key

    layout = Layout(data)

    def problem(kind: str, what: str) -> None:
        setattr(t, kind, getattr(t, kind) + 1)
        t.problems.append(f"{kind}: {what}")

    for bad in torn_statuses(data):
        problem("torn", f"status {bad}")
    for folder in (layout.queue, layout.active, layout.deferred, *layout.claimed.glob("*/")):
        left = [p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(".json")]
        for name in left:
            problem("lost", f"{name} left in {folder.relative_to(data)}")
    for reason in layout.rejected.glob("*.reason"):
        problem("lost", f"a valid request was rejected: {reason.read_text()[:200]}")
    if layout.ledger.exists():
        lines = [x for x in layout.ledger.read_bytes().split(b"\n") if x]
        bad_lines = [x for x in lines if len(x.split(b"\t")) != ledger.WIDTH or not x.endswith(b"\t.")]
        if bad_lines:
            problem("torn", f"{len(bad_lines)} ledger line(s) not whole")

    bought: dict[str, list[float]] = defaultdict(list)  # request key -> when it was sold to a connected buyer
    sold = Counter[str]()  # request key -> sales, to anyone
    for answer in answers:
        if answer.get("key") and not answer["key"].startswith("dnc-identity"):
            sold[answer["key"]] += 1
            if answer["buyer_gone"]:
                t.sold_to_the_dead += 1  # its request was sent before its daemon was killed, handled after
            else:
                bought[answer["key"]].append(answer["sold_at"])
    stored_at: dict[str, float] = {}  # request key -> when its step was first stored
    stored_by: dict[str, str] = {}  # request key -> the job that stored it
    for job_id, req in requests.items():
        path = layout.status(job_id)
        doc = json.loads(path.read_bytes()) if path.exists() else None
        if doc is None or doc["status"] not in ("completed", "failed", "cancelled"):
            problem("lost", f"{job_id} is {doc['status'] if doc else 'without a status'}")
            continue
        if doc["status"] != "completed":
            problem("failed", f"{job_id} {doc['status']}: {doc['error']}")
            continue
        steps = list(checkpoint.records(layout, job_id))
        t.steps += len(steps)
        twice = [k for k, n in Counter(r["key"] for r in steps).items() if n > 1]
        if twice:
            problem("duplicated", f"{job_id}: steps stored twice: {twice[:5]}")
        log = layout.steps_log(job_id)
        if log.exists():
            t.torn_step_lines += _unparsed_lines(log)
        results = layout.results(job_id)
        if results.exists() and _unparsed_lines(results):
            problem("torn", f"{job_id}: results lines that do not parse")
            continue
        rows = [json.loads(x) for x in results.read_bytes().split(b"\n") if x.strip()] if results.exists() else []
        if req["type"] == "scrape":
            urls = [r["navigationUrl"] for r in rows]
            pages = {r["key"]: r["result"] for r in steps}
            expected: dict[str, None] = {}
            for n in range(1, doc["result"]["pages"] + 1):
                for lead in pages.get(f"page-{n}", {}).get("leads", []):
                    expected.setdefault(lead["navigationUrl"])
            if len(urls) != len(set(urls)) or len(urls) != doc["result"]["leads"] or urls != list(expected):
                problem("duplicated", f"{job_id}: {len(urls)} rows, {len(set(urls))} distinct, "
                                      f"result says {doc['result']['leads']}, stored pages hold {len(expected)}")
        else:
            if sorted(r["row"] for r in rows) != list(range(1, len(req["leads"]) + 1)):
                problem("duplicated", f"{job_id}: rows {sorted(Counter(r['row'] for r in rows).items())[:10]}")
        for record in steps:
            rkey = request_key(req["type"], req, record["key"])
            if rkey is None:
                continue
            if stored_by.setdefault(rkey, job_id) != job_id:
                raise RuntimeError(f"jobs {stored_by[rkey]} and {job_id} both bought {rkey}: keep them apart")
            stored_at[rkey] = min(stored_at.get(rkey, float("inf")), _iso_ts(record["at"]))
    for rkey, at in stored_at.items():
        times = sorted(bought.get(rkey, []))
        after = [x for x in times if x > at + SLACK_S]
        if after:
            problem("repeated", f"{rkey} sold {len(after)} time(s) to a live daemon after its step was stored")
        # sold twice to live daemons before it was stored: only if the first buyer was killed in between
        unexplained = [(a, b) for a, b in itertools.pairwise(times)
                       if b <= at + SLACK_S and not any(a < k < b for k in kills)]
        if unexplained:
            problem("repeated", f"{rkey} sold {len(unexplained) + 1} times with no kill in between (at "
                                f"{', '.join(f'{x:.3f}' for x in times)}; stored at {at:.3f}; kills at "
                                f"{', '.join(f'{k:.3f}' for k in kills) or 'none'})")
        t.rebought += max(0, sold[rkey] - 1 - len(after) - len(unexplained))
    t.paid += sum(sold.values())

    needle = key.encode()
    for root in (data, logs):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                problem("secrets", f"the key is in {path}")
    for log in logs.glob("*.log"):
        if b"Traceback" in log.read_bytes():
            problem("tracebacks", f"{log.name}: {log.read_text(errors='replace')[-600:]}")


# ---------------------------------------------------------------------------------------------- a trial
def trial(n: int, seed: int, base: Path, *, deadline_s: float, keep: bool) -> Totals:
    from jobrunner.sandbox import Faults, Sandbox, SandboxConfig

    rng = random.Random(seed * 100003 + n)
    t = Totals(trials=1)
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix=f"torture-{n}-", dir=base))
    data, logs = root / "data", root / "logs"
    (data / "queue").mkdir(parents=True)
    logs.mkdir()
    key = "torture-" + secrets.token_hex(12)
    faults = Faults(error_rate=0.10, throttle_rate=0.03, timeout_rate=0.02, hang_s=0.2, malformed_rate=0.02,
                    latency_ms=rng.uniform(1, 4))
    with Sandbox(SandboxConfig(key=key, faults=faults, seed=rng.randrange(1 << 30))) as sandbox:
        _run_load(rng, n, data, logs, sandbox, deadline_s, t)
        answers = sandbox.stats()["requests"]
        check_trial(data, logs, t.requests, answers, key, t.kill_times, t)
    if t.violations and keep:  # what the sandbox sold, and when the kills landed, for a look afterwards
        (logs / "sandbox-answers.json").write_text(json.dumps({"answers": answers, "kills": t.kill_times}))
    t.seconds = time.monotonic() - began
    if t.violations and keep:
        kept = Path(tempfile.mkdtemp(prefix=f"torture-kept-{n}-", dir=base.parent))
        shutil.move(root, kept)
        t.problems.append(f"kept: {kept}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return t


def _run_load(rng: random.Random, n: int, data: Path, logs: Path, sandbox: Any, deadline_s: float,
              t: Totals) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_")}
    env.update(sandbox.env(), **FAST)

    requests = t.requests
    for j in range(rng.randint(2, 4)):
        req = scrape_request(rng, n, j)
        requests[req["id"]] = req
    for j in range(rng.randint(2, 3)):
        req = enrich_request(rng, n, j)
        requests[req["id"]] = req
    order = list(requests.values())
    rng.shuffle(order)
    early, late = order[: len(order) // 2], order[len(order) // 2:]
    t.jobs = len(order)
    t.scrape = sum(r["type"] == "scrape" for r in order)
    t.enrich = t.jobs - t.scrape
    for req in early:
        drop(data, req)

    daemons = [Daemon(data, logs, "a", env)]
    if rng.random() < 0.5:
        daemons.append(Daemon(data, logs, "b", env))
    for d in daemons:
        d.start()
    try:
        for round_ in range(rng.randint(1, 3)):
            time.sleep(rng.uniform(0.05, 2.5))
            if round_ == 0:
                for req in late:
                    drop(data, req)
                time.sleep(rng.uniform(0.0, 0.5))
            victims = [daemons[0]] if len(daemons) == 1 else rng.choice(
                [[daemons[0]], [daemons[1]], daemons])
            for d in victims:
                d.kill()
                t.kill_times.append(time.time())
                t.kills += 1
                t.second_daemon_kills += d.name == "b"
            for bad in torn_statuses(data):
                t.torn += 1
                t.problems.append(f"torn: after a kill: {bad}")
            for d in victims:
                d.start()
        wait_until = time.monotonic() + deadline_s
        while time.monotonic() < wait_until:
            if all(_is_final(data, job_id) for job_id in requests):
                break
            time.sleep(0.1)
        for d in daemons:  # a SIGTERM before the signal handlers are in place would end it by the signal
            d.wait_ready()
            rc = d.term()
            if rc != 0:
                t.bad_exits += 1
                t.problems.append(f"bad exit: daemon {d.name} ended with {rc} on SIGTERM")
    finally:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.kill()


def _is_final(data: Path, job_id: str) -> bool:
    try:
        doc = json.loads((data / "jobs" / f"{job_id}.json").read_bytes())
    except (OSError, ValueError):
        return False
    return doc.get("status") in ("completed", "failed", "cancelled")


def run(trials: int, seed: int = 1, base: Path | None = None, *, deadline_s: float = 120.0, keep: bool = False,
        verbose: bool = False, budget_s: float | None = None) -> Totals:
    """Run ``trials`` trials (fewer if ``budget_s`` runs out first); the totals."""
    total = Totals()
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        if base is None:
            base = stack.enter_context(c.root_dir())
        for n in range(trials):
            if budget_s is not None and time.monotonic() - began > budget_s:
                break
            t = trial(n, seed, base, deadline_s=deadline_s, keep=keep)
            total.add(t)
            if verbose or t.violations:
                print(f"trial {n}: {t.jobs} jobs ({t.scrape} scrape, {t.enrich} enrich), {t.kills} kills, "
                      f"{t.steps} steps, {t.paid} paid answers, {t.rebought} re-bought before stored, "
                      f"{t.seconds:.1f}s; violations {t.violations}", flush=True)
                for p in t.problems:
                    print(f"    {p}", flush=True)
    total.seconds = time.monotonic() - began
    return total


def report(t: Totals) -> str:
    return "\n".join([
        f"trials: {t.trials} in {t.seconds:.0f}s ({t.seconds / max(1, t.trials):.1f}s a trial)",
        f"jobs: {t.jobs} ({t.scrape} scrape, {t.enrich} enrich)",
        f"kills (SIGKILL): {t.kills} ({t.second_daemon_kills} of a second daemon on the same data dir)",
        f"steps stored: {t.steps}; paid answers: {t.paid}, of which re-bought before stored (buyer killed "
        f"first): {t.rebought} ({t.sold_to_the_dead} sold after their buyer had died)",
        f"lost: {t.lost}   torn: {t.torn}   duplicated: {t.duplicated}   repeated: {t.repeated}   "
        f"secrets: {t.secrets}",
        f"failed jobs: {t.failed}   bad exits: {t.bad_exits}   tracebacks: {t.tracebacks}   "
        f"torn step lines (skipped by design): {t.torn_step_lines}",
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trials", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--deadline", type=float, default=120.0, help="seconds a trial's jobs get to be final")
    p.add_argument("--dir", help="work in a fresh subdir of DIR (default: a temp dir under /tmp)")
    p.add_argument("--commit", metavar="REV", help="measure jobrunner as committed at REV (a git-archive snapshot)")
    p.add_argument("--keep", action="store_true", help="keep the data dir of a trial that failed a check")
    p.add_argument("-v", "--verbose", action="store_true", help="a line per trial")
    args = p.parse_args()
    if args.commit:
        c.use_commit(args.commit)
    c.header(f"torture: {args.trials} trials, seed {args.seed}")
    with c.given_dir(args.dir) if args.dir else c.root_dir() as base:
        print(f"filesystem: {c.fs_note(base)}\n", flush=True)
        totals = run(args.trials, args.seed, base, deadline_s=args.deadline, keep=args.keep, verbose=args.verbose)
    print()
    print(report(totals))
    return 1 if totals.violations else 0


if __name__ == "__main__":
    sys.exit(main())
