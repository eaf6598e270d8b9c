"""The provider layer's pure parts: where configuration comes from, Retry-After, and masking."""

from __future__ import annotations

import email.utils
import time
from pathlib import Path

import pytest

from jobrunner.errors import ConfigError, PermanentError
from jobrunner.providers.client import parse_retry_after
from jobrunner.providers.config import RateLimit, Secret, call_policy, load


def test_key_from_env_then_credentials_then_file(tmp_path: Path) -> None:
    conf = tmp_path / "jobrunner.toml"
    conf.write_text('[providers.linkedin]\nkey = "from-file"\nrate = "3/min"\nurl = "http://file.example"\n'
                    '[providers.carrier]\nkey = "carrier-file"\nconcurrency = 2\n')
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "linkedin_key").write_text("from-credential\n")
    env = {"JOBRUNNER_CONFIG": str(conf), "CREDENTIALS_DIRECTORY": str(creds)}
    assert load(env)["linkedin"].key == Secret("from-credential")
    assert load({**env, "JOBRUNNER_LINKEDIN_KEY": "from-env"})["linkedin"].key == Secret("from-env")
    assert load({"JOBRUNNER_CONFIG": str(conf)})["linkedin"].key == Secret("from-file")
    configs = load(env)
    assert configs["linkedin"].rate == RateLimit(3, 60.0) and configs["linkedin"].url == "http://file.example"
    assert configs["carrier"].key == Secret("carrier-file") and configs["carrier"].concurrency == 2
    assert load({**env, "JOBRUNNER_LINKEDIN_RATE": "10/2"})["linkedin"].rate == RateLimit(10, 2.0)
    assert load({})["linkedin"].rate == RateLimit(5, 60.0)  # the published limit by default
    assert load({})["dnc"].url is None


def test_missing_key_and_url_name_what_to_set() -> None:
    configs = load({})
    with pytest.raises(PermanentError, match="JOBRUNNER_SKIPTRACE_KEY"):
        configs["skiptrace"].require_key()
    with pytest.raises(PermanentError, match="JOBRUNNER_DNC_URL"):
        configs["dnc"].require_url()


@pytest.mark.parametrize("text", ["[providers.linkedin\nkey=1", '[providers]\nlinkedin = "x"',
                                  '[providers.linkedin]\nrate = "fast"', '[providers.linkedin]\nconcurrency = 0'])
def test_bad_config_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError):
        load({"JOBRUNNER_CONFIG": str(conf)})
    with pytest.raises(ConfigError, match="cannot be read"):
        load({"JOBRUNNER_CONFIG": str(tmp_path / "missing.toml")})


def test_call_policy_from_env() -> None:
    policy = call_policy({"JOBRUNNER_CALL_TRIES": "3", "JOBRUNNER_CALL_BACKOFF_S": "0.1"})
    assert policy.tries == 3 and policy.backoff_initial_s == 0.1 and policy.max_wait_s == 30.0
    with pytest.raises(ConfigError):
        call_policy({"JOBRUNNER_CALL_TRIES": "many"})


def test_a_secret_never_shows_itself() -> None:
    s = Secret("sk-live-123")
    assert "sk-live-123" not in repr(s) and "sk-live-123" not in str(s) and "sk-live-123" not in f"{s}"
    assert "sk-live-123" not in repr(load({"JOBRUNNER_LINKEDIN_KEY": "sk-live-123"}))
    assert s.reveal() == "sk-live-123"


def test_retry_after_in_both_forms() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 7 ") == 7.0
    later = email.utils.formatdate(time.time() + 90, usegmt=True)
    assert 85 <= (parse_retry_after(later) or 0) <= 91
    past = email.utils.formatdate(time.time() - 90, usegmt=True)
    assert parse_retry_after(past) == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None and parse_retry_after("-3") is None
