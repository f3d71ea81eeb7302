"""Turn raw chunks into what the voice says: Markdown, URL, emoji and code cleanup; language.

Cleanup runs per chunk, never per token: paired markers (``**bold**``, ``[text](url)``)
arrive in different tokens but inside one chunk. Fenced code blocks span many chunks, so
`Speakable` keeps the fence state across them; code is never read aloud (announced once per
block, or skipped). A chunk that cleans to nothing is not spoken.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from voicechat.chunker import Chunker, is_cjk
from voicechat.settings import ChunkingSettings

Lang = Literal["zh", "other"]

CODE_SHOWN = {"zh": "代码见屏幕。", "other": "The code is shown on screen."}


@dataclass(frozen=True)
class Utterance:
    """One piece for the TTS queue."""

    text: str
    """Cleaned text to speak; never empty."""
    lang: Lang
    """``zh`` when the piece is Chinese (the TTS picks a Chinese voice), else ``other``."""
    sentence_end: bool
    """True when the piece ends a sentence or paragraph (playback may add a short pause)."""


_FENCE = re.compile(r"^\s*(```|~~~)")
_LINE_RULES = [
    (re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$"), ""),  # horizontal rule
    (re.compile(r"^\s*\|?(\s*:?-{3,}:?\s*\|)+\s*(:?-{3,}:?\s*)?\|?\s*$"), ""),  # table rule
    (re.compile(r"^\s{0,3}#{1,6}\s+"), ""),  # heading
    (re.compile(r"^\s*(>\s?)+"), ""),  # block quote
    (re.compile(r"^\s*[-*+•]\s+(\[[ xX]\]\s+)?"), ""),  # bullet (and task box)
]
_INLINE_RULES = [
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), ""),  # image
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # link -> its text
    (re.compile(r"\[([^\]]+)\]\[[^\]]*\]"), r"\1"),  # reference link
    (re.compile(r"<(https?://[^>]+)>"), ""),  # autolink
    (re.compile(r"https?://[^\s)\]>，。、]+|www\.[^\s)\]>，。、]+"), ""),  # bare URL
    (re.compile(r"</?[A-Za-z][^>\n]*>"), " "),  # HTML tag
    (re.compile(r"`+([^`]*)`+"), r"\1"),  # inline code -> its text
    (re.compile(r"(?<![\w*])\*\*(?=\S)(.+?)(?<=\S)\*\*(?![\w*])"), r"\1"),  # **bold**
    (re.compile(r"(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)"), r"\1"),  # __bold__
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),  # *italic*, not 2*3
    (re.compile(r"(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])"), r"\1"),  # _italic_, not snake_case
    (re.compile(r"~~(.+?)~~"), r"\1"),  # strikethrough
    (re.compile(r"\*\*|~~|(?<!\w)__|__(?!\w)"), ""),  # markers whose pair is in another chunk
    (re.compile(r"\s*\|\s*"), ", "),  # table cells
]
_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\U00002600-\U000027bf\U0001f1e6-\U0001f1ff"
    "\ufe0f\u200d\u20e3\U000e0020-\U000e007f\u2b50\u2b55\u231a\u231b\u23e9-\u23fa]"
)
_SPACE = re.compile(r"\s+")
_LATIN_WORD = re.compile(r"[A-Za-z]+")


def clean(text: str) -> str:
    """What the voice should say for one chunk of Markdown-ish text ("" = nothing)."""
    lines = []
    for line in text.splitlines():
        for pattern, replacement in _LINE_RULES:
            line = pattern.sub(replacement, line)
        lines.append(line)
    text = " ".join(lines)
    for pattern, replacement in _INLINE_RULES:
        text = pattern.sub(replacement, text)
    text = _EMOJI.sub("", text)
    text = _SPACE.sub(" ", text).strip(" ,")
    if not any(ch.isalnum() for ch in text):
        return ""  # only punctuation or symbols left: nothing to say
    return text


def detect_lang(text: str) -> Lang:
    """``zh`` when Chinese characters outnumber Latin words (我用Python写了main.py is zh)."""
    cjk = sum(1 for ch in text if is_cjk(ch))
    if not cjk:
        return "other"
    return "zh" if cjk >= len(_LATIN_WORD.findall(text)) else "other"


class Speakable:
    """Chunker + cleanup + code-fence state: text deltas in, utterances out."""

    def __init__(self, settings: ChunkingSettings | None = None) -> None:
        self.settings = settings or ChunkingSettings()
        self._chunker = Chunker(self.settings)
        self._fence: str | None = None
        self._lang: Lang = "other"
        """The language of the last spoken piece (for the code announcement)."""

    def feed(self, delta: str) -> list[Utterance]:
        return self._speak(self._chunker.feed(delta))

    def flush(self) -> list[Utterance]:
        return self._speak(self._chunker.flush())

    def _speak(self, chunks: Iterable) -> list[Utterance]:  # type: ignore[type-arg]
        out: list[Utterance] = []
        for chunk in chunks:
            prose: list[str] = []
            for line in chunk.text.splitlines(keepends=True):
                fence = _FENCE.match(line)
                if self._fence is not None:
                    if fence and fence.group(1) == self._fence and not line.strip()[3:].strip("`~"):
                        self._fence = None
                    continue
                if fence:
                    self._fence = fence.group(1)
                    self._say(out, " ".join(prose), True)
                    prose = []
                    if self.settings.code_blocks == "announce":
                        out.append(Utterance(CODE_SHOWN[self._lang], self._lang, True))
                    continue
                prose.append(line)
            self._say(out, "".join(prose), chunk.sentence_end)
        return out

    def _say(self, out: list[Utterance], raw: str, sentence_end: bool) -> None:
        text = clean(raw)
        if text:
            self._lang = detect_lang(text)
            out.append(Utterance(text, self._lang, sentence_end))


def utterances(
    deltas: Iterable[str], settings: ChunkingSettings | None = None
) -> Iterator[Utterance]:
    """Every utterance of a stream of deltas, each as soon as it is complete."""
    speakable = Speakable(settings)
    for delta in deltas:
        yield from speakable.feed(delta)
    yield from speakable.flush()
