"""Fast tier: what real llama.cpp servers sent (tests/data/transcripts), replayed byte for byte
by the fake server, through the backend and through the CLI. No real server needed.

Two servers were recorded (see the README beside the transcripts): llama.cpp's own server
(``llama-server/``, what the realserver tier runs now) and llama-cpp-python's
(``llama-cpp-server/``). Users run both; the backend must read both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import clean_env
from tests.e2e.record_sse import INSTRUCT_REQUESTS, REQUESTS, events, status_of
from tests.support.fakeservers import FakeServer, Script
from voicechat.backends import create_backend, settings_for
from voicechat.errors import EndpointNotFound, ServerError, StreamBroken
from voicechat.settings import GenerationSettings

DATA = Path(__file__).resolve().parents[1] / "data" / "transcripts"
LLAMA_SERVER = DATA / "llama-server"
"""llama.cpp's own server (through xllamacpp), recorded by the current tier."""
LLAMA_CPP_PYTHON = DATA / "llama-cpp-server"
"""llama-cpp-python's server, recorded by the tier before it moved to llama.cpp's own."""


def streams(folder: Path, names: list[str]) -> list[Path]:
    """The recorded 200 streams with a body (errors are tested one by one below)."""
    found = []
    for name in sorted(names):
        sse, head = folder / f"{name}.sse", folder / f"{name}.headers"
        if sse.exists() and sse.stat().st_size and status_of(head.read_text()) == 200:
            found.append(sse)
    return found


STREAMS = streams(LLAMA_SERVER, [*REQUESTS, *INSTRUCT_REQUESTS]) + streams(
    LLAMA_CPP_PYTHON, list(REQUESTS)
)


def content_and_finish(raw: bytes) -> tuple[str, str]:
    text, finish = "", ""
    for line in raw.decode().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                text += choice["delta"].get("content") or ""
                finish = choice.get("finish_reason") or finish
    return text, finish


def usage_tokens(raw: bytes) -> int | None:
    """completion_tokens of the usage chunk, if the server sent one."""
    for line in raw.decode().splitlines():
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            if not chunk["choices"] and chunk.get("usage"):
                return chunk["usage"]["completion_tokens"]
    return None


def replay_script(server: FakeServer, script: Script):  # type: ignore[no-untyped-def]
    server.enqueue(script)
    backend = create_backend(settings_for("openai", base_url=server.url, model=server.models[0]))
    try:
        reply = backend.chat([{"role": "user", "content": "hi"}], GenerationSettings())
        return list(reply), reply
    finally:
        backend.close()


def replay(server: FakeServer, path: Path):  # type: ignore[no-untyped-def]
    return replay_script(server, Script(raw=path.read_bytes()))


def recorded_error(name: str) -> Script:
    """A recorded error answer of llama.cpp's own server, as the fake server's status+body."""
    head = (LLAMA_SERVER / f"{name}.headers").read_text()
    return Script(status=status_of(head), body=(LLAMA_SERVER / f"{name}.sse").read_text())


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recorded_stream_replays_through_the_backend(openai_server: FakeServer, path: Path) -> None:
    raw = path.read_bytes()
    expected, finish = content_and_finish(raw)
    deltas, reply = replay(openai_server, path)
    assert "".join(deltas) == expected and expected
    assert all(deltas)  # the role chunk and content "" chunks yield nothing
    assert reply.outcome.finish == finish
    counted = usage_tokens(raw)
    if counted is None:  # llama-cpp-python never sends usage: one token per content chunk
        assert reply.outcome.measured is True
        assert reply.outcome.tokens == events(raw).count("content")
    else:  # llama.cpp's own server sends it when asked (the backend asks): its count
        assert reply.outcome.tokens == counted


def test_llama_server_stream_shapes_differ_from_llama_cpp_python_as_noted() -> None:
    """The differences the README beside the transcripts describes."""
    own = events((LLAMA_SERVER / "rec_en_length.sse").read_bytes())
    old = events((LLAMA_CPP_PYTHON / "rec_en_length.sse").read_bytes())
    assert own[0] == old[0] == "role"  # both open with a role chunk (content null)
    assert own[-2:] == ["usage", "done"] and "usage" not in old
    stop_own = events((LLAMA_SERVER / "rec_stop_sequence.sse").read_bytes())
    stop_old = events((LLAMA_CPP_PYTHON / "rec_stop_sequence.sse").read_bytes())
    assert "empty" in stop_old and "empty" not in stop_own
    assert events((LLAMA_SERVER / "rec_instruct_stop.sse").read_bytes())[-3] == "finish:stop"


def test_recorded_context_overflow_is_a_broken_stream_from_llama_cpp_python(
    openai_server: FakeServer,
) -> None:
    assert (LLAMA_CPP_PYTHON / "rec_context_overflow.sse").read_bytes() == b""
    with pytest.raises(StreamBroken, match="empty"):
        replay(openai_server, LLAMA_CPP_PYTHON / "rec_context_overflow.sse")


def test_recorded_context_overflow_is_refused_by_llama_server(openai_server: FakeServer) -> None:
    """llama.cpp's own server refuses the over-long prompt before streaming: a JSON 400."""
    script = recorded_error("rec_context_overflow")
    assert script.status == 400 and "exceed_context_size_error" in (script.body or "")
    with pytest.raises(ServerError, match="does not fit the model's context"):
        replay_script(openai_server, script)


def test_recorded_json_404_of_llama_server_is_a_wrong_path(openai_server: FakeServer) -> None:
    """llama.cpp's 404 for a path that is no API route is JSON ("File Not Found"), not the
    plain text of Go servers: still the base URL's fault, not a missing model."""
    script = recorded_error("rec_wrong_path")
    assert script.status == 404 and "File Not Found" in (script.body or "")
    with pytest.raises(EndpointNotFound):
        replay_script(openai_server, script)


@pytest.mark.parametrize("folder", [LLAMA_SERVER, LLAMA_CPP_PYTHON], ids=lambda p: p.name)
def test_cli_prints_exactly_the_recorded_reply(
    openai_server: FakeServer, tmp_path: Path, folder: Path
) -> None:
    raw = (folder / "rec_zh_length.sse").read_bytes()
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
