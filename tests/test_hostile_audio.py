"""Issue 24 for speech input without a microphone: hostile and odd WAV files, long files,
bad options and Ctrl+C at start-up, through the reader and the real CLI.

Every WAV is made in the test, byte by byte where the header is the point. Bad input is
one line on stderr with exit code 2 (before the recognition model loads), never a
traceback, a hang or a huge allocation; long files are recognised in bounded memory with
every utterance kept. (A microphone that dies: tests/test_stt_mic.py, which needs audio.)
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.environ import clean_env
from tests.support.speech import CHINESE, ENGLISH, chinese, read_wav, word_error_rate, write_wav
from voicechat.audio.pcm import Resampler, level_db
from voicechat.audio.wav import MAX_CHUNKS, PIECE_BYTES, WavFile
from voicechat.audio.wav import read_wav as stt_read_wav
from voicechat.errors import ConfigError
from voicechat.settings import STTSettings

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


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One model cache for the module's commands (assembled by the first one)."""
    return str(tmp_path_factory.mktemp("cache"))


MEASURED = """
import resource, subprocess, sys
code = subprocess.call([sys.executable, "-m", "voicechat", *sys.argv[1:]])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, file=sys.stderr)
sys.exit(code)
"""


def transcribe_measured(tmp_path: Path, cache: str, *files: Path) -> tuple[int, str, list, int]:
    """``voicechat transcribe FILES`` run by a process of its own that reports the peak
    resident memory of its one child: exit code, stdout, stderr lines, peak MB."""
    result = subprocess.run(
        [sys.executable, "-c", MEASURED, "transcribe", *map(str, files)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900,
        env=clean_env(tmp_path, XDG_CACHE_HOME=cache),
    )  # fmt: skip
    *lines, peak = result.stderr.splitlines()
    return result.returncode, result.stdout, lines, int(peak)


def speech_and_silence(path: Path, parts: list[np.ndarray | float], rate: int = 16000) -> Path:
    """A 16-bit mono WAV of speech (arrays at ``rate``) and silences (seconds), written a
    part at a time: long silences cost no memory here, and stay sparse on disk."""
    frames = sum(len(p) if isinstance(p, np.ndarray) else int(p * rate) for p in parts)
    with path.open("wb") as out:
        out.write(riff(fmt(rate=rate), chunk(b"data", b"", size=2 * frames))[:44])
        for part in parts:
            if isinstance(part, np.ndarray):
                out.write((np.clip(part, -1, 1) * 32767).astype("<i2").tobytes())
            else:
                out.seek(2 * int(part * rate), os.SEEK_CUR)
        out.truncate()
    return path


def at_16k(path: Path) -> np.ndarray:
    return stt_read_wav(path)


def test_long_recordings_keep_every_utterance_in_bounded_memory(
    tmp_path: Path, cache: str, english: dict[str, Path]
) -> None:
    """A question, 5 minutes of silence, another question, 15 more minutes of silence and a
    last one (20 min, 38 MB on disk): every question is in the one line, and the command's
    peak memory is that of a 3 s file (it was 1.2 GB with these 20 minutes, and a
    MemoryError with two hours: the whole file went into one spectrogram)."""
    weather, story = at_16k(english["en_weather"]), at_16k(english["en_story"])
    zh = at_16k(chinese("zh_weather"))
    long = speech_and_silence(
        tmp_path / "long.wav", [0.5, weather, 5 * 60.0, zh, 15 * 60.0, story, 1.0]
    )
    short = speech_and_silence(tmp_path / "short.wav", [0.5, weather, 1.0])
    code, out, err, base = transcribe_measured(tmp_path, cache, short)
    assert code == 0 and word_error_rate(ENGLISH["en_weather"], out) <= 0.25, (out, err)
    started = time.monotonic()
    code, out, err, peak = transcribe_measured(tmp_path, cache, long)
    took = time.monotonic() - started
    assert code == 0, err
    assert err == [] and len(out.splitlines()) == 1
    text = out.lower()
    assert "weather" in text and "london" in text, out
    assert "天气" in out, out
    assert "story" in text and "cat" in text, out
    assert out.index("eather") < out.index("天气") < out.lower().index("story"), out
    assert peak < base + 60, f"peak {peak} MB against {base} MB for a 3 s file"
    assert took < 120, took


def test_a_minute_of_continuous_speech_is_recognised_whole(
    recognizer, english: dict[str, Path]
) -> None:
    """52-65 s of clean speech gave "nothing was heard" (exit 12): faster-whisper's own loop
    ran over the whole file and its weakest segment decided for all."""
    from voicechat.stt.listener import transcribe_file

    said, parts = [], []
    for _ in range(5):
        for name in ("en_weather", "en_story", "en_long"):
            said.append(ENGLISH[name])
            parts += [at_16k(english[name]), np.zeros(3200, np.float32)]
    samples = np.concatenate(parts)
    assert 52 <= len(samples) / 16000 <= 75, len(samples) / 16000
    seen: list[float] = []
    transcript = transcribe_file(
        recognizer, np.array_split(samples, 7), STTSettings(), progress=seen.append
    )
    assert transcript is not None
    assert word_error_rate(" ".join(said), transcript.text) <= 0.2, transcript.text
    assert seen == sorted(seen) and abs(seen[-1] - len(samples) / 16000) < 0.05


def test_chinese_with_long_pauses_is_joined_without_spaces(recognizer) -> None:
    from voicechat.stt.listener import transcribe_file

    parts: list[np.ndarray] = []
    for name in ("zh_weather", "zh_time", "zh_story", "zh_music"):
        parts += [read_wav(chinese(name))[0], np.zeros(16000 * 40, np.float32)]
    transcript = transcribe_file(recognizer, parts, STTSettings(language="zh"))
    assert transcript is not None and transcript.language == "zh"
    assert " " not in transcript.text, transcript.text
    assert word_error_rate("".join(CHINESE.values()), transcript.text) <= 0.3, transcript.text


def test_transcribe_shows_its_progress_on_a_terminal_only(
    tmp_path: Path, cache: str, english: dict[str, Path]
) -> None:
    pexpect = pytest.importorskip("pexpect")
    from tests.support.ptys import reap

    path = speech_and_silence(tmp_path / "p.wav", [0.5, at_16k(english["en_weather"]), 600.0])
    child = pexpect.spawn(
        sys.executable, ["-m", "voicechat", "transcribe", str(path)],
        env=clean_env(tmp_path, XDG_CACHE_HOME=cache, NO_COLOR="1"), encoding="utf-8",
        timeout=300,
    )  # fmt: skip
    child.expect(r"transcribing \S*p\.wav: \d+:\d\d of 10:0\d \(\d+%\)")
    child.expect("London")
    child.expect(pexpect.EOF)
    reap(child)
    assert child.exitstatus == 0, child.before
    code, out, err, _ = transcribe_measured(tmp_path, cache, path)
    assert code == 0 and err == [] and "London" in out  # not on a pipe


# --- options and start-up ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "-1", "0", "inf", "-inf"])
def test_listen_timeout_must_be_a_number_of_seconds(tmp_path: Path, value: str) -> None:
    result = voicechat(tmp_path, "listen", "--timeout", value, timeout=30)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("voicechat: error: --timeout ") and "a number over 0" in line


INTERRUPT_AS_THE_ENTRY_POINT_LOADS = """
import os, runpy, signal, sys
from importlib.abc import MetaPathFinder

class Interrupt(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "voicechat.__main__":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C as Python looks for the entry point
        return None

sys.meta_path.insert(0, Interrupt())
sys.argv = ["-m", "listen", "--timeout", "5"]  # as `python -m voicechat` has it then
runpy._run_module_as_main("voicechat")
"""


def test_ctrl_c_while_python_finds_the_entry_point_exits_130_quietly(tmp_path: Path) -> None:
    """`python -m voicechat` imports the package, then finds and compiles __main__.py before
    any line of it runs: Ctrl+C then printed a KeyboardInterrupt traceback."""
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPT_AS_THE_ENTRY_POINT_LOADS],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
        env=clean_env(tmp_path),
    )  # fmt: skip
    assert result.returncode == 130, result.stderr
    assert result.stderr == "voicechat: interrupted\n"


@pytest.mark.parametrize("after", [0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6])
def test_ctrl_c_early_in_listen_exits_130_without_a_traceback(
    tmp_path: Path, cache: str, python_start_s: float, after: float
) -> None:
    """Real timing, from the package's import on: the entry point, the imports, the
    signal thread taking over, the model loading (~0.5 s; no microphone here)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicechat", "listen", "--timeout", "5"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=clean_env(tmp_path, XDG_CACHE_HOME=cache,
                      PULSE_SERVER=f"unix:{tmp_path}/no-server"),
    )  # fmt: skip
    time.sleep(python_start_s + after)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    if proc.returncode == 11:  # with no microphone, it may have ended before the signal came
        pytest.skip(f"listen had ended (no microphone) {python_start_s + after:.2f} s in")
    if "Could not import runpy module" in err:  # Python's own start-up took longer this time:
        # the signal came before any code of ours could run (runpy comes before the package)
        pytest.skip(f"Ctrl+C came during Python's own start-up ({err.splitlines()[-1]!r})")
    assert proc.returncode == 130 and out == "", err
    assert err == "voicechat: interrupted\n", err
