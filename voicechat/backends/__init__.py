"""Backends: one module per wire protocol behind one small interface.

``backend.chat(messages, generation)`` sends the request and returns a `Reply` as soon as
the server has answered with a status: iterate it for text deltas as they arrive; when the
iteration ends, ``reply.outcome`` says how the reply ended and how fast it was. Errors are
raised as `voicechat.errors` types, translated where the wire is read.

The protocol modules are imported lazily by `create_backend`: the Ollama path must never
pay for importing the ``openai`` SDK (~0.5 s on the Jetson).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from voicechat.settings import BackendSettings, GenerationSettings

Message = dict[str, str]
"""``{"role": "system"|"user"|"assistant", "content": "..."}``."""


@dataclass(frozen=True)
class ServerEnd:
    """What the server said about the end of a stream (protocol modules return this)."""

    reason: str | None
    """``stop``, ``length``, ... as sent; ``None`` when the stream ended without one."""
    tokens: int | None = None
    """Reply tokens as counted by the server, when it says."""
    generation_s: float | None = None
    """Seconds the server spent generating them, when it says (Ollama's eval_duration)."""


@dataclass(frozen=True)
class Outcome:
    """How a reply ended, and its timing (for ``--stats`` and ``/stats``)."""

    finish: str
    """``stop``, ``length`` (token limit), ``truncated`` (no end marker arrived), or the
    server's own reason (``content_filter``, ...)."""
    first_token_s: float | None
    """Seconds from sending the request to the first text; ``None`` if no text came."""
    total_s: float
    """Seconds from sending the request to the end of the stream."""
    tokens: int | None
    """Reply tokens: the server's count, else the number of text deltas received."""
    tokens_per_s: float | None
    """Generation speed: the server's figures where given, else measured here."""
    measured: bool
    """True when tokens and speed were measured here (deltas), not reported by the server."""
    chars: int
    """Characters of reply text received."""


class Reply:
    """A streaming reply: iterate for text deltas; then read `outcome`; `close()` aborts."""

    def __init__(
        self,
        deltas: Generator[str, None, ServerEnd],
        close: Callable[[], None],
        started: float,
    ) -> None:
        self._deltas = deltas
        self._close = close
        self._started = started
        self.text = ""
        """All text received so far (kept when the stream breaks)."""
        self.outcome: Outcome | None = None

    def __iter__(self) -> Iterator[str]:
        first: float | None = None
        count = 0
        try:
            while True:
                try:
                    delta = next(self._deltas)
                except StopIteration as stop:
                    end: ServerEnd = stop.value
                    break
                if not delta:
                    continue
                if first is None:
                    first = time.monotonic()
                count += 1
                self.text += delta
                yield delta
        finally:
            self._close()
        self.outcome = _outcome(end, self._started, first, time.monotonic(), count, self.text)

    def close(self) -> None:
        """Abort: closing the connection is how both servers learn to stop generating."""
        self._deltas.close()
        self._close()


def _outcome(
    end: ServerEnd, started: float, first: float | None, now: float, count: int, text: str
) -> Outcome:
    measured = end.tokens is None
    tokens = count if measured else end.tokens
    if end.tokens and end.generation_s:
        speed: float | None = end.tokens / end.generation_s
    elif first is not None and tokens and now > first and tokens > 1:
        # The first token's time is latency, not generation: count the gaps after it.
        speed = (tokens - 1) / (now - first)
    else:
        speed = None
    return Outcome(
        finish=end.reason or "truncated",
        first_token_s=None if first is None else first - started,
        total_s=now - started,
        tokens=tokens,
        tokens_per_s=speed,
        measured=measured,
        chars=len(text),
    )


class Backend(Protocol):
    """One wire protocol."""

    def chat(self, messages: Sequence[Message], generation: GenerationSettings) -> Reply:
        """Send the conversation; return once the server answered with a status."""
        ...

    def warm_up(self) -> None:
        """Ask the server to load the model now, so the first question is not slow."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def create_backend(settings: BackendSettings, api_key: str | None = None) -> Backend:
    """The backend for ``settings.kind``, its module imported only now."""
    if settings.kind == "ollama":
        from voicechat.backends.ollama import OllamaBackend

        return OllamaBackend(settings)
    from voicechat.backends.openai_compat import OpenAIBackend

    return OpenAIBackend(settings, api_key)


def redact_url(url: str) -> str:
    """A URL fit for messages: credentials in it are masked.

    >>> redact_url("https://user:secret@example.com/v1")
    'https://***@example.com/v1'
    >>> redact_url("http://127.0.0.1:11434")
    'http://127.0.0.1:11434'
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, "***@" + host, parts.path, parts.query, parts.fragment))


def is_local(url: str) -> bool:
    """True for loopback hosts, where no API key is expected."""
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1", "0.0.0.0") or host.startswith("127.")


def short(text: str, limit: int = 160) -> str:
    """One line of server text for an error message."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def wrong_path(body: str) -> bool:
    """The plain-text 404 of a Go server (Ollama) or a proxy: the path is not an API route."""
    return body.strip().lower() in ("404 page not found", "not found", "404 not found")


def status_message(status: int, detail: str, url: str) -> str:
    """The message for an HTTP error status that has no more specific meaning."""
    where = redact_url(url)
    if status == 429:
        return f"{where} is rate limiting requests (429: {detail}): wait a moment and retry"
    if status >= 500:
        return f"server error {status} at {where}: {detail}: check the server's log, then retry"
    return f"the server at {where} refused the request ({status}: {detail})"
