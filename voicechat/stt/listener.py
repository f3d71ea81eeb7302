"""Microphone -> VAD -> endpointer -> recognizer, as one iterator of events for the CLI.

`Listener.events()` yields `Level` for every frame (the push-to-talk meter), and per
utterance either `Recognized` (a transcript to use) or `Dropped` (noise, silence, or text the
recognizer itself thinks is no speech: Whisper's "Thank you for watching" on near-silence
never reaches the model). Nothing here prints.

Latency: at the first short pause (`vad.PAUSE_S`) recognition starts on a worker thread;
if the pause turns out to be the end of the utterance, the transcript is ready (or nearly)
when the end-of-utterance silence is confirmed; if speech resumes it is discarded. The
worker takes one job at a time, and an early job is started only when it is idle: a pause
that finds it busy (with a stale job) is recognised the moment it is free.

The end of a turn: when that early transcript sounds unfinished (`voicechat.stt.turn`: it
ends on "and then", "because", "然后", ...), the pause may last up to ``stt.max_pause``
before it ends the utterance; otherwise ``stt.end_silence`` ends it, as before. Only pauses
are judged, never silence frames, so listening to silence costs no more than it did.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from voicechat.audio.microphone import Microphone
from voicechat.audio.pcm import level_db
from voicechat.errors import NothingHeard
from voicechat.stt import SAMPLE_RATE, Recognizer, Transcript, create, language_code
from voicechat.stt.turn import CueJudge, TurnJudge
from voicechat.stt.vad import (
    FRAME,
    FRAME_S,
    Endpointer,
    Held,
    Noise,
    Pause,
    Resumed,
    SileroVAD,
    SpeechStart,
    Utterance,
    endpointer,
)

if TYPE_CHECKING:
    from contextlib import ExitStack

    from voicechat.settings import STTSettings


LOGPROB_THRESHOLD = -1.0
"""Mean token log probability under which text counts as unsure (Whisper's own default)."""
SURE_NO_SPEECH = 0.95
"""A no-speech probability above this drops the text however sure its words look."""


@dataclass(frozen=True)
class Level:
    """The input level of one frame, for a live meter."""

    db: float
    """RMS level in dBFS."""
    speaking: bool
    """True while an utterance is in progress."""
    elapsed: float
    """Seconds since listening started."""


@dataclass(frozen=True)
class Recognized:
    """An utterance recognised and accepted."""

    transcript: Transcript
    cut: bool
    """True when the utterance reached ``stt.max_utterance`` and was cut there."""
    speech_end_at: float
    """``time.monotonic()`` when the user stopped speaking (end of the last speech frame)."""
    detected_at: float
    """When the end of the utterance was confirmed: after ``stt.end_silence`` and once its
    words were judged finished, or after ``stt.max_pause``."""
    recognized_at: float
    """When the transcript was ready."""
    early: bool
    """True when the early recognition (started at the first pause) was used."""
    ended_by: str = "silence"
    """What ended the turn, for ``--stats``: ``silence`` (``stt.end_silence``, nothing
    judged), ``silence, words finished`` (judged finished), or ``max_pause, ends with 'and'``
    (judged unfinished: the pause ran to ``stt.max_pause``)."""


@dataclass(frozen=True)
class Dropped:
    """Something was heard but not used; ``reason`` says why (for a status line)."""

    reason: str
    transcript: Transcript | None = None


@dataclass(frozen=True)
class Tentative:
    """The transcript at a pause that may be the end of the utterance (early recognition),
    before the end is confirmed: a guess to act on ahead (`voicechat.readahead`). It holds
    until the next `Recognized` (the same text when that pause was the end) or `Dropped`, or a
    `Tentative` with ``text`` None: speech went on, the guess is void."""

    text: str | None


ListenEvent = Level | Recognized | Dropped | Tentative


SCREEN_S = 2.5
"""Seconds of an utterance's start recognised to tell whether it is for us (`Listener.screen`):
enough for a wake phrase and a word after it, a fraction of other people's sentences."""
WARM_UP_S = 0.5
"""Silence recognised once after loading: the first inference is slower than the next, and
the first question is the one the user waits for with nothing else to do."""


class BackgroundRecognizer:
    """A recognizer loading (and warming up) on its own thread: the first utterance pays
    for neither when it comes later. ``warm_up`` False: an utterance is already being
    recorded, and is the first inference."""

    def __init__(self, settings: STTSettings, warm_up: bool = True) -> None:
        self._settings = settings
        self._warm_up = warm_up
        self._future: Future[Recognizer] = Future()
        self._thread = threading.Thread(target=self._load, name="stt-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        try:
            recognizer = create(self._settings)
            if self._warm_up:
                silence = np.zeros(int(WARM_UP_S * SAMPLE_RATE), np.float32)
                recognizer.transcribe(silence, language_code(self._settings.language))
            self._future.set_result(recognizer)
        except BaseException as exc:  # reported to whoever transcribes first
            self._future.set_exception(exc)

    def ready(self) -> Recognizer:
        """The loaded recognizer (waits for it; raises what loading raised)."""
        return self._future.result()

    def transcribe(
        self, samples: np.ndarray, language: str | None = None, hint: str = ""
    ) -> Transcript:
        return self.ready().transcribe(samples, language, hint)

    def close(self) -> None:
        self._thread.join()
        if self._future.exception() is None:
            self._future.result().close()


class Listener:
    """Turns a microphone into utterances. One consumer thread iterates `events`."""

    def __init__(
        self,
        settings: STTSettings,
        recognizer: Recognizer,
        mic: Microphone,
        split_late: bool = False,
    ) -> None:
        """``split_late``: a held pause judged finished splits the utterance after the fact
        (`_split_held`), for a caller that asks for every utterance in turn (hands-free);
        else it stays one (push-to-talk takes one utterance and stops)."""
        self.settings = settings
        self.split_late = split_late
        self.recognizer = recognizer
        self.mic = mic
        self.vad = SileroVAD()
        self.judge: TurnJudge | None = (
            CueJudge() if settings.max_pause > settings.end_silence else None
        )
        """Whether a pause sounds like the end of the turn (None: silence alone tells)."""
        self.endpointer = endpointer(settings, judged=self.judge is not None)
        self._ended_by = "silence"
        """The last pause's verdict, for the utterance it ends (`Recognized.ended_by`)."""
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stt-recognize")
        self._early: Future[Transcript] | None = None
        self._early_samples: np.ndarray | None = None
        self._told = False
        """The early transcript was given out as a `Tentative`."""
        self._busy: Future[Transcript] | None = None
        self._deferred: np.ndarray | None = None
        """A pause's samples that found the worker busy with a stale job: recognised as
        soon as it is free, if the pause lasts (else the final job would queue behind it)."""
        self._first: Recognized | None = None
        """A first question split off after the fact while the user still speaks: given
        out when what followed it ends (nobody is answered mid-sentence)."""
        self._rest: tuple[Utterance, float] | None = None
        """What followed a held pause when the whole utterance had ended before the pause's
        verdict split it: the next utterance, given out at the next `events`."""
        self._held: tuple[Held, Future[Transcript], np.ndarray] | None = None
        """A pause that waited past ``end_silence`` for its verdict while speech went on:
        its early job and samples, judged when the job is done (`_split_held`)."""
        self._resume_at = 0.0
        self.screen: Callable[[float], Callable[[str], bool] | None] = lambda began: None
        """For an utterance that began at a time (``time.monotonic``): whether it is for us,
        when that can be told from its start (the wake phrase); then only its first
        `SCREEN_S` are recognised to tell, and nothing early. None: it may be, whatever it
        says."""
        self._skip = (0.0, 0.0)
        """Capture times of our own voice (`skip`): heard, but not the user."""
        self._skipping = False
        self._end_at: float | None = None
        self._drop = threading.Event()

    def end_now(self) -> None:
        """From any thread: what was said until now is the utterance (push-to-talk key)."""
        self._end_at = time.monotonic()

    def drop(self) -> None:
        """From any thread: stop listening and use nothing (Esc)."""
        self._drop.set()

    def dropped(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for `drop`; True once it came (a wait that Esc ends)."""
        return self._drop.wait(timeout)

    def pause(self) -> None:
        """Stop listening (half-duplex: we are about to speak); frames are dropped."""
        self.mic.paused = True

    def resume(self, at: float | None = None) -> None:
        """Listen again, ignoring audio captured before ``at`` (playback end plus a tail)."""
        self._resume_at = at if at is not None else time.monotonic()
        self.mic.drain()
        self.endpointer.reset()
        self.vad.reset()
        self._early = self._held = self._first = None
        self._told = False
        self._deferred = None
        self.mic.paused = False

    def skip(self, start: float, end: float) -> None:
        """Ignore audio captured from ``start`` to ``end`` (our own voice, half-duplex). What
        came before and comes after is heard as usual: the microphone ran meanwhile, so the
        words said while an utterance was recognised and answered are the next utterance."""
        self._skip = (start, end)

    def events(self, timeout: float | None = None) -> Iterator[ListenEvent]:
        """Events until the microphone closes; `NothingHeard` if no speech starts in ``timeout``.

        Listening starts from here: the microphone is un-paused and what it queued before
        is dropped.
        """
        if self.mic.paused:
            self.resume()
        started = time.monotonic()
        language = language_code(self.settings.language)
        self._end_at = None
        self._drop.clear()
        if self._rest is not None:
            rest, detected_at = self._rest
            self._rest = None
            yield self._finish(rest, detected_at, language)
        for frame, at in self.mic.frames():
            if self._drop.is_set():
                self.endpointer.reset()
                return
            if self._end_at is not None and at >= self._end_at:  # audio up to the key press
                last = self.endpointer.flush()
                if isinstance(last, Utterance):
                    yield self._finish(last, at, language)
                return
            if at < self._resume_at:
                continue
            if self._skip[0] <= at < self._skip[1]:
                if not self._skipping:  # what was under way when our voice began is gone
                    self._skipping = True
                    self.endpointer.reset()
                    self.vad.reset()
                    self._early = self._deferred = self._held = self._first = None
                    if self._told:
                        self._told = False
                        yield Tentative(None)
                continue
            self._skipping = False
            prob = self.vad(frame)
            ep = self.endpointer
            yield Level(level_db(frame), ep.speaking, time.monotonic() - started)
            self._decide()
            for event in ep.push(frame, prob):
                if isinstance(event, SpeechStart):
                    continue
                if isinstance(event, Pause):
                    if self.screen(time.monotonic()) is None:  # else: most is not for us
                        self._start_early(event.samples, language)
                    else:
                        ep.decide(True)  # no transcript to judge: silence alone tells
                elif isinstance(event, Resumed):
                    held = event.held if self.split_late else None
                    if held and self._held is None:
                        if self._early is None and self._deferred is not None:
                            # the worker is still busy with a stale job: this pause's
                            # words are judged after it, late but not never
                            self._early_samples = self._deferred
                            self._early = self._busy = self._worker.submit(
                                self.recognizer.transcribe, self._deferred, language
                            )
                        if self._early is not None:
                            assert self._early_samples is not None
                            self._held = (held, self._early, self._early_samples)
                    self._early = self._deferred = None  # stale: the user went on speaking
                    self._ended_by = "silence"
                    if self._told:
                        self._told = False
                        yield Tentative(None)
                elif isinstance(event, Noise):
                    self._held = None
                    first, self._first = self._first, None
                    if first is not None:  # what followed it was no speech (a cough)
                        yield first
                    else:
                        yield Dropped("too short to be speech")
                elif isinstance(event, Utterance):
                    first, self._first = self._first, None
                    if first is not None:
                        self._held = None  # a pause held after the split: one question
                    elif self._held is not None:  # its held pause first
                        held = self._held[0]
                        first = self._split_held(at, language, ended=True)
                        if first is not None:
                            event = Utterance(
                                event.samples[held.start * FRAME :],
                                event.last_speech_frame,
                                event.cut,
                                same_as_pause=False,
                            )
                    if first is not None:
                        self._rest = (event, at)
                        yield first
                        self._rest = None  # the caller read on: given out here
                    yield self._finish(event, at, language)
            if self._held is not None and self._held[1].done():
                self._first = self._split_held(at, language)
            self._start_early(self._deferred, language)  # the stale job may be done now
            guess = self._guess()
            if guess is not None:
                yield guess
            if timeout is not None and not ep.speaking and at - started > timeout:
                raise NothingHeard(f"nothing was heard in {timeout:.0f} s: speak up, or check "
                                   "the microphone with `voicechat doctor`")  # fmt: skip

    def _start_early(self, samples: np.ndarray | None, language: str | None) -> None:
        if samples is None:
            return
        if self._busy is not None and not self._busy.done():
            # never queue behind a stale job: start when it is done (the next frame after)
            self._deferred = samples
            return
        self._deferred = None
        self._told = False
        self._early_samples = samples
        self._early = self._busy = self._worker.submit(
            self.recognizer.transcribe, samples, language
        )

    def _decide(self) -> None:
        """Judge the pause in progress once its early transcript is ready: the endpointer
        waits for the verdict (up to ``stt.max_pause``). Text the gate drops, or a failed
        recognition, is no reason to wait."""
        early = self._early
        if not self.endpointer.undecided or early is None or not early.done():
            return
        finished, self._ended_by = True, "silence"
        if early.exception() is None and self.judge is not None:
            transcript = early.result()
            if not gate(transcript, self.settings.no_speech_threshold):
                assert self._early_samples is not None
                verdict = self.judge.judge(transcript.text, self._early_samples)
                finished = verdict.finished
                why = "silence, words finished" if finished else f"max_pause, {verdict.why}"
                self._ended_by = why
        self.endpointer.decide(finished)

    def _split_held(
        self, detected_at: float, language: str | None, ended: bool = False
    ) -> Recognized | None:
        """Judge a held pause (waiting for its job): when its words sound finished, it
        ended the utterance after all, and that first part is returned (what followed goes
        on as an utterance of its own); else None, and the two stay one. ``ended``: the
        whole utterance has ended meanwhile (the caller cuts its samples at
        ``Held.start``)."""
        assert self._held is not None
        held, job, samples = self._held
        self._held = None
        if job.exception() is not None or self.judge is None:
            return None
        transcript = job.result()
        if gate(transcript, self.settings.no_speech_threshold):
            return None
        verdict = self.judge.judge(transcript.text, samples)
        if not verdict.finished:
            return None
        if not ended:
            if not self.endpointer.split(held):
                return None
            self._deferred = None  # its samples began with the first part
            self._start_early(self.endpointer.pause_samples(), language)
        frames_after = self.endpointer.index - held.last_speech_frame
        return Recognized(
            transcript,
            False,
            detected_at - frames_after * FRAME_S,
            detected_at,
            time.monotonic(),
            True,
            "silence, words finished (judged after more speech came)",
        )

    def _guess(self) -> Tentative | None:
        """The early transcript, once, as soon as it is ready (unless it would be dropped)."""
        early = self._early
        if early is None or self._told or not early.done() or early.exception() is not None:
            return None
        if self._first is not None:  # the question before this one is asked first
            return None
        self._told = True
        transcript = early.result()
        if gate(transcript, self.settings.no_speech_threshold):
            return None
        return Tentative(transcript.text)

    def _finish(
        self, utt: Utterance, detected_at: float, language: str | None
    ) -> Recognized | Dropped:
        # the endpointer's frame counter and the capture clock advance together
        frames_after = self.endpointer.index - utt.last_speech_frame
        speech_end_at = detected_at - frames_after * FRAME_S
        early = utt.same_as_pause and self._early is not None
        screen = self.screen(speech_end_at - len(utt.samples) / SAMPLE_RATE)
        if screen is not None and not early and len(utt.samples) > SCREEN_S * SAMPLE_RATE:
            start = utt.samples[: int(SCREEN_S * SAMPLE_RATE)]
            heard = self._worker.submit(self.recognizer.transcribe, start, language).result()
            if not screen(heard.text):
                self._early = self._deferred = None
                self._told = False
                return Dropped("not for us (no wake phrase)")
        if early:
            assert self._early is not None
            transcript = self._early.result()
        else:
            self._busy = self._worker.submit(self.recognizer.transcribe, utt.samples, language)
            transcript = self._busy.result()
        self._early = self._deferred = None
        self._told = False
        recognized_at = time.monotonic()
        verdict = gate(transcript, self.settings.no_speech_threshold)
        if verdict:
            return Dropped(verdict, transcript)
        ended_by, self._ended_by = self._ended_by, "silence"
        return Recognized(
            transcript, utt.cut, speech_end_at, detected_at, recognized_at, early, ended_by
        )

    def close(self) -> None:
        """Stop the worker (waits for a recognition in progress); the microphone is the
        caller's (push-to-talk keeps it open between utterances)."""
        self._worker.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def gate(transcript: Transcript, no_speech_threshold: float) -> str | None:
    """Why a transcript must not be used (None when it may): the hallucination gate.

    Whisper's own rule: text is no speech when the no-speech probability is over the
    threshold AND the words themselves are unsure (mean log probability under -1); a cut
    utterance or a prompt can raise the first alone on real speech.

    >>> gate(Transcript("Thank you for watching.", "en", 0.9, 1.0, 0.1, -1.3), 0.6)
    'no speech (the recognizer is 90% sure)'
    >>> gate(Transcript("How far is the moon?", "en", 0.67, 1.0, 0.1, -0.3), 0.6) is None
    True
    """
    text = transcript.text.strip()
    if not any(ch.isalnum() for ch in text):
        return "nothing recognisable was said"
    if transcript.no_speech_prob > no_speech_threshold and (
        transcript.avg_logprob < LOGPROB_THRESHOLD or transcript.no_speech_prob > SURE_NO_SPEECH
    ):
        return f"no speech (the recognizer is {transcript.no_speech_prob:.0%} sure)"
    return None


FILE_MAX_UTTERANCE_S = 20.0
"""A file's utterances are cut at this length (only speech with no pause as long as
``stt.end_silence`` for this long is cut mid-way)."""
WINDOW_S = 28.0
"""Consecutive utterances of a file are recognised together up to this long: Whisper's
window is 30 s, and more context makes better text than one utterance at a time."""
TOGETHER_S = 2.0
"""...when no more silence than this lies between them: a longer one ends a topic, maybe a
speaker or a language (Whisper detects one language per window)."""
QUIET_DB = -70.0
"""Frames of a file below this level are silence without asking the VAD (digital silence:
an hour of it costs ~27 s of VAD here, and nothing this way)."""


def transcribe_file(
    recognizer: Recognizer,
    pieces: Iterable[np.ndarray],
    settings: STTSettings,
    progress: Callable[[float], None] | None = None,
) -> Transcript | None:
    """A recording of any length (16 kHz mono pieces of any size), in bounded memory: the
    microphone's VAD and endpointer cut it into utterances, and those are recognised a
    `WINDOW_S` window at a time (utterances up to `TOGETHER_S` apart share one) on a
    worker thread while the VAD reads on. Silence never reaches the recognizer; each window
    is judged by the hallucination gate on its own, so a weak stretch drops only itself.
    None when nothing passes.

    ``progress(seconds)``: how far into the recording the VAD has read.
    """
    language = language_code(settings.language)
    vad = SileroVAD()
    ep = Endpointer(
        settings.vad_threshold,
        settings.end_silence,
        min(settings.max_utterance, FILE_MAX_UTTERANCE_S),
        settings.pre_roll,
    )
    window: list[np.ndarray] = []
    kept: list[Transcript] = []
    running: Future[Transcript] | None = None
    quiet = 10 ** (QUIET_DB / 20)
    started = ended = -1  # frames: where the utterance in progress started, the last one ended

    def recognise() -> None:
        """Hand the window to the worker, once the one before is done (one in flight)."""
        nonlocal running, window
        collect()
        if window:
            running = worker.submit(recognizer.transcribe, np.concatenate(window), language)
            window = []

    def collect() -> None:
        nonlocal running
        if running is not None:
            transcript = running.result()
            running = None
            if not gate(transcript, settings.no_speech_threshold):
                kept.append(transcript)

    def add(utterance: Utterance) -> None:
        nonlocal ended
        full = sum(map(len, window)) + len(utterance.samples) > WINDOW_S * SAMPLE_RATE
        if full or (started - ended) * FRAME_S > TOGETHER_S:
            recognise()
        window.append(utterance.samples)
        ended = utterance.last_speech_frame

    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stt-file")
    try:
        pending = np.zeros(0, np.float32)
        read = 0
        was_quiet = False
        for piece in pieces:
            pending = np.concatenate([pending, piece])
            usable = len(pending) // FRAME * FRAME
            frames = pending[:usable].reshape(-1, FRAME)
            levels = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
            for frame, level in zip(frames, levels, strict=True):
                if level >= quiet:
                    prob, was_quiet = vad(frame), False
                else:
                    if not was_quiet:
                        vad.reset()  # its state from before the silence is stale after it
                    prob, was_quiet = 0.0, True
                for event in ep.push(frame, prob):
                    if isinstance(event, SpeechStart):
                        started = event.frame
                    elif isinstance(event, Utterance):
                        add(event)
            pending = pending[usable:]
            read += usable
            if progress is not None:
                progress(read / SAMPLE_RATE)
        last = ep.flush()
        if isinstance(last, Utterance):
            add(last)
        recognise()
        collect()
    finally:
        worker.shutdown(wait=False, cancel_futures=True)
    return joined(kept)


def joined(parts: list[Transcript]) -> Transcript | None:
    """One transcript of a recording's windows, in order (None for none); Chinese is
    joined without spaces.

    >>> a = Transcript("你好。", "zh", 0.1, 2.0, 0.5, -0.2)
    >>> b = Transcript("再见。", "zh", 0.3, 1.0, 0.5, -0.4)
    >>> t = joined([a, b, Transcript("OK.", "en", 0.2, 1.0, 0.2, -0.3)])
    >>> t.text, t.language, t.audio_s
    ('你好。再见。 OK.', 'zh', 4.0)
    """
    if not parts:
        return None
    text = parts[0].text
    for before, part in itertools.pairwise(parts):
        text += ("" if before.language == part.language == "zh" else " ") + part.text
    return Transcript(
        text=text.strip(),
        language=Counter(p.language for p in parts).most_common(1)[0][0],
        no_speech_prob=sum(p.no_speech_prob for p in parts) / len(parts),
        audio_s=sum(p.audio_s for p in parts),
        compute_s=sum(p.compute_s for p in parts),
        avg_logprob=sum(p.avg_logprob for p in parts) / len(parts),
    )


def transcribe_samples(
    recognizer: Recognizer, samples: np.ndarray, settings: STTSettings
) -> Transcript | None:
    """A whole recording already in memory (16 kHz mono): `transcribe_file` on it."""
    return transcribe_file(recognizer, [samples], settings)


__all__ = [
    "SAMPLE_RATE",
    "BackgroundRecognizer",
    "Dropped",
    "Level",
    "Listener",
    "Recognized",
    "Tentative",
    "gate",
    "joined",
    "open_listener",
    "transcribe_file",
    "transcribe_samples",
]


def open_listener(settings: STTSettings, recognizer: Recognizer, stack: ExitStack) -> Listener:
    """Microphone opened and a listener on it, both closed with ``stack``."""
    mic = Microphone(settings.device).open()
    stack.callback(mic.close)
    listener = Listener(settings, recognizer, mic)
    stack.callback(listener.close)
    return listener
