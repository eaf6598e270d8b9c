"""The `scrape` job end to end: a real daemon calling the sandbox (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import JOBRUNNER, Daemon, DataDir

from jobrunner.sandbox import Faults, Sandbox

FAST_CALLS = {"JOBRUNNER_CALL_BACKOFF_S": "0.05", "JOBRUNNER_CALL_MAX_WAIT_S": "5"}


def provider_env(sb: Sandbox, **extra: str) -> dict[str, str]:
    return {**sb.env(), "JOBRUNNER_LINKEDIN_RATE": "1000/1", **FAST_CALLS, **extra}


def scrape(job_id: str, pages: int, **more: Any) -> dict[str, Any]:
    return {"type": "scrape", "id": job_id, "search": {"title_keywords": "Head of Growth", "location": "Denver"},
            "max_pages": pages, "max_results": 10_000, **more}


def results(data: DataDir, job_id: str) -> list[dict[str, Any]]:
    path = data.root / "jobs" / job_id / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def page_counts(sb: Sandbox) -> dict[int, int]:
    """Successful answers per page number of the (only) search the test made."""
    ok = sb.stats()["ok_by_request"]
    searches = {key.split()[1] for key in ok if key.startswith("linkedin ")}
    assert len(searches) == 1, ok
    return {int(key.rsplit("page=", 1)[1]): n for key, n in ok.items() if key.startswith("linkedin ")}


def test_forty_pages_through_faults_and_a_kill9_pay_for_each_page_once(
        data: DataDir, daemons: Callable[..., Daemon], sandbox: Sandbox) -> None:
    sandbox.set_faults(Faults(error_rate=0.2, throttle_rate=0.05, latency_ms=5))
    data.extra_env.update(provider_env(sandbox, JOBRUNNER_FAILPOINT="step-saved:17"))
    first = daemons()
    data.drop("s.json", scrape("big", 40))
    assert first.wait(120) == -signal.SIGKILL, first.output()  # killed right after saving page 17
    assert data.steps_done("big") == 17  # 17 pages checkpointed
    del data.extra_env["JOBRUNNER_FAILPOINT"]
    second = daemons()
    doc = data.wait_status("big", timeout=180)
    assert doc["status"] == "completed", doc
    assert [h["outcome"] for h in doc["history"]][-1] == "completed"
    rows = results(data, "big")
    urls = [r["navigationUrl"] for r in rows]
    assert len(urls) == len(set(urls)) == doc["result"]["leads"]  # no duplicates in the results
    assert doc["result"]["pages"] == 40 and doc["result"]["duplicates_dropped"] > 0
    counts = page_counts(sandbox)
    assert counts == {page: 1 for page in range(1, 41)}  # each page paid for exactly once
    stats = sandbox.stats()["status_counts"]
    assert int(stats.get("500", 0)) + int(stats.get("502", 0)) + int(stats.get("503", 0)) > 0  # faults happened
    assert int(stats.get("429", 0)) > 0
    assert second.term() == 0


def test_rate_limit_waits_and_never_trips_the_providers_limit(
        data: DataDir, daemons: Callable[..., Daemon], sandbox: Sandbox) -> None:
    sandbox.set_faults(Faults(rate_limit=(5, 2.0)))
    data.extra_env.update(provider_env(sandbox, JOBRUNNER_LINKEDIN_RATE="5/2"))
    d = daemons()
    data.drop("s.json", scrape("paced", 12))
    doc = data.wait_status("paced", timeout=60)
    assert doc["status"] == "completed" and doc["result"]["pages"] == 12, doc
    stats = sandbox.stats()
    assert "429" not in stats["status_counts"], [(round(r["t"] % 100, 3), r["status"]) for r in stats["requests"]]
    times = sorted(r["t"] for r in stats["requests"] if r["provider"] == "linkedin")
    assert len(times) == 12
    for i in range(len(times) - 5):
        assert times[i + 5] - times[i] >= 2.0, f"6 calls within {times[i + 5] - times[i]:.2f}s"
    assert doc["result"]["rate_wait_s"] >= 3.0  # it waited instead of failing
    assert d.term() == 0


@pytest.mark.parametrize(("override", "kind", "calls"), [
    (401, "ProviderRejected", 1), (403, "ProviderRejected", 1), (404, "ProviderRejected", 1),
    (503, "RetryableError", 6),  # 3 tries per attempt, 2 attempts
])
def test_bad_answers_end_in_the_right_error(data: DataDir, daemons: Callable[..., Daemon], sandbox: Sandbox,
                                            override: int, kind: str, calls: int) -> None:
    sandbox.set_faults(Faults(status_override=override))
    data.extra_env.update(provider_env(sandbox, JOBRUNNER_CALL_TRIES="3"))
    d = daemons()
    data.drop("s.json", scrape("bad", 3, max_attempts=2))
    doc = data.wait_status("bad", ("failed",), timeout=60)
    assert doc["error"]["type"] == kind, doc["error"]
    assert sandbox.stats()["calls"]["linkedin POST /premium_search_person"] == calls
    if override in (401, 403):
        assert "JOBRUNNER_LINKEDIN_KEY" in doc["error"]["message"]
        assert [h["outcome"] for h in doc["history"]] == ["failed"]  # not retried four times
    if override == 503:
        assert [h["outcome"] for h in doc["history"]] == ["retry", "failed"]
        assert doc["history"][0]["error"]["retryable"] is True
    assert d.alive
    data.drop("ok.json", {"type": "noop", "id": "still-alive"})
    assert data.wait_status("still-alive")["status"] == "completed"
    assert d.term() == 0


def test_malformed_answers_fail_the_job_clearly(data: DataDir, daemons: Callable[..., Daemon],
                                                sandbox: Sandbox) -> None:
    sandbox.set_faults(Faults(malformed_rate=1.0))
    data.extra_env.update(provider_env(sandbox, JOBRUNNER_CALL_TRIES="2"))
    d = daemons()
    data.drop("s.json", scrape("garbled", 2, max_attempts=2))
    doc = data.wait_status("garbled", ("failed",), timeout=60)
    message = doc["error"]["message"]
    assert "not JSON" in message or "unexpected format" in message, message
    assert d.alive and d.term() == 0


def test_missing_key_is_a_permanent_error_naming_the_variable(data: DataDir, daemons: Callable[..., Daemon],
                                                              sandbox: Sandbox) -> None:
    env = provider_env(sandbox)
    env.pop("JOBRUNNER_LINKEDIN_KEY")
    data.extra_env.update(env)
    d = daemons()
    data.drop("s.json", scrape("nokey", 2))
    doc = data.wait_status("nokey", ("failed",), timeout=30)
    assert doc["error"]["type"] == "PermanentError" and "JOBRUNNER_LINKEDIN_KEY" in doc["error"]["message"]
    assert sandbox.stats()["calls"] == {}
    assert d.term() == 0


def test_no_key_anywhere_after_a_run(data: DataDir, daemons: Callable[..., Daemon], sandbox: Sandbox,
                                     tmp_path: Path) -> None:
    key = sandbox.env()["JOBRUNNER_LINKEDIN_KEY"]
    sandbox.set_faults(Faults(error_rate=0.3))
    data.extra_env.update(provider_env(sandbox))
    d = daemons("--log-level", "debug")
    data.drop("s.json", scrape("secret", 4))
    assert data.wait_status("secret", timeout=60)["status"] == "completed"
    assert d.term() == 0
    # and a call with a wrong key, whose error is recorded in a status
    data.extra_env["JOBRUNNER_LINKEDIN_KEY"] = key + "-wrong"
    d2 = daemons("--log-level", "debug")
    data.drop("t.json", scrape("wrongkey", 1))
    assert data.wait_status("wrongkey", ("failed",), timeout=60)["error"]["type"] == "ProviderRejected"
    assert d2.term() == 0
    help_text = subprocess.run([*JOBRUNNER, "run", "--help"], env=data.env, capture_output=True, text=True).stdout
    found = []
    for path in [*data.root.rglob("*"), d.log_path, d2.log_path]:
        if path.is_file() and key.encode() in path.read_bytes():
            found.append(str(path))
    assert found == [] and key not in help_text


def test_results_export_jsonl_and_csv(data: DataDir, daemons: Callable[..., Daemon], sandbox: Sandbox,
                                      tmp_path: Path) -> None:
    data.extra_env.update(provider_env(sandbox))
    d = daemons()
    data.drop("s.json", scrape("export", 2))
    doc = data.wait_status("export", timeout=60)
    out = data.cli("results", "export")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == doc["result"]["leads"]
    target = tmp_path / "leads.csv"
    out = data.cli("results", "export", "--format", "csv", "-o", str(target))
    assert out.returncode == 0, out.stderr
    lines = target.read_text().splitlines()
    assert lines[0].split(",")[:2] == ["fullName", "firstName"] and "currentPosition.title" in lines[0]
    assert len(lines) == len(rows) + 1
    assert data.cli("results", "nope").returncode == 4
    assert d.term() == 0


def test_demo_runs_to_completion_and_leaves_nothing_running(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_")}
    out = subprocess.run([*JOBRUNNER, "demo", "--data-dir", str(tmp_path / "demo"), "--pages", "4"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "completed" in out.stdout and "results: " in out.stdout
    assert not list((tmp_path / "demo" / "queue" / ".claimed").iterdir())  # the daemon stopped cleanly
    pid = int(out.stdout.split("daemon: pid ", 1)[1].split()[0])
    assert not Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_a_long_retry_after_defers_the_job_without_using_an_attempt(
        data: DataDir, daemons: Callable[..., Daemon], sandbox: Sandbox, form: str) -> None:
    sandbox.set_faults(Faults(rate_limit=(1, 2.5), retry_after_form=form))  # the provider allows less than we thought
    data.extra_env.update(provider_env(sandbox, JOBRUNNER_CALL_MAX_WAIT_S="0.5"))
    d = daemons()
    data.drop("s.json", scrape("patient", 2, max_attempts=1))  # one attempt: a throttle must not use it
    doc = data.wait_status("patient", timeout=60)
    assert doc["status"] == "completed", doc
    outcomes = [h["outcome"] for h in doc["history"]]
    assert outcomes[0] == "throttled" and outcomes[-1] == "completed", outcomes
    assert doc["history"][0]["delay_s"] >= 1.0 and doc["attempt"] == 1
    assert page_counts(sandbox) == {1: 1, 2: 1}
    assert d.term() == 0


def test_the_sandbox_command_serves_and_stops_on_sigterm() -> None:
    import httpx

    proc = subprocess.Popen([*JOBRUNNER, "sandbox", "--port", "0", "--error-rate", "1"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("sandbox listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        assert httpx.get(f"{url}/_health").json() == {"ok": True}
        answer = httpx.post(f"{url}/linkedin/premium_search_person", headers={"x-rapidapi-key": "sandbox-key"},
                            json={"filters": [], "keywords": "x", "page": 1, "limit": 25})
        assert answer.status_code >= 500  # --error-rate 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
