"""The web server's pure parts, by tables: the old platform's shapes, query values, the listen address, the
token's sources. (Everything else is tested through the real server: tests/test_web_api.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobrunner.errors import ConfigError, InvalidRequest
from jobrunner.web import legacy, lookup
from jobrunner.web.config import Bind, load_token


@pytest.mark.parametrize(("body", "expected"), [
    ({"searchParams": {"titleKeywords": "CTO", "location": "Denver"}, "maxPages": 3, "maxResults": 50},
     {"type": "scrape", "search": {"title_keywords": "CTO", "location": "Denver"}, "max_pages": 3, "max_results": 50}),
    ({"searchParams": {"searchUrl": "https://www.linkedin.com/sales/search/people?x=1", "keywords": ""}},
     {"type": "scrape", "search": {"url": "https://www.linkedin.com/sales/search/people?x=1"}}),
    ({"searchParams": {"company_headcount_max": 50, "changedJobs": True, "pastCompany": None}, "metadata": {"a": 1},
      "id": "x1", "priority": 3},
     {"type": "scrape", "search": {"company_headcount_max": 50, "changed_jobs": True}, "metadata": {"a": 1},
      "id": "x1", "priority": 3}),
    ({"searchParams": {"keywords": "x"}, "maxPages": None}, {"type": "scrape", "search": {"keywords": "x"}}),
    ({"search": {"keywords": "x"}, "max_pages": 2}, {"type": "scrape", "search": {"keywords": "x"}, "max_pages": 2}),
    ({"type": "scrape", "search": {"keywords": "x"}}, {"type": "scrape", "search": {"keywords": "x"}}),
])
def test_scrape_bodies_of_both_forms(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert legacy.scrape_request(body) == expected


def test_every_search_field_has_its_camel_case_name() -> None:
    from jobrunner.providers.linkedin import Search

    assert set(legacy.SEARCH_FIELDS) == set(Search.model_fields)
    assert legacy.SEARCH_NAMES["yearsExperienceMin"] == "years_experience_min"
    assert legacy.SEARCH_NAMES["url"] == legacy.SEARCH_NAMES["searchUrl"] == "url"


def test_parsed_data_is_read_as_the_csv_it_stands_for() -> None:
    rows = legacy.parsed_data_leads({"headers": ["Full Name", "E-mail", "Zip Code", "Notes"],
                                     "rows": [["Ada Lovelace", "ada@example.com", 2134.0, None],
                                              {"Full Name": "Alan Turing", "Notes": "met, at a fair"}]})
    assert rows == [{"name": "Ada Lovelace", "email": "ada@example.com", "zip": "2134", "Notes": ""},
                    {"name": "Alan Turing", "Notes": "met, at a fair"}]
    with pytest.raises(InvalidRequest, match=r"rows\[0\]: a cell must be text or a number"):
        legacy.parsed_data_leads({"headers": ["Name"], "rows": [[{"nested": 1}]]})
    with pytest.raises(InvalidRequest, match=r"rows\[0\] must be a list"):
        legacy.parsed_data_leads({"headers": ["Name"], "rows": ["Ada"]})


@pytest.mark.parametrize(("doc", "expected"), [
    ({"id": "a", "type": "scrape", "status": "running", "progress": {"current": 2, "total": 8, "percentage": 25.0,
                                                                      "note": "pages"},
      "started_at": "T1", "finished_at": None, "error": None, "metadata": {"m": 1}, "attempt": 1},
     {"jobId": "a", "type": "scraping", "status": "running", "progress": {"current": 2, "total": 8,
                                                                          "percentage": 25.0},
      "startedAt": "T1", "completedAt": None, "error": None, "metadata": {"m": 1}}),
    ({"id": "b", "type": "enrich", "status": "failed", "started_at": "T1", "finished_at": "T2",
      "error": {"type": "PermanentError", "message": "no key", "retryable": False}},
     {"jobId": "b", "type": "enrichment", "status": "failed", "progress": {"current": 0, "total": None,
                                                                           "percentage": None},
      "startedAt": "T1", "completedAt": "T2", "error": "no key", "metadata": {}}),
    ({"id": "c", "type": "hello", "status": "pending"},
     {"jobId": "c", "type": "hello", "status": "pending", "progress": {"current": 0, "total": None, "percentage": None},
      "startedAt": None, "completedAt": None, "error": None, "metadata": {}}),
])
def test_a_status_document_in_the_old_shape(doc: dict[str, Any], expected: dict[str, Any]) -> None:
    assert legacy.old_job(doc) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (None, 50), ("", 50), ("1", 1), ("1000", 1000), ("007", 7), (" 5 ", 5),
    ("0", None), ("-1", None), ("1001", None), ("NaN", None), ("1e3", None), ("1.0", None), ("Infinity", None),
    ("99999999999", None), ("٣", None),
])
def test_limits(value: str | None, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(InvalidRequest, match="whole number from 1 to 1000"):
            lookup.parse_limit(value)
    else:
        assert lookup.parse_limit(value) == expected


@pytest.mark.parametrize(("text", "host", "port", "loopback"), [
    ("127.0.0.1:8288", "127.0.0.1", 8288, True), ("localhost:80", "127.0.0.1", 80, True),
    ("[::1]:0", "::1", 0, True), ("0.0.0.0:8288", "0.0.0.0", 8288, False), ("10.1.2.3:1", "10.1.2.3", 1, False),
    ("127.8.9.10:5", "127.8.9.10", 5, True),
])
def test_bind_addresses(text: str, host: str, port: int, loopback: bool) -> None:
    bind = Bind.parse(text)
    assert (bind.host, bind.port, bind.loopback) == (host, port, loopback)


@pytest.mark.parametrize("text", ["8288", "127.0.0.1", ":80", "127.0.0.1:http", "127.0.0.1:70000", "example.com:80",
                                  "[::1]"])
def test_bad_bind_addresses(text: str) -> None:
    with pytest.raises(ConfigError, match="--bind"):
        Bind.parse(text)


def test_token_sources_in_order_and_never_in_a_message(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "web_token").write_text("from-the-credential-123\n")
    file = tmp_path / "token"
    file.write_text("from-the-file-1234567\n")
    env = {"JOBRUNNER_WEB_TOKEN": "from-the-environment-1", "CREDENTIALS_DIRECTORY": str(creds)}
    assert load_token(str(file), env).reveal() == "from-the-environment-1"  # type: ignore[union-attr]
    assert load_token(str(file), {"CREDENTIALS_DIRECTORY": str(creds)}).reveal() == "from-the-credential-123"  # type: ignore[union-attr]
    assert load_token(str(file), {}).reveal() == "from-the-file-1234567"  # type: ignore[union-attr]
    assert load_token(None, {}) is None
    assert "from-the" not in repr(load_token(str(file), {}))
    with pytest.raises(ConfigError) as short:
        load_token(None, {"JOBRUNNER_WEB_TOKEN": "tiny-secret"})
    assert "tiny-secret" not in str(short.value) and "at least 16" in str(short.value)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_token(str(tmp_path / "missing"), {})
