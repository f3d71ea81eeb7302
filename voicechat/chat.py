"""A conversation: its history, and one turn = stream -> show + speak -> record.

The turn is where the data flow of the whole product meets::

    backend.chat(messages) -> text deltas -> view.write (terminal)
                                          -> Speakable.feed -> speaker.say (voice)

Speech is fed before the text is drawn, so rendering never delays the first sound.
Whatever happens (Ctrl+C, a broken stream), the text shown so far is recorded in the
history, and the connection is closed: closing it is how the server stops generating.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from voicechat.backends import Backend, Message, Outcome
from voicechat.errors import StreamBroken, VoicechatError
from voicechat.settings import ChunkingSettings, GenerationSettings

if TYPE_CHECKING:
    from voicechat.speakable import Utterance


class View(Protocol):
    """Where the reply's text is shown (`voicechat.terminal.ReplyView`)."""

    def write(self, delta: str) -> None: ...

    def end(self) -> None: ...


class Voice(Protocol):
    """What a turn needs of `voicechat.speaker.Speaker`."""

    first_audio_at: float | None
    hungry: bool
    """Speech is about to run dry: the next piece may end at a clause mark."""

    def start(self) -> None: ...

    def say(self, utterance: Utterance) -> None: ...

    def finish(self) -> None: ...

    def interrupt(self) -> None: ...


@dataclass
class Turn:
    """One question and its reply as far as it was shown."""

    question: str
    reply: str = ""
    outcome: Outcome | None = None
    """How the reply ended; ``None`` when it was interrupted or failed."""
    interrupted: bool = False
    """Stopped by the user (Ctrl+C) before the reply was complete."""
    failed: str | None = None
    """The error that cut the reply, if one did."""
    started: float = 0.0
    first_audio_s: float | None = None
    """Seconds from sending the question to its first sound (``None`` when muted)."""


def ending_warning(outcome: Outcome | None, max_tokens: int | None, raise_with: str) -> str | None:
    """What the user should know about how a reply ended (a cut, an unusual finish reason).

    A cut with no ``max_tokens`` of ours was the server's own limit (llama.cpp stops when its
    context is full): raising a limit we never sent would not help, so that is not the fix.
    """
    if outcome is None or outcome.finish in ("stop", "eos"):
        return None
    if outcome.finish != "length":
        return f"the server ended the reply with finish reason {outcome.finish!r}"
    if max_tokens is not None:
        return f"the reply was cut at the token limit ({max_tokens}): raise {raise_with}"
    return (
        "the server cut the reply at its own token limit (its context is full, or it caps "
        "replies): give it a larger context (Ollama: generation.context_size)"
    )


@dataclass
class Conversation:
    """The turns so far; every request sends all of them (the model has no memory)."""

    backend: Backend
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    chunking: ChunkingSettings = field(default_factory=ChunkingSettings)
    system: str | None = None
    turns: list[Turn] = field(default_factory=list)

    def messages(self, question: str | None = None) -> list[Message]:
        """The request's message list: system prompt, history, then the new question."""
        messages: list[Message] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        for turn in self.turns:
            messages.append({"role": "user", "content": turn.question})
            if turn.reply:
                messages.append({"role": "assistant", "content": turn.reply})
        if question is not None:
            messages.append({"role": "user", "content": question})
        return messages

    def ask(self, question: str, view: View, voice: Voice | None = None) -> Turn:
        """Run one turn; the turn is recorded even when it raises (Ctrl+C, backend error)."""
        turn = Turn(question, started=time.monotonic())
        messages = self.messages(question)
        if voice is not None:
            voice.start()  # loads the engine and opens the device while the model thinks
        self.turns.append(turn)
        try:
            reply = self.backend.chat(messages, self.generation)
        except BaseException as exc:
            self.turns.pop()  # nothing was said: keep the history as it was
            view.end()
            _stop_voice(voice, exc)
            raise
        say = _speaking(voice, self.chunking)
        try:
            for delta in reply:
                say(delta)
                view.write(delta)
                turn.reply = reply.text
            say(None)
        except BaseException as exc:
            reply.close()
            turn.reply = reply.text
            turn.interrupted = isinstance(exc, KeyboardInterrupt)
            turn.failed = None if turn.interrupted else str(exc)
            if turn.failed and not turn.reply:
                # Nothing came back (e.g. llama.cpp's empty stream for a prompt over the
                # context): resending the question would fail the next turn the same way.
                self.turns.pop()
            view.end()
            if isinstance(exc, VoicechatError):
                say(None)  # speak what did arrive
            _stop_voice(voice, exc)
            raise
        turn.reply = reply.text
        turn.outcome = reply.outcome
        view.end()
        if voice is not None:
            try:
                voice.finish()
            except BaseException:
                voice.interrupt()
                turn.interrupted = True
                raise
            if voice.first_audio_at is not None:
                turn.first_audio_s = voice.first_audio_at - turn.started
        if turn.outcome is not None and turn.outcome.finish == "truncated":
            turn.failed = "truncated"
            raise StreamBroken(
                "the stream ended without an end marker (the server stopped early or was "
                "interrupted): the reply may be incomplete; retry"
            )
        return turn

    def reset(self) -> None:
        self.turns.clear()


def _speaking(voice: Voice | None, chunking: ChunkingSettings) -> Callable[[str | None], None]:
    """Feed deltas to the chunker and its utterances to the voice; ``None`` ends the text."""
    if voice is None:
        return lambda delta: None
    from voicechat.speakable import Speakable

    speakable = Speakable(chunking)

    def say(delta: str | None) -> None:
        # when speech is running dry, a clause may end the piece (eager)
        pieces = speakable.flush() if delta is None else speakable.feed(delta, eager=voice.hungry)
        for utterance in pieces:
            voice.say(utterance)

    return say


def _stop_voice(voice: Voice | None, exc: BaseException) -> None:
    """Ctrl+C silences at once; after a backend error what was received is still spoken."""
    if voice is None:
        return
    if isinstance(exc, VoicechatError):
        try:
            voice.finish()
            return
        except BaseException:
            pass
    voice.interrupt()
