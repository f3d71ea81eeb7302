"""The speaker end to end: real espeak synthesis, real playback into the null sink, faults."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from voicechat.settings import TTSSettings
from voicechat.speakable import Utterance
from voicechat.speaker import Speaker
from voicechat.tts import Audio, Voice, create_engine

ROOT = Path(__file__).resolve().parent.parent
REPLY = [
    Utterance("天空之所以呈现蓝色，", "zh", False),
    Utterance("主要是因为大气中的气体分子对太阳光的散射作用。", "zh", True),
    Utterance("This is called Rayleigh scattering.", "other", True),
]


def speaker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("voicechat-")]


def wav_samples(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2"), wav.getframerate()


def longest_silence(samples: np.ndarray, rate: int, threshold: int = 300) -> float:
    """Longest run of 5 ms windows whose peak stays under ``threshold``."""
    win = int(rate * 0.005)
    n = len(samples) // win
    quiet = np.abs(samples[: n * win].astype(np.int32)).reshape(n, win).max(1) <= threshold
    best = run = 0
    for q in quiet:
        run = run + 1 if q else 0
        best = max(best, run)
    return best * 0.005


class Warnings(list):
    def __call__(self, message: str) -> None:
        self.append(message)


class FlakyEngine:
    """A real engine (espeak) that fails on its Nth synthesis, as a broken engine would."""

    def __init__(self, settings: TTSSettings, fail_at: int) -> None:
        self.inner = create_engine(settings)
        self.calls = 0
        self.fail_at = fail_at

    def synthesize(self, text: str, lang: str) -> Audio:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("synthesizer crashed")
        return self.inner.synthesize(text, lang)  # type: ignore[arg-type]

    def voices(self) -> list[Voice]:
        return self.inner.voices()

    def close(self) -> None:
        self.inner.close()


# --- speaking ------------------------------------------------------------------------------


@pytest.mark.audio
def test_reply_is_heard_as_saved_without_extra_gaps(null_sink, monitor, tmp_path: Path) -> None:
    saved = tmp_path / "reply.wav"
    warn = Warnings()
    with Speaker(TTSSettings(), save_audio=saved, warn=warn) as speaker:
        time.sleep(0.3)  # engine loaded, device open: as when the model is slow to answer
        sent = time.monotonic()
        for utterance in REPLY:
            speaker.say(utterance)
        speaker.finish()
        finished = time.monotonic()
        assert speaker.active
    assert warn == []
    monitor.wait_quiet(0.2)
    onset = monitor.onset()
    assert onset is not None and onset - sent < 0.1
    assert speaker.first_audio_at is not None and abs(speaker.first_audio_at - onset) < 0.03
    # finish() returned once the last sound had been played, not long after
    assert -0.02 < finished - monitor.sounds()[-1][1] < 0.25
    # the file holds exactly what was played: same audible length, no extra silences
    samples, rate = wav_samples(saved)
    assert rate == 22050
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 300)
    audible_file = (loud[-1] - loud[0]) / rate
    assert abs(monitor.audible_seconds() - audible_file) < 0.08
    assert max(monitor.gaps()) < longest_silence(samples, rate) + 0.03
    assert speaker_threads() == []


@pytest.mark.audio
def test_hungry_while_speech_is_about_to_run_dry(null_sink) -> None:
    with Speaker(TTSSettings(), warn=Warnings()) as speaker:
        assert speaker.hungry  # nothing to say yet
        speaker.say(
            Utterance("This sentence takes well over a second to say aloud.", "other", True)
        )
        assert not speaker.hungry  # being synthesized, then played
        time.sleep(0.3)
        assert not speaker.hungry
        speaker.finish()
        assert speaker.hungry
    saving = Speaker(TTSSettings(), play=False, save_audio=Path(os.devnull), warn=Warnings())
    with saving:
        assert not saving.hungry  # nothing is heard: pieces stay independent of timing


def test_sentence_pause_is_in_the_saved_audio(tmp_path: Path) -> None:
    lengths = {}
    for pause in (0.0, 0.5):
        path = tmp_path / f"p{pause}.wav"
        with Speaker(TTSSettings(sentence_pause=pause), save_audio=path, play=False) as speaker:
            for utterance in REPLY:
                speaker.say(utterance)
            speaker.finish()
        samples, rate = wav_samples(path)
        lengths[pause] = len(samples) / rate
    sentence_ends = sum(u.sentence_end for u in REPLY)
    assert abs(lengths[0.5] - lengths[0.0] - 0.5 * sentence_ends) < 0.01


def test_nothing_to_do_starts_nothing() -> None:
    speaker = Speaker(TTSSettings(), play=False)
    speaker.start()
    speaker.say(REPLY[0])
    speaker.finish()
    assert not speaker.active and speaker_threads() == []
    speaker.close()


@pytest.mark.audio
def test_interrupt_mid_speech_is_quick_and_leaves_no_thread(null_sink, monitor) -> None:
    speaker = Speaker(TTSSettings())
    speaker.start()
    for utterance in REPLY * 3:
        speaker.say(utterance)
    deadline = time.monotonic() + 5
    while monitor.onset() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    asked = time.monotonic()
    speaker.interrupt()
    speaker.finish()  # returns at once: everything was dropped
    assert time.monotonic() - asked < 0.3
    time.sleep(0.3)
    assert monitor.sounds()[-1][1] - asked < 0.1
    # the speaker stays usable (the next turn of a conversation speaks again)
    speaker.say(Utterance("Again.", "other", True))
    speaker.finish()
    monitor.wait_quiet(0.2)
    assert monitor.sounds()[-1][0] > asked + 0.3
    speaker.close()
    speaker.close()  # idempotent
    assert speaker_threads() == []


# --- faults --------------------------------------------------------------------------------


@pytest.mark.audio
def test_engine_failing_mid_reply_warns_once_and_goes_quiet(null_sink, monitor) -> None:
    warn = Warnings()
    speaker = Speaker(TTSSettings(), warn=warn, engine=lambda s: FlakyEngine(s, fail_at=2))
    with speaker:
        for utterance in REPLY * 2:
            speaker.say(utterance)
        speaker.finish()
        assert not speaker.active
        speaker.say(REPLY[0])  # ignored, no second warning
        speaker.finish()
    assert len(warn) == 1
    assert "synthesizer crashed" in warn[0] and "continues as text" in warn[0]
    monitor.wait_quiet(0.2)
    assert monitor.onset() is not None  # the first chunk was spoken before the failure
    assert speaker_threads() == []


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (TTSSettings(engine="piper"), "tts.model is not set"),
        (TTSSettings(voice="vulcan"), "tts.voice 'vulcan' is not a voice"),
    ],
    ids=["piper-without-model", "unknown-voice"],
)
def test_engine_that_cannot_start_warns_once(settings: TTSSettings, expected: str) -> None:
    warn = Warnings()
    with Speaker(settings, warn=warn, play=False, save_audio=Path(os.devnull)) as speaker:
        speaker.say(REPLY[0])
        speaker.finish()
        assert not speaker.active
    assert len(warn) == 1 and expected in warn[0] and "\n" not in warn[0]


@pytest.mark.audio
def test_missing_device_setting_names_the_devices(null_sink) -> None:
    warn = Warnings()
    with Speaker(TTSSettings(device="no-such-device"), warn=warn) as speaker:
        speaker.say(REPLY[0])
        speaker.finish()
        assert not speaker.active
    assert len(warn) == 1 and "'no-such-device'" in warn[0] and "'pulse'" in warn[0]


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_no_audio_server_still_saves_and_keeps_stdout_for_text(tmp_path: Path) -> None:
    """No device at all: one warning on stderr, the reply text intact on stdout, file saved."""
    saved = tmp_path / "out.wav"
    code = f"""
        import sys
        from pathlib import Path
        from voicechat.settings import TTSSettings
        from voicechat.speakable import Utterance
        from voicechat.speaker import Speaker
        warn = lambda m: print("WARN", m, file=sys.stderr)
        with Speaker(TTSSettings(), save_audio=Path({str(saved)!r}), warn=warn) as speaker:
            for text in ("Hello there.", "How are you?"):
                speaker.say(Utterance(text, "other", True))
                print(text, flush=True)
            speaker.finish()
        print("active", speaker.active)
    """
    env = dict(os.environ, PULSE_SERVER=f"unix:{tmp_path}/nothing-here")
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello there.\nHow are you?\nactive True\n"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARN")]
    assert len(warnings) == 1 and "no audio output" in warnings[0] and "saving" in warnings[0]
    samples, rate = wav_samples(saved)
    assert len(samples) / rate > 1.0 and np.abs(samples).max() > 3000


def test_no_audio_server_without_saving_is_muted_quickly(tmp_path: Path) -> None:
    code = """
        import sys, time
        from voicechat.settings import TTSSettings
        from voicechat.speakable import Utterance
        from voicechat.speaker import Speaker
        warn = lambda m: print("WARN", m, file=sys.stderr)
        started = time.monotonic()
        with Speaker(TTSSettings(), warn=warn) as speaker:
            speaker.say(Utterance("Hello there.", "other", True))
            speaker.finish()
        print("active", speaker.active, time.monotonic() - started < 5)
    """
    env = dict(os.environ, PULSE_SERVER=f"unix:{tmp_path}/nothing-here")
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "active False True\n"
    assert result.stderr.count("WARN") == 1 and "--mute" in result.stderr
    assert "Traceback" not in result.stderr


# --- Ctrl+C through the whole product ----------------------------------------------------


@pytest.mark.audio
@pytest.mark.parametrize("phase", ["before-first-token", "mid-speech", "text-done-speech-on"])
def test_ctrl_c_in_each_phase_stops_sound_and_exits_130(
    phase: str, null_sink, monitor, ollama_server, tmp_path: Path
) -> None:
    """SIGINT to `voicechat ask`: sound stops within ~100 ms, the process ends with 130."""
    import signal

    from tests.fakeservers import Script

    words = "The sky looks blue because air scatters blue light more than red light. " * 4
    tokens = [" " + w for w in words.split()]
    fast = phase == "text-done-speech-on"
    ollama_server.enqueue(
        Script(
            tokens=tokens,
            first_delay=3.0 if phase == "before-first-token" else 0.2,
            tokens_per_s=None if fast else 8,
        )
    )
    profile = tmp_path / "p.yaml"
    profile.write_text(
        f"backend:\n  kind: ollama\n  base_url: {ollama_server.url}\n  model: qwen2.5:7b\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicechat", "ask", "--profile", str(profile), "Why blue?"],
        cwd=ROOT,
        env=null_sink.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert ollama_server.received.wait(20)
        if phase == "before-first-token":
            time.sleep(0.5)
        else:
            deadline = time.monotonic() + 20
            while monitor.onset() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert monitor.onset() is not None
            time.sleep(1.0)
        asked = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    time.sleep(0.3)
    sounds = monitor.sounds()
    if phase == "before-first-token":
        assert sounds == []
    else:
        assert sounds[-1][1] - asked < 0.15
