"""Metrics for Prometheus without a server: `run --metrics-file PATH` writes node_exporter's textfile
collector format, atomically (a temp file renamed over PATH), every few seconds and at exit.

Counters count since the daemon started (Prometheus's ``rate()`` and ``increase()`` handle restarts);
gauges are read off the daemon when the file is written. One registry per process: ``METRICS``. With
``run --workers N`` each worker writes its own file (``PATH`` with ``-w<i>`` before the suffix) and
labels its series ``worker="<i>"``, so node_exporter sees no duplicate series.

Point node_exporter's ``--collector.textfile.directory`` at PATH's folder; PATH must end in ``.prom``.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
FINAL_OUTCOMES = frozenset({"completed", "failed", "cancelled"})  # attempt outcomes that end the job


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class Histogram:
    buckets: tuple[float, ...] = DURATION_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1


class Metrics:
    """Counters and histograms the daemon updates as it works (cheap: dict increments)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.jobs_finished: defaultdict[tuple[str, str], int] = defaultdict(int)  # (type, status)
        self.attempts: defaultdict[tuple[str, str], int] = defaultdict(int)  # (type, outcome)
        self.attempt_seconds: defaultdict[str, Histogram] = defaultdict(Histogram)  # type
        self.queue_wait_seconds: defaultdict[str, Histogram] = defaultdict(Histogram)  # type
        self.rejected = 0
        self.provider_calls: defaultdict[tuple[str, str], int] = defaultdict(int)  # (provider, code)
        self.provider_retries: defaultdict[str, int] = defaultdict(int)
        self.rate_wait_seconds: defaultdict[str, float] = defaultdict(float)
        self.webhooks: defaultdict[tuple[str, str], int] = defaultdict(int)  # (event, outcome)

    def queue_waited(self, job_type: str, seconds: float) -> None:
        self.queue_wait_seconds[job_type].observe(max(0.0, seconds))

    def provider_call(self, provider: str, code: str, waited_s: float = 0.0) -> None:
        """One HTTP try to a provider: ``code`` is the HTTP status, or ``timeout`` / ``network``."""
        self.provider_calls[(provider, code)] += 1
        if waited_s > 0:
            self.rate_wait_seconds[provider] += waited_s

    def attempt_ended(self, job_type: str, outcome: str, seconds: float | None) -> None:
        self.attempts[(job_type, outcome)] += 1
        if seconds is not None and seconds >= 0:
            self.attempt_seconds[job_type].observe(seconds)
        if outcome in FINAL_OUTCOMES:
            self.jobs_finished[(job_type, outcome)] += 1

    def render(self, gauges: Gauges, worker: str | None = None) -> str:
        """The exposition text. ``gauges``: name -> (help, {label values: value}, label names)."""
        extra = f'worker="{_escape(worker)}"' if worker is not None else ""
        out: list[str] = []

        def family(name: str, kind: str, text: str, label_names: tuple[str, ...],
                   series: dict[tuple[str, ...], float]) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")
            for values, value in sorted(series.items()):
                out.append(f"{name}{_labels(label_names, values, extra)} {_number(value)}")

        def histograms(name: str, text: str, by_type: dict[str, Histogram]) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} histogram")
            for job_type, h in sorted(by_type.items()):
                counts = h.counts or [0] * len(h.buckets)
                for bound, n in zip(h.buckets, counts, strict=True):
                    le = f'le="{_number(bound)}"'
                    out.append(f"{name}_bucket{_labels(('type',), (job_type,), ','.join(filter(None, [le, extra])))}"
                               f" {n}")
                inf = 'le="+Inf"'
                out.append(f"{name}_bucket{_labels(('type',), (job_type,), ','.join(filter(None, [inf, extra])))}"
                           f" {h.count}")
                out.append(f"{name}_sum{_labels(('type',), (job_type,), extra)} {_number(h.total)}")
                out.append(f"{name}_count{_labels(('type',), (job_type,), extra)} {h.count}")

        family("jobrunner_start_time_seconds", "gauge", "When the daemon started (Unix time).", (),
               {(): round(self.started, 3)})
        family("jobrunner_jobs_finished_total", "counter",
               "Jobs that reached a final state, by type and status.", ("type", "status"),
               {k: float(v) for k, v in self.jobs_finished.items()})
        family("jobrunner_attempts_total", "counter",
               "Attempts that ended, by type and outcome (completed, retry, throttled, failed, requeued, cancelled).",
               ("type", "outcome"), {k: float(v) for k, v in self.attempts.items()})
        histograms("jobrunner_attempt_duration_seconds", "How long attempts ran, by type.", self.attempt_seconds)
        histograms("jobrunner_queue_wait_seconds", "From acceptance to the first attempt's start, by type.",
                   self.queue_wait_seconds)
        family("jobrunner_requests_rejected_total", "counter", "Requests set aside as invalid.", (),
               {(): float(self.rejected)})
        family("jobrunner_provider_calls_total", "counter",
               "Provider HTTP calls, by provider and outcome (the HTTP status, or timeout / network).",
               ("provider", "code"), {k: float(v) for k, v in self.provider_calls.items()})
        family("jobrunner_provider_retries_total", "counter", "Provider calls tried again, by provider.",
               ("provider",), {(k,): float(v) for k, v in self.provider_retries.items()})
        family("jobrunner_provider_rate_limit_wait_seconds_total", "counter",
               "Time calls waited for a provider's rate limit or concurrency cap, by provider.", ("provider",),
               {(k,): round(v, 3) for k, v in self.rate_wait_seconds.items()})
        family("jobrunner_webhooks_total", "counter",
               "Webhook deliveries that ended, by event and outcome (delivered, failed, skipped).",
               ("event", "outcome"), {k: float(v) for k, v in self.webhooks.items()})
        for name, (text, series, label_names) in gauges.items():
            family(name, "gauge", text, label_names, series)
        return "\n".join(out) + "\n"


METRICS = Metrics()

Gauges = dict[str, tuple[str, dict[tuple[str, ...], float], tuple[str, ...]]]


def spool_gauges(queue: Mapping[str, Any]) -> Gauges:
    """The spool's state now (``stats.queue_state``): the whole data dir's, shared by every daemon on it,
    so with ``run --workers`` only worker 0 writes these."""
    oldest = queue.get("oldest_pending_age_s")
    return {
        "jobrunner_queue_files": ("Request files waiting in queue/ (not yet accepted).",
                                  {(): float(queue["queued"])}, ()),
        "jobrunner_jobs": ("Accepted jobs in the spool now (in any daemon), by state and type; final jobs are "
                           "counted by jobrunner_jobs_finished_total.",
                           {(state, job_type): float(n) for (state, job_type), n in queue["by_type"].items()},
                           ("status", "type")),
        "jobrunner_deferred_jobs": ("Accepted jobs waiting for their next attempt or not_before.",
                                    {(): float(queue["deferred"])}, ()),
        "jobrunner_oldest_pending_age_seconds": ("Age of the oldest pending job or queued file (0: none).",
                                                 {(): float(oldest or 0.0)}, ()),
    }


def own_gauges(running: Mapping[tuple[str, ...], int]) -> Gauges:
    """This daemon's own: the jobs it runs now, by type."""
    return {"jobrunner_running_jobs": ("Jobs this daemon runs now, by type.",
                                       {k: float(v) for k, v in running.items()}, ("type",))}


def file_for(path: Path, shard: tuple[int, int]) -> tuple[Path, str | None]:
    """Where worker ``shard`` writes, and its ``worker`` label (None for a lone daemon)."""
    index, count = shard
    if count <= 1:
        return path, None
    return path.with_name(f"{path.stem}-w{index}{path.suffix}"), str(index)


def write(path: Path, text: str) -> None:
    """Replace ``path`` atomically. Not synced: a metrics file is rewritten every few seconds anyway.
    The temp name does not end in .prom, so the collector never reads a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
