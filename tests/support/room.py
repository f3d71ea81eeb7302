"""A loudspeaker in a room, simulated: what the microphone hears of what voicechat plays.

A loopback echo (tests/support/echo_fixtures.py) is a delayed, attenuated copy; a real room is
not. The path here, in the order sound takes it::

    played -> amplifier gain + clipping -> small speaker (band-pass) -> room (reverberation)
           -> level at the microphone

`Room` is deterministic for its ``seed``. Offline, ``room(played)`` gives the echo of a whole
signal; `Room.stream` gives a filter that takes blocks as they come and returns the same
samples (``python -m tests.support.room`` runs one between ``parec`` and ``pacat`` for the
real-time tests: float32 mono 16 kHz on stdin and stdout).

Numpy only: the speaker's band-pass and the room's impulse response are one FIR filter after the
clipping (both are linear; the clipping is the amplifier's, before the cone).
"""

from __future__ import annotations

import select
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RATE = 16000
LOW_HZ = 200.0
"""A small speaker's lowest frequency (a phone's or a smart speaker's: 150-300 Hz)."""
HIGH_HZ = 6000.0
"""Its highest (the tweeterless cone of a small speaker)."""
SPEAKER_TAPS = 129
"""Length of the band-pass FIR (8 ms: enough for a 200 Hz edge, not a brick wall)."""
CLIP_DB = 18.0
"""The clipping speaker's drive: +18 dB into a full-scale limit."""
DELAY_S = 0.004
"""Sound's flight from the speaker to the microphone (~1.4 m); device buffers are the
canceller's alignment's business, not the room's."""
DRR_DB = 3.0
"""Direct-to-reverberant ratio: a speaker a metre or so from the microphone."""
CALIBRATION_DBFS = -20.0
"""The level of speech the echo level is calibrated at (Piper's voices peak near 0 dBFS with
an RMS near -20): with a clipping speaker, louder input is clipped more."""


def band_pass(low: float = LOW_HZ, high: float = HIGH_HZ, taps: int = SPEAKER_TAPS) -> np.ndarray:
    """A linear-phase band-pass FIR (windowed sinc) at `RATE`.

    >>> h = band_pass()
    >>> gain = np.abs(np.fft.rfft(h, 4096))
    >>> hz = np.fft.rfftfreq(4096, 1 / RATE)
    >>> [round(float(gain[np.argmin(np.abs(hz - f))]), 1) for f in (50, 1000, 7800)]
    [0.0, 1.0, 0.0]
    """
    n = np.arange(taps) - (taps - 1) / 2

    def low_pass(fc: float) -> np.ndarray:
        return 2 * fc / RATE * np.sinc(2 * fc / RATE * n)

    return (low_pass(high) - low_pass(low)) * np.hamming(taps)


@dataclass(frozen=True)
class Room:
    """One echo path: a room's reverberation, a small speaker, how hard it is driven, a level."""

    t60: float = 0.4
    """Reverberation time (s): the tail decays 60 dB in this long (living rooms 0.4-0.6)."""
    level_db: float = -6.0
    """Echo at the microphone relative to what is played (RMS, on speech at `CALIBRATION_DBFS`)."""
    clip_db: float | None = None
    """Amplifier drive into the full-scale limit (`CLIP_DB`), or None for a linear speaker."""
    hard: bool = False
    """Hard clipping (a flat top) instead of soft (tanh)."""
    seed: int = 0
    """The reverberation's noise (a different seed: another spot in the same room)."""
    ir: np.ndarray = field(init=False, repr=False, compare=False)
    """Speaker and room as one FIR, scaled to `level_db`."""

    def __post_init__(self) -> None:
        h = np.convolve(band_pass(), self.impulse_response())
        rng = np.random.default_rng(12345)
        speech_like = rng.standard_normal(RATE * 2) * 10 ** (CALIBRATION_DBFS / 20)
        echo = np.convolve(self._drive(speech_like), h)[: len(speech_like)]
        gain = 10 ** (self.level_db / 20) * _rms(speech_like) / max(_rms(echo), 1e-12)
        object.__setattr__(self, "ir", (h * gain).astype(np.float32))

    @property
    def name(self) -> str:
        """``t60 0.3 s, hard clip +18 dB, -6 dB``: for tables and test ids."""
        kind = "hard" if self.hard else "soft"
        speaker = "linear" if self.clip_db is None else f"{kind} clip {self.clip_db:+.0f} dB"
        return f"t60 {self.t60:g} s, {speaker}, {self.level_db:+.0f} dB"

    def impulse_response(self) -> np.ndarray:
        """The room alone: the direct sound after `DELAY_S`, then exponentially decaying noise
        (Polack's model) reaching -60 dB at `t60`, a few ms later (the first reflections)."""
        rng = np.random.default_rng(self.seed)
        n = int(self.t60 * RATE)
        t = np.arange(n) / RATE
        tail = rng.standard_normal(n) * np.exp(-3 * np.log(10) * t / self.t60)
        tail[: int(0.002 * RATE)] = 0.0  # the first reflection comes after the direct sound
        tail *= 10 ** (-DRR_DB / 20) / max(float(np.sqrt(np.sum(tail**2))), 1e-12)
        delay = int(DELAY_S * RATE)
        ir = np.zeros(delay + n)
        ir[delay] = 1.0
        ir[delay:] += tail
        return ir

    def _drive(self, x: np.ndarray) -> np.ndarray:
        if self.clip_db is None:
            return x
        g = 10 ** (self.clip_db / 20)
        return np.clip(g * x, -1.0, 1.0) if self.hard else np.tanh(g * x)

    def __call__(self, played: np.ndarray) -> np.ndarray:
        """The echo of ``played`` (float, -1..1, `RATE`) at the microphone, same length."""
        x = np.asarray(played, dtype=np.float64)
        return np.convolve(self._drive(x), self.ir)[: len(x)].astype(np.float32)

    def stream(self) -> RoomStream:
        """A filter for blocks as they come (the same samples as ``room(whole)``)."""
        return RoomStream(self)


class RoomStream:
    """`Room` block by block: overlap-add, the reverberation carried into the next block."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self._carry = np.zeros(len(room.ir) - 1)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        x = self.room._drive(np.asarray(block, dtype=np.float64))
        y = np.convolve(x, self.room.ir)
        y[: len(self._carry)] += self._carry  # len(y) = len(x) + len(carry)
        self._carry = y[len(x) :]
        return y[: len(x)].astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.support.room T60 LEVEL_DB [CLIP_DB] [--hard] [--seed N]``: float32
    mono 16 kHz on stdin (``parec --raw --format=float32le``), its echo on stdout (for
    ``pacat`` into the virtual microphone), 10 ms at a time to add little delay."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("t60", type=float)
    parser.add_argument("level_db", type=float)
    parser.add_argument("clip_db", type=float, nargs="?")
    parser.add_argument("--hard", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run = Room(args.t60, args.level_db, args.clip_db, args.hard, args.seed).stream()
    src, dst = sys.stdin.buffer, sys.stdout.buffer
    flowing = False
    while data := src.read(160 * 4):
        data = data[: len(data) - len(data) % 4]
        dst.write(run(np.frombuffer(data, dtype="<f4")).astype("<f4").tobytes())
        dst.flush()
        if not flowing:  # RoomLoop.load waits for this line: the echo reaches the microphone
            print(FLOWING, file=sys.stderr, flush=True)
            flowing = True
    return 0


FLOWING = "room: flowing"
START_S = 10.0
"""Longest wait for the chain's first block (parec can take ~2 s to deliver one)."""
RAW = ["--raw", "--format=float32le", "--channels=1", f"--rate={RATE}", "--latency-msec=10"]


@dataclass
class RoomLoop:
    """A `Room` between the speaker's monitor and the virtual microphone, in real time::

        testsink.monitor -> parec -> python -m tests.support.room -> pacat -> micsink

    The real-time counterpart of echo_fixtures' `Loopback` (which only delays and attenuates);
    such a chain keeps a stable delay (~27 ms between the monitors here, +-4 ms)."""

    room: Room
    procs: list[subprocess.Popen[bytes]]

    @classmethod
    def load(cls, env: dict[str, str], room: Room, mic: str = "micsink") -> RoomLoop:
        """Start the chain on the PulseAudio server ``env`` names (``PULSE_SERVER``)."""
        args = [str(room.t60), str(room.level_db)]
        if room.clip_db is not None:
            args.append(str(room.clip_db))
        args += ["--seed", str(room.seed)] + (["--hard"] if room.hard else [])
        root = str(Path(__file__).resolve().parent.parent.parent)
        penv = dict(env, PYTHONPATH=root)
        rec = subprocess.Popen(["parec", "-d", "testsink.monitor", *RAW], env=env,
                               stdout=subprocess.PIPE)  # fmt: skip
        filt = subprocess.Popen([sys.executable, "-m", "tests.support.room", *args], env=penv,
                                stdin=rec.stdout, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=root)  # fmt: skip
        play = subprocess.Popen(["pacat", "-d", mic, *RAW], env=env, stdin=filt.stdout)
        assert rec.stdout is not None and filt.stdout is not None and filt.stderr is not None
        rec.stdout.close()  # the chain's own ends hold the pipes now
        filt.stdout.close()
        loop = cls(room, [rec, filt, play])
        # an echo path that starts after the first reply would pass for headphones at first
        ready, _, _ = select.select([filt.stderr], [], [], START_S)
        if not ready or filt.stderr.readline().decode().strip() != FLOWING:
            loop.unload()
            raise RuntimeError(f"the room's chain delivered nothing within {START_S:g} s")
        return loop

    def unload(self) -> None:
        """Stop the chain, by PID, recorder first."""
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


if __name__ == "__main__":
    raise SystemExit(main())
