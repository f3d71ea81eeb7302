"""voicechat as a systemd user service: the unit's text, where it goes, and its doctor row.

One home for the unit, so that `scripts/setup_jetson.sh --service` (which writes it with
``python -m voicechat.service``, from the venv the service runs from) and `voicechat doctor`
(which asks systemd about it) agree on its name, its place and what it runs. The service is
``voicechat chat --listen``: hands-free, meant to be used with a wake phrase in the profile.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from voicechat.checks import Check

UNIT = "voicechat.service"
SYSTEMCTL_TIMEOUT = 3.0
"""Seconds for ``systemctl --user show``: a doctor must not hang on a stuck user manager."""
RESTART_SEC = 5
"""Seconds between a failure and the restart: a restarted PulseAudio is back by then."""
START_LIMIT = (10, 120)
"""At most 10 starts in 120 s: a unit that fails at once every time (no microphone at all)
stops retrying after about a minute instead of loading Whisper forever."""
SHOWN = (
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "ActiveEnterTimestamp",
    "NRestarts",
    "Result",
    "ExecMainStatus",
)
"""The properties the doctor row reads, in one ``systemctl --user show``."""


def unit_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where systemd looks for a user's own units (``systemd.unit(5)``)."""
    env = os.environ if env is None else env
    config = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")) / ".config")
    return Path(config).expanduser() / "systemd" / "user"


def unit_path(env: Mapping[str, str] | None = None) -> Path:
    """The installed unit file (``~/.config/systemd/user/voicechat.service``)."""
    return unit_dir(env) / UNIT


def quote(word: str, *, executable: bool = False) -> str:
    r"""One word of a unit's command line, as systemd reads it back (``systemd.service(5)``).

    >>> print(quote("/home/me/.local/bin/voicechat", executable=True))
    /home/me/.local/bin/voicechat
    >>> print(quote("/media/my disk/100%/voicechat", executable=True))
    "/media/my disk/100%%/voicechat"
    >>> print(quote('my "$HOME" profile'))
    "my \"$$HOME\" profile"
    """
    if all(c.isalnum() or c in "/._-+:,@=~" for c in word) and word:
        return word
    if executable:  # no variables in the program's path, and no quotes or escapes either
        if any(c in word for c in '"\\\n'):
            raise ValueError(f"{word}: systemd runs no program with quotes in its path")
        return '"' + word.replace("%", "%%") + '"'
    # % starts a specifier and $ a variable, even inside quotes
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


def unit_text(voicechat: str, profile: str | None = None) -> str:
    """The unit that runs ``voicechat chat --listen`` from ``voicechat`` (the venv's command)."""
    command = [voicechat, "chat", "--listen"]
    if profile:
        command += ["--profile", profile]
    limit, interval = START_LIMIT
    return f"""\
# voicechat, hands-free, as a systemd user service. Written by scripts/setup_jetson.sh
# --service (python -m voicechat.service), which rewrites it when run again: put changes in a
# drop-in instead (systemctl --user edit voicechat). Logs: journalctl --user -u voicechat -f
[Unit]
Description=voicechat, hands-free (voicechat chat --listen)
# After the sound server (PulseAudio on Ubuntu 22.04, or PipeWire's PulseAudio server):
# ordering only, so the one that is not installed is ignored. Its socket is up before any
# service starts (sockets.target); a PulseAudio restart does not stop voicechat.
After=pulseaudio.service pipewire-pulse.service
StartLimitIntervalSec={interval}
StartLimitBurst={limit}

[Service]
Type=exec
ExecStart={" ".join([quote(voicechat, executable=True), *map(quote, command[1:])])}
# Any failure restarts it, exit 11 too (speech input failed: no microphone, or the sound
# server went away for longer than the microphone waits for it). A bad profile (exit 2)
# will not mend itself: fix it, then systemctl --user restart voicechat.
Restart=on-failure
RestartSec={RESTART_SEC}
RestartPreventExitStatus=2
# systemctl stop sends SIGTERM, and voicechat ends the session with 143: a clean stop
SuccessExitStatus=143
TimeoutStopSec=15
# the journal gets each line as it is printed (plain text: stdout is not a terminal)
Environment=PYTHONUNBUFFERED=1
StandardOutput=journal
StandardError=journal
SyslogIdentifier=voicechat

[Install]
WantedBy=default.target
"""


# --- the doctor row -----------------------------------------------------------------------------


def checks(env: Mapping[str, str] | None = None) -> Iterator[Check]:
    """The doctor's "service" row: is voicechat installed as a user service, and running?

    Information (``ok=None``) where there is no systemd or no user manager to ask (a
    container, ``sudo``), or the service is not installed; a failure only when it is
    installed and failing.
    """
    yield service_check(env)


def service_check(env: Mapping[str, str] | None = None) -> Check:
    """One ``systemctl --user show`` read into one row."""
    env = os.environ if env is None else env
    path = unit_path(env)
    systemctl = shutil.which("systemctl", path=env.get("PATH"))
    if systemctl is None:
        return Check("service", None, "no systemd here (no systemctl): not run as a service")
    try:
        result = subprocess.run(
            [systemctl, "--user", "show", UNIT, *(f"--property={p}" for p in SHOWN)],
            capture_output=True,
            text=True,
            timeout=SYSTEMCTL_TIMEOUT,
            check=False,
            env=dict(env),
        )
    except subprocess.TimeoutExpired:
        return unreachable(path, f"no answer within {SYSTEMCTL_TIMEOUT:g} s")
    except OSError as exc:
        return unreachable(path, exc.strerror or str(exc))
    props = {k: v for k, _, v in (line.partition("=") for line in result.stdout.splitlines())}
    if result.returncode != 0 or "LoadState" not in props:
        lines = result.stderr.strip().splitlines()
        return unreachable(path, lines[0] if lines else f"exit status {result.returncode}")
    return state_row(props, path)


def unreachable(path: Path, why: str) -> Check:
    """No user manager to ask (CI containers, ``sudo``/``su`` without a login)."""
    installed = f"; {path} is installed" if path.is_file() else ""
    return Check("service", None, f"no systemd user session to ask ({why}){installed}")


def state_row(props: Mapping[str, str], path: Path) -> Check:
    """The row for what ``systemctl --user show`` said about the unit."""
    load, active = props.get("LoadState", ""), props.get("ActiveState", "")
    sub, enabled = props.get("SubState", ""), props.get("UnitFileState", "")
    logs = "journalctl --user -u voicechat -e"
    count = props.get("NRestarts", "")
    restarts = int(count) if count.isdigit() else 0
    restarted = f", restarted {restarts} time{'s' * (restarts != 1)}" if restarts else ""
    last = props.get("ExecMainStatus", "")
    if load == "not-found":
        if path.is_file():
            return Check(
                "service",
                None,
                f"{path} is installed but systemd has not read it",
                "systemctl --user daemon-reload && systemctl --user enable --now voicechat",
            )
        return Check(
            "service",
            None,
            "not installed (scripts/setup_jetson.sh --service runs voicechat hands-free at boot)",
        )
    if load == "masked":
        return Check("service", None, f"{UNIT} is masked", "systemctl --user unmask voicechat")
    if load != "loaded":
        return Check(
            "service",
            False,
            f"{UNIT} does not load ({load})",
            f"systemd-analyze --user verify {path}",
        )
    if active == "active":
        since = props.get("ActiveEnterTimestamp", "")
        when = f" since {since}" if since else ""
        state = f", {enabled}" if enabled else ""
        return Check("service", True, f"{UNIT} active ({sub}){when}{state}{restarted}")
    if active == "failed":
        why = props.get("Result", "")
        # after too many restarts, a start by hand is refused too until the count is reset
        again = "reset-failed voicechat && systemctl --user " * (why == "start-limit-hit")
        return Check(
            "service",
            False,
            f"{UNIT} failed ({why}, exit status {last}){restarted}",
            f"{logs}; then: systemctl --user {again}restart voicechat",
        )
    if sub == "auto-restart":
        return Check(
            "service",
            False,
            f"{UNIT} keeps failing (last exit status {last}{restarted}): restarting",
            logs,
        )
    if active == "activating":
        return Check("service", None, f"{UNIT} is starting", "systemctl --user status voicechat")
    return Check(
        "service",
        None,
        f"{UNIT} installed ({enabled}) but not running",
        "systemctl --user start voicechat",
    )


# --- python -m voicechat.service ----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Print the unit (for `scripts/setup_jetson.sh`, which writes it where systemd looks)."""
    parser = argparse.ArgumentParser(
        prog="python -m voicechat.service",
        description=f"Print {UNIT}: voicechat chat --listen as a systemd user service.",
    )
    parser.add_argument(
        "--voicechat",
        default=str(Path(sys.executable).parent / "voicechat"),
        help="the voicechat command to run [the one beside this Python]",
    )
    parser.add_argument("--profile", help="the profile it runs [voicechat's default]")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(unit_text(args.voicechat, args.profile))
    except ValueError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
