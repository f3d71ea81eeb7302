"""The turn loop for every input: a terminal, a pipe, a microphone.

One place runs a turn and says what happened: the error line, the warning about how the
reply ended, ``--stats``, "interrupted". Each turn gets its own `Cancel`; whoever wants
the turn stopped calls `Session.cancel` from any thread: the `voicechat.signals` thread for
Ctrl+C, SIGTERM and SIGHUP, a voice barge-in for the microphone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from voicechat.cancel import Cancel
from voicechat.errors import EXIT_INTERRUPTED, OutputError, VoicechatError
from voicechat.signals import ENDING

if TYPE_CHECKING:
    from voicechat.chat import Conversation, Speech, Turn
    from voicechat.readahead import ReadAhead
    from voicechat.terminal import Terminal


@dataclass
class Session:
    """Runs turns of one conversation and reports each; `turn` returns its exit status."""

    term: Terminal
    conversation: Conversation
    model: str = "the model"
    """Named in the "waiting for MODEL" line."""
    speech: Speech | None = None
    stats: bool = False
    raise_with: str = "--max-tokens (or generation.max_tokens)"
    """The fix named when a reply is cut at our token limit."""
    interactive: bool = False
    """The REPL: status lines without the program's name, and the conversation goes on."""
    last: Turn | None = None
    """The last turn that ran (interrupted or not)."""
    ended: int | None = None
    """The exit code once SIGTERM/SIGHUP ended the session; the input loop then stops."""
    muted: bool = False
    last_spoken: Spoken | None = None
    """How the last question ended, when it was spoken (``/stats``)."""
    _cancel: Cancel | None = field(default=None, repr=False)
    _held: tuple[BaseException, str] | None = field(default=None, repr=False)
    """A signal's interrupt that found no turn: raised in the main thread (`held`), and the
    next turn starts cancelled unless the main thread `handled` it first."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def busy(self) -> bool:
        """A turn is running (a cancel would stop it)."""
        return self._cancel is not None

    def cancel(self, reason: str = "interrupt") -> bool:
        """Stop the running turn, from any thread; False when none runs (or it was stopped)."""
        if reason in ENDING:
            self.ended = ENDING[reason]
        with self._lock:
            cancel = self._cancel
        if cancel is None or cancel.cancelled:
            return False
        cancel.cancel(reason)
        return True

    def stop(self, exc: BaseException, reason: str) -> bool:
        """A signal's stop (the signal thread): True when a turn runs, which is cancelled.

        Otherwise ``exc`` is held, under the same lock a turn takes to start, so that a
        signal landing just as a turn starts cannot be lost: the main thread raises ``exc``
        (`held`), and a turn starting before that was handled starts cancelled.
        """
        if reason in ENDING:
            self.ended = ENDING[reason]
        with self._lock:
            cancel = self._cancel
            if cancel is None:
                self._held = (exc, reason)
                return False
        cancel.cancel(reason)  # nothing more if it was cancelled already
        return True

    def held(self) -> BaseException | None:
        """The held interrupt, for the main thread's signal handler to raise (no lock: the
        handler may run while the main thread holds it); None while a turn runs: it has it.

        Raising does not spend it: Python drops an exception raised inside a finalizer or
        an import's callback ("Exception ignored"), and the next turn must then still start
        cancelled. Whoever handles the exception and goes on calls `handled`.
        """
        held = self._held
        return None if held is None or self._cancel is not None else held[0]

    def handled(self) -> None:
        """The main thread caught the interrupt and goes on (the REPL's prompt): spent."""
        self._held = None

    def hold(self, exc: BaseException, reason: str) -> None:
        """An interrupt that came before this session was attached to `Signals`."""
        with self._lock:
            self._held = (exc, reason)

    def turn(
        self, question: str, ahead: ReadAhead | None = None, spoken: Spoken | None = None
    ) -> int:
        """Ask, show, speak, and say how it went: 0, the error's exit code, or 130/143/129.
        ``ahead``: the question's reply, read ahead (`Conversation.read_ahead`); ``spoken``:
        when and how the spoken question ended (its line of ``--stats``)."""
        self.last_spoken = spoken
        cancel = Cancel()
        try:
            with self._lock:
                self._cancel = cancel
                held, self._held = self._held, None
            if held is not None:
                cancel.cancel(held[1])  # a signal came as the turn started: it stops at once
            turn = self.conversation.ask(
                question,
                self.term.reply_view(self.model),
                None if self.muted else self.speech,
                cancel,
                ahead,
            )
        except OutputError:
            raise  # nowhere to show replies: the session cannot go on
        except VoicechatError as exc:
            self.last = self.conversation.turns[-1] if self.conversation.turns else None
            self.term.error(str(exc))
            return self.ended or exc.exit_code
        finally:
            with self._lock:
                self._cancel = None
        self.last = turn
        if self.ended is not None:
            self._status(f"ended by {cancel.reason}")
            return self.ended
        if turn.interrupted:
            if self.interactive:
                self.term.note("interrupted (the reply so far stays in the conversation)")
            else:
                self.term.interrupted()
            return EXIT_INTERRUPTED
        from voicechat.chat import ending_warning

        max_tokens = self.conversation.generation.max_tokens
        larger = self.conversation.backend.larger_context
        warning = ending_warning(turn.outcome, max_tokens, self.raise_with, larger)
        if warning:
            self.term.warn(warning)
        if self.stats:
            self.term.stats(turn.outcome, turn.first_audio_s)
            if spoken is not None:
                self.term.info(timeline(spoken, turn))
        return 0

    def _status(self, message: str) -> None:
        (self.term.note if self.interactive else self.term.info)(message)

    def run(self, questions: Iterable[Question], *, goes_on: bool = False) -> int:
        """THE turn loop, for every kind of question; returns the exit status.

        One rule for all: a failed turn is reported and the next question still runs; the
        status is the first failure's (0 if none); SIGTERM/SIGHUP end the run with theirs.
        Ctrl+C during a reply stops that reply; it ends the run too, unless ``goes_on`` (a
        person at a prompt or a microphone, who goes on talking). The source is closed when
        the run ends, however it ends (a microphone released, a prompt history saved).
        """
        status = 0
        source = iter(questions)
        try:
            for question in source:
                code = self.turn(question.text, question.ahead, question.spoken)
                if self.ended is not None:
                    return self.ended
                if code == EXIT_INTERRUPTED:
                    if not goes_on:
                        return code
                    continue
                status = status or code
            return status
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()


@dataclass(frozen=True)
class Question:
    """One question for `Session.run`, from whichever source asked it."""

    text: str
    """What the user typed, piped or said (a transcript)."""
    ahead: ReadAhead | None = None
    """Its reply, requested before the question was certain (`Conversation.read_ahead`); the
    turn takes it, or discards it when the question turned out otherwise."""
    spoken: Spoken | None = None
    """When and how a spoken question ended; None for typed and piped ones."""


@dataclass(frozen=True)
class Spoken:
    """When a spoken question ended and how that was judged: the start of its timeline."""

    speech_end_at: float
    """``time.monotonic()`` when the user stopped speaking."""
    judged_at: float
    """When the end of the turn was judged (the question was final)."""
    why: str = "silence"
    """What ended it (`voicechat.stt.listener.Recognized.ended_by`): ``silence``, ``silence,
    words finished`` or ``max_pause, ends with 'and'``."""
    early_cancelled: int = 0
    """Requests sent at a pause and cancelled because the user went on."""


def timeline(spoken: Spoken, turn: Turn) -> str:
    """One ``--stats`` line of a spoken turn, every time from the end of speech.

    >>> from voicechat.backends import Outcome
    >>> from voicechat.chat import Turn
    >>> turn = Turn("q", outcome=Outcome("stop", 0.5, 3.0, 20, 8.0, True, 80), started=10.3,
    ...             first_audio_s=0.9)
    >>> timeline(Spoken(10.0, 10.5, "silence", 1), turn)
    'from the end of speech: turn judged over +0.50 s (silence), request sent +0.30 s (1 early \
request cancelled), first token +0.80 s, first audio +1.20 s'
    """
    parts = [f"turn judged over {spoken.judged_at - spoken.speech_end_at:+.2f} s ({spoken.why})"]
    sent = f"request sent {turn.started - spoken.speech_end_at:+.2f} s"
    if spoken.early_cancelled:
        n = spoken.early_cancelled
        sent += f" ({n} early request{'s' * (n > 1)} cancelled)"
    parts.append(sent)
    first_token = turn.outcome.first_token_s if turn.outcome is not None else None
    for name, after in (("first token", first_token), ("first audio", turn.first_audio_s)):
        if after is not None:
            parts.append(f"{name} {turn.started + after - spoken.speech_end_at:+.2f} s")
    return "from the end of speech: " + ", ".join(parts)


def piped(lines: Iterable[str]) -> Iterator[Question]:
    """A question per non-empty line (a pipe or a file).

    >>> [q.text for q in piped(["first\\n", "  \\n", " second "])]
    ['first', 'second']
    """
    for raw in lines:
        text = raw.strip()
        if text:
            yield Question(text)
