"""The systemd units in systemd/: they load cleanly, keep their hardening, and agree with each other and
with the daemon (paths, user, exit code, drain deadline).

systemd's own checkers run them without systemd as PID 1: `systemd-analyze verify` and `security
--offline=true`, and `systemd-sysusers` / `systemd-tmpfiles` on a temporary root. On Debian they come
with `apt-get install systemd procps` (procps for /bin/kill, which ExecReload= runs and verify checks).
Tests that need a missing tool are skipped, saying which; the consistency checks need none.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from jobrunner.errors import ConfigError
from jobrunner.layout import Layout

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SERVICE = UNITS / "jobrunner.service"
WEB_SERVICE = UNITS / "jobrunner-web.service"
SERVICES = [pytest.param(SERVICE, id="jobrunner.service"), pytest.param(WEB_SERVICE, id="jobrunner-web.service")]
SYSUSERS = UNITS / "jobrunner.sysusers"
TMPFILES = UNITS / "jobrunner.tmpfiles"
DATA_DIR = Path("/var/lib/jobrunner")
MAX_EXPOSURE = 1.5  # the issue asks for 1.5 or lower; the daemon's unit measures 1.1, the web one 0.9


def needs(tool: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(shutil.which(tool) is None,
                              reason=f"{tool} is not installed (Debian: apt-get install systemd)")


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60, check=False)


def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values in order (systemd allows a key many times; continuation lines joined)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        line, logical = logical + line, ""
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path.name}: not a setting: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(key: str, unit: Path = SERVICE) -> str:
    """The effective value of a [Service] setting (the last one)."""
    return unit_settings(unit)["Service"][key][-1]


def data_lines(path: Path) -> list[list[str]]:
    """The fields of each line of a sysusers.d/tmpfiles.d file (quotes as the shell's)."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [shlex.split(line) for line in lines if line and not line.startswith("#")]


def seconds(span: str) -> float:
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span):
        total += float(number) * units[unit or "s"]
    return total


def jobrunner_script() -> Path:
    """The `jobrunner` command of the Python running the tests (what ExecStart= names once installed)."""
    beside = Path(sys.executable).parent / "jobrunner"
    found = beside if beside.exists() else Path(shutil.which("jobrunner") or beside)
    assert found.exists(), f"no jobrunner script beside {sys.executable} or on PATH: install the package first"
    return found


# --- systemd's checkers ---------------------------------------------------------------------------

@needs("systemd-analyze")
@pytest.mark.parametrize("shipped_unit", SERVICES)
def test_service_verifies_without_a_word(tmp_path: Path, shipped_unit: Path) -> None:
    """verify exits 0 even on a misspelled key, so any output at all is a failure. It checks that the
    commands exist: ExecStart= is pointed at this environment's jobrunner, the rest is the file as shipped."""
    text = shipped_unit.read_text()
    shipped = "ExecStart=/opt/jobrunner/venv/bin/jobrunner "
    assert text.count(shipped) == 1, f"ExecStart= should start with {shipped!r}"
    unit = tmp_path / shipped_unit.name
    unit.write_text(text.replace(shipped, f"ExecStart={jobrunner_script()} "))

    done = run("systemd-analyze", "verify", "--man=no", "--generators=no", "--recursive-errors=no", unit)

    output = (done.stdout + done.stderr).strip()
    hint = "\n(/bin/kill comes with procps: apt-get install procps)" if "/bin/kill" in output else ""
    assert done.returncode == 0 and not output, f"systemd-analyze verify (exit {done.returncode}):\n{output}{hint}"


@needs("systemd-analyze")
@pytest.mark.parametrize("unit", SERVICES)
def test_service_exposure_is_at_most_1_5(capsys: pytest.CaptureFixture[str], unit: Path) -> None:
    done = run("systemd-analyze", "security", "--offline=true", unit)

    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert done.returncode == 0 and match, f"no exposure level (exit {done.returncode}):\n{done.stdout}{done.stderr}"
    exposure = float(match.group(1))
    with capsys.disabled():
        print(f"\nsystemd-analyze security --offline=true systemd/{unit.name}: exposure {exposure}")
    exposed = "\n".join(line for line in done.stdout.splitlines() if line.startswith("✗"))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}; what is exposed:\n{exposed}"


@needs("systemd-sysusers")
def test_sysusers_file_creates_the_user_and_group(tmp_path: Path) -> None:
    done = run("systemd-sysusers", "--dry-run", f"--root={tmp_path}", SYSUSERS)

    output = done.stdout + done.stderr
    assert done.returncode == 0, f"systemd-sysusers --dry-run (exit {done.returncode}):\n{output}"
    assert re.search(r"Creating group '?jobrunner'?", output), output
    assert re.search(r"Creating user '?jobrunner'?", output), output
    complaints = [line for line in output.splitlines() if re.search(r"(?i)fail|ignor|invalid|unknown|error", line)]
    assert not complaints, "\n".join(complaints)


@needs("systemd-sysusers")
@needs("systemd-tmpfiles")
@pytest.mark.skipif(os.geteuid() != 0, reason="applying the modes and owners on a temporary root needs root")
def test_tmpfiles_make_the_spool_the_group_may_write_and_jobs_it_may_only_read(tmp_path: Path) -> None:
    """Both files applied for real on a temporary root, as the README's install steps do on /."""
    (tmp_path / "etc").mkdir()
    users = run("systemd-sysusers", f"--root={tmp_path}", SYSUSERS)
    assert users.returncode == 0, users.stdout + users.stderr
    entry = next(line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()
                 if line.startswith("jobrunner:"))
    uid, gid = int(entry[2]), int(entry[3])

    def create() -> None:
        done = run("systemd-tmpfiles", "--create", f"--root={tmp_path}", TMPFILES)
        assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), \
            f"systemd-tmpfiles --create (exit {done.returncode}):\n{done.stdout}{done.stderr}"

    create()
    root = tmp_path / DATA_DIR.relative_to("/")
    (root / "queue").chmod(0o755)  # an existing install with other modes is put right
    create()
    expected = {"": 0o750, "queue": 0o3770, "queue/.tmp": 0o3770, "jobs": 0o750}
    for name, mode in expected.items():
        st = (root / name).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, uid, gid), \
            f"{root / name}: mode {stat.S_IMODE(st.st_mode):o} owner {st.st_uid}:{st.st_gid}"


# --- the files agree with each other and with the daemon -------------------------------------------

def test_service_runs_the_daemon_on_its_state_directory_as_the_sysusers_user() -> None:
    settings = unit_settings(SERVICE)["Service"]
    user = data_lines(SYSUSERS)[0]
    assert user[:2] == ["u", "jobrunner"] and user[4] == str(DATA_DIR)
    assert service("User") == service("Group") == "jobrunner"
    assert settings["StateDirectory"] == [DATA_DIR.name] and DATA_DIR.parent == Path("/var/lib")
    argv = service("ExecStart").split()
    assert argv[1:3] == ["run", "--data-dir"] and argv[3] == str(DATA_DIR)
    assert "--workers" not in argv, "--workers N needs NotifyAccess=all (see systemd/README.md)"


def test_service_lifecycle_settings_match_the_daemon() -> None:
    from jobrunner.cli import run as run_command

    drain = next(p.default for p in run_command.params if p.name == "drain_timeout")
    assert isinstance(drain, float)
    assert service("Type") == "notify" and service("NotifyAccess") == "main"
    assert service("Restart") == "on-failure"
    assert str(ConfigError.exit_code) in service("RestartPreventExitStatus").split()
    assert service("KillMode") == "mixed"
    # the daemon asks for drain + 15 s (EXTEND_TIMEOUT_USEC) when it starts draining: the same budget
    assert seconds(service("TimeoutStopSec")) >= drain + 15
    assert seconds(service("WatchdogSec")) >= 10
    assert re.fullmatch(r"/(usr/)?bin/kill -(s )?HUP \$MAINPID", service("ExecReload"))


def test_tmpfiles_cover_the_spool_and_jobs_folders_of_the_layout() -> None:
    layout = Layout(DATA_DIR)
    lines = data_lines(TMPFILES)
    assert all(len(fields) >= 6 and fields[0] == "d" for fields in lines), lines
    modes = {Path(fields[1]): int(fields[2], 8) for fields in lines}
    assert {(fields[3], fields[4]) for fields in lines} == {("jobrunner", "jobrunner")}
    assert set(modes) == {DATA_DIR, layout.queue, layout.staging, layout.jobs}
    assert modes[DATA_DIR] == int(service("StateDirectoryMode"), 8)
    for spool in (layout.queue, layout.staging):  # producers drop here; the group stays jobrunner
        assert modes[spool] & 0o2070 == 0o2070 and not modes[spool] & 0o007, oct(modes[spool])
    assert modes[layout.jobs] & 0o070 == 0o050 and not modes[layout.jobs] & 0o007  # read-only for the group
    umask = int(service("UMask"), 8)
    assert umask & 0o027 == 0o027, "files the daemon makes: group-readable at most, never world-readable"


# --- the optional web unit -------------------------------------------------------------------------

HARDENING_EXEMPT = {
    # what the web unit does differently, each on purpose (see the unit's comments)
    "Type", "NotifyAccess", "ExecStart", "ExecReload", "Restart", "RestartSec", "WatchdogSec", "KillMode",
    "TimeoutStopSec", "LoadCredential", "LoadCredentialEncrypted", "IPAddressDeny", "IPAddressAllow",
    "RestartPreventExitStatus",
}


def test_web_service_has_every_hardening_line_of_the_daemon() -> None:
    daemon = unit_settings(SERVICE)["Service"]
    web = unit_settings(WEB_SERVICE)["Service"]
    for key, values in daemon.items():
        if key not in HARDENING_EXEMPT:
            assert web.get(key) == values, f"{key}: the daemon has {values}, the web unit {web.get(key)}"
    assert service("RestartPreventExitStatus", WEB_SERVICE) == str(ConfigError.exit_code)


def test_web_service_serves_the_daemons_data_dir_on_loopback_with_a_token_credential() -> None:
    from jobrunner.cli import serve as serve_command
    from jobrunner.web.config import TOKEN_CREDENTIAL, Bind

    argv = service("ExecStart", WEB_SERVICE).split()
    assert argv[1:4] == ["serve", "--data-dir", str(DATA_DIR)]
    bind = argv[argv.index("--bind") + 1]
    default = next(p.default for p in serve_command.params if p.name == "bind")
    assert bind == default and Bind.parse(bind).loopback
    assert service("User", WEB_SERVICE) == service("User") and service("StateDirectory", WEB_SERVICE) == DATA_DIR.name
    credential = service("LoadCredential", WEB_SERVICE).split(":")[0]
    assert credential == TOKEN_CREDENTIAL  # the name the server reads from $CREDENTIALS_DIRECTORY
    assert service("IPAddressDeny", WEB_SERVICE) == "any" and service("IPAddressAllow", WEB_SERVICE) == "localhost"
    assert service("Type", WEB_SERVICE) == "exec"
