"""WAV files: the one reader of WAV input (`voicechat transcribe`) and the writer of `--save-audio`.

Written files go into a temporary file beside the target and are renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np

from voicechat.audio.pcm import Resampler, resample
from voicechat.errors import ConfigError

CONVERT = "convert it with `sox IN -b 16 OUT.wav` or `ffmpeg -i IN OUT.wav`"


def read_wav(path: Path, dst: int = 16000) -> np.ndarray:
    """The file's samples, channels averaged, resampled to ``dst`` Hz (float32); `ConfigError`
    if unusable."""
    try:
        with wave.open(str(path), "rb") as inp:
            rate, channels, width = inp.getframerate(), inp.getnchannels(), inp.getsampwidth()
            raw = inp.readframes(inp.getnframes())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a WAV file") from None
    except (wave.Error, EOFError) as exc:
        raise ConfigError(f"{path} is not a PCM WAV file ({exc}): {CONVERT}") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read ({exc.strerror})") from None
    if width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128) / 128
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768
    elif width == 3:
        b = np.frombuffer(raw[: len(raw) // 3 * 3], dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8
        samples = ints.astype(np.float32) / (1 << 23)
    else:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float32) / (1 << 31)
    usable = len(samples) // channels * channels
    mono = samples[:usable].reshape(-1, channels).mean(axis=1).astype(np.float32)
    if rate == dst:
        return mono
    resample = Resampler(rate, dst)
    return np.concatenate([resample(mono), resample(np.zeros(rate // 10, np.float32))])[
        : round(len(mono) * dst / rate)
    ]


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
