#!/usr/bin/env python3
"""Start-up benchmark: how long until `voicechat --help` is done, and until `ask`'s request
leaves the process (measured at a local fake server, the moment the request arrives).

Baselines measured in the same run: a bare interpreter (`python -c pass`), the floor of any
CLI built on our libraries (`python -c "import requests, yaml"`: voicechat's own share is
`ask` minus that), and the openai SDK alone (what a CLI that imports it eagerly pays). Then
where the rest goes: the largest imports (`python -X importtime`), profile loading, and YAML
parsing (the C loader where PyYAML has it). Targets (dev machine): --help <= 0.15 s,
ask-to-request <= 0.25 s with the Ollama profile.

Needs the test extra (the fake servers): pip install -e '.[test]'

    python scripts/bench_startup.py [--runs 15] [--out DIR] [--no-save]

Besides printing, writes docs/benchmarks/startup/<date>.json and regenerates
docs/benchmarks/startup.md (scripts/benchlib.py).
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

import benchlib

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

try:
    from tests.support.fakeservers import FakeServer, Script
except ImportError as exc:  # pytest is missing after a plain install
    raise SystemExit(
        f"{exc}: this benchmark needs the test extra: pip install -e '.[test]'"
    ) from None

TARGETS = {"voicechat --help": 0.15, "ask -> request (ollama)": 0.25}
FLOOR = "python -c 'import requests, yaml' (floor)"
ASK = "ask -> request (ollama)"
PROFILE_TIMING = """
import time
t0 = time.perf_counter()
from voicechat import profile
t1 = time.perf_counter()
profile.load(None)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""
YAML_TIMING = """
import statistics, sys, time, yaml
text = open(sys.argv[1], encoding="utf-8").read()
for name in ("CSafeLoader", "SafeLoader"):
    loader = getattr(yaml, name, None)
    if loader is None:
        print(name, "absent")
        continue
    runs = []
    for _ in range(200):
        t = time.perf_counter()
        yaml.load(text, Loader=loader)
        runs.append(time.perf_counter() - t)
    print(name, statistics.median(runs))
"""


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


def largest_imports(cmd: list[str], env: dict[str, str], top: int = 8) -> list[tuple[str, int]]:
    """Top-level imports of ``cmd`` by cumulative microseconds (``python -X importtime``)."""
    result = subprocess.run(
        [cmd[0], "-X", "importtime", *cmd[1:]], env=env, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if name.startswith("  "):  # nested: counted in its parent's cumulative time
            continue
        rows.append((name.strip(), int(cumulative)))
    return sorted(rows, key=lambda row: -row[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    benchlib.add_arguments(parser)
    args = parser.parse_args()
    started = benchlib.start()
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
                FLOOR: lambda: timed([py, "-c", "import requests, yaml"], env),
                "python -c 'import openai' (baseline)": lambda: timed(
                    [py, "-c", "import openai"], env
                ),
                "voicechat --help": lambda: timed([*vc, "--help"], env),
                ASK: lambda: to_request([*vc, "ask", "--mute", "q"], ollama_env, ollama),
                "ask -> request (openai)": lambda: to_request(
                    [*vc, "ask", "-p", str(profile), "q"], env, oai
                ),
            }
            results = {}
            for name, case in cases.items():
                case()  # warm the OS file cache
                results[name] = statistics.median(case() for _ in range(args.runs))
            imports = largest_imports([*vc, "ask", "--mute", "q"], ollama_env)
        loading = [
            [float(x) for x in subprocess.run(
                [py, "-c", PROFILE_TIMING], env=ollama_env, capture_output=True, text=True,
                check=True,
            ).stdout.split()]
            for _ in range(args.runs)
        ]  # fmt: skip
        shipped = REPO / "configs" / "ollama-qwen2.5-7b.yaml"
        yaml_lines = subprocess.run(
            [py, "-c", YAML_TIMING, str(shipped)], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    base = results["python -c pass (baseline)"]
    print(f"median of {args.runs} runs, {sys.version.split()[0]} on {os.uname().machine}")
    print(f"{'case':40} {'median s':>9} {'x python':>9} {'target':>8}")
    for name, value in results.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else f"{target:.2f} {'ok' if value <= target else 'MISS'}"
        print(f"{name:40} {value:9.3f} {value / base:9.1f} {verdict:>8}")
    print(f"{'voicechat own share (ask - floor)':40} {results[ASK] - results[FLOOR]:9.3f}")
    print("\nwhere ask's start-up goes:")
    print("  largest top-level imports (python -X importtime, cumulative):")
    for name, micros in imports:
        print(f"    {name:36} {micros / 1e6:9.3f}")
    imp = statistics.median(row[0] for row in loading)
    load = statistics.median(row[1] for row in loading)
    print(f"  {'import voicechat.profile':38} {imp:9.3f}")
    print(f"  {'profile.load() (find, read, parse, check)':38} {load:9.3f}")
    yaml_s: dict[str, float | None] = {}
    for line in yaml_lines:
        name, value = line.split()
        shown = value if value == "absent" else f"{float(value):9.4f}"
        print(f"  {'YAML parse of the shipped profile, ' + name:38} {shown}")
        yaml_s[name] = None if value == "absent" else float(value)
    benchlib.finish(
        "startup",
        args,
        doc=__doc__,
        started=started,
        packages=("requests", "pyyaml", "openai", "typer", "rich"),
        summary={
            "--help s": results["voicechat --help"],
            "ask->request ollama s": results[ASK],
            "ask->request openai s": results["ask -> request (openai)"],
            "python -c pass s": base,
            "--help x python": results["voicechat --help"] / base,
            "own share s": results[ASK] - results[FLOOR],
        },
        legend={
            "--help s": f"voicechat --help, median (target {TARGETS['voicechat --help']} s)",
            "ask->request ollama s": f"ask until the request reaches the server, Ollama profile "
            f"(target {TARGETS[ASK]} s)",
            "ask->request openai s": "the same with an OpenAI profile (the SDK's import)",
            "python -c pass s": "the baseline: a bare interpreter, same run",
            "--help x python": "--help / python -c pass",
            "own share s": "voicechat's own share: ask (ollama) minus importing requests and yaml",
        },
        results={
            "runs": args.runs,
            "median_s": results,
            "x_python": {name: value / base for name, value in results.items()},
            "targets_s": TARGETS,
            "met": {name: results[name] <= target for name, target in TARGETS.items()},
            "own_share_s": results[ASK] - results[FLOOR],
            "largest_imports_s": {name: micros / 1e6 for name, micros in imports},
            "import_voicechat_profile_s": imp,
            "profile_load_s": load,
            "yaml_parse_shipped_profile_s": yaml_s,
        },
    )


if __name__ == "__main__":
    main()
