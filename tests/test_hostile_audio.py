"""Issue 24 for speech input without a microphone: hostile and odd WAV files, through the
reader and the real CLI.

Every WAV is made in the test, byte by byte where the header is the point. Bad input is
one line on stderr with exit code 2 (before the recognition model loads), never a
traceback, a hang or a huge allocation.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.environ import clean_env
from tests.speech import write_wav
from voicechat.audio.pcm import Resampler, level_db
from voicechat.audio.wav import MAX_CHUNKS, PIECE_BYTES, WavFile
from voicechat.audio.wav import read_wav as stt_read_wav
from voicechat.errors import ConfigError

TRACEBACK = "Traceback"


# --- WAV files built byte by byte -----------------------------------------------------------

PCM, FLOAT, MULAW, EXTENSIBLE = 1, 3, 7, 0xFFFE
GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def chunk(name: bytes, data: bytes, size: int | None = None) -> bytes:
    """A RIFF chunk (padded to an even length); ``size`` overrides the length it declares."""
    declared = len(data) if size is None else size
    return name + struct.pack("<I", declared) + data + b"\0" * (len(data) & 1)


def fmt(
    tag: int = PCM,
    channels: int = 1,
    rate: int = 16000,
    bits: int = 16,
    align: int | None = None,
    sub: int | None = None,
    valid: int | None = None,
) -> bytes:
    """A fmt chunk; ``sub`` makes it WAVE_FORMAT_EXTENSIBLE with that sub-format, as sox
    and ffmpeg write 24-bit, 32-bit and float audio."""
    align = channels * (bits // 8) if align is None else align
    tag = EXTENSIBLE if sub is not None else tag
    body = struct.pack("<HHIIHH", tag, channels, rate, (rate * align) & 0xFFFFFFFF, align, bits)
    if sub is not None:
        body += struct.pack("<HHI", 22, valid or bits, 0x4) + struct.pack("<H", sub) + GUID_TAIL
    return chunk(b"fmt ", body)


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tone(seconds: float = 0.5, rate: int = 16000, freq: float = 300.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return 0.5 * np.sin(2 * np.pi * freq * t)


def ints(samples: np.ndarray, width: int) -> bytes:
    """Little-endian signed integers of ``width`` bytes (unsigned for 1 byte), full scale."""
    scale = 2 ** (8 * width - 1) - 1
    values = np.round(samples * scale).astype(np.int64)
    if width == 1:
        return (values + 128).astype(np.uint8).tobytes()
    return b"".join(int(v).to_bytes(width, "little", signed=True) for v in values)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- refused in one line -------------------------------------------------------------------

SECOND = ints(tone(1.0), 2)
REFUSED: dict[str, tuple[bytes, str]] = {
    "rate 0": (riff(fmt(rate=0), chunk(b"data", SECOND)), "a sample rate of 0 Hz"),
    "rate 1": (riff(fmt(rate=1), chunk(b"data", SECOND)), "a sample rate of 1 Hz"),
    "rate 4294967295": (
        riff(fmt(rate=4294967295), chunk(b"data", SECOND)),
        "a sample rate of 4294967295 Hz",
    ),
    "no channels": (riff(fmt(channels=0, align=2), chunk(b"data", SECOND)), "0 channels"),
    "65 channels": (riff(fmt(channels=65), chunk(b"data", SECOND)), "65 channels"),
    "frames of 3 bytes for 2 channels": (
        riff(fmt(channels=2, align=3), chunk(b"data", SECOND)),
        "16-bit PCM in 3-byte frames of 2 channels: unusual",
    ),
    "16-bit float": (riff(fmt(FLOAT, bits=16), chunk(b"data", SECOND)), "16-bit float"),
    "mu-law": (riff(fmt(MULAW, bits=8), chunk(b"data", SECOND)), "mu-law audio, not PCM"),
    "MP3 inside": (riff(fmt(0x55, bits=0, align=1), chunk(b"data", SECOND)), "MP3 audio"),
    "extensible, unknown sub-format": (
        riff(fmt(sub=0x0161), chunk(b"data", SECOND)),
        "audio in format 0x0161, not PCM",
    ),
    "extensible, foreign GUID": (
        riff(fmt(bits=16, sub=PCM)[:-14] + b"x" * 14, chunk(b"data", SECOND)),
        "audio of an unknown sub-format, not PCM",
    ),
    "extensible, cut sub-format": (
        riff(chunk(b"fmt ", fmt(sub=PCM)[8:30]), chunk(b"data", SECOND)),
        "an extensible format without its sub-format",
    ),
    "fmt of 8 bytes": (
        riff(chunk(b"fmt ", b"\1\0\1\0\x80>\0\0"), chunk(b"data", SECOND)),
        "a 8-byte fmt chunk",
    ),
    "audio before its format": (riff(chunk(b"data", SECOND), fmt()), "audio comes before"),
    "no data chunk": (riff(fmt()), "no audio in it (no data chunk)"),
    "a chunk claiming 4 GB before fmt": (
        riff(chunk(b"LIST", b"INFO", size=0xFFFFFFF0), fmt(), chunk(b"data", SECOND)),
        "not a WAV file (no fmt chunk)",
    ),
    "too many chunks": (
        riff(*[chunk(b"junk", b"")] * (MAX_CHUNKS + 5), fmt(), chunk(b"data", SECOND)),
        f"over {MAX_CHUNKS} chunks before the audio",
    ),
    "cut inside the header": (riff(fmt(), chunk(b"data", SECOND))[:30], "ends inside its header"),
    "RF64": (b"RF64" + riff(fmt(), chunk(b"data", SECOND))[4:], "RF64 WAV files"),
    "text": (b"not audio at all", "is not a WAV file (no RIFF/WAVE header)"),
    "empty file": (b"", "is not a WAV file"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_bad_wav_is_refused_in_one_line_at_once(tmp_path: Path, case: str) -> None:
    data, expected = REFUSED[case]
    path = write(tmp_path, "bad.wav", data)
    started = time.monotonic()
    with pytest.raises(ConfigError) as refused:
        stt_read_wav(path)
    message = str(refused.value)
    assert time.monotonic() - started < 0.5
    assert expected in message and message.startswith(str(path)), message
    assert "\n" not in message and len(message) < 300
    assert message.endswith(("export or record it again", "ffmpeg -i IN OUT.wav`")), message


def test_what_is_not_a_regular_file_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer
    with pytest.raises(ConfigError, match="is not a regular file: save the audio to a file"):
        stt_read_wav(fifo)
    with pytest.raises(ConfigError, match="is a folder, not a WAV file"):
        stt_read_wav(tmp_path)
    with pytest.raises(ConfigError, match="no such file"):
        stt_read_wav(tmp_path / "missing.wav")


# --- read as far as they go ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "width", "floating", "header"),
    [
        ("8-bit", 1, False, fmt(bits=8)),
        ("24-bit", 3, False, fmt(bits=24)),
        ("24-bit extensible (sox -b 24)", 3, False, fmt(bits=24, sub=PCM)),
        ("32-bit extensible (sox -b 32)", 4, False, fmt(bits=32, sub=PCM)),
        ("24 bits in 32 (valid bits 24)", 4, False, fmt(bits=32, sub=PCM, valid=24)),
        ("16-bit extensible", 2, False, fmt(bits=16, sub=PCM)),
        ("float", 4, True, fmt(FLOAT, bits=32)),
        ("float extensible (sox -e float)", 4, True, fmt(bits=32, sub=FLOAT)),
        ("double extensible", 8, True, fmt(bits=64, sub=FLOAT)),
    ],
)
def test_every_pcm_and_float_layout_is_read(
    tmp_path: Path, kind: str, width: int, floating: bool, header: bytes
) -> None:
    samples = tone(0.5)
    if floating:
        raw = samples.astype("<f4" if width == 4 else "<f8").tobytes()
    else:
        raw = ints(samples, width)
    path = write(tmp_path, "a.wav", riff(header, chunk(b"LIST", b"odd"), chunk(b"data", raw)))
    got = stt_read_wav(path)
    assert len(got) == len(samples), kind
    assert abs(level_db(got) - level_db(samples)) < 0.5, kind
    assert np.max(np.abs(got - samples)) < (0.02 if width == 1 else 1e-3), kind


def test_a_stereo_extensible_file_is_averaged(tmp_path: Path) -> None:
    left, right = tone(0.5), np.zeros(8000)
    raw = ints(np.stack([left, right], axis=1).reshape(-1), 3)
    path = write(tmp_path, "s.wav", riff(fmt(channels=2, bits=24, sub=PCM), chunk(b"data", raw)))
    got = stt_read_wav(path)
    assert len(got) == 8000 and np.max(np.abs(got - left / 2)) < 1e-3


def test_float_samples_that_are_not_numbers_are_made_safe(tmp_path: Path) -> None:
    values = np.array([0.5, np.nan, np.inf, -np.inf, 1e30, -1e30, -0.25], dtype="<f4")
    path = write(tmp_path, "f.wav", riff(fmt(FLOAT, bits=32), chunk(b"data", values.tobytes())))
    assert stt_read_wav(path).tolist() == [0.5, 0.0, 1.0, -1.0, 1.0, -1.0, -0.25]


def test_a_file_cut_short_gives_what_it_holds(tmp_path: Path) -> None:
    whole = riff(fmt(), chunk(b"data", SECOND))
    path = write(tmp_path, "cut.wav", whole[: 44 + 10001])  # cut at an odd byte
    with WavFile(path) as wav:
        assert wav.info.truncated and wav.info.frames == 5000
    got = stt_read_wav(path)
    assert len(got) == 5000 and np.allclose(got, tone(1.0)[:5000], atol=1e-4)
    # a streamed file's placeholder length: what follows the header is the audio
    streamed = riff(fmt(), chunk(b"data", SECOND[:3200], size=0xFFFFFFFF))
    assert len(stt_read_wav(write(tmp_path, "streamed.wav", streamed))) == 1600


def test_a_file_without_samples_is_empty_at_any_rate(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.wav", riff(fmt(rate=22050), chunk(b"data", b"")))
    got = stt_read_wav(path)
    assert got.dtype == np.float32 and len(got) == 0
    one = write(tmp_path, "one.wav", riff(fmt(rate=44100), chunk(b"data", b"\0\x40")))
    assert len(stt_read_wav(one)) == 0  # 1/44100 s: round(0.36) samples at 16 kHz


def test_pieces_are_bounded_and_join_seamlessly(tmp_path: Path) -> None:
    """A file several pieces long, at 44.1 kHz stereo: each piece read is bounded, and
    together they are what one resampler over the whole gives (no seam, exact length)."""
    seconds = 3 * PIECE_BYTES / (44100 * 4) + 0.3
    mono = tone(seconds, 44100, 440.0).astype(np.float32)
    raw = (np.stack([mono, mono], axis=1) * 32767).astype("<i2").tobytes()
    path = write(tmp_path, "long.wav", riff(fmt(channels=2, rate=44100), chunk(b"data", raw)))
    with WavFile(path) as wav:
        pieces = list(wav.pieces())
    assert len(pieces) >= 4
    assert max(map(len, pieces)) <= PIECE_BYTES / 4 * 16000 / 44100 + 1
    got = np.concatenate(pieces)
    assert len(got) == round(len(mono) * 16000 / 44100)
    decoded = np.frombuffer(raw, "<i2").reshape(-1, 2).mean(axis=1).astype(np.float32) / 32768
    resample = Resampler(44100)
    whole = np.concatenate([resample(decoded), resample(np.zeros(4510, np.float32))])
    assert np.allclose(got, whole[: len(got)], atol=1e-5)


# --- through the command ---------------------------------------------------------------------


def voicechat(tmp_path: Path, *args: str, timeout: float = 120, **env: str):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "voicechat", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        env=clean_env(tmp_path, **env),
    )  # fmt: skip


@pytest.mark.parametrize("case", ["rate 4294967295", "rate 0", "mu-law", "text", "no data chunk"])
def test_transcribe_refuses_a_bad_file_in_one_line_before_loading_anything(
    tmp_path: Path, case: str
) -> None:
    good = write_wav(tmp_path / "good.wav", tone(1.0), 16000)
    bad = write(tmp_path, "bad.wav", REFUSED[case][0])
    started = time.monotonic()
    # an empty model cache: had the model been loaded, it would have been assembled
    result = voicechat(tmp_path, "transcribe", str(good), str(bad),
                       XDG_CACHE_HOME=str(tmp_path / "cache"))  # fmt: skip
    assert result.returncode == 2 and result.stdout == "", result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"voicechat: error: {bad}") and REFUSED[case][1] in line, line
    assert not (tmp_path / "cache").exists()
    assert time.monotonic() - started < 20
