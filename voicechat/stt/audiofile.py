"""WAV files in, 16 kHz mono float32 out (`voicechat transcribe`), with the standard library."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from voicechat.errors import ConfigError
from voicechat.stt import SAMPLE_RATE
from voicechat.stt.microphone import Resampler

CONVERT = "convert it with `sox IN -b 16 OUT.wav` or `ffmpeg -i IN OUT.wav`"


def read_wav(path: Path) -> np.ndarray:
    """The file's samples, channels averaged, resampled to 16 kHz; `ConfigError` if unusable."""
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
    if rate == SAMPLE_RATE:
        return mono
    resample = Resampler(rate)
    return np.concatenate([resample(mono), resample(np.zeros(rate // 10, np.float32))])[
        : round(len(mono) * SAMPLE_RATE / rate)
    ]
