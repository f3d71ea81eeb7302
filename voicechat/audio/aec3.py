"""WebRTC's echo canceller (AEC3) through ``pywebrtc-audio``, behind the same steps as Speex.

Speex's MDF filter is linear: what a clipping speaker adds (harmonics the reference does not
hold) passes through it. AEC3 follows its linear filter with a suppressor that estimates such
residual echo per band. Measured on simulated rooms (scripts/eval_echo.py,
docs/benchmarks/echo.md) it takes out more echo only with a clipping speaker in a dry room, less
in a reverberant one, keeps much less of the user's voice while ours plays, and its output makes
the barge-in detector react ~100 ms later and interrupt itself more than Speex's. So Speex stays
the canceller; AEC3 is there to measure against (``EchoCanceller(detect="aec3")``,
``scripts/bench_bargein.py --detect aec3``) and for rooms that may yet prove it better.

``pywebrtc-audio`` (Apache-2.0, numpy only, ~0.4 MB; cp310 wheels for x86-64 and aarch64,
0.2.0's aarch64 one manylinux_2_28) is the ``[room]`` extra.
"""

from __future__ import annotations

import numpy as np

RATE = 16000
HINT = "pip install 'voicechat[room]'"


class AEC3Unavailable(RuntimeError):
    """``pywebrtc-audio`` is not installed (the message says how to fix it)."""


def available() -> bool:
    """True when ``pywebrtc-audio`` can be imported."""
    try:
        import pywebrtc_audio  # noqa: F401
    except ImportError:
        return False
    return True


class AEC3:
    """One AEC3 instance (16 kHz): the same steps as `voicechat.audio.echo.Speex`.

    AEC3 estimates the echo's delay itself; the reference it is given is already aligned, so
    ``tail_s`` (Speex's filter length) is accepted and not needed. Its output lags its input by
    8 ms (its band-split filter bank), whatever the frame size."""

    def __init__(self, tail_s: float = 0.0, suppress: bool = True) -> None:
        try:
            import pywebrtc_audio
        except ImportError as exc:
            raise AEC3Unavailable(f"WebRTC's echo canceller is not installed: {HINT}") from exc
        # noise suppression stays off: the VAD and the recognizer hear the room as it is
        self._aec = pywebrtc_audio.EchoCanceller(RATE, 1, 0)

    def step(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        """One frame (float32, -1..1) of microphone and aligned reference -> echo removed."""
        out = self._aec.process(
            np.ascontiguousarray(near, dtype=np.float32),
            np.ascontiguousarray(far, dtype=np.float32),
        )
        return np.asarray(out, dtype=np.float32)

    def reset(self) -> None:
        self._aec.reset()

    def close(self) -> None:
        """Nothing to free by hand (the binding owns its state)."""
