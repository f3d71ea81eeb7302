"""scripts/setup_jetson.sh cannot run here (no Jetson, no systemd, no Ollama): test its
--dry-run on a "fresh box" and on a "set-up box", and lint both shell scripts.

The box is described by stand-in programs early on PATH: ``dpkg-query``, ``systemctl``,
``loginctl``, ``ollama`` and ``id`` answer the script's questions; ``sudo``, ``apt-get``,
``curl``, ``python3``, ``ln`` and ``mkdir`` are tripwires. Every call is logged, so the tests
prove that a dry run only asks questions and changes nothing.

The service step (--service, --service-only, --remove-service) also runs for real, in a
sandboxed HOME: the unit is written by the venv's Python (this interpreter, running this
checkout's voicechat.service), and ``systemctl --user``, ``loginctl`` and ``sudo`` are
stand-ins that keep their state in files (there is no user manager here to talk to).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from voicechat import service

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "setup_jetson.sh"
SHELL_SCRIPTS = [SCRIPT, ROOT / "scripts" / "e2e_real_server.sh"]
TRIPWIRES = ("sudo", "apt-get", "curl", "python3", "ln", "mkdir", "pip")


def stand_in(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> "$CALLS"\n{body}\n')
    path.chmod(0o755)


def box(tmp_path: Path, *, set_up: bool) -> tuple[dict[str, str], Path, Path]:
    """PATH, HOME and a call log describing a fresh (or an already set-up) Jetson."""
    bin_dir, home, calls = tmp_path / "bin", tmp_path / "home", tmp_path / "calls.log"
    bin_dir.mkdir()
    home.mkdir()
    calls.touch()
    stand_in(bin_dir, "id", "echo 1000")  # a normal user: root work goes through sudo
    if set_up:
        stand_in(bin_dir, "dpkg-query", "printf 'install ok installed'")
        stand_in(bin_dir, "systemctl", "exit 0")
        stand_in(bin_dir, "loginctl", "echo yes")  # lingering
        stand_in(
            bin_dir,
            "ollama",
            'case "$1" in\n'
            '  --version) echo "ollama version is 0.12.6" ;;\n'
            '  list) printf "NAME ID SIZE MODIFIED\\nqwen2.5:7b 845dbda0ea48 4.7GB 2d\\n" ;;\n'
            "  *) exit 1 ;;\n"
            "esac",
        )
        venv = home / ".local" / "share" / "voicechat" / "venv"
        (venv / "bin").mkdir(parents=True)
        for program in ("python", "voicechat"):
            (venv / "bin" / program).write_text("#!/bin/sh\nexit 1\n")
            (venv / "bin" / program).chmod(0o755)
        (home / ".local" / "bin").mkdir()
        for name in ("zh_CN-huayan-medium", "en_US-lessac-medium"):  # the Piper voices
            pulled = home / ".local" / "share" / "voicechat" / "voices" / name
            pulled.mkdir(parents=True)
            (pulled / f"{name}.onnx").write_bytes(b"onnx")
            (pulled / f"{name}.onnx.json").write_text("{}")
        (home / ".local" / "bin" / "voicechat").symlink_to(venv / "bin" / "voicechat")
    else:
        stand_in(bin_dir, "dpkg-query", "exit 1")  # nothing installed
        stand_in(bin_dir, "systemctl", "exit 3")  # "inactive"
        stand_in(bin_dir, "loginctl", "echo no")
    for name in TRIPWIRES:
        stand_in(bin_dir, name, f'echo "tripwire: {name} must not run" >&2; exit 99')
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(home),
        "CALLS": str(calls),
        "LANG": "C.UTF-8",
        "USER": "me",
    }
    return env, home, calls


def snapshot(folder: Path) -> dict[str, float]:
    return {str(p): p.lstat().st_mtime for p in folder.rglob("*")}


def dry_run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def commands(output: str) -> list[str]:
    return [line.strip()[2:] for line in output.splitlines() if line.strip().startswith("+ ")]


def test_dry_run_on_a_fresh_box_prints_every_step_and_changes_nothing(tmp_path: Path) -> None:
    env, home, calls = box(tmp_path, set_up=False)
    before = snapshot(tmp_path)
    result = dry_run(env)
    assert result.returncode == 0, result.stderr
    venv = f"{home}/.local/share/voicechat/venv"
    expected = [
        "sudo apt-get update",
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        "espeak-ng libespeak-ng1 libportaudio2 alsa-utils python3-venv python3-pip curl "
        "ca-certificates",
        "curl -fsSL https://ollama.com/install.sh | sh",
        "sudo systemctl enable --now ollama",
        "ollama pull qwen2.5:7b",
        f"python3 -m venv {venv}",
        f"{venv}/bin/python -m pip install --upgrade {ROOT}[piper]",
        f"mkdir -p {home}/.local/bin",
        f"ln -sfn {venv}/bin/voicechat {home}/.local/bin/voicechat",
        f"{venv}/bin/voicechat voices pull zh_CN-huayan-medium en_US-lessac-medium",
        f"env VOICECHAT_PROFILE=ollama-qwen2.5-7b {venv}/bin/voicechat doctor",
    ]
    assert commands(result.stdout) == expected
    steps = [line for line in result.stdout.splitlines() if line.startswith("== ")]
    assert [s.split(" ", 2)[1] for s in steps] == ["1/6", "2/6", "3/6", "4/6", "5/6", "6/6"]
    assert "nvpmodel -m 0" in result.stdout and "jetson_clocks" in result.stdout
    # only questions were asked: nothing installed, started, created or linked
    asked = calls.read_text().splitlines()
    assert {line.split()[0] for line in asked} <= {"dpkg-query", "systemctl", "id"}
    assert all(
        line == "systemctl is-active --quiet ollama" for line in asked if "systemctl" in line
    )
    assert "tripwire" not in result.stderr
    assert snapshot(tmp_path) == {**before, str(calls): calls.lstat().st_mtime}


def test_dry_run_on_a_set_up_box_skips_what_is_done(tmp_path: Path) -> None:
    env, home, calls = box(tmp_path, set_up=True)
    result = dry_run(env)
    assert result.returncode == 0, result.stderr
    venv = f"{home}/.local/share/voicechat/venv"
    # what remains: refresh voicechat itself, and the doctor
    assert commands(result.stdout) == [
        f"{venv}/bin/python -m pip install --upgrade {ROOT}[piper]",
        f"env VOICECHAT_PROFILE=ollama-qwen2.5-7b {venv}/bin/voicechat doctor",
    ]
    for done in (
        "already installed",
        "ollama is installed: ollama version is 0.12.6",
        "service is running",
        "qwen2.5:7b is pulled",
        "venv exists",
        "links to the venv",
        "zh_CN-huayan-medium is pulled",
        "en_US-lessac-medium is pulled",
    ):
        assert done in result.stdout, done
    asked = calls.read_text().splitlines()
    assert "ollama list" in asked and not any(line.startswith("ollama pull") for line in asked)


def test_a_smaller_model_uses_its_profile(tmp_path: Path) -> None:
    env, _, _ = box(tmp_path, set_up=True)
    result = dry_run(env, "--model", "qwen2.5:3b", "--no-doctor")
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    assert "ollama pull qwen2.5:3b" in cmds
    assert not any("doctor" in c for c in cmds)
    assert "VOICECHAT_PROFILE=ollama-qwen2.5-3b" in result.stdout


def test_a_model_without_a_profile_says_how_to_add_one(tmp_path: Path) -> None:
    env, _, _ = box(tmp_path, set_up=False)
    result = dry_run(env, "--model", "llama3.2:1b", "--from", "pypi")
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    assert "ollama pull llama3.2:1b" in cmds
    assert any(c.endswith("-m pip install --upgrade voicechat[piper]") for c in cmds)
    assert "no shipped profile for llama3.2:1b" in result.stdout


def test_no_voices_skips_the_pull_and_says_espeak_speaks(tmp_path: Path) -> None:
    env, _, _ = box(tmp_path, set_up=False)
    result = dry_run(env, "--no-voices")
    assert result.returncode == 0, result.stderr
    assert not any("voices pull" in c for c in commands(result.stdout))
    assert "the profiles speak with espeak until: voicechat voices pull" in result.stdout


def test_help_lists_the_steps_and_options() -> None:
    result = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for word in ("--dry-run", "--model", "--venv", "ollama pull", "voicechat doctor"):
        assert word in result.stdout


def test_unknown_option_is_a_usage_error() -> None:
    result = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown option --bogus" in result.stderr


def test_e2e_script_help() -> None:
    script = ROOT / "scripts" / "e2e_real_server.sh"
    result = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "VOICECHAT_E2E_CACHE" in result.stdout


# --- the user service ---------------------------------------------------------------------------

SYSTEMCTL = """\
case "$*" in
  "--user show-environment") [ -z "$NO_USER_MANAGER" ] ;;
  "--user is-active --quiet voicechat.service" | "--user is-enabled --quiet voicechat.service")
    [ -e "$STATE/enabled" ] ;;
  "--user enable --now voicechat.service") touch "$STATE/enabled" ;;
  "--user disable --now voicechat.service") rm -f "$STATE/enabled" ;;
  "--user daemon-reload" | "--user restart voicechat.service" | "is-active --quiet ollama") ;;
  *) echo "systemctl: unexpected $*" >&2; exit 99 ;;
esac"""
LOGINCTL = """\
case "$1" in
  show-user) if [ -e "$STATE/linger" ]; then echo yes; else echo no; fi ;;
  --no-ask-password)  # polkit lets a user in a local session linger; elsewhere it asks
    if [ -n "$LINGER_NEEDS_ROOT" ]; then echo "Access denied" >&2; exit 1; fi
    touch "$STATE/linger" ;;
  enable-linger) [ "$AS_ROOT" = 1 ] && touch "$STATE/linger" ;;
  *) exit 99 ;;
esac"""


def service_box(tmp_path: Path, **env: str) -> tuple[dict[str, str], Path, Path]:
    """A set-up box whose user manager, logind and sudo are stand-ins with state in files,
    and whose venv runs this checkout's voicechat with this interpreter."""
    environ, home, calls = box(tmp_path, set_up=True)
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    state.mkdir()
    (bin_dir / "mkdir").unlink()  # the real one: the unit's folder is made for real
    stand_in(bin_dir, "systemctl", SYSTEMCTL)
    stand_in(bin_dir, "loginctl", LOGINCTL)
    stand_in(bin_dir, "sudo", 'AS_ROOT=1 "$@"')
    venv_python = home / ".local" / "share" / "voicechat" / "venv" / "bin" / "python"
    venv_python.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" "$@"\n')
    return {**environ, "STATE": str(state), **env}, home, calls


def setup(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_dry_run_with_service_on_a_fresh_box_adds_the_service_step(tmp_path: Path) -> None:
    env, home, calls = box(tmp_path, set_up=False)
    before = snapshot(tmp_path)
    result = dry_run(env, "--service")
    assert result.returncode == 0, result.stderr
    venv, units = f"{home}/.local/share/voicechat/venv", f"{home}/.config/systemd/user"
    cmds = commands(result.stdout)
    voices = cmds.index(f"{venv}/bin/voicechat voices pull zh_CN-huayan-medium en_US-lessac-medium")
    assert cmds[voices + 1 :] == [
        f"mkdir -p {units}",
        f"{venv}/bin/python -m voicechat.service --voicechat {venv}/bin/voicechat "
        f"--profile ollama-qwen2.5-7b > {units}/voicechat.service",
        "systemctl --user daemon-reload",
        "systemctl --user enable --now voicechat.service",
        "loginctl --no-ask-password enable-linger me 2>/dev/null || sudo loginctl enable-linger me",
        f"env VOICECHAT_PROFILE=ollama-qwen2.5-7b {venv}/bin/voicechat doctor",
    ]  # fmt: skip
    steps = [line.split(" ", 2)[1] for line in result.stdout.splitlines() if line.startswith("== ")]
    assert steps == [f"{n}/7" for n in range(1, 8)]
    assert "warning: no systemd user session here" in result.stdout  # the stand-in says no
    assert "give the profile a wake phrase (stt.wake)" in result.stdout
    asked = {line for line in calls.read_text().splitlines() if "ctl" in line.split()[0]}
    assert asked == {
        "systemctl is-active --quiet ollama",
        "systemctl --user show-environment",
        "systemctl --user is-active --quiet voicechat.service",
        "systemctl --user is-enabled --quiet voicechat.service",
        "loginctl show-user me --property=Linger --value",
    }
    assert "tripwire" not in result.stderr
    assert snapshot(tmp_path) == {**before, str(calls): calls.lstat().st_mtime}


@pytest.mark.parametrize("xdg_config", [False, True], ids=["home", "xdg-config-home"])
def test_service_only_installs_enables_and_lingers_once(tmp_path: Path, xdg_config: bool) -> None:
    env, home, calls = service_box(tmp_path)
    if xdg_config:
        env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    unit = service.unit_path(env)
    venv = home / ".local" / "share" / "voicechat" / "venv"
    first = setup(env, "--service-only")
    assert first.returncode == 0, first.stderr
    assert [line for line in first.stdout.splitlines() if line.startswith("== ")] == [
        f"== 1/1 voicechat as a user service ({unit})"
    ]
    # the unit the venv's voicechat.service writes, for the model's shipped profile
    assert unit.read_text() == service.unit_text(f"{venv}/bin/voicechat", "ollama-qwen2.5-7b")
    assert not unit.with_name("voicechat.service.new").exists()
    assert [c for c in calls.read_text().splitlines() if c.split()[0] != "id"] == [
        "systemctl --user show-environment",
        "systemctl --user is-active --quiet voicechat.service",
        "systemctl --user is-enabled --quiet voicechat.service",
        "systemctl --user daemon-reload",
        "systemctl --user enable --now voicechat.service",
        "loginctl show-user me --property=Linger --value",
        "loginctl --no-ask-password enable-linger me",  # no sudo: logind let the user
    ]
    assert "sudo usermod -aG audio me" in first.stdout  # `id -nG` says 1000: no audio group

    # again: nothing to do
    written = unit.stat().st_mtime_ns
    calls.write_text("")
    again = setup(env, "--service-only")
    assert again.returncode == 0, again.stderr
    assert commands(again.stdout) == []
    for done in ("is up to date", "voicechat.service is enabled and running", "lingering is on"):
        assert done in again.stdout, done
    assert unit.stat().st_mtime_ns == written
    asked = calls.read_text().splitlines()
    assert "systemctl --user daemon-reload" not in asked
    assert "systemctl --user enable --now voicechat.service" not in asked

    # another profile: the unit is rewritten and the running service restarted with it
    changed = setup(env, "--service-only", "--profile", "my profile")
    assert changed.returncode == 0, changed.stderr
    assert unit.read_text() == service.unit_text(f"{venv}/bin/voicechat", "my profile")
    assert commands(changed.stdout)[-2:] == [
        "systemctl --user daemon-reload",
        "systemctl --user restart voicechat.service",
    ]


def test_dry_run_on_a_box_with_the_service_changes_nothing(tmp_path: Path) -> None:
    env, home, calls = service_box(tmp_path)
    assert setup(env, "--service-only").returncode == 0
    before = snapshot(tmp_path)
    result = dry_run(env, "--service")
    assert result.returncode == 0, result.stderr
    venv = f"{home}/.local/share/voicechat/venv"
    assert commands(result.stdout) == [
        f"{venv}/bin/python -m pip install --upgrade {ROOT}[piper]",
        f"env VOICECHAT_PROFILE=ollama-qwen2.5-7b {venv}/bin/voicechat doctor",
    ]
    assert "is up to date" in result.stdout
    assert snapshot(tmp_path) == {**before, str(calls): calls.lstat().st_mtime}


def test_linger_goes_through_sudo_only_when_logind_asks_for_it(tmp_path: Path) -> None:
    env, _, calls = service_box(tmp_path, LINGER_NEEDS_ROOT="1")
    result = setup(env, "--service-only")
    assert result.returncode == 0, result.stderr
    asked = [line for line in calls.read_text().splitlines() if "linger" in line.lower()]
    assert asked == [
        "loginctl show-user me --property=Linger --value",
        "loginctl --no-ask-password enable-linger me",  # refused
        "sudo loginctl enable-linger me",
        "loginctl enable-linger me",
    ]
    assert (tmp_path / "state" / "linger").exists()


def test_remove_service_undoes_it_once(tmp_path: Path) -> None:
    env, _, calls = service_box(tmp_path)
    assert setup(env, "--service-only").returncode == 0
    unit = service.unit_path(env)
    before = snapshot(tmp_path)
    dry = setup(env, "--remove-service", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert unit.exists() and snapshot(tmp_path) == {**before, str(calls): calls.lstat().st_mtime}

    result = setup(env, "--remove-service")
    assert result.returncode == 0, result.stderr
    assert (
        commands(result.stdout)
        == commands(dry.stdout)
        == [
            "systemctl --user disable --now voicechat.service",
            f"rm -f {unit}",
            "systemctl --user daemon-reload",
        ]
    )
    assert not unit.exists() and not (tmp_path / "state" / "enabled").exists()
    assert "loginctl disable-linger me" in result.stdout  # said, not done
    again = setup(env, "--remove-service")
    assert again.returncode == 0 and commands(again.stdout) == []
    assert "not installed" in again.stdout


def test_without_a_user_manager_the_service_step_stops_in_one_line(tmp_path: Path) -> None:
    env, _, _ = service_box(tmp_path, NO_USER_MANAGER="1")
    result = setup(env, "--service-only")
    assert result.returncode == 1
    assert result.stderr.startswith("setup_jetson: no systemd user session here")
    assert result.stderr.count("\n") == 1
    assert not service.unit_path(env).exists()


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["--service"], 2, "run this as that user, not as root"),
        (["--service", "--remove-service"], 2, "contradict each other"),
    ],
)
def test_service_usage_errors(tmp_path: Path, args: list[str], code: int, error: str) -> None:
    env, _, _ = box(tmp_path, set_up=True)
    if "root" in error:
        stand_in(tmp_path / "bin", "id", "echo 0")
    result = dry_run(env, *args)
    assert result.returncode == code
    assert result.stderr.count("\n") == 1 and error in result.stderr


def test_service_only_needs_voicechat_installed(tmp_path: Path) -> None:
    env, home, _ = box(tmp_path, set_up=False)
    result = dry_run(env, "--service-only")
    assert result.returncode == 1
    assert result.stderr == (
        f"setup_jetson: voicechat is not installed in {home}/.local/share/voicechat/venv: "
        "run scripts/setup_jetson.sh --service\n"
    )


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed: apt-get install shellcheck")
    result = subprocess.run(
        [shellcheck, "--severity=style", str(script)],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stdout
