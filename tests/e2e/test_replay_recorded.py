"""Fast tier: what the real llama.cpp server sent (tests/data/transcripts), replayed byte for
byte by the fake server, through the backend and through the CLI. No real server needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import clean_env
from tests.e2e.record_sse import REQUESTS, events
from tests.fakeservers import FakeServer, Script
from voicechat.backends import create_backend
from voicechat.errors import StreamBroken
from voicechat.settings import BackendSettings, GenerationSettings

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "data" / "transcripts" / "llama-cpp-server"
STREAMS = [name for name in sorted(REQUESTS) if (TRANSCRIPTS / f"{name}.sse").stat().st_size]


def content_and_finish(raw: bytes) -> tuple[str, str]:
    text, finish = "", ""
    for line in raw.decode().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                text += choice["delta"].get("content") or ""
                finish = choice.get("finish_reason") or finish
    return text, finish


def replay(server: FakeServer, name: str):  # type: ignore[no-untyped-def]
    server.enqueue(Script(raw=(TRANSCRIPTS / f"{name}.sse").read_bytes()))
    backend = create_backend(
        BackendSettings(kind="openai", base_url=server.url, model=server.models[0])
    )
    try:
        reply = backend.chat([{"role": "user", "content": "hi"}], GenerationSettings())
        return list(reply), reply
    finally:
        backend.close()


@pytest.mark.parametrize("name", STREAMS)
def test_recorded_stream_replays_through_the_backend(openai_server: FakeServer, name: str) -> None:
    raw = (TRANSCRIPTS / f"{name}.sse").read_bytes()
    expected, finish = content_and_finish(raw)
    deltas, reply = replay(openai_server, name)
    assert "".join(deltas) == expected and expected
    assert all(deltas)  # the role chunk and content "" chunks yield nothing
    assert reply.outcome.finish == finish
    # no usage chunk from llama.cpp: tokens are counted here, one per content chunk
    assert reply.outcome.measured is True
    assert reply.outcome.tokens == events(raw).count("content")


def test_recorded_context_overflow_is_a_broken_stream(openai_server: FakeServer) -> None:
    assert (TRANSCRIPTS / "rec_context_overflow.sse").read_bytes() == b""
    with pytest.raises(StreamBroken, match="empty"):
        replay(openai_server, "rec_context_overflow")


def test_cli_prints_exactly_the_recorded_reply(openai_server: FakeServer, tmp_path: Path) -> None:
    raw = (TRANSCRIPTS / "rec_zh_length.sse").read_bytes()
    expected, _ = content_and_finish(raw)
    openai_server.enqueue(Script(raw=raw))
    profile = tmp_path / "p.yaml"
    profile.write_text(
        f"backend:\n  kind: openai\n  base_url: {openai_server.url}\n  model: local-model\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "voicechat",
            "ask",
            "请介绍一下天空。",
            "-p",
            str(profile),
            "--mute",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected.strip()
    assert "token limit" in result.stderr
