"""Speech cleanup per chunk, language tags, code fences, and `voicechat say --dry-run`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from voicechat.settings import ChunkingSettings
from voicechat.speakable import CODE_SHOWN, Utterance, clean, detect_lang, utterances

CORPUS = Path(__file__).parent / "data" / "corpus"


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("## Why the sky is blue\n", "Why the sky is blue"),
        ("It is **very** *blue* and __bold__ and _it_.", "It is very blue and bold and it."),
        (
            "Call `snake_case_name` with 2*3*4 and a_b_c.",
            "Call snake_case_name with 2*3*4 and a_b_c.",
        ),
        ("See [the docs](https://example.com/docs) now.", "See the docs now."),
        ("![diagram](img.png) Look.", "Look."),
        ("Visit https://example.com/a?b=1 or www.example.org today.", "Visit or today."),
        ("- a bullet item\n", "a bullet item"),
        ("* [x] done task\n", "done task"),
        ("> quoted words\n", "quoted words"),
        ("---\n", ""),
        ("| name | age |\n", "name, age"),
        ("|---|:---:|\n", ""),
        ("Great job! 🎉🚀 Really 👍🏽.", "Great job! Really ."),
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
        Utterance("我用Python 3.11写了main.py。", "zh", True),
        Utterance("Then I ran it.", "other", True),
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
    return subprocess.run(
        [sys.executable, "-m", "voicechat", "say", "--dry-run", *args],
        input=input, capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip


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
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicechat", "say", "--dry-run"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
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
