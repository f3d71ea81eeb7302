"""Pure audio helpers (numpy, no threads, no devices) and the WAV file `--save-audio` writes.

The speaker trims and fades every piece before it is played *and* saved, so a saved file
holds exactly what was heard; the playback thread resamples to the device's rate. All
samples are mono int16.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

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


# --- the WAV file ----------------------------------------------------------------------------

_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")


def wav_header(rate: int, frames: int) -> bytes:
    """The 44-byte header of a mono 16-bit PCM WAV holding ``frames`` samples.

    >>> h = wav_header(22050, 10)
    >>> len(h), h[:4], h[8:12], struct.unpack("<I", h[24:28])[0], struct.unpack("<I", h[40:])[0]
    (44, b'RIFF', b'WAVE', 22050, 20)
    """
    data = frames * 2
    return _HEADER.pack(
        b"RIFF", 36 + data, b"WAVE", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16, b"data", data
    )


class WavWriter:
    """A mono 16-bit WAV written into a temporary file beside ``path``, renamed into place by
    `close`: an existing file is replaced only by a complete one, never truncated first.

    Opening creates the temporary file at once, so a path that cannot be written (missing
    folder, a directory, no permission) fails before anything is spoken. Every error is an
    `OSError` whose message names the path (`describe` makes it one line).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(21, "is a directory", str(self.path))
        self._temp: Path | None = None
        """The temporary file, renamed into place by `close` (``None``: writing in place)."""
        if self.path.exists() and not self.path.is_file():  # /dev/null, a FIFO: never replace
            self._file: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 (kept open)
        else:
            folder = self.path.parent
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=folder)
            self._temp = Path(temp)
            self._file = os.fdopen(fd, "wb")
        self.rate: int | None = None
        """Sample rate, fixed by the first `write` (later pieces are resampled to it)."""
        self.frames = 0
        try:
            self._file.write(wav_header(22050, 0))  # the real header is written by close()
        except OSError:
            self.discard()
            raise

    def write(self, samples: np.ndarray, rate: int) -> None:
        """Append ``samples`` (resampled to the file's rate when they come at another)."""
        if self._file is None:
            raise ValueError("the WAV file is closed")
        if self.rate is None:
            self.rate = rate
        data = resample(samples, rate, self.rate).astype("<i2").tobytes()
        self._file.write(data)
        self.frames += len(data) // 2

    def close(self) -> bool:
        """Finish the header and rename the file into place; False when nothing was written
        (no file is created then). On an error the temporary file is removed and it raises."""
        if self._file is None:
            return False
        if self.frames == 0:
            self.discard()
            return False
        try:
            if self._temp is not None:
                self._file.seek(0)
                self._file.write(wav_header(self.rate or 22050, self.frames))
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            if self._temp is not None:
                os.replace(self._temp, self.path)
        except OSError:
            self.discard()
            raise
        return True

    def discard(self) -> None:
        """Drop what was written; the target path is left as it was."""
        file, self._file = self._file, None
        if file is not None:
            # a full disk fails the flush of buffered data: nothing to keep anyway
            with contextlib.suppress(OSError):
                file.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)


def describe(exc: OSError, path: Path) -> str:
    """One line saying why ``path`` cannot be written, and what to do.

    >>> describe(FileNotFoundError(2, "No such file or directory"), Path("/no/x.wav"))
    '/no/x.wav: the folder /no does not exist'
    >>> describe(IsADirectoryError(21, "Is a directory"), Path("/tmp"))
    '/tmp is a folder: give a file name ending in .wav'
    """
    import errno

    if isinstance(exc, IsADirectoryError):
        return f"{path} is a folder: give a file name ending in .wav"
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        if path.parent.exists() and not path.parent.is_dir():
            return f"{path}: {path.parent} is a file, not a folder"
        return f"{path}: the folder {path.parent} does not exist"
    if exc.errno == errno.ENOSPC:
        return f"{path}: the disk is full"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path}: no permission to write there ({exc.strerror or exc})"
    return f"{path}: {exc.strerror or exc}"
