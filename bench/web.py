"""The dashboard and the API of `jobrunner serve` with 10,000 jobs on disk.

    python bench/web.py [--dir DIR | --fs root|journaled|both] [--jobs 10000] [--reps 20] [--no-browser]

The data dir is made by ``bench/status.py``'s generator (not timed): finished jobs as the daemon writes
them (status files, requests, ``jobs/.recent``, ``jobs/.ledger``; ~90% completed, ~8% failed, ~2%
cancelled, spread over 7 days), 16 running, 100 deferred and 500 request files in the queue. A real
`jobrunner serve` process is started on it (127.0.0.1, a free port, no access log) and measured warm (one
untimed request first), each ``--reps`` times, median (min-max):

- the server: wall time of each page and API answer, from sending the request to the last byte (httpx,
  one keep-alive connection): the runs list unfiltered and with filters and an id search (one that finds a
  job, one that finds none, which reads the whole ledger), the panel, a job page, the old status route,
  stats;
- the browser (headless Chromium, when installed and not --no-browser): the runs list loaded as a person
  would, from navigation start to the end of the load event (the HTML, its CSS and its script, laid out),
  read from the page's Navigation Timing.

Target (issue 8): the runs list renders in under 500 ms with 10,000 jobs on disk.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c  # bench/_common.py (the script's own folder is first on sys.path)
from status import generate  # bench/status.py's generator: the same jobs on disk

TARGET_MS = 500.0
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1000")


def start_server(root: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    log = c.log_file("serve")
    out = open(log, "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([*c.jobrunner_cmd(), "serve", "--data-dir", str(root), "--bind", "127.0.0.1:0",
                             "--no-access-log"], stdout=out, stderr=subprocess.STDOUT, cwd="/")
    line = c.wait_for_line(log, "listening: ", proc, 30)
    match = re.search(r"listening: (http://\S+)", line)
    assert match, line
    return proc, match.group(1), log


def timed(client: Any, path: str, reps: int) -> tuple[list[float], int]:
    client.get(path).raise_for_status()  # warm-up, untimed
    out = []
    size = 0
    for _ in range(reps):
        t = time.perf_counter()
        answer = client.get(path)
        answer.raise_for_status()
        size = len(answer.content)
        out.append(1000 * (time.perf_counter() - t))
    return out, size


def browser_times(url: str, reps: int) -> dict[str, list[float]] | None:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        print("(no chromium/chromedriver: browser timings skipped; apt-get install chromium chromium-driver)\n")
        return None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        print("(selenium is not installed: browser timings skipped)\n")
        return None
    profile = tempfile.mkdtemp(prefix="jobrunner-bench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    times: dict[str, list[float]] = {"response end": [], "DOM content loaded": [], "load event end": []}
    try:
        driver.get(url)  # warm-up: CSS and script cached, as on a person's second visit
        for _ in range(reps):
            driver.get(url)
            nav = driver.execute_script(
                "const n = performance.getEntriesByType('navigation')[0];"
                "return [n.responseEnd - n.startTime, n.domContentLoadedEventEnd - n.startTime,"
                " n.loadEventEnd - n.startTime, document.querySelectorAll('table.runs tbody tr').length];")
            if nav[3] < 1:
                raise RuntimeError(f"the runs list at {url} shows no rows")
            for key, value in zip(times, nav[:3], strict=False):
                times[key].append(float(value))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return times


def measure_fs(label: str, base: Path, args: argparse.Namespace) -> None:
    import httpx

    print(f"## {label}: {c.fs_note(base)}")
    root = base / "data"
    g = generate(root, args.jobs)
    entries = sum(1 for _ in os.scandir(root / "jobs"))
    print(f"generated {args.jobs:,} finished jobs ({entries:,} entries in jobs/, {g['ledger']:.0f} ledger lines) "
          f"in {g['gen_s']:.1f} s (set-up, not timed); {args.reps} timed requests each after one warm-up\n")
    proc, url, log = start_server(root)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            some = client.get("/api/jobs", params={"status": "failed", "limit": "1"}).json()["jobs"][0]["id"]
            fragment = some[-9:]  # a piece of one id
            runs = [
                ("/runs", "runs list: the latest 50"),
                ("/runs?limit=500", "runs list: the latest 500"),
                ("/runs?status=failed", "runs list: failed"),
                ("/runs?status=completed&type=noop&since=24h", "runs list: completed noop, last 24h"),
                ("/runs?status=cancelled&limit=500", "runs list: cancelled, up to 500"),
                (f"/runs?q={fragment}", f"runs list: id search {fragment!r} (finds 1)"),
                ("/runs?q=no-such-id", "runs list: id search, finds none (whole ledger)"),
            ]
            others = [
                ("/", "the panel (dashboard)"),
                (f"/jobs/{some}", "a job page"),
                ("/fragments/panel", "panel fragment (each auto-refresh)"),
                ("/api/jobs/status?limit=50", "API: old status, latest 50"),
                ("/api/jobs?status=failed&limit=50", "API: native list, failed"),
                ("/api/stats?since=7d", "API: stats, 7 days"),
                ("/api/stats/over-time?since=7d&buckets=28", "API: over time, 7 days"),
            ]
            rows = []
            worst = 0.0
            for path, title in runs + others:
                took, size = timed(client, path, args.reps)
                if path.startswith("/runs"):
                    worst = max(worst, c.med(took))
                rows.append([title, f"`{path}`", f"{size / 1024:.0f} KiB", c.spread(took, "{:.1f}")])
            c.table(rows, ["what", "request", "answer", "server ms: median (min-max)"])
            verdict = "met" if worst < TARGET_MS else "MISSED"
            print(f"slowest runs-list median from the server: {worst:.1f} ms "
                  f"(target < {TARGET_MS:.0f} ms: {verdict})\n")
        if not args.no_browser:
            times = browser_times(url + "/runs", args.reps)
            if times is not None:
                c.table([[k, c.spread(v, "{:.1f}")] for k, v in times.items()],
                        ["headless Chromium, /runs (latest 50), from navigation start to", "ms: median (min-max)"])
                load = c.med(times["load event end"])
                print(f"runs list rendered in the browser (load event end): {load:.1f} ms median "
                      f"(target < {TARGET_MS:.0f} ms: {'met' if load < TARGET_MS else 'MISSED'})\n")
    finally:
        c.stop(proc)
        os.unlink(log)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_fs_args(p)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--no-browser", action="store_true", help="only the server's timings")
    args = p.parse_args()
    c.setup(args)
    c.header(f"jobrunner serve with {args.jobs:,} jobs on disk")
    for label, ctx in c.filesystems(args):
        with ctx as base:
            measure_fs(label, base, args)


if __name__ == "__main__":
    main()
