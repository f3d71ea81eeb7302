"""Ollama's native API: ``POST /api/chat`` streaming NDJSON, through ``requests``.

Each line is one JSON object; ``message.content`` carries the text, the last line has
``done: true`` with ``done_reason`` and the server's token counts. An ``{"error": ...}``
line can arrive mid-stream with status 200. Closing the connection stops generation.

Everything about the kind lives here: its ``backend:`` settings, ``OLLAMA_HOST``, its doctor
checks and their fixes. ``requests`` is imported only when a backend is created.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voicechat import transport
from voicechat.backends import Message, Reply, ServerEnd, fix_for, generation_check
from voicechat.checks import Check
from voicechat.errors import (
    AuthFailed,
    BackendError,
    BackendUnreachable,
    ConfigError,
    EndpointNotFound,
    ModelNotFound,
    StreamBroken,
    VoicechatError,
)
from voicechat.redact import LazyPattern, redact_url, remember_url, short
from voicechat.settings import GenerationSettings, HTTPBackendSettings, between

if TYPE_CHECKING:
    import requests

HOST_ENV = "OLLAMA_HOST"
RETRY_STATUSES = (429, 502, 503, 504)
START_FIX = (
    "Start it with `ollama serve` (or: sudo systemctl start ollama), or point OLLAMA_HOST or "
    "the profile's base_url at it"
)


@dataclass(frozen=True)
class Settings(HTTPBackendSettings):
    """The ``backend:`` section of an Ollama profile."""

    keep_alive: str | int | None = field(default=None, metadata=between(-1, 10**9))
    """How long the model stays loaded after the reply (``30m``, seconds, -1 forever)."""


# --- the kind's interface (see voicechat.backends) ---------------------------------------


def apply_env(settings: Settings, env: Mapping[str, str]) -> tuple[Settings, tuple[str, ...]]:
    """``OLLAMA_HOST`` (any of Ollama's forms) replaces the base URL."""
    value = env.get(HOST_ENV, "").strip()
    if not value:
        return settings, ()
    return dataclasses.replace(settings, base_url=ollama_host(value)), (HOST_ENV,)


def api_key_var(settings: Settings) -> None:
    """Ollama has no API keys (a proxy in front of it may want credentials in the URL)."""
    return None


def create(settings: Settings, api_key: str | None = None) -> OllamaBackend:
    return OllamaBackend(settings)


def server_of(settings: Settings) -> transport.Server:
    return transport.Server.of(settings, "Ollama at {url}", START_FIX)


def checks(
    settings: Settings,
    api_key: str | None = None,
    *,
    probe_timeout: float = 5.0,
    generation_timeout: float = 60.0,
) -> Iterator[Check]:
    """server (is it Ollama, which version), model (is it pulled), generation (one token)."""
    probe = transport.probing(settings, probe_timeout)
    backend = OllamaBackend(probe)
    try:
        try:
            version = backend.version()
            models = backend.models()
        except VoicechatError as exc:
            yield Check("server", False, str(exc), fix_for(exc, settings))
            yield Check("model", None, "skipped: the server did not answer")
            yield Check("generation", None, "skipped: the server did not answer")
            return
        yield Check("server", True, f"Ollama {version} at {server_of(settings).url}")
        yield model_check(settings.model, models)
    finally:
        backend.close()
    generation = dataclasses.replace(
        probe, read_timeout=min(settings.read_timeout, generation_timeout)
    )
    yield generation_check(OllamaBackend(generation), settings)


def model_check(wanted: str, models: list[str]) -> Check:
    names = set(models) | {m.removesuffix(":latest") for m in models}
    if wanted in names or f"{wanted}:latest" in models:
        return Check("model", True, f"{wanted} is pulled")
    have = ", ".join(short(m, 40) for m in models[:8]) or "none"
    return Check(
        "model", False, f"{wanted} is not pulled (pulled: {have})", f"ollama pull {wanted}"
    )


def fixes(settings: Settings) -> dict[type[VoicechatError], str]:
    """The doctor's fixes for what this kind raises (see `voicechat.backends.fix_for`)."""
    return {
        BackendUnreachable: "start Ollama (sudo systemctl start ollama, or: ollama serve), "
        "or point OLLAMA_HOST / backend.base_url at it",
        ModelNotFound: f"ollama pull {settings.model}",
        EndpointNotFound: "point OLLAMA_HOST / backend.base_url at Ollama (default "
        "http://127.0.0.1:11434), or use kind: openai for an OpenAI-compatible server",
        AuthFailed: "check the credentials your proxy expects",
        StreamBroken: "check the server's log (ollama serve's output, or journalctl -u ollama)",
    }


# --- OLLAMA_HOST ---------------------------------------------------------------------------

_HOSTNAME = LazyPattern(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$")


def ollama_host(value: str) -> str:
    """Normalise ``OLLAMA_HOST`` the way Ollama does, for a client; refuse what is no host.

    >>> ollama_host("")
    'http://127.0.0.1:11434'
    >>> ollama_host("jetson.local")
    'http://jetson.local:11434'
    >>> ollama_host(":8080")
    'http://127.0.0.1:8080'
    >>> ollama_host("[::1]")
    'http://[::1]:11434'
    >>> ollama_host("https://example.com")
    'https://example.com:443'
    >>> ollama_host("http://example.com/ollama")
    'http://example.com:80/ollama'
    >>> ollama_host("0.0.0.0:11434")
    'http://127.0.0.1:11434'
    >>> ollama_host("http://h:1:2")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    voicechat.errors.ConfigError: $OLLAMA_HOST='http://h:1:2': 'h:1:2' is no host name or ...
    """
    value = value.strip()
    scheme, sep, hostport = value.partition("://")
    default_port = "11434"
    if not sep:
        scheme, hostport = "http", value
    elif scheme.lower() == "http":
        default_port = "80"
    elif scheme.lower() == "https":
        default_port = "443"
    else:
        raise _bad_host(value, f"the scheme must be http or https, not {short(scheme, 20)!r}")
    hostport, _, path = hostport.partition("/")
    userinfo, at, hostport = hostport.rpartition("@")
    host, port = _split_host_port(hostport)
    if not host or host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host != "::" else "::1"
    if ":" in host:
        import ipaddress  # only for an IPv6 host: not on every start-up

        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise _bad_host(value, f"{short(host, 40)!r} is no host name or address") from None
    elif not _HOSTNAME.match(host):
        raise _bad_host(value, f"{short(host, 40)!r} is no host name or address")
    if port and (not port.isdigit() or not 0 < int(port) <= 65535):
        raise _bad_host(value, f"the port {short(port, 20)!r} is not a number from 1 to 65535")
    port = port or default_port
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if at:
        netloc = f"{userinfo}@{netloc}"
    url = f"{scheme.lower()}://{netloc}" + ("/" + path if path else "")
    remember_url(url)
    return url.rstrip("/")


def _bad_host(value: str, problem: str) -> ConfigError:
    shown = short(redact_url(value) if "@" in value else value, 60)
    return ConfigError(f"${HOST_ENV}={shown!r}: {problem}: use host, host:port or http://host:port")


def _split_host_port(hostport: str) -> tuple[str, str]:
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if hostport.count(":") == 1:
        host, _, port = hostport.partition(":")
        return host, port
    return hostport, ""  # a bare name, or a bare IPv6 address without brackets


# --- the backend -----------------------------------------------------------------------------


class OllamaBackend:
    """Talks to one Ollama server with one keep-alive session."""

    larger_context = "raise generation.context_size (Ollama's num_ctx)"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        remember_url(self.base_url)
        self.server = server_of(settings)
        self._local = threading.local()
        """``line``: the `transport.Line` of this thread's request in flight (see _session)."""
        self._session = _session(self)

    def request_body(
        self, messages: Sequence[Message], generation: GenerationSettings
    ) -> dict[str, Any]:
        """The exact JSON sent: options only for what the profile sets."""
        options = {
            key: value
            for key, value in (
                ("temperature", generation.temperature),
                ("top_p", generation.top_p),
                ("num_predict", generation.max_tokens),
                ("num_ctx", generation.context_size),
                ("seed", generation.seed),
            )
            if value is not None
        }
        body: dict[str, Any] = {"model": self.settings.model, "messages": list(messages)}
        body["stream"] = True
        if options:
            body["options"] = options
        if self.settings.keep_alive is not None:
            body["keep_alive"] = self.settings.keep_alive
        return body

    def chat(self, messages: Sequence[Message], generation: GenerationSettings) -> Reply:
        """The request goes out when the reply is first iterated, so that `Reply.close()`
        from another thread can stop it in every phase, waiting for the first token too."""
        started = time.monotonic()
        body = self.request_body(messages, generation)
        holder: dict[str, Any] = {}
        line = transport.Line()

        def deltas() -> Generator[str, None, ServerEnd]:
            response = self._post("/api/chat", body, line)
            holder["response"] = response
            try:
                return (yield from self._deltas(response))
            finally:
                response.close()

        def release() -> None:
            response = holder.get("response")
            if response is not None:
                response.close()

        return Reply(deltas(), line.hang_up, started, release=release, source=self.server.name)

    def warm_up(self) -> None:
        """An empty message list makes Ollama load the model and keep it (keep_alive)."""
        body: dict[str, Any] = {"model": self.settings.model, "messages": []}
        if self.settings.keep_alive is not None:
            body["keep_alive"] = self.settings.keep_alive
        body["stream"] = False
        self._post("/api/chat", body, transport.Line()).close()

    def version(self) -> str:
        """The server's version (``GET /api/version``); proves it is Ollama."""
        data = self._get_json("/api/version")
        version = data.get("version") if isinstance(data, dict) else None
        if not isinstance(version, str):
            raise EndpointNotFound(
                f"{self.server.url}/api/version did not answer as Ollama does: is this an "
                "Ollama server?"
            )
        return short(version, 40)

    def models(self) -> list[str]:
        """The pulled models (``GET /api/tags``)."""
        data = self._get_json("/api/tags")
        entries = data.get("models") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise EndpointNotFound(f"{self.server.url}/api/tags did not return a model list")
        names = (m.get("name") or m.get("model") for m in entries if isinstance(m, dict))
        return [str(name) for name in names if name]

    def close(self) -> None:
        self._session.close()

    # --- the wire ------------------------------------------------------------------------

    def _get_json(self, path: str) -> Any:
        import requests

        timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        try:
            response = self._session.get(
                self.base_url + path, timeout=timeout, allow_redirects=False, stream=True
            )
        except requests.RequestException as exc:
            raise transport.translate(exc, self.server) from None
        with response:
            if response.status_code != 200:
                raise self._status_error(response)
            try:
                return json.loads(_body(response, transport.MAX_LINE))
            except ValueError:
                raise EndpointNotFound(
                    f"{self.server.url}{path} did not return JSON: is this an Ollama server? "
                    "For an OpenAI-compatible server use a profile with kind: openai"
                ) from None

    def _post(self, path: str, body: dict[str, Any], line: transport.Line) -> requests.Response:
        """POST with retries; `Line.hang_up` on ``line`` stops it in every phase."""
        self._local.line = line
        try:
            return self._attempts(path, body, line)
        finally:
            self._local.line = None

    def _attach(self, sock: Any) -> None:
        """The socket this thread's request is about to use (the session's hooks)."""
        line = getattr(self._local, "line", None)
        if line is not None and sock is not None:
            line.attach(sock)

    def _attempts(self, path: str, body: dict[str, Any], line: transport.Line) -> requests.Response:
        import requests

        timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        attempt = 0
        while True:
            try:
                response = self._session.post(
                    self.base_url + path,
                    json=body,
                    stream=True,
                    timeout=timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                error: BackendError = transport.translate(exc, self.server)
                if transport.classify(exc) == "read_timeout":
                    raise error from None
            else:
                if response.status_code == 200:
                    return response
                error = self._status_error(response)
                response.close()
                if response.status_code not in RETRY_STATUSES:
                    raise error
            if attempt >= self.settings.retries:
                raise error
            attempt += 1
            if line.hung_up.wait(min(0.5 * 2 ** (attempt - 1), 4.0)):
                raise error  # closed meanwhile: the reply ends quietly

    def _status_error(self, response: requests.Response) -> BackendError:
        status = response.status_code
        if 300 <= status < 400:
            return transport.redirect_error(status, response.headers.get("location"), self.server)
        body = _body(response)
        detail = transport.error_detail(body)
        model = self.settings.model
        if transport.wrong_endpoint(status, body):
            path = response.request.path_url if response.request else "/api/chat"
            return EndpointNotFound(
                f"{self.server.url} answers but is not Ollama: it has no {short(path, 40)} "
                f"({status}: {detail}); for an OpenAI-compatible server use a profile with "
                "kind: openai and a base URL ending in /v1"
            )
        if status == 404 or ("not found" in detail.lower() and model in detail):
            return ModelNotFound(
                f"model {short(model, 60)!r} is not available on {self.server.url} ({detail}): "
                f"run `ollama pull {model}`, or pick another with --model"
            )
        if status in (401, 403):
            return AuthFailed(
                f"{self.server.url} refused access ({status}: {detail}): check the "
                "credentials your proxy expects"
            )
        return transport.status_message(status, detail, self.server)

    def _deltas(self, response: requests.Response) -> Generator[str, None, ServerEnd]:
        import requests

        progress = transport.Progress(self.server)
        events = 0
        try:
            chunks = response.iter_content(chunk_size=512)
            for line in transport.lines(chunks, self.server, progress):
                if not line.strip():
                    continue
                events += 1
                decoded = line.decode("utf-8", errors="replace")
                try:
                    event = json.loads(decoded)
                except ValueError:
                    raise StreamBroken(
                        f"{self.server.name} sent a line that is not JSON "
                        f"({transport.error_detail(decoded)}): is the base URL an Ollama server?"
                    ) from None
                if not isinstance(event, dict):
                    continue
                if event.get("error"):
                    raise StreamBroken(
                        f"Ollama reported an error mid-reply: {short(event['error'])}"
                    )
                message = event.get("message")
                content = message.get("content") if isinstance(message, dict) else None
                if isinstance(content, str) and content:
                    if content.strip():
                        progress.text()
                    yield content
                if event.get("done"):
                    return _end(event)
        except requests.RequestException as exc:
            raise transport.translate(exc, self.server, mid_stream=True) from None
        if events == 0:
            raise StreamBroken(
                f"{self.server.name} sent an empty reply: check the server's log (the prompt "
                "may exceed the context size)"
            )
        raise transport.no_end(self.server)


def _session(owner: OllamaBackend) -> requests.Session:
    """A session whose connections tell ``owner`` the socket of the request in flight, kept
    alive or just connected: `Reply.close()` from another thread shuts it down, which wakes a
    blocked read (closing the response from another thread does not)."""
    import requests
    import urllib3
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection

    class Watched:
        def _make_request(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
            owner._attach(conn.sock)  # a kept-alive connection (a new one: see Connected)
            return super()._make_request(conn, *args, **kwargs)  # type: ignore[misc]

    class Connected:
        def connect(self) -> None:
            super().connect()  # type: ignore[misc]
            owner._attach(self.sock)  # type: ignore[attr-defined]

    class Connection(Connected, HTTPConnection):
        pass

    class TLSConnection(Connected, HTTPSConnection):
        pass

    class Pool(Watched, urllib3.HTTPConnectionPool):
        ConnectionCls = Connection

    class TLSPool(Watched, urllib3.HTTPSConnectionPool):
        ConnectionCls = TLSConnection

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": TLSPool}

    session = requests.Session()
    session.mount("http://", Adapter())
    session.mount("https://", Adapter())
    return session


def _body(response: requests.Response, limit: int = 64 * 1024) -> str:
    """At most ``limit`` bytes of a body (a hostile server may send gigabytes)."""
    import requests

    try:
        raw = response.raw.read(limit, decode_content=True) if response.raw else b""
    except (requests.RequestException, OSError, ValueError):
        return ""
    except Exception as exc:
        if transport.is_transport_error(exc):
            return ""
        raise
    return (raw or b"").decode("utf-8", errors="replace")


def _end(event: dict[str, Any]) -> ServerEnd:
    tokens = event.get("eval_count")
    duration = event.get("eval_duration")
    reason = event.get("done_reason")
    return ServerEnd(
        reason=short(reason, 40) if isinstance(reason, str) and reason else "stop",
        tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None,
        generation_s=duration / 1e9
        if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration > 0
        else None,
    )
