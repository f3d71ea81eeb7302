"""The profile schema: frozen dataclasses, one per YAML section.

`profile.py` validates YAML against these classes by their type hints (unknown keys are
errors), so adding a field here is all it takes to add a profile key. Keep this module
free of imports beyond the standard library: it is on the start-up path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

BackendKind = Literal["ollama", "openai"]


@dataclass(frozen=True)
class BackendSettings:
    """Where the model lives and how to talk to it."""

    kind: BackendKind
    """Wire protocol: ``ollama`` (/api/chat, NDJSON) or ``openai`` (/v1/chat/completions, SSE)."""
    base_url: str
    """Server root, e.g. ``http://127.0.0.1:11434`` or ``http://127.0.0.1:8080/v1``."""
    model: str
    """Model name as the server knows it (``qwen2.5:7b``)."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (never the key itself)."""
    api_key_required: bool = False
    """Fail before sending when the key variable is unset (cloud APIs); local servers need none."""
    connect_timeout: float = 3.0
    """Seconds to wait for the TCP connection; small, so a dead local server is reported fast."""
    read_timeout: float = 120.0
    """Seconds of silence tolerated between bytes of the reply (a cold 7B model loads slowly)."""
    retries: int = 0
    """Extra attempts for connection failures, 429 and 5xx before any text arrived."""
    keep_alive: str | int | None = None
    """Ollama only: how long the model stays loaded after the reply (``30m``, seconds, -1)."""


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling options; ``None`` leaves the server's default."""

    temperature: float | None = None
    """Sampling temperature."""
    top_p: float | None = None
    """Nucleus sampling threshold."""
    max_tokens: int | None = None
    """Upper bound on reply tokens (Ollama ``num_predict``)."""
    context_size: int | None = None
    """Context window in tokens (Ollama ``num_ctx``; ignored by OpenAI-compatible servers)."""
    seed: int | None = None
    """Fixed seed for reproducible replies."""


@dataclass(frozen=True)
class TTSSettings:
    """Which voice speaks, and how."""

    engine: Literal["pyttsx3", "piper", "none"] = "pyttsx3"
    """``pyttsx3`` (espeak-ng on Linux), ``piper`` (neural, optional extra) or ``none``."""
    voice: str | None = None
    """Voice for non-Chinese chunks (engine-specific id); ``None`` picks the engine default."""
    voice_zh: str | None = None
    """Voice for Chinese chunks; ``None`` picks one automatically (espeak: cmn-latn-pinyin)."""
    rate: int = 175
    """Speaking rate in words per minute (pyttsx3); piper maps it to its length scale."""
    volume: float = 1.0
    """0.0 to 1.0."""
    model: str | None = None
    """Piper: path to the ``.onnx`` voice model (its ``.onnx.json`` beside it)."""
    sentence_pause: float = 0.12
    """Seconds of silence added after a chunk that ends a sentence."""
    device: str | None = None
    """Output device name or index for sounddevice; ``None`` is the system default."""


@dataclass(frozen=True)
class ChunkingSettings:
    """How the reply is cut into speakable pieces (see chunker.py)."""

    mode: Literal["clause", "sentence"] = "clause"
    """``clause``: the first piece may end at a clause mark so speech starts early;
    ``sentence``: cut only at sentence ends."""
    first_min_chars: int = 5
    """Chinese: the first piece may end at a clause mark once it has this many characters."""
    first_min_words: int = 3
    """Other languages: the first piece may end at a clause mark once it has this many words."""
    min_chars: int = 8
    """Sentences shorter than this (in characters) are merged with the next one."""
    max_chars: int = 160
    """Text without marks is cut at this length (at a clause mark, else whitespace)."""
    code_blocks: Literal["announce", "skip"] = "announce"
    """Fenced code is never read aloud: say once that code was shown, or skip it silently."""


@dataclass(frozen=True)
class Profile:
    """A resolved backend profile."""

    backend: BackendSettings
    """The model server."""
    description: str = ""
    """One line shown by ``voicechat profiles``."""
    system: str | None = None
    """System prompt sent first in every conversation."""
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    """Sampling options."""
    tts: TTSSettings = field(default_factory=TTSSettings)
    """Speech settings."""
    chunking: ChunkingSettings = field(default_factory=ChunkingSettings)
    """Chunking settings."""
