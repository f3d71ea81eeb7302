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

import queue
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from voicechat.audio import FRAME, RATE, devices
from voicechat.audio.pcm import Resampler, level_db
from voicechat.audio.sampleclock import SampleClock
from voicechat.checks import Check
from voicechat.errors import ListenError
from voicechat.redact import reason

if TYPE_CHECKING:
    from voicechat.settings import STTSettings

QUEUE_S = 3.0
"""Seconds of audio the queue holds; a consumer further behind loses the newest blocks
(their capture times keep the gap: see `SampleClock`)."""
DEVICE_HINT = "choose one with stt.device or --input-device (see `voicechat devices`)"
_END = None


class Microphone:
    """An open input stream; iterate `frames` for 16 kHz frames with their capture time."""

    def __init__(self, device: str | None = None) -> None:
        self.device = devices.parse_device(device)
        self._queue: queue.Queue[tuple[np.ndarray, float] | None] = queue.Queue()
        self._stream: Any = None
        self._closed = threading.Event()
        self.live = threading.Event()
        """Set when the first block arrived: audio flows (opening can take a second)."""
        self.paused = False
        """While True, blocks are dropped in the callback (half-duplex: we are speaking)."""
        self.dropped = 0
        """Blocks lost because the consumer fell more than `QUEUE_S` behind."""
        self.rate = RATE
        self.name = ""
        self.clock = SampleClock(RATE)
        """Capture times of the blocks (its ``moved`` counts lost audio: diagnostics)."""

    def open(self) -> Microphone:
        """Open the device; a `ListenError` with the fix when there is none or it is busy."""
        try:
            sd = devices.sounddevice()
        except devices.NoSoundLibrary as exc:
            raise ListenError(str(exc)) from None
        try:
            info = sd.query_devices(self.device, kind="input")
        except (ValueError, sd.PortAudioError) as exc:
            raise ListenError(self._no_device(sd, exc)) from None
        self.name = str(info["name"])
        try:
            sd.check_input_settings(self.device, channels=1, samplerate=RATE, dtype="float32")
            self.rate = RATE
        except (ValueError, sd.PortAudioError):
            self.rate = int(info["default_samplerate"])  # resampled in `frames`
        blocksize = max(1, round(self.rate * FRAME / RATE))
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
                f"the microphone {self.name!r} cannot be opened ({reason(exc)}): it may be "
                f"busy in another program; close it, or {DEVICE_HINT}"
            ) from None
        return self

    def _no_device(self, sd: Any, exc: BaseException) -> str:
        inputs = devices.names(sd, "input")
        if self.device is None or not inputs:
            return f"no microphone found ({reason(exc)}): connect one, or {DEVICE_HINT}"
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
        resample = Resampler(self.rate, RATE)
        pending = np.zeros(0, dtype=np.float32)
        for block, captured in self.blocks():
            pending = np.concatenate([pending, resample(block)])
            while len(pending) >= FRAME:
                frame, pending = pending[:FRAME], pending[FRAME:]
                # the block's last sample was captured at `captured`; this frame ended
                # len(pending) samples before
                yield frame, captured - len(pending) / RATE

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


def record(seconds: float, device: str | None = None) -> tuple[np.ndarray, Microphone]:
    """Record ``seconds`` of 16 kHz audio (the doctor's level check)."""
    mic = Microphone(device)
    with mic:
        got: list[np.ndarray] = []
        need = int(seconds * RATE)
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
