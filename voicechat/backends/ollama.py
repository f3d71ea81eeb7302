"""Ollama's native API: ``POST /api/chat`` streaming NDJSON, through ``requests``.

Each line is one JSON object; ``message.content`` carries the text, the last line has
``done: true`` with ``done_reason`` and the server's token counts. An ``{"error": ...}``
line can arrive mid-stream with status 200. Closing the connection stops generation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Sequence
from typing import Any

import requests

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

RETRY_STATUSES = (429, 502, 503, 504)


class OllamaBackend:
    """Talks to one Ollama server with one keep-alive session."""

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self._session = requests.Session()

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
        started = time.monotonic()
        response = self._post(self.request_body(messages, generation))
        return Reply(self._deltas(response), response.close, started)

    def warm_up(self) -> None:
        """An empty message list makes Ollama load the model and keep it (keep_alive)."""
        body: dict[str, Any] = {"model": self.settings.model, "messages": []}
        if self.settings.keep_alive is not None:
            body["keep_alive"] = self.settings.keep_alive
        body["stream"] = False
        self._post(body).close()

    def close(self) -> None:
        self._session.close()

    # --- the wire ------------------------------------------------------------------------

    def _post(self, body: dict[str, Any]) -> requests.Response:
        url = f"{self.base_url}/api/chat"
        timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        attempt = 0
        while True:
            try:
                response = self._session.post(url, json=body, stream=True, timeout=timeout)
            except requests.exceptions.ConnectTimeout:
                error: BackendError = BackendTimeout(
                    f"no connection to Ollama at {redact_url(self.base_url)} within "
                    f"{self.settings.connect_timeout:g} s (connect timeout): check the host "
                    "and the network, or raise backend.connect_timeout"
                )
            except requests.exceptions.ReadTimeout:
                raise self._read_timeout() from None
            except requests.exceptions.ConnectionError:
                error = BackendUnreachable(
                    f"cannot reach Ollama at {redact_url(self.base_url)}: is it running? "
                    "Start it with `ollama serve`, or point OLLAMA_HOST or the profile's "
                    "base_url at it"
                )
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
            time.sleep(min(0.5 * 2 ** (attempt - 1), 4.0))

    def _read_timeout(self) -> BackendTimeout:
        return BackendTimeout(
            f"Ollama at {redact_url(self.base_url)} sent nothing for "
            f"{self.settings.read_timeout:g} s (read timeout): the model may still be "
            "loading; raise backend.read_timeout or retry"
        )

    def _status_error(self, response: requests.Response) -> BackendError:
        status = response.status_code
        try:
            body = response.text
        except requests.RequestException:
            body = ""
        detail = _error_text(body)
        model = self.settings.model
        if status == 404 and wrong_path(body):
            return EndpointNotFound(
                f"{redact_url(self.base_url)} has no /api/chat (plain 404): is this an "
                "Ollama server? For an OpenAI-compatible server use a profile with "
                "kind: openai and a base URL ending in /v1"
            )
        if status == 404 or ("not found" in detail.lower() and model in detail):
            return ModelNotFound(
                f"model {model!r} is not available on {redact_url(self.base_url)} "
                f"({short(detail)}): run `ollama pull {model}`, or pick another with --model"
            )
        if status in (401, 403):
            return AuthFailed(
                f"{redact_url(self.base_url)} refused access ({status}: {short(detail)}): "
                "check the credentials your proxy expects"
            )
        return ServerError(status_message(status, short(detail), self.base_url))

    def _deltas(self, response: requests.Response) -> Generator[str, None, ServerEnd]:
        lines = 0
        try:
            for line in response.iter_lines(chunk_size=512):
                if not line.strip():
                    continue
                lines += 1
                try:
                    event = json.loads(line)
                except ValueError:
                    raise StreamBroken(
                        "Ollama sent a line that is not JSON "
                        f"({short(line.decode(errors='replace'), 60)}): "
                        "is the base URL an Ollama server?"
                    ) from None
                if not isinstance(event, dict):
                    continue
                if event.get("error"):
                    raise StreamBroken(
                        f"Ollama reported an error mid-reply: {short(str(event['error']))}"
                    )
                message = event.get("message") or {}
                content = message.get("content") if isinstance(message, dict) else None
                if content:
                    yield content
                if event.get("done"):
                    return _end(event)
        except requests.exceptions.ConnectionError as exc:
            if _is_read_timeout(exc):
                raise self._read_timeout() from None
            raise _dropped(self.base_url) from None
        except requests.exceptions.ChunkedEncodingError:
            raise _dropped(self.base_url) from None
        except requests.exceptions.RequestException as exc:
            raise StreamBroken(f"reading the reply failed: {short(str(exc))}") from None
        if lines == 0:
            raise StreamBroken(
                f"Ollama at {redact_url(self.base_url)} sent an empty reply: check the "
                "server's log (the prompt may exceed the context size)"
            )
        return ServerEnd(None)


def _end(event: dict[str, Any]) -> ServerEnd:
    tokens = event.get("eval_count")
    duration = event.get("eval_duration")
    return ServerEnd(
        reason=event.get("done_reason") or "stop",
        tokens=tokens if isinstance(tokens, int) else None,
        generation_s=duration / 1e9 if isinstance(duration, (int, float)) and duration else None,
    )


def _error_text(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip() or "no details"
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return body.strip()


def _is_read_timeout(exc: Exception) -> bool:
    from urllib3.exceptions import ReadTimeoutError

    return any(isinstance(arg, ReadTimeoutError) for arg in exc.args)


def _dropped(url: str) -> StreamBroken:
    return StreamBroken(
        f"the connection to Ollama at {redact_url(url)} dropped mid-reply: the text so far "
        "is shown; check that the server is still running and retry"
    )
