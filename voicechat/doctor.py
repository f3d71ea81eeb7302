"""`voicechat doctor`: what works here and what to fix, one `Check` at a time.

Nothing here prints: `run_checks` yields rows as they complete and the CLI renders them
(a table, or JSON). Every failing row carries the command or setting that fixes it. The
checks follow the path of a question: Python, the profile, the server, the model, one
generated token, the voice, the audio device. A check that cannot run because an earlier
one failed is skipped (``ok=None``) rather than failed twice.

Timeouts are short on purpose: a doctor that hangs on a dead server is no help.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicechat.errors import (
    AuthFailed,
    BackendError,
    BackendTimeout,
    BackendUnreachable,
    ConfigError,
    EndpointNotFound,
    ModelNotFound,
    SpeechError,
    StreamBroken,
    VoicechatError,
)

if TYPE_CHECKING:
    from voicechat.profile import LoadedProfile
    from voicechat.settings import BackendSettings, TTSSettings

MIN_PYTHON = (3, 10)
PROBE_TIMEOUT = 5.0
"""Seconds for each HTTP probe of the server (connect and read)."""
GENERATION_TIMEOUT = 60.0
"""Seconds of silence allowed for the one-token generation: a cold 7B model loads slowly."""
AUDIO_PROBE_S = 0.1
"""Seconds of silence written to the output device to prove it accepts audio."""
PHRASES = {"other": "Hello, this is voicechat speaking.", "zh": "你好，我是语音助手。"}
"""What the voice check synthesizes, per language."""
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
PORTAUDIO_FIX = "apt-get install libportaudio2"
SPEECH_FIX = {
    "pyttsx3": "apt-get install espeak-ng libespeak-ng1 && pip install pyttsx3",
    "piper": "pip install 'voicechat[piper]' and set tts.model to a Piper .onnx voice",
}


@dataclass(frozen=True)
class Check:
    """One row of the doctor's report."""

    name: str
    """What was checked (``server``, ``model``, ``voice (zh)``, ...)."""
    ok: bool | None
    """True: works; False: broken; None: skipped or not applicable."""
    detail: str
    """What was found, in one line."""
    fix: str = ""
    """For a failing check: the command or setting that fixes it."""


def run_checks(
    loaded: LoadedProfile,
    api_key: str | None,
    *,
    check_audio: bool = True,
    probe_timeout: float = PROBE_TIMEOUT,
    generation_timeout: float = GENERATION_TIMEOUT,
) -> Iterator[Check]:
    """Every check for this profile, yielded as each completes (the slow ones come last)."""
    prof = loaded.profile
    backend = prof.backend
    yield python_check()
    yield profile_check(loaded)
    key = api_key_check(backend, api_key)
    if key is not None:
        yield key
    if key is not None and key.ok is False:
        reason = "skipped: no API key"
        yield Check("server", None, reason)
        yield Check("model", None, reason)
        yield Check("generation", None, reason)
    else:
        server, models = server_check(backend, api_key, probe_timeout)
        yield server
        if server.ok:
            yield model_check(backend, models)
            yield generation_check(backend, api_key, probe_timeout, generation_timeout)
        else:
            yield Check("model", None, "skipped: the server did not answer")
            yield Check("generation", None, "skipped: the server did not answer")
    yield from voice_checks(prof.tts)
    if not check_audio:
        yield Check("audio output", None, "skipped")
    elif prof.tts.engine == "none":
        yield Check("audio output", None, "not needed: tts.engine is none")
    else:
        yield audio_check(prof.tts)
    power = power_check()
    if power is not None:
        yield power


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


# --- the profile and the server ------------------------------------------------------------


def profile_check(loaded: LoadedProfile) -> Check:
    """Which profile is in use; it has already validated (the CLI reports one that does not)."""
    from voicechat.backends import redact_url

    source, backend = loaded.source, loaded.profile.backend
    detail = (
        f"{source.name} ({source.origin}, {source.path}): {backend.kind} at "
        f"{redact_url(backend.base_url)}, model {backend.model}"
    )
    if loaded.overrides:
        detail += f" (base_url from ${', $'.join(loaded.overrides)})"
    return Check("profile", True, detail)


def api_key_check(backend: BackendSettings, api_key: str | None) -> Check | None:
    """Whether the key the profile asks for is set; ``None`` when no key is involved."""
    from voicechat.profile import api_key_var

    var = api_key_var(backend)
    if var is None:
        return None
    if api_key:
        return Check("api key", True, f"${var} is set (value hidden)")
    if backend.api_key_required:
        return Check(
            "api key",
            False,
            f"${var} is not set and {backend.base_url} needs it",
            f"export {var}=... (the key itself never goes into a profile)",
        )
    return Check("api key", None, f"${var} is not set (not needed by this server)")


def server_check(
    backend: BackendSettings, api_key: str | None, timeout: float = PROBE_TIMEOUT
) -> tuple[Check, list[str]]:
    """Does the server answer as the profile's protocol expects? Also returns its models."""
    if backend.kind == "ollama":
        return _ollama_server(backend, timeout)
    return _openai_server(backend, api_key, timeout)


class _ProbeFailed(Exception):
    """A probe that got no usable answer; carries the finished `Check`."""

    def __init__(self, check: Check) -> None:
        super().__init__(check.detail)
        self.check = check


def _get(url: str, backend: BackendSettings, api_key: str | None, timeout: float) -> Any:
    """GET with short timeouts; connection problems become a failed ``server`` check."""
    import requests

    from voicechat.backends import redact_url

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    connect = min(backend.connect_timeout, timeout)
    try:
        return requests.get(url, headers=headers, timeout=(connect, timeout))
    except requests.exceptions.ConnectTimeout:
        detail = f"no connection to {redact_url(url)} within {connect:g} s"
    except requests.exceptions.ReadTimeout:
        detail = f"{redact_url(url)} accepted the connection but sent nothing for {timeout:g} s"
    except requests.exceptions.ConnectionError:
        detail = f"nothing answers at {redact_url(url)} (connection refused or host unknown)"
    except requests.exceptions.RequestException as exc:
        detail = f"{redact_url(url)}: {exc}"
    raise _ProbeFailed(Check("server", False, detail, _start_fix(backend)))


def _start_fix(backend: BackendSettings) -> str:
    if backend.kind == "ollama":
        return (
            "start Ollama (sudo systemctl start ollama, or: ollama serve), "
            "or point OLLAMA_HOST / backend.base_url at it"
        )
    return "start the server, or point OPENAI_BASE_URL / backend.base_url at it"


def _ollama_server(backend: BackendSettings, timeout: float) -> tuple[Check, list[str]]:
    from voicechat.backends import redact_url

    base = backend.base_url.rstrip("/")
    shown = redact_url(base)
    try:
        root = _get(base + "/", backend, None, timeout)
        if root.status_code != 200 or "ollama" not in root.text.lower():
            return Check(
                "server",
                False,
                f"{shown} answers ({root.status_code}) but is not Ollama",
                "point OLLAMA_HOST / backend.base_url at Ollama (default "
                "http://127.0.0.1:11434), or use kind: openai for an OpenAI-compatible server",
            ), []
        version = _get(base + "/api/version", backend, None, timeout)
        tags = _get(base + "/api/tags", backend, None, timeout)
    except _ProbeFailed as failed:
        return failed.check, []
    try:
        number = version.json().get("version", "?")
    except ValueError:
        number = "?"
    try:
        entries = tags.json().get("models") or []
        models = [str(m.get("name") or m.get("model")) for m in entries]
    except (ValueError, AttributeError):
        return Check("server", False, f"{shown}/api/tags did not return JSON", "update Ollama"), []
    return Check("server", True, f"Ollama {number} at {shown}"), models


def _openai_server(
    backend: BackendSettings, api_key: str | None, timeout: float
) -> tuple[Check, list[str]]:
    from voicechat.backends import redact_url

    base = backend.base_url.rstrip("/")
    shown = redact_url(base)
    try:
        response = _get(base + "/models", backend, api_key, timeout)
    except _ProbeFailed as failed:
        return failed.check, []
    status = response.status_code
    if status in (401, 403):
        from voicechat.profile import api_key_var

        var = api_key_var(backend) or "OPENAI_API_KEY"
        return Check(
            "server",
            False,
            f"{shown} refused the API key ({status})",
            f"export {var}=<a valid key> (or set backend.api_key_env to the right variable)",
        ), []
    if status == 404:
        return Check(
            "server",
            False,
            f"{shown}/models is not there (404): the base URL is not an OpenAI /v1 root",
            f"set backend.base_url (or OPENAI_BASE_URL) to the server's /v1 root, e.g. {base}/v1",
        ), []
    try:
        data = response.json()
        models = [str(m["id"]) for m in data.get("data") or []]
    except (ValueError, KeyError, TypeError, AttributeError):
        data, models = None, []
    if status != 200 or data is None:
        return Check(
            "server",
            False,
            f"{shown}/models answered {status} without a model list",
            "check base_url and the server's log",
        ), []
    return Check("server", True, f"OpenAI-compatible server at {shown}"), models


def model_check(backend: BackendSettings, models: list[str]) -> Check:
    """Is the profile's model among the server's?"""
    wanted = backend.model
    if backend.kind == "ollama":
        names = set(models) | {m.removesuffix(":latest") for m in models}
        if wanted in names or f"{wanted}:latest" in models:
            return Check("model", True, f"{wanted} is pulled")
        have = ", ".join(models[:8]) or "none"
        return Check(
            "model",
            False,
            f"{wanted} is not pulled (pulled: {have})",
            f"ollama pull {wanted}",
        )
    if wanted in models:
        return Check("model", True, f"{wanted} is listed by the server")
    if not models:
        return Check("model", None, "the server lists no models: cannot tell")
    listed = ", ".join(models[:8]) + (f" (+{len(models) - 8} more)" if len(models) > 8 else "")
    return Check(
        "model",
        False,
        f"{wanted} is not among the server's models: {listed}",
        f"set backend.model (or --model) to one of: {listed}",
    )


def generation_check(
    backend: BackendSettings,
    api_key: str | None,
    probe_timeout: float = PROBE_TIMEOUT,
    generation_timeout: float = GENERATION_TIMEOUT,
) -> Check:
    """Ask for one token and time it: proves the whole request path, model load included."""
    from voicechat.backends import create_backend
    from voicechat.settings import GenerationSettings

    settings = dataclasses.replace(
        backend,
        retries=0,
        connect_timeout=min(backend.connect_timeout, probe_timeout),
        read_timeout=min(backend.read_timeout, generation_timeout),
    )
    started = time.monotonic()
    try:
        client = create_backend(settings, api_key)
    except VoicechatError as exc:
        return Check("generation", False, str(exc), _generation_fix(exc, backend))
    try:
        reply = client.chat(
            [{"role": "user", "content": "Say OK."}], GenerationSettings(max_tokens=1)
        )
        for _ in reply:
            pass
    except VoicechatError as exc:
        return Check("generation", False, str(exc), _generation_fix(exc, backend))
    finally:
        client.close()
    outcome = reply.outcome
    total = time.monotonic() - started
    if outcome is None or outcome.finish == "truncated":
        return Check(
            "generation",
            False,
            f"the reply ended without a finish reason after {total:.2f} s",
            "check the server's log (a crash, or a prompt over its context size)",
        )
    if outcome.first_token_s is None:
        return Check(
            "generation", True, f"no text (finish: {outcome.finish}) after {outcome.total_s:.2f} s"
        )
    return Check(
        "generation",
        True,
        f"first token after {outcome.first_token_s:.2f} s (finish: {outcome.finish})",
    )


def _generation_fix(exc: VoicechatError, backend: BackendSettings) -> str:
    if isinstance(exc, BackendUnreachable):
        return _start_fix(backend)
    if isinstance(exc, ModelNotFound):
        if backend.kind == "ollama":
            return f"ollama pull {backend.model}"
        return "set backend.model (or --model) to a model the server has"
    if isinstance(exc, AuthFailed):
        return "set the API key variable the profile names (backend.api_key_env)"
    if isinstance(exc, EndpointNotFound):
        return "fix backend.base_url (OpenAI-compatible servers need the /v1 root)"
    if isinstance(exc, BackendTimeout):
        return "the model may still be loading: retry, or raise backend.read_timeout"
    if isinstance(exc, StreamBroken):
        return "check the server's log: the reply was cut off"
    if isinstance(exc, BackendError):
        return "check the server's log, then retry"
    return "fix the profile's backend section"


# --- speech --------------------------------------------------------------------------------


def voice_checks(tts: TTSSettings) -> Iterator[Check]:
    """The engine loads and speaks a test phrase in English and in Chinese."""
    if tts.engine == "none":
        yield Check("voice", None, "tts.engine is none: replies are text only")
        return
    fix = SPEECH_FIX.get(tts.engine, "set tts.engine to pyttsx3")
    try:
        from voicechat.tts import create_engine
    except ImportError as exc:
        yield Check("voice", False, f"the speech module cannot be imported: {exc}", fix)
        return
    try:
        engine = create_engine(tts)
    except ConfigError as exc:
        yield Check("voice", False, str(exc), "fix the profile's tts section (voicechat voices)")
        return
    except (SpeechError, OSError, RuntimeError) as exc:
        yield Check("voice", False, f"{tts.engine} cannot start: {exc}", fix)
        return
    try:
        yield _speak(engine, "other", "voice", tts.engine)
        yield _speak(engine, "zh", "voice (zh)", tts.engine)
    finally:
        engine.close()


def _speak(engine: Any, lang: Any, name: str, engine_name: str) -> Check:
    voice_for = getattr(engine, "voice_for", None)
    voice = voice_for(lang) if voice_for else None
    if lang == "zh" and voice_for and voice == voice_for("other"):
        if engine_name == "piper":
            return Check(
                name,
                None,
                "no Chinese voice: Chinese text is read by the main voice",
                "download a Chinese Piper voice (e.g. zh_CN-huayan-medium) and set tts.voice_zh "
                "to its .onnx file",
            )
        return Check(
            name,
            False,
            "no Chinese voice: Chinese text would be read by the main voice",
            "apt-get install espeak-ng-data (it has cmn-latn-pinyin), or set tts.voice_zh",
        )
    started = time.monotonic()
    try:
        audio = engine.synthesize(PHRASES[lang], lang)
    except (SpeechError, OSError, RuntimeError) as exc:
        return Check(name, False, f"synthesis failed: {exc}", SPEECH_FIX.get(engine_name, ""))
    took = time.monotonic() - started
    label = getattr(voice, "id", None) or "default voice"
    if _peak(audio.pcm) < 100:
        return Check(
            name,
            False,
            f"{label} produced {'silence' if audio.pcm else 'no audio'}",
            "try another voice: voicechat voices",
        )
    return Check(
        name, True, f"{label}: {audio.seconds:.1f} s of speech synthesized in {took * 1000:.0f} ms"
    )


def _peak(pcm: bytes) -> int:
    """Largest absolute sample of mono int16 PCM (no numpy: this runs at start-up)."""
    from array import array

    samples = array("h")
    samples.frombytes(pcm[: len(pcm) // 2 * 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return max((abs(s) for s in samples), default=0)


# --- audio output --------------------------------------------------------------------------


def audio_check(tts: TTSSettings) -> Check:
    """The output device exists and accepts audio (a short silent write through PortAudio)."""
    try:
        import sounddevice as sd
    except OSError as exc:
        return Check("audio output", False, f"PortAudio library not found ({exc})", PORTAUDIO_FIX)
    except ImportError as exc:
        return Check(
            "audio output", False, f"sounddevice is missing ({exc})", "pip install sounddevice"
        )
    device: Any = tts.device
    if isinstance(device, str) and device.isdigit():
        device = int(device)
    try:
        info = sd.query_devices(device, kind="output")
        rate = int(info["default_samplerate"])
        with sd.OutputStream(samplerate=rate, device=device, channels=1, dtype="int16") as stream:
            import numpy as np

            stream.write(np.zeros(int(rate * AUDIO_PROBE_S), dtype=np.int16))
    except Exception as exc:  # PortAudioError, ValueError for an unknown name
        return _device_failure(sd, tts.device, exc)
    return Check("audio output", True, f"{info['name']} accepts audio ({rate} Hz)")


def _device_failure(sd: Any, device: str | None, exc: BaseException) -> Check:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    try:
        names = [d["name"] for d in sd.query_devices() if d["max_output_channels"] > 0]
    except Exception:
        names = []
    if not names:
        return Check(
            "audio output",
            False,
            f"no audio output device ({reason})",
            "connect speakers or headphones, or start PulseAudio (pulseaudio --start); "
            "aplay -l lists the sound cards",
        )
    if device is not None:
        return Check(
            "audio output",
            False,
            f"tts.device {device!r} cannot be opened ({reason})",
            f"set tts.device to one of: {', '.join(repr(n) for n in names)}",
        )
    return Check(
        "audio output",
        False,
        f"the default output cannot be opened ({reason})",
        f"set tts.device to one of: {', '.join(repr(n) for n in names)}",
    )
