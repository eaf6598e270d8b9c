"""The dashboard in a real headless Chromium (Debian's chromium and chromium-driver, through selenium),
against the real server, a real daemon and the provider sandbox: a person submits a scrape from the page,
watches its bar move, opens the job, downloads its results, cancels a running job, retries it, filters the
runs list, and logs in with a token.

Skipped, saying why, when Chromium or its driver is missing (`apt-get install chromium chromium-driver`);
under CI (CI=true) a missing browser is a failure instead, since `.ci/run` installs it.
With JOBRUNNER_SCREENSHOTS=docs the screenshots of the panel and of the job page are written to docs/ (how
the committed ones were made); otherwise to the test's temp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Daemon, DataDir, WebServer, wait_for
from test_scrape import provider_env

from jobrunner.sandbox import Faults, Sandbox

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1000", "--lang=en-US")
REFRESH_MS = "250"
REPO = Path(__file__).resolve().parent.parent


def _missing() -> str | None:
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        return "Chromium or chromedriver is not installed (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


MISSING = _missing()
if MISSING and os.environ.get("CI") == "true":
    pytest.fail(f"browser tests must run in CI: {MISSING}", pytrace=False)
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@pytest.fixture(scope="module")
def downloads() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="jobrunner-downloads-") as folder:
        yield Path(folder)


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="jobrunner-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser: Any) -> Any:
    """The browser, with no cookies and no saved settings from an earlier test."""
    browser.delete_all_cookies()
    return browser


def screenshot_dir(tmp_path: Path) -> Path:
    chosen = os.environ.get("JOBRUNNER_SCREENSHOTS")
    return (REPO / chosen) if chosen else tmp_path


def css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def css_all(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def gone_stale(fn: Callable[[], Any]) -> Callable[[], Any]:
    """A condition that treats an element replaced by the refresh (stale) as "not yet"."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def check() -> Any:
        try:
            return fn()
        except (StaleElementReferenceException, NoSuchElementException):
            return None

    return check


def full_page_shot(driver: Any, path: Path) -> None:
    """A screenshot of the whole page (the window made as tall as the page, then put back)."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1280, min(max(height + 140, 600), 2600))  # + the window's own frame
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(1280, 1000)


def own_resources_only(driver: Any, base: str) -> None:
    """Everything the page loaded came from this server: it works offline, with no CDN."""
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and all(u.startswith(base) for u in urls), urls


def test_submit_a_scrape_watch_its_bar_move_open_it_and_download_the_results(
        data: DataDir, daemons: Callable[..., Daemon], web_servers: Callable[..., WebServer],
        sandbox: Sandbox, page: Any, downloads: Path, tmp_path: Path) -> None:
    sandbox.set_faults(Faults(latency_ms=350, error_rate=0.15))  # a few retried calls, for the step log
    data.extra_env.update(provider_env(sandbox))
    daemons()
    web = web_servers("--refresh-ms", REFRESH_MS)
    with web.client() as http:  # some history, and a failed job beside it, so the panel shows an error box
        for i in range(6):
            http.post("/api/jobs", json={"type": "noop", "id": f"earlier-{i}"})
        http.post("/api/jobs", json={"type": "flaky", "id": "needs-a-key", "permanent": True})
    data.wait_status("needs-a-key", ("failed",))
    page.get(web.url + "/")
    own_resources_only(page, web.url)
    css(page, "#scrape-form input[name=titleKeywords]").send_keys("Head of Growth")
    css(page, "#scrape-form input[name=location]").send_keys("Denver")
    pages = css(page, "#scrape-form input[name=maxPages]")
    pages.clear()
    pages.send_keys("12")
    limit = css(page, "#scrape-form input[name=maxResults]")
    limit.clear()
    limit.send_keys("10000")
    css(page, "#scrape-form button[type=submit]").click()
    link = wait_for(gone_stale(lambda: css(page, "#submitted-link")), 15, "the submitted job's link")
    job_id = css(page, "#scrape-form .form-result").text.split("submitted: ")[1].split()[0]
    assert link.get_attribute("href").endswith(f"/jobs/{job_id}")

    seen: list[float] = []
    shots = screenshot_dir(tmp_path)
    shot_taken = False

    def bar_value() -> bool:
        nonlocal shot_taken
        bars = css_all(page, f'#panel li.job[data-job-id="{job_id}"] progress')
        if bars and bars[0].get_attribute("value") not in (None, ""):
            value = float(bars[0].get_attribute("value"))
            if not seen or value != seen[-1]:
                seen.append(value)
            if 30 <= value <= 80 and not shot_taken:
                full_page_shot(page, shots / "dashboard.png")
                shot_taken = True
        status = data.status(job_id)
        return status is not None and status["status"] == "completed"

    wait_for(gone_stale(bar_value), 90, "the scrape to complete, watched on the panel")
    moving = [v for v in seen if 0 < v < 100]
    assert len(moving) >= 2 and moving == sorted(moving), f"the bar did not move: {seen}"
    assert shot_taken, seen
    # the panel shows it finished, then the job page
    wait_for(gone_stale(lambda: css(page, f'#panel li.job[data-job-id="{job_id}"] .badge-completed')), 15,
             "the panel to show the job completed")
    assert "ProviderRejected" in css(page, '#panel li.job[data-job-id="needs-a-key"] .error-box').text \
        or "PermanentError" in css(page, '#panel li.job[data-job-id="needs-a-key"] .error-box').text
    css(page, f'#panel li.job[data-job-id="{job_id}"] a.job-id').click()
    wait_for(lambda: page.current_url.endswith(f"/jobs/{job_id}"), 10, "the job page")
    assert css(page, "#job .badge").text == "completed"
    doc = data.status(job_id)
    assert doc is not None
    rows = css_all(page, "table.attempts tbody tr")
    assert len(rows) == len(doc["history"]) >= 1 and "completed" in rows[-1].text
    log = css(page, "#step-log").text
    assert "page-1" in log and "job completed" in log
    leads = doc["result"]["leads"]
    assert css(page, "#results-count").text.startswith(f"{leads:,} row(s)")
    assert len(css_all(page, "table.preview tbody tr")) == min(20, leads)
    assert css_all(page, "#cancel") == [] and css_all(page, "#retry") == []  # completed: neither applies
    assert css(page, "#enrich-these").text == "Enrich these leads"
    own_resources_only(page, web.url)
    full_page_shot(page, shots / "job-page.png")

    css(page, "#download-csv").click()
    target = downloads / f"{job_id}.csv"
    wait_for(lambda: target.exists() and target.stat().st_size > 0, 20, f"the download {target}")
    with web.client() as http:
        expected = http.get(f"/api/jobs/{job_id}/results", params={"format": "csv"}).text
    assert target.read_text() == expected
    assert expected.count("\n") == leads + 1

    # and on to enrichment: the button submits the leads it found, and opens the new job
    css(page, "#enrich-these").click()
    wait_for(lambda: "/jobs/" in page.current_url and not page.current_url.endswith(f"/jobs/{job_id}"), 15,
             "the enrich job's page")
    new_id = page.current_url.rsplit("/jobs/", 1)[1]
    enrich = wait_for(lambda: data.status(new_id), 30, "the enrich job's status")
    assert enrich["type"] == "enrich" and enrich["metadata"] == {"from_job": job_id}


def test_cancel_a_running_job_from_its_page_then_retry_it(
        data: DataDir, daemons: Callable[..., Daemon], web_servers: Callable[..., WebServer], page: Any) -> None:
    daemons()
    web = web_servers("--refresh-ms", REFRESH_MS)
    with web.client() as http:
        http.post("/api/jobs", json={"type": "count", "id": "long-one", "steps": 600, "step_seconds": 0.05})
    data.wait_status("long-one", ("running",))
    page.get(web.url + "/jobs/long-one")
    assert css(page, "#job .badge").text == "running"
    before = float(css(page, "#job progress").get_attribute("value"))
    wait_for(gone_stale(lambda: float(css(page, "#job progress").get_attribute("value")) > before), 15,
             "the job page's bar to move")
    css(page, "#cancel").click()
    wait_for(gone_stale(lambda: css(page, "#job .badge").text == "cancelled"), 20, "the page to show cancelled")
    doc = data.wait_status("long-one", ("cancelled",))
    assert doc["error"]["type"] == "Cancelled" and 0 < doc["progress"]["current"] < 600
    assert css_all(page, "#cancel") == []
    css(page, "#retry").click()
    wait_for(gone_stale(lambda: css(page, "#job .badge").text in ("pending", "running")), 20,
             "the page to show the job again waiting or running")
    assert data.wait_status("long-one", ("running", "completed"))["status"] in ("running", "completed")
    with web.client() as http:
        http.post("/api/jobs/long-one/cancel")


def test_the_runs_list_filters_by_state_type_and_time_and_finds_by_id(
        data: DataDir, daemons: Callable[..., Daemon], web_servers: Callable[..., WebServer], page: Any) -> None:
    from selenium.webdriver.support.ui import Select

    daemons()
    web = web_servers("--refresh-ms", REFRESH_MS)
    with web.client() as http:
        for i in range(5):
            http.post("/api/jobs", json={"type": "noop", "id": f"batch-{i}"})
        http.post("/api/jobs", json={"type": "flaky", "id": "broken-7", "permanent": True})
    for i in range(5):
        data.wait_status(f"batch-{i}")
    data.wait_status("broken-7", ("failed",))

    page.get(web.url + "/runs")
    shown = {row.get_attribute("data-job-id") for row in css_all(page, "table.runs tbody tr")}
    assert shown == {f"batch-{i}" for i in range(5)} | {"broken-7"}
    Select(css(page, "#filter-status")).select_by_value("failed")
    Select(css(page, "#filter-since")).select_by_value("24h")
    css(page, "#filters button[type=submit]").click()
    wait_for(lambda: "status=failed" in page.current_url, 10, "the filtered list")
    rows = css_all(page, "table.runs tbody tr")
    assert [r.get_attribute("data-job-id") for r in rows] == ["broken-7"]
    assert "PermanentError" in rows[0].text
    Select(css(page, "#filter-status")).select_by_value("")
    Select(css(page, "#filter-type")).select_by_value("noop")
    css(page, "#filter-q").send_keys("batch-3")
    css(page, "#filters button[type=submit]").click()
    wait_for(lambda: "q=batch-3" in page.current_url, 10, "the search")
    assert [r.get_attribute("data-job-id") for r in css_all(page, "table.runs tbody tr")] == ["batch-3"]
    # auto-refresh can be turned off, and stays off
    toggle = css(page, "#auto-refresh")
    assert toggle.is_selected()
    toggle.click()
    page.refresh()
    assert not css(page, "#auto-refresh").is_selected()
    css(page, "#auto-refresh").click()
    assert css(page, "#auto-refresh").is_selected()


def test_with_a_token_the_browser_logs_in_and_its_forms_work_through_the_session(
        data: DataDir, web_servers: Callable[..., WebServer], page: Any) -> None:
    token = "browser-token-" + os.urandom(8).hex()
    web = web_servers("--refresh-ms", REFRESH_MS, env={"JOBRUNNER_WEB_TOKEN": token})
    page.get(web.url + "/runs")
    wait_for(lambda: "/login" in page.current_url, 10, "the login page")
    css(page, "#token").send_keys("not-the-token-at-all")
    css(page, "#login button[type=submit]").click()
    wait_for(gone_stale(lambda: "That is not the token" in css(page, ".error-box").text), 10, "the refusal")
    css(page, "#token").send_keys(token)
    css(page, "#login button[type=submit]").click()
    wait_for(lambda: page.current_url.endswith("/runs"), 10, "the runs page after logging in")
    cookies = {c["name"]: c for c in page.get_cookies()}
    assert cookies["jobrunner_session"]["httpOnly"] and token not in cookies["jobrunner_session"]["value"]
    assert token not in page.page_source
    page.get(web.url + "/")
    css(page, "#scrape-form input[name=keywords]").send_keys("growth")
    css(page, "#scrape-form button[type=submit]").click()
    wait_for(gone_stale(lambda: css(page, "#submitted-link")), 15, "the submitted job's link")
    [request] = [json.loads(p.read_bytes()) for p in data.queue.glob("*.json")]
    assert request["search"] == {"keywords": "growth"}
    css(page, "form.logout button").click()
    wait_for(lambda: "/login" in page.current_url, 10, "the login page after logging out")
    with httpx.Client(base_url=web.url) as anon:  # the session cookie means nothing without the browser
        assert anon.get("/api/jobs").status_code == 401
