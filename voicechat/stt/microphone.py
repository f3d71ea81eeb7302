"""The microphone thread: PortAudio's callback into a bounded queue, resampled to 16 kHz.

PortAudio calls `_callback` on its own thread for every block; it only copies the block
and stamps it with its capture time (`SampleClock`: counted samples, not the arrival time,
which jumps with the bursts the sound server delivers in), so it never blocks the audio
thread. The consumer (`frames`) waits on the queue (no polling), resamples to 16 kHz when
the device runs at another rate (a 44.1 or 48 kHz-only microphone is resampled, not
refused) and cuts 512-sample frames for the VAD. `close` puts a sentinel, so a waiting
consumer wakes at once.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from voicechat.checks import Check
from voicechat.errors import ListenError
from voicechat.sampleclock import SampleClock
from voicechat.stt import SAMPLE_RATE
from voicechat.stt.vad import FRAME

if TYPE_CHECKING:
    from voicechat.settings import STTSettings

QUEUE_S = 3.0
"""Seconds of audio the queue holds; a consumer further behind loses the newest blocks
(their capture times keep the gap: see `SampleClock`)."""
PORTAUDIO_FIX = "apt-get install libportaudio2"
DEVICE_HINT = "choose one with stt.device or --input-device (see `voicechat devices`)"
_END = None


def import_sounddevice() -> Any:
    """sounddevice, or a `ListenError` saying what is missing."""
    try:
        import sounddevice as sd
    except OSError:  # the library is there, PortAudio is not
        raise ListenError(f"PortAudio is not installed: {PORTAUDIO_FIX}") from None
    except ImportError:
        raise ListenError("sounddevice is not installed: pip install sounddevice") from None
    return sd


def parse_device(device: str | None) -> int | str | None:
    """A device index given as text becomes an int; names stay names (sounddevice matches parts)."""
    if device is None or device == "":
        return None
    return int(device) if device.strip().isdigit() else device


class Resampler:
    """Streaming resampler to 16 kHz: a box filter against aliasing, then linear interpolation.

    Good enough for speech recognition (Whisper itself works on an 80-band mel spectrum up
    to 8 kHz); the state carried between blocks keeps block edges seamless.

    >>> r = Resampler(48000)
    >>> sum(len(r(np.zeros(480, dtype=np.float32))) for _ in range(100))
    16000
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.step = rate / SAMPLE_RATE
        self.width = max(1, math.floor(self.step))
        self._tail = np.zeros(0, dtype=np.float32)
        self._pos = 0.0  # position of the next output sample in the carried buffer

    def __call__(self, block: np.ndarray) -> np.ndarray:
        if self.rate == SAMPLE_RATE:
            return block
        buf = np.concatenate([self._tail, block])
        if self.width > 1:  # moving average over the decimation width
            kernel = np.ones(self.width, dtype=np.float32) / self.width
            smooth = np.convolve(buf, kernel, mode="full")[: len(buf)]
        else:
            smooth = buf
        last = len(buf) - 1
        count = max(0, math.floor((last - self._pos) / self.step) + 1)
        positions = self._pos + np.arange(count) * self.step
        out = np.interp(positions, np.arange(len(buf)), smooth).astype(np.float32)
        next_pos = self._pos + count * self.step
        keep_from = max(0, min(math.floor(next_pos) - self.width, len(buf)))
        self._tail = buf[keep_from:]
        self._pos = next_pos - keep_from
        return out


class Microphone:
    """An open input stream; iterate `frames` for 16 kHz frames with their capture time."""

    def __init__(self, device: str | None = None) -> None:
        self.device = parse_device(device)
        self._queue: queue.Queue[tuple[np.ndarray, float] | None] = queue.Queue()
        self._stream: Any = None
        self._closed = threading.Event()
        self.live = threading.Event()
        """Set when the first block arrived: audio flows (opening can take a second)."""
        self.paused = False
        """While True, blocks are dropped in the callback (half-duplex: we are speaking)."""
        self.dropped = 0
        """Blocks lost because the consumer fell more than `QUEUE_S` behind."""
        self.rate = SAMPLE_RATE
        self.name = ""
        self.clock = SampleClock(SAMPLE_RATE)
        """Capture times of the blocks (its ``moved`` counts lost audio: diagnostics)."""

    def open(self) -> Microphone:
        """Open the device; a `ListenError` with the fix when there is none or it is busy."""
        sd = import_sounddevice()
        try:
            info = sd.query_devices(self.device, kind="input")
        except (ValueError, sd.PortAudioError) as exc:
            raise ListenError(self._no_device(sd, exc)) from None
        self.name = str(info["name"])
        try:
            sd.check_input_settings(
                self.device, channels=1, samplerate=SAMPLE_RATE, dtype="float32"
            )
            self.rate = SAMPLE_RATE
        except (ValueError, sd.PortAudioError):
            self.rate = int(info["default_samplerate"])  # resampled in `frames`
        blocksize = max(1, round(self.rate * FRAME / SAMPLE_RATE))
        self.clock = SampleClock(self.rate)
        self._queue = queue.Queue(maxsize=max(4, round(QUEUE_S * self.rate / blocksize)))
        try:
            self._stream = sd.InputStream(
                device=self.device,
                channels=1,
                samplerate=self.rate,
                dtype="float32",
                blocksize=blocksize,
                latency="low",
                callback=self._callback,
            )
            self._stream.start()
        except (ValueError, sd.PortAudioError) as exc:
            self._stream = None
            raise ListenError(
                f"the microphone {self.name!r} cannot be opened ({_one_line(exc)}): it may be "
                f"busy in another program; close it, or {DEVICE_HINT}"
            ) from None
        return self

    def _no_device(self, sd: Any, exc: BaseException) -> str:
        try:
            inputs = [d["name"] for d in sd.query_devices() if d["max_input_channels"] > 0]
        except Exception:
            inputs = []
        if self.device is None or not inputs:
            return f"no microphone found ({_one_line(exc)}): connect one, or {DEVICE_HINT}"
        return (
            f"input device {self.device!r} not found: use one of "
            f"{', '.join(repr(n) for n in inputs[:6])} (stt.device or --input-device)"
        )

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        self.live.set()
        at = self.clock.end_of(frames, time.monotonic())  # every block counts, kept or not
        if self.paused:
            return
        try:
            self._queue.put_nowait((indata[:, 0].copy(), at))
        except queue.Full:
            self.dropped += 1

    def blocks(self) -> Iterator[tuple[np.ndarray, float]]:
        """Raw blocks at the device rate and the capture time of their last sample, until
        `close`."""
        while True:
            item = self._queue.get()
            if item is _END:
                return
            yield item

    def frames(self) -> Iterator[tuple[np.ndarray, float]]:
        """`FRAME`-sample frames at 16 kHz and the capture time of their last sample."""
        resample = Resampler(self.rate)
        pending = np.zeros(0, dtype=np.float32)
        for block, captured in self.blocks():
            pending = np.concatenate([pending, resample(block)])
            while len(pending) >= FRAME:
                frame, pending = pending[:FRAME], pending[FRAME:]
                # the block's last sample was captured at `captured`; this frame ended
                # len(pending) samples before
                yield frame, captured - len(pending) / SAMPLE_RATE

    def drain(self) -> None:
        """Forget blocks queued so far (after a pause, before listening again)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is _END:
                self._queue.put_nowait(_END)
                return

    def close(self) -> None:
        """Stop the stream and wake the consumer; idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception:
                pass
        self.drain()
        self._queue.put(_END)

    def __enter__(self) -> Microphone:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def level_db(samples: np.ndarray) -> float:
    """RMS level in dBFS (-100 for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    return 20 * math.log10(rms) if rms > 1e-5 else -100.0


def record(seconds: float, device: str | None = None) -> tuple[np.ndarray, Microphone]:
    """Record ``seconds`` of 16 kHz audio (the doctor's level check)."""
    mic = Microphone(device)
    with mic:
        got: list[np.ndarray] = []
        need = int(seconds * SAMPLE_RATE)
        for frame, _ in mic.frames():
            got.append(frame)
            if len(got) * FRAME >= need:
                break
    return (np.concatenate(got) if got else np.zeros(0, dtype=np.float32)), mic


SILENT_DB = -70.0
"""Below this level for a whole second, a microphone is muted or unplugged."""


def check_microphone(settings: STTSettings, seconds: float = 1.0) -> Check:
    """Doctor row: the input device opens and hears something (its level over ~1 s)."""
    try:
        samples, mic = record(seconds, settings.device)
    except ListenError as exc:
        text = str(exc)
        detail, _, fix = text.partition(": ")
        return Check("microphone", False, detail, fix)
    level = level_db(samples)
    where = f"{mic.name!r} at {mic.rate} Hz"
    if level <= SILENT_DB:
        return Check(
            "microphone",
            False,
            f"{where}: silent for {seconds:.0f} s ({level:.0f} dBFS): muted?",
            "unmute it (alsamixer / pavucontrol) or " + DEVICE_HINT,
        )
    return Check("microphone", True, f"{where}, level {level:.0f} dBFS over {seconds:.0f} s")


def list_devices() -> list[dict[str, Any]]:
    """Every PortAudio device with its index, name, channels and default rate."""
    sd = import_sounddevice()
    devices = []
    try:
        default_in, default_out = sd.default.device
    except Exception:
        default_in = default_out = -1
    for index, info in enumerate(sd.query_devices()):
        devices.append(
            {
                "index": index,
                "name": str(info["name"]),
                "inputs": int(info["max_input_channels"]),
                "outputs": int(info["max_output_channels"]),
                "rate": int(info["default_samplerate"]),
                "default_input": index == default_in,
                "default_output": index == default_out,
            }
        )
    return devices


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] or type(exc).__name__
