"""`jobrunner demo`: a scrape from submission to results, against the sandbox, with nothing to set up.

It starts the sandbox (in this process) with a rate limit and some failing calls, starts a real daemon
(a child process) on the data dir, submits a scrape, shows its progress, and ends with the status table,
the result and where the leads are. Both are stopped before it returns, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from . import control
from .layout import Layout

RATE = (5, 4.0)  # the demo's Sales Navigator limit: 5 calls per 4 s (the real one: 5 a minute)
READY_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 600.0


def run_demo(layout: Layout, pages: int) -> int:
    from .sandbox import Faults, Sandbox, SandboxConfig

    layout.ensure()
    log_path = layout.root / "demo-daemon.log"
    faults = Faults(latency_ms=80, error_rate=0.1, throttle_rate=0.03, rate_limit=RATE)
    with Sandbox(SandboxConfig(faults=faults)) as sandbox:
        env = {**os.environ, **sandbox.env(), "JOBRUNNER_LINKEDIN_RATE": f"{RATE[0]}/{RATE[1]:g}"}
        click.echo(f"sandbox: the provider APIs on {sandbox.url} (10% of calls fail with 5xx, some 429s, "
                   f"at most {RATE[0]} calls per {RATE[1]:g}s)")
        with open(log_path, "ab") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "jobrunner", "run", "--data-dir", str(layout.root), "--retry-base", "1"],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        try:
            if not _wait_ready(log_path, daemon):
                click.echo(f"the daemon did not start; its log: {log_path}", err=True)
                return 1
            click.echo(f"daemon: pid {daemon.pid} on {layout.root} (log: {log_path})")
            request = {
                "type": "scrape",
                "search": {"title_keywords": "VP of Sales", "location": "Austin, Texas",
                           "company_headcount_min": 51, "company_headcount_max": 500},
                "max_pages": pages, "max_results": 10_000, "metadata": {"source": "jobrunner demo"},
            }
            job_id = control.submit(layout, json.dumps(request).encode()).job_id
            click.echo(f"submitted: scrape job {job_id} ({pages} pages of a Sales Navigator search)")
            doc = _follow(layout, job_id)
        finally:
            _stop(daemon)
        calls = sandbox.stats()
    click.echo("")
    _run_cli("status", "--data-dir", str(layout.root), "--limit", "5")
    click.echo("")
    _run_cli("status", "--data-dir", str(layout.root), job_id)
    click.echo("")
    statuses = ", ".join(f"{n} x {code}" for code, n in sorted(calls.get("status_counts", {}).items()))
    click.echo(f"provider calls seen by the sandbox: {statuses or 'none'}")
    if doc is None or doc["status"] != "completed":
        click.echo(f"the job did not complete ({doc['status'] if doc else 'no status'}); daemon log: {log_path}")
        return 1
    results = layout.results(job_id)
    click.echo(f"results: {results} ({doc['result']['leads']} leads)")
    for line in results.read_text().splitlines()[:3]:
        lead = json.loads(line)
        position = lead.get("currentPosition") or {}
        click.echo(f"  {lead.get('fullName')}, {position.get('title')} at {position.get('companyName')} "
                   f"({lead.get('geoRegion')})")
    click.echo(f"export: jobrunner results {job_id} --format csv -o leads.csv"
               + (f" --data-dir {layout.root}" if layout.root != Path("data").absolute() else ""))
    return 0


def _wait_ready(log_path: Path, daemon: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    start = log_path.stat().st_size
    while time.monotonic() < deadline:
        with open(log_path, "rb") as f:
            f.seek(start)
            if b" ready: " in f.read():
                return True
        if daemon.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _follow(layout: Layout, job_id: str) -> dict[str, Any] | None:
    """Show the job's progress until it is final, as `jobrunner watch` does (a live bar on a terminal, a
    line per change elsewhere)."""
    from . import watch

    outcome = watch.watch(layout, [job_id], out=sys.stdout, interval=0.2, timeout=JOB_TIMEOUT_S)
    if outcome.code == watch.INTERRUPTED:
        raise KeyboardInterrupt  # the daemon and the sandbox are stopped on the way out
    return outcome.docs.get(job_id)


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=40)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _run_cli(*args: str) -> None:
    with contextlib.suppress(OSError):
        subprocess.run([sys.executable, "-m", "jobrunner", *args], check=False)
