"""Pure audio helpers and the atomic WAV writer (real files, a real full disk)."""

from __future__ import annotations

import doctest
import os
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from voicechat.audio import pcm, wav
from voicechat.audio.wav import WavWriter, describe


def test_doctests() -> None:
    assert doctest.testmod(pcm).failed == 0
    assert doctest.testmod(wav).failed == 0


def tone(seconds: float, rate: int = 22050) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def test_wav_is_written_whole_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    writer = WavWriter(path)
    assert not path.exists()  # only the temporary file exists while writing
    writer.write(tone(0.5), 22050)
    writer.write(tone(0.5, 44100), 44100)  # resampled to the file's rate
    assert writer.close() is True
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 22050)
        assert wav.getnframes() == 22050
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


def test_an_existing_file_is_replaced_only_by_a_complete_one(tmp_path: Path) -> None:
    path = tmp_path / "keep.wav"
    path.write_bytes(b"precious")
    writer = WavWriter(path)
    writer.write(tone(0.1), 22050)
    assert path.read_bytes() == b"precious"  # not truncated while writing
    writer.discard()
    assert path.read_bytes() == b"precious" and len(list(tmp_path.iterdir())) == 1
    empty = WavWriter(path)
    assert empty.close() is False  # nothing was said: nothing replaces the file
    assert path.read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("missing/out.wav", "the folder"),
        (".", "is a folder"),
        ("file.txt/out.wav", "is a file, not a folder"),
    ],
)
def test_unwritable_paths_fail_at_once_in_one_line(
    tmp_path: Path, where: str, expected: str
) -> None:
    (tmp_path / "file.txt").write_text("x")
    path = tmp_path / where
    with pytest.raises(OSError) as err:
        WavWriter(path)
    message = describe(err.value, path)
    assert expected in message and "\n" not in message


def test_disk_full_is_an_error_and_leaves_no_partial_file(small_disk: Path) -> None:
    path = small_disk / "out.wav"
    path.write_bytes(b"old")
    writer = WavWriter(path)
    with pytest.raises(OSError) as err:
        for _ in range(20):  # 20 x 1 s at 22050 Hz = 880 KB > 64 KiB
            writer.write(tone(1.0), 22050)
        writer.close()
    writer.discard()
    assert "disk is full" in describe(err.value, path)
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(small_disk)) == ["out.wav"]


def test_read_only_folder(small_disk: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    path = small_disk / "out.wav"
    with pytest.raises(OSError) as err:
        WavWriter(path)
    assert "no permission to write" in describe(err.value, path)


def test_a_device_target_is_written_in_place_never_replaced() -> None:
    """``/dev/null`` (the tests' "save nowhere") must stay a device, not become a file."""
    writer = WavWriter(Path(os.devnull))
    writer.write(tone(0.1), 22050)
    assert writer.close() is True
    assert Path(os.devnull).is_char_device()
