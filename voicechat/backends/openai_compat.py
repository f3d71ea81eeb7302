"""OpenAI-compatible servers (llama.cpp, vLLM, Ollama's /v1, cloud APIs) via the openai SDK.

The SDK sends the request (auth, retries, timeouts, status errors); the stream's SSE we read
ourselves from its raw response, because what servers send is not always what the SDK
expects: ``delta.content`` may be None or "", a usage chunk has ``choices == []``, some
servers never send usage, an error can arrive as an event mid-stream, a stream may end
without any ``finish_reason``, an HTML page may come with status 200, bytes may not be
UTF-8 (decoded with replacement: the reply goes on), and keep-alive comments must not count
as progress. The SDK's default retries are replaced by the profile's (none for local
servers), so a dead server is reported at once.

After a stream that failed (empty, dropped, an error event, garbage) the pooled connections
are thrown away: llama.cpp's server answers a prompt over its context with a clean, empty
200 body and then closes the connection it announced as kept alive, ~30 ms later. The next
turn, reusing it in that window, would get no answer at all and look like a dead server.

Everything about the kind lives here: its ``backend:`` settings, ``OPENAI_BASE_URL`` and
``OPENAI_API_KEY``, its doctor checks and their fixes. The SDK is imported only when a
backend is created (~0.5 s on the Jetson; the Ollama path never pays it).
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import sys
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from voicechat import transport
from voicechat.backends import (
    Message,
    Reply,
    ServerEnd,
    chat_completions,
    completion_chunk,
    fix_for,
    generation_check,
)
from voicechat.checks import Check
from voicechat.errors import (
    AuthFailed,
    BackendError,
    BackendUnreachable,
    ConfigError,
    EndpointNotFound,
    ModelNotFound,
    ServerError,
    StreamBroken,
    VoicechatError,
)
from voicechat.redact import redact_url, remember, remember_url, short
from voicechat.settings import HTTPBackendSettings, url_problem

NO_KEY = "sk-no-key-required"  # the SDK insists on some key; local servers ignore it
URL_ENV = "OPENAI_BASE_URL"
KEY_ENV = "OPENAI_API_KEY"


@dataclass(frozen=True)
class Settings(HTTPBackendSettings):
    """The ``backend:`` section of an OpenAI-compatible profile."""

    api_key_env: str | None = field(default=None, metadata={"env_name": True})
    """Name of the environment variable holding the API key (never the key itself);
    unset: ``OPENAI_API_KEY``."""
    api_key_required: bool = False
    """Fail before sending when the key variable is unset (cloud APIs); local servers need none."""


# --- the kind's interface (see voicechat.backends) ---------------------------------------


def apply_env(settings: Settings, env: Mapping[str, str]) -> tuple[Settings, tuple[str, ...]]:
    """``OLLAMA_HOST`` moves a profile pointing at Ollama's own ``/v1`` (keeping ``/v1``);
    ``OPENAI_BASE_URL`` moves the others."""
    var = URL_ENV
    if _is_ollama_v1(settings.base_url):
        from voicechat.backends.ollama import HOST_ENV, ollama_host

        value = env.get(HOST_ENV, "").strip()
        if value:
            url = ollama_host(value).rstrip("/") + "/v1"
            return dataclasses.replace(settings, base_url=url), (HOST_ENV,)
    value = env.get(var, "").strip()
    if not value:
        return settings, ()
    problem = url_problem(value)
    if problem:
        raise ConfigError(f"${var}: {problem}")
    remember_url(value)
    return dataclasses.replace(settings, base_url=value), (var,)


def api_key_var(settings: Settings) -> str:
    """The variable holding the key: the profile's choice, else ``OPENAI_API_KEY``."""
    return settings.api_key_env or KEY_ENV


def create(settings: Settings, api_key: str | None = None) -> OpenAIBackend:
    return OpenAIBackend(settings, api_key)


def server_of(settings: Settings) -> transport.Server:
    return transport.Server.of(
        settings,
        "the server at {url}",
        "Start it, or point the profile's base_url (or OPENAI_BASE_URL) at it",
    )


def checks(
    settings: Settings,
    api_key: str | None = None,
    *,
    probe_timeout: float = 5.0,
    generation_timeout: float = 60.0,
) -> Iterator[Check]:
    """api key (set?), server (lists models?), model (listed?), generation (one token)."""
    var = api_key_var(settings)
    if api_key:
        yield Check("api key", True, f"${var} is set (value hidden)")
    elif settings.api_key_required:
        yield Check(
            "api key",
            False,
            f"${var} is not set and {server_of(settings).url} needs it",
            f"export {var}=... (the key itself never goes into a profile)",
        )
        for name in ("server", "model", "generation"):
            yield Check(name, None, "skipped: no API key")
        return
    else:
        yield Check("api key", None, f"${var} is not set (not needed by this server)")
    probe = transport.probing(settings, probe_timeout)
    backend = OpenAIBackend(probe, api_key)
    try:
        models = backend.models()
    except VoicechatError as exc:
        yield Check("server", False, str(exc), fix_for(exc, settings))
        yield Check("model", None, "skipped: the server did not answer")
        yield Check("generation", None, "skipped: the server did not answer")
        return
    finally:
        backend.close()
    yield Check("server", True, f"OpenAI-compatible server at {server_of(settings).url}")
    yield model_check(settings.model, models)
    generation = dataclasses.replace(
        probe, read_timeout=min(settings.read_timeout, generation_timeout)
    )
    yield generation_check(OpenAIBackend(generation, api_key), settings)


def model_check(wanted: str, models: list[str]) -> Check:
    if wanted in models:
        return Check("model", True, f"{wanted} is listed by the server")
    if not models:
        return Check("model", None, "the server lists no models: cannot tell")
    listed = ", ".join(short(m, 40) for m in models[:8])
    if len(models) > 8:
        listed += f" (+{len(models) - 8} more)"
    return Check(
        "model",
        False,
        f"{wanted} is not among the server's models: {listed}",
        f"set backend.model (or --model) to one of: {listed}",
    )


def fixes(settings: Settings) -> dict[type[VoicechatError], str]:
    """The doctor's fixes for what this kind raises (see `voicechat.backends.fix_for`)."""
    base = settings.base_url.rstrip("/")
    v1 = redact_url(base if base.endswith("/v1") else base + "/v1")
    var = api_key_var(settings)
    return {
        BackendUnreachable: "start the server, or point OPENAI_BASE_URL / backend.base_url at it",
        EndpointNotFound: "set backend.base_url (or OPENAI_BASE_URL) to the server's /v1 root, "
        f"e.g. {v1}",
        ModelNotFound: "set backend.model (or --model) to a model the server has",
        AuthFailed: f"export {var}=<a valid key> (or set backend.api_key_env to the right "
        "variable)",
        StreamBroken: "check the server's log (a crash, or a prompt over its context size)",
    }


def _is_ollama_v1(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.port == 11434 and parts.path.rstrip("/") == "/v1"
    except ValueError:
        return False


# --- the backend -----------------------------------------------------------------------------


class OpenAIBackend:
    """Talks to one OpenAI-compatible ``/v1`` root."""

    larger_context = "start the server with a larger context (llama-server: --ctx-size)"

    def __init__(self, settings: Settings, api_key: str | None = None) -> None:
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        remember_url(self.base_url)
        remember(api_key)
        self.server = server_of(settings)
        self._api_key = api_key or NO_KEY
        self._key_sent = api_key is not None
        self._sockets: list[Any] = []  # every socket the client opened (see _Recorder)
        self._sockets_lock = threading.Lock()
        self._line: transport.Line | None = None
        """The request in flight (one at a time): a socket connected after its hang-up is
        shut down at once."""
        # Made here, not on first use: it costs ~40-120 ms (SSL context), not to be paid
        # between the question and its first token.
        self._client = self._new_client()

    def _new_client(self) -> Any:
        """An SDK client with its own (empty) connection pool, whose sockets we can reach."""
        import openai

        return openai.OpenAI(
            base_url=self.base_url,
            api_key=self._api_key,
            max_retries=self.settings.retries,
            timeout=openai.Timeout(
                self.settings.read_timeout, connect=self.settings.connect_timeout
            ),
            http_client=_http_client(self._remember_socket),
        )

    def _remember_socket(self, sock: Any) -> None:
        with self._sockets_lock:
            self._sockets = [s for s in self._sockets if s.fileno() >= 0] + [sock]
        line = self._line
        if line is not None:
            line.attach(sock)

    def _interrupt(self, line: transport.Line) -> None:
        """Hang up ``line``, and shut down every socket of this backend: one request is in
        flight at a time (the trace tells a new connection's socket only, not a kept-alive
        one's), and an idle kept-alive connection shut down is only dropped by the pool."""
        line.hang_up()
        with self._sockets_lock:
            sockets = list(self._sockets)
        for sock in sockets:
            transport.shut_down(sock)

    def _drop_connections(self) -> None:
        """Close every pooled connection: the next request opens a fresh one. The new client
        is made now, on the failed turn, not on the next one."""
        self._client.close()
        self._client = self._new_client()

    def request_params(self, messages: Sequence[Message], generation: Any) -> dict[str, Any]:
        """The exact parameters of the request: sampling options only where set."""
        return chat_completions(messages, generation, model=self.settings.model)

    def chat(self, messages: Sequence[Message], generation: Any) -> Reply:
        """The request goes out when the reply is first iterated (see `Reply`)."""
        started = time.monotonic()
        params = self.request_params(messages, generation)
        holder: dict[str, Any] = {}
        line = transport.Line()

        def deltas() -> Generator[str, None, ServerEnd]:
            self._line = line
            try:
                manager, response = self._open(params)
            finally:
                self._line = None  # connected: later sockets (a models() call) are not its
            holder["manager"] = manager
            try:
                return (yield from self._read(response))
            except GeneratorExit:
                raise  # closed by the caller: the SDK closes that response's connection
            except BaseException:
                # The server may be about to close a connection it kept alive (see the
                # module docstring): no later request may go out on it. After a close() the
                # socket is shut down already, and the pool drops it: no new client (~40-120
                # ms) is made on the path that must end within 100 ms.
                if not line.hung_up.is_set():
                    self._drop_connections()
                raise
            finally:
                release()

        def release() -> None:
            manager = holder.pop("manager", None)
            if manager is not None:
                manager.__exit__(None, None, None)

        return Reply(
            deltas(),
            lambda: self._interrupt(line),
            started,
            release=release,
            source=self.server.name,
        )

    def warm_up(self) -> None:
        """OpenAI-compatible servers have no load call; listing models checks the server."""
        self.models()

    def models(self) -> list[str]:
        """The model ids the server lists (``GET /models``)."""
        import openai

        try:
            raw = self._client.models.with_raw_response.list()
            self._check_redirect(raw.http_response)
            return [str(m.id) for m in raw.parse().data]
        except openai.APIStatusError as exc:
            raise self._status_error(exc, "/models") from None
        except openai.APIError as exc:
            raise self._translate(exc) from None
        except Exception as exc:
            if transport.is_transport_error(exc):
                raise transport.translate(exc, self.server) from None
            raise

    def close(self) -> None:
        self._client.close()

    # --- the request -----------------------------------------------------------------------

    def _open(self, params: dict[str, Any]) -> tuple[Any, Any]:
        """Send the request; return the SDK's response manager and the raw 2xx response."""
        import openai

        manager = self._client.chat.completions.with_streaming_response.create(**params)
        try:
            response = manager.__enter__()
        except openai.APIStatusError as exc:
            raise self._status_error(exc, "/chat/completions") from None
        except openai.APIError as exc:
            raise self._translate(exc) from None
        except Exception as exc:
            if transport.is_transport_error(exc):
                raise transport.translate(exc, self.server) from None
            raise
        try:
            self._check_redirect(response.http_response)
        except BackendError:
            manager.__exit__(None, None, None)
            raise
        return manager, response.http_response

    def _check_redirect(self, response: Any) -> None:
        if 300 <= response.status_code < 400:
            raise transport.redirect_error(
                response.status_code, response.headers.get("location"), self.server
            )

    # --- the stream ------------------------------------------------------------------------

    def _read(self, response: Any) -> Generator[str, None, ServerEnd]:
        where = self.server.name
        ctype = response.headers.get("content-type", "")
        progress = transport.Progress(self.server)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        reason: str | None = None
        tokens: int | None = None
        generation_s: float | None = None
        events = 0
        data: list[str] = []
        received: list[str] = []  # the first lines, to say what came when it is no SSE
        done = False
        try:
            for raw in transport.lines(response.iter_bytes(), self.server, progress):
                line = decoder.decode(raw + b"\n")[:-1]
                if len(received) < 3 and line.strip():
                    received.append(line)
                if line.startswith(":"):
                    continue  # a comment: keep-alive pings
                if line:
                    name, _, value = line.partition(":")
                    if name == "data":
                        data.append(value[1:] if value.startswith(" ") else value)
                    elif not name.strip() or name not in ("event", "id", "retry"):
                        raise self._not_sse(ctype, received)
                    continue
                if not data:
                    continue
                payload, data = "\n".join(data), []
                if payload.strip() == "[DONE]":
                    done = True
                    break
                events += 1
                chunk = completion_chunk(self._event(payload))
                if chunk.tokens is not None:
                    tokens = chunk.tokens
                if chunk.generation_s is not None:
                    generation_s = chunk.generation_s
                if chunk.text:
                    if chunk.text.strip():
                        progress.text()
                    yield chunk.text
                if chunk.finish:
                    reason = chunk.finish
        except VoicechatError:
            raise
        except Exception as exc:
            if transport.is_transport_error(exc):
                raise transport.translate(exc, self.server, mid_stream=True) from None
            raise
        if data and not done:
            raise StreamBroken(
                f"{where}: the stream ended in the middle of an event (its last event was never "
                "terminated): the reply may be incomplete; retry"
            )
        if events == 0:
            if done:
                raise StreamBroken(
                    f"{where} ended the stream ([DONE]) before sending anything: check the "
                    "server's log"
                )
            if received:
                raise self._not_sse(ctype, received)
            raise StreamBroken(
                f"{where} sent an empty reply (status 200, no events): the prompt may exceed "
                "its context size (shorten it, or raise the server's context)"
            )
        if reason is None:
            raise transport.no_end(self.server)
        return ServerEnd(reason, tokens=tokens, generation_s=generation_s)

    def _event(self, payload: str) -> dict[str, Any]:
        """One SSE event's JSON; an error event raises with the server's message."""
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise StreamBroken(
                f"{self.server.name} sent an event that is not JSON "
                f"({transport.error_detail(payload)}): is the base URL an OpenAI-compatible "
                "server?"
            ) from None
        if not isinstance(chunk, dict):
            raise StreamBroken(f"{self.server.name} sent an event that is not a JSON object")
        if chunk.get("error"):
            raise StreamBroken(
                f"the server reported an error mid-reply: {transport.error_detail(payload)}"
            )
        return chunk

    def _not_sse(self, ctype: str, received: list[str]) -> StreamBroken:
        first = "\n".join(received)
        if transport.looks_like_html(first) or "html" in ctype.lower():
            what = transport.html_summary(first)
        else:
            what = f"{short(ctype, 40) or 'no content type'}: {short(first, 80)}"
        return StreamBroken(
            f"{self.server.name} answered 200 with {what} instead of an event stream: is the "
            "base URL the server's OpenAI-compatible /v1 root?"
        )

    # --- errors --------------------------------------------------------------------------

    def _translate(self, exc: Any) -> BackendError:
        return transport.translate(exc, self.server)

    def _status_error(self, exc: Any, path: str) -> BackendError:
        response = exc.response
        status = exc.status_code
        history = getattr(response, "history", None) or []
        if history:
            first = history[0]
            return transport.redirect_error(
                first.status_code, first.headers.get("location"), self.server
            )
        if 300 <= status < 400:
            return transport.redirect_error(status, response.headers.get("location"), self.server)
        body = _body_text(response)
        detail = transport.error_detail(body, fallback=short(exc.message, 80))
        where = self.server.url
        model = self.settings.model
        if transport.wrong_endpoint(status, body):
            hint = (
                "does the base URL need /v1?"
                if not self.base_url.endswith("/v1")
                else "is this an OpenAI-compatible server?"
            )
            return EndpointNotFound(f"{where} has no {path} ({status}: {detail}): {hint}")
        if status == 404:
            return ModelNotFound(
                f"model {short(model, 60)!r} is not available at {where} ({detail}): pull or "
                f"load it on the server (Ollama: `ollama pull {model}`), or pick another with "
                "--model"
            )
        if status in (401, 403):
            var = api_key_var(self.settings)
            if self._key_sent:
                return AuthFailed(
                    f"{where} refused the API key ({status}) taken from ${var} ({detail}): "
                    "check its value"
                )
            return AuthFailed(
                f"{where} wants an API key ({status}: {detail}): export {var}=... (or set "
                "backend.api_key_env to the variable that holds it)"
            )
        if status == 400 and "context" in detail.lower():
            return ServerError(
                f"the request does not fit the model's context ({detail}): shorten the input"
            )
        return transport.status_message(status, detail, self.server)


def _body_text(response: Any) -> str:
    """At most 64 kB of an error body (a hostile server may send gigabytes)."""
    try:
        if not response.is_stream_consumed:
            out = b""
            for chunk in response.iter_bytes():
                out += chunk
                if len(out) > 64 * 1024:
                    break
            return out[: 64 * 1024].decode("utf-8", errors="replace")
        return response.content[: 64 * 1024].decode("utf-8", errors="replace")
    except Exception:  # a body that was closed or cannot be read: say nothing about it
        return ""


def _http_client(remember_socket: Any) -> Any:
    """The SDK's own default client, its transport telling us each socket it connects:
    shutting a socket down is the only way to wake a read blocked in another thread."""
    import openai

    httpx = _httpx_module()

    def trace(event: str, info: dict[str, Any]) -> None:
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                remember_socket(sock)

    class Recorder(httpx.HTTPTransport):  # type: ignore[misc,name-defined]
        def handle_request(self, request: Any) -> Any:
            request.extensions = {**request.extensions, "trace": trace}
            return super().handle_request(request)

    # A redirect must be reported, not followed: following turns the POST into a GET.
    return openai.DefaultHttpxClient(transport=Recorder(), follow_redirects=False)


def _httpx_module() -> Any:
    """The httpx the SDK was built on (httpx2 for the newer SDKs, httpx before)."""
    import openai._base_client as base

    module = getattr(base, "httpx2", None) or getattr(base, "httpx", None)
    return module if module is not None else sys.modules["httpx"]
