"""The playback thread: one output stream for the whole session, fed from a bounded queue.

Why one stream, written by our own thread (not a PortAudio callback):

- Opening a device costs milliseconds to tens of milliseconds and restarting it between
  chunks leaves audible gaps; one open stream plays chunks back to back.
- While the queue is empty the thread writes short blocks of silence, so the device never
  underruns (ALSA prints "underrun occurred" on stderr when it does) and the next chunk
  starts within one block. After `IDLE_STOP_S` of silence the stream is stopped (cleanly,
  no underrun) and restarted by the next chunk.
- Writing in blocks of `BLOCK_S` lets `interrupt()` take effect between blocks; the
  thread then aborts the stream, which drops what the device had buffered.

Helpers at the bottom (`trim`, `fade`, `resample`) are pure numpy and shared with the
speaker, which applies them before saving, so a ``--save-audio`` file holds exactly what
is played.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

BLOCK_S = 0.02
"""Granularity of writes: interrupt latency and the start delay of a chunk after silence."""
LATENCY_S = 0.04
"""Device buffer asked for: small enough to stop quickly, large enough not to underrun
when the main thread holds the GIL while rendering Markdown."""
IDLE_STOP_S = 2.0
"""Silence after which the stream is stopped instead of fed with zeros."""
FADE_S = 0.005
"""Fade at chunk edges, against clicks where espeak cuts mid-waveform."""
PORTAUDIO_HINT = "install PortAudio: apt-get install libportaudio2"


@dataclass(frozen=True)
class Clip:
    """A chunk of speech ready for the device."""

    samples: np.ndarray
    """Mono int16 samples, already trimmed and faded."""
    rate: int
    """Their sample rate; resampled here when the device runs at another."""
    pause: float = 0.0
    """Seconds of silence to play after it (after a sentence end)."""

    @property
    def seconds(self) -> float:
        """How long it plays, pause included."""
        return len(self.samples) / self.rate + self.pause


class _Stop:
    """Sentinel: the thread ends."""


class Player:
    """Owns the output stream and the thread writing to it.

    ``on_fault(message)`` is called once, from the playback thread, when the device cannot
    be opened or fails; the player then accepts and drops everything (`failed` is True).
    """

    def __init__(
        self,
        device: str | None = None,
        *,
        rate_hint: int | None = None,
        on_fault: Callable[[str], None] = lambda message: None,
        max_clips: int = 4,
    ) -> None:
        self._device: Any = int(device) if device and device.isdigit() else device
        self._rate_hint = rate_hint
        self._on_fault = on_fault
        self._queue: queue.Queue[tuple[int, Clip] | _Stop] = queue.Queue(maxsize=max_clips)
        self._lock = threading.Condition()
        self._pending = 0
        """Clips accepted and not yet fully written."""
        self._heard_at = 0.0
        """When the last written sample will have left the device."""
        self._queued_s = 0.0
        """Seconds of audio in clips accepted and not yet started."""
        self._playing_until = 0.0
        """When the clip being played will have been written (monotonic)."""
        self._interrupt = threading.Event()
        self._interrupted = threading.Event()
        self._opened = threading.Event()
        self._thread: threading.Thread | None = None
        self.epoch = 0
        """Bumped by `interrupt()`: clips queued under an older epoch are dropped."""
        self._running = False
        """The stream is started (sound or fed silence)."""
        self.failed = False
        self.rate: int | None = None
        """The stream's sample rate, once open."""
        self.progress_at = time.monotonic()
        """When the device last took samples (or a clip was queued): stall detection."""
        self.first_audio_at: float | None = None
        """``time.monotonic()`` when the first clip's first samples were handed to the device."""

    # --- the caller's side ---------------------------------------------------------------

    def start(self) -> None:
        """Open the device in the background (returns at once)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="voicechat-playback", daemon=True
            )
            self._thread.start()

    def wait_open(self, timeout: float) -> bool:
        """True once the stream is open (False on timeout or fault)."""
        return self._opened.wait(timeout) and not self.failed

    def put(self, clip: Clip, epoch: int | None = None) -> bool:
        """Queue a clip, blocking while the queue is full (backpressure).

        ``epoch`` is the `epoch` the caller saw when it decided to play the clip: if an
        `interrupt()` came since, the clip is dropped (here or by the playback thread).
        Returns False when the clip was dropped.
        """
        if epoch is None:
            epoch = self.epoch
        self.start()
        with self._lock:
            if self.failed:
                return False
            self._pending += 1
            self._queued_s += clip.seconds
            if self._pending == 1:
                self.progress_at = time.monotonic()
        while True:
            if self.failed or epoch != self.epoch:
                self._done_with(1, clip.seconds)
                return False
            try:
                self._queue.put((epoch, clip), timeout=0.05)
                return True
            except queue.Full:
                continue

    def drain(self, timeout: float | None = None) -> bool:
        """Block until every queued clip has been heard; False on timeout.

        Waits in short steps so a KeyboardInterrupt in the calling thread is not delayed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._pending > 0 and not self.failed:
                left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if left <= 0:
                    return False
                self._lock.wait(left)
            heard_at = self._heard_at
        while not self.failed:
            left = heard_at - time.monotonic()
            if left <= 0:
                break
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(min(left, 0.05))
        return True

    def interrupt(self, timeout: float = 0.5) -> None:
        """Silence now: drop queued clips and what the device buffered."""
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                self.epoch += 1
            self._drop_queued()
            return
        with self._lock:
            self.epoch += 1
        self._interrupted.clear()
        self._interrupt.set()
        self._drop_queued()
        if self._running:  # wait until the device is silent (the thread acknowledges)
            self._interrupted.wait(timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread and close the device; idempotent."""
        thread = self._thread
        if thread is None:
            return
        self._interrupt.set()
        self._drop_queued()
        with contextlib.suppress(queue.Full):
            self._queue.put(_Stop(), timeout=timeout)
        thread.join(timeout)

    def ahead_s(self) -> float:
        """Seconds of audio still to be heard: queued clips and the rest of the one playing.

        The speaker asks this to notice that speech is about to run dry.
        """
        with self._lock:
            if self.failed:
                return 0.0
            return self._queued_s + max(0.0, self._playing_until - time.monotonic())

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _drop_queued(self) -> None:
        dropped, seconds = 0, 0.0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Stop):
                self._queue.put_nowait(item)  # room: we just took one
                break
            dropped += 1
            seconds += item[1].seconds
        self._done_with(dropped, seconds)

    def _done_with(self, count: int, unplayed_s: float = 0.0) -> None:
        with self._lock:
            self._pending = max(0, self._pending - count)
            self._queued_s = max(0.0, self._queued_s - unplayed_s)
            self._lock.notify_all()

    def _fail(self, message: str) -> None:
        with self._lock:
            self.failed = True
            self._pending = 0
            self._lock.notify_all()
        self._opened.set()
        self._on_fault(message)

    # --- the playback thread ---------------------------------------------------------------

    def _run(self) -> None:
        stream = self._open()
        if stream is None:
            self._discard_until_stop()
            return
        try:
            self._loop(stream)
        except Exception as exc:  # PortAudioError and friends: the device went away
            self._fail(f"audio output failed ({_one_line(exc)})")
            self._discard_until_stop()
        finally:
            try:
                stream.abort()
                stream.close()
            except Exception:
                pass

    def _open(self) -> Any:
        try:
            import sounddevice as sd
        except (OSError, ImportError) as exc:
            self._fail(
                f"no audio output: PortAudio library not found ({_one_line(exc)}): {PORTAUDIO_HINT}"
            )
            return None
        try:
            info = sd.query_devices(self._device, kind="output")
            rate = int(info["default_samplerate"])
            if self._rate_hint:
                try:  # play at the engine's rate when the device takes it: no resampling
                    sd.check_output_settings(
                        self._device, channels=1, dtype="int16", samplerate=self._rate_hint
                    )
                    rate = self._rate_hint
                except Exception:
                    pass
            stream = sd.OutputStream(
                samplerate=rate,
                device=self._device,
                channels=1,
                dtype="int16",
                latency=LATENCY_S,
            )
        except Exception as exc:
            self._fail(_open_error(self._device, exc, sd))
            return None
        self.rate = rate
        self._opened.set()
        return stream

    def _discard_until_stop(self) -> None:
        while not isinstance(item := self._queue.get(), _Stop):
            self._done_with(1, item.seconds if isinstance(item, tuple) else 0.0)

    def _loop(self, stream: Any) -> None:
        import numpy as np

        block = max(1, int(stream.samplerate * BLOCK_S))
        silence = np.zeros(block, dtype=np.int16)
        running = False
        idle_since = time.monotonic()
        while True:
            if self._interrupt.is_set():
                running = self._silence_now(stream, running)
            try:
                item = self._queue.get_nowait() if running else self._queue.get(timeout=0.25)
            except queue.Empty:
                if running and time.monotonic() - idle_since > IDLE_STOP_S:
                    stream.stop()  # plays out what is buffered, then stops: no underrun
                    running = self._running = False
                elif running:
                    stream.write(silence)  # blocks at the device's pace
                continue
            if isinstance(item, _Stop):
                return
            epoch, clip = item
            if epoch != self.epoch:  # queued just as an interrupt came
                self._done_with(1, clip.seconds)
                continue
            if not running:
                stream.start()
                running = self._running = True
            self._play(stream, clip, block)
            self._done_with(1)
            idle_since = time.monotonic()

    def _silence_now(self, stream: Any, running: bool) -> bool:
        if running:
            stream.abort()  # drops the device buffer: sound stops now
        self._running = False
        with self._lock:
            self._playing_until = 0.0
        self._interrupt.clear()
        self._interrupted.set()
        return False

    def _play(self, stream: Any, clip: Clip, block: int) -> None:
        import numpy as np

        samples = resample(clip.samples, clip.rate, int(stream.samplerate))
        pause = np.zeros(int(clip.pause * stream.samplerate), dtype=np.int16)
        data = np.concatenate([samples, pause]) if len(pause) else samples
        with self._lock:
            self._queued_s = max(0.0, self._queued_s - clip.seconds)
            self._playing_until = time.monotonic() + len(data) / stream.samplerate
        for start in range(0, len(data), block):
            if self._interrupt.is_set():
                return
            if self.first_audio_at is None and start == 0 and len(samples):
                self.first_audio_at = time.monotonic()
            stream.write(data[start : start + block])
            with self._lock:
                self.progress_at = time.monotonic()
                self._heard_at = self.progress_at + float(stream.latency)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _open_error(device: Any, exc: BaseException, sd: Any) -> str:
    """One line saying why no device could be opened, and what to do."""
    try:
        names = [d["name"] for d in sd.query_devices() if d["max_output_channels"] > 0]
    except Exception:
        names = []
    if not names:
        return f"no audio output device ({_one_line(exc)}): connect one or start PulseAudio"
    if device is not None:
        return (
            f"tts.device {device!r} cannot be opened ({_one_line(exc)}): "
            f"output devices are {', '.join(repr(n) for n in names)}"
        )
    return f"the default audio output cannot be opened ({_one_line(exc)})"


# --- pure helpers ------------------------------------------------------------------------


def as_samples(pcm: bytes) -> np.ndarray:
    """int16 samples from little-endian PCM bytes."""
    import numpy as np

    return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.int16)


def trim(samples: np.ndarray, rate: int, threshold: int = 64, keep_s: float = 0.01) -> np.ndarray:
    """Cut leading/trailing near-silence (espeak pads both ends), keeping ``keep_s``.

    The lead-in is what delays the first sound; the tail would add to every gap.
    """
    import numpy as np

    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if len(loud) == 0:
        return samples[:0]
    keep = int(rate * keep_s)
    return samples[max(0, loud[0] - keep) : loud[-1] + 1 + keep]


def fade(samples: np.ndarray, rate: int, seconds: float = FADE_S) -> np.ndarray:
    """Raised-cosine fade in and out over ``seconds`` at each end."""
    import numpy as np

    n = min(int(rate * seconds), len(samples) // 2)
    if n == 0:
        return samples
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
    out = samples.astype(np.float32)
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out.astype(np.int16)


def resample(samples: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Linear-interpolation resampling (speech is band-limited well below both rates)."""
    import numpy as np

    if src == dst or len(samples) == 0:
        return samples
    n = round(len(samples) * dst / src)
    positions = np.arange(n) * (src / dst)
    return np.interp(positions, np.arange(len(samples)), samples.astype(np.float32)).astype(
        np.int16
    )
