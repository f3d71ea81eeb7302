"""Shared fixtures, from tests/support/: fake model servers (server_fixtures.py), the audio
sink (audio_sink.py), a local Hugging Face hub (hub.py), the virtual microphone with real
speech (speech.py), loudspeaker echo (echo_fixtures.py) and a disk that fills up (disk.py).

The suite runs in a clean environment of its own (``pytest_configure``): a machine that has
been used (a user's profiles, a warm model cache, ``OLLAMA_HOST`` exported) must see the same
results as a fresh one, as CI does on the developer's own machine.

Tests marked ``audio`` play and record in real time through PulseAudio on a shared two-core
machine; a stall of the machine (not of voicechat) can make one miss its moment. They run
again up to twice on failure; other tests (some time a cancel or a timeout) once. The reruns
are counted in pytest's last line, so a flaky test stays visible while a consistent failure
still fails the run.
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

AUDIO_RERUNS = 2
OTHER_RERUNS = 1
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Reruns on failure (see the module docstring): twice for real-time audio, else once."""
    for item in items:
        if not item.get_closest_marker("flaky"):
            audio = item.get_closest_marker("audio") is not None
            item.add_marker(pytest.mark.flaky(reruns=AUDIO_RERUNS if audio else OTHER_RERUNS))
