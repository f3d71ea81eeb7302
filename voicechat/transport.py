"""HTTP failures translated once into `voicechat.errors`, for every backend and the doctor.

``requests`` (Ollama) and the ``openai`` SDK with its httpx (OpenAI-compatible servers)
raise their own exception trees. `translate` maps them by class (each library's classes are
looked up only when that library is already loaded: the Ollama path never imports the SDK)
to the tree in `voicechat.errors`, worded for the `Server` at hand. The helpers below read
what servers send back (error bodies, redirects, wrong-endpoint pages) and streams of lines
(linearly, with a maximum line length), so both protocols say the same thing the same way.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from voicechat.errors import (
    BackendError,
    BackendTimeout,
    BackendUnreachable,
    ConfigError,
    EndpointNotFound,
    ServerError,
    StreamBroken,
)
from voicechat.redact import redact_url, short

S = TypeVar("S")

MAX_LINE = 4 * 1024 * 1024
"""Bytes one NDJSON line or SSE event may have: a token is a few bytes, a whole reply a few
kB; a server sending megabytes without a newline is broken, and must not eat the memory."""


class Server:
    """Who a message is about, and what the user can do about it (a plain class: a dataclass
    costs a code generation on the start-up path)."""

    __slots__ = ("connect_timeout", "name", "progress_timeout", "read_timeout", "start_fix", "url")

    def __init__(
        self,
        name: str,
        url: str,
        start_fix: str,
        connect_timeout: float,
        read_timeout: float,
        progress_timeout: float = 300.0,
    ) -> None:
        self.name = name
        """``Ollama at http://...`` or ``the server at http://...`` (credentials masked)."""
        self.url = url
        """The base URL, credentials masked."""
        self.start_fix = start_fix
        """How to get it answering: ``Start it with `ollama serve`, or ...``."""
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.progress_timeout = progress_timeout

    @classmethod
    def of(cls, settings: Any, name: str, start_fix: str) -> Server:
        """The server a backend's settings point at; ``{url}`` in ``name`` is its masked URL."""
        url = redact_url(settings.base_url.rstrip("/"))
        return cls(
            name.format(url=url),
            url,
            start_fix,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            progress_timeout=settings.progress_timeout,
        )


def probing(settings: S, timeout: float) -> S:
    """A doctor probe's settings: no retries, and timeouts of at most ``timeout`` (a dead
    server is reported in seconds, not after a reply's patient defaults)."""
    import dataclasses

    return dataclasses.replace(
        settings,  # type: ignore[type-var]
        retries=0,
        connect_timeout=min(settings.connect_timeout, timeout),  # type: ignore[attr-defined]
        read_timeout=min(settings.read_timeout, timeout),  # type: ignore[attr-defined]
    )


# --- the messages ------------------------------------------------------------------------


def unreachable(server: Server) -> BackendUnreachable:
    return BackendUnreachable(
        f"cannot reach {server.name} (nothing answers: connection refused or host unknown): "
        f"is it running? {server.start_fix}"
    )


def connect_timeout(server: Server) -> BackendTimeout:
    return BackendTimeout(
        f"no connection to {server.name} within {server.connect_timeout:g} s (connect "
        "timeout): check the host and the network, or raise backend.connect_timeout"
    )


def read_timeout(server: Server) -> BackendTimeout:
    return BackendTimeout(
        f"{server.name} sent nothing for {server.read_timeout:g} s (read timeout): the model "
        "may still be loading; raise backend.read_timeout or retry"
    )


def stalled(server: Server) -> BackendTimeout:
    return BackendTimeout(
        f"{server.name} sent no text for {server.progress_timeout:g} s, only keep-alive bytes "
        "(progress timeout): the text so far is shown; check the server, or raise "
        "backend.progress_timeout"
    )


def dropped(server: Server) -> StreamBroken:
    return StreamBroken(
        f"the connection to {server.name} dropped mid-reply: the text so far is shown; check "
        "that the server is still running and retry"
    )


def no_end(server: Server) -> StreamBroken:
    return StreamBroken(
        f"{server.name}: the stream ended without an end marker (the server stopped early or "
        "was interrupted): the reply may be incomplete; retry"
    )


def too_long(server: Server) -> StreamBroken:
    return StreamBroken(
        f"{server.name} sent a line over {MAX_LINE // (1024 * 1024)} MB without a newline: "
        "stopped reading (the text so far is shown); is the base URL a model server?"
    )


# --- exceptions -----------------------------------------------------------------------------


def translate(exc: BaseException, server: Server, *, mid_stream: bool = False) -> BackendError:
    """The error to raise for a transport failure ``exc`` (anything not recognised is a
    dropped stream mid-reply, an unreachable server before it)."""
    kind = classify(exc)
    if kind == "connect_timeout":
        return connect_timeout(server)
    if kind == "read_timeout":
        return read_timeout(server)
    if kind == "bad_url":
        raise ConfigError(f"the base URL of {server.name} is not usable: fix backend.base_url")
    return dropped(server) if mid_stream else unreachable(server)


def classify(exc: BaseException) -> str:
    """``connect_timeout``, ``read_timeout``, ``bad_url`` or ``connection``, by class."""
    openai = sys.modules.get("openai")
    if openai is not None and isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        if cause is not None and cause is not exc:
            found = classify(cause)
            if found != "connection" or not isinstance(exc, openai.APITimeoutError):
                return found
        return "read_timeout" if isinstance(exc, openai.APITimeoutError) else "connection"
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(exc, requests.exceptions.RequestException):
        errors = requests.exceptions
        if isinstance(exc, errors.ConnectTimeout):
            return "connect_timeout"
        if isinstance(exc, errors.ReadTimeout):
            return "read_timeout"
        if isinstance(exc, (errors.InvalidURL, errors.MissingSchema, errors.InvalidSchema)):
            return "bad_url"
        # requests wraps urllib3's mid-stream read timeout in a ConnectionError it raises
        # while handling it: the timeout is the context, not a cause we must dig from args.
        inner = exc.__context__
        if inner is not None and _urllib3_read_timeout(inner):
            return "read_timeout"
        return "connection"
    if _urllib3_read_timeout(exc):
        return "read_timeout"
    for name in ("httpx2", "httpx", "httpcore2", "httpcore"):
        module = sys.modules.get(name)
        if module is None:
            continue
        if isinstance(exc, module.ConnectTimeout):
            return "connect_timeout"
        if isinstance(exc, module.TimeoutException):
            return "read_timeout"
        if hasattr(module, "UnsupportedProtocol") and isinstance(exc, module.UnsupportedProtocol):
            return "bad_url"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "read_timeout"
    return "connection"


def is_transport_error(exc: BaseException) -> bool:
    """Raised by a network library or the socket (as opposed to a bug of ours)."""
    if isinstance(exc, OSError):
        return True
    for name, base in (
        ("requests", "exceptions.RequestException"),
        ("urllib3", "exceptions.HTTPError"),
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("httpcore2", "NetworkError"),
        ("httpcore", "NetworkError"),
        ("httpcore2", "ProtocolError"),
        ("httpcore", "ProtocolError"),
        ("httpx2", "StreamError"),
        ("httpx", "StreamError"),
        ("openai", "APIConnectionError"),
    ):
        module = sys.modules.get(name)
        if module is None:
            continue
        cls: object = module
        for part in base.split("."):
            cls = getattr(cls, part, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return False


def _urllib3_read_timeout(exc: BaseException) -> bool:
    urllib3 = sys.modules.get("urllib3")
    return urllib3 is not None and isinstance(exc, urllib3.exceptions.ReadTimeoutError)


# --- what servers send back -------------------------------------------------------------------

_WRONG_PATH_TEXT = ("404 page not found", "not found", "404 not found", "file not found")


def wrong_endpoint(status: int, body: str) -> bool:
    """A 404 about the path, not the model: Go's plain text (Ollama), a proxy's page,
    FastAPI's ``{"detail": "Not Found"}`` (llama-cpp-python, vLLM) or llama.cpp's
    ``{"error": {"message": "File Not Found"}}``."""
    if status != 404:
        return False
    text = body.strip()
    if text.lower() in _WRONG_PATH_TEXT or looks_like_html(text):
        return True
    data = _json(text)
    if isinstance(data, dict):
        detail = data.get("detail")
        error = data.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        for value in (detail, error):
            if isinstance(value, str) and value.strip().lower() in _WRONG_PATH_TEXT:
                return True
    return False


def error_detail(body: str, fallback: str = "no details") -> str:
    """One line saying what an error body says: its message, not its JSON or HTML."""
    text = body.strip()
    if not text:
        return fallback
    if looks_like_html(text):
        return html_summary(text)
    data = _json(text)
    if isinstance(data, dict):
        for key in ("error", "detail", "message"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("detail") or json.dumps(value)
            if value:
                return short(value)
    return short(text)


def looks_like_html(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith(("<!doctype html", "<html", "<head", "<body")) or "<html" in head


def html_summary(text: str) -> str:
    """``an HTML page ("Title")``: what a proxy or a web app sent instead of the API."""
    lower = text.lower()
    start = lower.find("<title>")
    end = lower.find("</title>", start)
    if start >= 0 and end > start:
        return f'an HTML page ("{short(text[start + 7 : end], 60)}")'
    return "an HTML page"


def redirect_error(status: int, location: str | None, server: Server) -> BackendError:
    """3xx: say that the server redirected, and where (a POST must not silently become a GET)."""
    where = redact_url(location) if location else "an unnamed address"
    return EndpointNotFound(
        f"{server.name} redirected the request ({status}) to {where}: set backend.base_url "
        "to the address it redirects to"
    )


def status_message(status: int, detail: str, server: Server) -> ServerError:
    """The error for an HTTP status that has no more specific meaning."""
    if status == 429:
        return ServerError(
            f"{server.name} is rate limiting requests (429: {detail}): wait a moment and retry"
        )
    if status >= 500:
        return ServerError(
            f"server error {status} at {server.url}: {detail}: check the server's log, then retry"
        )
    return ServerError(f"{server.name} refused the request ({status}: {detail})")


def _json(text: str) -> object:
    if not text.startswith(("{", "[")):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


# --- streams ------------------------------------------------------------------------------------


class Progress:
    """The deadline for new text: keep-alive bytes do not move it, text does."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.deadline = time.monotonic() + server.progress_timeout

    def text(self) -> None:
        self.deadline = time.monotonic() + self.server.progress_timeout

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise stalled(self.server)


def lines(chunks: Iterable[bytes], server: Server, progress: Progress) -> Iterator[bytes]:
    """Lines (without their ending) from byte chunks: linear in the bytes received (no
    re-scanning of a growing line), refusing a line over `MAX_LINE`; the last line may lack
    a newline. The progress deadline is checked at every chunk."""
    buffer = bytearray()
    for chunk in chunks:
        progress.check()
        if not chunk:
            continue
        scanned = len(buffer)
        buffer += chunk
        start = 0
        while True:
            newline = buffer.find(b"\n", max(start, scanned))
            if newline < 0:
                break
            yield bytes(buffer[start:newline]).rstrip(b"\r")
            start = newline + 1
        if start:
            del buffer[:start]
        if len(buffer) > MAX_LINE:
            raise too_long(server)
    if buffer:
        yield bytes(buffer).rstrip(b"\r")


def shut_down(sock: socket.socket | None) -> None:
    """Wake a read blocked on ``sock`` in another thread (closing the file does not)."""
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already closed, or never connected
        sock.shutdown(socket.SHUT_RDWR)


class Line:
    """The sockets of one request, which `Reply.close()` hangs up from any thread.

    The request connects in the iterating thread, and a close may come before it does: a
    socket attached after `hang_up` is shut down at once, so the request fails at once
    instead of waiting for a server nobody will then stop (Ctrl+C as a turn started was
    ignored until the first byte came). A pause between attempts waits on `hung_up`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.hung_up = threading.Event()

    def attach(self, sock: socket.socket) -> None:
        """A socket this request is about to use (the requesting thread)."""
        with self._lock:
            self._socks.append(sock)
            hung_up = self.hung_up.is_set()
        if hung_up:
            shut_down(sock)

    def hang_up(self) -> None:
        """Wake the request wherever it is, now or when it connects (any thread)."""
        with self._lock:
            self.hung_up.set()
            socks = list(self._socks)
        for sock in socks:
            shut_down(sock)
