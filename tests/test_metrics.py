"""`run --metrics-file`: the node_exporter textfile a real daemon writes, read with prometheus_client's own
parser (what node_exporter itself accepts), and its figures checked against what happened."""

from __future__ import annotations

import itertools
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Daemon, DataDir, wait_for
from prometheus_client.parser import text_string_to_metric_families
from test_scrape import provider_env, scrape

from jobrunner.sandbox import Faults, Sandbox

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def read_metrics(path: Path) -> tuple[Series, dict[str, str]]:
    """Every sample as {(name, sorted labels): value}, and each family's type. Raises if it does not parse."""
    samples: Series = {}
    types = {}
    for family in text_string_to_metric_families(path.read_text()):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def value(samples: Series, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def total(samples: Series, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_the_metrics_file_parses_and_counts_what_happened(data: DataDir, daemons: Callable[..., Daemon],
                                                          sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.set_faults(Faults(error_rate=0.3))
    data.extra_env.update(provider_env(sandbox))
    prom = tmp_path / "textfile" / "jobrunner.prom"
    prom.parent.mkdir()
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    daemon = daemons("--metrics-file", str(prom), "--metrics-interval", "0.2")
    data.drop("s.json", scrape("scr", 4))
    data.drop("ok.json", {"type": "noop", "id": "ok"})
    data.drop("bad.json", {"type": "flaky", "id": "bad", "permanent": True})
    data.drop("twice.json", {"type": "flaky", "id": "twice", "fail_times": 1})
    data.drop("later.json", {"type": "noop", "id": "later", "not_before": later})
    data.drop("junk.json", b"{not json")
    for job_id in ("scr", "ok", "twice"):
        data.wait_status(job_id, timeout=60)
    data.wait_status("bad", ("failed",))
    data.wait_status("later", ("pending",))

    def settled() -> Series | None:
        samples, _ = read_metrics(prom)
        done = total(samples, "jobrunner_jobs_finished_total")
        return samples if done == 4 and value(samples, "jobrunner_deferred_jobs") == 1 else None

    samples = wait_for(settled, 20, "the metrics file to count four finished jobs and one deferred")
    _, types = read_metrics(prom)
    assert value(samples, "jobrunner_jobs_finished_total", type="scrape", status="completed") == 1
    assert value(samples, "jobrunner_jobs_finished_total", type="noop", status="completed") == 1
    assert value(samples, "jobrunner_jobs_finished_total", type="flaky", status="failed") == 1
    assert value(samples, "jobrunner_jobs_finished_total", type="flaky", status="completed") == 1
    assert value(samples, "jobrunner_attempts_total", type="flaky", outcome="retry") == 1
    assert value(samples, "jobrunner_requests_rejected_total") == 1
    # every HTTP answer the sandbox gave is counted once, by its status code
    answered = sandbox.stats()["status_counts"]
    assert {code: value(samples, "jobrunner_provider_calls_total", provider="linkedin", code=code)
            for code in answered} == {code: float(n) for code, n in answered.items()}
    assert value(samples, "jobrunner_provider_calls_total", provider="linkedin", code="200") == 4  # 4 pages
    errors = sum(n for code, n in answered.items() if code.startswith("5"))
    assert errors > 0  # the faults were on (30% of calls): their retries are counted too
    assert value(samples, "jobrunner_provider_retries_total", provider="linkedin") == errors
    # what waits now: the job for later, by state and type; its age is the oldest pending one's
    assert value(samples, "jobrunner_jobs", status="pending", type="noop") == 1
    assert value(samples, "jobrunner_queue_files") == 0
    assert (value(samples, "jobrunner_oldest_pending_age_seconds") or 0) > 0
    # histograms: one observation per attempt that ended, buckets cumulative up to +Inf
    assert types["jobrunner_attempt_duration_seconds"] == "histogram"
    assert value(samples, "jobrunner_attempt_duration_seconds_count", type="flaky") == 3
    buckets = sorted((float(dict(ls)["le"]), v) for (n, ls), v in samples.items()
                     if n == "jobrunner_attempt_duration_seconds_bucket" and dict(ls)["type"] == "scrape")
    assert buckets[-1] == (float("inf"), 1) and all(a[1] <= b[1] for a, b in itertools.pairwise(buckets))
    assert value(samples, "jobrunner_queue_wait_seconds_count", type="noop") == 1  # "later" has not started
    assert types["jobrunner_jobs_finished"] == "counter"  # (the parser names a counter without its _total)
    assert daemon.term() == 0
    read_metrics(prom)  # the last write at exit parses too
    assert [p.name for p in prom.parent.iterdir()] == ["jobrunner.prom"]  # no temp file left for the collector


def test_each_worker_writes_its_own_file_with_its_label(data: DataDir, daemons: Callable[..., Daemon],
                                                        tmp_path: Path) -> None:
    prom = tmp_path / "w.prom"
    daemon = daemons("--workers", "2", "--metrics-file", str(prom), "--metrics-interval", "0.2")
    for i in range(20):
        data.drop(f"{i}.json", {"type": "noop", "id": f"n{i}"})
    for i in range(20):
        data.wait_status(f"n{i}")
    files = [tmp_path / "w-w0.prom", tmp_path / "w-w1.prom"]

    def counted() -> bool:
        return all(f.exists() for f in files) and sum(
            total(read_metrics(f)[0], "jobrunner_jobs_finished_total") for f in files) == 20 \
            and value(read_metrics(files[0])[0], "jobrunner_queue_files", worker="0") == 0

    wait_for(counted, 20, "both workers' files to count the 20 jobs, and worker 0's an empty queue")
    first, second = (read_metrics(f)[0] for f in files)
    assert {dict(ls).get("worker") for (_, ls) in first} == {"0"}
    assert {dict(ls).get("worker") for (_, ls) in second} == {"1"}
    assert not any(n == "jobrunner_queue_files" for n, _ in second)  # the spool's state: worker 0 only
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0


@pytest.mark.parametrize(("name", "why"), [("metrics.txt", "only *.prom"), ("nodir/m.prom", "is not a directory")])
def test_a_bad_metrics_path_is_a_usage_error(data: DataDir, tmp_path: Path, name: str, why: str) -> None:
    out = data.cli("run", "--burst", "--metrics-file", str(tmp_path / name))
    assert out.returncode == 2 and why in out.stderr, out.stderr
