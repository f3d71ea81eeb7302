"""One reply played while barge-in watches the microphone, and what happened (`Trial`).

Shared by tests/test_bargein.py and scripts/bench_bargein.py: Piper's voice through the real
`Player` on the test PulseAudio, its echo looped back into the virtual microphone
(tests/support/echo_fixtures.py), the user's WAV played into the same microphone at a known time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.support.echo_fixtures import Speech
from tests.support.speech import VirtualMic, speech_seconds
from voicechat.audio.playback import Clip, Heard, Player
from voicechat.questions.bargein import BargedIn, BargeIn


@dataclass
class Trial:
    barged: BargedIn | None
    stopped_at: float | None
    """When `Player.interrupt` returned (the fade played, the stream stopped)."""
    user_onset_at: float | None
    heard: list[Heard]
    note: str = ""
    """The canceller's state after the reply (shown when a test fails)."""
    let_go: int = 0
    """``keyword``: speech the watch heard and let go (`Watch.let_go`)."""


def play_reply(
    bi: BargeIn,
    player: Player,
    mic,
    speech: Speech,
    virtual_mic: VirtualMic | None = None,
    user: Path | None = None,
    user_after: float = 1.0,
    recognize=None,
) -> Trial:
    """Play one reply while watching; the user's WAV starts ``user_after`` s into it.
    ``recognize``: the watch's (``keyword`` mode)."""
    stopped: list[float] = []

    def barge_in() -> None:
        player.interrupt()
        stopped.append(time.monotonic())

    user_onset_at = None
    proc = None
    # the test rig's microphone (a null sink's monitor) can take 2 s to deliver its first
    # block: a reply played before then is neither aligned nor watched
    assert mic.live.wait(10), "the microphone delivered nothing"
    # nothing read the microphone since the last reply (the product's listener does): a
    # backlog of old frames would be watched against a reference that has forgotten them,
    # and once over `QUEUE_S` new blocks were dropped (seen: replies stopping themselves)
    mic.drain()
    player.forget_heard()
    with bi.watch(mic, barge_in, recognize) as watch:
        assert player.put(Clip(speech.samples, speech.rate, text=speech.text))
        if user is not None and virtual_mic is not None:
            # the clip is synthesized already: it starts within a block of being queued
            time.sleep(user_after)
            spawned = time.monotonic()
            proc = virtual_mic.play(user)
            user_onset_at = spawned + speech_seconds(user)[0]
        player.drain(60)
        heard = player.heard()
        if user is None:
            # let the echo tail reach the microphone before the watch ends
            time.sleep(0.3)
    barged = watch.wait()
    if proc is not None:
        proc.wait(timeout=30)
    c = bi.canceller
    d = bi.detector
    note = (
        f"delay {c.delay} stretches {bi.tap.stretches} realigned {c.realigned} "
        f"dropped {mic.dropped} mic clock moved {mic.clock.moved} "
        f"residual {10 * np.log10(d.residual):.0f} dB learned {d.learned} armed {d.armed} "
        f"pushed {bi.tap.pushed_s:.1f} s"
        if c
        else ""
    )
    return Trial(barged, stopped[0] if stopped else None, user_onset_at, heard, note, watch.let_go)
