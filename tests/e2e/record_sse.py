"""Record what a real OpenAI-compatible server sends, byte for byte, for replay tests.

The fast tier replays these files through `tests.fakeservers` (``Script(raw=...)``), so the
backend is tested against real traffic without the real server. Re-record after upgrading
llama-cpp-python (the realserver tier checks that live streams still have the recorded shape)::

    python -m tests.e2e.record_sse http://127.0.0.1:PORT/v1 tests/data/transcripts/llama-cpp-server

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
    # ended by a stop sequence: finish_reason "stop" and an extra content "" chunk
    "rec_stop_sequence": {
        "messages": [{"role": "user", "content": "Count: one, two, three, four"}],
        "max_tokens": 64,
        "stop": [","],
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
    # a prompt over the context (n_ctx 2048): streaming gives 200 with an EMPTY body
    "rec_context_overflow": {
        "messages": [{"role": "user", "content": "sky " * 3000}],
        "max_tokens": 8,
    },
}
"""Request bodies (model, stream, temperature added by `body_for`)."""


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
    """The full request body for one of `REQUESTS` (deterministic: temperature 0)."""
    return {"model": MODEL, "stream": True, "temperature": 0, "seed": 1, **REQUESTS[name]}


def record(base_url: str, body: dict[str, Any], timeout: float = 60.0) -> Recorded:
    """POST ``body`` to ``{base_url}/chat/completions`` and keep every body byte as it came."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        payload = json.dumps(body).encode()
        conn.request(
            "POST",
            parts.path.rstrip("/") + "/chat/completions",
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


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    url, out = argv[0], Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name in REQUESTS:
        got = record(url, body_for(name))
        (out / f"{name}.sse").write_bytes(got.body)
        (out / f"{name}.headers").write_text(got.head())
        print(f"{name}: {got.status}, {len(got.body)} bytes, {events(got.body)[-2:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
