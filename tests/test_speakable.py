"""Speech cleanup per chunk, language tags, code fences, and `voicechat say --dry-run`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import cli
from voicechat.settings import ChunkingSettings
from voicechat.speakable import CODE_SHOWN, Piece, clean, detect_lang, utterances

CORPUS = Path(__file__).parent / "data" / "corpus"


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("## Why the sky is blue\n", "Why the sky is blue"),
        (
            "It is **very** *blue* and __bold text__ and _it_.",
            "It is very blue and bold text and it.",
        ),
        ("Override __init__ and __repr__ here.", "Override __init__ and __repr__ here."),
        (
            "Call `snake_case_name` with 2*3*4 and a_b_c.",
            "Call snake_case_name with 2*3*4 and a_b_c.",
        ),
        ("See [the docs](https://example.com/docs) now.", "See the docs now."),
        ("![diagram](img.png) Look.", "Look."),
        (
            "Visit https://example.com/a?b=1 or www.example.org today.",
            "Visit example.com or example.org today.",
        ),
        ("详见 https://github.com/x/y?tab=1。", "详见 github.com。"),
        (
            "See https://docs.python.org/3/library/re.html, then go.",
            "See docs.python.org, then go.",
        ),
        ("<https://a.example/x>", "a.example"),
        ("Mail bob@example.com now.", "Mail bob@example.com now."),
        ("if x<y and y>z then stop", "if x<y and y>z then stop"),
        ("one<br>two <b>three</b>", "one two three"),
        ("Tom &amp; Jerry&nbsp;show", "Tom & Jerry show"),
        ("A footnote[^1] here.", "A footnote here."),
        (r"1\. not a list \*really\*", "1. not a list *really*"),
        ("a lone ` tick", "a lone tick"),
        ("*half italic", "half italic"),
        ("half italic*", "half italic"),
        ("2 * 3 = 6 and 2*3 and x**2", "2 * 3 = 6 and 2*3 and x**2"),
        ("**简短回答：**天空是因为*瑞利散射*（散射）。", "简短回答：天空是因为瑞利散射（散射）。"),
        ("5* rating and a *b", "5 rating and a b"),
        ("### 2. Heading", "2. Heading"),
        ("Text with [ref][1] link", "Text with ref link"),
        ("使用`pip install`安装。", "使用pip install安装。"),
        ("- a bullet item\n", "a bullet item"),
        ("* [x] done task\n", "done task"),
        ("> quoted words\n", "quoted words"),
        ("---\n", ""),
        ("| name | age |\n", "name, age"),
        ("|---|:---:|\n", ""),
        ("Great job! 🎉🚀 Really 👍🏽.", "Great job! Really."),
        ("❤️ love ✅ done 🇨🇳", "love done"),
        ("  lots   of\n\n  space  ", "lots of space"),
        ("**", ""),
        ("。", ""),
        ("~~old~~ new", "old new"),
        ("half **bold", "half bold"),
        ("天空是**蓝色**的。", "天空是蓝色的。"),
    ],
)
def test_clean(raw: str, spoken: str) -> None:
    assert clean(raw) == spoken


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("天空是蓝色的。", "zh"),
        ("我用Python 3.11写了main.py。", "zh"),
        ("Then I ran it.", "other"),
        ("The word 天 means sky in this long English sentence.", "other"),
        ("3.14", "other"),
    ],
)
def test_detect_lang(text: str, lang: str) -> None:
    assert detect_lang(text) == lang


def test_mixed_reply_gets_a_language_per_piece() -> None:
    got = list(utterances("我用Python 3.11写了main.py。Then I ran it."))
    assert got == [
        Piece("我用Python 3.11写了main.py。", "zh", True),
        Piece("Then I ran it.", "other", True),
    ]


def test_code_blocks_are_announced_once_in_the_replys_language() -> None:
    reply = "下面是代码示例。\n```python\nprint('你好')\n\nx = 1\n```\n这样就可以了。\n"
    got = [u.text for u in utterances(reply)]
    assert got == ["下面是代码示例。", CODE_SHOWN["zh"], "这样就可以了。"]
    english = "Here is the code.\n```sh\nls -la\n```\nDone with it.\n"
    assert [u.text for u in utterances(english)] == [
        "Here is the code.",
        CODE_SHOWN["other"],
        "Done with it.",
    ]


def test_code_blocks_can_be_skipped() -> None:
    s = ChunkingSettings(code_blocks="skip")
    got = [u.text for u in utterances("Look here now.\n```\ncode line.\n```\nAfter it.\n", s)]
    assert got == ["Look here now.", "After it."]


def test_code_fence_split_across_deltas() -> None:
    reply = "Intro sentence.\n```py\nsecret = 1\n```\nOutro sentence.\n"
    got = [u.text for u in utterances(list(reply))]
    assert "secret" not in " ".join(got)
    assert got[0] == "Intro sentence." and got[-1] == "Outro sentence."


@pytest.mark.parametrize(
    ("reply", "spoken"),
    [
        # ```inline``` on one line is inline code, not a fence that silences the rest
        (
            "Run ```make all``` first. Then we are done here.\nAnd more.",
            ["Run make all first.", "Then we are done here.", "And more."],
        ),
        # a fence opens only at the start of a line
        (
            "Look at this now. ```python\nAfter that line.\n",
            ["Look at this now.", "python", "After that line."],
        ),
        # a longer fence holds shorter ones
        (
            "Text here.\n````md\n```\ninner words\n```\n````\nAfter the fence.\n",
            ["Text here.", "The code is shown on screen.", "After the fence."],
        ),
        (
            "Tilde fence next.\n~~~\nsecret words\n~~~\nAfter the fence.\n",
            ["Tilde fence next.", "The code is shown on screen.", "After the fence."],
        ),
        (
            "Indented fence.\n   ```sh\n   secret words\n   ```\nAfter the fence.\n",
            ["Indented fence.", "The code is shown on screen.", "After the fence."],
        ),
        # code first: announced in the language of what follows it
        ("```python\nprint(1)\n```\n好的，这就是代码。", ["代码见屏幕。", "好的，这就是代码。"]),
        ("```\nx = 1\n```\n", ["The code is shown on screen."]),
        # an unclosed block at the end of the reply stays silent
        (
            "Here it comes now.\n```\nsecret words. More.\n",
            ["Here it comes now.", "The code is shown on screen."],
        ),
        # two blocks, two announcements
        (
            "第一段代码如下。\n```\na\n```\n第二段代码如下。\n```\nb\n```\n",
            ["第一段代码如下。", "代码见屏幕。", "第二段代码如下。", "代码见屏幕。"],
        ),
    ],
)
def test_code_fences(reply: str, spoken: list[str]) -> None:
    got = [u.text for u in utterances(reply)]
    assert got == spoken
    assert [u.text for u in utterances(list(reply))] == spoken  # streamed by character


def test_nothing_empty_is_spoken() -> None:
    assert all(u.text for u in utterances("---\n\n**\n\n🎉\n\nReal words.\n"))


def test_seed_cleaned_lines() -> None:
    reply = (CORPUS / "seed_sky_zh.txt").read_text(encoding="utf-8")
    expected = (CORPUS / "seed_sky_zh.expected").read_text(encoding="utf-8").splitlines()
    got = list(utterances(reply, ChunkingSettings(mode="sentence")))
    assert [u.text for u in got] == expected
    assert {u.lang for u in got} == {"zh"}


def run_say(*args: str, input: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VOICECHAT_PROFILE"}
    return cli.run("say", "--dry-run", *args, input=input, env=env)


def test_say_dry_run_prints_one_chunk_per_line() -> None:
    reply = (CORPUS / "seed_sky_zh.txt").read_text(encoding="utf-8")
    result = run_say("--mode", "sentence", input=reply)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == (
        (CORPUS / "seed_sky_zh.expected").read_text(encoding="utf-8").splitlines()
    )
    clause = run_say("--mode", "clause", input=reply)
    assert clause.stdout.splitlines()[0] == "天空之所以呈现蓝色，"


def test_say_dry_run_reads_a_pipe_incrementally() -> None:
    """The first chunk is printed while the writer is still writing."""
    proc = cli.start("say", "--dry-run", stdin=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("This is the first sentence here. And the")
    proc.stdin.flush()
    assert proc.stdout.readline() == "This is the first sentence here.\n"
    proc.stdin.write(" second one.\n")
    proc.stdin.close()
    assert proc.stdout.read() == "And the second one.\n"
    assert proc.wait(10) == 0


def test_say_bad_mode() -> None:
    result = run_say("--mode", "word", input="x")
    assert result.returncode == 2
    assert "use clause or sentence" in result.stderr


MARKDOWN = "天空蓝色的，。！？abc XY.,!?12\n*_`#>-|[]()~:/ 🎉"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=MARKDOWN, max_size=200), st.lists(st.integers(1, 9), max_size=50))
def test_utterances_do_not_depend_on_how_the_reply_was_cut(text: str, sizes: list[int]) -> None:
    deltas, i = [], 0
    for n in sizes:
        deltas.append(text[i : i + n])
        i += n
    deltas.append(text[i:])
    got = list(utterances(deltas))
    assert got == list(utterances([text])) == list(utterances(list(text)))
    assert all(u.text and u.text == u.text.strip() and u.lang in ("zh", "other") for u in got)
