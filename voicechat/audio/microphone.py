"""The microphone thread: PortAudio's callback into a bounded queue, resampled to 16 kHz.

PortAudio calls `_callback` on its own thread for every block; it only copies the block
and stamps it with its capture time (`SampleClock`: counted samples, not the arrival time,
which jumps with the bursts the sound server delivers in), so it never blocks the audio
thread. The consumer (`frames`) waits on the queue (no polling), resamples to 16 kHz when
the device runs at another rate (a 44.1 or 48 kHz-only microphone is resampled, not
refused) and cuts 512-sample frames for the VAD. `close` puts a sentinel, so a waiting
consumer wakes at once.

A microphone can die while it is read: unplugged, or PulseAudio stopped or restarted.
PortAudio then ends the stream (its finished callback wakes the consumer at once) or, in
the worst case, just stops calling back; the consumer waits only until `STALL_S` after
the last block (`START_S` for the first), so either way `frames` raises `MicrophoneLost`
within a second or two instead of waiting forever. `Microphone.reopen` opens the same
device again once it is back.
"""

from __future__ import annotations

import contextlib
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
STALL_S = 2.0
"""No block for this long from a running stream: the microphone is dead. Blocks come every
32 ms; PulseAudio delivers them in bursts of up to ~0.2 s."""
GRACE_S = 0.3
"""Once that long has passed, the consumer waits this much more before it says so."""
START_S = 5.0
"""A new stream's first block may take this long (1.6-1.9 s here through PulseAudio)."""
CLOSE_S = 2.0
"""Closing a stream waits this long at most (see `Microphone._stop_stream`)."""
STOPPED = "check that it is plugged in and that the sound server runs (pactl info)"
_END = None
_DIED = "died"
"""Put by the stream's finished callback: wakes the consumer to say so."""


class MicrophoneLost(ListenError):
    """The microphone stopped while it was read (unplugged, the sound server ended); exit
    code 11. `Microphone.reopen` opens the same device again when it is back."""


class Microphone:
    """An open input stream; iterate `frames` for 16 kHz frames with their capture time."""

    def __init__(self, device: str | None = None) -> None:
        self.device = devices.parse_device(device)
        self._queue: queue.Queue[tuple[np.ndarray, float] | str | None] = queue.Queue()
        self._stream: Any = None
        self._closed = threading.Event()
        self._generation = 0
        """Counts the streams opened: callbacks of a stream replaced by `reopen` are ignored."""
        self._opened_at = 0.0
        self._last_block = 0.0
        """``time.monotonic()`` of the last block, kept or dropped."""
        self._ended = False
        """The stream ended by itself (PortAudio's finished callback, not `close`)."""
        self.lost = False
        """True once `MicrophoneLost` was raised: `reopen` before reading again."""
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
        hush_c_stderr(True)
        try:
            return self._open(sd)
        except BaseException:
            hush_c_stderr(False)
            raise

    def _open(self, sd: Any) -> Microphone:
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
        self._generation += 1
        generation = self._generation
        self._ended = self.lost = False
        self.live.clear()
        try:
            self._stream = sd.InputStream(
                device=self.device,
                channels=1,
                samplerate=self.rate,
                dtype="float32",
                blocksize=blocksize,
                latency="low",
                callback=lambda *args: self._callback(generation, *args),
                finished_callback=lambda: self._on_finished(generation),
            )
            self._stream.start()
        except (ValueError, sd.PortAudioError) as exc:
            self._stream = None
            raise ListenError(
                f"the microphone {self.name!r} cannot be opened ({reason(exc)}): it may be "
                f"busy in another program; close it, or {DEVICE_HINT}"
            ) from None
        self._opened_at = time.monotonic()
        return self

    def reopen(self) -> Microphone:
        """Open the same device again after `MicrophoneLost`: a new stream and an empty
        queue (``paused`` is kept); iterate `frames` anew. Raises `ListenError` while the
        device is still gone: call it again later (every second or two)."""
        if self._closed.is_set():
            raise ListenError("the microphone was closed")
        self._stop_stream()
        self.drain()
        return self.open()

    def _no_device(self, sd: Any, exc: BaseException) -> str:
        inputs = devices.names(sd, "input")
        if self.device is None or not inputs:
            return f"no microphone found ({reason(exc)}): connect one, or {DEVICE_HINT}"
        return (
            f"input device {self.device!r} not found: use one of "
            f"{', '.join(repr(n) for n in inputs[:6])} (stt.device or --input-device)"
        )

    def _callback(
        self, generation: int, indata: Any, frames: int, time_info: Any, status: Any
    ) -> None:
        if generation != self._generation:
            return  # a stream `reopen` replaced
        now = time.monotonic()
        self._last_block = now
        self.live.set()
        at = self.clock.end_of(frames, now)  # every block counts, kept or not
        if self.paused:
            return
        try:
            self._queue.put_nowait((indata[:, 0].copy(), at))
        except queue.Full:
            self.dropped += 1

    def _on_finished(self, generation: int) -> None:
        """PortAudio ended the stream: by `close` (nothing to do), or by itself (it died)."""
        if generation != self._generation or self._closed.is_set() or self._stream is None:
            return
        self._ended = True
        with contextlib.suppress(queue.Full):  # a full queue: the consumer sees it at the end
            self._queue.put_nowait(_DIED)

    def blocks(self) -> Iterator[tuple[np.ndarray, float]]:
        """Raw blocks at the device rate and the capture time of their last sample, until
        `close`; `MicrophoneLost` when the stream dies (what came before it is given first)."""
        while True:
            try:
                item = self._queue.get(timeout=max(0.01, self._due() - time.monotonic()))
            except queue.Empty:
                if self._closed.is_set() or not self._dead():
                    continue
                try:  # one more moment: a thread that held the GIL may have held back the callback
                    item = self._queue.get(timeout=GRACE_S)
                except queue.Empty:
                    if self._closed.is_set() or not self._dead():
                        continue
                    raise self._lost() from None
            if item is _END:
                return
            if isinstance(item, str):  # _DIED
                raise self._lost()
            yield item

    def _due(self) -> float:
        """When the stream counts as dead if no block has come by then."""
        if self.live.is_set():
            return self._last_block + STALL_S
        return self._opened_at + START_S

    def _dead(self) -> bool:
        stream = self._stream
        if self._ended or stream is None:
            return True
        try:
            if not stream.active:
                return True
        except Exception:  # PortAudio refuses to answer about it: dead as well
            return True
        return time.monotonic() >= self._due()

    def _lost(self) -> MicrophoneLost:
        self.lost = True
        return MicrophoneLost(f"the microphone {self.name!r} stopped: {STOPPED}")

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
            if item is _END or item == _DIED:
                with contextlib.suppress(queue.Full):
                    self._queue.put_nowait(item)
                return

    def close(self) -> None:
        """Stop the stream and wake the consumer; idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._stop_stream()
        self.drain()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_END)

    def _stop_stream(self) -> None:
        """Abort and close the stream, waiting at most `CLOSE_S`: a frozen sound server
        holds PortAudio's abort until it runs again (it may never)."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        self._generation += 1  # its last callbacks (the finished one too) are ignored
        done = threading.Event()

        def stop() -> None:
            try:
                stream.abort()
                stream.close()
            except Exception:
                pass
            done.set()

        threading.Thread(target=stop, name="microphone-close", daemon=True).start()
        if done.wait(CLOSE_S):
            hush_c_stderr(False)
        else:
            abandon(stream)

    def __enter__(self) -> Microphone:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


_ABANDONED: list[Any] = []
"""Streams whose close did not return (kept: freeing one PortAudio still uses would crash)."""


def abandon(stream: Any) -> None:
    """Leave a stream that cannot be closed, and keep PortAudio from being shut down at exit.

    sounddevice terminates PortAudio when Python exits, which closes every stream again:
    on the stuck one that waits forever for a thread already gone (seen with PulseAudio
    frozen). The process is ending; the system frees what PortAudio holds.
    """
    import atexit

    _ABANDONED.append(stream)
    with contextlib.suppress(devices.NoSoundLibrary):
        handler = getattr(devices.sounddevice(), "_exit_handler", None)
        if handler is not None:
            atexit.unregister(handler)


_hush_lock = threading.Lock()
_hush_users = 0
_hush_saved: int | None = None
_hush_null: int | None = None


def hush_c_stderr(on: bool) -> None:
    """While a microphone is open, C's ``stderr`` stream points at /dev/null.

    When a stream dies, PortAudio and ALSA print their own diagnostics through it ("Expression
    'alsa_snd_pcm_poll_descriptors_revents(...)' failed in 'src/hostapi/alsa/pa_linux_alsa.c'",
    "ALSA lib pulse.c:242:(pulse_connect) PulseAudio: Unable to connect"), around the one
    line that says what to do. Only the C library's stdio stream changes, not file
    descriptor 2: Python's own output is untouched. Calls nest (one per open stream); on a
    C library without a ``stderr`` variable nothing changes.
    """
    global _hush_users, _hush_saved, _hush_null
    with _hush_lock:
        _hush_users += 1 if on else -1
        if _hush_users < 0:
            _hush_users = 0
        if on and _hush_users == 1:
            _hush_saved = _c_stderr(_hush_null_file())
        elif not on and _hush_users == 0 and _hush_saved is not None:
            _c_stderr(_hush_saved)
            _hush_saved = None


def _hush_null_file() -> int | None:
    """A C ``FILE *`` on /dev/null (opened once, never closed: a thread may still use it)."""
    global _hush_null
    if _hush_null is None:
        try:
            import ctypes
            import os

            libc = ctypes.CDLL(None)
            libc.fopen.restype = ctypes.c_void_p
            libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
            _hush_null = libc.fopen(os.devnull.encode(), b"w") or None
        except (OSError, AttributeError):
            return None
    return _hush_null


def _c_stderr(value: int | None) -> int | None:
    """Point C's ``stderr`` at ``value`` (a ``FILE *``); the old value, or None if unchanged."""
    if value is None:
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        for name in ("stderr", "__stderrp"):  # glibc/musl, macOS
            with contextlib.suppress(ValueError):
                variable = ctypes.c_void_p.in_dll(libc, name)
                old = variable.value
                variable.value = value
                return old
    except OSError:
        pass
    return None


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
