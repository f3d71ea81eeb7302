"""The loudspeaker-to-microphone path, measured: play a test sound, record, cancel.

`voicechat doctor` reports it (and recommends a barge-in mode from it); nothing here knows
of conversations.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from voicechat.audio.echo import RATE, EchoCanceller, PlayedTap, erle_db, estimate_delay
from voicechat.audio.microphone import Microphone
from voicechat.audio.pcm import db, rms
from voicechat.audio.playback import Clip, Player


@dataclass(frozen=True)
class EchoPath:
    """What the doctor measured of the loudspeaker-to-microphone path."""

    delay_s: float
    strength: float
    """Normalised cross-correlation of played and recorded (0: no echo, 1: a pure copy)."""
    echo_db: float
    """Echo level at the microphone relative to what was played (dB)."""
    residual_db: float
    """After cancellation (dB relative to what was played)."""

    @property
    def echoing(self) -> bool:
        """Something of what was played came back. The correlation at one lag misses an echo
        whose delay drifts while measured (a resampling loop: 0.02-0.1 measured through
        module-loopback at -6 dB); the canceller still takes such an echo out (20-35 dB),
        whereas noise that is no echo loses only the denoiser's 6 dB."""
        if self.echo_db < -40:
            return False
        return self.strength >= 0.1 or self.echo_db - self.residual_db >= ECHO_ERLE_DB


TEST_SOUND_S = 2.0
ECHO_ERLE_DB = 12.0
"""Cancelled by at least this much (twice the denoiser's `NOISE_SUPPRESS_DB`), what the
microphone heard was an echo of the test sound."""


def test_sound(rate: int, seconds: float = TEST_SOUND_S) -> np.ndarray:
    """Speech-like noise (bursts of filtered noise at syllable pace), int16, -20 dBFS."""
    rng = np.random.default_rng(7)
    n = int(seconds * rate)
    noise = rng.standard_normal(n)
    noise = np.convolve(noise, np.ones(4) / 4, mode="same")
    t = np.arange(n) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    x = noise * envelope
    x *= 0.1 / max(float(np.sqrt(np.mean(x**2))), 1e-9)
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


MIC_START_S = 3.0
"""Longest wait for the microphone's first block before the test sound plays."""


def measure_echo(input_device: str | None = None, tts_device: str | None = None) -> EchoPath:
    """Play `test_sound` through the output while recording the microphone; cancel it.

    What is left after cancellation is measured where the canceller was aligned: after an
    underrun (a busy machine) it measures the delay again and passes the echo meanwhile,
    which says nothing of the room."""
    tap = PlayedTap()
    canceller = EchoCanceller(tap)
    mics: list[np.ndarray] = []
    outs: list[np.ndarray] = []
    refs: list[np.ndarray] = []
    aligned: list[bool] = []
    faults: list[str] = []
    player = Player(tts_device, on_fault=faults.append)
    player.tap = tap
    player.start()
    try:
        if not player.wait_open(5.0):
            raise RuntimeError(faults[0] if faults else "the audio output did not open")
        rate = player.rate or 48000
        with Microphone(input_device) as mic:
            # a test sound played before the microphone delivers would go unheard (an
            # input can take a second or two to start: seen with PulseAudio's sources)
            mic.live.wait(MIC_START_S)
            ended = threading.Event()

            def record() -> None:
                for frame, at in mic.frames():
                    mics.append(frame)
                    outs.append(canceller.process(frame, at))
                    aligned.append(canceller.settled)
                    refs.append(tap.reference(at - len(frame) / RATE, len(frame)))
                    if ended.is_set():
                        return

            reader = threading.Thread(target=record, name="doctor-echo", daemon=True)
            reader.start()
            # twice: the canceller converges on the first, the second shows what is left
            for _ in range(2):
                player.put(Clip(test_sound(rate), rate, pause=0.3))
            player.drain(10 * TEST_SOUND_S)
            ended.set()
            reader.join(2.0)
    finally:
        player.close()
        canceller.close()
    mic = np.concatenate(mics) if mics else np.zeros(0, np.float32)
    ref = np.concatenate(refs) if refs else np.zeros(0, np.float32)
    delay = estimate_delay(ref, mic)
    lag = round(delay.seconds * RATE)  # negative: the echo came before the time stamps
    played = rms(ref[: len(ref) - lag] if lag >= 0 else ref[-lag:])
    heard = rms(mic[lag:] if lag >= 0 else mic[: len(mic) + lag])
    echo = db((heard / played) ** 2) if played > 0 else -100.0
    # the second playing (after convergence), where aligned (all of it if it never was)
    n = min(len(mics), len(outs), len(aligned))
    kept = [i for i in range(n // 2, n) if aligned[i]] or list(range(n // 2, n))
    residual = echo
    if kept:
        heard_kept = np.concatenate([mics[i] for i in kept])
        residual -= erle_db(heard_kept, np.concatenate([outs[i] for i in kept]))
    return EchoPath(delay.seconds, delay.strength, echo, residual)
