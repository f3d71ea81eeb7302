"""Time to first audio of `voicechat ask` against the article's method, measured on real audio.

Both run in the same session against the same scripted Ollama server (tests/support/fakeservers.py:
``first`` seconds to the first token, then ``rate`` tokens per second, default 0.5 s and 8
tokens/s: a 7B model on a Jetson Orin Nano) and play into a private PulseAudio null sink
whose monitor is recorded (tests/support/audio_sink.py). The clock starts when the server receives
the request ("question sent") and stops at the first audible sample on the monitor.

- ours: ``voicechat ask --profile <temp profile> --save-audio <tmp.wav>`` as a subprocess;
  the saved WAV is exactly what was spoken, so silences longer than any silence inside it
  (plus 50 ms) are gaps the pipeline added ("extra gaps").
- article: scripts/article_baseline.py (sentences cut at 。！？, pyttsx3 say()+runAndWait(),
  played by aplay through ALSA's pulse plugin into the same sink).

Also printed: peak RSS of `voicechat ask` (os.wait4), target <= 100 MB.

Besides printing, writes docs/benchmarks/latency/<date>.json and regenerates
docs/benchmarks/latency.md (scripts/benchlib.py).

Usage: python scripts/bench_latency.py [--rate 8] [--first 0.5] [--only zh|en] [--runs N]
       [--out DIR] [--no-save]
Needs: pulseaudio pulseaudio-utils libasound2-plugins alsa-utils libportaudio2 libespeak-ng1.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import benchlib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.audio_sink import NullSink, Recorder  # noqa: E402
from tests.support.fakeservers import FakeServer, Script  # noqa: E402

SEED = Path(os.environ.get("VOICECHAT_SEED", ROOT.parent / "shared/corpus/seed_sky_zh.txt"))
ENGLISH = """\
## Why is the sky blue?

Sunlight contains **all colours** of light. When it enters the atmosphere, the molecules \
of the air scatter short wavelengths much more strongly than long ones; this is called \
*Rayleigh scattering*.

- Blue light is scattered about five times more than red light.
- Our eyes are more sensitive to blue than to violet, so the sky looks blue.

At sunset the light crosses much more air, so most of the blue is scattered away and the \
sky turns orange and red. See https://en.wikipedia.org/wiki/Rayleigh_scattering for more.
"""
QUESTIONS = {"zh": "天空为什么是蓝色的", "en": "Why is the sky blue?"}
EXTRA_GAP_S = 0.05


def tokens(text: str) -> list[str]:
    """Text cut like an LLM tokenizer would, roughly: a Chinese token is 1-2 characters
    (1.5 on average, as Qwen's), an English token a word with its leading space."""
    out: list[str] = []
    for piece in re.findall(r"[\u4e00-\u9fff]+| ?[A-Za-z0-9']+|\s+|.", text, flags=re.S):
        if "\u4e00" <= piece[0] <= "\u9fff":
            i, size = 0, 1
            while i < len(piece):
                out.append(piece[i : i + size])
                i += size
                size = 3 - size  # 1, 2, 1, 2, ...
        else:
            out.append(piece)
    return out


@dataclass
class Result:
    first_audio: float | None
    """Seconds from the request reaching the server to the first audible sample."""
    total: float | None
    """Seconds from the request to the last audible sample."""
    longest_gap: float
    extra_gaps: list[float]
    """Silences longer than the text's own pauses while the next chunk's text had already
    arrived: what the pipeline added (only known for ours)."""
    rss_mb: float | None
    returncode: int


def chunk_times(toks: list[str], first: float, rate: float) -> list[float]:
    """When each speakable chunk's text was complete (seconds after the request), by running
    the product's own chunker over the scripted tokens."""
    from voicechat.settings import ChunkingSettings
    from voicechat.speakable import Speakable

    speakable = Speakable(ChunkingSettings())
    times = []
    for i, tok in enumerate(toks):
        times += [first + i / rate for _ in speakable.feed(tok)]
    times += [first + (len(toks) - 1) / rate for _ in speakable.flush()]
    return times


def peak_rss_mb(pid: int, done: threading.Event, out: list[float]) -> None:
    """Poll VmHWM (peak RSS since exec). getrusage of a child would count the pages it
    shared with this process between fork and exec."""
    peak = 0
    while not done.is_set():
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            break
        done.wait(0.05)
    out.append(peak / 1024)


def run(
    cmd: list[str],
    env: dict[str, str],
    server: FakeServer,
    rec: Recorder,
    saved: Path | None,
    ready: list[float] | None = None,
) -> Result:
    rec.reset()
    server.received.clear()
    sent: list[float] = []

    def watch() -> None:
        if server.received.wait(60):
            sent.append(time.monotonic())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    done, rss = threading.Event(), []
    poller = threading.Thread(target=peak_rss_mb, args=(proc.pid, done, rss), daemon=True)
    poller.start()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    # stop polling just before reaping, while /proc/PID still shows the process
    while proc.poll() is None:
        time.sleep(0.02)
    done.set()
    poller.join(1)
    if proc.returncode != 0:
        print(f"  {cmd[1]} exited {proc.returncode}: {err.strip()[-400:]}", file=sys.stderr)
    rec.wait_quiet(0.5, timeout=10)
    watcher.join(1)
    sounds = rec.sounds()
    start = sent[0] if sent else None
    gaps = rec.gaps()
    extra: list[float] = []
    if saved is not None and saved.exists() and start is not None and ready is not None:
        allowed = longest_silence(saved) + EXTRA_GAP_S
        for (_, g0), (g1, _) in itertools.pairwise(sounds):
            waiting = any(g0 - start - EXTRA_GAP_S <= t <= g1 - start for t in ready)
            if g1 - g0 > allowed and not waiting:
                extra.append(g1 - g0)
    return Result(
        first_audio=sounds[0][0] - start if sounds and start else None,
        total=sounds[-1][1] - start if sounds and start else None,
        longest_gap=max(gaps, default=0.0),
        extra_gaps=extra,
        rss_mb=rss[0] if rss else None,
        returncode=proc.returncode,
    )


def longest_silence(path: Path, threshold: int = 300) -> float:
    import numpy as np

    with wave.open(str(path), "rb") as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    win = int(rate * 0.005)
    n = len(samples) // win
    quiet = np.abs(samples[: n * win].astype(np.int32)).reshape(n, win).max(1) <= threshold
    best = count = 0
    for q in quiet:
        count = count + 1 if q else 0
        best = max(best, count)
    return best * 0.005


def profile(folder: Path, url: str) -> Path:
    path = folder / "bench.yaml"
    path.write_text(
        "description: bench_latency scripted server\n"
        f"backend:\n  kind: ollama\n  base_url: {url}\n  model: qwen2.5:7b\n"
        "tts:\n  engine: pyttsx3\nchunking:\n  mode: clause\n",
        encoding="utf-8",
    )
    return path


def fmt(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.2f}"


def bench(
    lang: str, text: str, args: argparse.Namespace, sink: NullSink, rec: Recorder
) -> dict[str, Any]:
    """One language's runs, printed; what was printed (``median_ratio``: ours / article)."""
    toks = tokens(text)
    script = Script(tokens=toks, first_delay=args.first, tokens_per_s=args.rate)
    text_done = args.first + (len(toks) - 1) / args.rate
    print(
        f"\n[{lang}] {len(text)} characters, {len(toks)} tokens; text complete at "
        f"{text_done:.1f} s ({args.rate:g} tokens/s, first token {args.first:g} s)"
    )
    ratios = []
    runs: list[dict[str, Any]] = []
    ready = chunk_times(toks, args.first, args.rate)
    with tempfile.TemporaryDirectory() as tmp, FakeServer("ollama", check_model=False) as server:
        server.default = script
        prof = profile(Path(tmp), server.url)
        saved = Path(tmp) / "ours.wav"
        ours_cmd = [sys.executable, "-m", "voicechat", "ask", "--profile", str(prof)]
        ours_cmd += ["--save-audio", str(saved), QUESTIONS[lang]]
        article_cmd = [sys.executable, str(ROOT / "scripts/article_baseline.py")]
        article_cmd += [f"{server.url}/api/chat", "qwen2.5:7b", QUESTIONS[lang]]
        for i in range(args.runs):
            ours = run(ours_cmd, sink.env, server, rec, saved, ready)
            article = run(article_cmd, sink.env, server, rec, None)
            ratio = (
                ours.first_audio / article.first_audio
                if ours.first_audio and article.first_audio
                else float("nan")
            )
            ratios.append(ratio)
            print(
                f"  run {i + 1}: time to first audio  ours {fmt(ours.first_audio)} s   "
                f"article {fmt(article.first_audio)} s   ratio {ratio:.2f}"
            )
            print(
                f"         total (last sound)   ours {fmt(ours.total)} s   "
                f"article {fmt(article.total)} s"
            )
            print(
                f"         longest silence      ours {ours.longest_gap:6.2f} s   "
                f"article {article.longest_gap:6.2f} s"
            )
            extra = ", ".join(f"{g:.2f}" for g in ours.extra_gaps) or "none"
            print(
                f"         ours: silences beyond the text's own pauses (+{EXTRA_GAP_S * 1000:.0f}"
                f" ms) while the next chunk's text was there: {extra}"
            )
            print(
                f"         ours: peak RSS of voicechat ask {fmt(ours.rss_mb)} MB "
                f"(target <= 100 MB); exit {ours.returncode}"
            )
            runs.append({"ours": asdict(ours), "article": asdict(article), "ratio": ratio})
    return {
        "characters": len(text),
        "tokens": len(toks),
        "text_complete_s": text_done,
        "runs": runs,
        "median_ratio": statistics.median(ratios),
    }


LEGEND = {
    "zh ours s": "the article's reply (Chinese): question sent to first audio, median",
    "zh article s": "the same reply, the article's method, same run",
    "zh ours/article": "median of the runs' ratios (target <= 0.45)",
    "en ours s": "an English Markdown reply: question sent to first audio, median",
    "en article s": "the same reply, the article's method, same run",
    "en ours/article": "median of the runs' ratios",
    "peak RSS MB": "the largest peak RSS of voicechat ask over all runs (target <= 100)",
}


def summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The headline figures of the table in docs/benchmarks/latency.md."""
    row: dict[str, Any] = {}
    for lang, got in results.items():
        for who in ("ours", "article"):
            row[f"{lang} {who} s"] = benchlib.median(r[who]["first_audio"] for r in got["runs"])
        row[f"{lang} ours/article"] = got["median_ratio"]
    rss = [run["ours"]["rss_mb"] for got in results.values() for run in got["runs"]]
    row["peak RSS MB"] = max((r for r in rss if r is not None), default=None)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=8.0, help="tokens per second")
    parser.add_argument("--first", type=float, default=0.5, help="seconds to the first token")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--only", choices=("zh", "en"))
    benchlib.add_arguments(parser)
    args = parser.parse_args()
    started = benchlib.start()
    replies = {"zh": SEED.read_text(encoding="utf-8"), "en": ENGLISH}
    with NullSink.start() as sink, Recorder(sink.env) as rec:
        results = {}
        for lang, text in replies.items():
            if args.only in (None, lang):
                results[lang] = bench(lang, text, args, sink, rec)
    print()
    for lang, got in results.items():
        ratio = got["median_ratio"]
        verdict = "meets" if lang != "zh" or ratio <= 0.45 else "MISSES"
        note = f" ({verdict} the <= 0.45x target)" if lang == "zh" else ""
        print(f"[{lang}] time to first audio, ours / article (median): {ratio:.2f}x{note}")
    benchlib.finish(
        "latency",
        args,
        doc=__doc__,
        started=started,
        packages=("pyttsx3", "sounddevice"),
        summary=summary(results),
        legend=LEGEND,
        results={
            "extra_gap_s": EXTRA_GAP_S,
            "languages": results,
            "zh_meets_0_45x": results["zh"]["median_ratio"] <= 0.45 if "zh" in results else None,
        },
    )


if __name__ == "__main__":
    main()
