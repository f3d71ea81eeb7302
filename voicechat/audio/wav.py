"""WAV files: the one reader of WAV input (`voicechat transcribe`) and the writer of `--save-audio`.

The reader walks the RIFF chunks itself (the standard library's ``wave`` refuses
WAVE_FORMAT_EXTENSIBLE, which sox and ffmpeg write for 24- and 32-bit and float audio) and
checks every header field against the file's size and sane ranges before a sample is read:
a damaged or hostile header is one `ConfigError` line, never a huge allocation. A file cut
short gives what it holds. The samples come in bounded pieces (`WavFile.pieces`), so a
two-hour recording is never in memory at once.

Written files go into a temporary file beside the target and are renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from voicechat.audio import RATE
from voicechat.audio.pcm import Resampler, resample
from voicechat.errors import ConfigError

CONVERT = "convert it with `sox IN -b 16 OUT.wav` or `ffmpeg -i IN OUT.wav`"
RATES = (1000, 768000)
"""Sample rates accepted, in Hz (telephone audio is 8 kHz; studio files go to 768 kHz)."""
MAX_CHANNELS = 64
PIECE_BYTES = 2 * 1024 * 1024
"""Bytes of a file read at once (at most: 11 s of 48 kHz stereo 16-bit audio)."""
MAX_CHUNKS = 1000
"""Chunks looked at before the audio: a header is a handful (fmt, fact, LIST, bext...)."""
_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
"""The last 14 bytes of KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT (the first 2 are the format)."""
_ENCODINGS = {
    0x0002: "Microsoft ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0050: "MPEG",
    0x0055: "MP3",
}


@dataclass(frozen=True)
class WavInfo:
    """What a WAV file's header says, checked against the file."""

    rate: int
    """Sample rate in Hz."""
    channels: int
    width: int
    """Bytes per sample (of one channel)."""
    floating: bool
    """IEEE float samples (else integer PCM: unsigned at 1 byte, signed above)."""
    frames: int
    """Sample frames present in the file (all channels of one instant = one frame)."""
    truncated: bool
    """The header promised more audio than the file holds (``frames`` is what it holds)."""
    offset: int
    """Where the samples start in the file."""

    @property
    def seconds(self) -> float:
        return self.frames / self.rate


AGAIN = "export or record it again"


def _fail(path: Path, problem: str, fix: str = CONVERT) -> ConfigError:
    return ConfigError(f"{path}: {problem}: {fix}")


def _damaged(path: Path, what: str) -> ConfigError:
    return _fail(path, f"damaged WAV header ({what})", AGAIN)


def _read_exact(file: BinaryIO, size: int) -> bytes:
    data = file.read(size)
    return data if len(data) == size else b""


def parse_header(file: BinaryIO, size: int, path: Path) -> WavInfo:
    """Walk the RIFF chunks to the audio; `ConfigError` for anything that cannot be read.

    Only the header's 12 bytes and each chunk's 8 are read until ``fmt `` (at most 40 bytes
    of it) and ``data``; every other chunk is skipped by seeking, never read.
    """
    head = _read_exact(file, 12)
    if not head or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        raise ConfigError(f"{path} is not a WAV file (no RIFF/WAVE header): {CONVERT}")
    if head[:4] == b"RF64":
        raise _fail(path, "RF64 WAV files (over 4 GB) are not read")
    fmt: tuple[int, int, int, int, int] | None = None
    at = 12
    for _ in range(MAX_CHUNKS):
        chunk = _read_exact(file, 8)
        if not chunk:
            break
        name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        at += 8
        if name == b"fmt ":
            fmt = _format(file, length, path)
        elif name == b"data":
            if fmt is None:
                raise _damaged(path, "the audio comes before its format")
            tag, channels, rate, align, _ = fmt
            available = max(0, size - at)
            return WavInfo(
                rate=rate,
                channels=channels,
                width=align // channels,
                floating=tag == _FLOAT,
                frames=min(length, available) // align,
                truncated=length > available,
                offset=at,
            )
        at += length + (length & 1)  # chunks are padded to an even size
        if at > size:
            break
        file.seek(at)
    else:
        raise _fail(path, f"over {MAX_CHUNKS} chunks before the audio: not a usable WAV file")
    if fmt is None:
        raise ConfigError(f"{path} is not a WAV file (no fmt chunk): {CONVERT}")
    raise _fail(path, "no audio in it (no data chunk): the file is damaged or cut short", AGAIN)


def _format(file: BinaryIO, length: int, path: Path) -> tuple[int, int, int, int, int]:
    """The fmt chunk's (format, channels, rate, block align, bits), checked."""
    if length < 16:
        raise _damaged(path, f"a {length}-byte fmt chunk, at least 16 expected")
    data = _read_exact(file, min(length, 40))
    if not data:
        raise _fail(path, "the file ends inside its header (cut short?)", AGAIN)
    tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", data[:16])
    if tag == _EXTENSIBLE:
        if len(data) < 40:
            raise _damaged(path, "an extensible format without its sub-format")
        sub, tail = struct.unpack("<H", data[24:26])[0], data[26:40]
        tag = sub if tail == _GUID_TAIL else -1
    if tag not in (_PCM, _FLOAT):
        what = f"{_ENCODINGS[tag]} audio" if tag in _ENCODINGS else f"audio in format {tag:#06x}"
        raise _fail(path, f"{what if tag != -1 else 'audio of an unknown sub-format'}, not PCM")
    if not 1 <= channels <= MAX_CHANNELS:
        raise _damaged(path, f"{channels} channels, 1 to {MAX_CHANNELS} expected")
    if not RATES[0] <= rate <= RATES[1]:
        raise _damaged(path, f"a sample rate of {rate} Hz, {RATES[0]} to {RATES[1]} expected")
    width = align // channels if align % channels == 0 else 0
    widths = (4, 8) if tag == _FLOAT else (1, 2, 3, 4)
    if width not in widths or not 0 < bits <= 8 * width:
        kind = "float" if tag == _FLOAT else "PCM"
        plural = "s" if channels > 1 else ""
        raise _fail(
            path, f"{bits}-bit {kind} in {align}-byte frames of {channels} channel{plural}: unusual"
        )
    return tag, channels, rate, align, bits


def decode(raw: bytes, info: WavInfo) -> np.ndarray:
    """Whole frames of raw samples -> mono float32 (channels averaged) at the file's rate.

    >>> info = WavInfo(8000, 2, 2, False, 2, False, 44)
    >>> decode(b"\\x00\\x40\\x00\\x40\\x00\\xc0\\x00\\x00", info).tolist()
    [0.5, -0.25]
    """
    width = info.width
    if info.floating:
        samples = np.frombuffer(raw, dtype="<f4" if width == 4 else "<f8").astype(np.float32)
        # NaN, inf or huge values would poison the spectrogram: a float file's range is +-1
        samples = np.clip(np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    elif width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128) / 128
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8
        samples = ints.astype(np.float32) / (1 << 23)
    else:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float32) / (1 << 31)
    if info.channels == 1:
        return samples
    return samples.reshape(-1, info.channels).mean(axis=1).astype(np.float32)


class WavFile:
    """A WAV file opened and its header checked (`ConfigError` in one line if unusable);
    `pieces` reads its samples in bounded pieces. A context manager."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            # non-blocking: opening a FIFO would otherwise wait for a writer (it is refused)
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise ConfigError(f"{path} is a folder, not a WAV file") from None
        except OSError as exc:
            raise ConfigError(f"{path} cannot be read ({exc.strerror or exc})") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            if stat.S_ISDIR(info.st_mode):
                raise ConfigError(f"{path} is a folder, not a WAV file")
            raise ConfigError(f"{path} is not a regular file: save the audio to a file first")
        os.set_blocking(fd, True)
        self._file: BinaryIO = os.fdopen(fd, "rb")
        try:
            self.info = parse_header(self._file, info.st_size, self.path)
        except OSError as exc:
            self.close()
            raise ConfigError(f"{path} cannot be read ({exc.strerror or exc})") from None
        except BaseException:
            self.close()
            raise

    def pieces(self, dst: int = RATE) -> Iterator[np.ndarray]:
        """Mono float32 samples at ``dst`` Hz, a bounded piece at a time, to the end of what
        the file holds (exactly ``round(frames * dst / rate)`` samples in all)."""
        info = self.info
        align = info.channels * info.width
        per_piece = max(1, PIECE_BYTES // align)
        total = round(info.frames * dst / info.rate)
        resampler = Resampler(info.rate, dst) if info.rate != dst else None
        given = 0
        left = info.frames
        self._file.seek(info.offset)
        while left > 0:
            want = min(left, per_piece)
            try:
                raw = self._file.read(want * align)
            except OSError as exc:
                raise ConfigError(f"{self.path} cannot be read ({exc.strerror or exc})") from None
            got = len(raw) // align
            if got == 0:
                break  # the file shrank while being read: what was read is kept
            left -= got
            mono = decode(raw[: got * align], info)
            out = resampler(mono) if resampler is not None else mono
            out = out[: total - given]
            given += len(out)
            if len(out):
                yield out
        if resampler is not None and given < total:
            # the resampler holds back a few samples at the end: zeros push them out
            tail = resampler(np.zeros(info.rate // 10 + resampler.width + 1, np.float32))
            yield tail[: total - given]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> WavFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_wav(path: Path, dst: int = RATE) -> np.ndarray:
    """The whole file's samples, channels averaged, resampled to ``dst`` Hz (float32);
    `ConfigError` if unusable. For short files: `WavFile.pieces` reads long ones."""
    with WavFile(path) as wav:
        pieces = list(wav.pieces(dst))
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


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
