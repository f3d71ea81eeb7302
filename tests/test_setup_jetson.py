"""scripts/setup_jetson.sh cannot run here (no Jetson, no systemd, no Ollama): test its
--dry-run on a "fresh box" and on a "set-up box", and lint both shell scripts.

The box is described by stand-in programs early on PATH: ``dpkg-query``, ``systemctl``,
``ollama`` and ``id`` answer the script's questions; ``sudo``, ``apt-get``, ``curl``,
``python3``, ``ln`` and ``mkdir`` are tripwires. Every call is logged, so the tests prove that
a dry run only asks questions and changes nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

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
    for name in TRIPWIRES:
        stand_in(bin_dir, name, f'echo "tripwire: {name} must not run" >&2; exit 99')
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(home),
        "CALLS": str(calls),
        "LANG": "C.UTF-8",
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
