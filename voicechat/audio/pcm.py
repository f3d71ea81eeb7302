"""Samples in, samples out (numpy, no threads, no devices): resampling, trim, fade, levels.

The speaker trims and fades every piece before it is played *and* saved, so a saved file
holds exactly what was heard; the playback thread resamples to the device's rate. Speech
out is mono int16; speech in (microphone, files) is mono float32.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

FADE_S = 0.005
"""Fade at chunk edges, against clicks where espeak cuts mid-waveform."""


def as_samples(pcm: bytes) -> np.ndarray:
    """int16 samples from little-endian PCM bytes (an odd trailing byte is dropped).

    >>> as_samples(b"\\x01\\x00\\xff\\xff\\x07").tolist()
    [1, -1]
    """
    import numpy as np

    return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.int16)


def trim(samples: np.ndarray, rate: int, threshold: int = 64, keep_s: float = 0.01) -> np.ndarray:
    """Cut leading/trailing near-silence (espeak pads both ends), keeping ``keep_s``.

    The lead-in is what delays the first sound; the tail would add to every gap.

    >>> import numpy as np
    >>> padded = np.array([0] * 500 + [1000] * 10 + [0] * 500, dtype=np.int16)
    >>> len(trim(padded, rate=1000, keep_s=0.005))  # 5 samples of margin each side
    20
    >>> len(trim(np.zeros(100, dtype=np.int16), 1000))
    0
    """
    import numpy as np

    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if len(loud) == 0:
        return samples[:0]
    keep = int(rate * keep_s)
    return samples[max(0, loud[0] - keep) : loud[-1] + 1 + keep]


def fade(samples: np.ndarray, rate: int, seconds: float = FADE_S) -> np.ndarray:
    """Raised-cosine fade in and out over ``seconds`` at each end.

    >>> import numpy as np
    >>> out = fade(np.full(100, 1000, dtype=np.int16), rate=1000, seconds=0.01)
    >>> int(out[0]), int(out[50]), int(out[-1])
    (0, 1000, 0)
    """
    import numpy as np

    n = min(int(rate * seconds), len(samples) // 2)
    if n == 0:
        return samples
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
    out = samples.astype(np.float32)
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out.astype(np.int16)


def fade_out(samples: np.ndarray, rate: int, seconds: float = FADE_S) -> np.ndarray:
    """Only the fade out: what an interrupt plays instead of cutting mid-waveform (a click).

    >>> import numpy as np
    >>> out = fade_out(np.full(100, 1000, dtype=np.int16), rate=1000, seconds=0.01)
    >>> len(out), int(out[0]), int(out[-1])
    (10, 1000, 0)
    """
    import numpy as np

    n = min(int(rate * seconds), len(samples))
    if n == 0:
        return samples[:0]
    ramp = 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, n))
    return (samples[:n].astype(np.float32) * ramp).astype(np.int16)


def resample(samples: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Linear-interpolation resampling (speech is band-limited well below both rates).

    >>> import numpy as np
    >>> len(resample(np.zeros(22050, dtype=np.int16), 22050, 48000))
    48000
    """
    import numpy as np

    if src == dst or len(samples) == 0:
        return samples
    n = round(len(samples) * dst / src)
    positions = np.arange(n) * (src / dst)
    return np.interp(positions, np.arange(len(samples)), samples.astype(np.float32)).astype(
        np.int16
    )


def silence(seconds: float, rate: int) -> np.ndarray:
    """``seconds`` of zeros.

    >>> len(silence(0.5, 8000))
    4000
    """
    import numpy as np

    return np.zeros(max(0, int(seconds * rate)), dtype=np.int16)


class Resampler:
    """Streaming resampler (any rate to ``dst``): a box filter against aliasing, then linear
    interpolation. The one used for every stream: the microphone, the echo reference, a file.

    Good enough for speech recognition (Whisper works on an 80-band mel spectrum up to
    8 kHz) and for an echo reference (it only needs to be a linear function of what was
    played); the state carried between blocks keeps block edges seamless.

    >>> import numpy as np
    >>> r = Resampler(48000)
    >>> sum(len(r(np.zeros(480, dtype=np.float32))) for _ in range(100))
    16000
    """

    def __init__(self, src: int, dst: int = 16000) -> None:
        import numpy as np

        self.rate = src
        self.dst = dst
        self.step = src / dst
        self.width = max(1, math.floor(self.step))
        self._tail = np.zeros(0, dtype=np.float32)
        self._pos = 0.0  # position of the next output sample in the carried buffer

    def __call__(self, block: np.ndarray) -> np.ndarray:
        import numpy as np

        if self.rate == self.dst:
            return block.astype(np.float32, copy=False)
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


# --- levels ----------------------------------------------------------------------------------


def rms(x: np.ndarray) -> float:
    """Root mean square (0 for no samples).

    >>> import numpy as np
    >>> rms(np.array([3.0, -3.0]))
    3.0
    """
    import numpy as np

    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def db(ratio: float) -> float:
    """Power ratio as dB, floored at -100."""
    import numpy as np

    return 10 * float(np.log10(ratio)) if ratio > 1e-10 else -100.0


def level_db(samples: np.ndarray) -> float:
    """RMS level in dBFS (-100 for digital silence)."""
    level = rms(samples)
    return 20 * math.log10(level) if level > 1e-5 else -100.0
