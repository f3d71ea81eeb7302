"""Old home of Piper's voice catalog, kept only for the callers not yet moved.

The catalog is `voicechat.tts.piper_voices`; the fallback helpers are in `voicechat.tts`.
`cli.py` (``voices`` and ``voices pull``) and `repl.py` (``speaking_engine``) still import
them from here; once they import from their homes this module goes. It imports downward
only, so no circle runs through it.
"""

from voicechat.tts import speaking_engine
from voicechat.tts.piper_voices import (
    CATALOG,
    REPO,
    PiperVoice,
    available,
    catalog,
    installed,
    pull,
)

__all__ = [
    "CATALOG",
    "REPO",
    "PiperVoice",
    "available",
    "catalog",
    "installed",
    "pull",
    "speaking_engine",
]
