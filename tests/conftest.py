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

import os
import shutil
import tempfile

import pytest

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


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects on the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``audio`` mark from the fixtures, and reruns for audio tests only (see above)."""
    for item in items:
        if AUDIO_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.audio)
        if item.get_closest_marker("audio") and not item.get_closest_marker("flaky"):
            item.add_marker(pytest.mark.flaky(reruns=AUDIO_RERUNS))
