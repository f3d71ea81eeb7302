"""Echo cancellation: take what we played out of what the microphone hears.

voicechat writes every sample it plays, so it knows what the microphone's echo contains.
`PlayedTap` is the reference: the playback thread pushes each block it wrote with the time
it will have left the device; the listener reads the reference for any stretch of time
(zeros where nothing played). `EchoCanceller` aligns the reference with the microphone
(cross-correlation, `estimate_delay`) and runs Speex's adaptive echo canceller (MDF) plus
its residual echo suppressor, frame by frame.

Why libspeexdsp through ctypes (Debian/Ubuntu ``libspeexdsp1``, BSD-3, on amd64 and arm64,
the canceller PulseAudio's ``module-echo-cancel`` also offers): of the Python packages,
``aec-audio-processing`` (WebRTC APM) ships only a source tarball needing Python >= 3.11 and
a C++ build (JetPack 6 has 3.10), ``pyaec`` 1.0.1 has an x86-64 wheel only and no licence,
and ``speexdsp-aec`` is this same ctypes idea under a "Proprietary" licence. The C API used
here has not changed since 2008.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voicechat.audio.aec3 import AEC3
from voicechat.audio.pcm import Resampler, db, rms

RATE = 16000
"""The canceller, the VAD and the recognizer all work at 16 kHz."""
FRAME = 256
"""Samples per canceller step (16 ms): what Speex is tuned for at 16 kHz."""
TAIL_S = 0.25
"""Echo tail the adaptive filter models after alignment (room reverberation + jitter)."""
TAP_S = 8.0
"""Seconds of played audio the tap keeps (more than any alignment or utterance needs)."""
REANCHOR_S = 0.2
"""A played block whose time stamp is off the running sample clock by more than this starts
a new stretch (the stream was stopped and restarted). Smaller offsets are jitter: PulseAudio
takes audio in fragments, so write-return times wobble by ~50 ms around the sample clock.
(The microphone's blocks come stamped on their own sample clock: `SampleClock`.)"""
MAX_DELAY_S = 0.5
"""Longest echo delay the alignment searches (device buffers + acoustic path)."""
MAX_LEAD_S = 0.15
"""How much earlier than the reference's time stamps the echo may come: a time stamp is
a write's return plus the device latency, which wobbles with PulseAudio's fragments, and
an underrun's recovery can drop audio that was buffered (11-49 ms seen). The samples
are always in the tap by then: what the microphone hears was written before."""
LIB_HINT = "apt-get install libspeexdsp1"

_ECHO_SET_SAMPLING_RATE = 24
_PREPROCESS_SET_NOISE_SUPPRESS = 18
NOISE_SUPPRESS_DB = -6
"""Noise attenuation asked of Speex's preprocessor (its default, -15, also dulls speech)."""
_PREPROCESS_SET_ECHO_SUPPRESS = 20
_PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE = 22
_PREPROCESS_SET_ECHO_STATE = 24


class EchoUnavailable(RuntimeError):
    """libspeexdsp is missing: echo cancellation cannot run (the message says how to fix it)."""


_LIB: ctypes.CDLL | None = None
_LIB_LOCK = threading.Lock()


def speexdsp() -> ctypes.CDLL:
    """Debian's libspeexdsp, loaded once, with the prototypes we call declared."""
    global _LIB
    with _LIB_LOCK:
        if _LIB is not None:
            return _LIB
        names = [ctypes.util.find_library("speexdsp"), "libspeexdsp.so.1", "libspeexdsp.dylib"]
        for name in names:
            if not name:
                continue
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                continue
            if hasattr(lib, "speex_echo_state_init"):
                break
        else:
            raise EchoUnavailable(f"libspeexdsp is not installed: {LIB_HINT}")
        p, i, s16 = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int16)
        lib.speex_echo_state_init.restype = p
        lib.speex_echo_state_init.argtypes = [i, i]
        lib.speex_echo_state_destroy.argtypes = [p]
        lib.speex_echo_state_reset.argtypes = [p]
        lib.speex_echo_ctl.argtypes = [p, i, p]
        lib.speex_echo_cancellation.argtypes = [p, s16, s16, s16]
        lib.speex_preprocess_state_init.restype = p
        lib.speex_preprocess_state_init.argtypes = [i, i]
        lib.speex_preprocess_state_destroy.argtypes = [p]
        lib.speex_preprocess_ctl.argtypes = [p, i, p]
        lib.speex_preprocess_run.argtypes = [p, s16]
        _LIB = lib
        return lib


def available() -> bool:
    """True when libspeexdsp can be loaded."""
    try:
        speexdsp()
    except EchoUnavailable:
        return False
    return True


# --- the reference: what was played, and when ----------------------------------------------------


class PlayedTap:
    """What the playback thread wrote and when it is heard, at 16 kHz, for the last `TAP_S`.

    The playback thread calls `push` after each write (cheap: resample one block, copy it
    into a ring under a lock); any other thread calls `reference`. Playback is one running
    sample clock: consecutive blocks continue each other unless a time stamp jumps by more
    than `REANCHOR_S` (a new stretch after the stream was stopped).
    """

    def __init__(self, seconds: float = TAP_S) -> None:
        self._ring = np.zeros(int(seconds * RATE), dtype=np.float32)
        self._lock = threading.Lock()
        self._t0: float | None = None
        self._end = 0
        """Absolute 16 kHz index just after the last sample pushed."""
        self._resampler: Resampler | None = None
        self.pushed_s = 0.0
        """Seconds of audio pushed so far (tests and the doctor read it)."""
        self.stretches = 0
        """Stretches of playback so far: a new one starts when the time stamps jump (the
        stream was stopped), and its alignment with the microphone must be checked again."""

    def push(
        self, samples: np.ndarray, rate: int, heard_at: float, *, restart: bool = False
    ) -> None:
        """A block written to the device (int16 or float, mono); ``heard_at``: when its last
        sample leaves the device (``time.monotonic()``). ``restart``: the device ran dry
        before this block (an underrun), so the running sample clock no longer holds: the
        block starts a new stretch at its own time stamp. (ALSA's recovery from an underrun
        can also drop what was buffered: the echo then comes earlier than the clock says.)"""
        x = samples.astype(np.float32)
        if samples.dtype == np.int16:
            x /= 32768.0
        with self._lock:
            if self._resampler is None or self._resampler.rate != rate:
                self._resampler = Resampler(rate, RATE)
            y = self._resampler(x)
            if not len(y):
                return
            if self._t0 is None:
                self._t0 = heard_at - len(y) / RATE
            stamped = round((heard_at - self._t0) * RATE) - len(y)
            steady = not restart and abs(stamped - self._end) <= REANCHOR_S * RATE
            start = self._end if steady else stamped
            if start != self._end or not self.stretches:
                self.stretches += 1
            size = len(self._ring)
            if start > self._end:  # silence between two stretches of playback
                self._write(self._end, np.zeros(min(start - self._end, size), np.float32))
            self._write(start, y[-size:])
            self._end = start + len(y)  # back, too, when a new stretch starts earlier
            self.pushed_s += len(y) / RATE

    def _write(self, start: int, y: np.ndarray) -> None:
        size = len(self._ring)
        pos = start % size
        first = min(len(y), size - pos)
        self._ring[pos : pos + first] = y[:first]
        self._ring[: len(y) - first] = y[first:]

    def reference(self, start_at: float, n: int) -> np.ndarray:
        """``n`` samples of what was heard from ``start_at`` on (zeros where nothing played)."""
        out = np.zeros(n, dtype=np.float32)
        with self._lock:
            if self._t0 is None:
                return out
            i0 = round((start_at - self._t0) * RATE)
            lo = max(i0, self._end - len(self._ring), 0)
            hi = min(i0 + n, self._end)
            if hi <= lo:
                return out
            size = len(self._ring)
            idx = np.arange(lo, hi) % size
            out[lo - i0 : hi - i0] = self._ring[idx]
        return out

    def playing_until(self) -> float:
        """When the last sample pushed is heard (0 before anything played)."""
        with self._lock:
            return 0.0 if self._t0 is None else self._t0 + self._end / RATE


# --- alignment -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delay:
    """Where the echo sits in the microphone signal relative to the reference."""

    seconds: float
    """How much later the echo arrives than the reference's time stamps say."""
    strength: float
    """Normalised cross-correlation at that delay (0: no echo found, 1: a pure copy)."""


def estimate_delay(
    reference: np.ndarray,
    mic: np.ndarray,
    max_delay: float = MAX_DELAY_S,
    max_lead: float = MAX_LEAD_S,
) -> Delay:
    """The lag (-``max_lead``..``max_delay`` s) at which ``mic`` best matches ``reference``
    (both 16 kHz, same length, same time base), by cross-correlation of their whitened
    spectra (GCC-PHAT: speech's strong low frequencies would otherwise smear the peak). A
    negative lag: the echo comes earlier than the reference's time stamps say.

    >>> rng = np.random.default_rng(1)
    >>> ref = rng.standard_normal(16000).astype(np.float32)
    >>> mic = np.concatenate([np.zeros(960, np.float32), 0.3 * ref[:-960]])
    >>> d = estimate_delay(ref, mic)
    >>> round(d.seconds, 3), d.strength > 0.2
    (0.06, True)
    >>> d = estimate_delay(mic, ref)  # the other way round: 60 ms early
    >>> round(d.seconds, 3), d.strength > 0.2
    (-0.06, True)
    """
    n = min(len(reference), len(mic))
    if n < FRAME or not np.any(reference[:n]) or not np.any(mic[:n]):
        return Delay(0.0, 0.0)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spec = np.fft.rfft(mic[:n], size) * np.conj(np.fft.rfft(reference[:n], size))
    corr = np.fft.irfft(spec / (np.abs(spec) + 1e-9), size)
    lags = min(int(max_delay * RATE), n - 1)
    leads = min(int(max_lead * RATE), n - 1)
    window = np.concatenate([corr[size - leads :] if leads else corr[:0], corr[: lags + 1]])
    lag = int(np.argmax(window)) - leads
    # plain normalised correlation at that lag: how much of the mic the echo explains
    a, b = (reference[: n - lag], mic[lag:n]) if lag >= 0 else (reference[-lag:n], mic[: n + lag])
    denom = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    strength = float(np.dot(a, b)) / denom if denom > 0 else 0.0
    return Delay(lag / RATE, max(0.0, strength))


# --- the canceller ---------------------------------------------------------------------------


class Speex:
    """One Speex echo canceller + residual echo suppressor (16 kHz, `FRAME` samples a step)."""

    def __init__(self, tail_s: float = TAIL_S, suppress: bool = True) -> None:
        lib = speexdsp()
        self._lib = lib
        self._echo = lib.speex_echo_state_init(FRAME, int(tail_s * RATE))
        rate = ctypes.c_int(RATE)
        lib.speex_echo_ctl(self._echo, _ECHO_SET_SAMPLING_RATE, ctypes.byref(rate))
        self._pre = None
        if suppress:
            self._pre = lib.speex_preprocess_state_init(FRAME, RATE)
            # the residual echo suppressor works through the denoiser's gains: keep it on,
            # with mild noise suppression so the VAD still hears a soft voice
            noise = ctypes.c_int(NOISE_SUPPRESS_DB)
            lib.speex_preprocess_ctl(self._pre, _PREPROCESS_SET_NOISE_SUPPRESS, ctypes.byref(noise))
            lib.speex_preprocess_ctl(self._pre, _PREPROCESS_SET_ECHO_STATE, self._echo)
        self._near = np.zeros(FRAME, dtype=np.int16)
        self._far = np.zeros(FRAME, dtype=np.int16)
        self._out = np.zeros(FRAME, dtype=np.int16)
        self._p = ctypes.POINTER(ctypes.c_int16)

    def step(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        """One frame (float32, -1..1) of microphone and aligned reference -> echo removed."""
        np.copyto(self._near, np.clip(near * 32767, -32768, 32767).astype(np.int16))
        np.copyto(self._far, np.clip(far * 32767, -32768, 32767).astype(np.int16))
        p = self._p
        self._lib.speex_echo_cancellation(
            self._echo,
            self._near.ctypes.data_as(p),
            self._far.ctypes.data_as(p),
            self._out.ctypes.data_as(p),
        )
        if self._pre is not None:
            self._lib.speex_preprocess_run(self._pre, self._out.ctypes.data_as(p))
        return self._out.astype(np.float32) / 32768.0

    def reset(self) -> None:
        self._lib.speex_echo_state_reset(self._echo)

    def close(self) -> None:
        if self._pre is not None:
            self._lib.speex_preprocess_state_destroy(self._pre)
            self._pre = None
        if self._echo is not None:
            self._lib.speex_echo_state_destroy(self._echo)
            self._echo = None

    def __del__(self) -> None:
        self.close()


class Canceller(Protocol):
    """One echo canceller: frames of microphone and aligned reference in, echo removed out."""

    def step(self, near: np.ndarray, far: np.ndarray) -> np.ndarray: ...
    def reset(self) -> None: ...
    def close(self) -> None: ...


CANCELLERS: dict[str, Callable[[float, bool], Canceller]] = {
    "speex": Speex,
    "aec3": AEC3,  # WebRTC's, the [room] extra (voicechat/audio/aec3.py)
}
"""By name: a canceller made from its tail (s) and whether to suppress the residual."""


ALIGN_S = 0.5
"""Seconds of playback (with echo) the canceller gathers before it fixes the delay."""
REALIGN_S = 0.5
"""Seconds of playback used to re-measure the delay after the playback clock restarted."""
CHECK_S = 2.0
"""While aligned, the delay is checked again after every this many seconds of playback."""
RECENT_S = 0.5
"""Microphone and reference kept for `EchoCanceller.recent_delay`: a check that need not
wait for `CHECK_S` of playback (the barge-in detector's, at an onset with no echo known)."""
SLACK_S = 0.02
"""Reference kept ahead of the measured delay, so the filter stays causal under jitter."""


class EchoCanceller:
    """Microphone frames in, echo-reduced frames out, using a `PlayedTap` as the reference.

    Call `process` with 16 kHz frames (a multiple of `FRAME` samples) and the capture time
    of each frame's last sample on the microphone's sample clock (`Microphone.frames`). The
    first `ALIGN_S` seconds of playback also measure the delay between tap and microphone
    (`delay`); until then the filter's tail covers the device buffers. The last frame's
    levels (`mic_rms`, `ref_rms`, `out_rms`) are kept for the barge-in detector.

    ``detect`` names a second canceller (`CANCELLERS`) run on the same aligned frames: its
    output (`detected`, `detect_rms`) is what decides that the user is talking, while
    `process` returns Speex's, what gets recognised (Speex keeps more of the user's voice
    while ours plays). scripts/eval_echo.py measures whether that pays (so far it did not).
    """

    def __init__(
        self,
        tap: PlayedTap,
        *,
        delay_s: float | None = None,
        suppress: bool = True,
        tail_s: float = TAIL_S,
        detect: str | None = None,
    ) -> None:
        self.tap = tap
        self.fixed = delay_s is not None
        self.delay = Delay(delay_s or 0.0, 1.0 if self.fixed else 0.0)
        self._shift = self.delay.seconds - SLACK_S
        """How much earlier than the microphone's time the reference is read: the measured
        delay less `SLACK_S` (negative when the echo comes before the time stamps say)."""
        self._speex = Speex(tail_s + (0.0 if self.fixed else MAX_DELAY_S), suppress)
        self._tail_s, self._suppress = tail_s, suppress
        self._make_detect = CANCELLERS[detect] if detect else None
        self._detect = self._make_detect(tail_s, suppress) if self._make_detect else None
        self.detected = np.zeros(0, dtype=np.float32)
        """The detecting canceller's output for the last `process` (its output without one)."""
        self.detect_rms = 0.0
        self.detect_cpu_s = 0.0
        """Thread CPU seconds of those spent in the detecting canceller."""
        self._gather_ref: list[np.ndarray] = []
        self._gather_mic: list[np.ndarray] = []
        self._stretch = 0
        self.settled = self.fixed
        """The reference is aligned with the microphone (False while a delay is measured:
        echo may leak then, so the barge-in detector does not listen)."""
        self.mic_rms = self.ref_rms = self.out_rms = 0.0
        self.cpu_s = 0.0
        """Thread CPU seconds spent in `process` (the benchmark reads it)."""
        self.realigned = 0
        """Times the delay measurement started over: the playback stream (re)started or
        ran dry (diagnostics)."""
        self._recent: deque[tuple[np.ndarray, np.ndarray]] = deque()
        """The latest `RECENT_S` of (unshifted reference, microphone), frame by frame."""

    def process(self, mic: np.ndarray, captured_at: float) -> np.ndarray:
        """Echo-reduced copy of ``mic`` (float32 at 16 kHz, ``len(mic) % FRAME == 0``)."""
        started = time.thread_time()
        n = len(mic)
        # microphone audio dropped on the way here (a slow consumer) leaves a gap in the
        # time stamps, not a shift: the echo's delay stays what it was
        start_at = captured_at - n / RATE
        ref = self.tap.reference(start_at - self._shift, n)
        if self.tap.stretches != self._stretch:
            # the playback stream restarted or ran dry: its time stamps start from a new,
            # slightly different offset; measure it again (the filter keeps what it learned)
            self._stretch = self.tap.stretches
            self.remeasure()
        # always measured again (cheap): a dropped block or a clock drift moves the echo
        unshifted = self.tap.reference(start_at, n)
        self._align(unshifted, mic)
        self._recent.append((unshifted, mic))
        while len(self._recent) * n > RECENT_S * RATE:
            self._recent.popleft()
        if self.fixed and not self.settled:
            # the reference is misaligned until re-measured: adapting the filter to it would
            # spoil what it learned (the barge-in detector does not listen meanwhile)
            out = mic.copy()
            self.detected = out
        else:
            out = np.empty(n, dtype=np.float32)
            for i in range(0, n - FRAME + 1, FRAME):
                out[i : i + FRAME] = self._speex.step(mic[i : i + FRAME], ref[i : i + FRAME])
            self.detected = out
            if self._detect is not None:
                detect_started = time.thread_time()
                self.detected = self._detect.step(mic, ref)
                self.detect_cpu_s += time.thread_time() - detect_started
        self.mic_rms, self.ref_rms, self.out_rms = rms(mic), rms(ref), rms(out)
        self.detect_rms = rms(self.detected)
        self.cpu_s += time.thread_time() - started
        return out

    def recent_delay(self) -> Delay:
        """Where the echo sits in the latest `RECENT_S` of microphone, and how strong it is
        (`Delay.strength`: how much of what the microphone hears now is our echo)."""
        if not self._recent:
            return Delay(0.0, 0.0)
        ref = np.concatenate([r for r, _ in self._recent])
        return estimate_delay(ref, np.concatenate([m for _, m in self._recent]))

    def remeasure(self) -> None:
        """Measure the delay again from the next `REALIGN_S` of playback; meanwhile the
        filter neither adapts nor cancels, and the barge-in detector does not listen."""
        self._gather_ref, self._gather_mic = [], []
        self.settled = False
        self.realigned += 1

    def _align(self, ref: np.ndarray, mic: np.ndarray) -> None:
        """Gather unshifted reference and microphone; once there is enough, set the shift."""
        if rms(ref) < 1e-4:
            return
        self._gather_ref.append(ref)
        self._gather_mic.append(mic)
        need = ALIGN_S if not self.fixed else REALIGN_S if not self.settled else CHECK_S
        if len(self._gather_ref) * len(ref) < need * RATE:
            return
        found = estimate_delay(np.concatenate(self._gather_ref), np.concatenate(self._gather_mic))
        self._gather_ref, self._gather_mic = [], []
        if found.strength < 0.1:
            self.settled = True
            if not self.fixed:  # no echo to speak of (headphones): keep the wide filter
                self.fixed = True
                self.delay = found
            return
        if self.settled and found.strength < 0.5:
            return  # a check drowned by the user's voice: keep the alignment
        remeasured, was = not self.settled, self.delay
        self.settled = True
        self.delay = found
        if not self.fixed or was.strength < 0.1:
            # the first echo found (at the start, or where there was none): a filter sized
            # for this delay now (the wide one adapts slowly and modelled no echo)
            self.fixed = True
            self._shift = found.seconds - SLACK_S
            self._speex.close()
            self._speex = Speex(self._tail_s, self._suppress)
            if self._detect is not None and self._make_detect is not None:
                self._detect.close()
                self._detect = self._make_detect(self._tail_s, self._suppress)
            return
        if remeasured:
            # the time stamps moved (a restart, an underrun), the room did not: move the
            # window with the echo, so it stays where the filter learned it
            self._shift += found.seconds - was.seconds
            return
        within = found.seconds - self._shift  # where the echo sits in the filter's window
        if not SLACK_S / 4 <= within <= self._tail_s / 2:
            self._shift = found.seconds - SLACK_S  # the echo drifted out of what it models

    def close(self) -> None:
        self._speex.close()
        if self._detect is not None:
            self._detect.close()


def erle_db(mic: np.ndarray, out: np.ndarray) -> float:
    """Echo return loss enhancement: how much quieter the output is than the microphone (dB)."""
    return db((rms(mic) ** 2) / max(rms(out) ** 2, 1e-12))
