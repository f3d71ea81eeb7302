"""The terminal side: Markdown blocks cut while streaming, plain output, stats, TTY rendering."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fakeservers import FakeServer, Script
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
    child = pexpect.spawn(
        sys.executable, ["-m", "voicechat", "ask", "--mute", "q"], env=env, encoding="utf-8",
        timeout=15, dimensions=(30, 100),
    )  # fmt: skip
    child.expect(pexpect.EOF)
    child.close()
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
    return pexpect.spawn(
        sys.executable, ["-m", "voicechat", "ask", "--mute", *args, "q"], env=env,
        encoding="utf-8", timeout=15, dimensions=(24, 100),
    )  # fmt: skip


def test_a_slow_first_token_shows_a_waiting_line_that_leaves_no_trace(
    tmp_path: Path, ollama_server: FakeServer
) -> None:
    """A cold model takes seconds to load: say so, then clear the line before the reply."""
    ollama_server.enqueue(Script(tokens=["The sky", " is blue."], first_delay=2.2))
    child = spawn_ask(tmp_path, ollama_server)
    child.expect(pexpect.EOF)
    child.close()
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
    child.close()
    assert child.exitstatus == 0
    assert "Quick." in child.before and "waiting" not in child.before


def test_ctrl_c_while_waiting_erases_the_line(tmp_path: Path, ollama_server: FakeServer) -> None:
    ollama_server.enqueue(Script(tokens=["never shown"], first_delay=10))
    child = spawn_ask(tmp_path, ollama_server)
    child.expect_exact("waiting for qwen2.5:7b...")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
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
    result = subprocess.run(
        [sys.executable, "-m", "voicechat", "ask", "--mute", "q"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=15,
    )  # fmt: skip
    assert result.returncode == 0
    assert result.stdout == "Late.\n" and result.stderr == ""
