"""The streaming chunker: table tests of every rule, property tests, linear work, the seed reply."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicechat.chunker import HARD_LIMIT, RUN_CAP, SPACE_CAP, Chunk, Chunker, split
from voicechat.settings import ChunkingSettings

CORPUS = Path(__file__).parent / "data" / "corpus"
SEED = (CORPUS / "seed_sky_zh.txt").read_text(encoding="utf-8")
SEED_LINES = (CORPUS / "seed_sky_zh.expected").read_text(encoding="utf-8").splitlines()
SENTENCE = ChunkingSettings(mode="sentence")
CLAUSE = ChunkingSettings(mode="clause")


def texts(text: str, s: ChunkingSettings = CLAUSE) -> list[str]:
    return [c.text for c in split(text, s)]


def streamed(deltas: list[str], s: ChunkingSettings = CLAUSE) -> list[list[Chunk]]:
    """What each feed returned, then what flush returned."""
    chunker = Chunker(s)
    return [chunker.feed(d) for d in deltas] + [chunker.flush()]


# --- the seed reply --------------------------------------------------------------------------


def test_seed_reply_in_sentence_mode_gives_the_articles_nine_lines() -> None:
    """The corpus compares lines without their surrounding whitespace (paragraph breaks)."""
    assert [t.strip() for t in texts(SEED, SENTENCE)] == SEED_LINES


def test_seed_reply_in_clause_mode_starts_one_clause_in() -> None:
    chunks = split(SEED, CLAUSE)
    assert chunks[0] == Chunk("天空之所以呈现蓝色，", sentence_end=False)
    assert chunks[1].text == "主要是因为大气中的气体分子和其他细小颗粒对太阳光的散射作用。"
    assert [c.text.strip() for c in chunks[2:]] == SEED_LINES[1:]


def article_first_piece_chars(deltas: list[str]) -> int:
    """Characters received when the article's generator yields its first piece (baseline)."""
    received = ""
    for delta in deltas:
        received += delta
        if any(p in delta for p in "。！？"):
            return len(received)
    return len(received)


def test_seed_first_piece_is_at_least_twice_as_early_as_the_articles() -> None:
    """The issue's bar, in characters, whether the reply arrives by character or by word."""
    for deltas in (list(SEED), [SEED[i : i + 3] for i in range(0, len(SEED), 3)]):
        chunker, received = Chunker(CLAUSE), 0
        for delta in deltas:
            received += len(delta)
            if chunker.feed(delta):
                break
        assert 2 * received <= article_first_piece_chars(deltas)


def test_seed_reply_streamed_char_by_char_is_the_same() -> None:
    for s in (SENTENCE, CLAUSE):
        feeds = streamed(list(SEED), s)
        assert [c for got in feeds for c in got] == split(SEED, s)


# --- the first piece -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("天空之所以呈现蓝色，主要是因为散射。", ["天空之所以呈现蓝色，", "主要是因为散射。"]),
        ("好，你好吗？我很好。", ["好，你好吗？我很好。"]),  # under five characters at each mark
        ("你好，天空为什么是蓝的？", ["你好，天空为什么是蓝的？"]),
        ("天空非常蓝、很高，也很远。", ["天空非常蓝、", "很高，也很远。"]),
        ("天空很蓝、很高，也很远。", ["天空很蓝、很高，", "也很远。"]),
        ("首先；我们要做的事情", ["首先；我们要做的事情"]),
        ("Well, the sky, as you know, is blue.", ["Well, the sky,", " as you know, is blue."]),
        ("Yes, it is. Fine.", ["Yes, it is.", " Fine."]),  # "Yes," has one word
        ("One two three: four.", ["One two three:", " four."]),
        ("Hi. How are you doing, my friend?", ["Hi. How are you doing,", " my friend?"]),
        ("我用Python写，", ["我用Python写，"]),  # 4 characters + 1 word
    ],
)
def test_first_piece_ends_at_a_clause_once_long_enough(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


def test_first_piece_thresholds_are_settings() -> None:
    eager = ChunkingSettings(first_min_chars=2, first_min_words=1)
    assert texts("好的，我来回答。", eager)[0] == "好的，"
    assert texts("Well, the sky is blue.", eager)[0] == "Well,"
    patient = ChunkingSettings(first_min_chars=12)
    assert texts("天空之所以呈现蓝色，主要是因为散射。", patient) == [
        "天空之所以呈现蓝色，主要是因为散射。"
    ]


def test_only_the_first_piece_ends_at_a_clause() -> None:
    assert texts("第一句话很长，后面还有很多话。第二句也很长，还有后面的话。") == [
        "第一句话很长，",
        "后面还有很多话。",
        "第二句也很长，还有后面的话。",
    ]


def test_sentence_mode_never_ends_at_a_clause() -> None:
    assert texts("天空之所以呈现蓝色，主要是因为散射。", SENTENCE) == [
        "天空之所以呈现蓝色，主要是因为散射。"
    ]


def test_clause_piece_is_not_a_sentence_end() -> None:
    first, second = split("Well, the sky, as you know, is blue.")
    assert (first.sentence_end, second.sentence_end) == (False, True)


# --- sentence ends ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "第一句很长的话。第二句话也很长！第三句话呢？",
            ["第一句很长的话。", "第二句话也很长！", "第三句话呢？"],
        ),
        ("It is blue. It is high! Is it far? Yes it is.", None),
        ("他说：“你好世界。”然后走了很远。", ["他说：“你好世界。”", "然后走了很远。"]),
        ("他说：「你好世界。」然后走了很远。", ["他说：「你好世界。」", "然后走了很远。"]),
        ("这是真的（我确定。）然后走了很远。", ["这是真的（我确定。）", "然后走了很远。"]),
        ("It works (really.) Then more text.", ["It works (really.)", " Then more text."]),
        ('She said "go away." Then she left.', ['She said "go away."', " Then she left."]),
        ("This is **important.** Next one here.", ["This is **important.**", " Next one here."]),
        ("**流式输出！**\n相比全部生成后再输出。", ["**流式输出！**\n", "相比全部生成后再输出。"]),
        ("Really?! Are you sure... Yes I am.", ["Really?!", " Are you sure...", " Yes I am."]),
        ("这件事是真的吗？！我不信这个说法。", ["这件事是真的吗？！", "我不信这个说法。"]),
        ("请你等我一下。。。我马上就来了。", ["请你等我一下。。。", "我马上就来了。"]),
        ("我想想……好吧，就这样定了。", ["我想想……好吧，就这样定了。"]),
        ("Wow amazing!!! That was very loud.", ["Wow amazing!!!", " That was very loud."]),
        ("你今天过得好吗?我很好,谢谢你的关心!", ["你今天过得好吗?", "我很好,谢谢你的关心!"]),
        ("Line one\nLine two\n\nPara two.", ["Line one\n", "Line two\n", "\nPara two."]),
        ("Short.\n\nAlso short.\n", ["Short.\n", "\nAlso short.\n"]),
    ],
)
def test_sentence_ends_closers_and_repeated_marks(text: str, expected: list[str] | None) -> None:
    if expected is None:  # each sentence is long enough
        expected = ["It is blue.", " It is high!", " Is it far?", " Yes it is."]
    assert texts(text, SENTENCE) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Then he waited... and waited. End here.",
            ["Then he waited... and waited.", " End here."],
        ),
        ("He waited… and then left. Done now.", ["He waited… and then left.", " Done now."]),
        ("然后……他走了很远很远。", ["然后……他走了很远很远。"]),
        ('"Where is it?" she asked me twice.', ['"Where is it?" she asked me twice.']),
        ("Hello! how are you today?", ["Hello! how are you today?"]),
        ("Visit Yahoo!Japan for the news.", ["Visit Yahoo!Japan for the news."]),
    ],
)
def test_a_sentence_that_goes_on_is_not_cut(text: str, expected: list[str]) -> None:
    assert texts(text, SENTENCE) == expected


def test_short_sentences_merge_with_the_next() -> None:
    assert texts("This is the first sentence. Ok. Sure. And then the rest.", SENTENCE) == [
        "This is the first sentence.",
        " Ok. Sure.",
        " And then the rest.",
    ]
    assert texts("天空是蓝蓝的颜色。好的。嗯。然后我们继续讲下去。", SENTENCE) == [
        "天空是蓝蓝的颜色。",
        "好的。嗯。然后我们继续讲下去。",
    ]
    assert texts(
        "First sentence here. Ok. Sure.", ChunkingSettings(mode="sentence", min_chars=1)
    ) == [
        "First sentence here.",
        " Ok.",
        " Sure.",
    ]


def test_a_newline_ends_a_piece_however_short() -> None:
    assert texts("# Hi\n- a\n- b\n", SENTENCE) == ["# Hi\n", "- a\n", "- b\n"]
    assert all(c.sentence_end for c in split("# Hi\n- a\n- b\n", SENTENCE))


# --- never cut inside ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Pi is 3.14 and growth was 13.81万亿 this year.",
        "GDP达到了13.81万亿元，增长了5.2%。",
        "It costs 1,000 dollars or １，０００ yuan today.",
        "全年共计１，０００元，约合1,000.50美元。",
        "We meet at 3:30 tomorrow in the hall.",
        "会议在3:30开始，4：45结束。",
        "Install v1.2.3 from the server now.",
        "Ping 192.168.1.20 from the laptop.",
        "Open https://example.com/a?b=1&c=2!x in a browser.",
        "打开https://example.com/a.html?b=1,2看看。",
        "Mail bob.smith@example.co.uk about it soon.",
        "Edit main.py and config.yaml first.",
        "Run ./build.sh and cat .env to check.",
        "Ask Dr. Smith and Mr. Jones about it.",
        "Bring fruit, e.g. apples, i.e. red ones.",
        "Apples, pears, etc. Then the rest of the list.",
        "Apples vs. Oranges in the U.S. Market today.",
        "J. K. Rowling wrote the books.",
        "See No. 5 and Fig. 3 for details.",
        "The result was 42.Next comes more.",
        "Version 2.0.1 is out, and 2.1 follows.",
    ],
)
def test_never_cut_inside(text: str) -> None:
    for s in (SENTENCE, CLAUSE):
        pieces = texts(text, s)
        if s is CLAUSE and len(pieces) == 2:  # the first piece may still end at a real clause
            assert pieces[0][-1] in ",，:：;；、", pieces
            continue
        assert pieces == [text], s.mode


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I said no. Then I left the room.", ["I said no.", " Then I left the room."]),
        ("The price is $29. Next we pay.", ["The price is $29.", " Next we pay."]),
        ("Visit https://example.com. Then go.", ["Visit https://example.com.", " Then go."]),
        ("Get version v1.2.3. Then run it.", ["Get version v1.2.3.", " Then run it."]),
        ("It is in main.py. Open it now.", ["It is in main.py.", " Open it now."]),
        ("It grew by 3.5%. Then it fell back.", ["It grew by 3.5%.", " Then it fell back."]),
    ],
)
def test_but_these_are_ends(text: str, expected: list[str]) -> None:
    assert texts(text, SENTENCE) == expected


def test_numbered_list_markers_are_not_ends() -> None:
    assert texts("1. First step here\n2. Second step here\n10. Tenth step\n", SENTENCE) == [
        "1. First step here\n",
        "2. Second step here\n",
        "10. Tenth step\n",
    ]
    assert texts("  3. **Bold** step.\n", SENTENCE) == ["  3. **Bold** step.\n"]
    # not at the start of a line, "3." is an ordinary end
    assert texts("We counted to 3. Then we stopped.", SENTENCE) == [
        "We counted to 3.",
        " Then we stopped.",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a full-width mark straight before Latin text ends the piece however short it is
        ("这是因为散射！Makes sense? 是的。", ["这是因为散射！", "Makes sense?", " 是的。"]),
        ("……散射！Makes sense?", ["……散射！", "Makes sense?"]),
        ("结果是42！2024年就这样。", ["结果是42！", "2024年就这样。"]),
        ("好。OK的。", ["好。", "OK的。"]),
        ("他问：“真的吗？”Yes, it is.", ["他问：“真的吗？”", "Yes, it is."]),
        ("这是版本一．Next one.", ["这是版本一．", "Next one."]),
        # still one piece: a full-width number, Latin marks, and a mark alone on its line
        ("圆周率是３．１４左右。", ["圆周率是３．１４左右。"]),
        ("Yahoo!Japan is big.", ["Yahoo!Japan is big."]),
        ("好的\n！OK", ["好的\n", "！OK"]),
    ],
)
def test_fullwidth_mark_before_latin_ends_the_piece(text: str, expected: list[str]) -> None:
    for s in (SENTENCE, CLAUSE):
        assert texts(text, s) == expected


def test_mixed_chinese_and_english() -> None:
    text = "我用Python 3.11写了main.py。Then I ran it."
    for s in (SENTENCE, CLAUSE):
        assert texts(text, s) == ["我用Python 3.11写了main.py。", "Then I ran it."]


# --- waiting for the deciding character, and only for it -------------------------------------


@pytest.mark.parametrize(
    ("deltas", "expected"),
    [
        # "." before a digit would be a decimal; after " ", a lower-case word goes on
        (["The price is $29.", " ", "Next"], [[], [], ["The price is $29."], [" Next"]]),
        (["The price is $29.", " Next"], [[], ["The price is $29."]]),
        (["It is 3.", "14 exactly."], [[], []]),
        # a closing quote may follow 。; the next character decides
        (["这件事情已经完成了。", "好"], [[], ["这件事情已经完成了。"]]),
        (["这件事情已经完成了。", "”", "好"], [[], [], ["这件事情已经完成了。”"]]),
        # 、 and ， after a non-digit decide at once; "1," waits for the next character
        (["天空之所以呈现蓝色，"], [["天空之所以呈现蓝色，"]]),
        (["天空很蓝很高很远、"], [["天空很蓝很高很远、"]]),
        (["一共有三件事情1,", "2"], [[], []]),
        (["一共有三件事情1,", "就"], [[], ["一共有三件事情1,"]]),
        (["Yes we can, ", "do it"], [["Yes we can,"], []]),
        (["Yes we can:", "//x"], [[], []]),
    ],
)
def test_waits_for_the_deciding_character_only(
    deltas: list[str], expected: list[list[str]]
) -> None:
    """What each feed returns (clause mode; each text is long enough for a first piece)."""
    got = [[c.text for c in feed] for feed in streamed(deltas, CLAUSE)]
    assert got[: len(expected)] == expected


def test_flush_returns_the_rest_and_resets() -> None:
    chunker = Chunker()
    assert chunker.feed("No end mark here") == []
    assert chunker.flush() == [Chunk("No end mark here", True)]
    assert chunker.flush() == []
    assert chunker.feed("天空之所以呈现蓝色，") == [Chunk("天空之所以呈现蓝色，", False)]


def test_flush_keeps_trailing_whitespace_with_the_last_piece() -> None:
    assert split("It is blue.  ", SENTENCE) == [Chunk("It is blue.  ", True)]
    assert split("It is blue. Then", SENTENCE) == [Chunk("It is blue.", True), Chunk(" Then", True)]
    assert split("这句话很短。  ", SENTENCE) == [Chunk("这句话很短。  ", True)]
    # decided before the end of the stream, the sentence cannot take the spaces any more
    assert split("这是我的第一句话。  ", SENTENCE) == [
        Chunk("这是我的第一句话。", True),
        Chunk("  ", True),
    ]


# --- long text without marks -----------------------------------------------------------------


def test_long_text_prefers_a_clause_mark_then_a_space() -> None:
    s = ChunkingSettings(mode="sentence", max_chars=20)
    assert texts("alpha beta gamma, delta epsilon zeta eta", s)[0] == "alpha beta gamma,"
    assert texts("alpha beta gamma delta epsilon zeta eta theta", s) == [
        "alpha beta gamma ",
        "delta epsilon zeta ",
        "eta theta",
    ]
    assert all(not c.sentence_end for c in split("alpha beta gamma delta epsilon", s)[:-1])


def test_long_chinese_is_cut_between_characters() -> None:
    s = ChunkingSettings(mode="sentence", max_chars=10, cjk_weight=1.0)
    assert texts("天" * 35, s) == ["天" * 10, "天" * 10, "天" * 10, "天" * 5]
    # a clause mark in the second half wins over the character boundary
    assert texts("天天天天天天，天天天天天天天天", s)[0] == "天天天天天天，"


# Unpunctuated Chinese (a 7B model sometimes drops the marks): cut in speaking time.
UNPUNCTUATED_ZH = (
    "我们今天讨论的问题是为什么天空是蓝色的这个问题其实和光的散射有关系太阳光包含各种颜色的光"
    "当它穿过大气层时会和空气中的分子发生碰撞波长较短的蓝光更容易被散射所以我们看到的天空是蓝色的"
)


@pytest.mark.parametrize(
    ("text", "settings", "expected"),
    [
        # 160 Latin characters of speaking time = 53 Chinese characters (weight 3); the cut
        # goes after the last function character in the second half (穿过|大气层), not at 53
        (
            UNPUNCTUATED_ZH,
            ChunkingSettings(mode="sentence"),
            [UNPUNCTUATED_ZH[:48], UNPUNCTUATED_ZH[48:]],
        ),
        # the weight is a setting: 2 gives pieces of up to 80 characters (更容易被|散射)
        (
            UNPUNCTUATED_ZH,
            ChunkingSettings(mode="sentence", cjk_weight=2.0),
            [UNPUNCTUATED_ZH[:75], UNPUNCTUATED_ZH[75:]],
        ),
        # no function character in the second half: between any two characters
        ("天" * 60, ChunkingSettings(mode="sentence"), ["天" * 53, "天" * 7]),
        # a function character early on is not worth a piece of a few characters
        ("的" + "天" * 59, ChunkingSettings(mode="sentence"), ["的" + "天" * 52, "天" * 7]),
        # English is counted as before: 160 characters
        ("word " * 40, ChunkingSettings(mode="sentence"), ["word " * 32, "word " * 8]),
    ],
)
def test_unpunctuated_chinese_is_cut_in_speaking_time(
    text: str, settings: ChunkingSettings, expected: list[str]
) -> None:
    assert texts(text, settings) == expected
    assert [c.text for feed in streamed(list(text), settings) for c in feed] == expected


def test_a_long_sentence_with_commas_stays_whole() -> None:
    """Only a run without clause marks is weighed: the seed's longest sentence (87 characters,
    3 commas) is still one piece in sentence mode (the article's lines)."""
    sentence = max(SEED_LINES, key=len)
    assert len(sentence) > 160 / 3
    assert texts(sentence, SENTENCE) == [sentence]


@pytest.mark.parametrize(
    "text",
    [
        "中文中文中文中文Python3141592中文中文中文中文中文",
        "数字是3.14159265358979和1,000,000,000以及3:30:45:10中文",
        "看这里https://example.com/a/b/c/d/e/f/g中文中文中文",
        "word word word 1,000,000 more words 3:30:45 here and more 12.345 ok",
    ],
)
def test_long_text_is_never_cut_inside_a_word_number_or_url(text: str) -> None:
    s = ChunkingSettings(mode="sentence", max_chars=10)
    pieces = texts(text, s)
    assert "".join(pieces) == text
    for a, b in itertools.pairwise(pieces):
        joint = a[-2:] + "|" + b[:2]
        assert not (a[-1].isascii() and a[-1].isalnum() and b[0].isascii() and b[0].isalnum()), (
            joint
        )
        assert not (a[-1] in ".,:/" and b[0].isdigit()), joint
        assert not (a[-1].isdigit() and b[0] in ".,:"), joint
    if "http" in text:
        assert any("https://example.com/a/b/c/d/e/f/g" in p for p in pieces)


def test_an_endless_word_is_cut_at_the_hard_limit() -> None:
    s = ChunkingSettings(mode="sentence", max_chars=10)
    pieces = texts("x" * 95, s)
    assert pieces == ["x" * 40, "x" * 40, "x" * 15]
    assert HARD_LIMIT == 4


def test_whitespace_only_text_is_not_cut_into_empty_speech() -> None:
    s = ChunkingSettings(mode="sentence", max_chars=10)
    pieces = texts(" " * 25 + "end", s)
    assert "".join(pieces) == " " * 25 + "end" and all(pieces)


# --- eager: the voice is running dry ----------------------------------------------------------

LONG_EN = (
    "Good morning to you. The sky looks blue because, as sunlight passes through the air, "
    "the short blue waves scatter far more than red ones do. Then more."
)


def eager_at(text: str, hungry: set[int], s: ChunkingSettings = CLAUSE) -> list[str]:
    """Feed one character at a time, eager before the characters at the offsets in ``hungry``."""
    chunker = Chunker(s)
    pieces = [c.text for i, ch in enumerate(text) for c in chunker.feed(ch, eager=i in hungry)]
    return pieces + [c.text for c in chunker.flush()]


def test_eager_ends_the_piece_at_its_last_clause_mark() -> None:
    at = LONG_EN.index(" the short")  # both commas of the second sentence have arrived
    assert eager_at(LONG_EN, {at}) == [
        "Good morning to you.",
        " The sky looks blue because, as sunlight passes through the air,",
        " the short blue waves scatter far more than red ones do.",
        " Then more.",
    ]


def test_eager_takes_the_next_clause_mark_when_none_has_arrived() -> None:
    chunker = Chunker(CLAUSE)
    assert [c.text for c in chunker.feed("Good morning to you. The sky looks blue")] == [
        "Good morning to you."
    ]
    assert chunker.feed(" because", eager=True) == []  # no clause mark yet: nothing to cut
    pieces = chunker.feed(" of the air, and so on.", eager=True)
    assert [c.text for c in pieces] == [" The sky looks blue because of the air,"]
    assert pieces[0].sentence_end is False  # no sentence pause after a clause
    assert [c.text for c in chunker.flush()] == [" and so on."]


def test_eager_cuts_once_per_feed() -> None:
    chunker = Chunker(CLAUSE)
    assert [c.text for c in chunker.feed("Good morning to you. O")] == ["Good morning to you."]
    pieces = chunker.feed("ne two three, four five six, seven eight nine, ten", eager=True)
    assert [c.text for c in pieces] == [" One two three,"]


def test_eager_respects_the_first_piece_length() -> None:
    short = "Good morning to you. Yes, of course, the sky is blue."
    assert eager_at(short, {short.index(" the")}) == [
        "Good morning to you.",
        " Yes, of course,",
        " the sky is blue.",
    ]
    assert eager_at("Good morning to you. Yes, ok then.", {21}) == [
        "Good morning to you.",
        " Yes, ok then.",
    ]
    zh = "好的，我来解释。天空是蓝色的，因为阳光被散射了。"
    assert eager_at(zh, {zh.index("因")}) == [
        "好的，我来解释。",
        "天空是蓝色的，",
        "因为阳光被散射了。",
    ]
    zh_short = "好的，我来解释。是的，因为阳光。"
    assert eager_at(zh_short, {zh_short.index("因")}) == ["好的，我来解释。", "是的，因为阳光。"]


def test_eager_never_cuts_inside_numbers_or_in_sentence_mode() -> None:
    text = "Good morning to you. It costs 1,000 dollars and 3:30 hours, roughly."
    assert eager_at(text, {text.index("000"), text.index("30 h")}) == [
        "Good morning to you.", " It costs 1,000 dollars and 3:30 hours, roughly.",
    ]  # fmt: skip
    assert eager_at(LONG_EN, set(range(len(LONG_EN))), SENTENCE) == texts(LONG_EN, SENTENCE)


# --- invariants ------------------------------------------------------------------------------

ALPHABET = "天空是蓝色的你好，。！？…、；：“”「」（）abcXYZ .,;:!?1230\n'\"-*_#`/@"
SETTINGS = st.builds(
    ChunkingSettings,
    mode=st.sampled_from(["clause", "sentence"]),
    first_min_chars=st.integers(1, 8),
    first_min_words=st.integers(1, 4),
    min_chars=st.integers(1, 20),
    max_chars=st.integers(1, 200),
    cjk_weight=st.sampled_from([1.0, 2.5, 3.0, 6.0]),
)


@st.composite
def cut_text(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(st.text(alphabet=ALPHABET, max_size=300) | st.sampled_from([SEED]))
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=60)))
    return text, [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@settings(max_examples=400, deadline=None)
@given(cut_text(), SETTINGS)
def test_splitting_invariance_and_nothing_lost(
    case: tuple[str, list[str]], s: ChunkingSettings
) -> None:
    """Random cuts, one character at a time and the whole text give the same chunks."""
    text, deltas = case
    whole = split(text, s)
    assert [c for feed in streamed(deltas, s) for c in feed] == whole
    assert [c for feed in streamed(list(text), s) for c in feed] == whole
    assert "".join(c.text for c in whole) == text
    assert all(c.text for c in whole)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.lists(st.integers(1, 7), max_size=40))
def test_any_unicode_is_kept(text: str, sizes: list[int]) -> None:
    deltas, i = [], 0
    for n in sizes:
        deltas.append(text[i : i + n])
        i += n
    deltas.append(text[i:])
    chunks = [c for feed in streamed(deltas) for c in feed]
    assert chunks == split(text)
    assert "".join(c.text for c in chunks) == text and all(c.text for c in chunks)


# --- linear work -----------------------------------------------------------------------------

PATHOLOGICAL = {
    "no punctuation, one endless word": "x",
    "Chinese without marks": "天",
    "words without marks": "word ",
    "dots": ".",
    "ellipses": "…",
    "bangs": "!",
    "spaces": " ",
    "newlines": "\n",
    "spaces after a dot": "a." + " " * 50,
    "thousands": "1,",
    "sentences": "It is. ",
    "a URL": "http://x/",
    "closers": ".)",
}


@pytest.mark.parametrize("unit", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_work_and_memory_stay_linear(unit: str) -> None:
    """Counted work, not time: each character is examined at most twice, and the text held
    (what a feed may copy) stays bounded, whatever the input and however it is cut."""
    s = ChunkingSettings()
    text = (unit * (60_000 // len(unit) + 1))[:60_000]
    rng = random.Random(3)
    chunker = Chunker(s)
    i, total, held = 0, 0, 0
    while i < len(text):
        n = rng.choice((1, 1, 2, 5, 40))
        total += sum(len(c.text) for c in chunker.feed(text[i : i + n]))
        held = max(held, chunker.buffered)
        i += n
    total += sum(len(c.text) for c in chunker.flush())
    assert total == len(text)
    assert chunker.examined <= 2 * len(text)
    assert held <= HARD_LIMIT * s.max_chars + 2 * RUN_CAP + SPACE_CAP + 40 + 2


def test_text_without_punctuation_costs_linear_work() -> None:
    """Ten times the text without a mark examines each character no more often: a stream of
    unpunctuated text (a long code line, a run of Chinese) never rescans what it has seen."""
    s = ChunkingSettings()
    for unit in ("x", "天", "word "):
        work = []
        for size in (10_000, 100_000):
            text = (unit * size)[:size]
            chunker = Chunker(s)
            for i in range(0, size, 1000):
                chunker.feed(text[i : i + 1000])
            chunker.flush()
            work.append(chunker.examined / size)
        assert work[1] <= work[0] * 1.01 + 0.01, (unit, work)
        assert work[1] <= 2


@settings(max_examples=300, deadline=None)
@given(cut_text(), SETTINGS, st.lists(st.booleans(), min_size=61, max_size=61))
def test_eager_loses_nothing(
    case: tuple[str, list[str]], s: ChunkingSettings, hungry: list[bool]
) -> None:
    text, deltas = case
    chunker = Chunker(s)
    eager = hungry[: len(deltas)]  # cut_text gives at most 61 deltas
    pieces = [c for d, h in zip(deltas, eager, strict=True) for c in chunker.feed(d, eager=h)]
    pieces += chunker.flush()
    assert "".join(c.text for c in pieces) == text
    assert all(c.text for c in pieces)
