"""Turn raw chunks into what the voice says: Markdown/URL/emoji/code cleanup, language tag.

STUB: the interface below is fixed (other modules use it); the implementation is in progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Lang = Literal["zh", "other"]


@dataclass(frozen=True)
class Utterance:
    """One piece for the TTS queue."""

    text: str
    """Cleaned text to speak; never empty."""
    lang: Lang
    """``zh`` when the piece is Chinese (the TTS picks a Chinese voice), else ``other``."""
    sentence_end: bool
    """True when the piece ends a sentence or paragraph (playback may add a short pause)."""
