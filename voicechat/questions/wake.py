"""The wake phrase: hands-free, an utterance is a question only when it starts with one.

Recognisers misspell names ("hey jenson" for "hey jetson") and write Chinese names in
homophones (小姐 for 小杰), so the phrase is compared by sound, not by spelling: Chinese
characters become their toneless pinyin (pypinyin), Latin words their lower-case letters,
and the start of what was heard must lie within a small edit distance of the phrase.

After a reply, a follow-up window takes questions without the phrase; the phrase alone
arms the same window for the question that follows. Whatever is not admitted is dropped
here: it is neither sent nor kept. Pure logic: the caller passes the time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from voicechat.chunker import is_han

TOLERANCE = 0.25
"""Edits allowed per letter of the phrase's sound (at least one): "jenson" for "jetson" and
"小姐" for "小杰" pass, a different name of the same length does not."""
LEAD_IN = 1
"""Words or syllables allowed before the phrase (a recogniser's "Oh," or "嗯")."""

_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Sound:
    """One word or syllable of heard text, as it sounds, and where it ends in the text."""

    key: str
    end: int


def sounds(text: str) -> list[Sound]:
    """The text as a sequence of sounds (pinyin for Chinese characters).

    >>> [s.key for s in sounds("Hey, Jetson! 你好小杰")]
    ['hey', 'jetson', 'ni', 'hao', 'xiao', 'jie']
    """
    out: list[Sound] = []
    for word in _WORD.finditer(text):
        start, chunk = word.start(), word.group()
        i = 0
        while i < len(chunk):
            if is_han(chunk[i]):
                out.append(Sound(_pinyin(chunk[i]), start + i + 1))
                i += 1
                continue
            j = i
            while j < len(chunk) and not is_han(chunk[j]):
                j += 1
            out.append(Sound(chunk[i:j].lower(), start + j))
            i = j
    return out


def _pinyin(char: str) -> str:
    from pypinyin import lazy_pinyin

    return lazy_pinyin(char)[0].lower()


def distance(a: str, b: str) -> int:
    """Levenshtein distance.

    >>> distance("heyjetson", "heyjenson"), distance("nihaoxiaojie", "nihaoxiaojie")
    (1, 0)
    """
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class Match:
    """A wake phrase found at the start of what was heard."""

    phrase: str
    rest: str
    """What follows the phrase: the question (empty when the phrase was said alone)."""


def find(text: str, phrases: Sequence[str]) -> Match | None:
    """The wake phrase ``text`` starts with (by sound), and the rest; None when it has none.

    >>> find("Hey Jenson, what time is it?", ["hey jetson"])
    Match(phrase='hey jetson', rest='what time is it?')
    >>> find("你好小姐，今天天气怎么样？", ["你好小杰"])
    Match(phrase='你好小杰', rest='今天天气怎么样？')
    >>> find("Hey Jetson.", ["hey jetson"]).rest
    ''
    >>> find("What time is it?", ["hey jetson"]) is None
    True
    """
    heard = sounds(text)
    best: tuple[int, Match] | None = None
    for phrase in phrases:
        wanted = "".join(s.key for s in sounds(phrase))
        if not wanted:
            continue
        allowed = max(1, int(len(wanted) * TOLERANCE))
        n = len(sounds(phrase))
        for start in range(min(LEAD_IN, len(heard) - 1) + 1):
            for length in (n - 1, n, n + 1):  # a name heard as two words, or two as one
                if length < 1 or start + length > len(heard):
                    continue
                said = "".join(s.key for s in heard[start : start + length])
                d = distance(said, wanted) + start  # a lead-in costs one edit a sound
                if d <= allowed and (best is None or d < best[0]):
                    rest = text[heard[start + length - 1].end :]
                    best = (d, Match(phrase, rest.lstrip(" \t\n,.!?;:，。！？；：、…-—").strip()))
    return best[1] if best else None


Kind = Literal["question", "wake", "ignore"]


@dataclass(frozen=True)
class Admitted:
    """What an utterance is to the conversation."""

    kind: Kind
    """``question``: ask ``text``; ``wake``: the phrase alone (acknowledge, take the next
    one); ``ignore``: not for us (drop it: not sent, not kept)."""
    text: str = ""


@dataclass
class Gate:
    """Which utterances are questions, hands-free (``stt.wake`` and ``stt.follow_up``)."""

    phrases: Sequence[str]
    follow_up_s: float
    open_until: float = field(default=float("-inf"))
    """Until then (``time.monotonic``), an utterance needs no phrase."""

    def admit(self, text: str, started_at: float) -> Admitted:
        """What the utterance that began at ``started_at`` is; the phrase alone opens the
        window for the question that follows."""
        seen = self.peek(text, started_at)
        if seen.kind == "wake":
            self.open_until = started_at + self.follow_up_s
        return seen

    def peek(self, text: str, started_at: float) -> Admitted:
        """`admit` without changing anything (a guess at a pause, read ahead or not)."""
        if not self.phrases:
            return Admitted("question", text)
        found = find(text, self.phrases)
        if found is not None:
            return Admitted("question", found.rest) if found.rest else Admitted("wake")
        if started_at <= self.open_until:
            return Admitted("question", text)
        return Admitted("ignore")

    def screen(self, began: float) -> Callable[[str], bool] | None:
        """How to tell from the start of an utterance that began at ``began`` whether it may
        be for us, when only a phrase would admit it (None: anything may be, in the window,
        as `admit` judges it, or with no phrases)."""
        if not self.phrases or began <= self.open_until:
            return None
        return lambda start: find(start, self.phrases) is not None

    def replied(self, at: float) -> None:
        """A reply ended at ``at``: the follow-up window opens."""
        if self.phrases:
            self.open_until = max(self.open_until, at + self.follow_up_s)

    def acknowledgement(self) -> str:
        """What is said when the phrase comes alone, in the phrase's language."""
        chinese = any(is_han(c) for p in self.phrases[:1] for c in p)
        return "我在。" if chinese else "Yes?"
