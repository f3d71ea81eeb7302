"""Barge-in: the user talks over the reply, the voice stops, and what they said is the next turn.

While a reply plays, `Watch` reads the microphone on its own thread::

    microphone -> EchoCanceller (reference: the speaker's PlayedTap) -> Silero VAD -> Detector
                                                            onset -> cancel the turn ("barge-in")
                                                                  -> Endpointer -> the utterance

The detector never trusts the VAD alone: voice that is only our own echo looks like speech.
A frame counts as the user's only when the echo-reduced signal is also clearly louder
(`MARGIN_DB`) than the residual echo the reference predicts (`Detector` learns that ratio on
frames the VAD calls silence), and an onset needs `ONSET_FRAMES` such frames in a row.

Modes (``stt.barge_in``): ``on`` (headphones, or a speaker the canceller handles), ``off``
(half-duplex: listening pauses while it speaks), ``auto`` (armed once the canceller has found
the echo path and the residual echo is at least `AUTO_RESIDUAL_DB` below what is played; no
echo at all, as with headphones, also arms it), ``keyword`` (an onset only starts listening:
the voice stops when what was said, recognised at its first pause, is a stop word).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from voicechat.audio.echo import FRAME as ECHO_FRAME
from voicechat.audio.echo import LIB_HINT, EchoCanceller, EchoUnavailable, PlayedTap
from voicechat.audio.pcm import db
from voicechat.checks import Check

if TYPE_CHECKING:
    from voicechat.audio.echo_path import EchoPath
    from voicechat.audio.microphone import Microphone
    from voicechat.settings import STTSettings
    from voicechat.stt.vad import Utterance

KEYWORD_MAX_S = 2.0
"""``keyword``: speech longer than this after an onset is not a stop word; it is let go
unrecognised (the reply goes on) and the watch waits for the next onset."""
FILLERS = frozenset({"please", "ok", "okay", "hey", "now"})
"""Words that may go with a stop word ("please stop", "stop now")."""
UNDER_ECHO_GAIN = 0.1
"""``keyword``: frames no louder than our voice's residual are recognised 20 dB softer."""
PARTICLES = "吧了啊呀嘛请"
"""Chinese particles that may go with one ("停一下吧"); taken out of stop words too."""
ONSET_FRAMES = 2
"""Consecutive 32 ms frames of the user's speech that make a barge-in (64 ms): each frame
more is 32 ms later to stop; the echo margins, not the run's length, keep our own voice
out (scripts/bench_bargein.py measures both)."""
MARGIN_DB = 10.0
"""How much louder than the predicted residual echo a frame must be to be the user's."""
TAIL_FRAMES = 8
"""Frames (256 ms) of reference whose loudest predicts the echo now (delay + reverberation)."""
REF_ACTIVE = 1e-7
"""Reference power (about -70 dBFS) below which nothing is playing."""
LEARN_REF_P = 1e-4
"""Reference power (-40 dBFS) above which the residual ratio is learned: on fainter frames
the ratio is mostly the microphone's own noise."""
RESIDUAL_FLOOR = 1e-4
"""The residual ratio assumed at best (-40 dB): deeper cancellation is not trusted, since
a change in the room or a glitch in the audio path lets the echo back for a while."""
MIC_MARGIN = 10 ** (4.0 / 10)
"""How much more than our voice's echo the microphone must hear (4 dB) for a frame to be
the user's: a second opinion the canceller's brief leaks do not pass."""
USER_MIN_P = 1e-5
"""Echo-reduced power (-50 dBFS) below which nothing counts as the user's voice."""
LEARN_DECAY = 0.93
"""Per frame, how fast the learned residual ratio comes down to what is left of the echo
(10 dB in ~1 s). It starts at 1 (0 dB: nothing cancelled), so the first reply of a
session cannot be interrupted until the canceller has shown what it leaves."""
GAIN_FRAMES = 60
"""Clean frames of our echo alone (~2 s of the reply) whose loudest, relative to the
reference, is the echo's level (`Detector.gain_db`): the bound the microphone check
(`MIC_MARGIN`) needs. A level that fades instead sinks under the echo between the reply's
loud syllables, and the canceller's leaks then pass as the user's voice; a window (not a
slow fade) also follows the volume when it is turned down within seconds."""
ABOVE_ECHO = 10 ** (3.0 / 10)
"""A frame 3 dB over the residual echo the reference predicts is not our own voice: where
the user's utterance may start (an onset needs `MARGIN_DB`)."""
LOOKBACK_S = 1.0
"""How far before the detected onset the user's speech may have begun (the detector waits
until it is clearly louder than the echo; the utterance starts where the VAD heard it)."""
AUTO_RESIDUAL_DB = -20.0
"""``auto`` arms when the residual echo is at least this far below what is played."""
AUTO_LEARN_FRAMES = 30
"""Frames of our own echo (~1 s) ``auto`` learns from before it trusts the residual."""
DETECT: str | None = None
"""The canceller whose output decides that the user talks (`EchoCanceller`'s ``detect``;
None: Speex's own). In simulated rooms (scripts/eval_echo.py: reverberation, a clipping
speaker, echo up to 0 dB) Speex's output interrupted less and reacted ~100 ms sooner than
AEC3's, so it decides too."""
ECHO_BACK = 0.2
"""Correlation of microphone and reference (`Delay.strength`) over the latest half second
(`EchoCanceller.recent_delay`) above which an onset heard with no echo path known
(headphones) is our own voice: the echo may have appeared since (they came off). Measured
in the tests: the user talking over our voice in headphones 0.01-0.02, our echo through
module-loopback 1.0 (one through a room, smeared by its reverberation, less)."""


class Detector:
    """Frame by frame: is the user talking over the reply? Pure logic, no clock, no I/O."""

    def __init__(
        self,
        mode: str = "on",
        threshold: float = 0.5,
        onset_frames: int = ONSET_FRAMES,
        margin_db: float = MARGIN_DB,
    ) -> None:
        self.mode = mode
        self.threshold = threshold
        self.onset_frames = onset_frames
        self.margin = 10 ** (margin_db / 10)
        self.residual = 1.0
        """Learned residual echo power per reference power (1: nothing cancelled yet)."""
        self.learned = 0
        """Frames the residual ratio was learned from."""
        self.residual_db = 0.0
        """The residual's typical level (an average in dB, where `residual` is a peak)."""
        self._gains: deque[float] = deque(maxlen=GAIN_FRAMES)
        """Our echo alone at the microphone relative to the reference's loudest (dB), over
        the last `GAIN_FRAMES` clean frames (`gain_db` is their loudest)."""
        self._refs: deque[float] = deque(maxlen=TAIL_FRAMES)
        self._run = 0
        self.echo_free = False
        """The canceller found no echo path (headphones): set by `Watch`."""
        self.above_echo = False
        """The last frame is clearly more than our voice's residual (`ABOVE_ECHO`): it may be
        the user's, though not yet loud enough to be an onset (where an utterance starts)."""

    @property
    def armed(self) -> bool:
        """Whether an onset may interrupt now (``auto`` waits until the echo is handled)."""
        if self.mode == "off":
            return False
        if self.mode in ("on", "keyword"):  # keyword: a stop word confirms an onset
            return True
        return self.echo_free or (
            self.learned >= AUTO_LEARN_FRAMES and self.residual_db <= AUTO_RESIDUAL_DB
        )

    def push(self, prob: float, out_p: float, ref_p: float, mic_p: float | None = None) -> bool:
        """One frame's VAD probability, echo-reduced, reference and microphone power; True
        at an onset of the user's speech (once per onset, only while `armed`)."""
        self._refs.append(ref_p)
        ref_max = max(self._refs)
        playing = ref_max > REF_ACTIVE
        mic_p = out_p if mic_p is None else mic_p
        expected = max(10 ** (self.residual_db / 10), RESIDUAL_FLOOR) * ref_max
        self.above_echo = out_p > USER_MIN_P and (
            not playing or self.echo_free or out_p > ABOVE_ECHO * expected
        )
        louder = out_p > USER_MIN_P and (
            not playing
            or self.echo_free
            # more is left than the canceller leaves of our voice, and the microphone hears
            # more than our voice's echo alone: the canceller's brief leaks fail the second
            or (out_p > self.margin * expected and mic_p > MIC_MARGIN * self.gain * ref_max)
        )
        if ref_max > LEARN_REF_P and (prob < self.threshold - 0.15 or not louder):
            # our echo alone (the VAD hears none, or it is no louder than what echo leaves):
            # learn the residual and, where the canceller left no more than its residual
            # (no leak, nothing of the user's), the echo's level
            self.residual = max(out_p / ref_max, self.residual * LEARN_DECAY)
            if not self.above_echo:
                self._gains.append(db(mic_p / ref_max))
            self.learned += 1
            self.residual_db += (db(out_p / ref_max) - self.residual_db) / AUTO_LEARN_FRAMES
        user = prob >= self.threshold and louder
        self._run = self._run + 1 if user else 0
        return self._run == self.onset_frames and self.armed

    @property
    def gain_db(self) -> float:
        """The loudest our echo alone was lately at the microphone, relative to the
        reference's loudest (dB; -100 before any: the residual check keeps the first second
        of a session from interrupting meanwhile)."""
        return max(self._gains, default=-100.0)

    @property
    def gain(self) -> float:
        """`gain_db` as a power ratio."""
        return 10 ** (self.gain_db / 10)

    def reset_onset(self) -> None:
        self._run = 0

    def skip(self, ref_p: float) -> None:
        """A frame not listened to (the canceller is measuring the delay again): no onset
        runs across it, but its reference still counts toward the echo the next frames
        predict. (Forgotten, the echo of the half second played meanwhile, reverberating,
        passed for the user's voice on the first frame listened to: tests/test_room.py.)"""
        self._refs.append(ref_p)
        self._run = 0

    def relearn(self) -> None:
        """Forget the echo learned so far (a new echo path: as at the start of a session)."""
        self.residual, self.residual_db, self.learned = 1.0, 0.0, 0
        self._gains.clear()
        self._run = 0


def _user_only(frame: np.ndarray, prob: float, above_echo: bool) -> tuple[np.ndarray, float]:
    """``keyword``: a frame that is not clearly more than our voice's residual is silence to
    the endpointer and 20 dB softer to the recogniser, so it hears the user, not our voice
    ("the stock" was our "the" before their "stop"); softer, not silent, so the faint edges
    of a stop word stay."""
    return (frame, prob) if above_echo else (frame * UNDER_ECHO_GAIN, 0.0)


def _normal(text: str) -> str:
    words = re.sub(r"[\W_]+", " ", text.lower()).split()
    joined = "".join(w for w in words if w not in FILLERS)
    return joined.translate({ord(c): None for c in PARTICLES})


def is_stop(text: str, stop_words: str) -> bool:
    """Whether a transcript is only stop words (``stop_words``: comma-separated), said once
    or more, with fillers or particles around them.

    >>> words = "stop, wait, 停, 停下, 停一下, 别说了"
    >>> [is_stop(t, words) for t in ("Stop!", "Stop, stop.", "Please stop.", "停一下吧。")]
    [True, True, True, True]
    >>> [is_stop(t, words) for t in ("Don't stop.", "I see.", "", "停车", "Wait for it")]
    [False, False, False, False, False]
    """
    said = _normal(text)
    options = sorted({w for w in map(_normal, stop_words.split(",")) if w}, key=len)
    if not said or not options:
        return False
    alternatives = "|".join(re.escape(w) for w in reversed(options))
    return re.fullmatch(f"(?:{alternatives})+", said) is not None


def speech_run(
    frames: deque[tuple[np.ndarray, float, bool]] | list[tuple[np.ndarray, float, bool]],
    floor: float,
    pre_roll: int,
) -> list[tuple[np.ndarray, float]]:
    """The (frame, speech probability) pairs from the start of the speech that ends the
    list, with ``pre_roll`` frames before it: the user's first words, which the detector
    counts only once they are clearly louder than the echo, are part of the utterance. A
    frame belongs to that speech when the VAD hears speech in it and it is above the echo
    (`Detector.above_echo`): our own voice's residual, also speech to the VAD, is not.

    >>> run = [(0.9, True), (0.9, False), (0.2, True), (0.8, True), (0.9, True), (0.7, True)]
    >>> [p for _, p in speech_run([(None, p, a) for p, a in run], 0.35, 1)]
    [0.2, 0.8, 0.9, 0.7]
    >>> [p for _, p in speech_run([(None, p, a) for p, a in run[:2] + run[3:]], 0.35, 1)]
    [0.9, 0.8, 0.9, 0.7]
    """
    items = list(frames)
    start = len(items)
    while start > 0 and items[start - 1][1] >= floor and items[start - 1][2]:
        start -= 1
    return [(frame, prob) for frame, prob, _ in items[max(0, start - pre_roll) :]]


@dataclass(frozen=True)
class BargedIn:
    """What the user said over the reply."""

    onset_at: float
    """``time.monotonic()`` of the detected onset's first frame (capture time)."""
    detected_at: float
    """When the detector decided (the voice was stopped right after)."""
    utterance: Utterance | None
    """The user's utterance from its onset (pre-roll included); None when it was noise."""
    stop_word: str = ""
    """``keyword``: the stop word as recognised (there is no next question then)."""


class Watch:
    """Reads the microphone while one turn runs; a context manager owning its thread.

    ``on_barge_in()`` is called once, from the watch thread, at the onset (it cancels the
    turn: `Session.cancel("barge-in")` stops the stream and fades the voice); the thread then
    keeps recording until the utterance ends. Leaving the context without a barge-in, or by
    an exception (Ctrl+C while the utterance is recorded too), stops the thread at the next
    microphone frame (32 ms: audio paces it, no timer); the microphone must run until then.

    With ``recognize`` (``keyword`` mode) an onset only starts recording: at each pause
    within `KEYWORD_MAX_S` the speech so far is recognised, and only a stop word
    (`is_stop`) calls ``on_barge_in``; anything else is let go and the watch goes on.
    """

    def __init__(
        self,
        barge_in: BargeIn,
        mic: Microphone,
        on_barge_in: Callable[[], object],
        recognize: Callable[[np.ndarray], str | None] | None = None,
    ) -> None:
        self.barge_in = barge_in
        self.mic = mic
        self.on_barge_in = on_barge_in
        self.recognize = recognize
        """Samples -> their text, or None when it must not count (noise, hallucination)."""
        self.let_go = 0
        """``keyword``: onsets heard and let go (not a stop word, or too long for one)."""
        self.not_stop: list[str] = []
        """``keyword``: what was recognised and was not a stop word (for ``--stats``)."""
        self.result: BargedIn | None = None
        self._stop = threading.Event()
        """Leave at the next frame unless a barge-in was detected."""
        self._abandon = threading.Event()
        """Leave at the next frame in any case (the utterance, if any, is dropped)."""
        self._done = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bargein-watch", daemon=True)

    def __enter__(self) -> Watch:
        self.barge_in.detector.reset_onset()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if self.result is None:
            self._stop.set()
        if exc_type is not None:
            self._abandon.set()  # the turn failed: no next question, whatever was said
        try:
            self._done.wait()  # after a barge-in: until the user's utterance ends
        except BaseException:  # Ctrl+C meanwhile: drop the utterance, end at the next frame
            self._abandon.set()
            self._done.wait()
            raise
        self._thread.join()

    def wait(self) -> BargedIn | None:
        """After the turn: the barge-in with its whole utterance, or None (waits for its end)."""
        self._done.wait()
        if self._failed is not None:
            raise self._failed
        return self.result

    def _run(self) -> None:
        from voicechat.stt.vad import FRAME_S, START_FRAMES, Noise, Utterance, endpointer

        bi = self.barge_in
        settings = bi.settings
        pre_roll = round(settings.pre_roll / FRAME_S) + START_FRAMES
        pre: deque[tuple[np.ndarray, float, bool]] = deque(
            maxlen=pre_roll + round(LOOKBACK_S / FRAME_S) + ONSET_FRAMES
        )
        ep = None
        tentative = False  # keyword: recording after an onset, the voice still playing
        frames = 0
        onset_at = detected_at = 0.0
        try:
            for frame, at in self.mic.frames():
                out, prob = bi.hear(frame, at)  # every frame: the canceller's clock runs on
                if self._abandon.is_set() or ((ep is None or tentative) and self._stop.is_set()):
                    if tentative:
                        ep = None  # no stop word was heard: no barge-in
                    return
                if ep is None or tentative:
                    if not bi.aligned:  # echo may leak while the delay is re-measured
                        pre.append((out, prob, False))
                        bi.detector.skip(bi.ref_power())
                        ep, tentative = None, False
                        continue
                    powers = bi.out_power(out), bi.ref_power(), bi.mic_power()
                    onset = bi.detector.push(prob, *powers)
                    onset = onset and not bi.echo_appeared()
                    pre.append((out, prob, bi.detector.above_echo))
                if ep is None:
                    if not onset:
                        continue
                    detected_at = time.monotonic()
                    onset_at = at - ONSET_FRAMES * FRAME_S
                    ep = endpointer(settings)
                    start = speech_run(pre, settings.vad_threshold - 0.15, pre_roll)
                    if self.recognize is None:
                        self.on_barge_in()
                    else:
                        tentative, frames = True, len(start)
                        start = [_user_only(f, p, a) for f, p, a in list(pre)[-len(start) :]]
                    events = [e for f, p in start for e in ep.push(f, p)]
                elif tentative:
                    frames += 1
                    events = ep.push(*_user_only(out, prob, bi.detector.above_echo))
                else:
                    events = ep.push(out, prob)
                if tentative:
                    if self._stop_word(events, onset_at):
                        return
                    too_long = frames * FRAME_S > KEYWORD_MAX_S
                    if too_long or any(isinstance(e, Utterance | Noise) for e in events):
                        ep, tentative = None, False  # not a stop word: watch on
                        self.let_go += 1
                        if too_long:
                            self.not_stop.append(f"(over {KEYWORD_MAX_S:g} s of speech)")
                        bi.detector.reset_onset()
                    continue
                for event in events:
                    if isinstance(event, Utterance | Noise):
                        utt = event if isinstance(event, Utterance) else None
                        self.result = BargedIn(onset_at, detected_at, utt)
                        return
        except BaseException as exc:  # reported to the turn's thread by `wait`
            self._failed = exc
        finally:
            if ep is not None and self.result is None:
                self.result = BargedIn(onset_at, detected_at, None)
            self._done.set()

    def _stop_word(self, events: list[object], onset_at: float) -> bool:
        """``keyword``: recognise the speech at a pause (or its end); a stop word stops the
        voice (True: the watch is done)."""
        from voicechat.stt.vad import Pause, Utterance

        assert self.recognize is not None
        for event in events:
            if isinstance(event, Pause | Utterance):
                text = self.recognize(event.samples)
                if text is not None and is_stop(text, self.barge_in.settings.stop_words):
                    self.on_barge_in()
                    self.result = BargedIn(onset_at, time.monotonic(), None, text)
                    return True
                self.not_stop.append(text or "(noise)")
        return False


class BargeIn:
    """One session's barge-in: the speaker's echo reference, the canceller, the VAD, the
    detector. The canceller's filter and delay carry over from turn to turn (the room does
    not change), so only the first reply pays for convergence."""

    def __init__(
        self, settings: STTSettings, tap: PlayedTap | None = None, detect: str | None = DETECT
    ) -> None:
        from voicechat.audio import aec3
        from voicechat.stt.vad import SileroVAD

        self.settings = settings
        self.tap = tap or PlayedTap()
        if detect == "aec3" and not aec3.available():
            detect = None  # without the [room] extra: Speex alone
        try:
            self.canceller: EchoCanceller | None = EchoCanceller(self.tap, detect=detect)
        except EchoUnavailable:
            self.canceller = None  # no cancellation: only `on` (headphones) can interrupt
        mode = settings.barge_in
        if self.canceller is None and mode == "auto":
            mode = "off"
        self.detector = Detector(mode, settings.vad_threshold)
        self.vad = SileroVAD()

    @property
    def mode(self) -> str:
        """The mode in force (``auto`` falls back to ``off`` without libspeexdsp)."""
        return self.detector.mode

    def hear(self, frame: np.ndarray, at: float) -> tuple[np.ndarray, float]:
        """One 512-sample microphone frame -> (echo-reduced frame, speech probability). The
        probability is the detecting canceller's output's (`EchoCanceller.detected`)."""
        out = heard = frame
        if self.canceller is not None and len(frame) % ECHO_FRAME == 0:
            out = self.canceller.process(frame, at)
            heard = self.canceller.detected
            d = self.canceller.delay
            self.detector.echo_free = self.canceller.fixed and d.strength < 0.1
        return out, self.vad(heard)

    def echo_appeared(self) -> bool:
        """At an onset heard with no echo path known (headphones): whether the latest
        microphone is our own voice after all (a loudspeaker now, ECHO_BACK). Then the
        canceller measures the delay again and the detector learns the echo anew, as at the
        start of a session, rather than at the canceller's next check (`CHECK_S` of playback
        later, while every word of ours passed for the user's)."""
        if self.canceller is None or not self.detector.echo_free:
            return False
        if self.canceller.recent_delay().strength < ECHO_BACK:
            return False
        self.canceller.remeasure()
        self.detector.relearn()
        return True

    @property
    def aligned(self) -> bool:
        """The canceller knows where the echo is (always, without a canceller)."""
        return self.canceller is None or self.canceller.settled

    @staticmethod
    def power(x: np.ndarray) -> float:
        return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0

    def out_power(self, out: np.ndarray) -> float:
        """The echo-reduced power the detector judges: the detecting canceller's output's."""
        return self.canceller.detect_rms**2 if self.canceller is not None else self.power(out)

    def mic_power(self) -> float:
        return self.canceller.mic_rms**2 if self.canceller is not None else 0.0

    def ref_power(self) -> float:
        return self.canceller.ref_rms**2 if self.canceller is not None else 0.0

    def watch(
        self,
        mic: Microphone,
        on_barge_in: Callable[[], object],
        recognize: Callable[[np.ndarray], str | None] | None = None,
    ) -> Watch:
        """Watch the microphone while a turn runs (``with bi.watch(mic, cancel) as w: ...``);
        ``recognize`` is what ``keyword`` mode hears stop words with."""
        self.vad.reset()
        return Watch(self, mic, on_barge_in, recognize if self.mode == "keyword" else None)

    def close(self) -> None:
        if self.canceller is not None:
            self.canceller.close()


# --- the doctor's echo row ------------------------------------------------------------------


def checks(settings: STTSettings, tts_device: str | None = None) -> Iterator[Check]:
    """The doctor's "echo" row: play a short test sound, record it, report the delay and the
    echo level before and after cancellation, and recommend a ``stt.barge_in`` mode."""
    from voicechat.audio.echo import available
    from voicechat.audio.echo_path import measure_echo

    if not available():
        yield Check("echo", False, "libspeexdsp is not installed: no echo cancellation", LIB_HINT)
        return
    try:
        found = measure_echo(settings.device, tts_device)
    except Exception as exc:  # no device, PortAudio missing: the other rows say which
        yield Check("echo", None, f"not measured ({' '.join(str(exc).split())[:160]})")
        return
    yield echo_check(found, settings.barge_in)


def recommended(path: EchoPath) -> str:
    """The ``stt.barge_in`` mode that suits a measured echo path."""
    if not path.echoing:
        return "on"  # nothing comes back: headphones
    # too much of our voice is left for any voice to interrupt: only a stop word may
    return "auto" if path.residual_db <= AUTO_RESIDUAL_DB else "keyword"


def echo_check(path: EchoPath, mode: str) -> Check:
    """The doctor's echo row for a measured path and the mode set."""
    rec = recommended(path)
    if not path.echoing:
        detail = "no echo of the test sound reached the microphone (headphones?)"
    else:
        detail = (
            f"delay {path.delay_s * 1000:.0f} ms, echo {path.echo_db:.0f} dB, "
            f"{path.residual_db:.0f} dB after cancellation"
        )
    detail += f"; recommended stt.barge_in: {rec}"
    if mode in (rec, "off", "keyword") or (mode == "auto" and rec == "on"):
        return Check("echo", True, detail + f" (set: {mode})")
    return Check("echo", False, detail + f" (set: {mode})", f"set stt.barge_in: {rec}")
