"""The interactive REPL driven through a real pseudo-terminal (pexpect), and chats over pipes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pexpect
import pytest

from tests.support import cli
from tests.support.fakeservers import FakeServer, Script
from tests.support.ptys import kill, reap

PROMPT = ">>> "


def env_for(tmp_path: Path, server: FakeServer, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OLLAMA_HOST", "OPENAI_BASE_URL", "OPENAI_API_KEY", "VOICECHAT_PROFILE")
    }
    env.update(
        OLLAMA_HOST=server.url,
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_STATE_HOME=str(tmp_path / "state"),
        NO_COLOR="1",
        TERM="xterm",
    )
    env.update(extra)
    return env


@pytest.fixture
def repl(tmp_path: Path, ollama_server: FakeServer) -> Iterator[pexpect.spawn]:
    child = spawn(tmp_path, ollama_server)
    yield child
    kill(child)


def spawn(tmp_path: Path, server: FakeServer, *args: str, **env: str) -> pexpect.spawn:
    child = cli.spawn("chat", "--mute", *args, env=env_for(tmp_path, server, **env),
                      dimensions=(40, 120))  # fmt: skip
    child.expect_exact(PROMPT)
    return child


def ask(child: pexpect.spawn, line: str) -> str:
    """Send a line; return what was shown before the next prompt."""
    child.sendline(line)
    child.expect_exact(PROMPT)
    return child.before


def test_banner_warm_up_and_a_turn(repl: pexpect.spawn, ollama_server: FakeServer) -> None:
    ollama_server.enqueue(Script(tokens=["The sky", " is blue", "."]))
    shown = ask(repl, "why is the sky blue?")
    assert "The sky is blue." in shown
    # the warm-up: an empty chat that loads the model, sent before the question
    warm, question = ollama_server.chats[0], ollama_server.chats[1]
    assert warm.body["messages"] == [] and warm.body["keep_alive"] == "30m"
    assert question.messages[-1] == {"role": "user", "content": "why is the sky blue?"}


def test_banner_names_profile_model_and_voice(tmp_path: Path, ollama_server: FakeServer) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "voicechat", "chat", "--mute"],
        env=env_for(tmp_path, ollama_server),
        encoding="utf-8",
        timeout=60,
    )
    child.expect_exact(PROMPT)
    banner = child.before
    assert "profile ollama-qwen2.5-7b" in banner and "model qwen2.5:7b" in banner
    assert "muted" in banner and "loading qwen2.5:7b in the background" in banner
    child.sendeof()
    child.expect(pexpect.EOF)
    reap(child)
    assert child.exitstatus == 0


def test_memory_across_turns(repl: pexpect.spawn, ollama_server: FakeServer) -> None:
    ollama_server.enqueue(Script(tokens=["Nice to meet you, Ada."]), Script(tokens=["Ada."]))
    ask(repl, "my name is Ada")
    ask(repl, "what is my name?")
    messages = ollama_server.chats[-1].messages
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == "Nice to meet you, Ada."


def test_ctrl_c_mid_reply_returns_to_the_prompt_and_keeps_the_shown_text(
    repl: pexpect.spawn, ollama_server: FakeServer
) -> None:
    ollama_server.enqueue(Script(tokens=["tok "] * 200, tokens_per_s=10), Script(tokens=["ok"]))
    repl.sendline("count forever")
    repl.expect_exact("tok tok tok")
    sent = time.monotonic()
    repl.sendintr()
    repl.expect_exact("interrupted")
    repl.expect_exact(PROMPT)
    assert time.monotonic() - sent < 3
    assert ollama_server.disconnected.wait(5)
    ask(repl, "and now?")
    messages = ollama_server.chats[-1].messages
    partial = messages[-2]
    assert partial["role"] == "assistant" and partial["content"].startswith("tok tok tok")
    assert len(partial["content"]) < len("tok ") * 200
    assert messages[-1] == {"role": "user", "content": "and now?"}
    assert "[interrupted]" in ask(repl, "/history")


def test_ctrl_c_at_the_prompt_does_not_exit_and_ctrl_d_does(repl: pexpect.spawn) -> None:
    repl.sendintr()
    repl.expect_exact("Ctrl+D or /exit to quit")
    repl.expect_exact(PROMPT)
    repl.sendeof()
    repl.expect(pexpect.EOF)
    reap(repl)
    assert repl.exitstatus == 0


@pytest.mark.parametrize("command", ["/exit", "/bye"])
def test_exit_commands(repl: pexpect.spawn, command: str) -> None:
    repl.sendline(command)
    repl.expect(pexpect.EOF)
    reap(repl)
    assert repl.exitstatus == 0


def test_multi_line_block(repl: pexpect.spawn, ollama_server: FakeServer) -> None:
    repl.sendline('"""first line')
    repl.expect_exact("... ")
    repl.sendline("second line")
    repl.expect_exact("... ")
    repl.sendline('third"""')
    repl.expect_exact(PROMPT)
    question = ollama_server.chats[-1].messages[-1]["content"]
    assert question == "first line\nsecond line\nthird"


def test_history_with_arrow_keys_persists_across_runs(
    tmp_path: Path, ollama_server: FakeServer
) -> None:
    child = spawn(tmp_path, ollama_server)
    ask(child, "remember this question")
    child.sendeof()
    child.expect(pexpect.EOF)
    reap(child)
    assert "remember this question" in (tmp_path / "state" / "voicechat" / "history").read_text()

    child = spawn(tmp_path, ollama_server)
    child.send("\x1b[A")  # Up: the previous run's line comes back
    child.expect_exact("remember this question")
    child.send("\r")
    child.expect_exact(PROMPT)
    assert ollama_server.chats[-1].messages[-1]["content"] == "remember this question"
    kill(child)


def test_history_can_be_switched_off(tmp_path: Path, ollama_server: FakeServer) -> None:
    child = spawn(tmp_path, ollama_server, VOICECHAT_NO_HISTORY="1")
    ask(child, "secret question")
    child.sendeof()
    child.expect(pexpect.EOF)
    assert not (tmp_path / "state" / "voicechat" / "history").exists()


def test_tab_completes_command_names(repl: pexpect.spawn) -> None:
    repl.send("/hel\t")
    repl.expect_exact("/help ")
    repl.send("\r")
    repl.expect_exact("list the commands")
    repl.expect_exact(PROMPT)


def test_help_lists_every_command(repl: pexpect.spawn) -> None:
    shown = ask(repl, "/help")
    for name in ("/exit", "/reset", "/mute", "/unmute", "/voice", "/rate", "/model",
                 "/profile", "/system", "/stats", "/save", "/load", "/history"):  # fmt: skip
        assert name in shown


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/frobnicate", "unknown command /frobnicate: /help lists them"),
        ("/mod", "did you mean /model"),
        ("/rate fast", "/rate fast: give words per minute from 50 to 600"),
        ("/rate 601", "/rate: tts.rate: 601 is out of range: allowed 50 to 600"),
        ("/model", "/model needs NAME: e.g. /model qwen2.5:3b"),
        ("/load /nonexistent.json", "no such file"),
        ("/profile nope", "no profile named 'nope'"),
    ],
)
def test_bad_commands_get_a_hint_and_the_repl_lives_on(
    repl: pexpect.spawn, line: str, expected: str
) -> None:
    assert expected in ask(repl, line)
    assert "Traceback" not in repl.before
    assert "/exit" in ask(repl, "/help")  # still alive


def test_reset_forgets(repl: pexpect.spawn, ollama_server: FakeServer) -> None:
    ask(repl, "one")
    assert "conversation forgotten" in ask(repl, "/reset")
    ask(repl, "two")
    assert [m["content"] for m in ollama_server.chats[-1].messages[1:]] == ["two"]


def test_model_and_system_commands(repl: pexpect.spawn, ollama_server: FakeServer) -> None:
    ollama_server.models.append("qwen2.5:3b")
    assert "model qwen2.5:3b" in ask(repl, "/model qwen2.5:3b")
    assert "system prompt set" in ask(repl, "/system Answer in French.")
    ask(repl, "hello")
    body = ollama_server.chats[-1].body
    assert body["model"] == "qwen2.5:3b"
    assert body["messages"][0] == {"role": "system", "content": "Answer in French."}


def test_profile_command_switches_backend(
    repl: pexpect.spawn, tmp_path: Path, ollama_server: FakeServer
) -> None:
    with FakeServer("openai", models=["desk-model"]) as other:
        folder = tmp_path / "config" / "voicechat" / "profiles"
        folder.mkdir(parents=True)
        (folder / "desk.yaml").write_text(
            f"backend: {{kind: openai, base_url: '{other.url}', model: desk-model}}\n"
            "tts: {engine: none}\n"
        )
        ask(repl, "first")
        assert "profile desk: model desk-model" in ask(repl, "/profile desk")
        other.enqueue(Script(tokens=["from the desk"]))
        assert "from the desk" in ask(repl, "second")
        messages = other.chats[-1].messages
        assert [m["content"] for m in messages if m["role"] == "user"] == ["first", "second"]


def test_stats_after_a_reply(repl: pexpect.spawn, ollama_server: FakeServer) -> None:
    assert "no reply yet" in ask(repl, "/stats")
    ask(repl, "q")
    shown = ask(repl, "/stats")
    assert "first token" in shown and "tokens/s" in shown


@pytest.mark.parametrize(
    ("finish", "warning"),
    [
        ("length", "its own token limit"),  # the profile sets no max_tokens: the server's cap
        ("content_filter", "finish reason 'content_filter'"),
    ],
)
def test_an_unusual_end_of_reply_is_said_once_and_the_turn_stays(
    repl: pexpect.spawn, ollama_server: FakeServer, finish: str, warning: str
) -> None:
    ollama_server.enqueue(Script(tokens=["cut sh"], finish=finish))
    shown = ask(repl, "q")
    assert "cut sh" in shown and shown.count(warning) == 1, shown
    ask(repl, "again")
    assert ollama_server.chats[-1].messages[-2] == {
        "role": "assistant",
        "content": "cut sh",
    }


def test_save_and_load_json_and_export_markdown(
    repl: pexpect.spawn, tmp_path: Path, ollama_server: FakeServer
) -> None:
    ollama_server.enqueue(Script(tokens=["Paris."]))
    ask(repl, "capital of France?")
    saved = tmp_path / "chat.json"
    assert "saved 1 turns" in ask(repl, f"/save {saved}")
    data = json.loads(saved.read_text())
    (turn,) = data["turns"]
    asked_at = datetime.fromisoformat(turn.pop("asked_at"))  # when it was asked, with its zone
    assert asked_at.tzinfo is not None and abs(time.time() - asked_at.timestamp()) < 60
    assert turn == {"question": "capital of France?", "reply": "Paris.", "interrupted": False}
    ask(repl, f"/save {tmp_path / 'chat.md'}")
    markdown = (tmp_path / "chat.md").read_text()
    assert "capital of France?" in markdown and "## Assistant\n\nParis." in markdown
    assert f"## You ({asked_at.isoformat(sep=' ', timespec='seconds')})" in markdown
    first_note = ollama_server.chats[-1].notes[0]

    ask(repl, "/reset")
    assert "loaded 1 turns" in ask(repl, f"/load {saved}")
    ask(repl, "and of Italy?")
    contents = [m["content"] for m in ollama_server.chats[-1].messages[1:]]
    assert contents == ["capital of France?", "Paris.", "and of Italy?"]
    # the loaded turn is sent as it was the first time: a server's prompt cache stays valid
    assert ollama_server.chats[-1].notes[0] == first_note


def test_load_rejects_other_json(repl: pexpect.spawn, tmp_path: Path) -> None:
    bad = tmp_path / "other.json"
    bad.write_text('{"hello": 1}')
    assert "not a conversation saved with /save" in ask(repl, f"/load {bad}")


def test_mute_unmute_without_an_engine(repl: pexpect.spawn, tmp_path: Path) -> None:
    assert "muted" in ask(repl, "/mute")
    # the default profile speaks with pyttsx3: /unmute brings the voice back
    shown = ask(repl, "/unmute")
    assert "speaking again" in shown or "warning" in shown


def test_backend_error_keeps_the_repl_and_the_conversation(
    repl: pexpect.spawn, ollama_server: FakeServer
) -> None:
    ollama_server.enqueue(
        Script(tokens=["kept"]), Script(status=500, body='{"error": "boom"}'), Script()
    )
    ask(repl, "one")
    assert "boom" in ask(repl, "two")
    ask(repl, "three")
    contents = [m["content"] for m in ollama_server.chats[-1].messages[1:]]
    assert contents == ["one", "kept", "three"]


# --- pipes ---------------------------------------------------------------------------------------


def chat_through_a_pipe(
    tmp_path: Path, server: FakeServer, lines: str
) -> subprocess.CompletedProcess[str]:
    """``voicechat chat --mute`` with ``lines`` on stdin, as a real process."""
    return cli.run("chat", "--mute", input=lines, env=env_for(tmp_path, server))


def test_chat_over_a_pipe_is_one_conversation(tmp_path: Path, ollama_server: FakeServer) -> None:
    ollama_server.enqueue(Script(tokens=["A1"]), Script(tokens=["A2"]))
    result = chat_through_a_pipe(tmp_path, ollama_server, "first question\n\nsecond question\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "A1\nA2\n"
    contents = [m["content"] for m in ollama_server.chats[-1].messages[1:]]
    assert contents == ["first question", "A1", "second question"]


def test_chat_over_a_pipe_reports_failures_in_the_exit_code(
    tmp_path: Path, ollama_server: FakeServer
) -> None:
    ollama_server.enqueue(Script(status=500, body='{"error": "boom"}'), Script(tokens=["ok"]))
    result = chat_through_a_pipe(tmp_path, ollama_server, "one\ntwo\n")
    assert result.returncode == 7
    assert result.stdout == "ok\n"
    assert "boom" in result.stderr


@pytest.mark.parametrize(
    ("fault", "kept"),
    [("empty", []), ("drop", ["one", "partial"])],  # a reply cut mid-way keeps what was shown
)
def test_a_turn_that_broke_stays_out_of_the_next_request_only_if_nothing_came(
    tmp_path: Path, ollama_server: FakeServer, fault: str, kept: list[str]
) -> None:
    """llama.cpp answers a prompt over its context with an empty stream: resending that
    question with the next line would fail it too."""
    ollama_server.enqueue(Script(tokens=["par", "tial"], fault=fault), Script(tokens=["ok"]))
    result = chat_through_a_pipe(tmp_path, ollama_server, "one\ntwo\n")
    assert result.returncode == 9, result.stderr
    assert result.stdout.endswith("ok\n")
    contents = [m["content"] for m in ollama_server.chats[-1].messages[1:]]
    assert contents == [*kept, "two"]


@pytest.mark.parametrize("protocol", ["ollama", "openai"])
def test_ctrl_c_before_the_first_token_closes_the_request(tmp_path: Path, protocol: str) -> None:
    """The server learns at once (the connection closes), so it stops generating."""
    with FakeServer(protocol, models=["qwen2.5:7b"]) as server:  # type: ignore[arg-type]
        server.enqueue(Script(first_delay=30))
        args: list[str] = []
        if protocol == "openai":
            profile = tmp_path / "oai.yaml"
            profile.write_text(
                f"backend: {{kind: openai, base_url: '{server.url}', model: qwen2.5:7b}}\n"
            )
            args = ["-p", str(profile)]
        child = spawn(tmp_path, server, *args)
        child.sendline("think long")
        assert server.asked.wait(10)  # the question's request, not the warm-up's
        time.sleep(0.2)
        child.sendintr()
        child.expect_exact("interrupted")
        child.expect_exact(PROMPT)
        assert server.disconnected.wait(5)
        kill(child)


def test_voice_and_rate_commands(repl: pexpect.spawn) -> None:
    assert "voice for Chinese replies: sit/cmn-latn-pinyin" in ask(repl, "/voice cmn-latn-pinyin")
    assert "voice for other replies: gmw/en-us" in ask(repl, "/voice gmw/en-us")
    shown = ask(repl, "/voice nosuchvoice")
    assert "'nosuchvoice' is not a voice of engine pyttsx3" in shown
    assert "rate 200 words per minute" in ask(repl, "/rate 200")


# --- signals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGHUP, 129), (signal.SIGTERM, 143)])
def test_hangup_and_terminate_at_the_prompt_keep_the_history(
    tmp_path: Path, ollama_server: FakeServer, signum: int, code: int
) -> None:
    """Closing the terminal window (SIGHUP) or a kill (SIGTERM) ends cleanly."""
    child = spawn(tmp_path, ollama_server)
    ask(child, "a question worth keeping")
    child.kill(signum)
    child.expect(pexpect.EOF)
    reap(child)
    assert child.exitstatus == code, child.before
    assert "Traceback" not in child.before
    history = tmp_path / "state" / "voicechat" / "history"
    assert "a question worth keeping" in history.read_text()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGHUP, 129), (signal.SIGTERM, 143)])
def test_hangup_and_terminate_mid_reply_restore_the_terminal(
    tmp_path: Path, ollama_server: FakeServer, signum: int, code: int
) -> None:
    ollama_server.enqueue(Script(tokens=["tok "] * 200, tokens_per_s=10))
    child = spawn(tmp_path, ollama_server)
    child.sendline("count forever")
    child.expect_exact("tok tok tok")
    child.kill(signum)
    child.expect(pexpect.EOF)
    reap(child)
    assert child.exitstatus == code, child.before
    assert "Traceback" not in child.before
    assert child.before.rstrip().endswith(f"ended by {signal.Signals(signum).name}")
    assert "\x1b[?25l" not in child.before or child.before.rfind("\x1b[?25h") > child.before.rfind(
        "\x1b[?25l"
    )  # a cursor hidden while rendering is shown again
    assert ollama_server.disconnected.wait(5)
    assert "count forever" in (tmp_path / "state" / "voicechat" / "history").read_text()


def test_a_burst_of_ctrl_c_mid_reply_returns_to_the_prompt(
    repl: pexpect.spawn, ollama_server: FakeServer
) -> None:
    ollama_server.enqueue(Script(tokens=["tok "] * 200, tokens_per_s=10), Script(tokens=["ok"]))
    repl.sendline("count forever")
    repl.expect_exact("tok tok tok")
    for _ in range(10):
        os.kill(repl.pid, signal.SIGINT)
        time.sleep(0.002)
    repl.expect_exact("interrupted")
    repl.expect_exact(PROMPT)
    assert "ok" in ask(repl, "still there?")
    assert "Traceback" not in repl.before
    assert repl.isalive()


def test_history_after_load_shows_no_escape_codes(repl: pexpect.spawn, tmp_path: Path) -> None:
    saved = tmp_path / "hostile.json"
    turns = [
        {"question": "q\x1b]0;pwned\x07", "reply": "a\x1b[2J\x1b[Hnswer", "interrupted": False}
    ]
    saved.write_text(json.dumps({"voicechat": 1, "turns": turns}), encoding="utf-8")
    ask(repl, f"/load {saved}")
    shown = ask(repl, "/history")
    assert "1. you: q" in shown and "assistant: answer" in shown
    assert "pwned" not in shown and "\x1b]" not in shown and "\x1b[2J" not in shown


def test_every_command_that_needs_an_argument_has_an_example() -> None:
    from voicechat.questions.repl import COMMANDS, EXAMPLES, example

    for name, (_, _, needs) in COMMANDS.items():
        if needs:
            assert name in EXAMPLES, f"{name} has no EXAMPLES row"
            assert example(name).startswith(name + " ")
    assert example("/unlisted") == "/unlisted"  # derived, never a KeyError


def test_banner_names_the_fallback_voice_that_speaks(
    tmp_path: Path, ollama_server: FakeServer, null_sink
) -> None:
    """The default profile wants a Piper voice; none is pulled here, so espeak (pyttsx3)
    speaks, and the banner says so rather than naming the voice that cannot."""
    child = pexpect.spawn(
        sys.executable, ["-m", "voicechat", "chat"],
        env=env_for(tmp_path, ollama_server, **null_sink.env), encoding="utf-8", timeout=60,
        dimensions=(40, 200),
    )  # fmt: skip
    child.expect_exact(PROMPT)
    banner = " ".join(child.before.split())
    assert "model qwen2.5:7b · pyttsx3 (tts.fallback: piper cannot start here" in banner
    child.sendeof()
    child.expect(pexpect.EOF)
    reap(child)
    assert child.exitstatus == 0
