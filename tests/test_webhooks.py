"""Webhooks, end to end: a real daemon posting to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, DataDir, run_burst, wait_for


class Receiver:
    """Records every POST. ``answers`` is popped one per request (then 200); ``hold`` makes requests
    wait until it is set (a receiver that is slow, or down mid-request)."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.answers: list[int] = []
        self.hold = threading.Event()
        self.hold.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.got.append({"path": self.path, "headers": dict(self.headers), "body": body})
                receiver.hold.wait(60)
                code = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posts(self, path: str) -> list[dict[str, Any]]:
        return [g for g in self.got if g["path"] == path]

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def fast(data: DataDir, tmp_path: Path, **webhooks: Any) -> None:
    """Webhook settings for tests, through the config file (short backoff)."""
    lines = ["[webhooks]", "backoff_s = 0.05"] + [f"{k} = {json.dumps(v)}" for k, v in webhooks.items()]
    config = tmp_path / "jobrunner.toml"
    config.write_text("\n".join(lines) + "\n")
    data.extra_env["JOBRUNNER_CONFIG"] = str(config)


def verify(secret: str, post: dict[str, Any]) -> bool:
    """What a receiver does with X-Jobrunner-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">."""
    fields = dict(part.split("=", 1) for part in post["headers"]["X-Jobrunner-Signature"].split(","))
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + post["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


def test_final_jobs_are_posted_signed_retried_and_never_waited_for(
        data: DataDir, daemons: Callable[..., Daemon], receiver: Receiver, tmp_path: Path) -> None:
    secret = "whsec-" + secrets.token_hex(12)
    fast(data, tmp_path)
    data.extra_env.update({"JOBRUNNER_WEBHOOK_SECRET": secret, "JOBRUNNER_WEBHOOK_URL_FLAKY": receiver.url + "/flaky"})
    receiver.hold.clear()  # the receiver sits on the first delivery...
    receiver.answers = [503]  # ...then answers it 503: tried again
    daemon = daemons()
    data.drop("a.json", {"type": "noop", "id": "a", "notify_url": receiver.url + "/hook?token=abc",
                         "metadata": {"crm": 7}})
    wait_for(lambda: receiver.posts("/hook?token=abc"), 20, "the first try")
    assert data.wait_status("a")["status"] == "completed"  # final on disk while its webhook is still stuck
    data.drop("b.json", {"type": "noop", "id": "b"})  # no URL for noop: no webhook; and the daemon goes on
    data.wait_status("b")
    receiver.hold.set()
    wait_for(lambda: len(receiver.posts("/hook?token=abc")) == 2, 20, "the retry after the 503")
    data.drop("c.json", {"type": "flaky", "id": "c", "permanent": True})  # the type's URL
    data.wait_status("c", ("failed",))
    wait_for(lambda: receiver.posts("/flaky"), 20, "the failed job's webhook")
    wait_for(lambda: not any(data.jobs.joinpath(".outbox").iterdir()), 20, "the outbox to empty")

    first, second = receiver.posts("/hook?token=abc")
    for post in (first, second):
        assert post["headers"]["Content-Type"] == "application/json"
        assert post["headers"]["X-Jobrunner-Event"] == "job.completed"
        assert verify(secret, post)
    assert first["body"] == second["body"]  # the same delivery, tried twice: receivers de-duplicate by its id
    assert first["headers"]["X-Jobrunner-Delivery"] == second["headers"]["X-Jobrunner-Delivery"]
    body = json.loads(first["body"])
    assert body["event"] == "job.completed" and body["delivery"] == first["headers"]["X-Jobrunner-Delivery"]
    assert body["job"] == {k: v for k, v in data.status("a").items() if k != "claim"}  # type: ignore[union-attr]
    assert body["job"]["metadata"] == {"crm": 7}
    failed = json.loads(receiver.posts("/flaky")[0]["body"])
    assert failed["event"] == "job.failed" and failed["job"]["error"]["type"] == "PermanentError"
    assert verify(secret, receiver.posts("/flaky")[0])
    assert len(receiver.got) == 3  # nothing for b

    log = data.cli("logs", "a").stdout
    assert "webhook job.completed delivered to http://127.0.0.1" in log and "token=abc" not in log
    assert daemon.term() == 0
    assert "token=abc" not in daemon.output()  # a URL's path and query may be secret: logs show its host
    for path in [*data.root.rglob("*"), daemon.log_path]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_a_delivery_in_flight_at_a_kill9_is_made_after_the_restart(
        data: DataDir, daemons: Callable[..., Daemon], receiver: Receiver, tmp_path: Path) -> None:
    fast(data, tmp_path)
    receiver.hold.clear()
    daemon = daemons()
    data.drop("k.json", {"type": "noop", "id": "k", "notify_url": receiver.url + "/k"})
    data.wait_status("k")
    wait_for(lambda: receiver.posts("/k"), 20, "the delivery to start")
    daemon.kill()  # the receiver never answered
    assert (data.jobs / ".outbox" / "k.json").exists()
    receiver.hold.set()
    daemons()
    wait_for(lambda: len(receiver.posts("/k")) == 2, 20, "the delivery again, by the next daemon")
    wait_for(lambda: not (data.jobs / ".outbox" / "k.json").exists(), 20, "the entry to go once delivered")
    first, again = receiver.posts("/k")
    assert first["headers"]["X-Jobrunner-Delivery"] == again["headers"]["X-Jobrunner-Delivery"]


def test_a_receiver_that_is_down_or_refuses_costs_the_job_nothing(
        data: DataDir, daemons: Callable[..., Daemon], receiver: Receiver, tmp_path: Path) -> None:
    fast(data, tmp_path, tries=3)
    receiver.answers = [404]
    daemon = daemons()
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    down = f"http://127.0.0.1:{closed.server_address[1]}/hook"
    closed.server_close()  # nothing listens there now
    data.drop("d.json", {"type": "noop", "id": "d", "notify_url": down})
    data.drop("r.json", {"type": "noop", "id": "r", "notify_url": receiver.url + "/r"})
    assert data.wait_status("d")["status"] == "completed"
    assert data.wait_status("r")["status"] == "completed"
    wait_for(lambda: "gave up after 3 tries" in daemon.output(), 20, "the give-up line")
    wait_for(lambda: "refused on 1 try" in daemon.output(), 20, "the refusal line")
    assert "[d] webhook job.completed to http://127.0.0.1" in daemon.output()
    assert len(receiver.posts("/r")) == 1  # a 404 is not tried again
    assert "not delivered: HTTP 404" in data.cli("logs", "r").stdout
    wait_for(lambda: not any(data.jobs.joinpath(".outbox").iterdir()), 10, "the outbox to empty")


def test_cancelled_is_posted_only_when_configured(data: DataDir, daemons: Callable[..., Daemon],
                                                  receiver: Receiver, tmp_path: Path) -> None:
    fast(data, tmp_path, events=["completed", "failed", "cancelled"])
    later = "2999-01-01T00:00:00Z"
    data.drop("p.json", {"type": "noop", "id": "p", "not_before": later, "notify_url": receiver.url + "/p"})
    daemon = daemons()
    data.wait_status("p", ("pending",))
    assert data.cli("cancel", "p").returncode == 0  # `jobrunner cancel` records the delivery; the daemon posts it
    wait_for(lambda: receiver.posts("/p"), 10, "the cancelled job's webhook (seen by the watch, not the 30 s scan)")
    assert json.loads(receiver.posts("/p")[0]["body"])["event"] == "job.cancelled"
    assert daemon.term() == 0


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "http://", "hook"])
def test_a_notify_url_that_is_not_http_is_rejected(data: DataDir, daemons: Callable[..., Daemon], url: str) -> None:
    daemons()
    data.drop("bad.json", {"type": "noop", "id": "bad", "notify_url": url})
    doc = data.wait_status("bad", ("failed",))
    assert doc["error"]["message"].startswith("notify_url: must be an http:// or https:// URL with a host")


def test_a_bad_webhook_configuration_stops_the_daemon_with_78(data: DataDir, tmp_path: Path) -> None:
    fast(data, tmp_path, events=["completed", "finished"])
    out = data.cli("run", "--burst")
    assert out.returncode == 78 and "choose from completed, failed, cancelled" in out.stderr, out.stderr


def test_a_burst_run_posts_its_jobs_webhooks_before_it_exits(data: DataDir, receiver: Receiver, tmp_path: Path) -> None:
    fast(data, tmp_path)
    for i in range(5):
        data.drop(f"{i}.json", {"type": "noop", "id": f"b{i}", "notify_url": f"{receiver.url}/b{i}"})
    out = run_burst(data)
    assert out.returncode == 0, out.stderr
    assert sorted(g["path"] for g in receiver.got) == [f"/b{i}" for i in range(5)]  # all of them, already
    assert not any(data.jobs.joinpath(".outbox").iterdir())
