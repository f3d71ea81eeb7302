"""`voicechat` as users run it: a real process against real local servers.

Each test asserts what reaches stdout (the reply, and nothing else), stderr (one line per
problem, never a traceback) and the exit code documented in the README.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import cli
from tests.support.cli import Runner
from tests.support.environ import clean_env
from tests.support.fakeservers import FakeServer, Script, dead_port

SYSTEM = (
    "You are a helpful voice assistant. Answer briefly, in plain spoken sentences, "
    "in the language the user writes in."
)


def openai_profile(tmp_path: Path, server: FakeServer, **backend: str) -> str:
    lines = [
        "backend:",
        "  kind: openai",
        f"  base_url: {server.url}",
        "  model: local-model",
        *(f"  {k}: {v}" for k, v in backend.items()),
        "tts: {engine: none}",
    ]
    path = tmp_path / "fake-openai.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("voicechat: error: ")
    return lines[0]


# --- the happy path ----------------------------------------------------------------------------


def test_ask_streams_the_reply_to_stdout_only(voicechat: Runner, ollama_server: FakeServer) -> None:
    ollama_server.enqueue(Script(tokens=["The sky", " is **blue**", ".\n\n", "- Rayleigh"]))
    result = voicechat.run("ask", "--mute", "Why is the sky blue?", OLLAMA_HOST=ollama_server.url)
    assert result.returncode == 0
    assert result.stdout == "The sky is **blue**.\n\n- Rayleigh\n"  # plain text in a pipe
    assert result.stderr == ""
    chat = ollama_server.chats[0]
    assert chat.notes[0].startswith("[Asked on ")  # when it was asked: voicechat.now
    assert {**chat.body, "messages": chat.messages} == {
        "model": "qwen2.5:7b",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Why is the sky blue?"},
        ],
        "stream": True,
        "options": {"temperature": 0.7, "num_ctx": 4096},
        "keep_alive": "30m",
    }


def test_options_override_the_profile(voicechat: Runner, ollama_server: FakeServer) -> None:
    ollama_server.models.append("qwen2.5:3b")
    result = voicechat.run(
        "ask", "--mute", "-m", "qwen2.5:3b", "-s", "Be terse.", "--temperature", "0.1",
        "--max-tokens", "50", "several", "words", OLLAMA_HOST=ollama_server.url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = ollama_server.chats[0].body
    assert body["model"] == "qwen2.5:3b"
    assert ollama_server.chats[0].messages == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "several words"},
    ]
    assert body["options"] == {"temperature": 0.1, "num_predict": 50, "num_ctx": 4096}


def test_openai_profile_through_the_sdk(
    voicechat: Runner, openai_server: FakeServer, tmp_path: Path
) -> None:
    openai_server.enqueue(Script(tokens=["你好", "，", "世界。"], comments=True))
    result = voicechat.run("ask", "-p", openai_profile(tmp_path, openai_server), "hi")
    assert (result.returncode, result.stdout, result.stderr) == (0, "你好，世界。\n", "")
    assert openai_server.chats[0].messages == [{"role": "user", "content": "hi"}]


def test_piped_stdin_then_blank_line_then_question(
    voicechat: Runner, ollama_server: FakeServer
) -> None:
    result = voicechat.run("ask", "--mute", "summarize this", input="line 1\nline 2\n",
                           OLLAMA_HOST=ollama_server.url)  # fmt: skip
    assert result.returncode == 0
    question = ollama_server.chats[0].messages[-1]["content"]
    assert question == "line 1\nline 2\n\nsummarize this"


def test_piped_stdin_alone_is_the_question(voicechat: Runner, ollama_server: FakeServer) -> None:
    result = voicechat.run("ask", "--mute", input="What is 2+2?\n", OLLAMA_HOST=ollama_server.url)
    assert result.returncode == 0
    assert ollama_server.chats[0].messages[-1]["content"] == "What is 2+2?"


def test_no_question_is_a_usage_error(voicechat: Runner, ollama_server: FakeServer) -> None:
    result = voicechat.run("ask", "--mute", OLLAMA_HOST=ollama_server.url)
    assert result.returncode == 2
    assert "no question" in one_error_line(result)
    assert ollama_server.requests == []


def test_stats_go_to_stderr(voicechat: Runner, ollama_server: FakeServer) -> None:
    ollama_server.enqueue(Script(tokens=["a", "b", "c"], first_delay=0.2, tokens_per_s=20))
    result = voicechat.run("ask", "--mute", "--stats", "q", OLLAMA_HOST=ollama_server.url)
    assert result.returncode == 0
    assert result.stdout == "abc\n"
    assert "first token 0." in result.stderr
    assert "tokens/s (server)" in result.stderr
    assert "finish: stop" in result.stderr


def test_length_finish_warns_and_succeeds(voicechat: Runner, ollama_server: FakeServer) -> None:
    ollama_server.enqueue(Script(tokens=["cut"], finish="length"))
    result = voicechat.run("ask", "--mute", "--max-tokens", "1", "q", OLLAMA_HOST=ollama_server.url)
    assert result.returncode == 0
    assert result.stdout == "cut\n"
    assert "token limit (1): raise --max-tokens" in result.stderr


def test_a_cut_we_did_not_ask_for_blames_the_server_limit(
    voicechat: Runner, ollama_server: FakeServer
) -> None:
    """No max_tokens was sent (the shipped profiles set none): --max-tokens cannot be the fix."""
    ollama_server.enqueue(Script(tokens=["cut"], finish="length"))
    result = voicechat.run("ask", "--mute", "q", OLLAMA_HOST=ollama_server.url)
    assert result.returncode == 0
    assert result.stdout == "cut\n"
    assert "its own token limit" in result.stderr and "context_size" in result.stderr
    assert "--max-tokens" not in result.stderr


def test_usage_errors_are_one_line(voicechat: Runner) -> None:
    for args in (["ask", "--bogus"], ["nope"], ["ask", "--temperature", "hot", "q"]):
        result = voicechat.run(*args)
        assert result.returncode == 2
        assert "--help" in one_error_line(result)


def test_out_of_range_option(voicechat: Runner) -> None:
    result = voicechat.run("ask", "--temperature", "7", "q")
    assert result.returncode == 2
    line = one_error_line(result)
    assert "--temperature" in line and "allowed 0 to 2" in line


def test_version_and_module_entry_point(voicechat: Runner) -> None:
    from voicechat import __version__

    result = voicechat.run("--version")
    assert (result.returncode, result.stdout) == (0, f"voicechat {__version__}\n")


# --- errors: one line, a fix, a documented exit code, the text so far kept ---------------------


@pytest.mark.parametrize(
    ("script", "code", "needle"),
    [
        (Script(status=500, body='{"error": "CUDA out of memory"}'), 7, "CUDA out of memory"),
        (Script(status=429, body='{"error": "busy"}'), 7, "rate limiting"),
        (Script(status=503, body='{"error": "loading"}'), 7, "server error 503"),
        (Script(fault="empty"), 9, "empty reply"),
    ],
)
def test_server_errors(
    voicechat: Runner, ollama_server: FakeServer, script: Script, code: int, needle: str
) -> None:
    ollama_server.enqueue(script)
    result = voicechat.run("ask", "--mute", "q", OLLAMA_HOST=ollama_server.url)
    assert result.returncode == code
    assert needle in one_error_line(result)


@pytest.mark.parametrize(
    ("fault", "needle"), [("error_line", "mid-reply"), ("drop", "dropped mid-reply")]
)
@pytest.mark.parametrize("protocol", ["ollama", "openai"])
def test_mid_stream_failures_keep_the_text(
    voicechat: Runner, tmp_path: Path, protocol: str, fault: str, needle: str
) -> None:
    with FakeServer(protocol, models=["qwen2.5:7b", "local-model"]) as server:  # type: ignore[arg-type]
        server.enqueue(Script(tokens=["Half", " a reply"], fault=fault))  # type: ignore[arg-type]
        args = ["-p", openai_profile(tmp_path, server)] if protocol == "openai" else ["--mute"]
        result = voicechat.run("ask", *args, "q", OLLAMA_HOST=server.url)
    assert result.returncode == 9
    assert result.stdout == "Half a reply\n"
    assert needle in one_error_line(result)


def test_truncated_stream_keeps_text_and_exits_9(
    voicechat: Runner, ollama_server: FakeServer
) -> None:
    ollama_server.enqueue(Script(tokens=["no", " end"], finish=None))
    result = voicechat.run("ask", "--mute", "q", OLLAMA_HOST=ollama_server.url)
    assert result.returncode == 9
    assert result.stdout == "no end\n"
    assert "without an end marker" in one_error_line(result)


def test_unreachable_ollama(voicechat: Runner) -> None:
    port = dead_port()
    result = voicechat.run("ask", "--mute", "q", OLLAMA_HOST=f"127.0.0.1:{port}")
    assert result.returncode == 3
    line = one_error_line(result)
    assert f"http://127.0.0.1:{port}" in line and "ollama serve" in line


def test_model_not_found(voicechat: Runner, ollama_server: FakeServer) -> None:
    result = voicechat.run("ask", "--mute", "-m", "llama9", "q", OLLAMA_HOST=ollama_server.url)
    assert result.returncode == 4
    assert "ollama pull llama9" in one_error_line(result)


def test_wrong_base_url_suggests_v1(
    voicechat: Runner, ollama_server: FakeServer, tmp_path: Path
) -> None:
    profile = tmp_path / "no-v1.yaml"
    profile.write_text(
        f"backend: {{kind: openai, base_url: '{ollama_server.url}', model: qwen2.5:7b}}\n"
        "tts: {engine: none}\n"
    )
    result = voicechat.run("ask", "-p", str(profile), "q")
    assert result.returncode == 6
    assert "does the base URL need /v1?" in one_error_line(result)


def test_auth_failure_names_the_variable_and_hides_the_key(
    voicechat: Runner, openai_server: FakeServer, tmp_path: Path
) -> None:
    openai_server.api_key = "sk-right"
    profile = openai_profile(tmp_path, openai_server, api_key_env="DESK_KEY")
    result = voicechat.run("ask", "-p", profile, "q", DESK_KEY="sk-wrong-secret")
    assert result.returncode == 5
    line = one_error_line(result)
    assert "DESK_KEY" in line
    assert "sk-wrong-secret" not in result.stdout + result.stderr


def test_required_key_unset_fails_before_sending(
    voicechat: Runner, openai_server: FakeServer, tmp_path: Path
) -> None:
    profile = openai_profile(
        tmp_path, openai_server, api_key_env="CLOUD_KEY", api_key_required="true"
    )
    result = voicechat.run("ask", "-p", profile, "q")
    assert result.returncode == 5
    assert "export CLOUD_KEY=" in one_error_line(result)
    assert openai_server.requests == []


def test_read_timeout(voicechat: Runner, ollama_server: FakeServer, tmp_path: Path) -> None:
    ollama_server.enqueue(Script(fault="hang", hang_s=5))
    profile = tmp_path / "slow.yaml"
    profile.write_text(
        f"backend: {{kind: ollama, base_url: '{ollama_server.url}', model: qwen2.5:7b, "
        "read_timeout: 0.5}\ntts: {engine: none}\n"
    )
    result = voicechat.run("ask", "-p", str(profile), "q")
    assert result.returncode == 8
    assert "read timeout" in one_error_line(result)


def test_bad_profile_is_exit_2(voicechat: Runner, tmp_path: Path) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text("backend: {kind: ollama, base_url: x, model: m, colour: red}\n")
    result = voicechat.run("ask", "-p", str(profile), "q")
    assert result.returncode == 2
    assert f"{profile}: backend.colour: unknown key" in one_error_line(result)


def test_closed_stdout_ends_quietly(ollama_server: FakeServer, tmp_path: Path) -> None:
    """`voicechat ask ... | head -c 5`: no BrokenPipe traceback, the stream is closed."""
    ollama_server.enqueue(Script(tokens=["word "] * 400, tokens_per_s=400))
    proc = subprocess.Popen(
        f"{sys.executable} -m voicechat ask --mute q | head -c 5",
        shell=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=clean_env(tmp_path, OLLAMA_HOST=ollama_server.url),
        text=True,
    )
    out, err = proc.communicate(timeout=30)
    assert out == "word "
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert ollama_server.disconnected.wait(5)


# --- Ctrl+C ------------------------------------------------------------------------------------

SERVER_HOLDS_S = 40
"""A server that holds back its first byte this long: a Ctrl+C must not wait for it."""


def start(tmp_path: Path, server: FakeServer, *args: str) -> subprocess.Popen:
    return cli.start("ask", "--mute", *args, "q", env=clean_env(tmp_path, OLLAMA_HOST=server.url))


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_ctrl_c_mid_reply_closes_the_stream_and_exits_130(
    tmp_path: Path, ollama_server: FakeServer
) -> None:
    ollama_server.enqueue(Script(tokens=["tok "] * 100, tokens_per_s=10))
    proc = start(tmp_path, ollama_server)
    assert proc.stdout is not None
    # the third token shown (a busy machine can keep the child a token or more behind the
    # server: waiting on what the server sent was not enough)
    shown = proc.stdout.read(len("tok tok tok "))
    sent_at = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    out = shown + rest
    assert proc.returncode == 130
    assert time.monotonic() - sent_at < 2
    assert out.startswith("tok tok tok") and out.endswith("\n")
    assert "Traceback" not in err and "interrupted" in err
    assert ollama_server.disconnected.wait(5)
    assert len(ollama_server.streamed) < 100


def test_ctrl_c_before_the_first_token(tmp_path: Path, ollama_server: FakeServer) -> None:
    ollama_server.enqueue(Script(first_delay=SERVER_HOLDS_S))
    proc = start(tmp_path, ollama_server)
    assert ollama_server.received.wait(10)
    time.sleep(0.1)
    sent_at = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent_at < SERVER_HOLDS_S / 2  # not waiting for the first byte
    assert proc.returncode == 130
    assert out == ""
    assert "Traceback" not in err


# --- profiles ----------------------------------------------------------------------------------


def test_profiles_lists_name_backend_model_origin(voicechat: Runner, tmp_path: Path) -> None:
    folder = tmp_path / "config" / "voicechat" / "profiles"
    folder.mkdir(parents=True)
    (folder / "desk.yaml").write_text(
        "backend: {kind: openai, base_url: 'http://10.0.0.2:8080/v1', model: mistral}\n"
    )
    result = voicechat.run("profiles")
    assert result.returncode == 0
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["desk"][1:3] == ["openai", "mistral"] and rows["desk"][3] == "user"
    assert rows["ollama-qwen2.5-7b*"][1:4] == ["ollama", "qwen2.5:7b", "shipped"]
    assert "used by default" in result.stderr


def test_profiles_show_masks_secrets(voicechat: Runner, tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(
        "backend: {kind: openai, base_url: 'https://bob:hunter2@api.example.com/v1', "
        "model: m, api_key_env: EXAMPLE_KEY}\n"
    )
    result = voicechat.run("profiles", "show", str(profile), EXAMPLE_KEY="sk-very-secret")
    assert result.returncode == 0
    assert "sk-very-secret" not in result.stdout and "hunter2" not in result.stdout
    assert "$EXAMPLE_KEY is set (value hidden)" in result.stdout
    assert "base_url: https://***@api.example.com/v1" in result.stdout


def test_profiles_show_reports_env_overrides(voicechat: Runner) -> None:
    result = voicechat.run("profiles", "show", "ollama-qwen2.5-7b", OLLAMA_HOST="jetson.local")
    assert "overridden by: $OLLAMA_HOST" in result.stdout
    assert "base_url: http://jetson.local:11434" in result.stdout


# --- start-up stays light --------------------------------------------------------------------


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "from voicechat import cli\n"
        "try:\n    cli.app(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('openai', 'requests', 'rich.markdown', 'rich.live', 'numpy',"
        " 'sounddevice', 'pyttsx3', 'httpx') if m in sys.modules]\n"
        "print('HEAVY:' + ','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "HEAVY:"


def test_ollama_path_never_imports_the_openai_sdk(ollama_server: FakeServer) -> None:
    code = (
        "import sys\n"
        "from voicechat.backends import create_backend, settings_for\n"
        f"create_backend(settings_for('ollama', base_url='{ollama_server.url}', "
        "model='qwen2.5:7b'))\n"
        "print('openai' in sys.modules, 'httpx' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False False", result.stderr


def test_voices_lists_the_engines_voices_by_language(voicechat: Runner) -> None:
    result = voicechat.run("voices", "--lang", "zh")
    assert result.returncode == 0, result.stderr
    ids = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert "sit/cmn-latn-pinyin" in ids
    assert all(i.startswith(("sit/cmn", "sit/yue")) for i in ids)
    assert "voices of engine pyttsx3" in result.stderr


# --- doctor ------------------------------------------------------------------------------------


def doctor_rows(result: subprocess.CompletedProcess) -> dict[str, dict]:
    """``voicechat doctor --json`` output by check name (stdout must be exactly the JSON)."""
    import json

    return {row["name"]: row for row in json.loads(result.stdout)}


def test_doctor_table_passes_against_a_working_server(
    voicechat: Runner, openai_server: FakeServer, tmp_path: Path
) -> None:
    openai_server.enqueue(Script(tokens=["Hi"]))
    result = voicechat.run("doctor", "-p", openai_profile(tmp_path, openai_server))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    status = {line[6:20].strip(): line[:4].strip() for line in lines if not line.startswith(" ")}
    assert status == {
        "python": "ok", "profile": "ok", "api key": "--", "server": "ok", "model": "ok",
        "generation": "ok", "voice": "--", "audio output": "--", "service": "--",
    }  # fmt: skip
    assert "local-model" in result.stdout
    assert result.stderr == ""
    assert openai_server.chats[0].body["max_tokens"] == 1  # one token proves the path


def test_doctor_json_reports_a_dead_server_with_its_fix(voicechat: Runner, tmp_path: Path) -> None:
    profile = tmp_path / "dead.yaml"
    profile.write_text(
        f"backend: {{kind: ollama, base_url: 'http://127.0.0.1:{dead_port()}', model: m}}\n"
        "tts: {engine: none}\n"
    )
    result = voicechat.run("doctor", "--json", "-p", str(profile))
    assert result.returncode == 1
    rows = doctor_rows(result)
    assert rows["server"]["ok"] is False
    assert "ollama serve" in rows["server"]["fix"]
    assert rows["model"]["ok"] is None and rows["generation"]["ok"] is None
    assert "Traceback" not in result.stderr


def test_doctor_missing_model_says_ollama_pull(
    voicechat: Runner, ollama_server: FakeServer
) -> None:
    ollama_server.models.clear()
    result = voicechat.run("doctor", "--json", "--no-audio", OLLAMA_HOST=ollama_server.url)
    assert result.returncode == 1
    rows = doctor_rows(result)
    assert rows["server"]["ok"] is True
    assert rows["model"]["ok"] is False
    assert rows["model"]["fix"] == "ollama pull qwen2.5:7b"
    assert rows["voice"]["ok"] is True and rows["voice (zh)"]["ok"] is True  # real espeak-ng
    assert rows["audio output"]["ok"] is None
    assert rows["generation"]["fix"] == "ollama pull qwen2.5:7b"  # the server's own 404


def test_doctor_unset_key_is_a_failing_row_and_a_set_one_stays_hidden(
    voicechat: Runner, openai_server: FakeServer, tmp_path: Path
) -> None:
    profile = openai_profile(
        tmp_path, openai_server, api_key_env="CLOUD_KEY", api_key_required="true"
    )
    unset = voicechat.run("doctor", "--json", "-p", profile)
    assert unset.returncode == 1
    assert doctor_rows(unset)["api key"]["ok"] is False
    assert "export CLOUD_KEY=" in doctor_rows(unset)["api key"]["fix"]
    assert openai_server.requests == []

    openai_server.api_key = "sk-doctor-secret"
    openai_server.enqueue(Script(tokens=["Hi"]))
    result = voicechat.run("doctor", "-p", profile, CLOUD_KEY="sk-doctor-secret")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "api key" in result.stdout
    assert "sk-doctor-secret" not in result.stdout + result.stderr


def test_doctor_with_a_broken_profile_exits_2(voicechat: Runner, tmp_path: Path) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text("backend: {kind: ollama, base_url: x, model: m, colour: red}\n")
    result = voicechat.run("doctor", "-p", str(profile))
    assert result.returncode == 2
    assert f"{profile}: backend.colour: unknown key" in result.stdout
    assert result.stdout.splitlines()[1].startswith("FAIL  profile")
    assert result.stderr.strip() == "voicechat: 1 check failed: see the fixes above"
    as_json = voicechat.run("doctor", "--json", "-p", str(profile))
    assert as_json.returncode == 2
    assert doctor_rows(as_json)["profile"]["ok"] is False


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_terminate_mid_reply_keeps_the_text_and_exits_128_plus_signal(
    tmp_path: Path, ollama_server: FakeServer, signum: int, code: int
) -> None:
    ollama_server.enqueue(Script(tokens=["tok "] * 100, tokens_per_s=10))
    proc = start(tmp_path, ollama_server)
    assert proc.stdout is not None
    shown = proc.stdout.read(len("tok tok tok "))  # shown, not just sent (as above)
    proc.send_signal(signum)
    rest, err = proc.communicate(timeout=60)
    out = shown + rest
    assert proc.returncode == code, err
    assert out.startswith("tok tok tok") and out.endswith("\n")
    assert err == f"voicechat: ended by {signal.Signals(signum).name}\n"
    assert ollama_server.disconnected.wait(5)


@pytest.mark.parametrize("phase", ["waiting", "streaming"])
def test_a_burst_of_ctrl_c_exits_130_without_a_traceback(
    tmp_path: Path, ollama_server: FakeServer, phase: str
) -> None:
    if phase == "waiting":
        ollama_server.enqueue(Script(first_delay=SERVER_HOLDS_S))
    else:
        ollama_server.enqueue(Script(tokens=["tok "] * 100, tokens_per_s=10))
    proc = start(tmp_path, ollama_server)
    if phase == "waiting":
        assert ollama_server.received.wait(10)
        time.sleep(0.1)
    else:
        wait_for(lambda: len(ollama_server.streamed) >= 3)
    sent_at = time.monotonic()
    for _ in range(20):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.001)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent_at < SERVER_HOLDS_S / 2  # not waiting for the first byte
    assert proc.returncode == 130, err
    assert err == "voicechat: interrupted\n"


# --- streams that cannot be written, arguments that are not UTF-8, Ctrl+C while importing ------


def voicechat_with_fds(args: list[str], env: dict[str, str], stdout: object, stderr: object):
    return cli.run(*args, env=env, text=False, stdout=stdout, stderr=stderr)


def test_a_full_stdout_is_one_line_and_its_own_exit_code(
    tmp_path: Path, ollama_server: FakeServer
) -> None:
    ollama_server.enqueue(Script(tokens=["some ", "reply"]))
    with open("/dev/full", "w") as full:
        result = voicechat_with_fds(
            ["ask", "--mute", "q"], clean_env(tmp_path, OLLAMA_HOST=ollama_server.url),
            full, subprocess.PIPE,
        )  # fmt: skip
    err = result.stderr.decode()
    assert result.returncode == 14, err
    assert err == "voicechat: error: cannot write to stdout: No space left on device\n"


def test_a_closed_stdout_is_one_line_and_its_own_exit_code(
    tmp_path: Path, ollama_server: FakeServer
) -> None:
    ollama_server.enqueue(Script(tokens=["some ", "reply"]))
    env = clean_env(tmp_path, OLLAMA_HOST=ollama_server.url)
    result = subprocess.run(
        ["sh", "-c", f'exec "{sys.executable}" -m voicechat ask --mute q >&-'],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert result.returncode == 14, result.stderr
    assert result.stderr.startswith("voicechat: error: stdout is closed")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("stderr", ["full", "closed"])
def test_an_error_keeps_its_exit_code_when_stderr_cannot_take_it(
    tmp_path: Path, ollama_server: FakeServer, stderr: str
) -> None:
    ollama_server.enqueue(Script(status=500, body='{"error": "boom"}'))
    env = clean_env(tmp_path, OLLAMA_HOST=ollama_server.url)
    redirect = "2>/dev/full" if stderr == "full" else "2>&-"
    result = subprocess.run(
        ["sh", "-c", f'exec "{sys.executable}" -m voicechat ask --mute q {redirect}'],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert result.returncode == 7
    assert result.stdout == ""


def test_an_argument_that_is_not_utf8_is_cleaned_like_stdin(
    tmp_path: Path, ollama_server: FakeServer
) -> None:
    ollama_server.enqueue(Script(tokens=["ok"]))
    result = subprocess.run(
        [sys.executable.encode(), b"-m", b"voicechat", b"ask", b"--mute", b"caf\xe9 \xff?"],
        stdin=subprocess.DEVNULL, capture_output=True, env=clean_env(
            tmp_path, OLLAMA_HOST=ollama_server.url), timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    sent = ollama_server.chats[-1].messages[-1]["content"]
    assert sent == "caf\ufffd \ufffd?"


INTERRUPT_WHILE_IMPORTING = """
import os, signal, sys
from importlib.abc import MetaPathFinder

WHERE = sys.argv[1]

class Interrupt(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == WHERE:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C, just as this module starts loading
        return None

sys.meta_path.insert(0, Interrupt())
sys.argv = ["voicechat", "ask", "--mute", "q"]
from voicechat.__main__ import main
main()
"""


@pytest.mark.parametrize(
    "module",
    ["voicechat.cli", "typer", "yaml", "voicechat.settings", "voicechat.session",
     "voicechat.terminal", "voicechat.backends.ollama", "requests"],
)  # fmt: skip
def test_ctrl_c_while_importing_exits_130_without_a_traceback(
    tmp_path: Path, ollama_server: FakeServer, module: str
) -> None:
    """The first ~70 ms are imports (the CLI's, then the backend's inside the command)."""
    ollama_server.enqueue(Script(first_delay=SERVER_HOLDS_S))
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPT_WHILE_IMPORTING, module],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
        env=clean_env(tmp_path, OLLAMA_HOST=ollama_server.url),
    )  # fmt: skip
    assert result.returncode == 130, result.stderr
    assert result.stderr == "voicechat: interrupted\n"


INTERRUPT_BEFORE_THE_BOUNDARY = """
import os, signal, sys
from voicechat import terminal

made = terminal.Terminal.__init__
calls = []

def interrupt_the_command_s(self, *args, **kwargs):
    calls.append(self)
    if len(calls) == 2:  # the entry point's, then the command's (before its boundary)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C as the command starts
    made(self, *args, **kwargs)

terminal.Terminal.__init__ = interrupt_the_command_s
sys.argv = ["voicechat", "ask", "--mute", "q"]
from voicechat.__main__ import main
main()
"""


def test_ctrl_c_before_the_command_s_boundary_still_says_interrupted(
    tmp_path: Path, ollama_server: FakeServer
) -> None:
    """typer turns a KeyboardInterrupt outside the command's boundary into a silent 130."""
    ollama_server.enqueue(Script(first_delay=SERVER_HOLDS_S))
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPT_BEFORE_THE_BOUNDARY],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
        env=clean_env(tmp_path, OLLAMA_HOST=ollama_server.url),
    )  # fmt: skip
    assert result.returncode == 130, result.stderr
    assert result.stderr == "voicechat: interrupted\n"
    assert not ollama_server.requests


@pytest.mark.parametrize("after", [0.05, 0.08, 0.12, 0.18, 0.25, 0.4])
def test_ctrl_c_while_starting_up_exits_130_without_a_traceback(
    tmp_path: Path, ollama_server: FakeServer, python_start_s: float, after: float
) -> None:
    """Real timing: imports, profile, session, the turn starting (~0.2 s here in all)."""
    ollama_server.enqueue(Script(first_delay=SERVER_HOLDS_S))
    proc = start(tmp_path, ollama_server)
    time.sleep(python_start_s + after)
    sent_at = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent_at < SERVER_HOLDS_S / 2  # not waiting for the first byte
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.count("\n") == 1
