"""The playback thread: one output stream for a session, fed from a bounded `Stage`.

Why one stream, written by our own thread (not a PortAudio callback):

- Opening a device costs milliseconds to tens of milliseconds and restarting it between
  chunks leaves audible gaps; one open stream plays chunks back to back.
- While nothing is queued after a clip the thread writes short blocks of silence (paced by
  the device), so the device never underruns (ALSA prints "underrun occurred" on stderr when
  it does) and the next chunk starts within one block. After `IDLE_STOP_S` of silence the
  stream is stopped (cleanly, no underrun) and the thread sleeps in `Stage.get` until the
  next clip: an idle speaker costs no wake-ups at all.
- Writing in blocks of `BLOCK_S` lets `interrupt()` take effect between blocks: the thread
  writes a short fade-out and stops the stream, so the voice ends within ~0.1 s without a
  click.
- The thread records what it wrote, piece by piece: `heard()` says how much of each piece
  has left the device (written minus what the device still buffers).

A device fault (no device, PulseAudio gone) is reported once through ``on_fault``; the
player then refuses clips (`failed`) and its thread ends. The speaker makes a new player
for the next turn, which reopens the device once it is back.

PortAudio is terminated by sounddevice's own ``atexit`` handler; a thread still writing
then corrupts the heap. `_shutdown` (registered after sounddevice, so it runs first) stops
and joins every playback thread, and keeps PortAudio alive if one could not be joined.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voicechat.audio import devices
from voicechat.audio.pcm import fade_out, resample, silence
from voicechat.checks import Check
from voicechat.redact import reason
from voicechat.stage import STOP, Stage, block_signals

if TYPE_CHECKING:
    import numpy as np

    from voicechat.audio.echo import PlayedTap
    from voicechat.settings import TTSSettings

BLOCK_S = 0.02
"""Granularity of writes: interrupt latency and the start delay of a chunk after silence."""
LATENCY_S = 0.04
"""Device buffer asked for: small enough to stop quickly, large enough not to underrun
when the main thread holds the GIL while rendering Markdown."""
IDLE_STOP_S = 2.0
"""Silence after which the stream is stopped instead of fed with zeros."""
INTERRUPT_FADE_S = 0.008
"""Fade-out written when interrupted: shorter than a syllable, long enough not to click."""
ACK_S = 0.5
"""Longest `interrupt()` waits for the thread to confirm silence (a bound, not a poll)."""
PROBE_S = 0.1
"""Seconds of silence the device check writes to prove the device accepts audio."""


@dataclass(frozen=True)
class Clip:
    """A chunk of speech ready for the device."""

    samples: np.ndarray
    """Mono int16 samples, already trimmed and faded."""
    rate: int
    """Their sample rate; resampled here when the device runs at another."""
    pause: float = 0.0
    """Seconds of silence to play after it (after a sentence end)."""
    text: str = ""
    """What it says: reported by `Player.heard` once it started playing."""

    @property
    def seconds(self) -> float:
        """How long it plays, pause included."""
        return len(self.samples) / self.rate + self.pause


@dataclass(frozen=True)
class Heard:
    """How much of one piece of speech the listener has heard."""

    text: str
    """The piece's text."""
    played_s: float
    """Seconds of it that have left the device (all of it once finished)."""
    total_s: float
    """Its whole length in seconds (the pause after it not counted)."""


@dataclass
class _Playing:
    """The playback thread's record of a piece it started writing (guarded by the stage lock)."""

    text: str
    total_s: float
    written_s: float = 0.0
    written_at: float = 0.0
    latency_s: float = 0.0
    final: bool = False
    """Set when the piece ended (played out or faded): nothing of it is buffered any more."""

    def heard(self, now: float) -> Heard:
        buffered = 0.0 if self.final else max(0.0, self.written_at + self.latency_s - now)
        played = min(self.total_s, max(0.0, self.written_s - buffered))
        return Heard(self.text, round(played, 3), round(self.total_s, 3))


@dataclass
class _Live:
    players: weakref.WeakSet[Player] = field(default_factory=weakref.WeakSet)
    registered: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


_LIVE = _Live()


class Player:
    """Owns the output stream and the thread writing to it.

    ``on_fault(message)`` is called once, from the playback thread, when the device cannot
    be opened or fails; the player then drops everything (`failed` is True) and its thread
    ends.
    """

    def __init__(
        self,
        device: str | None = None,
        *,
        rate_hint: int | None = None,
        on_fault: Callable[[str], None] = lambda message: None,
        max_clips: int = 4,
    ) -> None:
        self._device = devices.parse_device(device)
        self._rate_hint = rate_hint
        self._on_fault = on_fault
        self._stage: Stage[Clip] = Stage(max_clips)
        # state below is guarded by the stage's lock (self._stage.cond)
        self._heard_at = 0.0
        """When the last written sample will have left the device."""
        self._playing_until = 0.0
        """When the clip being played will have been written (monotonic)."""
        self._playing: Clip | None = None
        """The clip being written (its end is `_playing_until`)."""
        self._sounding: int | None = None
        """Generation of the clip being written, ``None`` while no speech is written."""
        self._log: list[_Playing] = []
        self._opened = threading.Event()
        self._thread: threading.Thread | None = None
        self._loops = 0
        self._ended = False
        """Set by the thread as its very last step (after closing the stream)."""
        self.failed = False
        self.rate: int | None = None
        """The stream's sample rate, once open."""
        self.progress_at = time.monotonic()
        """When the device last took samples (or a clip was queued): stall detection."""
        self.underruns = 0
        """Times the device ran dry in the middle of a clip (the machine was too busy to feed
        it in time): each one is an audible gap. Tests read it to tell load from a bug."""
        self.first_audio_at: float | None = None
        """``time.monotonic()`` when the first clip's first samples were handed to the device."""
        self.tap: PlayedTap | None = None
        """Where each block written goes too, with when it is heard: the echo reference for
        barge-in (voicechat/audio/echo.py); set before `start`. While set, the stream is never
        stopped (not when idle, not after an interrupt): silence is written instead, so the
        reference stays one unbroken sample clock and the echo canceller stays converged."""

    # --- the caller's side ---------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Bumped by `interrupt()`: clips queued under an older generation are dropped."""
        return self._stage.generation

    @property
    def wakeups(self) -> int:
        """Times the thread woke or went round its loop: what idling costs (tests count it)."""
        return self._stage.wakeups + self._loops

    def start(self) -> None:
        """Open the device in the background (returns at once)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="voicechat-playback", daemon=True
            )
            with _LIVE.lock:
                _LIVE.players.add(self)
            self._thread.start()

    def wait_open(self, timeout: float) -> bool:
        """True once the stream is open (False on timeout or fault)."""
        return self._opened.wait(timeout) and not self.failed

    def put(self, clip: Clip, generation: int | None = None) -> bool:
        """Queue a clip, blocking while the queue is full (backpressure).

        ``generation`` is the `generation` the caller saw when it decided to play the clip:
        if an `interrupt()` came since, the clip is dropped (here or by the playback
        thread). Returns False when the clip was dropped.
        """
        self.start()
        with self._stage.cond:
            if self._stage.pending == 0:
                self.progress_at = time.monotonic()
        return self._stage.put(clip, generation)

    def drain(self, timeout: float | None = None) -> bool:
        """Block until every queued clip has been heard; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._stage.join(timeout):
            return False
        generation = self._stage.generation
        with self._stage.cond:
            heard_at = self._heard_at
        # the last block is still in the device buffer: wait until it has left it (an
        # interrupt or a fault ends the wait at once)
        until = heard_at if deadline is None else min(heard_at, deadline)
        cut = self._stage.wait_for(
            lambda: self.failed or self._stage.generation != generation,
            max(0.0, until - time.monotonic()),
        )
        return cut or deadline is None or heard_at <= deadline

    def interrupt(self) -> None:
        """Silence now (a short fade): drop queued clips and stop the one playing."""
        generation = self._stage.interrupt()
        thread = self._thread
        if thread is None or not self.alive or thread is threading.current_thread():
            return
        # the thread confirms once the fade has been played and the stream stopped
        self._stage.wait_for(
            lambda: self._sounding is None or self._sounding >= generation or self.failed,
            ACK_S,
        )

    def close(self, timeout: float = 2.0) -> bool:
        """Stop the thread (fading out what plays) and close the device; idempotent.

        True when the thread has ended."""
        self._stage.stop()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        # not Thread.join: a Ctrl+C interrupting join() marks a live thread as stopped
        # (CPython 3.11, bpo-45274's fix), and PortAudio was then terminated under it
        return self._stage.wait_for(lambda: self._ended, timeout)

    def ahead_s(self) -> float:
        """Seconds of audio still to be heard: queued clips and the rest of the one playing.

        The speaker asks this to notice that speech is about to run dry.
        """
        with self._stage.cond:
            if self.failed:
                return 0.0
            queued = sum(clip.seconds for clip in self._stage.queued())
            current = self._stage.current
            if current is not None and current is not self._playing:
                queued += current.seconds  # taken from the queue, not started yet
            return queued + max(0.0, self._playing_until - time.monotonic())

    def heard(self) -> list[Heard]:
        """The pieces that started playing since the last `forget_heard`, in order."""
        now = time.monotonic()
        with self._stage.cond:
            return [piece.heard(now) for piece in self._log]

    def forget_heard(self) -> None:
        """Start a new record of what is heard, and of when it is first heard (a new turn)."""
        with self._stage.cond:
            self._log = []
            self.first_audio_at = None

    @property
    def pending(self) -> int:
        """Clips accepted and not yet fully written."""
        return self._stage.pending

    @property
    def alive(self) -> bool:
        """The thread was started and has not ended."""
        with self._stage.cond:
            return self._thread is not None and not self._ended

    def _fail(self, message: str) -> None:
        with self._stage.cond:
            self.failed = True
            self._sounding = None
            self._playing_until = 0.0
        self._stage.break_()
        self._opened.set()
        self._on_fault(message)

    # --- the playback thread ---------------------------------------------------------------

    def _run(self) -> None:
        block_signals()
        stream = self._open()
        if stream is None:
            self._end()
            return
        try:
            self._loop(stream)
        except Exception as exc:  # PortAudioError and friends: the device went away
            self._fail(f"audio output failed ({reason(exc)})")
        finally:
            with contextlib.suppress(Exception):
                stream.abort()
            with contextlib.suppress(Exception):
                stream.close()
            self._end()

    def _end(self) -> None:
        with self._stage.cond:
            self._ended = True
            self._stage.cond.notify_all()

    def _open(self) -> Any:
        try:
            sd = devices.sounddevice()
        except devices.NoSoundLibrary as exc:
            self._fail(f"no audio output: {exc.detail}: {exc.fix}")
            return None
        _register_shutdown()
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
            self._fail(devices.output_problem(self._device, exc, sd).warning)
            return None
        self.rate = rate
        self._opened.set()
        return stream

    def _loop(self, stream: Any) -> None:
        rate = int(stream.samplerate)
        block = max(1, int(rate * BLOCK_S))
        quiet = silence(BLOCK_S, rate)
        stage = self._stage
        running = False
        idle_since = time.monotonic()
        while True:
            self._loops += 1
            entry = stage.get_nowait() if running else stage.get()
            if entry is STOP:
                return
            if entry is None:  # the stream runs, nothing to play: keep it fed, or stop it
                if time.monotonic() - idle_since > IDLE_STOP_S and self.tap is None:
                    stream.stop()  # plays out what is buffered, then stops: no underrun
                    running = False
                else:
                    dry = stream.write(quiet)  # blocks at the device's pace
                    if self.tap is not None:  # keeps the echo reference one sample clock
                        at = time.monotonic() + float(stream.latency)
                        self.tap.push(quiet, rate, at, restart=bool(dry))
                continue
            generation, clip = entry
            try:
                if generation != stage.generation:  # queued just as an interrupt came
                    continue
                if not running:
                    stream.start()
                    running = True
                if not self._play(stream, clip, generation, block):
                    if self.tap is None:
                        stream.stop()  # plays the fade-out that was written, then silence
                        running = False
                    self._silent()
            finally:
                stage.done()
            idle_since = time.monotonic()

    def _play(self, stream: Any, clip: Clip, generation: int, block: int) -> bool:
        """Write one clip block by block; False when an interrupt cut it (fade written)."""
        import numpy as np

        rate = int(stream.samplerate)
        samples = resample(clip.samples, clip.rate, rate)
        pause = silence(clip.pause, rate)
        data = np.concatenate([samples, pause]) if len(pause) else samples
        piece = _Playing(clip.text, len(samples) / rate, latency_s=float(stream.latency))
        with self._stage.cond:
            self._playing_until = time.monotonic() + len(data) / rate
            self._playing = clip
            self._sounding = generation
            if len(samples):
                self._log.append(piece)
        for start in range(0, len(data), block):
            if self._stage.generation != generation:
                tail = fade_out(data[start:], rate, INTERRUPT_FADE_S)
                if len(tail):
                    dry = stream.write(tail)
                    if self.tap is not None:
                        at = time.monotonic() + piece.latency_s
                        self.tap.push(tail, rate, at, restart=bool(dry))
                with self._stage.cond:
                    piece.written_s = min(piece.total_s, piece.written_s + len(tail) / rate)
                    piece.final = True
                return False
            if self.first_audio_at is None and start == 0 and len(samples):
                self.first_audio_at = time.monotonic()
            dry = bool(stream.write(data[start : start + block]))
            if dry and start:
                self.underruns += 1  # the device ran dry mid-clip: a gap was heard
            now = time.monotonic()
            if self.tap is not None:  # after running dry the echo's timing has moved
                self.tap.push(data[start : start + block], rate, now + piece.latency_s, restart=dry)
            with self._stage.cond:
                self.progress_at = now
                self._heard_at = now + piece.latency_s
                piece.written_s = min(piece.total_s, (start + block) / rate)
                piece.written_at = now
        with self._stage.cond:
            self._sounding = None
            self._stage.cond.notify_all()
        return True

    def _silent(self) -> None:
        """The stream stopped after an interrupt: tell `interrupt()` the voice is silent."""
        with self._stage.cond:
            self._sounding = None
            self._playing_until = 0.0
            self._heard_at = 0.0
            self._stage.cond.notify_all()


# --- shutdown ordering -----------------------------------------------------------------------


def _register_shutdown() -> None:
    """Run `_shutdown` before sounddevice's atexit handler (atexit runs last-in first-out)."""
    with _LIVE.lock:
        if not _LIVE.registered:
            atexit.register(_shutdown)
            _LIVE.registered = True


def _shutdown(timeout: float = 2.0) -> None:
    """Stop and join every playback thread before PortAudio is terminated.

    Further Ctrl+C presses are ignored from here on (the process is leaving anyway): one
    arriving mid-join used to skip the join and terminate PortAudio under a writing thread.
    """
    import signal
    import sys

    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    with _LIVE.lock:
        players = list(_LIVE.players)
    stuck = [player for player in players if not player.close(timeout)]
    if stuck:  # terminating PortAudio under a thread still inside a write crashes the process
        sd = sys.modules.get("sounddevice")
        handler = getattr(sd, "_exit_handler", None)
        if handler is not None:
            atexit.unregister(handler)


# --- the device check ------------------------------------------------------------------------


def checks(settings: TTSSettings) -> Iterator[Check]:
    """The doctor's "audio output" row: the device exists and accepts audio (a short silent
    write through PortAudio). Run it in a fresh process: PortAudio lists devices once."""
    if settings.engine == "none":
        yield Check("audio output", None, "not needed: tts.engine is none")
        return
    try:
        sd = devices.sounddevice()
    except devices.NoSoundLibrary as exc:
        yield Check("audio output", False, exc.detail, exc.fix)
        return
    device = devices.parse_device(settings.device)
    try:
        info = sd.query_devices(device, kind="output")
        rate = int(info["default_samplerate"])
        with sd.OutputStream(samplerate=rate, device=device, channels=1, dtype="int16") as stream:
            stream.write(silence(PROBE_S, rate))
    except Exception as exc:  # PortAudioError, ValueError for an unknown name
        problem = devices.output_problem(settings.device, exc, sd)
        yield Check("audio output", False, problem.detail, problem.fix)
        return
    yield Check("audio output", True, f"{info['name']} accepts audio ({rate} Hz)")
