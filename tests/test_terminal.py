"""The terminal side: Markdown blocks cut while streaming, plain output, stats, TTY rendering."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pexpect
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import cli
from tests.support.fakeservers import FakeServer, Script
from tests.support.ptys import reap
from voicechat.backends import Outcome
from voicechat.terminal import Blocks, PlainView, Terminal, format_stats


def feed_all(blocks: Blocks, deltas: list[str]) -> list[str]:
    done = [b for d in deltas for b in blocks.feed(d)]
    rest = blocks.flush()
    return [*done, rest] if rest else done


def test_paragraphs_become_blocks_at_blank_lines() -> None:
    text = "# Title\n\nFirst para\nstill first.\n\n- a\n- b\n"
    assert feed_all(Blocks(), [text]) == [
        "# Title\n\n",
        "First para\nstill first.\n\n",
        "- a\n- b\n",
    ]


def test_a_code_block_is_never_cut_at_its_blank_lines() -> None:
    text = "Code:\n\n```python\nx = 1\n\ny = 2\n```\nafter\n"
    blocks = feed_all(Blocks(), list(text))
    assert "```python\nx = 1\n\ny = 2\n```\n" in blocks


def test_a_tall_block_is_cut_and_a_fence_reopened() -> None:
    code = "".join(f"line {i}\n" for i in range(10))
    blocks = feed_all(Blocks(max_lines=4), ["```sh\n", code, "```\n"])
    assert all(b.count("\n") <= 5 for b in blocks)
    for block in blocks:  # each piece renders as a closed code block on its own
        assert block.startswith("```") and block.rstrip().endswith("```")
    joined = "".join(blocks)
    assert all(f"line {i}\n" in joined for i in range(10))


@given(st.text(alphabet="ab \n`#-*", max_size=200), st.data())
def test_blocks_lose_nothing_outside_tall_cuts(text: str, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.sets(st.integers(0, len(text)), max_size=20)))
    deltas = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert "".join(feed_all(Blocks(max_lines=10_000), deltas)) == text


def test_plain_view_writes_as_it_arrives_and_ends_the_line() -> None:
    out = io.StringIO()
    view = PlainView(out)
    view.write("Hello")
    assert out.getvalue() == "Hello"
    view.write(" **world**")
    view.end()
    assert out.getvalue() == "Hello **world**\n"


def test_plain_view_adds_no_second_newline() -> None:
    out = io.StringIO()
    view = PlainView(out)
    view.write("done\n")
    view.end()
    assert out.getvalue() == "done\n"


def test_not_a_tty_means_plain_text() -> None:
    term = Terminal(io.StringIO(), io.StringIO(), env={})
    assert isinstance(term.reply_view(), PlainView)


def test_status_lines_go_to_stderr_without_color_when_not_a_tty() -> None:
    out, err = io.StringIO(), io.StringIO()
    term = Terminal(out, err, env={})
    term.error("it broke: fix it")
    term.warn("careful")
    assert out.getvalue() == ""
    assert err.getvalue() == "voicechat: error: it broke: fix it\nvoicechat: warning: careful\n"


def test_stats_line() -> None:
    outcome = Outcome("stop", 0.42, 8.1, 96, 12.34, False, 300)
    line = format_stats(outcome, first_audio_s=0.61)
    assert line == (
        "first token 0.42 s · first audio 0.61 s · 12.3 tokens/s (server) · 96 tokens · "
        "8.10 s total · finish: stop"
    )
    assert "measured" in format_stats(Outcome("length", 0.1, 1.0, 5, 5.0, True, 20))


@pytest.mark.parametrize("no_color", [False, True])
def test_markdown_is_rendered_on_a_terminal(
    tmp_path: Path, ollama_server: FakeServer, no_color: bool
) -> None:
    """Through a real pseudo-terminal: rich renders the Markdown; NO_COLOR removes color."""
    ollama_server.enqueue(
        Script(tokens=["# Sky\n\n", "It is ", "**blue** ", "because of `Rayleigh`.\n\n", "- one\n"])
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA", "NO_COLOR"))}
    env.update(OLLAMA_HOST=ollama_server.url, XDG_CONFIG_HOME=str(tmp_path), TERM="xterm-256color")
    if no_color:
        env["NO_COLOR"] = "1"
    child = cli.spawn("ask", "--mute", "q", env=env, dimensions=(30, 100))
    child.expect(pexpect.EOF)
    reap(child)
    shown = child.before
    assert child.exitstatus == 0
    assert "**blue**" not in shown and "blue" in shown  # rendered, not raw Markdown
    assert "# Sky" not in shown and "Sky" in shown
    assert "•" in shown  # a rendered bullet
    sgr = [p.split(";") for p in re.findall(r"\x1b\[([0-9;]*)m", shown)]
    has_color = any(n.isdigit() and 30 <= int(n) <= 107 and int(n) not in range(50, 90)
                    for params in sgr for n in params)  # fmt: skip
    assert has_color is (not no_color)


# --- the waiting line ------------------------------------------------------------------------

ERASE = "\r\x1b[2K"


def spawn_ask(tmp_path: Path, server: FakeServer, *args: str) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA", "VOICECHAT"))}
    env.update(OLLAMA_HOST=server.url, XDG_CONFIG_HOME=str(tmp_path), TERM="xterm")
    return cli.spawn("ask", "--mute", *args, "q", env=env, dimensions=(24, 100))


def test_a_slow_first_token_shows_a_waiting_line_that_leaves_no_trace(
    tmp_path: Path, ollama_server: FakeServer
) -> None:
    """A cold model takes seconds to load: say so, then clear the line before the reply."""
    ollama_server.enqueue(Script(tokens=["The sky", " is blue."], first_delay=2.2))
    child = spawn_ask(tmp_path, ollama_server)
    child.expect(pexpect.EOF)
    reap(child)
    shown = child.before
    assert child.exitstatus == 0
    assert "waiting for qwen2.5:7b... 1 s" in shown and "waiting for qwen2.5:7b... 2 s" in shown
    last = shown.rindex("waiting for")
    reply = shown.index("The sky")
    assert last < shown.index(ERASE, last) < reply  # erased before the first text
    assert "waiting" not in shown[reply:]


def test_a_prompt_reply_shows_no_waiting_line(tmp_path: Path, ollama_server: FakeServer) -> None:
    ollama_server.enqueue(Script(tokens=["Quick."], first_delay=0.2))
    child = spawn_ask(tmp_path, ollama_server)
    child.expect(pexpect.EOF)
    reap(child)
    assert child.exitstatus == 0
    assert "Quick." in child.before and "waiting" not in child.before


def test_ctrl_c_while_waiting_erases_the_line(tmp_path: Path, ollama_server: FakeServer) -> None:
    ollama_server.enqueue(Script(tokens=["never shown"], first_delay=10))
    child = spawn_ask(tmp_path, ollama_server)
    child.expect_exact("waiting for qwen2.5:7b...")
    child.sendintr()
    child.expect(pexpect.EOF)
    reap(child)
    after = child.before
    assert child.exitstatus == 130
    assert after.startswith(tuple(f" {n} s" for n in range(1, 3)))  # the line being drawn
    assert ERASE in after and "waiting" not in after  # erased, never drawn again
    assert "Traceback" not in after


def test_no_waiting_line_when_stderr_is_not_a_terminal(
    tmp_path: Path, ollama_server: FakeServer
) -> None:
    ollama_server.enqueue(Script(tokens=["Late."], first_delay=1.6))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA", "VOICECHAT"))}
    env.update(OLLAMA_HOST=ollama_server.url, XDG_CONFIG_HOME=str(tmp_path))
    result = cli.run("ask", "--mute", "q", env=env, timeout=60)
    assert result.returncode == 0
    assert result.stdout == "Late.\n" and result.stderr == ""


# --- the one door: no escape code, no control character, bounded status lines -------------------

HOSTILE = [
    "\x1b]0;pwned title\x07",  # OSC: window title
    "\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\",  # OSC 8 hyperlink, ST-terminated
    "\x1b[2J\x1b[H",  # CSI: clear screen, cursor home
    "\x1b[?25l",  # hide the cursor
    "\x9b31m",  # C1 CSI
    "\rfake prompt>>> ",  # carriage return over the line
    "\x07\x08\x7f",  # bell, backspace, DEL
]
ESCAPES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def no_control(text: str) -> bool:
    return ESCAPES.search(text) is None


@pytest.mark.parametrize("hostile", HOSTILE)
def test_status_lines_are_one_clean_line(hostile: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    term = Terminal(out, err, env={})
    term.error(f"server said: {hostile} boom\nsecond line")
    term.warn(hostile)
    term.info(hostile)
    term.note(hostile)
    lines = err.getvalue().split("\n")
    assert len(lines) == 5 and lines[-1] == ""
    assert all(no_control(line) for line in lines)
    assert lines[0].startswith("voicechat: error: server said:")
    assert lines[0].endswith("boom second line")


def test_a_status_line_has_a_length_limit() -> None:
    err = io.StringIO()
    Terminal(io.StringIO(), err, env={}).error("x" * 100_000)
    line = err.getvalue().rstrip("\n")
    assert "\n" not in line and len(line) <= 400 + len("voicechat: error: ")
    assert line.endswith("…")


@pytest.mark.parametrize("hostile", HOSTILE)
def test_program_output_and_tables_are_clean(hostile: str) -> None:
    out = io.StringIO()
    term = Terminal(out, io.StringIO(), env={})
    term.print(f"line {hostile}\tkept\ttabs")
    term.table(("NAME", "X"), [(f"n{hostile}ame", "\tv")])
    term.check(f"na{hostile}me", False, f"det{hostile}ail", f"fi{hostile}x")
    assert no_control(out.getvalue().replace("\t", ""))
    assert out.getvalue().startswith("line ") and "\tkept\ttabs\n" in out.getvalue()


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_streamed_reply_keeps_its_text_but_not_its_escape_codes(hostile: str) -> None:
    out = io.StringIO()
    view = PlainView(out)
    for delta in ["Before ", hostile, " after\n", "tab\there\n"]:
        view.write(delta)
    view.end()
    assert no_control(out.getvalue().replace("\t", "").replace("\n", ""))
    assert out.getvalue().startswith("Before ") and out.getvalue().endswith(" after\ntab\there\n")


def test_a_hostile_server_cannot_reach_the_terminal(
    tmp_path: Path, ollama_server: FakeServer
) -> None:
    """On a real pty, rendered as Markdown: the reply's OSC/CSI codes and the error body's
    never reach the terminal; the text around them does."""
    ollama_server.enqueue(
        Script(tokens=["Safe ", "\x1b]0;pwned\x07", "\x1b[2J", "text.\n\n", "- item\n"])
    )
    child = spawn_ask(tmp_path, ollama_server)
    child.expect(pexpect.EOF)
    reap(child)
    assert child.exitstatus == 0
    assert "Safe" in child.before and "text." in child.before
    assert "pwned" not in child.before and "\x1b]" not in child.before
    assert "\x1b[2J" not in child.before

    ollama_server.enqueue(
        Script(status=500, body='{"error": "\\u001b]0;pwned\\u0007\\u001b[2Jboom"}')
    )
    result = cli.run(
        "ask", "--mute", "q",
        env={**os.environ, "OLLAMA_HOST": ollama_server.url, "XDG_CONFIG_HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 7
    assert "boom" in result.stderr and no_control(result.stderr.replace("\n", ""))
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_known_secrets_never_reach_either_stream() -> None:
    from voicechat import redact

    redact.remember("Zq9-known-secret-value")
    out, err = io.StringIO(), io.StringIO()
    term = Terminal(out, err, env={})
    term.error("server said: Incorrect API key provided: Zq9-known-secret-value")
    term.warn("at https://bob:hunter2@example.com/v1?api-key=abc123")
    term.print("listed: Zq9-known-secret-value")
    term.table(("A",), [("Zq9-known-secret-value",)])
    for text in (out.getvalue(), err.getvalue()):
        assert "Zq9-known-secret-value" not in text and "hunter2" not in text
        assert "abc123" not in text
    assert "Incorrect API key provided: ***" in err.getvalue()
