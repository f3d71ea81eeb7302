"""`voicechat doctor`: what works here and what to fix, one `Check` at a time.

Nothing here prints: `run_checks` yields rows as they complete and the CLI renders them
(a table, or JSON). Every failing row carries the command or setting that fixes it. The
checks follow the path of a question: Python, the profile, then what each component
reports about itself (the backend kind: server, model, one generated token; the speech
engine: its voices; with ``--listen``, speech input and the echo the microphone hears;
playback: the audio device), then the Jetson's power mode and whether voicechat runs as a
service (`voicechat.service`). This module only runs them: the knowledge and the wording live
with each kind. A check that cannot run because an earlier one failed is skipped
(``ok=None``) rather than failed twice.

Timeouts are short on purpose: a doctor that hangs on a dead server is no help.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from voicechat.checks import Check

if TYPE_CHECKING:
    from voicechat.profile import LoadedProfile
    from voicechat.settings import Profile

MIN_PYTHON = (3, 10)
PROBE_TIMEOUT = 5.0
"""Seconds for each HTTP probe of the server (connect and read)."""
GENERATION_TIMEOUT = 60.0
"""Seconds of silence allowed for the one-token generation: a cold 7B model loads slowly."""
TEGRA_RELEASE = Path("/etc/nv_tegra_release")


def run_checks(
    loaded: LoadedProfile,
    api_key: str | None,
    *,
    check_audio: bool = True,
    check_listen: bool = False,
    probe_timeout: float = PROBE_TIMEOUT,
    generation_timeout: float = GENERATION_TIMEOUT,
) -> Iterator[Check]:
    """Every check for this profile, yielded as each completes (the slow ones come last).

    The backend's rows come from its kind module (`voicechat.backends.KINDS`): its own
    requests, its own messages and fixes; this module only runs them.
    """
    from voicechat.backends import kind_module

    prof = loaded.profile
    yield python_check()
    yield profile_check(loaded)
    yield from kind_module(prof.backend.kind).checks(
        prof.backend,
        api_key,
        probe_timeout=probe_timeout,
        generation_timeout=generation_timeout,
    )
    from voicechat import tts
    from voicechat.audio import playback

    yield from tts.checks(prof.tts)
    if check_listen:  # speech input is optional (the [listen] extra): asked for, not assumed
        from voicechat import stt

        yield from stt.checks(prof.stt, microphone=check_audio)
        if check_audio:  # it plays a test sound, as the microphone row records
            yield from echo_checks(prof)
    if check_audio:
        yield from playback.checks(prof.tts)
    else:
        yield Check("audio output", None, "skipped")
    power = power_check()
    if power is not None:
        yield power
    from voicechat import service

    yield from service.checks()


def echo_checks(prof: Profile) -> Iterator[Check]:
    """The echo row (`voicechat.questions.bargein.checks`): how much of the voice the
    microphone hears, and which ``stt.barge_in`` suits it. Nothing without the [listen]
    extra (barge-in needs it; the speech input row says so) or without a voice to talk
    over."""
    from voicechat.questions.voice import available

    if not available():
        return
    if prof.tts.engine == "none":
        yield Check("echo", None, "skipped: tts.engine is none (no voice to talk over)")
        return
    from voicechat.questions import bargein

    yield from bargein.checks(prof.stt, prof.tts.device)


# --- the machine ---------------------------------------------------------------------------


def python_check(version: tuple[int, ...] | None = None) -> Check:
    """Python version and platform (and the Jetson's L4T release when there is one)."""
    version = tuple(sys.version_info[:3]) if version is None else version
    shown = ".".join(str(v) for v in version)
    where = f"{platform.system()} {platform.machine()}"
    jetson = jetson_release()
    if jetson:
        where += f", Jetson {jetson}"
    if version[:2] < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return Check(
            "python",
            False,
            f"Python {shown} on {where}: voicechat needs {need} or newer",
            f"install Python {need}+ (JetPack 6 ships 3.10) and reinstall voicechat with it",
        )
    return Check("python", True, f"Python {shown} on {where}")


def jetson_release(path: Path = TEGRA_RELEASE) -> str | None:
    """``L4T R36.3.0`` from ``/etc/nv_tegra_release``, or ``None`` off a Jetson."""
    try:
        first = path.read_text(encoding="utf-8", errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    # "# R36 (release), REVISION: 3.0, GCID: ..., BOARD: generic, EABI: aarch64, DATE: ..."
    fields = [f.strip() for f in first.lstrip("# ").split(",")]
    major = fields[0].split(" ")[0] if fields else ""
    revision = next((f.split(":", 1)[1].strip() for f in fields if f.startswith("REVISION")), "")
    if not major.startswith("R"):
        return None
    return f"L4T {major}.{revision}" if revision else f"L4T {major}"


def power_check() -> Check | None:
    """The Jetson's power mode (information only: it sets tokens/s); ``None`` elsewhere."""
    if jetson_release() is None or shutil.which("nvpmodel") is None:
        return None
    try:
        result = subprocess.run(
            ["nvpmodel", "-q"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("power mode", None, f"nvpmodel -q failed: {exc}")
    mode = next(
        (line.split(":", 1)[1].strip() for line in result.stdout.splitlines() if "Mode" in line),
        "unknown",
    )
    return Check(
        "power mode",
        None,
        f"{mode} (the fastest mode gives the most tokens/s)",
        "sudo nvpmodel -m 0 && sudo jetson_clocks (see the README's Jetson section)",
    )


# --- the profile ----------------------------------------------------------------------------


def profile_check(loaded: LoadedProfile) -> Check:
    """Which profile is in use; it has already validated (the CLI reports one that does not)."""
    from voicechat.redact import redact_url

    source, backend = loaded.source, loaded.profile.backend
    url = getattr(backend, "base_url", None)
    where = f" at {redact_url(url)}" if isinstance(url, str) else ""
    detail = (
        f"{source.name} ({source.origin}, {source.path}): {backend.kind}{where}, "
        f"model {backend.model}"
    )
    if loaded.overrides:
        detail += f" (from ${', $'.join(loaded.overrides)})"
    return Check("profile", True, detail)
