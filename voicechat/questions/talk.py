"""Spoken questions in a conversation: push-to-talk and hands-free, as `Session.run` takes them.

A transcript is shown as the user's line, then its turn runs exactly as if it had been typed
(history, /save, stats all see the same text). Hands-free is a generator of `Question`: the
session runs each turn while the generator waits at its ``yield``, so the barge-in watch
spans exactly the turn.

Hands-free with barge-in (``stt.barge_in`` not ``off``)::

    Listener -> Question -> Session.run: turn (main thread)  <- cancel("barge-in") -+
                            speaker -> PlayedTap (echo reference)                    |
                            microphone -> Watch (own thread) -- onset ---------------+
                                                             -- utterance -> next Question
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TYPE_CHECKING

from voicechat.audio.microphone import MicrophoneLost
from voicechat.chat import BARGE_IN
from voicechat.chunker import is_han
from voicechat.errors import ListenError, NothingHeard, VoicechatError
from voicechat.questions.display import LiveLine
from voicechat.questions.wake import Gate
from voicechat.session import Question, Spoken
from voicechat.speakable import Piece
from voicechat.stt import INSTALL, Transcript

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

    from voicechat.audio.echo import PlayedTap
    from voicechat.questions.bargein import BargedIn, BargeIn
    from voicechat.questions.voice import VoiceInput
    from voicechat.readahead import ReadAhead
    from voicechat.session import Session
    from voicechat.settings import STTSettings
    from voicechat.stt.listener import Recognized
    from voicechat.terminal import Terminal

TALK_HINT = (
    "Enter on an empty line: talk (Enter again when done, Esc cancels) · /listen on: hands-free"
)
YOU = "you said: "


def talk(session: Session, voice_input: VoiceInput | None, term: Terminal) -> Question | None:
    """Push-to-talk from the REPL's empty prompt: the transcript, with the reply read ahead
    for it at the last pause (`Ahead`; the turn takes it), or None (said why)."""
    if voice_input is None:
        term.note(f"talking needs the [listen] extra: {INSTALL}")
        return None
    ahead = Ahead(session)
    guess = ahead.guess if voice_input.settings.read_ahead else None
    with contextlib.closing(ahead):  # a guess that is not taken is discarded
        try:
            text = voice_input.push_to_talk(LiveLine(term.err), _stdin_fd(), on_guess=guess)
        except NothingHeard as exc:
            term.note(str(exc))
            return None
        except VoicechatError as exc:
            term.error(str(exc))
            return None
        except KeyboardInterrupt:
            session.handled()
            term.note("cancelled")
            return None
        if text is None:
            term.note("cancelled")
            return None
        show_question(term, text)
        _remember(text)
        return Question(text, ahead.take())


def listening(
    session: Session, voice_input: VoiceInput | None, term: Terminal, arg: str
) -> Iterator[Question]:
    """``/listen on``: questions hands-free until Esc or Ctrl+C; ``/listen off``: back to
    typing."""
    choice = arg.strip().lower()
    if choice == "off":
        term.note("not listening (Enter on an empty line talks once)")
        return
    if choice != "on":
        term.error(f"/listen {arg}: use /listen on or /listen off")
        return
    if voice_input is None:
        term.error(f"hands-free needs the [listen] extra: {INSTALL}")
        return
    term.note(listening_line(voice_input.settings, "Esc or Ctrl+C stops listening"))
    try:
        yield from spoken(session, voice_input, term, _stdin_fd())
    except KeyboardInterrupt:
        session.handled()
    term.note("not listening")


def spoken(
    session: Session, voice_input: VoiceInput, term: Terminal, keys_fd: int | None = None
) -> Iterator[Question]:
    """Questions from the microphone, hands-free, until it closes (Esc) or the run ends; with
    barge-in, a question said over a reply is the next one, at once. With ``stt.wake``, only
    what starts with a wake phrase, or comes within the follow-up window, is a question: the
    rest is neither sent (not even read ahead) nor kept (`voicechat.questions.wake`)."""
    settings = voice_input.settings
    gate = Gate(settings.wake, settings.follow_up)
    ahead = Ahead(session)
    guess = _gated(ahead.guess, gate) if settings.read_ahead else None
    handled_from = time.monotonic()

    def voice_began() -> float | None:
        """When our voice began while the last utterance was handled (None: it did not)."""
        began = session.speech.first_audio_at if session.speech is not None else None
        return began if began is not None and began >= handled_from else None

    heard_all = voice_input.hands_free(
        keys_fd=keys_fd,
        on_guess=guess,
        voice_began=voice_began,
        tell=term.info,
        screen=gate.screen,
    )
    # the terminal and microphone back as they were, and the speaker's tap removed, at once
    with (
        contextlib.closing(heard_all),
        contextlib.closing(ahead),
        barge_in_for(session, settings) as bi,
    ):
        for heard in heard_all:
            handled_from = time.monotonic()
            started = heard.speech_end_at - heard.transcript.audio_s
            admitted = gate.admit(heard.transcript.text, started)
            if admitted.kind != "question":
                ahead.close()
                if admitted.kind == "wake":
                    _acknowledge(session, term, gate.acknowledgement())
                    gate.replied(time.monotonic())
                continue
            text: str | None = admitted.text
            if heard.cut:
                term.warn(f"over {settings.max_utterance:g} s of speech: cut there")
            show_question(term, text)
            if session.stats:
                term.info(heard_stats(heard))
            timing = Spoken(heard.speech_end_at, heard.detected_at, heard.ended_by, ahead.cancelled)
            early = ahead.take()
            question: Question | None = Question(text, early, timing)
            while question is not None:  # a question said over the reply is the next one
                said_over = yield from _asked(session, voice_input, term, question, bi)
                question = Question(said_over) if said_over is not None else None
            gate.replied(time.monotonic())


def listening_line(settings: STTSettings, stop: str) -> str:
    """What hands-free says as it starts: what to say to it, and how to stop."""
    if not settings.wake:
        return f"listening: just talk ({stop})"
    phrases = " or ".join(repr(p) for p in settings.wake)
    return f"listening for {phrases} ({stop})"


def _gated(guess: Callable[[str | None], None], gate: Gate) -> Callable[[str | None], None]:
    """The read-ahead's guesses, only for what the gate would take as a question (and as it
    would take it: without the wake phrase)."""

    def gated(text: str | None) -> None:
        seen = None if text is None else gate.peek(text, time.monotonic())
        guess(seen.text if seen is not None and seen.kind == "question" else None)

    return gated


def _acknowledge(session: Session, term: Terminal, word: str) -> None:
    """The wake phrase alone: say so (and speak it, unless muted); the next utterance is the
    question."""
    term.note(f"{word} (the wake phrase: listening for the question)")
    speech = session.speech
    if speech is None or session.muted:
        return
    try:
        speech.start()
        speech.say(Piece(word, "zh" if any(is_han(c) for c in word) else "other", True))
        speech.finish()
    except VoicechatError as exc:
        term.warn(str(exc))


class Ahead:
    """The reply to the question the user has probably asked, requested at the pause that
    may end it (`voicechat.readahead`): the turn takes it once the end is confirmed."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._reply: ReadAhead | None = None
        self.cancelled = 0
        """Guesses sent and then cancelled (the user went on) since the last `take`."""

    def guess(self, text: str | None) -> None:
        """The likely question (read ahead now), or None: the last guess is void."""
        if self._reply is not None:
            self.cancelled += 1
        self._discard()
        if text is None or self.session.ended is not None:
            return
        try:
            self._reply = self.session.conversation.read_ahead(text)
        except VoicechatError:
            self._reply = None  # the turn itself will say what is wrong

    def take(self) -> ReadAhead | None:
        """The guess, for the question the user asked (the count of cancelled ones starts
        again)."""
        reply, self._reply = self._reply, None
        self.cancelled = 0
        return reply

    def close(self) -> None:
        """No question came of it: the guess is discarded, the count starts again."""
        self._discard()
        self.cancelled = 0

    def _discard(self) -> None:
        reply, self._reply = self._reply, None
        if reply is not None:
            reply.discard()


def _asked(
    session: Session,
    voice_input: VoiceInput,
    term: Terminal,
    question: Question,
    bi: BargeIn | None,
) -> Generator[Question, None, str | None]:
    """Ask ``question`` (its turn runs while this waits at ``yield``); with barge-in, watch
    the microphone meanwhile and return what the user said over the reply (shown), or None."""
    if bi is None or session.muted:
        yield question
        return None
    try:
        with voice_input.watching(bi, lambda: session.cancel(BARGE_IN)) as watch:
            yield question
    finally:
        if question.ahead is not None:
            question.ahead.discard()  # the turn discarded it already, unless watching failed
    try:
        barged = watch.wait()
    except MicrophoneLost:
        return None  # the listener finds it stopped too, and waits for it to come back
    except Exception as exc:  # the echo canceller or the VAD failed on the watch thread
        raise ListenError(
            f"barge-in failed ({' '.join(str(exc).split())[:160]}): set stt.barge_in: off "
            "to talk only after the reply"
        ) from None
    if barged is None:
        if session.stats and watch is not None and watch.not_stop:
            heard = ", ".join(repr(t) for t in watch.not_stop[-3:])
            term.info(f"barge-in: heard {heard} over the reply: not a stop word")
        return None
    utterance = barged.utterance
    transcript, dropped = (None, None) if utterance is None else voice_input.transcribe(utterance)
    if session.stats:
        term.info(barge_in_stats(barged, transcript, dropped))
    if utterance is None or transcript is None or dropped:
        return None  # noise stopped the voice: listen again
    if utterance.cut:
        term.warn(f"over {voice_input.settings.max_utterance:g} s of speech: cut there")
    show_question(term, transcript.text)
    return transcript.text


def barge_in_stats(barged: BargedIn, transcript: Transcript | None, dropped: str | None) -> str:
    """One ``--stats`` line: how soon the voice was stopped, and what the user's words gave."""
    reaction = f"barge-in: detected {barged.detected_at - barged.onset_at:.2f} s after the onset"
    if barged.stop_word:
        return f"{reaction}; stop word: {barged.stop_word}"
    if barged.utterance is None or transcript is None:
        return f"{reaction}; it was noise (no utterance)"
    what = f"dropped ({dropped})" if dropped else "the next question"
    return f"{reaction}; {transcript.audio_s:.1f} s of speech: {what}"


@contextlib.contextmanager
def barge_in_for(session: Session, settings: STTSettings) -> Iterator[BargeIn | None]:
    """The session's barge-in while hands-free, or None (half-duplex: ``stt.barge_in: off``,
    no voice, or ``auto`` without an echo canceller). What the speaker plays is routed to
    its echo reference for as long as it lasts."""
    speech = session.speech
    if settings.barge_in == "off" or speech is None or not hasattr(speech, "tap"):
        yield None
        return
    from voicechat.questions.bargein import BargeIn

    bi = BargeIn(settings)
    if bi.mode == "off":
        bi.close()
        yield None
        return
    _route_played(speech, bi.tap)
    try:
        yield bi
    finally:
        _route_played(speech, None)
        bi.close()


def _route_played(speech: object, tap: PlayedTap | None) -> None:
    """Point the speaker's played audio at ``tap`` (`Speaker.tap`, also for a device it
    opened in an earlier turn)."""
    speech.tap = tap  # type: ignore[attr-defined]


def heard_stats(heard: Recognized) -> str:
    """One ``--stats`` line: how long the end of speech and the recognition took. Text
    ready before the end was confirmed (early recognition) is ready 0.00 s later: the
    capture clock may run a little ahead of the moment the frame is handled.

    >>> from voicechat.stt import Transcript
    >>> from voicechat.stt.listener import Recognized
    >>> said = Transcript("Hi.", "en", 0.0, 1.0, 0.2, -0.1)
    >>> heard_stats(Recognized(said, False, 10.0, 10.5, 10.499, True))[:69]
    'heard: end of speech detected after 0.50 s, text ready 0.00 s later, '
    """
    early = ", started at the first pause" if heard.early else ""
    ready = max(0.0, heard.recognized_at - heard.detected_at)
    return (
        f"heard: end of speech detected after {heard.detected_at - heard.speech_end_at:.2f} s, "
        f"text ready {ready:.2f} s later{early} "
        f"({heard.transcript.audio_s:.1f} s of audio, language {heard.transcript.language})"
    )


def show_question(term: Terminal, text: str) -> None:
    """The transcript as the user's line (stderr when stdout carries only replies)."""
    if term.rich:
        term.print(f">>> {text}")
    else:
        term.note(f"{YOU}{text}")


def _stdin_fd() -> int | None:
    try:
        return sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    except (ValueError, OSError):
        return None


def _remember(text: str) -> None:
    try:
        import readline
    except ImportError:
        return
    readline.add_history(text)
