"""Both backends against real local HTTP servers speaking the exact wire formats and faults."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.fakeservers import FakeServer, Script, dead_port
from voicechat.backends import create_backend, settings_for
from voicechat.errors import (
    AuthFailed,
    BackendTimeout,
    BackendUnreachable,
    ConfigError,
    EmptyReply,
    EndpointNotFound,
    ModelNotFound,
    ServerError,
    StreamBroken,
)
from voicechat.settings import GenerationSettings

TRANSCRIPTS = Path(__file__).parent / "data" / "transcripts" / "llama-cpp-server"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "transcripts" / "llama-cpp-server"
ASK = [{"role": "user", "content": "hi"}]


def transcript(name: str) -> bytes:
    """A recorded llama.cpp stream (the repo's copy, else the shared original)."""
    for folder in (TRANSCRIPTS, SHARED):
        if (folder / name).is_file():
            return (folder / name).read_bytes()
    pytest.skip(f"transcript {name} not found")


def backend_for(server: FakeServer, **settings: object):  # type: ignore[no-untyped-def]
    model = server.models[0]
    return create_backend(
        settings_for(server.protocol, base_url=server.url, model=model, **settings)  # type: ignore[arg-type]
    )


@pytest.fixture(params=["ollama", "openai"])
def server(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    with FakeServer(request.param) as fake:
        yield fake


def collect(server: FakeServer, script: Script, **settings: object):  # type: ignore[no-untyped-def]
    server.enqueue(script)
    reply = backend_for(server, **settings).chat(ASK, GenerationSettings())
    return list(reply), reply


# --- requests ------------------------------------------------------------------------------


def test_ollama_request_body_carries_options_and_keep_alive(ollama_server: FakeServer) -> None:
    backend = backend_for(ollama_server, keep_alive="30m")
    generation = GenerationSettings(temperature=0.2, max_tokens=64, context_size=4096, seed=7)
    list(backend.chat([{"role": "system", "content": "be brief"}, *ASK], generation))
    (request,) = ollama_server.chats
    assert request.path == "/api/chat"
    assert request.body == {
        "model": "qwen2.5:7b",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "stream": True,
        "options": {"temperature": 0.2, "num_predict": 64, "num_ctx": 4096, "seed": 7},
        "keep_alive": "30m",
    }


def test_ollama_request_leaves_out_unset_options(ollama_server: FakeServer) -> None:
    list(backend_for(ollama_server).chat(ASK, GenerationSettings()))
    assert ollama_server.chats[0].body == {"model": "qwen2.5:7b", "messages": ASK, "stream": True}


def test_openai_request_body(openai_server: FakeServer) -> None:
    backend = backend_for(openai_server)
    list(backend.chat(ASK, GenerationSettings(temperature=0.5, max_tokens=32, context_size=99)))
    (request,) = openai_server.chats
    assert request.path == "/v1/chat/completions"
    assert request.body == {
        "model": "local-model",
        "messages": ASK,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.5,
        "max_tokens": 32,
    }
    assert request.headers["authorization"] == "Bearer sk-no-key-required"


def test_openai_sends_the_api_key(openai_server: FakeServer) -> None:
    openai_server.api_key = "sk-test-123"
    backend = create_backend(
        settings_for("openai", base_url=openai_server.url, model="local-model"),
        "sk-test-123",
    )
    assert "".join(backend.chat(ASK, GenerationSettings())) == "Hello there."


# --- streams and their quirks --------------------------------------------------------------


def test_text_arrives_delta_by_delta_with_outcome(server: FakeServer) -> None:
    deltas, reply = collect(server, Script(tokens=["天空", "是蓝色的", "。", " Yes."]))
    assert deltas == ["天空", "是蓝色的", "。", " Yes."]
    assert reply.text == "天空是蓝色的。 Yes."
    assert reply.outcome.finish == "stop"
    assert reply.outcome.tokens == 4
    assert reply.outcome.chars == len(reply.text)
    assert reply.outcome.first_token_s is not None


def test_deltas_are_yielded_before_the_stream_ends(server: FakeServer) -> None:
    """Streaming, not buffering: the first delta is in hand while the server still waits."""
    server.enqueue(Script(tokens=["first", " second"], tokens_per_s=2))
    reply = backend_for(server).chat(ASK, GenerationSettings())
    started = time.monotonic()
    stream = iter(reply)
    assert next(stream) == "first"
    first_at = time.monotonic() - started
    assert next(stream) == " second"
    second_at = time.monotonic() - started
    assert second_at - first_at > 0.3  # the second token was paced 0.5 s later
    assert list(stream) == []


def test_length_finish_is_reported(server: FakeServer) -> None:
    _, reply = collect(server, Script(finish="length"))
    assert reply.outcome.finish == "length"


def test_stream_without_end_marker_is_truncated_and_keeps_text(server: FakeServer) -> None:
    """Issue 11: the backend raises StreamBroken itself (no finish="truncated" for chat)."""
    server.enqueue(Script(tokens=["part", "ial"], finish=None))
    reply = backend_for(server).chat(ASK, GenerationSettings())
    deltas: list[str] = []
    with pytest.raises(StreamBroken, match="without an end marker"):
        for delta in reply:
            deltas.append(delta)
    assert deltas == ["part", "ial"]
    assert reply.text == "partial"
    assert reply.outcome is None


def test_ollama_speed_comes_from_server_counts(ollama_server: FakeServer) -> None:
    _, reply = collect(ollama_server, Script(tokens=["a"] * 10))
    assert reply.outcome.measured is False
    assert reply.outcome.tokens == 10
    assert reply.outcome.tokens_per_s == pytest.approx(10 / 0.5)  # eval_duration 0.5 s


def test_ollama_without_counts_measures_speed(ollama_server: FakeServer) -> None:
    _, reply = collect(ollama_server, Script(tokens=["a"] * 5, tokens_per_s=50, counts=False))
    assert reply.outcome.measured is True
    assert reply.outcome.tokens == 5
    assert 10 < reply.outcome.tokens_per_s < 80


def test_openai_usage_chunk_with_empty_choices(openai_server: FakeServer) -> None:
    deltas, reply = collect(openai_server, Script(tokens=["x", "y", "z"]))
    assert deltas == ["x", "y", "z"]
    # the count is the server's; the speed is measured here (issue 12: not "(server)")
    assert reply.outcome.tokens == 3 and reply.outcome.measured is True


def test_openai_without_usage_chunk_counts_deltas(openai_server: FakeServer) -> None:
    deltas, reply = collect(openai_server, Script(tokens=["x", "y"], usage=False))
    assert deltas == ["x", "y"]
    assert reply.outcome.tokens == 2 and reply.outcome.measured is True


def test_openai_speed_from_llama_cpp_timings(openai_server: FakeServer) -> None:
    """llama.cpp's server sends its own count and generation time (``timings``) in the last
    chunk, parsed as the embedded backend parses them: the speed is the server's."""
    import json

    def event(choice: dict, **extra: object) -> bytes:
        return b"data: " + json.dumps({"choices": [choice], **extra}).encode() + b"\n\n"

    raw = (
        event({"delta": {"content": "Hi"}, "finish_reason": None})
        + event({"delta": {"content": " there"}, "finish_reason": None})
        + event(
            {"delta": {}, "finish_reason": "stop"},
            timings={"predicted_n": 3, "predicted_ms": 60.0},
        )
        + b"data: [DONE]\n\n"
    )
    deltas, reply = collect(openai_server, Script(raw=raw))
    assert deltas == ["Hi", " there"]
    assert reply.outcome.measured is False
    assert reply.outcome.tokens == 3
    assert reply.outcome.tokens_per_s == pytest.approx(50.0)


def test_openai_sse_comment_lines_are_ignored(openai_server: FakeServer) -> None:
    deltas, _ = collect(openai_server, Script(tokens=list("abcdef"), comments=True))
    assert "".join(deltas) == "abcdef"


@pytest.mark.parametrize(
    ("name", "finish"),
    [
        ("raw_en_short.sse", "length"),
        ("raw_zh_short.sse", "length"),
        ("raw_zh_160.sse", "length"),
        ("raw_stop_sequence.sse", "stop"),
    ],
)
def test_replays_of_real_llama_cpp_streams(
    openai_server: FakeServer, name: str, finish: str
) -> None:
    """Role chunk with no content, one token per chunk, content "" chunks, no usage."""
    raw = transcript(name)
    deltas, reply = collect(openai_server, Script(raw=raw))
    import json

    expected = ""
    for line in raw.decode().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                expected += choice["delta"].get("content") or ""
    assert "".join(deltas) == expected and expected
    assert all(deltas)
    assert reply.outcome.finish == finish
    assert reply.outcome.measured is True  # llama.cpp never sends usage


# --- errors before the stream ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_unreachable_server_is_reported_at_once(kind: str) -> None:
    url = f"http://127.0.0.1:{dead_port()}" + ("/v1" if kind == "openai" else "")
    backend = create_backend(settings_for(kind, base_url=url, model="m"))  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(BackendUnreachable) as caught:
        list(backend.chat(ASK, GenerationSettings()))
    assert time.monotonic() - started < 1.0  # no hidden SDK retries with backoff
    assert url in str(caught.value)
    if kind == "ollama":
        assert "ollama serve" in str(caught.value)


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_connect_timeout(kind: str, blackhole: str) -> None:
    url = blackhole + ("/v1" if kind == "openai" else "")
    backend = create_backend(
        settings_for(kind, base_url=url, model="m", connect_timeout=0.3)  # type: ignore[arg-type]
    )
    with pytest.raises(BackendTimeout, match="connect timeout"):
        list(backend.chat(ASK, GenerationSettings()))


def test_read_timeout(server: FakeServer) -> None:
    server.enqueue(Script(fault="hang", hang_s=3))
    backend = backend_for(server, read_timeout=0.3)
    with pytest.raises(BackendTimeout, match="read timeout"):
        list(backend.chat(ASK, GenerationSettings()))


def test_read_timeout_mid_stream(server: FakeServer) -> None:
    server.enqueue(Script(tokens=["a", "b"], tokens_per_s=0.5))
    reply = backend_for(server, read_timeout=0.3).chat(ASK, GenerationSettings())
    with pytest.raises((BackendTimeout, StreamBroken)):
        list(reply)
    assert reply.text == "a"


def test_model_not_found(server: FakeServer) -> None:
    backend = create_backend(
        settings_for(server.protocol, base_url=server.url, model="llama9:70b")  # type: ignore[arg-type]
    )
    with pytest.raises(ModelNotFound, match=r"ollama pull llama9:70b"):
        list(backend.chat(ASK, GenerationSettings()))


def test_wrong_path_suggests_v1() -> None:
    """An OpenAI profile pointed at Ollama's root: Go's plain-text 404."""
    with FakeServer("ollama", models=["qwen2.5:7b"]) as ollama:
        backend = create_backend(settings_for("openai", base_url=ollama.url, model="qwen2.5:7b"))
        with pytest.raises(EndpointNotFound, match="does the base URL need /v1"):
            list(backend.chat(ASK, GenerationSettings()))


def test_ollama_profile_at_an_openai_server() -> None:
    with FakeServer("openai") as openai_like:
        backend = create_backend(
            settings_for("ollama", base_url=openai_like.url[:-3], model="qwen2.5:7b")
        )
        with pytest.raises(EndpointNotFound, match="kind: openai"):
            list(backend.chat(ASK, GenerationSettings()))


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_names_the_variable(openai_server: FakeServer, status: int) -> None:
    body = '{"error": {"message": "Incorrect API key provided: sk-***", "type": "x"}}'
    openai_server.enqueue(Script(status=status, body=body))
    backend = create_backend(
        settings_for(
            "openai", base_url=openai_server.url, model="local-model", api_key_env="MY_KEY"
        ),
        "sk-secret-value",
    )
    with pytest.raises(AuthFailed) as caught:
        list(backend.chat(ASK, GenerationSettings()))
    assert "MY_KEY" in str(caught.value)
    assert "sk-secret-value" not in str(caught.value)


def test_ollama_auth_failure(ollama_server: FakeServer) -> None:
    ollama_server.enqueue(Script(status=401, body='{"error": "unauthorized"}'))
    with pytest.raises(AuthFailed):
        list(backend_for(ollama_server).chat(ASK, GenerationSettings()))


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_server_errors(server: FakeServer, status: int) -> None:
    body = '{"error": "server busy"}' if server.protocol == "ollama" else "Internal Server Error"
    server.enqueue(Script(status=status, body=body))
    with pytest.raises(ServerError) as caught:
        list(backend_for(server).chat(ASK, GenerationSettings()))
    assert str(status) in str(caught.value)
    assert len(server.chats) == 1  # retries are 0 for local profiles: no hidden repeats


def test_retries_are_the_profiles(server: FakeServer) -> None:
    server.enqueue(Script(status=503, body='{"error": "loading"}'))
    deltas, _ = collect(server, Script(tokens=["ok"]), retries=1)
    assert deltas == ["ok"]
    assert len(server.chats) == 2


def test_context_exceeded_400(openai_server: FakeServer) -> None:
    body = (
        '{"error": {"message": "Requested tokens (3000) exceed context window of 2048", '
        '"type": "invalid_request_error", "code": "context_length_exceeded"}}'
    )
    openai_server.enqueue(Script(status=400, body=body))
    with pytest.raises(ServerError, match="context"):
        list(backend_for(openai_server).chat(ASK, GenerationSettings()))


# --- errors during the stream ------------------------------------------------------------------


def test_error_line_mid_stream_keeps_text(server: FakeServer) -> None:
    server.enqueue(Script(tokens=["Half", " a reply"], fault="error_line"))
    reply = backend_for(server).chat(ASK, GenerationSettings())
    with pytest.raises(StreamBroken, match="mid-reply"):
        list(reply)
    assert reply.text == "Half a reply"


def test_dropped_connection_keeps_text(server: FakeServer) -> None:
    server.enqueue(Script(tokens=["Half", " a reply"], fault="drop"))
    reply = backend_for(server).chat(ASK, GenerationSettings())
    with pytest.raises(StreamBroken, match="dropped mid-reply"):
        list(reply)
    assert reply.text == "Half a reply"


def test_empty_200_body(server: FakeServer) -> None:
    server.enqueue(Script(fault="empty"))
    with pytest.raises(StreamBroken, match="empty reply"):
        list(backend_for(server).chat(ASK, GenerationSettings()))


@pytest.mark.parametrize("finish", ["stop", "length"])
def test_a_reply_of_blanks_is_an_empty_reply(server: FakeServer, finish: str) -> None:
    """The one check every backend's Reply makes (the embedded one: tests/test_llamacpp.py)."""
    server.enqueue(Script(tokens=[" ", "\n", "  "], finish=finish))
    reply = backend_for(server).chat(ASK, GenerationSettings())
    with pytest.raises(EmptyReply, match=r"without any text \(an empty reply") as caught:
        list(reply)
    assert caught.value.exit_code == 9 and caught.value.finish == finish
    assert server.url in str(caught.value) and "check the server's log" in str(caught.value)
    assert reply.text == " \n  " and reply.outcome is None


@pytest.mark.parametrize(("finish", "ok"), [("length", True), ("stop", False)])
def test_the_doctors_one_token_may_be_a_blank_but_not_nothing(
    server: FakeServer, finish: str, ok: bool
) -> None:
    """max_tokens 1 spent on a blank is a working model; a blank and then the end is not."""
    from voicechat.backends import generation_check

    server.enqueue(Script(tokens=[" "], finish=finish))
    backend = backend_for(server)
    check = generation_check(backend, backend.settings)
    assert check.ok is ok, check
    assert ("empty reply" in check.detail) is not ok


@pytest.mark.parametrize(
    "broken",
    [
        Script(fault="empty", hang_up_s=1.0),
        Script(tokens=["Half"], fault="drop"),
        Script(tokens=["Half"], fault="error_line"),
        Script(tokens=["Half"], fault="not_json"),
    ],
    ids=lambda script: script.fault,
)
def test_next_turn_after_a_broken_stream_goes_on(server: FakeServer, broken: Script) -> None:
    """llama.cpp closes the kept-alive connection ~30 ms after its empty stream; a next turn
    sent on it meanwhile got no answer and was reported as 'cannot reach' the server."""
    backend = backend_for(server)
    server.enqueue(broken, Script(tokens=["Still", " here"]))
    with pytest.raises(StreamBroken):
        list(backend.chat(ASK, GenerationSettings()))
    assert list(backend.chat(ASK, GenerationSettings())) == ["Still", " here"]
    assert len(server.chats) == 2
    backend.close()


def test_garbage_line(server: FakeServer) -> None:
    server.enqueue(Script(tokens=["a"], fault="not_json"))
    reply = backend_for(server).chat(ASK, GenerationSettings())
    with pytest.raises(StreamBroken, match="not JSON"):
        list(reply)
    assert reply.text == "a"


def test_close_stops_the_server_stream(server: FakeServer) -> None:
    """Closing the reply closes the connection: the server sees it and stops generating."""
    server.enqueue(Script(tokens=["tok"] * 200, tokens_per_s=50))
    reply = backend_for(server).chat(ASK, GenerationSettings())
    stream = iter(reply)
    next(stream)
    reply.close()
    assert server.disconnected.wait(5)
    assert len(server.streamed) < 200


# --- warm-up -------------------------------------------------------------------------------


def test_ollama_warm_up_sends_an_empty_chat(ollama_server: FakeServer) -> None:
    backend_for(ollama_server, keep_alive=-1).warm_up()
    assert ollama_server.chats[0].body == {
        "model": "qwen2.5:7b",
        "messages": [],
        "keep_alive": -1,
        "stream": False,
    }


def test_openai_warm_up_lists_models(openai_server: FakeServer) -> None:
    backend_for(openai_server).warm_up()
    assert openai_server.requests[-1].path == "/v1/models"


# --- the doctor's fix column --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error", "fix"),
    [
        ("ollama", ModelNotFound, "ollama pull m"),
        ("ollama", BackendTimeout, "raise backend.read_timeout"),  # shared by every kind
        ("ollama", ServerError, "check the server's log, then retry"),  # the shared default
        ("openai", EndpointNotFound, "http://127.0.0.1:9/v1"),
        ("openai", AuthFailed, "export OPENAI_API_KEY="),
        ("openai", StreamBroken, "a prompt over its context size"),
        ("llamacpp", ModelNotFound, "at a GGUF file"),
        ("llamacpp", ServerError, "lower backend.context_size"),
        ("llamacpp", ConfigError, "fix the profile's backend section"),
    ],
)
def test_the_fix_is_the_kinds_own_else_the_shared_one(kind: str, error: type, fix: str) -> None:
    from voicechat.backends import fix_for

    fields = (
        {"model": "m"} if kind == "llamacpp" else {"model": "m", "base_url": "http://127.0.0.1:9"}
    )
    assert fix in fix_for(error("x"), settings_for(kind, **fields))
