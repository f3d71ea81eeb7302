"""Fake Ollama and OpenAI-compatible servers on 127.0.0.1 that speak the exact wire formats.

Real HTTP over real sockets (chunked transfer, NDJSON lines, SSE events), so the backends'
parsers, timeouts and connection handling are exercised for real. Each chat request is
answered by the next queued `Script` (or ``server.default``); every request is recorded.

Usage (pytest fixtures ``ollama_server`` / ``openai_server`` from tests/support/server_fixtures.py,
or directly from scripts: this module needs nothing beyond the standard library)::

    with FakeServer("ollama") as server:          # server.url == "http://127.0.0.1:PORT"
        server.enqueue(Script(tokens=["Hi", "!"], tokens_per_s=8, first_delay=0.5))
        ...                                       # point a profile's base_url at server.url
        server.requests[-1].body                  # the JSON the client sent

For ``"openai"`` the base URL is ``http://127.0.0.1:PORT/v1``.

Faults (``Script.fault``): ``error_line`` (an error object after the tokens, status 200),
``drop`` (connection closed mid-stream, chunked body left incomplete), ``empty`` (200 with an
empty body; on the OpenAI side as llama.cpp's server sends it for a prompt over the context:
a complete, empty chunked body, then the kept-alive connection closed ``hang_up_s`` later),
``hang`` (no answer until ``hang_s`` passes), ``not_json`` (a garbage line).
``finish=None`` ends the stream without ``done``/``finish_reason`` (a truncated reply);
``status``/``body`` answer with an HTTP error instead; ``raw`` replays recorded bytes.
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Protocol = Literal["ollama", "openai"]
Fault = Literal["error_line", "drop", "empty", "hang", "not_json"]


@dataclass
class Script:
    """How to answer one chat request."""

    tokens: Sequence[str] = ("Hello", " there", ".")
    """Text pieces, one per event."""
    first_delay: float = 0.0
    """Seconds before the first token (the model's prompt processing)."""
    tokens_per_s: float | None = None
    """Pace of the tokens after the first; ``None`` sends them at once."""
    finish: str | None = "stop"
    """``stop``/``length``/...; ``None`` ends the stream with no end marker."""
    status: int = 200
    """Answer with this HTTP status and ``body`` instead of a stream."""
    body: str | None = None
    """The error body (JSON text or plain text) for a non-200 ``status``."""
    fault: Fault | None = None
    """A failure to inject (see the module docstring)."""
    hang_s: float = 30.0
    """How long ``hang`` stalls before giving up."""
    hang_up_s: float = 0.2
    """OpenAI ``empty``: seconds until the server closes the connection it kept alive (the
    real one takes ~30 ms; a request sent on the connection meanwhile gets no answer)."""
    usage: bool = True
    """OpenAI: send the usage chunk when the client asks for it (llama.cpp never does)."""
    counts: bool = True
    """Ollama: put eval_count/eval_duration on the done line."""
    comments: bool = False
    """OpenAI: SSE comment lines (``: ping``) between events, as llama.cpp sends."""
    raw: bytes | None = None
    """Replay these bytes as the body, line by line, paced like tokens."""


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: Any
    """Parsed JSON, or ``None`` for an empty/invalid body."""
    at: float = field(default_factory=time.monotonic)
    """When it arrived (``time.monotonic``): a test times the client against it."""

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages with each question as the user asked it: the note of when it was
        asked (`voicechat.now`, on by default) taken off; `notes` has them."""
        return [
            {**m, "content": unnoted(m["content"])} if m.get("role") == "user" else m
            for m in self.body["messages"]
        ]

    @property
    def notes(self) -> list[str]:
        """The time notes of the user messages, in order ("" where a message has none)."""
        return [
            m["content"][: len(m["content"]) - len(unnoted(m["content"]))].strip()
            for m in self.body["messages"]
            if m.get("role") == "user"
        ]


NOTE = re.compile(r"\A\[(?:Asked on |提问时间：)[^\]\n]*\]\n")
"""The note `voicechat.now.note` puts before a question."""


def unnoted(content: Any) -> Any:
    """A user message's text without the note of when it was asked."""
    return NOTE.sub("", content, count=1) if isinstance(content, str) else content


@dataclass
class FakeServer:
    """A threaded HTTP server on a free loopback port; use as a context manager."""

    protocol: Protocol
    models: list[str] = field(default_factory=lambda: ["qwen2.5:7b"])
    """Models the server has; others get the protocol's 404 (``check_model``)."""
    check_model: bool = True
    api_key: str | None = None
    """When set, requests without ``Authorization: Bearer <key>`` get 401."""
    default: Script = field(default_factory=Script)
    requests: list[Recorded] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)
    """Set when a client closed the connection while a stream was being sent."""
    streamed: list[str] = field(default_factory=list)
    """Tokens actually written to the socket, in order."""

    def __post_init__(self) -> None:
        self._queue: list[Script] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.received = threading.Event()
        """Set when a chat request arrives."""
        self.asked = threading.Event()
        """Set when a chat request that asks something arrives (not Ollama's warm-up, an
        empty message list, which a REPL sends as it starts)."""
        self._httpd = QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        root = f"http://127.0.0.1:{self.port}"
        return root + "/v1" if self.protocol == "openai" else root

    def enqueue(self, *scripts: Script) -> None:
        with self._lock:
            self._queue.extend(scripts)

    def next_script(self) -> Script:
        with self._lock:
            return self._queue.pop(0) if self._queue else self.default

    @property
    def chats(self) -> list[Recorded]:
        """The chat requests only."""
        return [r for r in self.requests if r.path.endswith("/chat") or "completions" in r.path]

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients closing connections (keep-alive ones, or hanging up on a hostile server)
        is normal; anything else is shown."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _ClientGone(Exception):
    pass


def _handler_for(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            self._record(None)
            routes = _OLLAMA_GET if server.protocol == "ollama" else _OPENAI_GET
            answer = routes.get(self.path.rstrip("/") or "/")
            if answer is None:
                self._send(404, "404 page not found", "text/plain")
            elif self._authorized():
                self._send(200, *answer(server))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            self._record(body)
            chat_path = "/api/chat" if server.protocol == "ollama" else "/v1/chat/completions"
            if self.path != chat_path:
                self._send(404, "404 page not found", "text/plain")
                return
            server.received.set()
            if not self._authorized():
                return
            if not isinstance(body, dict):
                self._send(400, json.dumps({"error": "invalid JSON body"}))
                return
            model = body.get("model")
            if server.check_model and model not in server.models:
                self._send(404, _model_missing(server.protocol, str(model)))
                return
            if server.protocol == "ollama" and body.get("messages") == []:
                self._send(200, json.dumps(_ollama_line(model, "", True, "load")))
                return
            server.asked.set()
            script = server.next_script()
            try:
                self._answer(script, body)
            except _ClientGone:
                server.disconnected.set()
            except OSError:
                server.disconnected.set()

        # --- helpers -------------------------------------------------------------------

        def _record(self, body: Any) -> None:
            server.requests.append(
                Recorded(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
            )

        def _authorized(self) -> bool:
            if server.api_key is None:
                return True
            if self.headers.get("Authorization") == f"Bearer {server.api_key}":
                return True
            message = "Incorrect API key provided"
            body = (
                json.dumps({"error": message})
                if server.protocol == "ollama"
                else json.dumps(
                    {
                        "error": {
                            "message": message,
                            "type": "invalid_request_error",
                            "code": "invalid_api_key",
                        }
                    }
                )
            )
            self._send(401, body)
            return False

        def _send(self, status: int, body: str, ctype: str = "application/json") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _chunk(self, data: bytes) -> None:
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            except OSError as exc:
                raise _ClientGone from exc

        def _empty_then_hang_up(self, script: Script) -> None:
            """llama.cpp's stream raised before its first chunk: uvicorn ends the chunked
            body cleanly, then drops the connection it had announced as kept alive."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Connection", "keep-alive")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(b"")
            self.close_connection = True
            try:  # a next request arriving meanwhile is left unread, as on the real server
                _sleep_until(server, time.monotonic() + script.hang_up_s, self.connection)
                self.connection.shutdown(socket.SHUT_WR)
            except (_ClientGone, OSError):
                pass  # the client hung up first

        def _answer(self, script: Script, body: dict[str, Any]) -> None:
            if script.fault == "hang":
                _sleep_until(server, time.monotonic() + script.hang_s, self.connection)
                return
            if script.status != 200:
                self._send(script.status, script.body or "", _guess_type(script.body))
                return
            if script.fault == "empty" and server.protocol == "ollama":
                self._send(200, "", "application/x-ndjson")
                return
            if script.fault == "empty":
                self._empty_then_hang_up(script)
                return
            ctype = "application/x-ndjson" if server.protocol == "ollama" else "text/event-stream"
            headers_sent = False

            def send_headers() -> None:
                nonlocal headers_sent
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                headers_sent = True

            if server.protocol == "openai":
                send_headers()  # uvicorn answers at once; Ollama (Go) with the first line
            events = (
                _raw_lines(script.raw)
                if script.raw is not None
                else _ollama_events(script, body)
                if server.protocol == "ollama"
                else _openai_events(script, body)
            )
            started = time.monotonic()
            sent = 0
            for kind, data in events:
                if kind == "token":
                    if sent == 0:
                        deadline = started + script.first_delay
                    else:
                        deadline = (
                            started
                            + script.first_delay
                            + sent / (script.tokens_per_s or float("inf"))
                        )
                    _sleep_until(server, deadline, self.connection)
                    sent += 1
                if not headers_sent:
                    send_headers()
                if kind == "drop":
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self._chunk(data)
                if kind == "token" and isinstance(data, bytes):
                    server.streamed.append(data.decode(errors="replace"))
            if not headers_sent:
                send_headers()
            self._chunk(b"")
            self.wfile.flush()

    return Handler


# --- wire formats ----------------------------------------------------------------------


def _ollama_line(model: Any, content: str, done: bool, reason: str | None = None) -> dict:
    line: dict[str, Any] = {
        "model": model,
        "created_at": "2026-11-22T10:00:00.000000Z",
        "message": {"role": "assistant", "content": content},
        "done": done,
    }
    if done and reason:
        line["done_reason"] = reason
    return line


def _ollama_events(script: Script, body: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    model = body.get("model")
    for token in script.tokens:
        yield "token", json.dumps(_ollama_line(model, token, False)).encode() + b"\n"
    yield from _fault_events(
        script,
        b'{"error":"an error was encountered while running the model: unexpected EOF"}\n',
        b"<html>oops\n",
    )
    if script.finish is None:
        return
    end = _ollama_line(model, "", True, script.finish)
    if script.counts:
        end.update(
            total_duration=2_000_000_000,
            load_duration=1_000_000,
            prompt_eval_count=12,
            prompt_eval_duration=100_000_000,
            eval_count=len(script.tokens),
            eval_duration=500_000_000,
        )
    yield "meta", json.dumps(end).encode() + b"\n"


def _openai_events(script: Script, body: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    model = body.get("model")

    def event(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
        chunk: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1795000000,
            "model": model,
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        chunk.update(extra)
        return b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"

    # llama.cpp opens with the role and content None; Ollama's /v1 with content "".
    yield "meta", event({"role": "assistant", "content": None})
    for i, token in enumerate(script.tokens):
        if script.comments and i % 2:
            yield "meta", b": ping - 2026-11-22 10:00:00.000000\r\n\r\n"
        yield "token", event({"content": token})
    yield from _fault_events(
        script,
        b'data: {"error":{"message":"the model crashed","type":"server_error"}}\r\n\r\n',
        b"data: {not json\r\n\r\n",
    )
    if script.finish is None:
        yield "meta", b"data: [DONE]\r\n\r\n"
        return
    yield "meta", event({}, script.finish)
    if script.usage and (body.get("stream_options") or {}).get("include_usage"):
        n = len(script.tokens)
        yield (
            "meta",
            event(
                None, usage={"prompt_tokens": 12, "completion_tokens": n, "total_tokens": 12 + n}
            ),
        )
    yield "meta", b"data: [DONE]\r\n\r\n"


def _fault_events(script: Script, error: bytes, garbage: bytes) -> Iterator[tuple[str, bytes]]:
    if script.fault == "error_line":
        yield "meta", error
    elif script.fault == "not_json":
        yield "meta", garbage
    elif script.fault == "drop":
        yield "drop", b""


def _raw_lines(raw: bytes) -> Iterator[tuple[str, bytes]]:
    """Recorded bytes, one line per write; data lines with content count as tokens."""
    for line in raw.splitlines(keepends=True):
        kind = "token" if _CONTENT.search(line) else "meta"
        yield kind, line


_CONTENT = re.compile(rb'^data: \{.*"content": ?"[^"]')


def _model_missing(protocol: Protocol, model: str) -> str:
    message = f'model "{model}" not found, try pulling it first'
    if protocol == "ollama":
        return json.dumps({"error": message})
    return json.dumps(
        {"error": {"message": message, "type": "api_error", "param": None, "code": None}}
    )


def _guess_type(body: str | None) -> str:
    return "application/json" if body and body.lstrip().startswith("{") else "text/plain"


def _sleep_until(server: FakeServer, deadline: float, conn: socket.socket) -> None:
    """Wait like a model thinking, noticing (as real servers do) a client that hung up."""
    while True:
        delay = deadline - time.monotonic()
        if delay <= 0 or server._stop.is_set():
            return
        readable, _, _ = select.select([conn], [], [], min(delay, 0.05))
        if readable:
            try:
                if conn.recv(1, socket.MSG_PEEK) == b"":
                    raise _ClientGone
            except (ConnectionError, OSError) as exc:
                raise _ClientGone from exc
            server._stop.wait(min(delay, 0.05))  # data, not a hang-up: keep waiting


_OLLAMA_GET = {
    "/": lambda s: ("Ollama is running", "text/plain"),
    "/api/version": lambda s: (json.dumps({"version": "0.12.6"}), "application/json"),
    "/api/tags": lambda s: (
        json.dumps({"models": [{"name": m, "model": m, "size": 4_683_087_332} for m in s.models]}),
        "application/json",
    ),
}
_OPENAI_GET = {
    "/v1/models": lambda s: (
        json.dumps(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 1795000000, "owned_by": "library"}
                    for m in s.models
                ],
            }
        ),
        "application/json",
    ),
}


_HELD: list[socket.socket] = []
"""The sockets that keep `dead_port`'s ports taken until the process ends."""


def dead_port() -> int:
    """A loopback port with nothing listening (connection refused). Its socket stays bound,
    never listening, for as long as this process runs: a port merely closed again could be
    taken meanwhile by another test's server (parallel workers), which then answered."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    return sock.getsockname()[1]
