"""A conversation: its history, and one turn = stream -> show + speak -> record.

The turn is where the data flow of the whole product meets::

    backend.chat(messages) -> text deltas -> view.write (terminal)
                                          -> Speakable.feed -> speaker.say (voice)

Speech is fed before the text is drawn, so rendering never delays the first sound.
A turn takes a `voicechat.cancel.Cancel`: cancelling it from any thread (Ctrl+C, a voice
barge-in) closes the stream (closing it is how the server stops generating) and silences
the voice, in whichever phase the turn is. Whatever happens (a cancel, a broken stream), the
text shown so far is recorded in the history; after a voice barge-in, the text heard so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from voicechat.backends import Backend, Message, Outcome
from voicechat.cancel import Cancel
from voicechat.errors import VoicechatError
from voicechat.now import local_now, with_note
from voicechat.settings import ChunkingSettings, GenerationSettings

BARGE_IN = "barge-in"
"""The cancel reason of a voice barge-in (`Session.cancel`): the reply is kept as heard."""

if TYPE_CHECKING:
    from voicechat.audio.playback import Heard
    from voicechat.readahead import ReadAhead
    from voicechat.speakable import Piece


class View(Protocol):
    """Where the reply's text is shown (`voicechat.terminal.ReplyView`)."""

    def write(self, delta: str) -> None: ...

    def end(self) -> None: ...


class Speech(Protocol):
    """What a turn needs of `voicechat.speaker.Speaker`."""

    first_audio_at: float | None
    hungry: bool
    """Speech is about to run dry: the next piece may end at a clause mark."""

    def start(self) -> None: ...

    def say(self, utterance: Piece) -> None: ...

    def finish(self) -> None: ...

    def interrupt(self) -> None:
        """Silence at once (callable from any thread)."""
        ...

    def close(self) -> None: ...

    def heard(self) -> Sequence[Heard]:
        """This turn's pieces that started playing, with how much of each was played."""
        ...


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
    asked_at: datetime | None = None
    """When the question was asked (local time with its zone): the model is told it
    (`voicechat.now`), and a saved conversation records it."""
    first_audio_s: float | None = None
    """Seconds from sending the question to its first sound (``None`` when muted)."""
    heard: str | None = None
    """Of a spoken reply that was interrupted: what the listener heard of it (`heard_text`).
    ``None`` when nothing was spoken or the reply played to its end. After a barge-in the
    reply is cut to this (the rest was shown, but the user was talking over it)."""


def ending_warning(
    outcome: Outcome | None,
    max_tokens: int | None,
    raise_with: str,
    larger_context: str,
) -> str | None:
    """What the user should know about how a reply ended (a cut, an unusual finish reason).

    A cut with no ``max_tokens`` of ours was the server's own limit (llama.cpp stops when its
    context is full): raising a limit we never sent would not help, so the fix named is the
    backend's ``larger_context``.
    """
    if outcome is None or outcome.finish in ("stop", "eos"):
        return None
    if outcome.finish != "length":
        return f"the server ended the reply with finish reason {outcome.finish!r}"
    if max_tokens is not None:
        return f"the reply was cut at the token limit ({max_tokens}): raise {raise_with}"
    return (
        "the server cut the reply at its own token limit (its context is full, or it caps "
        f"replies): {larger_context}"
    )


@dataclass
class Conversation:
    """The turns so far; every request sends all of them (the model has no memory)."""

    backend: Backend
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    chunking: ChunkingSettings = field(default_factory=ChunkingSettings)
    system: str | None = None
    turns: list[Turn] = field(default_factory=list)
    tell_time: bool = True
    """Each question tells the model when it was asked (`voicechat.now`)."""

    def messages(self, question: str | None = None, at: datetime | None = None) -> list[Message]:
        """The request's message list: system prompt, history, then the new question, asked
        ``at``. Every question keeps the note of its own time, so what was sent before is
        sent the same again (a server's prompt cache stays valid)."""
        messages: list[Message] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        for turn in self.turns:
            messages.append({"role": "user", "content": self._asked(turn.question, turn.asked_at)})
            if turn.reply:
                messages.append({"role": "assistant", "content": turn.reply})
        if question is not None:
            messages.append({"role": "user", "content": self._asked(question, at)})
        return messages

    def _asked(self, question: str, at: datetime | None) -> str:
        return with_note(question, at if self.tell_time else None)

    def read_ahead(self, question: str) -> ReadAhead:
        """Send ``question`` now, before it is certain; `ask` takes the reply if it is asked
        next (`voicechat.readahead`), else it is to be discarded."""
        from voicechat.readahead import ReadAhead

        at = local_now()
        messages = self.messages(question, at)
        return ReadAhead(self.backend.chat(messages, self.generation), messages, at)

    def ask(
        self,
        question: str,
        view: View,
        speech: Speech | None = None,
        cancel: Cancel | None = None,
        ahead: ReadAhead | None = None,
    ) -> Turn:
        """Run one turn until its end, an error or ``cancel`` (from any thread, in any phase).

        A cancelled turn returns (``turn.interrupted``) with the reply as far as it was shown;
        an error is raised. Either way the turn is recorded, unless nothing came back.
        ``ahead``: the reply read ahead (`read_ahead`), used if it answers the same request.
        """
        cancel = cancel or Cancel()
        # read ahead, it was asked when the request went (so that the messages compare)
        at = ahead.asked_at if ahead is not None else local_now()
        messages = self.messages(question, at)
        if ahead is not None and ahead.messages != messages:
            ahead.discard()
            ahead = None
            at = local_now()
            messages = self.messages(question, at)
        turn = Turn(question, started=ahead.started if ahead else time.monotonic(), asked_at=at)
        removers: list[Callable[[], None]] = []
        try:
            if speech is not None:
                speech.start()  # loads the engine and opens the device while the model thinks
                removers.append(cancel.on_cancel(speech.interrupt))
            self.turns.append(turn)
            return self._run(turn, messages, view, speech, cancel, removers, ahead)
        finally:
            for remove in removers:
                remove()
            if ahead is not None:
                ahead.discard()  # its thread has ended, unless the turn did not read it all

    def _run(
        self,
        turn: Turn,
        messages: list[Message],
        view: View,
        speech: Speech | None,
        cancel: Cancel,
        removers: list[Callable[[], None]],
        ahead: ReadAhead | None,
    ) -> Turn:
        try:
            # sent on the first read (a read-ahead was sent already)
            reply = ahead or self.backend.chat(messages, self.generation)
        except BaseException as exc:
            self.turns.pop()  # nothing was said: keep the history as it was
            view.end()
            _stop_speech(speech, exc)
            raise
        # closing works from any thread in every phase (before the server answered too)
        removers.append(cancel.on_cancel(reply.close))
        say = _speaking(speech, self.chunking)
        try:
            for delta in reply:
                if cancel.cancelled:
                    break  # a delta that arrived while closing is not shown
                say(delta)
                view.write(delta)
                turn.reply += delta
            if not cancel.cancelled:
                say(None)
        except BaseException as exc:
            reply.close()
            view.end()
            if cancel.cancelled:  # whatever closing the stream raised
                return self._interrupted(turn, speech, cancel.reason)
            turn.failed = str(exc)
            if not turn.reply:
                # Nothing came back (e.g. llama.cpp's empty stream for a prompt over the
                # context): resending the question would fail the next turn the same way.
                self.turns.pop()
            if isinstance(exc, VoicechatError):
                say(None)  # speak what did arrive
            _stop_speech(speech, exc)
            raise
        view.end()
        if cancel.cancelled:
            return self._interrupted(turn, speech, cancel.reason)
        turn.outcome = reply.outcome
        if speech is not None:
            speech.finish()
            if cancel.cancelled:
                return self._interrupted(turn, speech, cancel.reason)
            if speech.first_audio_at is not None:
                turn.first_audio_s = speech.first_audio_at - turn.started
        return turn

    def _interrupted(self, turn: Turn, speech: Speech | None, reason: str | None) -> Turn:
        turn.interrupted = True
        if speech is not None:
            turn.heard = heard_text(speech.heard())
            if reason == BARGE_IN:
                # the user was listening, not reading: the model is told what they heard
                turn.reply = turn.heard
        if not turn.reply and self.turns and self.turns[-1] is turn:
            self.turns.pop()  # nothing was shown: the question was never answered
        return turn

    def reset(self) -> None:
        self.turns.clear()


def _speaking(voice: Speech | None, chunking: ChunkingSettings) -> Callable[[str | None], None]:
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


def heard_text(pieces: Sequence[Heard]) -> str:
    """What the listener heard: the pieces played through, then the start of the one cut off
    (in proportion to the time it played, at a word; by characters where text has no spaces).

    >>> from types import SimpleNamespace as H
    >>> heard_text([H(text="One two.", played_s=1.2, total_s=1.2),
    ...             H(text="three four five six", played_s=0.5, total_s=1.0),
    ...             H(text="never", played_s=0.0, total_s=1.0)])
    'One two. three four'
    >>> heard_text([H(text="天空是蓝色的", played_s=0.5, total_s=1.0)])
    '天空是'
    """
    parts: list[str] = []
    for piece in pieces:
        if piece.total_s <= 0 or piece.played_s >= piece.total_s:
            parts.append(piece.text)
            continue
        share = max(0.0, piece.played_s / piece.total_s)
        words = piece.text.split()
        if len(words) > 1:
            kept = " ".join(words[: int(len(words) * share)])
        else:
            kept = piece.text[: int(len(piece.text) * share)]
        if kept:
            parts.append(kept)
        break  # nothing after the cut was heard
    return " ".join(parts)


def _stop_speech(speech: Speech | None, exc: BaseException) -> None:
    """After a backend error what was received is still spoken; anything else silences."""
    if speech is None:
        return
    if isinstance(exc, VoicechatError):
        try:
            speech.finish()
            return
        except BaseException:
            pass
    speech.interrupt()
