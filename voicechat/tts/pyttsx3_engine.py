"""pyttsx3 (espeak-ng on Linux, the system voices on macOS/Windows), used around its bugs.

pyttsx3 2.99's known traps (see platform notes; pyttsx3 #126 #262 #327 #402 #419 #440) and
what this module does about each:

- ``say()`` plays through ``aplay`` and fails silently: we only ever ``save_to_file`` into
  a private temp folder and play the PCM ourselves.
- The first ``runAndWait()`` can return before the file is complete (espeak calls back on
  its own thread): we wait for the ``finished-utterance`` event, with a timeout.
- Queued state leaks between calls (``runAndWait`` with nothing queued repeats the last
  text; ``save_to_file('')`` asserts or hangs): every call queues exactly one non-empty
  text, and each file is read and removed before the next.
- The engine is process-global and not thread-safe: one thread (the speaker's synthesis
  worker) creates and uses it.
- The espeak driver ``print``s "Audio saved to ..." on stdout for every file, where the
  reply text goes: we shadow ``print`` in that driver module only. Redirecting fd 1 would
  also swallow the reply text the main thread prints meanwhile.
- A call can come back with a file of no frames (seen once, for a short text after
  another): it is made once more.
- An unknown voice is swallowed (the previous voice stays): we resolve names against the
  voice list first and fail with the list of what exists.

On Linux, where pyttsx3's driver is libespeak-ng, synthesis calls that library directly
and synchronously (`voicechat.tts.espeak_sync`): pyttsx3 2.99 also ignores rate changes
there, and the direct call takes ~1.5 ms instead of 10-20 ms. The engine is still named
``pyttsx3`` and uses the same voices (same ids); on macOS/Windows pyttsx3's own driver
is used with the precautions above.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import wave
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicechat.errors import ConfigError, SpeechError
from voicechat.signals import before_exit_now
from voicechat.tts import Audio, VoiceInfo, find_voice, unknown_voice
from voicechat.tts.espeak_sync import ESPEAK_HINT

if TYPE_CHECKING:
    from collections.abc import Iterator

    from voicechat.checks import Check
    from voicechat.settings import TTSSettings
    from voicechat.speakable import Lang

_DEFAULT_VOICE: str | None = None
"""The driver's initial voice id, recorded before any instance changes it."""
ZH_PREFERENCE = ("cmn-latn-pinyin", "zh-cn", "zh", "cmn", "zh-tw", "yue")
"""Chinese voices by preference. On espeak-ng 1.51 (Debian 12, Ubuntu 22.04) ``cmn`` reads
Chinese as pinyin spelt out with English rules; ``cmn-latn-pinyin`` speaks the tones."""


def _quiet(*args: object, **kwargs: object) -> None:
    """Replaces ``print`` inside pyttsx3's espeak driver (stdout carries the reply)."""


def _load() -> Any:
    """A pyttsx3 engine, with the driver's stdout chatter silenced."""
    try:
        import pyttsx3
    except ImportError as exc:
        raise SpeechError(f"pyttsx3 is not installed ({exc}): pip install pyttsx3") from exc
    try:
        engine = pyttsx3.init()
    except (RuntimeError, OSError, ValueError, ImportError) as exc:
        # pyttsx3's own text for this ("you probably do not have eSpeak") is several lines
        raise SpeechError(
            f"pyttsx3 could not start its speech driver ({_first_line(exc)}): {ESPEAK_HINT}"
        ) from exc
    driver = sys.modules.get("pyttsx3.drivers.espeak")
    if driver is not None:
        driver.print = _quiet  # type: ignore[attr-defined]
    return engine


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _voices(engine: Any) -> list[VoiceInfo]:
    found = []
    for v in engine.getProperty("voices") or []:
        languages = tuple(
            lang.decode(errors="replace") if isinstance(lang, bytes) else str(lang)
            for lang in (v.languages or ())
        )
        found.append(VoiceInfo(id=str(v.id), name=str(v.name or v.id), languages=languages))
    return found


def _direct() -> bool:
    """True where pyttsx3's driver is libespeak-ng, which we then drive ourselves."""
    return sys.platform.startswith("linux")


def _espeak_voices(espeak: Any) -> list[VoiceInfo]:
    return [
        VoiceInfo(id=i.lower(), name=n or i, languages=langs) for i, n, langs in espeak.voices()
    ]


def available_voices() -> list[VoiceInfo]:
    """Every voice pyttsx3 offers on this system."""
    if _direct():
        from voicechat.tts.espeak_sync import Espeak

        return _espeak_voices(Espeak.get())
    return _voices(_load())


def chinese_voice(voices: list[VoiceInfo]) -> VoiceInfo | None:
    """The best Chinese voice available, or ``None``."""
    for key in ZH_PREFERENCE:
        for voice in voices:
            if voice.id.lower().rsplit("/", 1)[-1] == key or key in voice.languages:
                return voice
    return None


class Pyttsx3Engine:
    """The default engine; create and use it from one thread."""

    def __init__(self, settings: TTSSettings) -> None:
        if not 0.0 <= settings.volume <= 1.0:
            raise ConfigError(f"tts.volume {settings.volume} is out of range: use 0.0 to 1.0")
        if settings.rate <= 0:
            raise ConfigError(f"tts.rate {settings.rate} must be positive (words per minute)")
        self._settings = settings
        self._current: VoiceInfo | None = None
        self._callbacks: list[Any] = []
        self._folder: Any = None
        if _direct():
            from voicechat.tts.espeak_sync import Espeak

            self._espeak: Any = Espeak.get()
            self._voices = _espeak_voices(self._espeak)
            self._voice = self._pick(settings.voice, "voice") or self._espeak_default()
        else:
            self._espeak = None
            self._open_driver(settings)
            self._voice = self._pick(settings.voice, "voice") or self._default()
        self._voice_zh = self._pick(settings.voice_zh, "voice_zh") or chinese_voice(self._voices)

    def _espeak_default(self) -> VoiceInfo:
        found = find_voice("gmw/en", self._voices) or find_voice("en", self._voices)
        return found or self._voices[0]

    def _open_driver(self, settings: TTSSettings) -> None:
        self._engine = _load()
        self._voices = _voices(self._engine)
        self._done = threading.Event()
        self._errors: list[BaseException] = []
        self._callbacks = [
            self._engine.connect("finished-utterance", self._on_finished),
            self._engine.connect("error", self._on_error),
        ]
        self._engine.setProperty("rate", int(settings.rate))
        self._engine.setProperty("volume", float(settings.volume))
        self._folder = tempfile.TemporaryDirectory(prefix="voicechat-tts-")
        before_exit_now(self._folder.cleanup)  # Ctrl+C ends the process with os._exit
        self._count = 0

    def _pick(self, wanted: str | None, key: str) -> VoiceInfo | None:
        if not wanted:
            return None
        voice = find_voice(wanted, self._voices)
        if voice is None:
            raise unknown_voice(key, wanted, self._voices, "pyttsx3")
        return voice

    def _on_finished(self, name: object = None, completed: object = True, **_: object) -> None:
        self._done.set()

    def _on_error(
        self, name: object = None, exception: BaseException | None = None, **_: object
    ) -> None:
        self._errors.append(exception or RuntimeError("pyttsx3 reported an error"))

    def voices(self) -> list[VoiceInfo]:
        return list(self._voices)

    def voice_for(self, lang: Lang) -> VoiceInfo:
        """The voice that speaks chunks of ``lang`` (Chinese falls back to the main voice)."""
        return (self._voice_zh if lang == "zh" else None) or self._voice

    def synthesize(self, text: str, lang: Lang) -> Audio:
        """Speech for ``text`` with the voice for ``lang``; raises `SpeechError` on failure."""
        if not text.strip():
            return Audio(b"", 22050)  # pyttsx3 asserts (or hangs under -O) on empty text
        voice = self.voice_for(lang)
        if self._espeak is not None:
            pcm = self._espeak.synthesize(
                text, voice.id, self._settings.rate, self._settings.volume
            )
            return Audio(pcm, self._espeak.sample_rate)
        if voice != self._current:  # set on first use too: the engine is shared per process
            self._engine.setProperty("voice", voice.id)
            self._current = voice
        audio = self._through_driver(text)
        # once in CI (espeak driver, second call of a process): a file of 0 frames for
        # "Two.", as if an event of the previous call had ended this one; said again
        return audio if audio.pcm else self._through_driver(text)

    def _through_driver(self, text: str) -> Audio:
        """One ``save_to_file`` round trip through pyttsx3's own driver."""
        self._count += 1
        path = Path(self._folder.name) / f"{self._count}.wav"
        self._done.clear()
        self._errors.clear()
        self._engine.save_to_file(text, str(path))
        self._engine.runAndWait()
        # the first runAndWait after init can return before espeak's thread is done
        if not self._done.wait(10.0 + len(text) / 20):
            raise SpeechError("pyttsx3 did not finish synthesizing within its time limit")
        if self._errors:
            raise SpeechError(f"pyttsx3 failed: {_first_line(self._errors[0])}")
        try:
            with wave.open(str(path), "rb") as wav:
                if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
                    raise SpeechError("pyttsx3 wrote audio that is not mono 16-bit")
                audio = Audio(wav.readframes(wav.getnframes()), wav.getframerate())
        except (OSError, EOFError, wave.Error) as exc:
            raise SpeechError(f"pyttsx3 wrote no readable audio: {_first_line(exc)}") from exc
        finally:
            path.unlink(missing_ok=True)
        return audio

    def _default(self) -> VoiceInfo:
        """The voice the driver started with (remembered: the engine outlives us)."""
        global _DEFAULT_VOICE
        if _DEFAULT_VOICE is None:
            _DEFAULT_VOICE = str(self._engine.getProperty("voice") or "")
        found = find_voice(_DEFAULT_VOICE, self._voices) if _DEFAULT_VOICE else None
        return found or VoiceInfo(_DEFAULT_VOICE, _DEFAULT_VOICE, ())

    def close(self) -> None:
        for token in self._callbacks:
            self._engine.disconnect(token)
        self._callbacks = []
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


# --- what the registry asks of an engine module ------------------------------------------------

FIX = "apt-get install espeak-ng libespeak-ng1 && pip install pyttsx3"
"""What makes this engine work on a machine where it does not."""
ZH_FIX = "apt-get install espeak-ng-data (it has cmn-latn-pinyin), or set tts.voice_zh"


def create(settings: TTSSettings) -> Pyttsx3Engine:
    """Settings: ``tts.voice`` / ``tts.voice_zh`` are espeak voice ids, names or language
    codes (``gmw/en-us``, ``en-us``, ``cmn-latn-pinyin``); ``tts.model`` is not used."""
    return Pyttsx3Engine(settings)


def voices(settings: TTSSettings) -> list[VoiceInfo]:
    """Every installed voice (listing must not fail because the profile's voice is misspelt:
    that is what the user is trying to fix by listing)."""
    return available_voices()


def rate_hint(settings: TTSSettings) -> int | None:
    """espeak-ng speaks at 22050 Hz; other platforms' voices vary."""
    return 22050 if _direct() else None


def checks(settings: TTSSettings) -> Iterator[Check]:
    """The doctor's rows: the engine starts, speaks English, and has a Chinese voice."""
    from voicechat.checks import Check
    from voicechat.tts import loaded_check, spoken_check

    engine, failed = loaded_check(settings, create, FIX)
    if engine is None:
        assert failed is not None
        yield failed
        return
    assert isinstance(engine, Pyttsx3Engine)
    try:
        main = engine.voice_for("other")
        yield spoken_check(engine, "other", "voice", main.id or "default voice", FIX)
        chinese = engine.voice_for("zh")
        if chinese == main:
            yield Check(
                "voice (zh)",
                False,
                "no Chinese voice: Chinese text would be read by the main voice",
                ZH_FIX,
            )
        else:
            yield spoken_check(engine, "zh", "voice (zh)", chinese.id, FIX)
    finally:
        engine.close()
