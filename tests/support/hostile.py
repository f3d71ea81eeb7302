"""A hostile model server: one local HTTP server whose first path segment selects the
misbehaviour, for both protocols.

``http://127.0.0.1:PORT/<case>`` is an Ollama base URL (``POST /<case>/api/chat``);
``http://127.0.0.1:PORT/<case>/v1`` an OpenAI one (``POST /<case>/v1/chat/completions``).
Every error it sends echoes what the client sent as credentials (the ``Authorization``
header, decoded Basic credentials) and carries terminal escape codes (clear screen, window
title, a fake prompt), as a hostile or careless server would. Standard library only.

Cases (`CASES`): ``echo<status>`` (an error body at that status), ``echomid`` (text, then an
error line/event), ``notjson`` (text, then a garbage line), ``longline`` (megabytes without a
newline), ``trickle`` (one token, then keep-alive bytes forever), ``html200``, ``redirect301``,
``redirect302``, ``fastapi404``, ``llamacpp404``, ``badutf8`` (invalid bytes inside a token; the
reply goes on), ``donefirst`` (Ollama ``done`` / OpenAI ``[DONE]`` before any text),
``whitespace`` (a reply of blanks), ``unterminated`` (OpenAI: the last event never ends),
``plain500`` (a text/plain 500 with escapes).
"""

from __future__ import annotations

import base64
import contextlib
import json
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.fakeservers import QuietServer

ESC = "\x1b]0;pwned\x07\x1b[2J\x1b[H\x1b[31mvoicechat> \x1b[0m\x9b2J"
"""Window title, clear screen, cursor home, a fake red prompt, a C1 CSI."""
STATUSES = (400, 401, 403, 404, 429, 500, 502, 503)
CASES = (
    *(f"echo{s}" for s in STATUSES),
    "echomid",
    "notjson",
    "longline",
    "trickle",
    "html200",
    "redirect301",
    "redirect302",
    "fastapi404",
    "llamacpp404",
    "badutf8",
    "donefirst",
    "whitespace",
    "unterminated",
    "plain500",
)
LONG_LINE_BYTES = 6 * 1024 * 1024


class HostileServer:
    """Use as a context manager; ``url(case, protocol)`` is the base URL for a case."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._httpd = QuietServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, case: str, protocol: str, userinfo: str = "") -> str:
        host = f"{userinfo}@127.0.0.1" if userinfo else "127.0.0.1"
        root = f"http://{host}:{self.port}/{case}"
        return root + "/v1" if protocol == "openai" else root

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler(server: HostileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._answer(None)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            self._answer(body)

        # --- what the client sent, echoed back -------------------------------------------

        def _credentials(self) -> str:
            auth = self.headers.get("Authorization") or ""
            echoed = auth
            if auth.startswith("Basic "):
                with contextlib.suppress(ValueError):
                    echoed += " = " + base64.b64decode(auth[6:]).decode(errors="replace")
            return echoed

        def _error_text(self) -> str:
            return f"Incorrect API key provided: {self._credentials()} {ESC}"

        # --- the cases -------------------------------------------------------------------

        def _answer(self, body: Any) -> None:
            parts = self.path.split("/")
            case = parts[1] if len(parts) > 1 else ""
            openai = "/v1/" in self.path
            message = self._error_text()
            if self.command == "GET":
                self._get(case, openai, message)
                return
            if case.startswith("echo") and case[4:].isdigit():
                error: Any = {"message": message, "type": "x"} if openai else message
                self._send(int(case[4:]), json.dumps({"error": error}))
            elif case == "plain500":
                self._send(500, message, "text/plain")
            elif case == "html200":
                page = f"<!DOCTYPE html><html><head><title>Login {ESC}</title></head></html>"
                self._send(200, page, "text/html")
            elif case.startswith("redirect"):
                self.send_response(int(case[8:]))
                self.send_header("Location", "http://user:hunter2@elsewhere.example/v1?key=k9")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif case == "fastapi404":
                self._send(404, json.dumps({"detail": "Not Found"}))
            elif case == "llamacpp404":
                error = {"code": 404, "message": "File Not Found", "type": "not_found_error"}
                self._send(404, json.dumps({"error": error}))
            else:
                self._stream(case, openai, body if isinstance(body, dict) else {}, message)

        def _get(self, case: str, openai: bool, message: str) -> None:
            if case.startswith("echo") and case[4:].isdigit():
                self._send(int(case[4:]), json.dumps({"error": message}))
            elif openai:
                data = {"object": "list", "data": [{"id": "m", "object": "model"}]}
                self._send(200, json.dumps(data))
            elif self.path.endswith("/api/version"):
                self._send(200, json.dumps({"version": "0.12.6"}))
            elif self.path.endswith("/api/tags"):
                self._send(200, json.dumps({"models": [{"name": "m"}]}))
            else:
                self._send(200, "Ollama is running", "text/plain")

        def _stream(self, case: str, openai: bool, body: dict, message: str) -> None:
            self.send_response(200)
            ctype = "text/event-stream" if openai else "application/x-ndjson"
            self.send_header("Content-Type", ctype)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def token(text: str | bytes) -> bytes:
                if isinstance(text, bytes):  # raw bytes inside the JSON string
                    inner = json.dumps("@@")[1:-1].encode()
                    template = self._token_json(openai, "@@").encode()
                    return template.replace(inner, text)
                return self._token_json(openai, text).encode()

            try:
                if case == "longline":
                    self._chunk(token("Kept"))
                    filler = b"x" * 65536
                    for _ in range(LONG_LINE_BYTES // len(filler)):
                        self._chunk(filler)
                elif case == "trickle":
                    self._chunk(token("Kept"))
                    while not server.stop.is_set():
                        self._chunk(b": ping\n\n" if openai else b"\n")
                        if self._client_gone(0.05):
                            return
                elif case == "donefirst":
                    self._chunk(b"data: [DONE]\n\n" if openai else self._end(False, "stop"))
                elif case == "whitespace":
                    self._chunk(token("  "))
                    self._chunk(token("\n"))
                    self._chunk(self._end(openai, "stop"))
                elif case == "badutf8":
                    self._chunk(token("Kept "))
                    self._chunk(token(b"\xff\xfe broken "))
                    self._chunk(token("and more"))
                    self._chunk(self._end(openai, "stop"))
                elif case == "unterminated":
                    self._chunk(token("Kept"))
                    finish = self._token_json(openai, "", "stop").rstrip(b"\n".decode())
                    self._chunk(finish.encode())  # no blank line after it, and no [DONE]
                elif case == "echomid":
                    self._chunk(token("Kept"))
                    error: Any = {"message": message} if openai else message
                    line = json.dumps({"error": error})
                    self._chunk((f"data: {line}\n\n" if openai else line + "\n").encode())
                elif case == "notjson":
                    self._chunk(token("Kept"))
                    garbage = f"<oops> {message}"
                    self._chunk((f"data: {garbage}\n\n" if openai else garbage + "\n").encode())
                else:
                    self._chunk(token(f"unknown case {case}"))
                    self._chunk(self._end(openai, "stop"))
                self._chunk(b"")
            except OSError:
                pass  # the client hung up: what a well-behaved client does with us

        def _token_json(self, openai: bool, text: str, finish: str | None = None) -> str:
            if openai:
                delta = {"content": text} if finish is None else {}
                chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                return f"data: {json.dumps(chunk)}\n\n"
            line = {"message": {"role": "assistant", "content": text}, "done": finish is not None}
            if finish:
                line["done_reason"] = finish
            return json.dumps(line) + "\n"

        def _end(self, openai: bool, finish: str) -> bytes:
            end = self._token_json(openai, "", finish).encode()
            return end + b"data: [DONE]\n\n" if openai else end

        def _send(self, status: int, body: str, ctype: str = "application/json") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _client_gone(self, seconds: float) -> bool:
            readable, _, _ = select.select([self.connection], [], [], seconds)
            if not readable:
                return False
            try:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

    return Handler
