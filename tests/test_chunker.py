"""The streaming chunker: table tests of every rule, property tests, the seed reply."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicechat.chunker import Chunk, Chunker, split
from voicechat.settings import ChunkingSettings

CORPUS = Path(__file__).parent / "data" / "corpus"
SENTENCE = ChunkingSettings(mode="sentence")


def texts(text: str, s: ChunkingSettings | None = None) -> list[str]:
    return [c.text for c in split(text, s)]


def test_seed_reply_in_sentence_mode_gives_the_articles_nine_lines() -> None:
    reply = (CORPUS / "seed_sky_zh.txt").read_text(encoding="utf-8")
    expected = (CORPUS / "seed_sky_zh.expected").read_text(encoding="utf-8").splitlines()
    assert [t.strip() for t in texts(reply, SENTENCE) if t.strip()] == expected


def test_first_piece_ends_one_clause_in() -> None:
    reply = (CORPUS / "seed_sky_zh.txt").read_text(encoding="utf-8")
    first = split(reply)[0]
    assert first == Chunk("天空之所以呈现蓝色，", sentence_end=False)
    assert texts("Well, the sky, as you know, is blue. Yes.")[:2] == [
        "Well, the sky,",
        " as you know, is blue.",
    ]


def test_only_the_first_piece_ends_at_a_clause() -> None:
    assert texts("第一句话很长，后面还有很多话。第二句也很长，还有后面的话。") == [
        "第一句话很长，",
        "后面还有很多话。",
        "第二句也很长，还有后面的话。",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("好，你好吗？我很好。", ["好，你好吗？我很好。"]),  # too short to start before 。
        ("Yes, it is. Fine.", ["Yes, it is.", " Fine."]),  # first needs three words
        ("One two three, four.", ["One two three,", " four."]),
    ],
)
def test_first_piece_minimum(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "第一句很长的话。第二句话也很长！第三句话呢？",
            ["第一句很长的话。", "第二句话也很长！", "第三句话呢？"],
        ),
        ("他说：“你好世界。”然后走了很远。", ["他说：“你好世界。”", "然后走了很远。"]),
        ("It works (really.) Then more text.", ["It works (really.)", " Then more text."]),
        ("Really?! Are you sure... Yes.", ["Really?!", " Are you sure...", " Yes."]),
        ("真的吗？！我不信啊。", ["真的吗？！我不信啊。"]),
        ("Line one\nLine two\n\nPara two.", ["Line one\n", "Line two\n", "\nPara two."]),
        (
            "Then he waited... and waited. End here.",
            ["Then he waited... and waited.", " End here."],
        ),
        ("然后……他走了很远很远。", ["然后……他走了很远很远。"]),
    ],
)
def test_sentence_ends_closers_and_repeated_marks(text: str, expected: list[str]) -> None:
    assert texts(text, SENTENCE) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Pi is 3.14 and growth was 13.81万亿 this year.",
        "It costs 1,000 dollars or １，０００ yuan today.",
        "We meet at 3:30 tomorrow in the hall.",
        "Install v1.2.3 from the server now.",
        "Ping 192.168.1.20 from the laptop.",
        "Open https://example.com/a?b=1&c=2 in a browser.",
        "Mail bob@example.com about it soon.",
        "Edit main.py and config.yaml first.",
        "Ask Dr. Smith and Mr. Jones about it.",
        "Bring fruit, e.g. apples, i.e. red ones.",
        "Apples vs. oranges in the U.S. market.",
        "J. K. Rowling wrote the books.",
    ],
)
def test_never_cut_inside(text: str) -> None:
    assert texts(text, SENTENCE) == [text]


def test_numbered_list_markers_are_not_ends() -> None:
    assert texts("1. First step here\n2. Second step here\n", SENTENCE) == [
        "1. First step here\n",
        "2. Second step here\n",
    ]


def test_short_sentences_merge_with_the_next() -> None:
    assert texts("This is the first sentence. Ok. Sure. And then the rest.", SENTENCE) == [
        "This is the first sentence.",
        " Ok. Sure.",
        " And then the rest.",
    ]


def test_mixed_chinese_and_english() -> None:
    assert texts("我用Python 3.11写了main.py。Then I ran it.") == [
        "我用Python 3.11写了main.py。",
        "Then I ran it.",
    ]


def test_long_text_without_marks_prefers_clause_then_space() -> None:
    s = ChunkingSettings(mode="sentence", max_chars=20)
    assert texts("alpha beta, gamma delta epsilon zeta eta", s)[0] == "alpha beta,"
    pieces = texts("alpha beta gamma delta epsilon zeta eta theta", s)
    assert pieces[0] == "alpha beta gamma "
    assert all(not p.startswith(("lta", "ta ")) for p in pieces)


def test_long_chinese_without_marks_cuts_between_characters() -> None:
    s = ChunkingSettings(mode="sentence", max_chars=10)
    pieces = texts("天" * 35, s)
    assert pieces == ["天" * 10, "天" * 10, "天" * 10, "天" * 5]


def test_never_inside_a_latin_word_or_number() -> None:
    s = ChunkingSettings(mode="sentence", max_chars=10)
    pieces = texts("中文中文中文中文Python3141592中文", s)
    assert "".join(pieces) == "中文中文中文中文Python3141592中文"
    for a, b in itertools.pairwise(pieces):
        assert not (a[-1].isascii() and a[-1].isalnum() and b[0].isascii() and b[0].isalnum())


def test_waits_for_the_deciding_character_only() -> None:
    chunker = Chunker(SENTENCE)
    assert chunker.feed("The price is $29.") == []  # "." before a digit would be a decimal
    assert chunker.feed(" ") == []  # a lower-case word could still continue the sentence
    assert chunker.feed("N") == [Chunk("The price is $29.", True)]
    chunker = Chunker(SENTENCE)
    assert chunker.feed("这件事情已经完成了。") == []  # a closing quote may follow
    assert chunker.feed("好") == [Chunk("这件事情已经完成了。", True)]


def test_flush_returns_the_rest() -> None:
    chunker = Chunker()
    assert chunker.feed("No end mark here") == []
    assert chunker.flush() == [Chunk("No end mark here", True)]
    assert chunker.flush() == []


# --- invariants ------------------------------------------------------------------------------

ALPHABET = "天空是蓝色的，。！？…“”（）abc XYZ.,;:!?123\n'\"-*#`"


@st.composite
def cut_text(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(st.text(alphabet=ALPHABET, max_size=300))
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=40)))
    return text, [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(cut_text(), st.sampled_from(["clause", "sentence"]), st.integers(5, 200))
def test_splitting_invariance_and_nothing_lost(
    case: tuple[str, list[str]], mode: str, max_chars: int
) -> None:
    text, deltas = case
    s = ChunkingSettings(mode=mode, max_chars=max_chars)  # type: ignore[arg-type]
    chunker = Chunker(s)
    streamed = [c for d in deltas for c in chunker.feed(d)] + chunker.flush()
    one_by_one = Chunker(s)
    by_char = [c for ch in text for c in one_by_one.feed(ch)] + one_by_one.flush()
    assert streamed == by_char == split(text, s)
    assert "".join(c.text for c in streamed) == text
    assert all(c.text for c in streamed)


def test_seed_reply_is_split_invariant() -> None:
    reply = (CORPUS / "seed_sky_zh.txt").read_text(encoding="utf-8")
    chunker = Chunker()
    by_char = [c for ch in reply for c in chunker.feed(ch)] + chunker.flush()
    assert by_char == split(reply)


@pytest.mark.parametrize("unit", ["天", "word "])
def test_work_is_linear_in_length(unit: str) -> None:
    """Examined characters per input character stay bounded (no rescans of the buffer)."""
    ratios = []
    for size in (20_000, 200_000):
        text = unit * (size // len(unit))
        chunker = Chunker()
        examined = 0
        original = chunker._advance

        def counting(start: int, stop: int, original=original) -> None:
            nonlocal examined
            examined += stop - start
            original(start, stop)

        chunker._advance = counting  # type: ignore[method-assign]
        for i in range(0, len(text), 7):
            chunker.feed(text[i : i + 7])
        chunker.flush()
        ratios.append(examined / len(text))
        assert max(len(chunker._buf), 0) == 0
    assert ratios[1] <= ratios[0] * 1.1 and ratios[1] <= 2.0
