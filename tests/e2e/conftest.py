"""Fixtures for the realserver tier: the servers `scripts/e2e_real_server.sh` started (llama.cpp's
own, through xllamacpp: Gemma 3 270M, a base model, and SmolLM2-135M-Instruct), a profile
pointing at one, `voicechat` as a real process, and a private second server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.environ import clean_env

URL_ENV = "VOICECHAT_E2E_URL"
INSTRUCT_URL_ENV = "VOICECHAT_E2E_INSTRUCT_URL"
MODEL_ALIAS = "gemma3-270m"
INSTRUCT_ALIAS = "smollm2-135m-instruct"
LAUNCHER = Path(__file__).with_name("llama_server.py")
SKIP_REASON = (
    f"the realserver tier needs a real llama.cpp server: run scripts/e2e_real_server.sh "
    f"(or set {URL_ENV} to a running server's /v1 URL)"
)

realserver = [
    pytest.mark.realserver,
    pytest.mark.skipif(not os.environ.get(URL_ENV), reason=SKIP_REASON),
]
"""``pytestmark`` for every module of the tier."""

Run = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def server_url() -> str:
    url = os.environ.get(URL_ENV, "").rstrip("/")
    if not url:
        pytest.skip(SKIP_REASON)
    return url


@pytest.fixture(scope="session")
def instruct_url() -> str:
    """The server of the instruct model (SmolLM2-135M-Instruct): real answers that end."""
    url = os.environ.get(INSTRUCT_URL_ENV, "").rstrip("/")
    if not url:
        pytest.skip(f"needs {INSTRUCT_URL_ENV} (set by scripts/e2e_real_server.sh)")
    return url


def write_profile(
    folder: Path,
    url: str,
    *,
    max_tokens: int | None = 24,
    model: str = MODEL_ALIAS,
    name: str = "real",
    **tts: str,
) -> Path:
    """A profile for the real server: kind openai, deterministic sampling."""
    lines = [
        "backend:",
        "  kind: openai",
        f"  base_url: {url}",
        f"  model: {model}",
        "  read_timeout: 60",
        "generation:",
        "  temperature: 0",
        "  seed: 1",
    ]
    if max_tokens is not None:
        lines.append(f"  max_tokens: {max_tokens}")
    lines += ["tts:", *(f"  {k}: {v}" for k, v in {"engine": "pyttsx3", **tts}.items())]
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def profile(tmp_path: Path, server_url: str) -> Path:
    return write_profile(tmp_path, server_url)


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """``python -m voicechat ARGS`` as a real process; stdin closed unless ``input`` given."""

    def runner(*args: str, input: str | None = None, timeout: float = 120, **env: str):
        return subprocess.run(
            [sys.executable, "-m", "voicechat", *args],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_env(tmp_path, **env),
        )

    return runner


# --- a private server (for tests that kill it) ------------------------------------------------


@dataclass
class PrivateServer:
    """A llama.cpp server of our own; ``kill()`` it without disturbing the shared one."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/models", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def private_server(server_url: str) -> Iterator[PrivateServer]:
    """A second server (same model and flags), started for one test and stopped after it."""
    python, model = os.environ.get("VOICECHAT_E2E_PYTHON"), os.environ.get("VOICECHAT_E2E_MODEL")
    if not python or not model:
        pytest.skip("needs VOICECHAT_E2E_PYTHON and VOICECHAT_E2E_MODEL (set by the script)")
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="voicechat-e2e-private-", suffix=".log")[1])
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                python, str(LAUNCHER), "--model", model, "--alias", MODEL_ALIAS,
                "--chat-template", "gemma", "--ctx", "2048", "--threads", "2",
                "--port", str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = PrivateServer(process, f"http://127.0.0.1:{port}/v1", log)
    try:
        deadline = time.monotonic() + 60
        while not answers(server.url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the private server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log.unlink(missing_ok=True)
