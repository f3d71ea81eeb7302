"""Shared fixtures, from tests/support/: fake model servers (server_fixtures.py), the audio
sink (audio_sink.py), a local Hugging Face hub (hub.py), the virtual microphone with real
speech (speech.py), loudspeaker echo (echo_fixtures.py) and a disk that fills up (disk.py).

The suite runs in a clean environment of its own (``pytest_configure``): a machine that has
been used (a user's profiles, a warm model cache, ``OLLAMA_HOST`` exported) must see the same
results as a fresh one, as CI does on the developer's own machine.

The ``audio`` mark follows from the fixtures (``pytest_collection_modifyitems``): a test that
uses the private PulseAudio server (``null_sink``, and through it ``monitor``, ``virtual_mic``,
``loopback``) is marked ``audio``, so the mark cannot be forgotten and a module's other tests
stay in the fast tier. A test that reaches PulseAudio another way says so with
``@pytest.mark.audio`` itself.

Tests marked ``audio`` play and record in real time through PulseAudio on a shared two-core
machine; a stall of the machine (not of voicechat) can make one miss its moment. They alone
run again on failure, up to twice; each rerun shows as an ``R`` with the failed attempt's
traceback (``--rerun-show-tracebacks``) and is counted in pytest's last line, so a flaky
test stays visible while a consistent failure still fails the run. Any other test must pass
the first time: a rerun would hide its non-determinism.
"""

import itertools
import os
import re
import shutil
import sys
import tempfile

import pytest

sys.dont_write_bytecode = False
"""Bytecode is cached (in the ignored ``__pycache__`` folders) even where
``PYTHONDONTWRITEBYTECODE`` is set, as it is on our machines: without the cache, every worker
rewrote and compiled every test module again, about 2 s of CPU each."""

pytest_plugins = [
    "tests.support.server_fixtures",
    "tests.support.audio_sink",
    "tests.support.hub",
    "tests.support.speech",
    "tests.support.echo_fixtures",
    "tests.support.disk",
    "tests.support.cli",
]

AUDIO_FIXTURE = "null_sink"
"""The private PulseAudio server: every fixture that plays or records stands on it."""
AUDIO_RERUNS = 2
SPEECH_FIXTURES = frozenset({"recognizer", "english"})
"""Whisper loaded and Piper's speech synthesized once per process (session fixtures): their
tests run in one worker (``--dist loadgroup``), which pays for them once."""
WORKERS_PER_CPU = 2
"""Worker processes per CPU for a selection without audio tests: a test spends much of its
time waiting for a child process, a pseudo-terminal or a local server, so two per CPU keep
the CPUs busy (on the 2-core machine the fast tier took 122 s with 4, 129 s with 3)."""
MAX_WORKERS = 8
"""Each worker imports and collects the suite (~2 s of CPU)."""
AUDIO_WORKERS = 3
"""Worker processes for the audio tests alone: a real-time test leaves the CPU idle most of
the time (one at a time, the audio tier kept 0.3 of a core busy on average for 9 minutes),
so three run side by side (3.5 minutes, 0.8 of a core), each worker with a PulseAudio
server of its own."""
SCRATCH = pytest.StashKey[str]()
# settings voicechat reads from the environment: the tests set what they need themselves
USER_VARIABLES = (
    "OLLAMA_HOST",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "VOICECHAT_GGUF",
    "VOICECHAT_NO_HISTORY",
    "VOICECHAT_PROFILE",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "NO_COLOR",
)


def pytest_configure(config: pytest.Config) -> None:
    """Point the user's folders at an empty scratch folder and drop the user's settings."""
    home = config.stash[SCRATCH] = tempfile.mkdtemp(prefix="voicechat-tests-")
    for name in ("CONFIG", "DATA", "STATE", "CACHE"):
        os.environ[f"XDG_{name}_HOME"] = os.path.join(home, name.lower())
    os.environ["HF_HOME"] = os.path.join(home, "hf")
    for name in USER_VARIABLES:
        os.environ.pop(name, None)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(config.stash.get(SCRATCH, ""), ignore_errors=True)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """How many worker processes ``-n auto`` (in addopts) starts, from what ``-m`` selects:

    - no audio test: ``WORKERS_PER_CPU`` per CPU (the fast tier);
    - audio tests only: ``AUDIO_WORKERS``;
    - both (``python -m pytest`` with no ``-m``): none, one test at a time, as parallel fast
      tests would take the CPU that real-time tests need.

    ``PYTEST_XDIST_AUTO_NUM_WORKERS=N`` (pytest-xdist's own setting) still decides.
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    markexpr = config.option.markexpr
    if not selects(markexpr, audio=True):
        return min(MAX_WORKERS, WORKERS_PER_CPU * len(os.sched_getaffinity(0)))
    if not selects(markexpr, audio=False):
        return AUDIO_WORKERS
    return 0


def selects(markexpr: str, audio: bool) -> bool:
    """Whether ``-m markexpr`` can select a test that is (or is not) marked ``audio``,
    whatever its other marks."""
    if not markexpr:
        return True
    from _pytest.mark.expression import Expression  # pytest's own parser of -m

    expression = Expression.compile(markexpr)
    others = sorted(set(re.findall(r"[^\s()]+", markexpr)) - {"and", "or", "not", "audio"})
    return any(
        expression.evaluate(
            lambda name, marks=marks, **_: name in marks or (name == "audio" and audio)
        )
        for n in range(len(others) + 1)
        for marks in itertools.combinations(others, n)
    )


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects on the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``audio`` mark from the fixtures and reruns for audio tests only (see above); the
    groups that keep tests together in one parallel worker (``--dist loadgroup``)."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if AUDIO_FIXTURE in fixtures:
            item.add_marker(pytest.mark.audio)
        if item.get_closest_marker("audio"):
            if not item.get_closest_marker("flaky"):
                item.add_marker(pytest.mark.flaky(reruns=AUDIO_RERUNS))
        elif SPEECH_FIXTURES.intersection(fixtures):
            item.add_marker(pytest.mark.xdist_group("speech"))
