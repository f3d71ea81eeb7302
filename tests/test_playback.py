"""The playback thread against the private PulseAudio null sink, recorded on its monitor."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from voicechat.audio.pcm import fade, resample, trim
from voicechat.audio.playback import Clip, Player

RATE = 22050


def tone(freq: float, seconds: float, rate: int = RATE, amp: float = 0.4) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return fade((amp * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16), rate)


def dominant(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float32)))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


# --- pure helpers --------------------------------------------------------------------------


def test_trim_cuts_padding_but_keeps_a_margin() -> None:
    sound = tone(440, 0.2)
    padded = np.concatenate([np.zeros(RATE // 2, np.int16), sound, np.zeros(RATE, np.int16)])
    out = trim(padded, RATE, keep_s=0.01)
    assert abs(len(out) - len(sound)) <= 2 * int(0.01 * RATE) + 2
    assert len(trim(np.zeros(1000, np.int16), RATE)) == 0


def test_fade_starts_and_ends_at_zero() -> None:
    loud = np.full(2000, 20000, np.int16)
    out = fade(loud, RATE)
    assert out[0] == 0 and out[-1] == 0 and out[1000] == 20000


def test_resample_keeps_pitch_and_duration() -> None:
    src = tone(440, 0.5, 22050)
    out = resample(src, 22050, 48000)
    assert abs(len(out) - 24000) <= 1
    assert abs(dominant(out, 48000) - 440) < 5
    assert resample(src, 22050, 22050) is src


# --- real playback -------------------------------------------------------------------------


@pytest.fixture
def player(null_sink):
    faults: list[str] = []
    p = Player(rate_hint=RATE, on_fault=faults.append)
    p.faults = faults  # type: ignore[attr-defined]
    p.start()
    assert p.wait_open(5), faults
    yield p
    p.close()


def test_clips_play_in_order_back_to_back(player: Player, monitor) -> None:
    freqs = [300, 600, 1200]
    start = time.monotonic()
    for f in freqs:
        assert player.put(Clip(tone(f, 0.3), RATE))
    assert player.drain(timeout=10)
    monitor.wait_quiet(0.2)
    sounds = monitor.sounds()
    # three 0.3 s tones with faded edges: heard as one sound, no gap between clips
    assert len(sounds) == 1, sounds
    begin, end = sounds[0]
    assert 0.85 < end - begin < 0.95
    assert begin - start < 0.1  # the device was open: first sound within a block or two
    assert player.first_audio_at is not None and abs(player.first_audio_at - begin) < 0.03
    # in order: the pitch of each third of what was heard
    samples, times = monitor._timeline()
    heard = samples[(times >= begin) & (times <= end)]
    thirds = np.array_split(heard, 3)
    assert [round(dominant(part[1000:-1000], 48000) / 100) * 100 for part in thirds] == freqs


def test_pause_after_a_sentence_is_heard(player: Player, monitor) -> None:
    player.put(Clip(tone(500, 0.2), RATE, pause=0.25))
    player.put(Clip(tone(500, 0.2), RATE))
    player.drain(timeout=10)
    monitor.wait_quiet(0.2)
    gaps = monitor.gaps()
    assert len(gaps) == 1 and 0.22 < gaps[0] < 0.3, gaps


def test_a_clip_after_idle_silence_starts_quickly(player: Player, monitor) -> None:
    player.put(Clip(tone(500, 0.1), RATE))
    player.drain(timeout=5)
    time.sleep(0.5)  # the thread feeds silence meanwhile
    sent = time.monotonic()
    player.put(Clip(tone(700, 0.1), RATE))
    player.drain(timeout=5)
    monitor.wait_quiet(0.2)
    assert monitor.sounds()[-1][0] - sent < 0.08


def test_interrupt_silences_within_100_ms_and_drops_the_queue(player: Player, monitor) -> None:
    for _ in range(3):
        player.put(Clip(tone(440, 1.0), RATE))
    time.sleep(0.4)
    asked = time.monotonic()
    player.interrupt()
    assert player.drain(timeout=0.5)  # nothing left to play
    time.sleep(0.4)
    last = monitor.sounds()[-1][1]
    assert last - asked < 0.1, last - asked
    # still usable afterwards
    player.put(Clip(tone(440, 0.2), RATE))
    player.drain(timeout=5)
    monitor.wait_quiet(0.2)
    assert monitor.sounds()[-1][1] > asked + 0.4


def test_ahead_counts_down_what_is_left_to_hear(player: Player) -> None:
    """What the speaker asks to notice that speech is about to run dry."""
    assert player.ahead_s() == 0.0
    player.put(Clip(tone(440, 0.6), RATE, pause=0.2))
    player.put(Clip(tone(440, 0.6), RATE))
    assert 1.2 < player.ahead_s() <= 1.4  # both clips (and the pause), none heard yet
    time.sleep(0.5)
    assert 0.6 < player.ahead_s() < 1.0
    assert player.drain(timeout=5)
    assert player.ahead_s() == 0.0
    player.put(Clip(tone(440, 1.0), RATE))
    player.put(Clip(tone(440, 1.0), RATE))
    time.sleep(0.2)
    player.interrupt()
    assert player.ahead_s() == 0.0  # dropped audio is not ahead


def test_backpressure_blocks_the_producer(player: Player) -> None:
    """The clip queue is bounded: a producer far ahead waits instead of piling up audio."""
    done = threading.Event()

    def produce() -> None:
        for _ in range(10):
            player.put(Clip(tone(440, 0.3), RATE))
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    assert not done.wait(0.5)  # 10 x 0.3 s cannot all be accepted in 0.5 s
    player.interrupt()
    assert done.wait(5)


def test_close_ends_the_thread(null_sink) -> None:
    p = Player(rate_hint=RATE)
    p.start()
    assert p.wait_open(5)
    p.put(Clip(tone(440, 1.0), RATE))
    p.close()
    assert not p.alive
    assert not [t for t in threading.enumerate() if t.name == "voicechat-playback"]


def test_missing_device_is_one_fault_naming_the_devices(null_sink) -> None:
    faults: list[str] = []
    p = Player("no-such-device", on_fault=faults.append)
    p.start()
    assert not p.wait_open(5)
    assert p.put(Clip(tone(440, 0.1), RATE)) is False
    assert p.drain(timeout=1)
    p.close()
    assert len(faults) == 1
    assert "tts.device 'no-such-device'" in faults[0] and "'pulse'" in faults[0]


# --- the device check the doctor runs (a fresh process: PortAudio lists devices at import) ------


def device_rows(env: dict[str, str], device: str = "") -> list[dict[str, object]]:
    import json
    import subprocess
    import sys

    code = (
        "import dataclasses, json, sys\n"
        "from voicechat.audio.playback import checks\n"
        "from voicechat.settings import TTSSettings\n"
        "rows = checks(TTSSettings(device=sys.argv[1] or None))\n"
        "print(json.dumps([dataclasses.asdict(r) for r in rows]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, device], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_device_check_on_the_null_sink_and_with_a_wrong_device(null_sink) -> None:
    import os

    env = {**os.environ, **null_sink.env}
    [row] = device_rows(env)
    assert row["name"] == "audio output" and row["ok"] is True and "accepts audio" in row["detail"]
    [row] = device_rows(env, "no-such-device")
    assert row["ok"] is False and "tts.device 'no-such-device'" in row["detail"]
    assert "set tts.device to one of" in row["fix"] and "'pulse'" in row["fix"]


def test_device_check_without_any_audio_server(tmp_path) -> None:
    import os

    [row] = device_rows(dict(os.environ, PULSE_SERVER=f"unix:{tmp_path}/nothing-here"))
    assert row["ok"] is False and "no audio output device" in row["detail"]
    assert "start PulseAudio" in row["fix"]
