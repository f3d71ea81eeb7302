"""Pytest fixtures around the fake servers (kept apart so that tests/support/fakeservers.py imports
without pytest: the benchmarks in scripts/ use it after a plain ``pip install -e .``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support.fakeservers import FakeServer
from tests.support.hostile import HostileServer


@pytest.fixture
def ollama_server() -> Iterator[FakeServer]:
    """A fresh fake Ollama server (models: qwen2.5:7b)."""
    with FakeServer("ollama") as server:
        yield server


@pytest.fixture
def openai_server() -> Iterator[FakeServer]:
    """A fresh fake OpenAI-compatible server at ``server.url`` (ending in /v1)."""
    with FakeServer("openai", models=["local-model"]) as server:
        yield server


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    """One local server whose path selects the misbehaviour (tests/support/hostile.py)."""
    with HostileServer() as server:
        yield server


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A loopback URL whose connections never complete (a full accept queue): connect timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        filler.close()
        server.close()
