"""jobrunner as a service under real systemd: a container (`systemd-nspawn --volatile=yes -b`) boots systemd
as PID 1 with the shipped units, and the test acts as an operator and a producer would.

The container shares the host's /usr (volatile: everything else is a fresh tmpfs). The units are the ones
in systemd/, plus a drop-in with what only this machine needs: ExecStart pointing at this checkout's venv,
its Python (which may live under /root, hidden by ProtectHome=yes) and checkout bound in read-only,
faster daemon settings, and a 3 s watchdog. Needs root and systemd-nspawn (apt-get install
systemd-container: .ci/run installs it); skipped otherwise, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DATA = "/var/lib/jobrunner"
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="booting a container needs root"),
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None or shutil.which("nsenter") is None,
                       reason="systemd-nspawn is not installed (apt-get install systemd-container)"),
]


class Container:
    def __init__(self, root: Path) -> None:
        self.dir = root
        self.name = f"jrtest-{uuid.uuid4().hex[:8]}"
        self.console = root / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.web_port = 0

    def prepare(self) -> None:
        system = self.dir / "system"
        (system / "multi-user.target.wants").mkdir(parents=True)
        (system / "jobrunner.service.d").mkdir()
        shutil.copy(REPO / "systemd" / "jobrunner.service", system / "jobrunner.service")
        (system / "multi-user.target.wants" / "jobrunner.service").symlink_to("../jobrunner.service")
        for unit in ("systemd-firstboot.service", "systemd-networkd-wait-online.service", "getty@.service",
                     "console-getty.service"):
            (system / unit).symlink_to("/dev/null")  # nothing to wait for, nobody to log in
        base = Path(sys.base_prefix).resolve()
        readonly = " ".join(sorted({str(base), str(REPO), str(VENV_BIN.parent.resolve())}))
        (system / "jobrunner.service.d" / "test.conf").write_text(f"""[Service]
ExecStart=
ExecStart={VENV_BIN}/jobrunner run --data-dir {DATA} --settle 0.3 --rescan 0.2 --retry-base 0.2
# this machine's Python may live under /root: ProtectHome=yes would hide it
ProtectHome=tmpfs
BindReadOnlyPaths={readonly}
WatchdogSec=3s
RestartSec=1s
""")
        # the optional web unit, not enabled: its test gives it a token and starts it. The container shares
        # this machine's network, so it listens on a port that was free here a moment ago.
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.web_port = probe.getsockname()[1]
        shutil.copy(REPO / "systemd" / "jobrunner-web.service", system / "jobrunner-web.service")
        (system / "jobrunner-web.service.d").mkdir()
        (system / "jobrunner-web.service.d" / "test.conf").write_text(f"""[Service]
ExecStart=
ExecStart={VENV_BIN}/jobrunner serve --data-dir {DATA} --bind 127.0.0.1:{self.web_port}
ProtectHome=tmpfs
BindReadOnlyPaths={readonly}
RestartSec=1s
""")
        sysusers = self.dir / "sysusers"
        sysusers.mkdir()
        shutil.copy(REPO / "systemd" / "jobrunner.sysusers", sysusers / "jobrunner.conf")
        (sysusers / "producer.conf").write_text('u producer - "a producer" /tmp -\nm producer jobrunner\n')
        tmpfiles = self.dir / "tmpfiles"
        tmpfiles.mkdir()
        shutil.copy(REPO / "systemd" / "jobrunner.tmpfiles", tmpfiles / "jobrunner.conf")

    def boot(self) -> None:
        binds = [f"--bind-ro={p}" for p in sorted({str(Path(sys.base_prefix).resolve()), str(REPO),
                                                   str(VENV_BIN.parent.resolve())})]
        cmd = ["systemd-nspawn", "-D", "/", "--volatile=yes", "-b", "--register=no", "--keep-unit",
               "-M", self.name, "--console=pipe", *binds,
               f"--bind={self.dir / 'system'}:/etc/systemd/system",
               f"--bind-ro={self.dir / 'sysusers'}:/etc/sysusers.d",
               f"--bind-ro={self.dir / 'tmpfiles'}:/etc/tmpfiles.d"]
        self.log = open(self.console, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self._wait(self._init_pid, 30, "the container's init")
        # Let a producer reach this machine's Python (e.g. under /root, 0700): only directories of the
        # container's own tmpfs root are changed, never a bound host directory.
        bound = {Path(sys.base_prefix).resolve(), REPO, VENV_BIN.parent.resolve()}
        for path in bound:
            for parent in reversed(path.parents):
                if parent != Path("/") and not any(parent == b or b in parent.parents for b in bound):
                    self._wait(lambda p=parent: self.sh(f"chmod o+x {p}").returncode == 0, 10, f"chmod {parent}")
        self._wait(lambda: self.sh("systemctl is-active jobrunner").stdout.strip() == "active", 90,
                   "jobrunner.service active")

    def _init_pid(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {self.proc.returncode}: {self.output()}")
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return 0
        return int(children[0]) if children else 0

    def _wait(self, pred: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = pred()
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.debug()}")

    def sh(self, script: str, *, user: str | None = None, stdin: str | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside the container (as root, or as ``user``)."""
        inner = ["sh", "-c", script]
        if user:  # setpriv, not runuser: no PAM (the volatile container has no /etc/pam.d)
            inner = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--reset-env", *inner]
        return subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-u", "-i", "-n", "-p", "--", *inner],
                              input=stdin, capture_output=True, text=True, timeout=timeout, check=False)

    def status(self, job_id: str) -> dict[str, Any] | None:
        out = self.sh(f"cat {DATA}/jobs/{job_id}.json")
        return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else None

    def wait_status(self, job_id: str, states: tuple[str, ...] = ("completed",), timeout: float = 60) -> Any:
        return self._wait(lambda: (d := self.status(job_id)) and d["status"] in states and d, timeout,
                          f"job {job_id} in {states}")

    def show(self, prop: str) -> str:
        return self.sh(f"systemctl show -p {prop} --value jobrunner").stdout.strip()

    def output(self) -> str:
        return self.console.read_text(errors="replace")[-4000:] if self.console.exists() else ""

    def debug(self) -> str:
        if not self.pid:
            return self.output()
        journal = self.sh("journalctl -u jobrunner --no-pager -n 60").stdout
        return f"--- systemctl status:\n{self.sh('systemctl status jobrunner --no-pager').stdout}\n" \
               f"--- journal:\n{journal}\n--- console:\n{self.output()}"

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nspawn: a clean shutdown of the container
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    c = Container(tmp_path_factory.mktemp("nspawn"))
    c.prepare()
    try:
        c.boot()
        yield c
    finally:
        c.stop()


def submit(box: Container, request: dict[str, Any]) -> str:
    out = box.sh(f"{VENV_BIN}/jobrunner submit --data-dir {DATA} -", user="producer", stdin=json.dumps(request))
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


def test_a_producer_drops_a_request_and_it_completes(box: Container) -> None:
    job = submit(box, {"type": "noop", "id": "from-producer", "metadata": {"by": "producer"}})
    assert box.wait_status(job)["metadata"] == {"by": "producer"}
    # a plain file dropped by hand (write elsewhere, rename in) works the same
    out = box.sh(f"echo '{{\"type\": \"noop\", \"id\": \"by-hand\"}}' > {DATA}/queue/.tmp/h && "
                 f"mv {DATA}/queue/.tmp/h {DATA}/queue/h.json", user="producer")
    assert out.returncode == 0, out.stderr
    assert box.wait_status("by-hand")["status"] == "completed"
    # the producer can read statuses, not write them
    assert box.sh(f"cat {DATA}/jobs/by-hand.json", user="producer").returncode == 0
    assert box.sh(f"touch {DATA}/jobs/by-hand.json", user="producer").returncode != 0


def test_systemctl_status_shows_the_daemons_status_line(box: Container) -> None:
    text = box._wait(lambda: (s := box.sh("systemctl status jobrunner --no-pager").stdout) and "Status:" in s and s,
                     20, "a Status: line")
    line = next(x for x in text.splitlines() if "Status:" in x)
    assert "running" in line and "queued" in line and "failed in the last hour" in line, text


def test_stop_during_a_long_job_is_clean_and_the_job_resumes(box: Container) -> None:
    job = submit(box, {"type": "noop", "id": "long", "steps": 60, "step_seconds": 0.1})
    box._wait(lambda: (d := box.status(job)) and d["progress"]["current"] >= 3, 30, "progress")
    assert box.sh("systemctl stop jobrunner").returncode == 0
    assert box.show("Result") == "success"
    assert box.status(job)["status"] == "pending"  # parked at a step, given back to the queue
    assert box.sh("systemctl start jobrunner").returncode == 0
    doc = box.wait_status(job)
    assert [h["outcome"] for h in doc["history"]] == ["requeued", "completed"]
    assert doc["result"] == {"steps": 60}


def test_a_hung_daemon_is_killed_by_the_watchdog_restarted_and_its_job_recovered(box: Container) -> None:
    before = int(box.show("NRestarts") or 0)
    main_pid = box.show("MainPID")
    job = submit(box, {"type": "block", "id": "hang", "seconds": 3600, "on_attempts": 1})
    box._wait(lambda: int(box.show("NRestarts") or 0) > before, 40, "a restart by the watchdog")
    assert box.show("MainPID") != main_pid
    journal = box.sh("journalctl -u jobrunner --no-pager").stdout
    assert "Watchdog timeout" in journal, journal[-3000:]
    doc = box.wait_status(job, timeout=60)
    assert doc["attempt"] == 2 and [h["outcome"] for h in doc["history"]][-1] == "completed", doc


def test_reload_rereads_the_configuration_in_the_same_process(box: Container) -> None:
    main_pid = box.show("MainPID")
    assert box.sh("systemctl reload jobrunner").returncode == 0
    box._wait(lambda: "reloaded the configuration" in box.sh("journalctl -u jobrunner --no-pager").stdout, 20,
              "the reload in the journal")
    assert box.show("MainPID") == main_pid and box.show("ActiveState") == "active"


def test_without_cap_fowner_a_producers_requests_still_run_and_wait_their_turn(box: Container) -> None:
    """The unit grants CAP_FOWNER so the daemon may set times on a producer's request; without it the daemon
    falls back (the rename's ctime; a copy of its own carrying a deferred job's due time)."""
    from datetime import UTC, datetime, timedelta

    dropin = box.dir / "system" / "jobrunner.service.d" / "nocap.conf"
    dropin.write_text("[Service]\nCapabilityBoundingSet=\nAmbientCapabilities=\n")
    try:
        assert box.sh("systemctl daemon-reload && systemctl restart jobrunner").returncode == 0
        box._wait(lambda: box.show("ActiveState") == "active", 30, "restarted")
        caps = box.sh("grep CapEff /proc/$(systemctl show -p MainPID --value jobrunner)/status").stdout.split()
        assert len(caps) == 2 and int(caps[1], 16) & (1 << 3) == 0, caps  # CAP_FOWNER (3) is not effective
        now = submit(box, {"type": "noop", "id": "nocap-now"})
        due = datetime.now(UTC) + timedelta(seconds=3)
        later = submit(box, {"type": "noop", "id": "nocap-later", "not_before": due.isoformat()})
        flaky = submit(box, {"type": "flaky", "id": "nocap-flaky", "fail_times": 1})
        assert box.wait_status(now)["status"] == "completed"
        assert box.wait_status(flaky)["attempt"] == 2  # deferred once with backoff, then run again
        doc = box.wait_status(later, timeout=30)
        assert datetime.fromisoformat(doc["started_at"]) >= due - timedelta(milliseconds=50), doc  # not early
        journal = box.sh("journalctl -u jobrunner --no-pager").stdout
        assert "Permission denied" not in journal and "could not record" not in journal, journal[-3000:]
    finally:
        dropin.unlink()
        box.sh("systemctl daemon-reload && systemctl restart jobrunner")


def test_the_web_service_needs_its_token_submits_into_the_spool_and_stops_cleanly(box: Container) -> None:
    import secrets

    import httpx

    token = secrets.token_urlsafe(24)
    made = box.sh(f"mkdir -p /etc/credstore && umask 077 && printf %s '{token}' > /etc/credstore/jobrunner-web-token")
    assert made.returncode == 0, made.stderr
    started = box.sh("systemctl start jobrunner-web")
    assert started.returncode == 0, started.stderr + box.sh("journalctl -u jobrunner-web --no-pager").stdout
    box._wait(lambda: "listening:" in box.sh("journalctl -u jobrunner-web --no-pager").stdout, 30, "listening")
    main = box.sh("systemctl show -p MainPID --value jobrunner-web").stdout.strip()
    assert box.sh(f"ps -o user= -p {main}").stdout.strip() == "jobrunner"
    url = f"http://127.0.0.1:{box.web_port}"
    with httpx.Client(base_url=url, timeout=20) as http:
        assert http.get("/api/jobs").status_code == 401
        auth = {"authorization": f"Bearer {token}"}
        answer = http.post("/api/jobs", json={"type": "noop", "id": "over-http"}, headers=auth)
        assert answer.status_code == 202, answer.text
        assert box.wait_status("over-http")["status"] == "completed"  # the daemon ran the file it dropped
        job = http.get("/api/jobs/status", params={"jobId": "over-http"}, headers=auth).json()
        assert job["job"]["status"] == "completed"
    journal = box.sh("journalctl -u jobrunner-web --no-pager").stdout
    assert token not in journal and "POST /api/jobs" in journal, journal[-2000:]
    assert box.sh("systemctl stop jobrunner-web").returncode == 0
    assert box.sh("systemctl show -p Result --value jobrunner-web").stdout.strip() == "success"
