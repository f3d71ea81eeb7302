"""Backends: one module per kind behind one small interface, found through `KINDS`.

``backend.chat(messages, generation)`` returns a `Reply` at once; the request goes out when
it is first iterated: iterate it for text deltas as they arrive (errors, before the stream or
during it, are raised from the iteration as `voicechat.errors` types, translated once in
`voicechat.transport`); when the iteration ends, ``reply.outcome`` says how the reply ended
and how fast it was. ``reply.close()`` from any thread ends it within milliseconds.

A kind module (``voicechat.backends.ollama``, ...) carries all the knowledge of its kind:

- ``Settings``: a frozen dataclass = the kind's whole ``backend:`` YAML section;
- ``apply_env(settings, env) -> (settings, names of the variables used)``;
- ``create(settings, api_key) -> Backend``;
- ``checks(settings, api_key, *, probe_timeout, generation_timeout) -> Iterator[Check]``;
- ``fixes(settings) -> {error class: fix}``: the doctor's fix column for the errors the kind
  raises (`fix_for` adds the fixes every kind shares);
- ``api_key_var(settings) -> str | None``.

Kind modules are imported only when a profile of that kind is loaded, and import their
HTTP library only when a backend is created: the Ollama path never pays for the ``openai``
SDK (~0.5 s on the Jetson), and listing profiles pays for neither.
"""

from __future__ import annotations

import importlib
import math
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from voicechat.errors import BackendTimeout, ConfigError, EmptyReply, VoicechatError
from voicechat.redact import redact_url, short
from voicechat.settings import BackendSettings, GenerationSettings

if TYPE_CHECKING:
    from voicechat.checks import Check

__all__ = [
    "KINDS",
    "Backend",
    "Chunk",
    "Message",
    "Outcome",
    "Reply",
    "ServerEnd",
    "completion_chunk",
    "create_backend",
    "fix_for",
    "kind_module",
    "redact_url",
    "settings_for",
    "short",
]

KINDS: dict[str, str] = {
    "ollama": "voicechat.backends.ollama",
    "openai": "voicechat.backends.openai_compat",
    "llamacpp": "voicechat.backends.llamacpp",
}
"""Backend kind (``backend.kind`` in a profile) -> the module that implements it."""

Message = dict[str, str]
"""``{"role": "system"|"user"|"assistant", "content": "..."}``."""


def kind_module(kind: object) -> ModuleType:
    """The module of a backend kind; an unknown kind is a `ConfigError` naming the known ones."""
    if not isinstance(kind, str) or kind not in KINDS:
        shown = short(kind, 40) if isinstance(kind, str) else f"a {type(kind).__name__}"
        raise ConfigError(f"unknown backend kind {shown}: use one of {', '.join(KINDS)}")
    return importlib.import_module(KINDS[kind])


def settings_for(kind: str, **fields: Any) -> BackendSettings:
    """A kind's settings built directly (tests, scripts); profiles go through the loader."""
    return kind_module(kind).Settings(kind=kind, **fields)  # type: ignore[no-any-return]


def create_backend(settings: BackendSettings, api_key: str | None = None) -> Backend:
    """The backend for ``settings.kind``, its module imported only now."""
    return kind_module(settings.kind).create(settings, api_key)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ServerEnd:
    """What the server said about the end of a stream (kind modules return this)."""

    reason: str
    """``stop``, ``length``, ... as sent (a stream without one raises `StreamBroken`)."""
    tokens: int | None = None
    """Reply tokens as counted by the server, when it says."""
    generation_s: float | None = None
    """Seconds the server spent generating them, when it says (Ollama's eval_duration)."""


@dataclass(frozen=True)
class Outcome:
    """How a reply ended, and its timing (for ``--stats`` and ``/stats``)."""

    finish: str
    """``stop``, ``length`` (token limit), or the server's own reason (``content_filter``)."""
    first_token_s: float | None
    """Seconds from sending the request to the first text; ``None`` if no text came."""
    total_s: float
    """Seconds from sending the request to the end of the stream."""
    tokens: int | None
    """Reply tokens: the server's count, else the number of text deltas received."""
    tokens_per_s: float | None
    """Generation speed: the server's figures where given, else measured here."""
    measured: bool
    """True when the speed was measured here (from the deltas' arrival), not reported by the
    server: an OpenAI server's usage chunk gives a token count but no generation time."""
    chars: int
    """Characters of reply text received."""


class Reply:
    """A streaming reply: iterate for text deltas; then read `outcome`; `close()` aborts.

    Backends send the request when the reply is first iterated, and raise their errors
    (`voicechat.errors`) from the iteration. ``close()`` may be called from any thread, in
    any phase (before the request, waiting for the first token, mid-stream): it shuts the
    connection's socket down, which wakes a read blocked in the iterating thread; that
    thread's iteration then simply ends (``outcome`` stays ``None``, ``closed`` is True),
    and the server sees the hang-up, which is how it learns to stop generating.

    A reply that ends without any text (nothing, or only whitespace) raises `EmptyReply`
    when the iteration ends, whichever backend made it: ``source`` names who sent it and
    ``empty_hint`` says what to do, in that one-line message.
    """

    def __init__(
        self,
        deltas: Generator[str, None, ServerEnd],
        interrupt: Callable[[], None],
        started: float,
        release: Callable[[], None] | None = None,
        *,
        source: str = "the server",
        empty_hint: str = "check the server's log, or retry",
    ) -> None:
        self._deltas = deltas
        self._source = source
        self._empty_hint = empty_hint
        self._interrupt = interrupt
        self._release = release or _nothing
        self._started = started
        self._lock = threading.Lock()
        self._iterating = False
        self.closed = False
        """Set by `close()`: the reply was abandoned on purpose."""
        self.text = ""
        """All text received so far (kept when the stream breaks)."""
        self.outcome: Outcome | None = None

    def __iter__(self) -> Iterator[str]:
        first: float | None = None
        count = 0
        with self._lock:
            if self.closed:
                return
            self._iterating = True
        try:
            while True:
                try:
                    delta = next(self._deltas)
                except StopIteration as stop:
                    end: ServerEnd = stop.value
                    break
                except Exception:
                    if self.closed:
                        return  # the read failed because close() shut the socket down
                    raise
                if self.closed:
                    return
                if not delta:
                    continue
                if first is None:
                    first = time.monotonic()
                count += 1
                self.text += delta
                yield delta
        finally:
            self._deltas.close()
            with self._lock:
                self._iterating = False
            self._release_once()
        if self.closed:
            return  # closed as the stream ended: abandoned all the same, no outcome
        if not self.text.strip():
            raise EmptyReply(
                f"{self._source} ended the reply without any text (an empty reply, finish: "
                f"{end.reason}): {self._empty_hint}",
                end.reason,
            )
        self.outcome = _outcome(end, self._started, first, time.monotonic(), count, self.text)

    def close(self) -> None:
        """Abort, from any thread: the iterating thread stops within milliseconds."""
        with self._lock:
            self.closed = True
            iterating = self._iterating
        self._interrupt()
        if not iterating:
            self._deltas.close()  # never started, or finished: nothing else is running it
            self._release_once()

    def _release_once(self) -> None:
        with self._lock:
            release, self._release = self._release, _nothing
        release()


def _nothing() -> None:
    pass


def _outcome(
    end: ServerEnd, started: float, first: float | None, now: float, count: int, text: str
) -> Outcome:
    tokens = count if end.tokens is None else end.tokens
    if end.tokens and end.generation_s:
        speed: float | None = end.tokens / end.generation_s
        measured = False
    elif first is not None and tokens and now > first and tokens > 1:
        # The first token's time is latency, not generation: count the gaps after it.
        speed = (tokens - 1) / (now - first)
        measured = True
    else:
        speed, measured = None, end.tokens is None
    return Outcome(
        finish=end.reason,
        first_token_s=None if first is None else first - started,
        total_s=now - started,
        tokens=tokens,
        tokens_per_s=speed,
        measured=measured,
        chars=len(text),
    )


def chat_completions(
    messages: Sequence[Message], generation: GenerationSettings, **fixed: Any
) -> dict[str, Any]:
    """A streaming OpenAI ``/v1/chat/completions`` request (any server of that protocol, and
    embedded llama.cpp): ``fixed`` first, then the sampling options only where set, so the
    server's own defaults apply to the rest."""
    body: dict[str, Any] = {
        **fixed,
        "messages": list(messages),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    for key, value in (
        ("temperature", generation.temperature),
        ("top_p", generation.top_p),
        ("max_tokens", generation.max_tokens),
        ("seed", generation.seed),
    ):
        if value is not None:
            body[key] = value
    return body


@dataclass(frozen=True)
class Chunk:
    """What one streamed ``chat.completion.chunk`` says, as far as a reply needs it."""

    text: str = ""
    """The first choice's ``delta.content``: "" for a role chunk, a usage chunk, or null."""
    finish: str | None = None
    """The first choice's ``finish_reason``, in the chunk that ends the reply."""
    tokens: int | None = None
    """Reply tokens: ``usage.completion_tokens``, else llama.cpp's ``timings.predicted_n``."""
    generation_s: float | None = None
    """Seconds spent generating them: llama.cpp's ``timings.predicted_ms`` (no other server
    says)."""


def completion_chunk(chunk: dict[str, Any]) -> Chunk:
    """The parts of one OpenAI stream chunk (from a server, or embedded llama.cpp) a reply
    uses; what is missing or of the wrong type reads as absent, never as an exception.

    >>> completion_chunk({"choices": [{"delta": {"content": "Hi"}, "finish_reason": None}]})
    Chunk(text='Hi', finish=None, tokens=None, generation_s=None)
    >>> completion_chunk({"choices": [], "usage": {"completion_tokens": 7}})
    Chunk(text='', finish=None, tokens=7, generation_s=None)
    >>> completion_chunk({"choices": [{"delta": {}, "finish_reason": "stop"}],
    ...                   "timings": {"predicted_n": 9, "predicted_ms": 300.0}})
    Chunk(text='', finish='stop', tokens=9, generation_s=0.3)
    >>> completion_chunk({"choices": [{"delta": "x"}], "timings": {"predicted_ms": "fast"}})
    Chunk(text='', finish=None, tokens=None, generation_s=None)
    """
    text, finish = "", None
    choices = chunk.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str):
            text = content
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            finish = short(reason, 40)
    tokens: int | None = None
    generation_s: float | None = None
    timings = chunk.get("timings")
    if isinstance(timings, dict):
        spent = _number(timings.get("predicted_ms"))
        if spent:
            generation_s = spent / 1000
            count = timings.get("predicted_n")
            tokens = count if _count(count) else None
    usage = chunk.get("usage")
    if isinstance(usage, dict) and _count(usage.get("completion_tokens")):
        tokens = usage["completion_tokens"]
    return Chunk(text, finish, tokens, generation_s)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: object) -> float | None:
    """A positive, finite number, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def generation_check(backend: Backend, settings: BackendSettings) -> Check:
    """The doctor's last backend row: one token through the backend's own request path."""
    from voicechat.checks import Check

    try:
        reply = backend.chat(
            [{"role": "user", "content": "Say OK."}], GenerationSettings(max_tokens=1)
        )
        for _ in reply:
            pass
    except EmptyReply as exc:
        if exc.finish == "length":  # the one token allowed was a blank: the model works
            return Check("generation", True, "a blank first token (finish: length)")
        return Check("generation", False, str(exc), fix_for(exc, settings))
    except VoicechatError as exc:
        return Check("generation", False, str(exc), fix_for(exc, settings))
    finally:
        backend.close()
    outcome = reply.outcome
    if outcome is None or outcome.first_token_s is None:  # only a closed reply has none
        return Check("generation", False, "the reply ended without an outcome", "retry")
    return Check(
        "generation",
        True,
        f"first token after {outcome.first_token_s:.2f} s (finish: {outcome.finish})",
    )


SHARED_FIXES: dict[type[VoicechatError], str] = {
    BackendTimeout: "the model may still be loading: retry, or raise backend.read_timeout",
    ConfigError: "fix the profile's backend section",
    VoicechatError: "check the server's log, then retry",
}
"""Fixes for what every kind may raise; a kind's own `fixes` win."""


def fix_for(exc: VoicechatError, settings: BackendSettings) -> str:
    """The doctor's fix column for an error a backend raised: the fix for the nearest class of
    ``exc`` that the kind (its module's ``fixes(settings)``) or `SHARED_FIXES` names."""
    fixes = {**SHARED_FIXES, **kind_module(settings.kind).fixes(settings)}
    for cls in type(exc).__mro__:
        if cls in fixes:
            return fixes[cls]
    return ""


class Backend(Protocol):
    """One kind of model server."""

    larger_context: str
    """How to give the model a larger context, in this kind's terms: the fix named when the
    server cut a reply because its context was full."""

    def chat(self, messages: Sequence[Message], generation: GenerationSettings) -> Reply:
        """The reply to the conversation; the request goes out when it is first iterated."""
        ...

    def warm_up(self) -> None:
        """Ask the server to load the model now, so the first question is not slow."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
