"""Whether a pause ends the user's turn: judged from what was said so far, not only the silence.

People pause mid-sentence ("I went to the store and then ... I bought some milk", "我想学习编程，
应该 ... 从哪里开始？"); ending the utterance at every half second of silence splits such a
question in two. At a pause the listener already has the early transcript, so a `TurnJudge`
looks at its end: one that sounds unfinished (a trailing conjunction, preposition, article or
filler, or Whisper's trailing "...") waits up to ``stt.max_pause``; one that sounds finished
ends after ``stt.end_silence`` as before.

`CueJudge` is pure text logic (table-tested, microseconds). Smart Turn v3.2 (pipecat's
audio end-of-turn model) was measured against it on the same recordings, alone and combined,
and made more wrong calls both ways (docs/turn-taking.md, written by scripts/eval_turn.py):
it is not shipped, and nothing here needs more than the ``[listen]`` extra. The audio stays
in the interface for a judge that can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Verdict:
    """A pause, judged."""

    finished: bool
    """True: the turn may end after ``stt.end_silence``; False: wait up to ``stt.max_pause``."""
    why: str
    """What decided it (the cue, or a score), for logs and the evaluation table."""


class TurnJudge(Protocol):
    """The transcript of the utterance so far (and its audio) in, a `Verdict` out."""

    def judge(self, text: str, samples: np.ndarray) -> Verdict: ...


# --- the cues --------------------------------------------------------------------------------


def _words(*groups: str) -> frozenset[str]:
    return frozenset(" ".join(groups).split())


_EN_ALWAYS = _words(
    "and but or nor because cause cuz if unless although whereas whether than",
    "the a an my your our their its every",
    "um uh er erm uhm",
)
"""A turn ending on one of these is unfinished even with a question mark after it."""
_EN_UNLESS_ASKED = _words(
    "to for of with about from into onto at between towards toward without via"
)
"""Prepositions: unfinished unless Whisper heard a question ("What is it for?" strands one)."""
_EN_PAIRS = frozenset(
    {("and", "then"), ("but", "then"), ("so", "then"), ("such", "as"), ("so", "that")}
    | {("said", "that"), ("says", "that")}
)
_EN_EMBED = _words(
    "me us him her them know wonder explain tell ask show see understand sure idea",
    "remember find decide learn check",
)
"""Words that open an embedded question: "tell me | how far", "I wonder | why"."""
_EN_WH = _words("what where when why who whom whose which whether how")
_EN_HOW = _words("far long much many big old often fast tall high deep large to")
"""What completes "how" to a question word of its own ("how far", "how to")."""
_EN_SO_DONE = _words("think hope guess believe said say suppose do did is not")
"""A trailing "so" is a conjunction ("...and so") except after these ("I think so")."""

_ZH_CUES = _words(
    # conjunctions: the sentence goes on
    "然后 因为 所以 但是 可是 而且 或者 还是 如果 虽然 不过 并且 以及 还有 就是 比如 那么 于是",
    "接着 另外 要是 除了 而是",
    # fillers
    "那个 这个 嗯 呃 额",
    # a wish or an ought with nothing after it
    "应该 我想 想要 打算",
    # one of something, the something not said yet
    "一个 一首 一种 一本 一部 一位 一件",
    # prepositions
    "关于 对于 为了 从 把 被 跟 往 向 与 和",
)
_ZH_WHOLE = ("暖和", "温和", "柔和", "平和", "缓和", "随和", "祥和", "总和", "附和", "谦和")
"""Words that end in a cue character but are themselves complete ("天气很暖和")."""
_TRADITIONAL = str.maketrans(
    "后为还虽过并么于着个这应该关从对与说种", "後為還雖過並麼於著個這應該關從對與說種"
)
ZH_CUES = tuple(
    sorted(
        {c for cue in _ZH_CUES for c in (cue, cue.translate(_TRADITIONAL))},
        key=lambda c: (-len(c), c),
    )
)
"""Chinese endings of an unfinished turn, simplified and traditional (Whisper writes both),
longest first (the one named is the whole ending)."""

_TRAILING = re.compile(r"(\.\.\.|…|,|，|、|-|—|:|：)\s*$")
"""Whisper's marks of speech that stopped mid-way: an ellipsis, a comma, a dash."""
_WORDS = re.compile(r"[a-z']+")


def cue(text: str) -> str | None:
    """The ending that makes ``text`` sound unfinished, or None when nothing does.

    >>> cue("I went to the store and then.")
    'and then'
    >>> cue("What are you looking at?") is None
    True
    >>> cue("Can you tell me how far?")
    'me how far'
    >>> cue("How far is the moon?") is None
    True
    >>> cue("我想学习编程，应该")
    '应该'
    >>> cue("天气很暖和。") is None
    True
    """
    text = text.strip()
    if not text:
        return None
    mark = _TRAILING.search(text)
    if mark:
        return mark.group(1)
    core = text.rstrip(" .。!！?？\"'”’")
    asked = text.endswith(("?", "？"))
    if core and "\u4e00" <= core[-1] <= "\u9fff":
        if core.endswith(_ZH_WHOLE):
            return None
        return next((c for c in ZH_CUES if core.endswith(c)), None)
    words = _WORDS.findall(core.lower())
    if not words:
        return None
    last = words[-1]
    if len(words) > 1 and (words[-2], last) in _EN_PAIRS:
        return f"{words[-2]} {last}"
    if last in _EN_ALWAYS:
        return last
    opener = _embedded_question(words)
    if opener:
        return opener
    if last in _EN_UNLESS_ASKED and not asked:
        return last
    if last == "so" and not asked and (len(words) < 2 or words[-2] not in _EN_SO_DONE):
        return last
    return None


def _embedded_question(words: list[str]) -> str | None:
    """An embedded question opened at the very end and not said yet: "Can you tell me how
    far" (Whisper writes "how far?", but the question is "how far the moon is")."""
    wh = 2 if len(words) > 2 and words[-2] == "how" and words[-1] in _EN_HOW else 1
    if words[-wh] not in _EN_WH or (wh == 1 and words[-1] == "how"):
        return None
    if len(words) > wh and words[-wh - 1] in _EN_EMBED:
        return " ".join(words[-wh - 1 :])
    return None


class CueJudge:
    """A turn is unfinished when its transcript ends on a `cue`; the audio is not used."""

    def judge(self, text: str, samples: np.ndarray) -> Verdict:
        found = cue(text)
        if found is None:
            return Verdict(True, "no cue")
        return Verdict(False, f"ends with {found!r}")
