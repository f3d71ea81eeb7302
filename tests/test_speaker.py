"""The speaker end to end: real espeak synthesis, real playback into the null sink, faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.support import cli
from voicechat.audio.playback import IDLE_STOP_S
from voicechat.settings import TTSSettings
from voicechat.speakable import Piece
from voicechat.speaker import Speaker
from voicechat.tts import Audio, VoiceInfo, create_engine

ROOT = Path(__file__).resolve().parent.parent
REPLY = [
    Piece("天空之所以呈现蓝色，", "zh", False),
    Piece("主要是因为大气中的气体分子对太阳光的散射作用。", "zh", True),
    Piece("This is called Rayleigh scattering.", "other", True),
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

    def voices(self) -> list[VoiceInfo]:
        return self.inner.voices()

    def close(self) -> None:
        self.inner.close()


# --- speaking ------------------------------------------------------------------------------


FIRST_SOUND_S = 0.25
"""The first piece sounds this soon after it was said: 0.009-0.013 s here (6 runs, idle), one
CI run saw 0.122 s under load. The bound catches a stage that sleeps or polls on a timer
instead of waiting on its queue; latency itself is measured by scripts/bench_latency.py."""


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
    assert onset is not None and onset - sent < FIRST_SOUND_S
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


def test_each_turn_has_its_own_first_audio(null_sink) -> None:
    """A REPL's speaker lives across turns: the second turn's first audio is its own (it
    was the first turn's, and --stats showed a negative time)."""
    with Speaker(TTSSettings(), warn=Warnings()) as speaker:
        firsts = []
        for text in ("The first answer.", "The second answer."):
            speaker.start()  # a turn begins
            asked = time.monotonic()
            speaker.say(Piece(text, "other", True))
            speaker.finish()
            assert speaker.first_audio_at is not None
            firsts.append(speaker.first_audio_at - asked)
    assert all(0 <= first < FIRST_SOUND_S for first in firsts), firsts


def test_hungry_while_speech_is_about_to_run_dry(null_sink) -> None:
    with Speaker(TTSSettings(), warn=Warnings()) as speaker:
        assert speaker.hungry  # nothing to say yet
        speaker.say(Piece("This sentence takes well over a second to say aloud.", "other", True))
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
    speaker.say(Piece("Again.", "other", True))
    speaker.finish()
    monitor.wait_quiet(0.2)
    assert monitor.sounds()[-1][0] > asked + 0.3
    speaker.close()
    speaker.close()  # idempotent
    assert speaker_threads() == []


# --- faults --------------------------------------------------------------------------------


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
        from voicechat.speakable import Piece
        from voicechat.speaker import Speaker
        warn = lambda m: print("WARN", m, file=sys.stderr)
        with Speaker(TTSSettings(), save_audio=Path({str(saved)!r}), warn=warn) as speaker:
            for text in ("Hello there.", "How are you?"):
                speaker.say(Piece(text, "other", True))
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
        from voicechat.speakable import Piece
        from voicechat.speaker import Speaker
        warn = lambda m: print("WARN", m, file=sys.stderr)
        started = time.monotonic()
        with Speaker(TTSSettings(), warn=warn) as speaker:
            speaker.say(Piece("Hello there.", "other", True))
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


@pytest.mark.parametrize("phase", ["before-first-token", "mid-speech", "text-done-speech-on"])
def test_ctrl_c_in_each_phase_stops_sound_and_exits_130(
    phase: str, null_sink, monitor, ollama_server, tmp_path: Path
) -> None:
    """SIGINT to `voicechat ask`: sound stops within ~100 ms, the process ends with 130."""
    import signal

    from tests.support.fakeservers import Script

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
    proc = cli.start(
        "ask", "--profile", str(profile), "Why blue?", cwd=ROOT, env=null_sink.env, text=False
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
        _, err = proc.communicate(timeout=60)
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


# --- idle cost ---------------------------------------------------------------------------------


def test_idle_speech_threads_sleep_without_waking(null_sink) -> None:
    """Engine loaded, device open, nothing to say: the threads wait on their stage's
    condition, not on timers. Counted wake-ups, not time: a 0.1 s poll would be ~100."""
    with Speaker(TTSSettings(), warn=Warnings()) as speaker:
        assert speaker.wait_ready(10)
        before = speaker.wakeups
        time.sleep(5)
        assert speaker.wakeups - before <= 3
        # after speaking, the playback thread feeds silence for IDLE_STOP_S (paced by the
        # device), then stops the stream and sleeps again
        speaker.say(Piece("Hello.", "other", True))
        speaker.finish()
        time.sleep(IDLE_STOP_S + 0.5)
        before = speaker.wakeups
        time.sleep(3)
        assert speaker.wakeups - before <= 3


# --- interrupt from another thread, and what was heard ------------------------------------------

LONG = [
    Piece("The sky looks blue because the air scatters blue light.", "other", True),
    Piece("Sunsets are red for the very same reason.", "other", True),
    Piece("That is all there is to it.", "other", True),
]


def interrupt_from_another_thread(speaker: Speaker) -> float:
    """Call `interrupt()` from a fresh thread; returns when it was asked (monotonic)."""
    asked = time.monotonic()
    thread = threading.Thread(target=speaker.interrupt)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    return asked


def wait_onset(monitor, timeout: float = 10) -> float:
    deadline = time.monotonic() + timeout
    while monitor.onset() is None:
        assert time.monotonic() < deadline, "nothing was heard"
        time.sleep(0.01)
    return monitor.onset()


@pytest.mark.parametrize("after_s", [0.3, 1.2, 2.9])
def test_interrupt_while_playing_silences_and_reports_what_was_heard(
    after_s: float, null_sink, monitor
) -> None:
    with Speaker(TTSSettings(), warn=Warnings()) as speaker:
        assert speaker.wait_ready(10)
        for utterance in LONG:
            speaker.say(utterance)
        onset = wait_onset(monitor)
        time.sleep(after_s)
        asked = interrupt_from_another_thread(speaker)
        time.sleep(0.3)
        last = monitor.sounds()[-1][1]
        assert last - asked < 0.1, last - asked
        heard = speaker.heard()
        assert [h.text for h in heard] == [u.text for u in LONG[: len(heard)]]
        assert heard[-1].played_s < heard[-1].total_s  # cut mid-piece
        assert all(h.played_s == h.total_s for h in heard[:-1])
        # what it says was heard is what the monitor heard (pauses between pieces added)
        pauses = TTSSettings().sentence_pause * (len(heard) - 1)
        reported = sum(h.played_s for h in heard) + pauses
        assert abs(reported - (last - onset)) < 0.1, (reported, last - onset)
        # nothing more comes, and the next turn speaks again
        speaker.finish()
        speaker.start()
        assert speaker.heard() == []
        speaker.say(Piece("Again.", "other", True))
        speaker.finish()
        assert [h.text for h in speaker.heard()] == ["Again."]
        assert speaker.heard()[0].played_s == speaker.heard()[0].total_s
    assert speaker_threads() == []


def test_interrupt_between_pieces_keeps_the_rest_unsaid(null_sink, monitor) -> None:
    settings = TTSSettings(sentence_pause=1.0)
    with Speaker(settings, warn=Warnings()) as speaker:
        assert speaker.wait_ready(10)
        speaker.say(Piece("One.", "other", True))
        speaker.say(Piece("Two.", "other", True))
        wait_onset(monitor)
        time.sleep(0.6)  # "One." (~0.3 s) is over, its 1 s pause is playing
        asked = interrupt_from_another_thread(speaker)
        time.sleep(1.5)
        assert len(monitor.sounds()) == 1 and monitor.sounds()[0][1] < asked
        heard = speaker.heard()
        assert [h.text for h in heard] == ["One."] and heard[0].played_s == heard[0].total_s
    assert speaker_threads() == []


class SlowEngine:
    """Real espeak, after a real wait (a model loading, or a long synthesis)."""

    def __init__(self, settings: TTSSettings, load_s: float = 0.0, synth_s: float = 0.0) -> None:
        time.sleep(load_s)
        self.inner = create_engine(settings)
        self.synth_s = synth_s

    def synthesize(self, text: str, lang: str) -> Audio:
        time.sleep(self.synth_s)
        return self.inner.synthesize(text, lang)  # type: ignore[arg-type]

    def voices(self) -> list[VoiceInfo]:
        return self.inner.voices()

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("phase", ["engine-loading", "synthesizing"])
def test_interrupt_before_any_sound_means_none_comes(phase: str, null_sink, monitor) -> None:
    slow = {"load_s": 1.0} if phase == "engine-loading" else {"synth_s": 1.0}
    speaker = Speaker(TTSSettings(), warn=Warnings(), engine=lambda s: SlowEngine(s, **slow))
    with speaker:
        if phase == "synthesizing":
            assert speaker.wait_ready(10)
        for utterance in LONG:
            speaker.say(utterance)
        time.sleep(0.3)
        interrupt_from_another_thread(speaker)
        speaker.finish()
        time.sleep(1.5)  # the load / synthesis ends meanwhile: its audio is dropped
        assert monitor.sounds() == [] and speaker.heard() == []
        speaker.say(Piece("Now.", "other", True))  # usable afterwards
        speaker.finish()
        assert [h.text for h in speaker.heard()] == ["Now."]
    assert speaker_threads() == []


# --- the audio server dying mid-speech, and coming back ------------------------------------------

TURNS = """
    import sys
    from voicechat.settings import TTSSettings
    from voicechat.speakable import Piece
    from voicechat.speaker import Speaker
    warn = lambda m: print("WARN", m, file=sys.stderr, flush=True)
    text = "The sky looks blue because air scatters blue light more than red light. " * 3
    with Speaker(TTSSettings(), warn=warn) as speaker:
        for line in sys.stdin:  # one turn per line, as the REPL runs them
            speaker.start()
            speaker.say(Piece(text, "other", True))
            print("SPEAKING", flush=True)
            speaker.finish()
            print("DONE", speaker.active, len(speaker.heard()), flush=True)
"""


@pytest.mark.audio
def test_audio_server_dying_mid_speech_then_coming_back(tmp_path: Path) -> None:
    """One warning, the turn ends at once (its text would go on), no traceback; the next
    turn reopens the device on the restarted server and is heard."""
    from tests.support.audio_sink import NullSink, Recorder

    sink = NullSink.start()
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(TURNS)],
        cwd=ROOT, env={**os.environ, **sink.env}, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        with Recorder(sink.env) as recorder:
            proc.stdin.write("turn 1\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == "SPEAKING\n"
            deadline = time.monotonic() + 10
            while recorder.onset() is None:
                assert time.monotonic() < deadline, "nothing was heard"
                time.sleep(0.02)
            time.sleep(0.5)
        killed = time.monotonic()
        sink.kill()
        assert proc.stdout.readline() == "DONE False 1\n"  # muted; what started is reported
        assert time.monotonic() - killed < 2.0
        sink.restart()
        with Recorder(sink.env) as recorder:
            proc.stdin.write("turn 2\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == "SPEAKING\n"
            assert proc.stdout.readline() == "DONE True 1\n"
            time.sleep(0.3)
            assert recorder.audible_seconds() > 5.0  # the whole second turn was heard
        proc.stdin.close()
        assert proc.wait(20) == 0
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        sink.stop()
    warnings = [line for line in err.splitlines() if line.startswith("WARN")]
    assert len(warnings) == 1 and "audio output failed" in warnings[0], err
    assert "Traceback" not in err and "Exception" not in err


# --- `voicechat say`: speech is its one job ------------------------------------------------------


def say(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA", "VOICECHAT"))}
    clean.update(XDG_CONFIG_HOME=str(tmp_path / "config"), NO_COLOR="1", **env)
    return cli.run("say", *args, cwd=ROOT, env=clean, timeout=60)


def one_clean_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for sign in ("Traceback", "Exception ignored", "continues as text"):
        assert sign not in stderr
    return lines[0]


def test_say_without_an_audio_server_fails_with_its_own_words(tmp_path: Path) -> None:
    result = say(tmp_path, "Hello there.", PULSE_SERVER=f"unix:{tmp_path}/nothing-here")
    assert result.returncode == 13
    line = one_clean_line(result.stderr)
    assert "could not say it" in line and "no audio output" in line


def test_say_with_a_broken_engine_fails(tmp_path: Path) -> None:
    profiles = tmp_path / "config" / "voicechat" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "broken.yaml").write_text(
        "backend: {kind: ollama, base_url: 'http://127.0.0.1:9', model: m}\n"
        f"tts: {{engine: piper, model: '{tmp_path}/missing.onnx'}}\n"
    )
    result = say(tmp_path, "-p", "broken", "--mute", "--save-audio", str(tmp_path / "a.wav"), "Hi.")
    assert result.returncode == 13
    assert "no such model file" in one_clean_line(result.stderr)
    assert not (tmp_path / "a.wav").exists()


@pytest.mark.parametrize(
    ("target", "expected"),
    [("missing/a.wav", "does not exist"), ("dir.wav", "is a folder"), ("f/a.wav", "not a folder")],
)
def test_say_to_an_unwritable_path_is_refused_before_speaking(
    tmp_path: Path, target: str, expected: str
) -> None:
    (tmp_path / "dir.wav").mkdir()
    (tmp_path / "f").write_text("a file")
    result = say(tmp_path, "--mute", "--save-audio", str(tmp_path / target), "Hello.")
    assert result.returncode == 2
    line = one_clean_line(result.stderr)
    assert "--save-audio" in line and expected in line


def test_say_onto_a_full_disk_fails_and_leaves_the_old_file(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        (disk / "a.wav").write_bytes(b"old")
        text = "This sentence is long enough to need more room than the disk has. " * 3
        result = say(tmp_path, "--mute", "--save-audio", str(disk / "a.wav"), text)
        assert result.returncode == 13
        assert "disk is full" in one_clean_line(result.stderr)
        assert sorted(p.name for p in disk.iterdir()) == ["a.wav"]
        assert (disk / "a.wav").read_bytes() == b"old"
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_say_saves_atomically(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"old")
    result = say(tmp_path, "--mute", "--save-audio", str(wav), "Hello there.")
    assert result.returncode == 0 and result.stderr == ""
    samples, rate = wav_samples(wav)
    assert rate == 22050 and len(samples) / rate > 0.5
    assert [p.name for p in tmp_path.iterdir() if p.name != "config"] == ["a.wav"]


# --- mixed Chinese-English pieces ----------------------------------------------------------------


def test_doctests_of_the_run_splitter() -> None:
    import doctest

    from voicechat import speaker

    assert doctest.testmod(speaker).failed == 0


MIXED = Piece("我用Python写了一个小程序，然后用pytest测试了它。", "zh", True)


def envelope_match(a: np.ndarray, b: np.ndarray, window: int = 220) -> float:
    """Correlation of two sounds' loudness envelopes (their common length)."""
    n = min(len(a), len(b)) // window

    def envelope(x: np.ndarray) -> np.ndarray:
        return np.abs(x[: n * window].astype(np.float64)).reshape(n, window).mean(axis=1)

    return float(np.corrcoef(envelope(a), envelope(b))[0, 1])


def test_mixed_piece_is_spoken_run_by_run_with_each_language_voice(tmp_path: Path) -> None:
    """Each run is what the engine says for it alone, in its language's voice, back to back:
    the saved piece is as long as its runs' trimmed audio put together (no silence added at
    the joins), and the English run is the English voice's audio."""
    from voicechat.audio.pcm import as_samples, trim
    from voicechat.speaker import script_runs

    runs = script_runs(MIXED.text)
    assert [lang for _, lang in runs] == ["zh", "other", "zh", "other", "zh"]
    engine = create_engine(TTSSettings())
    alone = [trim(as_samples(engine.synthesize(t, lang).pcm), 22050) for t, lang in runs]
    whole = trim(as_samples(engine.synthesize(MIXED.text, "zh").pcm), 22050)
    engine.close()
    lengths = {}
    for mode in ("runs", "piece"):
        path = tmp_path / f"{mode}.wav"
        with Speaker(TTSSettings(mixed=mode, sentence_pause=0), play=False, save_audio=path) as sp:
            sp.say(MIXED)
            sp.finish()
        samples, _ = wav_samples(path)
        lengths[mode] = len(samples) / 22050
    expected = sum(len(a) for a in alone) / 22050
    # espeak varies run to run (up to ~35 ms measured); kept lead-ins would add ~0.2 s
    assert abs(lengths["runs"] - expected) < 0.06, (lengths, expected)
    assert abs(lengths["piece"] - len(whole) / 22050) < 0.06
    # in "runs" mode, "Python" is exactly what the English voice says for it alone
    path = tmp_path / "runs.wav"
    saved, _ = wav_samples(path)
    start = len(alone[0])
    heard = saved[start : start + len(alone[1])]
    engine = create_engine(TTSSettings())
    chinese = trim(as_samples(engine.synthesize(runs[1][0], "zh").pcm), 22050)
    engine.close()
    # espeak shifts a few samples between runs: compare loudness envelopes (10 ms windows)
    assert envelope_match(alone[1], heard) > 0.95
    assert envelope_match(chinese, heard) < 0.9  # the Chinese voice would sound different


def test_mixed_piece_joins_add_no_silence_on_the_device(null_sink, monitor) -> None:
    """Played, the runs follow each other without a gap: the longest silence in the mixed
    piece is no longer than the longest one inside any run spoken alone (+ 30 ms), and the
    piece lasts as long as its runs (measured: joins of 5-40 ms, like the gaps between words)."""
    from voicechat.audio.pcm import as_samples, trim
    from voicechat.speaker import script_runs

    engine = create_engine(TTSSettings())
    alone = [
        trim(as_samples(engine.synthesize(t, lang).pcm), 22050)
        for t, lang in script_runs(MIXED.text)
    ]
    engine.close()
    inner = max(longest_silence(samples, 22050) for samples in alone)
    with Speaker(TTSSettings(), warn=Warnings()) as speaker:
        assert speaker.wait_ready(10)
        speaker.say(MIXED)
        speaker.finish()
    monitor.wait_quiet(0.2)
    gaps = monitor.gaps()
    assert max(gaps, default=0.0) < inner + 0.03, (gaps, inner)
    # as long as the runs alone: espeak's own lead-in (~50 ms before an English run) would
    # add ~0.2 s over the four joins
    expected = sum(len(samples) for samples in alone) / 22050
    # (the same tolerance as the saved-vs-heard test above; underruns mean a busy machine)
    audible = monitor.audible_seconds()
    assert abs(audible - expected) < 0.08, (audible, expected, gaps, speaker.underruns)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_say_ended_by_a_signal_keeps_what_it_saved_and_leaves_no_part_file(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    """A service manager's SIGTERM (or a closed terminal's SIGHUP) while ``say`` waits on a
    pipe for more text: one line, 128 + the signal, and the audio said so far in place."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA", "VOICECHAT"))}
    clean.update(XDG_CONFIG_HOME=str(tmp_path / "config"), NO_COLOR="1")
    wav = tmp_path / "a.wav"
    proc = cli.start("say", "--mute", "--save-audio", str(wav), env=clean,
                     stdin=subprocess.PIPE)  # fmt: skip
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write("Hello there. This is the first part.\n")
    proc.stdin.flush()  # and the pipe stays open: say waits for more
    deadline = time.monotonic() + 30
    while not any(p.name.endswith(".part") and p.stat().st_size > 44 for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None, "nothing was saved"
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(timeout=30)  # stdin still open (communicate would close it: the end of the text)
    err = proc.stderr.read()
    proc.stdin.close()
    assert proc.returncode == code, err
    assert err == f"voicechat: ended by {sig.name}\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "config") == ["a.wav"]
    with wave.open(str(wav)) as saved:
        assert saved.getnframes() > 0.5 * saved.getframerate()  # the first part, whole
