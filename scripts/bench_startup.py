#!/usr/bin/env python3
"""Start-up benchmark: how long until `voicechat --help` is done, and until `ask`'s request
leaves the process (measured at a local fake server, the moment the request arrives).

Baselines measured in the same run: a bare interpreter (`python -c pass`), and importing
the openai SDK alone (what a CLI that imports it eagerly pays). Targets (dev machine):
--help <= 0.15 s, ask-to-request <= 0.25 s with the Ollama profile.

    python scripts/bench_startup.py [--runs 15]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fakeservers import FakeServer, Script  # noqa: E402

TARGETS = {"voicechat --help": 0.15, "ask -> request (ollama)": 0.25}


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def to_request(cmd: list[str], env: dict[str, str], server: FakeServer) -> float:
    server.received.clear()
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if not server.received.wait(30):
        proc.kill()
        raise SystemExit("the request never arrived: is voicechat installed?")
    elapsed = time.perf_counter() - started
    proc.wait(30)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA", "OPENAI"))}
        env.update(XDG_CONFIG_HOME=tmp, NO_COLOR="1")
        with FakeServer("ollama") as ollama, FakeServer("openai", models=["m"]) as oai:
            ollama.default = oai.default = Script(tokens=["ok"])
            profile = Path(tmp) / "oai.yaml"
            profile.write_text(
                f"backend: {{kind: openai, base_url: '{oai.url}', model: m}}\n"
                "tts: {engine: none}\n"
            )
            vc = [py, "-m", "voicechat"]
            ollama_env = dict(env, OLLAMA_HOST=ollama.url)
            cases = {
                "python -c pass (baseline)": lambda: timed([py, "-c", "pass"], env),
                "python -c 'import openai' (baseline)": lambda: timed(
                    [py, "-c", "import openai"], env
                ),
                "voicechat --help": lambda: timed([*vc, "--help"], env),
                "ask -> request (ollama)": lambda: to_request(
                    [*vc, "ask", "--mute", "q"], ollama_env, ollama
                ),
                "ask -> request (openai)": lambda: to_request(
                    [*vc, "ask", "-p", str(profile), "q"], env, oai
                ),
            }
            results = {}
            for name, case in cases.items():
                case()  # warm the OS file cache
                results[name] = statistics.median(case() for _ in range(args.runs))
    base = results["python -c pass (baseline)"]
    print(f"median of {args.runs} runs, {sys.version.split()[0]} on {os.uname().machine}")
    print(f"{'case':40} {'median s':>9} {'x python':>9} {'target':>8}")
    for name, value in results.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else f"{target:.2f} {'ok' if value <= target else 'MISS'}"
        print(f"{name:40} {value:9.3f} {value / base:9.1f} {verdict:>8}")


if __name__ == "__main__":
    main()
