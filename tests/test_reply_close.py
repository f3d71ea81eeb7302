"""`Reply.close()` from another thread stops the iterating thread within 100 ms, in every phase,
for both kinds, over real sockets; the server sees the connection close (it stops generating)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from tests.support.fakeservers import FakeServer, Script
from voicechat import transport
from voicechat.backends import Reply, create_backend, settings_for
from voicechat.settings import GenerationSettings

ASK = [{"role": "user", "content": "hi"}]
WITHIN_S = 0.1


def iterate_in_thread(reply: Reply) -> tuple[threading.Thread, list[str], list[BaseException]]:
    got: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            got.extend(reply)
        except BaseException as exc:  # the test asserts there is none
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, got, errors


def close_when(reply: Reply, ready: Callable[[], bool], thread: threading.Thread) -> float:
    """Wait for the phase, close from this thread; seconds until the iterating thread ended."""
    deadline = time.monotonic() + 10
    while not ready():
        assert time.monotonic() < deadline, "the phase was never reached"
        time.sleep(0.005)
    started = time.monotonic()
    reply.close()
    thread.join(5)
    assert not thread.is_alive()
    return time.monotonic() - started


@pytest.mark.parametrize("protocol", ["ollama", "openai"])
@pytest.mark.parametrize("phase", ["waiting", "mid-stream"])
def test_close_from_another_thread(protocol: str, phase: str) -> None:
    with FakeServer(protocol, models=["m"]) as server:  # type: ignore[arg-type]
        if phase == "waiting":  # Ollama sends no status before its first line; OpenAI does
            server.enqueue(Script(first_delay=30))
            ready = server.received.is_set
        else:
            server.enqueue(Script(tokens=["tok "] * 200, tokens_per_s=20))
            ready = lambda: len(server.streamed) >= 3  # noqa: E731
        backend = create_backend(settings_for(protocol, base_url=server.url, model="m"))
        try:
            reply = backend.chat(ASK, GenerationSettings())
            thread, got, errors = iterate_in_thread(reply)
            took = close_when(reply, ready, thread)
            assert took < WITHIN_S, took
            assert errors == []
            assert reply.closed and reply.outcome is None
            assert "".join(got) == reply.text
            assert server.disconnected.wait(5)
            assert len(server.streamed) < 200
            # the backend goes on: other requests, and the next turn, are answered
            assert backend.models() == ["m"]
            server.enqueue(Script(tokens=["next"]))
            assert list(backend.chat(ASK, GenerationSettings())) == ["next"]
        finally:
            backend.close()


@pytest.mark.parametrize("protocol", ["ollama", "openai"])
def test_close_before_iterating_sends_nothing(protocol: str) -> None:
    with FakeServer(protocol, models=["m"]) as server:  # type: ignore[arg-type]
        backend = create_backend(settings_for(protocol, base_url=server.url, model="m"))
        try:
            reply = backend.chat(ASK, GenerationSettings())
            reply.close()
            assert list(reply) == []
            assert server.chats == []
        finally:
            backend.close()


def test_close_while_connecting_to_a_server_that_never_accepts(blackhole: str) -> None:
    """The connect phase: the socket exists only once connect() returns, so a close then
    cannot reach it; the iteration still ends, at the latest with the connect timeout."""
    backend = create_backend(
        settings_for("ollama", base_url=blackhole, model="m", connect_timeout=0.5)
    )
    reply = backend.chat(ASK, GenerationSettings())
    thread, got, errors = iterate_in_thread(reply)
    time.sleep(0.1)
    started = time.monotonic()
    reply.close()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.0
    assert got == [] and errors == []


@pytest.mark.parametrize("protocol", ["ollama", "openai"])
def test_a_close_as_the_request_connects_ends_it_at_once(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl+C as a turn starts: the close lands after the iteration began, before the socket
    is known. The socket is then shut down as it is attached, so the request ends at once
    instead of waiting for a server that holds its answer (CI saw ``ask`` wait 40 s)."""
    with FakeServer(protocol, models=["m"]) as server:  # type: ignore[arg-type]
        server.enqueue(Script(first_delay=30))
        backend = create_backend(settings_for(protocol, base_url=server.url, model="m"))
        try:
            reply = backend.chat(ASK, GenerationSettings())
            attach = transport.Line.attach

            def closed_first(line: transport.Line, sock: socket.socket) -> None:
                reply.close()  # from this thread, the earliest a close can meet the socket
                attach(line, sock)

            monkeypatch.setattr(transport.Line, "attach", closed_first)
            thread, got, errors = iterate_in_thread(reply)
            thread.join(5)
            assert not thread.is_alive(), "the request waited for the server"
            assert got == [] and errors == [] and reply.closed
        finally:
            monkeypatch.undo()
            backend.close()


def test_a_close_in_the_pause_between_attempts_ends_it_at_once() -> None:
    """Ollama retries a 503 after 0.5, 1 and 2 s: a close ends the pause, not waits it out."""
    with FakeServer("ollama", models=["m"]) as server:
        server.enqueue(*[Script(status=503, body='{"error":"busy"}')] * 4)
        backend = create_backend(settings_for("ollama", base_url=server.url, model="m", retries=3))
        try:
            reply = backend.chat(ASK, GenerationSettings())
            thread, got, errors = iterate_in_thread(reply)
            took = close_when(reply, server.received.is_set, thread)
            assert took < WITHIN_S, took
            assert got == [] and errors == [] and reply.closed
            assert len(server.chats) == 1  # no attempt after the close
        finally:
            backend.close()
