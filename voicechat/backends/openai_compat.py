"""OpenAI-compatible servers (llama.cpp, vLLM, Ollama's /v1, cloud APIs) via the openai SDK.

The SDK parses the SSE stream; what it leaves to us are the quirks: ``delta.content`` may be
None or "", a usage chunk has ``choices == []``, some servers never send usage, an error can
arrive as an event mid-stream, and a stream may end without any ``finish_reason``. Its
default retries are replaced by the profile's (none for local servers), so a dead server is
reported at once.

After a stream that failed (empty, dropped, an error event, garbage) the pooled connections
are thrown away: llama.cpp's server answers a prompt over its context with a clean, empty
200 body and then closes the connection it announced as kept alive, ~30 ms later. The next
turn, reusing it in that window, would get no answer at all and look like a dead server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import openai

from voicechat.backends import (
    Message,
    Reply,
    ServerEnd,
    redact_url,
    short,
    status_message,
    wrong_path,
)
from voicechat.errors import (
    AuthFailed,
    BackendError,
    BackendTimeout,
    BackendUnreachable,
    EndpointNotFound,
    ModelNotFound,
    ServerError,
    StreamBroken,
)
from voicechat.settings import BackendSettings, GenerationSettings

NO_KEY = "sk-no-key-required"  # the SDK insists on some key; local servers ignore it


class OpenAIBackend:
    """Talks to one OpenAI-compatible ``/v1`` root."""

    def __init__(self, settings: BackendSettings, api_key: str | None = None) -> None:
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self._api_key = api_key or NO_KEY
        # Made here, not on first use: it costs ~40-120 ms (SSL context), not to be paid
        # between the question and its first token.
        self._client = self._new_client()

    def _new_client(self) -> openai.OpenAI:
        """An SDK client with its own (empty) connection pool."""
        return openai.OpenAI(
            base_url=self.base_url,
            api_key=self._api_key,
            max_retries=self.settings.retries,
            timeout=openai.Timeout(
                self.settings.read_timeout, connect=self.settings.connect_timeout
            ),
        )

    def _drop_connections(self) -> None:
        """Close every pooled connection: the next request opens a fresh one. The new client
        is made now, on the failed turn, not on the next one."""
        self._client.close()
        self._client = self._new_client()

    def request_params(
        self, messages: Sequence[Message], generation: GenerationSettings
    ) -> dict[str, Any]:
        """The exact parameters of the request: sampling options only where set."""
        params: dict[str, Any] = {
            "model": self.settings.model,
            "messages": list(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for key, value in (
            ("temperature", generation.temperature),
            ("top_p", generation.top_p),
            ("max_tokens", generation.max_tokens),
            ("seed", generation.seed),
        ):
            if value is not None:
                params[key] = value
        return params

    def chat(self, messages: Sequence[Message], generation: GenerationSettings) -> Reply:
        started = time.monotonic()
        try:
            stream = self._client.chat.completions.create(
                **self.request_params(messages, generation)
            )
        except openai.APIError as exc:
            raise self._translate(exc) from None
        return Reply(self._deltas(stream), stream.close, started)

    def warm_up(self) -> None:
        """OpenAI-compatible servers have no load call; listing models checks the server."""
        try:
            self._client.models.list()
        except openai.APIError as exc:
            raise self._translate(exc) from None

    def close(self) -> None:
        self._client.close()

    # --- the stream ----------------------------------------------------------------------

    def _deltas(self, stream: Iterator[Any]) -> Generator[str, None, ServerEnd]:
        try:
            return (yield from self._read(stream))
        except GeneratorExit:
            raise  # closed by the caller: the SDK closes that response's connection itself
        except BaseException:
            # The server may be about to close a connection it kept alive (see the module
            # docstring): no later request may go out on it.
            self._drop_connections()
            raise

    def _read(self, stream: Iterator[Any]) -> Generator[str, None, ServerEnd]:
        reason: str | None = None
        tokens: int | None = None
        events = 0
        try:
            for chunk in stream:
                events += 1
                usage = getattr(chunk, "usage", None)
                if usage is not None and getattr(usage, "completion_tokens", None) is not None:
                    tokens = usage.completion_tokens
                for choice in (chunk.choices or [])[:1]:
                    content = choice.delta.content if choice.delta else None
                    if content:
                        yield content
                    if choice.finish_reason:
                        reason = choice.finish_reason
        except openai.APIError as exc:
            raise self._translate(exc, mid_stream=True) from None
        except ValueError:  # json.JSONDecodeError from the SDK's SSE decoder
            raise StreamBroken(
                f"the server at {redact_url(self.base_url)} sent an event that is not JSON: "
                "is the base URL an OpenAI-compatible server?"
            ) from None
        except Exception as exc:
            if _is_transport_error(exc):
                raise self._dropped() from None
            raise
        if events == 0:
            raise StreamBroken(
                f"the server at {redact_url(self.base_url)} sent an empty reply: the prompt "
                "may exceed its context size (shorten it, or raise the server's context)"
            )
        return ServerEnd(reason, tokens=tokens)

    # --- errors --------------------------------------------------------------------------

    def _dropped(self) -> StreamBroken:
        return StreamBroken(
            f"the connection to {redact_url(self.base_url)} dropped mid-reply: the text so "
            "far is shown; check that the server is still running and retry"
        )

    def _translate(self, exc: openai.APIError, mid_stream: bool = False) -> BackendError:
        where = redact_url(self.base_url)
        if isinstance(exc, openai.APITimeoutError):
            if "ConnectTimeout" in type(exc.__cause__).__name__:
                return BackendTimeout(
                    f"no connection to {where} within {self.settings.connect_timeout:g} s "
                    "(connect timeout): check the host and the network, or raise "
                    "backend.connect_timeout"
                )
            return BackendTimeout(
                f"{where} sent nothing for {self.settings.read_timeout:g} s (read timeout): "
                "the model may still be loading; raise backend.read_timeout or retry"
            )
        if isinstance(exc, openai.APIConnectionError):
            if mid_stream:
                return self._dropped()
            return BackendUnreachable(
                f"cannot reach {where}: is the server running? Start it, or point the "
                "profile's base_url (or OPENAI_BASE_URL) at it"
            )
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc)
        # An error event inside a 200 stream.
        return StreamBroken(f"the server reported an error mid-reply: {short(exc.message)}")

    def _status_error(self, exc: openai.APIStatusError) -> BackendError:
        status = exc.status_code
        body = _body_text(exc)
        detail = short(_detail(exc, body))
        where = redact_url(self.base_url)
        model = self.settings.model
        if status == 404 and wrong_path(body):
            hint = (
                "does the base URL need /v1?"
                if not self.base_url.endswith("/v1")
                else "is this an OpenAI-compatible server?"
            )
            return EndpointNotFound(
                f"{where} has no /chat/completions (plain 404 page not found): {hint}"
            )
        if status == 404:
            return ModelNotFound(
                f"model {model!r} is not available at {where} ({detail}): pull or load it on "
                "the server (Ollama: `ollama pull " + model + "`), or pick another with --model"
            )
        if status in (401, 403):
            var = self.settings.api_key_env or "the profile's backend.api_key_env"
            return AuthFailed(
                f"{where} refused the API key ({status}: {detail}): check {var}"
                if self.settings.api_key_env
                else f"{where} wants an API key ({status}: {detail}): set {var} to the name "
                "of the environment variable that holds it"
            )
        if status == 400 and "context" in detail.lower():
            return ServerError(
                f"the request does not fit the model's context ({detail}): shorten the input"
            )
        return ServerError(status_message(status, detail, self.base_url))


def _body_text(exc: openai.APIStatusError) -> str:
    try:
        return exc.response.text
    except Exception:  # a streamed error body that was never read
        return ""


def _detail(exc: openai.APIStatusError, body: str) -> str:
    error = exc.body.get("error") if isinstance(exc.body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(exc.body, dict) and exc.body.get("message"):
        return str(exc.body["message"])
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip() or exc.message
    return str(data.get("error", data)) if isinstance(data, dict) else body.strip()


def _is_transport_error(exc: Exception) -> bool:
    """httpx/httpcore errors escape the SDK while a stream is being read."""
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in (
        "httpx",
        "httpx2",
        "httpcore",
        "httpcore2",
        "h11",
    )
