"""`voicechat` against llama.cpp's own server (through xllamacpp) serving real models.

Run by `scripts/e2e_real_server.sh`. Most tests use Gemma 3 270M, a base model that talks
nonsense and rarely stops by itself: they assert protocol behaviour (text arrives, is spoken,
ends with the right reason, exit codes, stats), never content. The instruct model
(SmolLM2-135M-Instruct) answers simple questions: those tests assert content and a reply that
ends by itself.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pexpect
import pytest

from tests.e2e.conftest import (
    INSTRUCT_ALIAS,
    MODEL_ALIAS,
    PrivateServer,
    Run,
    answers,
    clean_env,
    free_port,
    realserver,
    write_profile,
)
from tests.e2e.record_sse import (
    INSTRUCT_REQUESTS,
    PATHS,
    REQUESTS,
    body_for,
    events,
    record,
    status_of,
)
from tests.support.ptys import kill, reap

pytestmark = realserver

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "data" / "transcripts" / "llama-server"
QUESTION = "Tell me about the sky."


def no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr


# --- ask -------------------------------------------------------------------------------------


def test_ask_prints_the_reply_and_exits_0(run: Run, profile: Path) -> None:
    result = run("ask", QUESTION, "--profile", str(profile), "--max-tokens", "24", "--mute")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "no reply text on stdout"
    no_traceback(result.stderr)


def test_token_limit_exits_0_with_a_warning(run: Run, profile: Path) -> None:
    result = run("ask", QUESTION, "--profile", str(profile), "--max-tokens", "3", "--mute")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "token limit" in warnings[0], result.stderr


def test_stats_report_first_token_and_speed(run: Run, profile: Path) -> None:
    result = run(
        "ask", QUESTION, "--profile", str(profile), "--max-tokens", "24", "--mute", "--stats"
    )
    assert result.returncode == 0, result.stderr
    stats = result.stderr
    first = re.search(r"first token (\d+(?:\.\d+)?) ?s", stats)
    speed = re.search(r"(\d+(?:\.\d+)?) tokens/s", stats)
    assert first and speed, stats
    assert 0 < float(first.group(1)) < 30
    assert float(speed.group(1)) > 0
    assert "24 tokens" in stats  # llama.cpp's own server counts them (usage, when asked)
    assert "length" in stats
    assert "tokens/s" not in result.stdout  # stats never pollute the reply


def test_reply_is_spoken_into_the_null_sink(run: Run, profile: Path, null_sink, monitor) -> None:
    started = time.monotonic()
    result = run("ask", QUESTION, "--profile", str(profile), "--max-tokens", "24", **null_sink.env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert monitor.wait_quiet(timeout=10)
    onset = monitor.onset()
    assert onset is not None, f"nothing was heard; stderr: {result.stderr}"
    assert onset > started
    assert monitor.audible_seconds() > 0.3
    no_traceback(result.stderr)


def test_save_audio_writes_what_is_spoken(run: Run, profile: Path, tmp_path: Path) -> None:
    import wave

    out = tmp_path / "reply.wav"
    result = run(
        "ask", QUESTION, "--profile", str(profile), "--max-tokens", "12", "--mute",
        "--save-audio", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with wave.open(str(out), "rb") as wav:
        assert wav.getnframes() / wav.getframerate() > 0.3


# --- chat through a pipe ------------------------------------------------------------------------


def test_chat_through_a_pipe_answers_each_line(run: Run, profile: Path) -> None:
    result = run("chat", "--profile", str(profile), "--mute", input="Hello\n\nHow are you?\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    # two turns (the blank line is not one), each cut at the profile's max_tokens
    warnings = [line for line in result.stderr.splitlines() if "token limit" in line]
    assert len(warnings) == 2, result.stderr
    no_traceback(result.stderr)


def test_next_request_after_a_refused_one_reaches_the_server(server_url: str) -> None:
    """A prompt over the context is refused and the server closes that connection: the next
    request must not go out on it (that read as 'cannot reach'). llama-cpp-python answered
    with an empty 200 stream (StreamBroken); llama.cpp's own server refuses with a JSON 400
    (exceed_context_size_error) before streaming: a ServerError saying so."""
    from voicechat.backends import create_backend, settings_for
    from voicechat.errors import ServerError
    from voicechat.settings import GenerationSettings

    backend = create_backend(settings_for("openai", base_url=server_url, model=MODEL_ALIAS))
    generation = GenerationSettings(temperature=0, seed=1, max_tokens=4)
    try:
        for _ in range(3):
            too_long = [{"role": "user", "content": "sky " * 3000}]
            with pytest.raises(ServerError, match="does not fit the model's context"):
                list(backend.chat(too_long, generation))
            reply = backend.chat([{"role": "user", "content": "Hello"}], generation)
            assert "".join(reply)
            assert reply.outcome is not None and reply.outcome.finish in ("length", "stop")
    finally:
        backend.close()


def test_chat_turn_over_the_context_is_reported_and_the_next_goes_on(
    run: Run, profile: Path
) -> None:
    """llama.cpp's own server refuses an over-long prompt with a JSON 400: a server error (7)
    that says it does not fit the context (llama-cpp-python's empty 200 stream gave 9)."""
    long_line = "sky " * 3000
    result = run("chat", "--profile", str(profile), "--mute", input=f"{long_line}\nHello\n")
    assert result.returncode == 7, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "context" in errors[0], result.stderr
    assert result.stdout.strip()  # the second line was still answered
    no_traceback(result.stderr)


# --- doctor ------------------------------------------------------------------------------------


def test_doctor_checks_pass_against_the_real_server(server_url: str, tmp_path: Path) -> None:
    from voicechat import profile as profiles
    from voicechat.doctor import run_checks

    loaded = profiles.load(str(write_profile(tmp_path, server_url)), env={})
    rows = {row.name: row for row in run_checks(loaded, None, check_audio=False)}
    for name in ("python", "profile", "server", "model", "generation", "voice", "voice (zh)"):
        assert rows[name].ok is True, rows[name]
    assert MODEL_ALIAS in rows["model"].detail
    assert rows["generation"].detail.startswith("first token after")


def test_doctor_command_exits_0_when_all_is_well(
    run: Run, profile: Path, server_url: str, null_sink
) -> None:
    result = run("doctor", VOICECHAT_PROFILE=str(profile), **null_sink.env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "generation" in result.stdout and MODEL_ALIAS in result.stdout
    no_traceback(result.stderr)


def test_doctor_json_lists_every_check(run: Run, profile: Path, null_sink) -> None:
    result = run("doctor", "--json", VOICECHAT_PROFILE=str(profile), **null_sink.env)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    rows = data if isinstance(data, list) else data.get("checks", [])
    assert {row["name"]: row["ok"] for row in rows}["generation"] is True


def test_doctor_with_the_server_gone_fails(
    run: Run, private_server: PrivateServer, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path, private_server.url)
    private_server.kill()
    started = time.monotonic()
    result = run("doctor", "--json", VOICECHAT_PROFILE=str(profile), timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode != 0
    rows = json.loads(result.stdout)
    rows = rows if isinstance(rows, list) else rows.get("checks", [])
    server = {row["name"]: row for row in rows}["server"]
    assert server["ok"] is False and server["fix"]


# --- the server dies mid-reply -------------------------------------------------------------------


def test_server_killed_mid_reply_exits_9_keeping_the_text(
    private_server: PrivateServer, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path, private_server.url, max_tokens=1500)
    process = subprocess.Popen(
        [sys.executable, "-m", "voicechat", "ask", QUESTION, "--profile", str(profile), "--mute"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(tmp_path),
    )
    assert process.stdout is not None and process.stderr is not None
    received = bytearray()
    enough = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        while chunk := process.stdout.read1(4096):  # type: ignore[attr-defined]
            received.extend(chunk)
            if len(received) >= 40:
                enough.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert enough.wait(60), "no reply text arrived from the real server"
        before_kill = bytes(received)
        private_server.kill()
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=5)
    stderr = process.stderr.read().decode()
    assert code == 9, stderr
    assert bytes(received).startswith(before_kill)  # the partial reply stays on stdout
    errors = [line for line in stderr.splitlines() if line.strip() and "warning" not in line]
    assert len(errors) == 1, stderr
    no_traceback(stderr)


# --- the README's route for a machine without Ollama -------------------------------------------


def serve_env(tmp_path: Path) -> dict[str, str]:
    """The script's environment, reusing the server and model the tier runs on."""
    python, model = os.environ.get("VOICECHAT_E2E_PYTHON"), os.environ.get("VOICECHAT_E2E_MODEL")
    if not python or not model:
        pytest.skip("needs VOICECHAT_E2E_PYTHON and VOICECHAT_E2E_MODEL (set by the script)")
    return clean_env(
        tmp_path,
        PYTHON=sys.executable,
        VOICECHAT_E2E_VENV=str(Path(python).parents[1]),
        VOICECHAT_E2E_MODEL=model,
    )


SCRIPT = str(Path(__file__).resolve().parents[2] / "scripts" / "e2e_real_server.sh")


def test_serve_with_a_command_is_the_readme_first_command(tmp_path: Path) -> None:
    """`--serve -- voicechat ask -p local-openai ...`: the README's set-up without Ollama."""
    env = serve_env(tmp_path)
    port = free_port()
    ask = [sys.executable, "-m", "voicechat", "ask", "-p", "local-openai", "--mute",
           "--max-tokens", "8", QUESTION]  # fmt: skip
    result = subprocess.run(
        ["bash", SCRIPT, "--serve", "--port", str(port), "--", *ask],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "no reply text on stdout"
    assert "token limit (8)" in result.stderr
    assert not answers(f"http://127.0.0.1:{port}/v1"), "the server outlived its command"
    capital = subprocess.run(
        ["bash", SCRIPT, "--serve", "--port", str(port), "--", sys.executable, "-m", "voicechat",
         "ask", "-p", "local-openai", "--mute", "--temperature", "0", CAPITAL_QUESTION],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    assert capital.returncode == 0, capital.stderr
    # --serve serves the instruct model: it answers (greedy: the profile's 0.7 once sampled
    # "L'Avignon" in a fresh CI run)
    assert "Paris" in capital.stdout, capital.stdout
    failing = subprocess.run(
        ["bash", SCRIPT, "--serve", "--port", str(port), "--", "sh", "-c", "exit 5"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    assert failing.returncode == 5, failing.stderr  # the command's status, passed on


def test_serve_mode_answers_the_local_profile_and_stops_on_ctrl_c(run: Run, tmp_path: Path) -> None:
    """`scripts/e2e_real_server.sh --serve` then `voicechat ask -p local-openai` (the README's
    way to try voicechat without Ollama), a second --serve on the same port refused, Ctrl+C.

    Started as from a terminal's shell: SIGINT at its default. A runner that started the
    suite in the background (no job control) passes SIGINT down ignored, and bash cannot
    trap a signal ignored on entry: the script then (rightly) ignores Ctrl+C."""
    env = serve_env(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    serve = pexpect.spawn(
        "bash", [SCRIPT, "--serve", "--port", str(port)], env=env, encoding="utf-8", timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        serve.expect("Ctrl\\+C stops it")
        assert f"OPENAI_BASE_URL={url} voicechat ask -p local-openai" in serve.before
        result = run("ask", "-p", "local-openai", "--mute", "--max-tokens", "8", QUESTION,
                     OPENAI_BASE_URL=url)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip(), "no reply text on stdout"
        again = subprocess.run(["bash", SCRIPT, "--serve", "--port", str(port)], env=env,
                               capture_output=True, text=True, timeout=120)  # fmt: skip
        assert again.returncode == 2 and f"port {port} on 127.0.0.1 is taken" in again.stderr
        assert answers(url)  # the refused second one did not disturb the first
        serve.sendintr()
        serve.expect(pexpect.EOF)
        reap(serve)
    finally:
        kill(serve)
    assert serve.exitstatus == 130, serve.before
    assert not answers(url), "the server outlived its script"


# --- the recorded traffic is still what the server sends -----------------------------------------


def live_url(name: str, server_url: str, instruct_url: str) -> str:
    return instruct_url if name in INSTRUCT_REQUESTS else server_url


@pytest.mark.parametrize("name", sorted([*REQUESTS, *INSTRUCT_REQUESTS]))
def test_live_stream_has_the_recorded_shape(server_url: str, instruct_url: str, name: str) -> None:
    """If llama.cpp changes its framing, the replays in the fast tier are stale."""
    recorded = (TRANSCRIPTS / f"{name}.sse").read_bytes()
    status = status_of((TRANSCRIPTS / f"{name}.headers").read_text())
    live = record(live_url(name, server_url, instruct_url), body_for(name))
    assert live.status == status
    headers = {k.lower(): v for k, v in live.headers}
    if status == 200:
        assert events(live.body) == events(recorded)
        assert headers["content-type"].startswith("text/event-stream")
    else:  # an error answer: the same JSON error type
        assert json.loads(live.body)["error"]["type"] == json.loads(recorded)["error"]["type"]
        assert headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("name", sorted(PATHS))
def test_live_error_for_a_wrong_path_is_the_recorded_one(server_url: str, name: str) -> None:
    """llama.cpp's 404 for a path that is no API route: JSON, not Go's plain text."""
    recorded = (TRANSCRIPTS / f"{name}.sse").read_bytes()
    live = record(server_url, body_for("rec_en_length"), path=PATHS[name])
    assert live.status == status_of((TRANSCRIPTS / f"{name}.headers").read_text()) == 404
    assert json.loads(live.body) == json.loads(recorded)


# --- the instruct model: real answers that end by themselves -------------------------------------

CAPITAL_QUESTION = "What is the capital of France? Answer in one word."


def test_instruct_model_names_the_capital_and_stops_by_itself(
    run: Run, tmp_path: Path, instruct_url: str
) -> None:
    profile = write_profile(tmp_path, instruct_url, max_tokens=None, model=INSTRUCT_ALIAS)
    result = run("ask", CAPITAL_QUESTION, "--profile", str(profile), "--mute", "--stats")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "warning" not in result.stderr  # no token limit: the model ended the reply
    assert "stop" in result.stderr  # the stats line's finish reason
    no_traceback(result.stderr)


def test_instruct_reply_through_the_backend_ends_with_stop(instruct_url: str) -> None:
    from voicechat.backends import create_backend, settings_for
    from voicechat.settings import GenerationSettings

    backend = create_backend(settings_for("openai", base_url=instruct_url, model=INSTRUCT_ALIAS))
    try:
        reply = backend.chat(
            [{"role": "user", "content": "What is the capital of Japan? Answer in one word."}],
            GenerationSettings(temperature=0, seed=1, max_tokens=64),
        )
        text = "".join(reply)
    finally:
        backend.close()
    assert "Tokyo" in text
    assert reply.outcome is not None and reply.outcome.finish == "stop"
    assert 0 < (reply.outcome.tokens or 0) < 64  # the server's own count (usage chunk)


def test_instruct_chat_remembers_the_previous_turn(
    run: Run, tmp_path: Path, instruct_url: str
) -> None:
    """The history reaches a real model: the second answer builds on the first."""
    profile = write_profile(tmp_path, instruct_url, max_tokens=48, model=INSTRUCT_ALIAS)
    result = run(
        "chat", "--profile", str(profile), "--mute",
        input="What is the capital of France? Answer in one word.\n"
        "Repeat your last answer exactly.\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Paris") >= 2, result.stdout
