"""What every recognizer shares: the sample rate, the `Recognizer` interface, its `Transcript`.

Kept apart from the registry (`voicechat.stt`) so the VAD and the engines can import it
without importing the registry that imports them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from voicechat.audio import RATE
from voicechat.errors import ListenError

if TYPE_CHECKING:
    import numpy as np

SAMPLE_RATE = RATE
"""Every recognizer and the VAD take mono float32 samples at this rate."""

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


def language_code(language: str) -> str | None:
    """``stt.language`` as a recognizer takes it: ``auto`` is None."""
    return None if language == "auto" else language
