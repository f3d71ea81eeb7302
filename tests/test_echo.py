"""Echo cancellation with real parts: Piper speech played through PortAudio on the test
PulseAudio, looped back into the virtual microphone (module-loopback,
tests/support/echo_fixtures.py), recorded through PortAudio, and cancelled by libspeexdsp using
the playback thread's tap."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from tests.support.echo_fixtures import Loopback, Speech
from voicechat.audio.echo import (
    RATE,
    REALIGN_S,
    EchoCanceller,
    PlayedTap,
    available,
    erle_db,
    estimate_delay,
    rms,
)

needs_speex = pytest.mark.skipif(not available(), reason="apt-get install libspeexdsp1")


def test_the_tap_is_one_sample_clock_with_silence_between_stretches() -> None:
    tap = PlayedTap(seconds=2.0)
    block = np.full(320, 1000, dtype=np.int16)  # 20 ms at 16 kHz
    t = 100.0
    for i in range(5):  # stamps jitter by a few ms: still one continuous stretch
        tap.push(block, RATE, t + 0.02 * (i + 1) + (0.003 if i % 2 else -0.002))
    ref = tap.reference(t, 1500)  # the first stamp was 2 ms early: the stretch starts there
    assert np.all(ref > 0.03)  # ~100 ms of sound, no holes from the jitter
    assert not np.any(tap.reference(t + 0.1, 320))  # nothing played after it
    # a new stretch 1 s later (the stream was stopped): silence in between
    tap.push(block, RATE, t + 1.12)
    gap = tap.reference(t + 0.2, 800 * 16)
    assert not np.any(gap[: 800 * 10])
    assert np.all(tap.reference(t + 1.1, 320) > 0.03)
    assert tap.playing_until() == pytest.approx(t + 1.12, abs=0.002)


def test_a_block_after_the_output_ran_dry_starts_a_new_stretch_at_its_own_time() -> None:
    tap = PlayedTap(seconds=2.0)
    block = np.full(320, 1000, dtype=np.int16)
    t = 100.0
    for i in range(5):
        tap.push(block, RATE, t + 0.02 * (i + 1))
    assert tap.stretches == 1
    # 30 ms late is jitter to the running clock; after an underrun it is where sound is
    tap.push(block, RATE, t + 0.15, restart=True)
    assert tap.stretches == 2
    assert not np.any(tap.reference(t + 0.1, 160))  # the gap the underrun left is silent
    assert np.all(tap.reference(t + 0.13, 320) > 0.03)
    # and ALSA's recovery may drop what was buffered: a block stamped before the clock's
    # end; the clock goes on from that block (what was dropped was never heard)
    tap.push(block, RATE, t + 0.14, restart=True)
    assert tap.stretches == 3
    assert tap.playing_until() == pytest.approx(t + 0.14)
    tap.push(block, RATE, t + 0.16)
    assert tap.stretches == 3 and tap.playing_until() == pytest.approx(t + 0.16)
    assert np.all(tap.reference(t + 0.12, 640) > 0.03)  # no hole where the drop was


def noise_speech(seconds: float, seed: int) -> np.ndarray:
    """White noise with a syllable-rate envelope: the reference's stand-in for speech."""
    rng = np.random.default_rng(seed)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * np.arange(int(seconds * RATE)) / RATE)
    return (rng.standard_normal(int(seconds * RATE)) * 0.1 * envelope).astype(np.float32)


def run_canceller(
    canceller: EchoCanceller,
    played: np.ndarray,
    heard: np.ndarray,
    t0: float = 50.0,
    *,
    restart_at: int | None = None,
    moved: float = 0.0,
    at: dict[int, Callable[[], object]] | None = None,
) -> np.ndarray:
    """Play ``played`` into the canceller's tap in 20 ms blocks (each heard 100 ms after it
    is written) while the microphone delivers ``heard`` in 512-sample frames, in step.
    ``restart_at``: from that sample on the tap's time stamps are ``moved`` s late (an
    underrun: a new stretch). ``at``: calls made after the frame ending at that sample."""
    block, ahead = 320, int(0.1 * RATE)
    outs: list[np.ndarray] = []
    for i in range(0, len(played), block):
        late = restart_at is not None and i >= restart_at
        canceller.tap.push(
            played[i : i + block], RATE, t0 + (i + block) / RATE + (moved if late else 0.0),
            restart=late and i == restart_at,
        )  # fmt: skip
        while (len(outs) + 1) * 512 <= i + block - ahead:
            end = (len(outs) + 1) * 512
            outs.append(canceller.process(heard[end - 512 : end], t0 + end / RATE))
            if at and end in at:
                at[end]()
    return np.concatenate(outs)


def delayed(played: np.ndarray, seconds: float, gain: float = 0.5) -> np.ndarray:
    lag = int(seconds * RATE)
    return gain * np.concatenate([np.zeros(lag, np.float32), played[:-lag]])


@needs_speex
def test_an_echo_that_comes_before_its_time_stamps_is_found_and_cancelled() -> None:
    """The reference's time stamps 40 ms late (an underrun's recovery dropped buffered
    audio): the echo precedes them, and the canceller reads the reference ahead."""
    played = noise_speech(4.0, 4)
    lead = int(0.04 * RATE)
    heard = 0.5 * np.concatenate([played[lead:], np.zeros(lead, np.float32)])
    rng = np.random.default_rng(4)
    heard += rng.standard_normal(len(heard)).astype(np.float32) * 1e-3  # room noise
    canceller = EchoCanceller(PlayedTap(), suppress=False)
    out = run_canceller(canceller, played, heard)
    mic = heard[: len(out)]
    assert canceller.delay.seconds == pytest.approx(-0.04, abs=0.002)
    half = len(out) // 2
    assert erle_db(mic[half:], out[half:]) > 20


@needs_speex
def test_after_a_restart_the_filter_keeps_the_echo_where_it_learned_it() -> None:
    """An underrun's new stretch is stamped 17 ms off: the re-measured delay moves the
    reference with it, so cancellation goes on at once instead of being learned again."""
    played = noise_speech(6.0, 5)
    heard = delayed(played, 0.06)
    canceller = EchoCanceller(PlayedTap(), suppress=False)
    restart = 3 * RATE
    out = run_canceller(canceller, played, heard, restart_at=restart, moved=-0.017)
    assert canceller.realigned == 2 and canceller.settled  # the start, the underrun
    assert canceller.delay.seconds == pytest.approx(0.077, abs=0.002)
    mic = heard[: len(out)]
    resumed = restart + int((0.1 + REALIGN_S) * RATE)  # re-measured by then
    after = slice(resumed, resumed + RATE // 4)
    assert erle_db(mic[after], out[after]) > 20


def test_the_tap_resamples_to_16k_and_forgets_what_is_older_than_its_length() -> None:
    tap = PlayedTap(seconds=1.0)
    tone = (np.sin(np.arange(2205) * 2 * np.pi * 440 / 22050) * 16000).astype(np.int16)
    for i in range(30):  # 3 s at 22.05 kHz in 100 ms blocks
        tap.push(tone, 22050, 10.0 + 0.1 * (i + 1))
    assert tap.pushed_s == pytest.approx(3.0, abs=0.01)
    assert not np.any(tap.reference(10.0, RATE))  # over a second old: forgotten
    recent = tap.reference(12.5, RATE // 2)
    assert rms(recent) == pytest.approx(16000 / 32768 / np.sqrt(2), rel=0.05)


@needs_speex
def test_played_speech_looped_back_is_aligned_and_cancelled(
    loopback: Loopback, replies: list[Speech]
) -> None:
    from voicechat.audio.microphone import Microphone
    from voicechat.audio.playback import Clip, Player

    tap = PlayedTap()
    canceller = EchoCanceller(tap)
    player = Player()
    player.tap = tap
    player.start()
    assert player.wait_open(10)
    mic_frames: list[np.ndarray] = []
    out_frames: list[np.ndarray] = []
    with Microphone() as mic:
        assert mic.live.wait(10), "the microphone delivered nothing"  # 2 s on the test rig
        done = threading.Event()

        def consume() -> None:
            for frame, at in mic.frames():
                mic_frames.append(frame)
                out_frames.append(canceller.process(frame, at))
                if done.is_set():
                    return

        reader = threading.Thread(target=consume)
        reader.start()
        try:
            for speech in replies[:2]:
                assert player.put(Clip(speech.samples, speech.rate, text=speech.text))
            assert player.drain(60)
        finally:
            done.set()
            reader.join(5)
            player.close()
    mic_all, out_all = np.concatenate(mic_frames), np.concatenate(out_frames)
    # the loopback's delay was found, and the echo is a near copy of the reference
    assert canceller.delay.strength > 0.5  # no echo measures < 0.1
    assert 0.0 <= canceller.delay.seconds <= 0.4
    # after converging (the first seconds), the echo is at least 15 dB down
    loud = [
        i
        for i in range(len(mic_all) // RATE * RATE - RATE, 0, -RATE // 2)
        if rms(mic_all[i : i + RATE]) > 0.01
    ][:3]
    assert loud, "no echo reached the microphone"
    reductions = [erle_db(mic_all[i : i + RATE], out_all[i : i + RATE]) for i in loud]
    assert min(reductions) > 15, reductions


def test_delay_estimation_ignores_a_reference_with_no_echo() -> None:
    rng = np.random.default_rng(2)
    ref = rng.standard_normal(RATE).astype(np.float32)
    mic = rng.standard_normal(RATE).astype(np.float32) * 0.1  # unrelated noise
    assert estimate_delay(ref, mic).strength < 0.1
