"""Turn raw chunks into what the voice says: Markdown, URL, emoji and code cleanup; language.

Cleanup runs per chunk, never per token: paired markers (``**bold**``, ``[text](url)``)
arrive in different tokens but inside one chunk. Fenced code blocks span many chunks, so
`Speakable` keeps the fence state across them; code is never read aloud (announced once per
block, or skipped). A chunk that cleans to nothing is not spoken.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from voicechat.chunker import Chunk, Chunker, is_cjk
from voicechat.settings import ChunkingSettings

Lang = Literal["zh", "other"]

CODE_SHOWN = {"zh": "代码见屏幕。", "other": "The code is shown on screen."}
"""Said once per fenced code block (``code_blocks: announce``), in the reply's language."""


@dataclass(frozen=True)
class Piece:
    """One piece for the TTS queue."""

    text: str
    """Cleaned text to speak; never empty."""
    lang: Lang
    """``zh`` when the piece is Chinese (the TTS picks a Chinese voice), else ``other``."""
    sentence_end: bool
    """True when the piece ends a sentence or paragraph (playback may add a short pause)."""


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_HTML_TAGS = (
    "a|abbr|b|br|blockquote|code|del|details|div|em|h[1-6]|hr|i|img|ins|kbd|li|mark|ol|p|pre|"
    "s|small|span|strong|sub|summary|sup|table|tbody|td|th|thead|tr|u|ul"
)
_LINE_RULES = [
    (re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$"), ""),  # horizontal rule
    (re.compile(r"^\s*\|?(\s*:?-{3,}:?\s*\|)+\s*(:?-{3,}:?\s*)?\|?\s*$"), ""),  # table rule
    (re.compile(r"^\s{0,3}#{1,6}\s+"), ""),  # heading
    (re.compile(r"^\s*(>\s?)+"), ""),  # block quote
    (re.compile(r"^\s*[-*+•]\s+(\[[ xX]\]\s+)?"), ""),  # bullet (and task box)
]
_URL = r"(?:https?|ftp)://[^\s<>()\[\]{}\"'，。、；！？）】」]+|www\.[^\s<>()\[\]{}\"'，。、；！？）】」]+"
# Guards like "not inside a word" are ASCII (re.A): Chinese emphasis sits between characters
# (是因为*瑞利散射*（), while 2*3 and snake_case must survive.
_INLINE_RULES = [
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), ""),  # image
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # link -> its text
    (re.compile(r"\[\^[^\]]*\]"), ""),  # footnote mark
    (re.compile(r"\[([^\]]+)\]\[[^\]]*\]"), r"\1"),  # reference link
    (re.compile(r"<(" + _URL + r")>"), r"\1"),  # autolink (then as a bare URL)
    (re.compile(rf"</?(?:{_HTML_TAGS})\b[^<>\n]*>", re.IGNORECASE), " "),  # HTML, not x<y>z
    (re.compile(r"`+([^`]*)`+"), r"\1"),  # inline code -> its text
    (re.compile(r"(?<![\w*])\*\*(?=\S)(.+?)(?<=\S)\*\*(?![\w*])", re.A), r"\1"),  # **bold**
    (
        re.compile(r"(?<!\w)__(?!\w+__(?!\w))(?=\S)(.+?)(?<=\S)__(?!\w)", re.A),
        r"\1",
    ),  # __bold__, not __init__
    (
        re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])", re.A),
        r"\1",
    ),  # *it*, not 2*3
    (re.compile(r"(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])", re.A), r"\1"),  # not snake_case
    (re.compile(r"~~(.+?)~~"), r"\1"),  # strikethrough
    # markers whose pair is in another chunk: **, ~~, `, a * that is not arithmetic
    (re.compile(r"(?<!\w)\*\*|\*\*(?!\w)|~~|`", re.A), ""),  # but x**2 stays
    # a single * stays only between two word characters (2*3) or two spaces (2 * 3)
    (re.compile(r"(?<!\*)\*(?!\*)(?!(?<=\w\*)\w)(?!(?<=\s\*)\s)(?!(?<=^\*)\s)", re.A), ""),
    (re.compile(r"\s*\|\s*"), ", "),  # table cells
]
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|~>])")
"""A backslash escape: the character is literal, kept out of the Markdown rules."""
_ESCAPED = re.compile("[\ue000-\ue07f]")
_BARE_URL = re.compile(_URL)
_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\U00002600-\U000027bf\U0001f1e6-\U0001f1ff"
    "\ufe0f\u200d\u20e3\U000e0020-\U000e007f\u2b50\u2b55\u231a\u231b\u23e9-\u23fa]"
)
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_MARK = re.compile(r" (?=[,.!?;:，。！？；：、)）」』”])")
_LATIN_WORD = re.compile(r"[A-Za-z]+")


def _host(match: re.Match[str]) -> str:
    """Say where a bare URL points (``example.com``), never its path or query."""
    url = match.group(0).rstrip(".,:;!?")
    host = re.sub(r"^(?:https?|ftp)://", "", url).split("/")[0].split("?")[0].split("#")[0]
    host = host.rsplit("@", 1)[-1].split(":")[0]
    host = host.removeprefix("www.")
    return host + match.group(0)[len(url) :]


def clean(text: str) -> str:
    """What the voice should say for one chunk of Markdown-ish text ("" = nothing)."""
    if "&" in text:
        import html  # only replies with entities pay for it

        text = html.unescape(text)
    lines = []
    for line in text.splitlines():
        for pattern, replacement in _LINE_RULES:
            line = pattern.sub(replacement, line)
        lines.append(line)
    text = " ".join(lines)
    text = _ESCAPE.sub(lambda m: chr(0xE000 + ord(m.group(1))), text)
    for pattern, replacement in _INLINE_RULES:
        text = pattern.sub(replacement, text)
    text = _ESCAPED.sub(lambda m: chr(ord(m.group(0)) - 0xE000), text)
    text = _BARE_URL.sub(_host, text)
    text = _EMOJI.sub("", text)
    text = _SPACE.sub(" ", text).strip(" ,")
    text = _SPACE_BEFORE_MARK.sub("", text)
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
        self._line_start = True
        """The next chunk starts at the beginning of a line (where a fence can open)."""
        self._fence: str | None = None
        """The open fence (```` ``` ````, ``~~~~``...) while inside a code block."""
        self._lang: Lang | None = None
        """The language of the last spoken piece; None until one was spoken."""
        self._announce = False
        """A code block was shown before anything was said: announce it in the next
        piece's language."""

    def feed(self, delta: str, *, eager: bool = False) -> list[Piece]:
        """The utterances completed by this delta (cheap: runs between printed tokens).

        ``eager``: the voice is about to run dry; see `Chunker.feed`.
        """
        return self._speak(self._chunker.feed(delta, eager=eager))

    def flush(self) -> list[Piece]:
        """The end of the reply: the rest."""
        out = self._speak(self._chunker.flush())
        if self._announce:
            self._announce_code(out, self._lang or "other")
        self.__init__(self.settings)  # type: ignore[misc]  # ready for another reply
        return out

    def _speak(self, chunks: Iterable[Chunk]) -> list[Piece]:
        out: list[Piece] = []
        for chunk in chunks:
            prose: list[str] = []
            for line in chunk.text.splitlines(keepends=True):
                at_line_start, self._line_start = self._line_start, line.endswith("\n")
                fence = _FENCE.match(line.rstrip("\r\n")) if at_line_start else None
                if self._fence is not None:
                    if fence and _closes(fence, self._fence):
                        self._fence = None
                    continue
                if fence and not (fence.group(1)[0] == "`" and "`" in fence.group(2)):
                    self._fence = fence.group(1)  # a fence, not ```inline code```
                    self._say(out, "".join(prose), True)
                    prose = []
                    if self.settings.code_blocks == "announce":
                        if self._lang is None:
                            self._announce = True  # nothing said yet: which language?
                        else:
                            self._announce_code(out, self._lang)
                    continue
                prose.append(line)
            self._say(out, "".join(prose), chunk.sentence_end)
        return out

    def _say(self, out: list[Piece], raw: str, sentence_end: bool) -> None:
        text = clean(raw)
        if text:
            lang = detect_lang(text)
            if self._announce:
                self._announce_code(out, lang)
            self._lang = lang
            out.append(Piece(text, lang, sentence_end))

    def _announce_code(self, out: list[Piece], lang: Lang) -> None:
        self._announce = False
        out.append(Piece(CODE_SHOWN[lang], lang, True))


def _closes(fence: re.Match[str], opening: str) -> bool:
    """A closing fence: the same character, at least as long, nothing after it."""
    run = fence.group(1)
    return run[0] == opening[0] and len(run) >= len(opening) and not fence.group(2).strip()


def utterances(
    deltas: Iterable[str],
    settings: ChunkingSettings | None = None,
    hungry: Callable[[], bool] | None = None,
) -> Iterator[Piece]:
    """Every utterance of a stream of deltas, each as soon as it is complete.

    ``hungry`` (e.g. the speaker's) is asked before each delta: see `Chunker.feed`'s ``eager``.
    """
    speakable = Speakable(settings)
    for delta in deltas:
        yield from speakable.feed(delta, eager=hungry() if hungry is not None else False)
    yield from speakable.flush()
