"""Speech engines behind one small interface: text in, mono int16 PCM out.

Engines never play anything themselves (pyttsx3's own playback goes through ``aplay`` and
fails silently); `voicechat.playback` plays what they return. Each engine lives in its
own module, imported only when chosen: pyttsx3/espeak and piper/onnxruntime are heavy.

An engine instance is used by ONE thread (the speaker's synthesis worker), which creates
it there: pyttsx3's espeak driver is process-global and not thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from voicechat.errors import ConfigError, SpeechError

if TYPE_CHECKING:
    from voicechat.settings import TTSSettings
    from voicechat.speakable import Lang

ENGINES = ("pyttsx3", "piper", "none")
"""Engine names a profile's ``tts.engine`` may use."""


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
class Voice:
    """A voice an engine offers."""

    id: str
    """What to put in ``tts.voice`` / ``tts.voice_zh`` (e.g. ``gmw/en-us``)."""
    name: str
    """Human-readable name (``English (America)``)."""
    languages: tuple[str, ...]
    """Language codes (``en-us``, ``cmn-latn-pinyin``)."""


class Engine(Protocol):
    """Text to audio. Never called with empty text; used from one thread only."""

    def synthesize(self, text: str, lang: Lang) -> Audio: ...

    def voices(self) -> list[Voice]: ...

    def close(self) -> None: ...


def create_engine(settings: TTSSettings) -> Engine:
    """The profile's engine, loaded and configured (slow: call it off the main thread).

    Raises `SpeechError` when the engine cannot run here (with the install command) and
    `ConfigError` when the profile names something that does not exist.
    """
    if settings.engine == "pyttsx3":
        from voicechat.tts.pyttsx3_engine import Pyttsx3Engine

        return Pyttsx3Engine(settings)
    if settings.engine == "piper":
        from voicechat.tts.piper_engine import PiperEngine

        return PiperEngine(settings)
    if settings.engine == "none":
        raise ConfigError("tts.engine is none: there is no voice (set pyttsx3 or piper)")
    raise ConfigError(f"unknown tts.engine {settings.engine!r}: use one of {', '.join(ENGINES)}")


def list_voices(settings: TTSSettings) -> list[Voice]:
    """The voices of the profile's engine (none for ``engine: none``)."""
    if settings.engine == "none":
        return []
    if settings.engine == "pyttsx3":
        # listing must not fail because the profile's voice is misspelt: that is what
        # the user is trying to fix by listing
        from voicechat.tts.pyttsx3_engine import available_voices

        return available_voices()
    if settings.engine == "piper":
        from voicechat.tts.piper_engine import model_voices

        return model_voices(settings)
    raise ConfigError(f"unknown tts.engine {settings.engine!r}: use one of {', '.join(ENGINES)}")


def find_voice(wanted: str, voices: list[Voice]) -> Voice | None:
    """The voice ``wanted`` names: an id, the id's last part, a name or a language code.

    >>> vs = [Voice("gmw/en-us", "English (America)", ("en-us",))]
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


def unknown_voice(key: str, wanted: str, voices: list[Voice], engine: str) -> ConfigError:
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
    "Voice",
    "create_engine",
    "find_voice",
    "list_voices",
]
