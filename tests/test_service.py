"""`voicechat.service`: the user unit and the doctor's "service" row.

The unit is checked by systemd itself (``systemd-analyze --user verify``, which needs no
running systemd, only a runtime directory) wherever systemd is installed, and its fields are
read back here as well. The doctor row runs the real ``systemctl`` where there is one: in a
container it finds no user manager, which is one of the row's cases. The other cases need a
user manager that answers; a stand-in ``systemctl`` on PATH prints what the real one prints
for ``show``.
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fakeservers import dead_port
from voicechat import service
from voicechat.backends import settings_for
from voicechat.doctor import run_checks
from voicechat.profile import LoadedProfile, ProfileSource
from voicechat.settings import Profile, TTSSettings

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def program(folder: Path, name: str = "voicechat") -> Path:
    """An executable where the unit says voicechat is (systemd checks that it exists)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def read_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read_string(text)
    return parser


def verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze --user verify``: a runtime directory is all it needs to run offline."""
    assert SYSTEMD_ANALYZE is not None
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    env["XDG_RUNTIME_DIR"] = str(runtime)
    return subprocess.run(
        [SYSTEMD_ANALYZE, "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


# --- the unit ---------------------------------------------------------------------------------


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd is not installed (systemd-analyze)")
@pytest.mark.parametrize("folder", ["venv/bin", "my venv/100% $HOME"])
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path, folder: str) -> None:
    voicechat = program(tmp_path / folder)
    unit = tmp_path / "units" / service.UNIT
    unit.parent.mkdir()
    unit.write_text(service.unit_text(str(voicechat), "ollama-qwen2.5-7b"))
    result = verify(unit, tmp_path)
    # warnings (an unknown key, a bad value) are printed but exit 0: both must be clean
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd is not installed (systemd-analyze)")
def test_verify_really_checks_what_the_unit_runs(tmp_path: Path) -> None:
    """The verify test above is not vacuous: a program that is not there fails it."""
    unit = tmp_path / service.UNIT
    unit.write_text(service.unit_text(str(tmp_path / "missing" / "voicechat")))
    result = verify(unit, tmp_path)
    assert result.returncode != 0
    assert "is not executable" in result.stderr


def test_the_unit_runs_chat_listen_and_restarts_on_failure() -> None:
    """Its fields, read back (what systemd-analyze cannot say: that they are the right ones)."""
    unit = read_unit(service.unit_text("/home/me/venv/bin/voicechat", "my profile"))
    run = unit["Service"]
    assert shlex.split(run["ExecStart"]) == [
        "/home/me/venv/bin/voicechat", "chat", "--listen", "--profile", "my profile",
    ]  # fmt: skip
    assert run["Type"] == "exec"  # a missing program fails the start, not silently later
    assert run["Restart"] == "on-failure"  # any non-zero exit, 11 (speech input) included
    assert "11" not in run["RestartPreventExitStatus"].split()
    assert run["RestartPreventExitStatus"] == "2"  # a bad profile does not mend itself
    assert run["SuccessExitStatus"] == "143"  # SIGTERM from systemctl stop is a clean stop
    assert int(run["RestartSec"]) > 0
    assert (run["StandardOutput"], run["StandardError"]) == ("journal", "journal")
    assert run["Environment"] == "PYTHONUNBUFFERED=1"
    # a crash loop stops: fewer starts are allowed than fit in the interval at RestartSec
    limit = int(unit["Unit"]["StartLimitBurst"])
    assert limit * int(run["RestartSec"]) < int(unit["Unit"]["StartLimitIntervalSec"])
    assert unit["Unit"]["After"].split() == ["pulseaudio.service", "pipewire-pulse.service"]
    assert unit["Install"]["WantedBy"] == "default.target"


def test_without_a_profile_the_unit_runs_the_default_one() -> None:
    unit = read_unit(service.unit_text("/venv/bin/voicechat"))
    assert shlex.split(unit["Service"]["ExecStart"]) == ["/venv/bin/voicechat", "chat", "--listen"]


def test_the_unit_goes_where_systemd_looks_for_a_users_units(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    assert service.unit_path(home) == tmp_path / ".config/systemd/user/voicechat.service"
    config = {**home, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    assert service.unit_path(config) == tmp_path / "cfg/systemd/user/voicechat.service"


def test_python_m_voicechat_service_prints_the_unit() -> None:
    """The command scripts/setup_jetson.sh writes the unit with."""
    command = [sys.executable, "-m", "voicechat.service", "--voicechat", "/v/bin/voicechat"]
    result = subprocess.run(
        [*command, "--profile", "p"], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == service.unit_text("/v/bin/voicechat", "p")
    # by default, the voicechat command beside the interpreter that runs it
    default = subprocess.run(
        [sys.executable, "-m", "voicechat.service"], capture_output=True, text=True, cwd=ROOT
    )
    beside = Path(sys.executable).parent / "voicechat"
    assert f"ExecStart={beside} chat --listen\n" in default.stdout


def test_a_program_path_systemd_cannot_run_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voicechat.service", "--voicechat", '/a"b/voicechat'],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "quotes in its path" in result.stderr
    assert result.stdout == ""


# --- the doctor row ----------------------------------------------------------------------------


def stand_in_systemctl(tmp_path: Path, output: str, exit_code: int = 0) -> dict[str, str]:
    """PATH and HOME with a ``systemctl`` that prints ``output`` and logs its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "show.out").write_text(output)
    script = bin_dir / "systemctl"
    script.write_text(
        f'#!/bin/sh\necho "$*" >> "{tmp_path}/calls.log"\n'
        f'cat "{tmp_path}/show.out"\nexit {exit_code}\n'
    )
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path / "home")}


def show(**props: str) -> str:
    """What ``systemctl --user show voicechat.service --property=...`` prints."""
    return "".join(f"{key}={value}\n" for key, value in props.items())


RUNNING = show(
    LoadState="loaded",
    ActiveState="active",
    SubState="running",
    UnitFileState="enabled",
    ActiveEnterTimestamp="Sun 2025-12-07 09:12:44 CST",
    NRestarts="0",
    Result="success",
    ExecMainStatus="0",
)


def test_no_systemd_is_an_information_row(tmp_path: Path) -> None:
    row = service.service_check({"PATH": str(tmp_path), "HOME": str(tmp_path)})
    assert row.name == "service" and row.ok is None
    assert row.detail == "no systemd here (no systemctl): not run as a service"


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="no systemctl here")
def test_no_user_manager_is_an_information_row(tmp_path: Path) -> None:
    """The real systemctl, with no user manager to reach (as in a container, or under sudo)."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "XDG_RUNTIME_DIR": str(runtime),  # nobody listens there
    }
    row = service.service_check(env)
    assert row.ok is None
    assert row.detail.startswith("no systemd user session to ask (Failed to connect to bus")
    assert "\n" not in row.detail
    # an installed unit is still mentioned
    service.unit_path(env).parent.mkdir(parents=True)
    service.unit_path(env).write_text("[Service]\n")
    row = service.service_check(env)
    assert row.detail.endswith(f"; {service.unit_path(env)} is installed")


def test_not_installed_says_how_to_install(tmp_path: Path) -> None:
    env = stand_in_systemctl(
        tmp_path, show(LoadState="not-found", ActiveState="inactive", SubState="dead")
    )
    row = service.service_check(env)
    assert row.ok is None
    assert row.detail == (
        "not installed (scripts/setup_jetson.sh --service runs voicechat hands-free at boot)"
    )
    asked = (tmp_path / "calls.log").read_text().split()
    assert asked[:3] == ["--user", "show", "voicechat.service"]
    assert {a.split("=", 1)[1] for a in asked[3:]} == set(service.SHOWN)


def test_installed_but_not_read_says_daemon_reload(tmp_path: Path) -> None:
    env = stand_in_systemctl(tmp_path, show(LoadState="not-found", ActiveState="inactive"))
    service.unit_path(env).parent.mkdir(parents=True)
    service.unit_path(env).write_text("[Service]\n")
    row = service.service_check(env)
    assert row.ok is None and "systemd has not read it" in row.detail
    assert row.fix.startswith("systemctl --user daemon-reload")


def test_running_service_is_ok_and_says_since_when(tmp_path: Path) -> None:
    row = service.service_check(stand_in_systemctl(tmp_path, RUNNING))
    assert row.ok is True
    assert row.detail == (
        "voicechat.service active (running) since Sun 2025-12-07 09:12:44 CST, enabled"
    )
    restarted = RUNNING.replace("NRestarts=0", "NRestarts=3")
    row = service.service_check(stand_in_systemctl(tmp_path, restarted))
    assert row.ok is True and row.detail.endswith(", enabled, restarted 3 times")


@pytest.mark.parametrize(
    ("props", "ok", "detail", "fix"),
    [
        (
            {"ActiveState": "failed", "SubState": "failed", "Result": "exit-code",
             "ExecMainStatus": "11", "NRestarts": "9"},
            False,
            "voicechat.service failed (exit-code, exit status 11), restarted 9 times",
            "journalctl --user -u voicechat -e; then: systemctl --user restart voicechat",
        ),
        (
            {"ActiveState": "failed", "Result": "start-limit-hit", "ExecMainStatus": "11"},
            False,
            "voicechat.service failed (start-limit-hit, exit status 11)",
            "journalctl --user -u voicechat -e; then: systemctl --user reset-failed voicechat"
            " && systemctl --user restart voicechat",
        ),
        (
            {"ActiveState": "activating", "SubState": "auto-restart", "ExecMainStatus": "11",
             "NRestarts": "1"},
            False,
            "voicechat.service keeps failing (last exit status 11, restarted 1 time): restarting",
            "journalctl --user -u voicechat -e",
        ),
        (
            {"ActiveState": "inactive", "SubState": "dead", "UnitFileState": "disabled"},
            None,
            "voicechat.service installed (disabled) but not running",
            "systemctl --user start voicechat",
        ),
        (
            {"LoadState": "bad-setting", "ActiveState": "inactive"},
            False,
            "voicechat.service does not load (bad-setting)",
            "systemd-analyze --user verify ",
        ),
    ],
    ids=["failed", "start-limit", "restarting", "stopped", "bad-unit"],
)  # fmt: skip
def test_an_installed_service_that_does_not_run(
    tmp_path: Path, props: dict[str, str], ok: bool | None, detail: str, fix: str
) -> None:
    row = service.service_check(
        stand_in_systemctl(tmp_path, show(**{"LoadState": "loaded", **props}))
    )
    assert (row.ok, row.detail) == (ok, detail)
    assert row.fix.startswith(fix)


def test_a_user_manager_that_hangs_does_not_hang_the_doctor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = stand_in_systemctl(tmp_path, RUNNING)
    (tmp_path / "bin" / "systemctl").write_text("#!/bin/sh\nexec sleep 30\n")
    monkeypatch.setattr(service, "SYSTEMCTL_TIMEOUT", 0.3)
    row = service.service_check(env)
    assert (
        row.ok is None and row.detail == "no systemd user session to ask (no answer within 0.3 s)"
    )


def test_the_doctor_reports_the_service_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row as `voicechat doctor` shows it (the backend is a dead port: irrelevant here)."""
    env = stand_in_systemctl(tmp_path, RUNNING)
    monkeypatch.setenv("PATH", env["PATH"])
    url = f"http://127.0.0.1:{dead_port()}"  # nobody listens: the server row fails at once
    backend = settings_for("ollama", base_url=url, model="m")
    source = ProfileSource("test", tmp_path / "test.yaml", "path")
    prof = LoadedProfile(source, Profile(backend=backend, tts=TTSSettings(engine="none")))
    rows = list(run_checks(prof, None, check_audio=False, probe_timeout=0.5))
    assert rows[-1].name == "service" and rows[-1].ok is True
