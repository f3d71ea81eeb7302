"""The profile schema: frozen dataclasses, one per YAML section.

`profile.py` validates YAML against these classes by their type hints (unknown keys are
errors), so adding a field here is all it takes to add a profile key. A numeric field
declares its allowed range as ``field(default=..., metadata={"range": (lo, hi)})``
(inclusive; NaN and infinity are always refused); a URL field declares ``metadata=URL``;
any string field may declare ``metadata={"check": problem}``, where ``problem(value)`` says
why a value is unusable, or returns None (the profile, the command line and the environment
are all checked with it). The ``backend:`` section belongs to its kind: each module in
`voicechat.backends.KINDS` defines its own ``Settings`` (a subclass of `BackendSettings`).
Keep this module free of imports beyond the standard library (and `voicechat.redact`, itself
standard library only): it is on the start-up path. `url_problem` lives here, below both the
profile loader and the backends, which check URLs from files and from the environment alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from voicechat.redact import short


def url_problem(url: str) -> str | None:
    """Why ``url`` is no ``http(s)://host[:port][/path]`` URL, or ``None``.

    >>> url_problem("localhost:8080/v1")
    "'localhost:8080/v1' has no scheme: write http://localhost:8080/v1"
    >>> url_problem("http://[bad/v1")
    "'http://[bad/v1' is not a valid URL (Invalid IPv6 URL)"
    """
    shown = repr(short(url, 40))  # short: a password in the URL is masked
    if not url.strip():
        return "is empty: give the server's URL, e.g. http://127.0.0.1:8080/v1"
    if any(c.isspace() or ord(c) < 32 or 127 <= ord(c) < 160 for c in url):
        return f"{shown} contains spaces or control characters: not a URL"
    if "://" not in url:
        return f"{shown} has no scheme: write http://{short(url, 60)}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{shown} is not a valid URL ({short(str(exc), 60)})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"{shown}: the scheme must be http or https, not {short(parts.scheme, 20)!r}"
    if not parts.hostname:
        return f"{shown} has no host name"
    if port == 0:
        return f"{shown}: port 0 is not a port"
    return None


URL = {"url": True, "check": url_problem}
"""Field metadata: an ``http(s)://host[:port][/path]`` URL (shown redacted)."""


def between(lo: float, hi: float) -> dict[str, tuple[float, float]]:
    """Field metadata: the inclusive range a number must lie in."""
    return {"range": (lo, hi)}


def range_of(section: type, name: str) -> tuple[float, float]:
    """The inclusive range of a section's number field (`between`), for messages that
    name it.

    >>> range_of(GenerationSettings, "temperature")
    (0, 2)
    """
    found = next(f for f in dataclasses.fields(section) if f.name == name)
    return found.metadata["range"]


@dataclass(frozen=True)
class BackendSettings:
    """What every kind's ``backend:`` section has; the kind's module adds the rest."""

    kind: str
    """Which module talks to the model: a key of `voicechat.backends.KINDS`."""
    model: str
    """Model name as the server knows it (``qwen2.5:7b``)."""


@dataclass(frozen=True)
class HTTPBackendSettings(BackendSettings):
    """A model server reached over HTTP (Ollama, OpenAI-compatible servers)."""

    base_url: str = field(metadata=URL)
    """Server root, e.g. ``http://127.0.0.1:11434`` or ``http://127.0.0.1:8080/v1``."""
    connect_timeout: float = field(default=3.0, metadata=between(0.05, 600))
    """Seconds to wait for the TCP connection; small, so a dead local server is reported fast."""
    read_timeout: float = field(default=120.0, metadata=between(0.05, 3600))
    """Seconds of silence tolerated between bytes of the reply (a cold 7B model loads slowly)."""
    progress_timeout: float = field(default=300.0, metadata=between(1, 86400))
    """Seconds a reply may go without new text once the server answered (bytes that carry no
    text, such as keep-alive pings, do not count): the overall stall deadline."""
    retries: int = field(default=0, metadata=between(0, 10))
    """Extra attempts for connection failures, 429 and 5xx before any text arrived."""


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling options; ``None`` leaves the server's default."""

    temperature: float | None = field(default=None, metadata=between(0, 2))
    """Sampling temperature."""
    top_p: float | None = field(default=None, metadata=between(0, 1))
    """Nucleus sampling threshold."""
    max_tokens: int | None = field(default=None, metadata=between(1, 1_000_000))
    """Upper bound on reply tokens (Ollama ``num_predict``)."""
    context_size: int | None = field(default=None, metadata=between(16, 10_000_000))
    """Context window in tokens (Ollama ``num_ctx``; ignored by OpenAI-compatible servers)."""
    seed: int | None = field(default=None, metadata=between(-(2**63), 2**63 - 1))
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
    rate: int = field(default=175, metadata=between(50, 600))
    """Speaking rate in words per minute (pyttsx3); piper maps it to its length scale."""
    volume: float = field(default=1.0, metadata=between(0, 1))
    """0.0 to 1.0."""
    model: str | None = None
    """Piper: path to the ``.onnx`` voice model (its ``.onnx.json`` beside it)."""
    sentence_pause: float = field(default=0.12, metadata=between(0, 5))
    """Seconds of silence added after a chunk that ends a sentence."""
    device: str | None = None
    """Output device name or index for sounddevice; ``None`` is the system default."""
    mixed: Literal["runs", "piece"] = "runs"
    """A piece mixing Chinese and Latin script: ``runs`` speaks each run with the voice for its
    language, back to back; ``piece`` speaks the whole piece with one voice."""
    fallback: Literal["pyttsx3", "none"] | None = None
    """Engine used (with its default voices) when ``engine`` cannot start here: e.g. a Piper
    voice not pulled yet (``voicechat voices pull``) falls back to espeak."""


@dataclass(frozen=True)
class ChunkingSettings:
    """How the reply is cut into speakable pieces (see chunker.py)."""

    mode: Literal["clause", "sentence"] = "clause"
    """``clause``: the first piece may end at a clause mark so speech starts early;
    ``sentence``: cut only at sentence ends."""
    first_min_chars: int = field(default=5, metadata=between(1, 500))
    """Chinese: the first piece may end at a clause mark once it has this many characters."""
    first_min_words: int = field(default=3, metadata=between(1, 100))
    """Other languages: the first piece may end at a clause mark once it has this many words."""
    min_chars: int = field(default=8, metadata=between(0, 1000))
    """Sentences shorter than this (in characters) are merged with the next one."""
    max_chars: int = field(default=160, metadata=between(20, 10_000))
    """Text without marks is cut at this length (at a clause mark, else whitespace); a run
    without clause marks already at the speaking time of this many Latin characters."""
    cjk_weight: float = field(default=3.0, metadata=between(1.0, 6.0))
    """How many Latin characters one Chinese character weighs in ``max_chars`` (it takes ~3x
    as long to say): unpunctuated Chinese is cut at about 160 / 3 = 53 characters."""
    code_blocks: Literal["announce", "skip"] = "announce"
    """Fenced code is never read aloud: say once that code was shown, or skip it silently."""


@dataclass(frozen=True)
class STTSettings:
    """How speech is heard and recognised (needs the ``[listen]`` extra)."""

    engine: Literal["faster-whisper"] = "faster-whisper"
    """Recognizer: ``faster-whisper`` (CTranslate2, int8 on the CPU)."""
    model: str = "base"
    """``base``: multilingual Whisper base from PyPI; else a CTranslate2 Whisper folder."""
    language: str = "auto"
    """``auto`` detects per utterance; ``zh``, ``en``, ... fix it (faster, no misdetection)."""
    device: str | None = None
    """Input device name or index (``voicechat devices``); ``None`` is the system default."""
    vad_threshold: float = field(default=0.5, metadata={"range": (0.05, 0.95)})
    """Speech probability (Silero VAD) at which speech starts; it ends below this minus 0.15."""
    end_silence: float = field(default=0.5, metadata={"range": (0.1, 5.0)})
    """Seconds of silence that end an utterance that sounds finished."""
    max_pause: float = field(default=2.5, metadata={"range": (0.1, 10.0)})
    """Seconds of silence an utterance that sounds unfinished waits for more (its transcript
    ends on "and then", "because", "the", "然后", "应该", ... or "..."); ``end_silence`` or
    less: silence alone ends every utterance."""
    max_utterance: float = field(default=20.0, metadata={"range": (1.0, 120.0)})
    """Longest utterance in seconds; longer speech is cut there (and the user told)."""
    pre_roll: float = field(default=0.3, metadata={"range": (0.0, 2.0)})
    """Seconds kept from before speech starts, so the first syllable is not lost."""
    no_speech_threshold: float = field(default=0.6, metadata={"range": (0.0, 1.0)})
    """Text whose no-speech probability is above this is dropped (hallucination on noise)."""
    threads: int = field(default=0, metadata={"range": (0, 16)})
    """CPU threads for recognition; 0: every core this process may use, 1 to 4 (the user
    waits for it with little else running; the Jetson's 6 cores get 4)."""
    resume_after: float = field(default=0.3, metadata={"range": (0.0, 5.0)})
    """Hands-free: seconds after the reply's playback ended before listening resumes."""
    read_ahead: bool = True
    """Hands-free and ``ask --listen``: ask the model on the transcript of a pause that may
    end the utterance, before the end silence has passed, and show and speak the reply only
    once it has; if the user speaks on, that request is cancelled (a paid API bills its
    prompt)."""
    barge_in: Literal["auto", "on", "off", "keyword"] = "auto"
    """Hands-free: talking over the reply stops it. ``auto``: once echo cancellation has
    found and tamed the loudspeaker's echo (``voicechat doctor`` measures it); ``on``:
    always (headphones); ``off``: never (half-duplex); ``keyword``: only a stop word
    (``stop_words``), recognised first, so it is slower (about a second) but nothing else
    said near the microphone, nor a leak of its own voice, stops it."""
    stop_words: str = "stop, wait, 停, 停下, 停一下, 别说了, 等一下"
    """``barge_in: keyword``: the words that stop the reply, comma-separated; said alone,
    repeated or with "please"/"ok" ("Stop, stop!", "Please stop.", "停一下吧")."""
    wake: tuple[str, ...] = ()
    """Hands-free: the phrases an utterance must start with to be a question ("hey jetson",
    "你好小杰"), compared by sound (a misspelt name, a Chinese homophone still wake it); the
    phrase is taken off the question. Empty: every utterance is a question."""
    follow_up: float = field(default=8.0, metadata=between(0, 600))
    """With ``wake``: seconds after a reply, or after the phrase said alone, in which a
    question needs no phrase."""


@dataclass(frozen=True)
class Profile:
    """A resolved backend profile."""

    backend: BackendSettings = field(metadata={"kinds": "voicechat.backends"})
    """The model server: the ``Settings`` of the module `voicechat.backends.KINDS` names."""
    description: str = ""
    """One line shown by ``voicechat profiles``."""
    system: str | None = None
    """System prompt sent first in every conversation."""
    tell_time: bool = True
    """Each question tells the model the local date, weekday, time and time zone it was
    asked at (in the question's language), so "what time is it" is answered right."""
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    """Sampling options."""
    tts: TTSSettings = field(default_factory=TTSSettings)
    """Speech settings."""
    chunking: ChunkingSettings = field(default_factory=ChunkingSettings)
    """Chunking settings."""
    stt: STTSettings = field(default_factory=STTSettings)
    """Speech input settings."""
