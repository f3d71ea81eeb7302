"""Speech engines behind one small interface: text in, mono int16 PCM out.

Engines never play anything themselves (pyttsx3's own playback goes through ``aplay`` and
fails silently); `voicechat.audio.playback` plays what they return. Each engine lives in its
own module, imported only when chosen: pyttsx3/espeak and piper/onnxruntime are heavy.

An engine instance is used by ONE thread (the speaker's synthesis worker), which creates
it there: pyttsx3's espeak driver is process-global and not thread-safe.

``tts.fallback`` names an engine that speaks when the profile's cannot start here (a Piper
voice not pulled yet, Piper not installed): `create_engine`, `list_voices` and `checks` go
through `with_fallback` / `checks_with_fallback`; `speaking_engine` says which one speaks.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Protocol, TypeVar

from voicechat.errors import ConfigError, SpeechError

if TYPE_CHECKING:
    from voicechat.checks import Check
    from voicechat.settings import TTSSettings
    from voicechat.speakable import Lang

ENGINES: dict[str, str] = {
    "pyttsx3": "voicechat.tts.pyttsx3_engine",
    "piper": "voicechat.tts.piper_engine",
}
"""Engine name (``tts.engine``) -> the module that knows it, imported only when chosen.

An engine module defines ``create(settings) -> Engine``, ``voices(settings) -> list[VoiceInfo]``
(without loading a model), ``rate_hint(settings) -> int | None`` (its output rate, known
before loading: the device is opened at it) and ``checks(settings) -> Iterator[Check]``
(the doctor's rows, with their fixes). ``none`` is not an engine: it means text only.
Adding an engine = one module + one line here + its tests.
"""
NO_ENGINE = "none"
T = TypeVar("T")


@dataclass(frozen=True)
class Audio:
    """A piece of synthesized speech."""

    pcm: bytes
    """Mono signed 16-bit little-endian samples."""
    sample_rate: int
    """Samples per second."""

    @property
    def seconds(self) -> float:
        """Duration."""
        return len(self.pcm) / 2 / self.sample_rate


@dataclass(frozen=True)
class VoiceInfo:
    """A voice an engine offers (its description, not a loaded voice)."""

    id: str
    """What to put in ``tts.voice`` / ``tts.voice_zh`` (e.g. ``gmw/en-us``)."""
    name: str
    """Human-readable name (``English (America)``)."""
    languages: tuple[str, ...]
    """Language codes (``en-us``, ``cmn-latn-pinyin``)."""


class Engine(Protocol):
    """Text to audio. Never called with empty text; used from one thread only."""

    def synthesize(self, text: str, lang: Lang) -> Audio: ...

    def voices(self) -> list[VoiceInfo]: ...

    def close(self) -> None: ...


def engine_module(settings: TTSSettings) -> ModuleType:
    """The module of the profile's engine (imported now); `ConfigError` for ``none`` and for
    a name that is not in `ENGINES`."""
    name = settings.engine
    if name == NO_ENGINE:
        raise ConfigError("tts.engine is none: there is no voice (set pyttsx3 or piper)")
    path = ENGINES.get(name)
    if path is None:
        known = ", ".join([*ENGINES, NO_ENGINE])
        raise ConfigError(f"unknown tts.engine {str(name)[:40]!r}: use one of {known}")
    return importlib.import_module(path)


def create_engine(settings: TTSSettings) -> Engine:
    """The profile's engine, loaded and configured (slow: call it off the main thread).

    Raises `SpeechError` when the engine cannot run here (with the install command) and
    `ConfigError` when the profile names something that does not exist.
    """
    engine: Engine = with_fallback(lambda s: engine_module(s).create(s), settings)
    return engine


def list_voices(settings: TTSSettings) -> list[VoiceInfo]:
    """The voices of the profile's engine (none for ``engine: none``)."""
    if settings.engine == NO_ENGINE:
        return []
    found: list[VoiceInfo] = with_fallback(lambda s: engine_module(s).voices(s), settings)
    return found


def rate_hint(settings: TTSSettings) -> int | None:
    """The engine's output rate, known before loading it (``None``: unknown)."""
    if settings.engine not in ENGINES:
        return None
    hint: int | None = engine_module(settings).rate_hint(settings)
    return hint


def checks(settings: TTSSettings) -> Iterator[Check]:
    """The doctor's rows for the voice: the engine loads and speaks a test phrase in each
    language (``voice``, ``voice (zh)``), each failing row with its fix."""
    from voicechat.checks import Check

    if settings.engine == NO_ENGINE:
        yield Check("voice", None, "tts.engine is none: replies are text only")
        return
    try:
        module = engine_module(settings)
    except ConfigError as exc:
        yield Check("voice", False, str(exc), "set tts.engine in the profile")
        return
    except ImportError as exc:
        yield Check("voice", False, f"the speech module cannot be imported: {exc}", "")
        return
    yield from checks_with_fallback(module.checks, settings)


# --- tts.fallback: speak with espeak until the profile's Piper voice is pulled ----------------


def fallback_settings(settings: TTSSettings) -> TTSSettings | None:
    """The settings of ``tts.fallback`` (its engine with its default voices), if it has one."""
    import dataclasses

    from voicechat.tts.piper_voices import piper_model

    if settings.fallback in (None, settings.engine):
        return None
    # keep the voices the fallback engine can use (an espeak id chosen with /voice), not the
    # Piper voices it cannot
    voice, voice_zh = (
        None if v is None or piper_model(None, v)[0] or v.endswith(".onnx") else v
        for v in (settings.voice, settings.voice_zh)
    )
    return dataclasses.replace(
        settings,
        engine=settings.fallback,
        voice=voice,
        voice_zh=voice_zh,
        model=None,
        fallback=None,
    )


def speaking_engine(settings: TTSSettings) -> str:
    """The engine that speaks: the profile's, or its fallback's when it cannot start here."""
    import dataclasses

    return with_fallback(
        lambda s: (list_voices(dataclasses.replace(s, fallback=None)), s.engine)[1], settings
    )


def with_fallback(call: Callable[[TTSSettings], T], settings: TTSSettings) -> T:
    """``call(settings)``; if the engine cannot start here (a voice not pulled, Piper not
    installed), ``call`` with the fallback engine's settings instead."""
    try:
        return call(settings)
    except (ConfigError, SpeechError):
        plain = fallback_settings(settings)
        if plain is None:
            raise
        return call(plain)


def checks_with_fallback(
    checks: Callable[[TTSSettings], Iterator[Check]], settings: TTSSettings
) -> Iterator[Check]:
    """The doctor's voice rows; with a fallback, an engine that cannot start is a note (the
    fallback speaks), followed by the fallback engine's rows."""
    from voicechat.checks import Check

    plain = fallback_settings(settings)
    rows = checks(settings)
    first = next(rows, None)
    if plain is None or first is None or first.ok is not False or first.name != "voice":
        if first is not None:
            yield first
        yield from rows
        return
    rows.close()
    yield Check(
        "voice",
        None,
        f"{settings.engine}: {first.detail}; speaking with tts.fallback {plain.engine} instead",
        first.fix,
    )
    if plain.engine != "none":
        yield from engine_module(plain).checks(plain)


PHRASES = {"other": "Hello, this is voicechat speaking.", "zh": "你好，我是语音助手。"}
"""What the doctor's voice rows synthesize, per language."""
VOICES_FIX = "fix the profile's tts section (voicechat voices)"


def loaded_check(
    settings: TTSSettings, create: Callable[[TTSSettings], Engine], fix: str
) -> tuple[Engine | None, Check | None]:
    """Load an engine for the doctor: ``(engine, None)``, or ``(None, failing row)``."""
    from voicechat.checks import Check

    try:
        return create(settings), None
    except ConfigError as exc:
        return None, Check("voice", False, str(exc), VOICES_FIX)
    except (SpeechError, OSError, RuntimeError) as exc:
        return None, Check("voice", False, f"{settings.engine} cannot start: {exc}", fix)


def spoken_check(engine: Engine, lang: Lang, name: str, label: str, fix: str) -> Check:
    """Synthesize the test phrase for ``lang``: a row saying how long it took, or what failed."""
    import time

    from voicechat.checks import Check

    started = time.monotonic()
    try:
        audio = engine.synthesize(PHRASES[lang], lang)
    except (SpeechError, OSError, RuntimeError) as exc:
        return Check(name, False, f"synthesis failed: {exc}", fix)
    took = time.monotonic() - started
    if peak(audio.pcm) < 100:
        return Check(
            name,
            False,
            f"{label} produced {'silence' if audio.pcm else 'no audio'}",
            "try another voice: voicechat voices",
        )
    return Check(
        name, True, f"{label}: {audio.seconds:.1f} s of speech synthesized in {took * 1000:.0f} ms"
    )


def peak(pcm: bytes) -> int:
    """Largest absolute sample of mono int16 PCM (no numpy: the doctor runs it at start-up).

    >>> peak(b"\\x10\\x00\\x00\\x80")
    32768
    """
    import sys
    from array import array

    samples = array("h")
    samples.frombytes(pcm[: len(pcm) // 2 * 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return max((abs(s) for s in samples), default=0)


def find_voice(wanted: str, voices: list[VoiceInfo]) -> VoiceInfo | None:
    """The voice ``wanted`` names: an id, the id's last part, a name or a language code.

    >>> vs = [VoiceInfo("gmw/en-us", "English (America)", ("en-us",))]
    >>> [find_voice(w, vs) is not None for w in ("gmw/en-us", "EN-US", "English (America)", "fr")]
    [True, True, True, False]
    """
    key = wanted.strip().lower()
    for match in (
        lambda v: v.id.lower() == key,
        lambda v: v.id.lower().rsplit("/", 1)[-1] == key,
        lambda v: v.name.lower() == key,
        lambda v: key in (code.lower() for code in v.languages),
    ):
        for voice in voices:
            if match(voice):
                return voice
    return None


def unknown_voice(key: str, wanted: str, voices: list[VoiceInfo], engine: str) -> ConfigError:
    """An error for a voice that does not exist, listing the closest ones that do."""
    import difflib

    ids = [v.id for v in voices]
    close = difflib.get_close_matches(wanted.lower(), [i.lower() for i in ids], n=5, cutoff=0.4)
    shown = close or ids[:8]
    more = f" (of {len(ids)}; `voicechat voices` lists all)" if len(ids) > len(shown) else ""
    return ConfigError(
        f"tts.{key} {wanted!r} is not a voice of engine {engine}: try {', '.join(shown)}{more}"
    )


__all__ = [
    "ENGINES",
    "Audio",
    "Engine",
    "SpeechError",
    "VoiceInfo",
    "checks",
    "create_engine",
    "engine_module",
    "find_voice",
    "list_voices",
    "rate_hint",
    "speaking_engine",
    "with_fallback",
]
