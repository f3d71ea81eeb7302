"""Record what a real OpenAI-compatible server sends, byte for byte, for replay tests.

The fast tier replays these files through `tests.support.fakeservers` (``Script(raw=...)``), so the
backend is tested against real traffic without the real server. Re-record after upgrading
xllamacpp (the realserver tier checks that live streams still have the recorded shape)::

    python -m tests.e2e.record_sse BASE_URL tests/data/transcripts/llama-server [INSTRUCT_URL]

with the servers `scripts/e2e_real_server.sh` starts (BASE_URL: Gemma 3 270M; INSTRUCT_URL:
SmolLM2-135M-Instruct, for `INSTRUCT_REQUESTS`).

Each request gives ``NAME.sse`` (the response body as received, chunked framing removed) and
``NAME.headers`` (status line and headers, lower-cased names kept as sent).
"""

from __future__ import annotations

import http.client
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MODEL = "gemma3-270m"

REQUESTS: dict[str, dict[str, Any]] = {
    # ended by max_tokens: finish_reason "length"
    "rec_en_length": {
        "messages": [{"role": "user", "content": "Tell me about the sky."}],
        "max_tokens": 16,
    },
    # Chinese prompt: non-ASCII escaped as \\uXXXX in the JSON
    "rec_zh_length": {
        "messages": [{"role": "user", "content": "请介绍一下天空。"}],
        "max_tokens": 16,
    },
    # ended by a stop sequence: finish_reason "stop" (llama-cpp-python sent an extra content ""
    # chunk first; llama.cpp's own server does not)
    "rec_stop_sequence": {
        "messages": [{"role": "user", "content": "Tell me about the sky."}],
        "max_tokens": 64,
        "stop": ["."],
    },
    # a system prompt and a multi-turn history, as `voicechat chat` sends them
    "rec_multi_turn": {
        "messages": [
            {"role": "system", "content": "You are a helpful voice assistant."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Name a colour."},
        ],
        "max_tokens": 12,
    },
    # a prompt over the context (n_ctx 2048): llama.cpp's own server refuses it with a JSON
    # 400 (exceed_context_size_error); llama-cpp-python streamed 200 with an EMPTY body
    "rec_context_overflow": {
        "messages": [{"role": "user", "content": "sky " * 3000}],
        "max_tokens": 8,
    },
}
"""Request bodies (model, stream, temperature added by `body_for`), for the base model."""

INSTRUCT_REQUESTS: dict[str, dict[str, Any]] = {
    # an instruct model's reply that ends by itself: finish_reason "stop"
    "rec_instruct_stop": {
        "messages": [
            {"role": "user", "content": "What is the capital of France? Answer in one word."}
        ],
        "max_tokens": 32,
    },
}
"""Request bodies for the instruct model (SmolLM2-135M-Instruct)."""

PATHS: dict[str, str] = {
    # a path that is not an API route: llama.cpp answers a JSON 404 "File Not Found"
    "rec_wrong_path": "/v2/chat/completions",
}
"""Requests to another path than ``/chat/completions`` (the body of ``rec_en_length``)."""


@dataclass(frozen=True)
class Recorded:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def head(self) -> str:
        """The status line and headers, as ``curl -i`` shows them."""
        lines = [f"HTTP/1.1 {self.status}"] + [f"{k}: {v}" for k, v in self.headers]
        return "\n".join(lines) + "\n"


def body_for(name: str) -> dict[str, Any]:
    """The full request body for one of `REQUESTS` or `INSTRUCT_REQUESTS`, as the openai
    backend sends it (usage asked for; deterministic: temperature 0)."""
    request = {**REQUESTS, **INSTRUCT_REQUESTS}[name]
    return {
        "model": MODEL,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "seed": 1,
        **request,
    }


def record(
    base_url: str, body: dict[str, Any], timeout: float = 60.0, path: str = "/chat/completions"
) -> Recorded:
    """POST ``body`` to ``{base_url}{path}`` and keep every body byte as it came."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        payload = json.dumps(body).encode()
        root = parts.path.rstrip("/")
        if path != "/chat/completions":
            root = root.rsplit("/", 1)[0]  # PATHS are from the server's root, not /v1
        conn.request(
            "POST",
            root + path,
            body=payload,
            headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
        )
        response = conn.getresponse()
        data = bytearray()
        while chunk := response.read1(65536):
            data += chunk
        return Recorded(response.status, response.getheaders(), bytes(data))
    finally:
        conn.close()


def events(body: bytes) -> list[str]:
    """The shape of an SSE body, one word per event, content left out (it is nonsense).

    >>> events(b'data: {"choices": [{"delta": {"role": "assistant"}, "finish_reason": null}]}\\n\\n'
    ...        b'data: {"choices": [{"delta": {"content": "Hi"}, "finish_reason": null}]}\\n\\n'
    ...        b': ping - 2026-01-01\\n\\n'
    ...        b'data: {"choices": [{"delta": {}, "finish_reason": "length"}]}\\n\\n'
    ...        b'data: [DONE]\\n\\n')
    ['role', 'content', 'comment', 'finish:length', 'done']
    """
    shape = []
    for line in body.decode("utf-8").splitlines():
        if line.startswith(":"):
            shape.append("comment")
        elif line == "data: [DONE]":
            shape.append("done")
        elif line.startswith("data: "):
            chunk = json.loads(line[6:])
            if not chunk.get("choices"):
                shape.append("usage")
                continue
            choice = chunk["choices"][0]
            delta = choice.get("delta") or {}
            if choice.get("finish_reason"):
                shape.append(f"finish:{choice['finish_reason']}")
            elif "role" in delta:
                shape.append("role")
            elif delta.get("content") == "":
                shape.append("empty")
            elif delta.get("content"):
                shape.append("content")
            else:
                shape.append("other")
        elif line.strip():
            shape.append("text")
    return shape


def status_of(head: str) -> int:
    """The status in a ``NAME.headers`` file.

    >>> status_of("HTTP/1.1 404\\nServer: llama.cpp\\n")
    404
    """
    return int(head.split(None, 2)[1])


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    url, out = argv[0], Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    todo = [(name, url, body_for(name), "/chat/completions") for name in REQUESTS]
    todo += [(name, url, body_for("rec_en_length"), path) for name, path in PATHS.items()]
    if len(argv) == 3:
        todo += [(name, argv[2], body_for(name), "/chat/completions") for name in INSTRUCT_REQUESTS]
    for name, where, body, path in todo:
        got = record(where, body, path=path)
        (out / f"{name}.sse").write_bytes(got.body)
        (out / f"{name}.headers").write_text(got.head())
        shape = events(got.body)[-2:] if got.status == 200 else got.body[:80]
        print(f"{name}: {got.status}, {len(got.body)} bytes, {shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
