"""Cut a stream of text deltas into speakable pieces, as early as sense allows.

Pure text logic: no threads, no I/O. `Chunker.feed` takes each delta and returns the pieces
it completed; `flush` returns the rest at the end of the stream. Decisions depend only on
the text, never on how it was split into deltas: where the next character decides (is this
``.`` a decimal point? does a closing quote follow ``。``?), the chunker waits for exactly
that character. Each character is examined a bounded number of times and the buffer never
grows past ``max_chars`` (4x for one endless word), so the work is linear in the reply.

Rules, in order of precedence:

* A newline ends a piece (Markdown lines are read one by one); a blank line never makes an
  empty piece.
* Sentence marks ``。！？!?…`` and ``.`` end a sentence, with the closing quotes and brackets
  after them (``。」`` ``.”`` ``）``) and repeated marks (``?!`` ``……`` ``...``) kept together.
* ``.`` is not an end before a letter or digit (3.14, v1.2.3, main.py, 192.168.0.1,
  a@b.com), after an abbreviation or an initial (Dr. e.g. U.S. J.), after a list number at
  the start of a line (``1.``), or when the sentence goes on in lower case (an ellipsis in
  the middle of a sentence). ``?`` ``!`` ``:`` inside a URL, ``,`` ``:`` between digits
  (1,000 3:30 １，０００) are not marks.
* The first piece (``clause`` mode) may end at a clause mark ``，、；：,;:`` once it has
  ``first_min_chars`` Chinese characters (or ``first_min_words`` words), so speech starts
  one clause in. Later pieces end at sentences; one shorter than ``min_chars`` merges with
  the next.
* Text without marks is cut at ``max_chars``: at the last clause mark, else the last space,
  else between Chinese characters; never inside a Latin word or a number.
"""

from __future__ import annotations

from dataclasses import dataclass

from voicechat.settings import ChunkingSettings

SENTENCE_MARKS = frozenset("。！？!?…．")
CLAUSE_MARKS = frozenset("，、；：,;:")
CLOSERS = frozenset("\"'”’」』）)]】》〉")
FULLWIDTH_DIGITS = frozenset("０１２３４５６７８９")
ABBREVIATIONS = frozenset(
    ("dr", "mr", "mrs", "ms", "prof", "sr", "jr", "st", "vs", "e.g", "i.e", "u.s", "u.k",
     "a.m", "p.m", "no", "fig", "approx", "inc", "ltd", "co", "mt", "dept", "est", "vol",
     "ch", "cf", "al")
)  # fmt: skip
HARD_LIMIT = 4
"""A single word longer than ``HARD_LIMIT * max_chars`` is cut anyway (memory stays bounded)."""

WAIT = -1
NO = -2


@dataclass(frozen=True)
class Chunk:
    """One piece of raw reply text, exactly as received."""

    text: str
    """The raw text; all chunks of a reply, concatenated, are the reply."""
    sentence_end: bool
    """True when the piece ends a sentence, a line or the reply (not a clause)."""


def is_cjk(ch: str) -> bool:
    """Chinese/Japanese ideographs and kana (the characters that are spoken as syllables)."""
    code = ord(ch)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x3040 <= code <= 0x30FF
        or 0xF900 <= code <= 0xFAFF
        or 0x20000 <= code <= 0x2FFFF
    )


def _word_char(ch: str) -> bool:
    return ch.isalnum() and not is_cjk(ch)


class Chunker:
    """Streaming cutter; one instance per reply."""

    def __init__(self, settings: ChunkingSettings | None = None) -> None:
        self.settings = settings or ChunkingSettings()
        self._reset()

    def _reset(self) -> None:
        self._buf = ""
        self._first = True
        self._line_start = True
        """``_buf`` starts at the beginning of a line."""
        self._restart()

    def _restart(self) -> None:
        self._pos = 0
        """Next index of ``_buf`` to examine; everything before it holds no cut."""
        self._last_clause = -1
        self._last_space = -1
        self._cjk = 0
        """Chinese characters in ``_buf[:_pos]``."""
        self._words = 0
        """Latin words started in ``_buf[:_pos]``."""

    def feed(self, delta: str) -> list[Chunk]:
        self._buf += delta
        return self._scan(final=False)

    def flush(self) -> list[Chunk]:
        chunks = self._scan(final=True)
        if self._buf:
            chunks.append(Chunk(self._buf, True))
        self._reset()
        return chunks

    # --- scanning ----------------------------------------------------------------------------

    def _scan(self, final: bool) -> list[Chunk]:
        chunks: list[Chunk] = []
        buf = self._buf
        while self._pos < len(buf):
            i = self._pos
            if i >= self.settings.max_chars:
                cut = self._forced_cut(i)
                if cut > 0:
                    chunks.append(self._cut(cut, False))
                    buf = self._buf
                    continue
            ch = buf[i]
            end, kind = self._decide(i, ch, final)
            if end == WAIT:
                break
            self._advance(i, max(end, i + 1))
            if end >= 0 and self._long_enough(end, kind):
                chunks.append(self._cut(end, kind != "clause"))
                buf = self._buf
        return chunks

    def _advance(self, start: int, stop: int) -> None:
        buf = self._buf
        for j in range(start, stop):
            ch = buf[j]
            if ch.isspace():
                self._last_space = j
            elif ch in CLAUSE_MARKS:
                self._last_clause = j
            elif is_cjk(ch):
                self._cjk += 1
            elif _word_char(ch) and (j == 0 or not _word_char(buf[j - 1])):
                self._words += 1
        self._pos = stop

    def _cut(self, end: int, sentence: bool) -> Chunk:
        chunk = Chunk(self._buf[:end], sentence)
        self._buf = self._buf[end:]
        self._first = False
        self._line_start = chunk.text.endswith("\n")
        self._restart()
        return chunk

    def _long_enough(self, end: int, kind: str) -> bool:
        text = self._buf[:end]
        if not text.strip():
            return False
        if kind == "line":
            return True
        if self._first and (self.settings.mode == "clause" or kind == "clause"):
            if self._cjk:
                return self._cjk + self._words >= self.settings.first_min_chars
            return self._words >= self.settings.first_min_words
        if kind == "clause":
            return True
        return sum(1 for c in text if not c.isspace()) >= self.settings.min_chars

    def _decide(self, i: int, ch: str, final: bool) -> tuple[int, str]:
        """Where a piece ending at ``ch`` would end (an index, ``NO`` or ``WAIT``), and
        what ends it: ``line``, ``sentence`` or ``clause``."""
        if ch == "\n":
            return i + 1, "line"
        if ch in SENTENCE_MARKS or ch == ".":
            return self._sentence_end(i, final), "sentence"
        if ch in CLAUSE_MARKS and self._first and self.settings.mode == "clause":
            return self._clause_end(i, final), "clause"
        return NO, ""

    def _clause_end(self, i: int, final: bool) -> int:
        buf, ch = self._buf, self._buf[i]
        if ch in ",:，：":
            if i + 1 >= len(buf):
                return i + 1 if final else WAIT  # the next character decides
            nxt = buf[i + 1]
            if i > 0 and _is_digit(buf[i - 1]) and _is_digit(nxt):
                return NO  # 1,000  3:30  １，０００
            if ch == ":" and nxt == "/":
                return NO  # http://
        return i + 1

    def _sentence_end(self, i: int, final: bool) -> int:
        buf = self._buf
        j = i
        while j < len(buf) and (buf[j] in SENTENCE_MARKS or buf[j] == "."):
            j += 1
        marks = buf[i:j]
        while j < len(buf) and buf[j] in CLOSERS:
            j += 1
        if j >= len(buf) and not final:
            return WAIT  # a closer or another mark may follow
        after = buf[j] if j < len(buf) else ""
        if marks[0] in ".?!" and after and not after.isspace() and self._in_url(i):
            return NO  # https://example.com/a?b=1
        dots = marks.strip(".") == "" and "…" not in marks
        if marks == "." or marks == "．":
            if after and _word_char(after) and j == i + 1:
                return NO  # 3.14  main.py  v1.2.3  a@b.com
            if self._abbreviation(i) or self._list_number(i):
                return NO
        if dots or "…" in marks or marks == ".":
            # The sentence may go on (lower case after an ellipsis or an abbreviation-like
            # word): look past the spaces at the next visible character.
            k = j
            while k < len(buf) and buf[k] in " \t":
                k += 1
            if k >= len(buf) and not final:
                return WAIT
            nxt = buf[k] if k < len(buf) else ""
            if nxt and nxt.islower() and not is_cjk(nxt):
                return NO
            if nxt and is_cjk(nxt) and k == j and marks != ".":
                return NO  # 然后……他走了: a pause, not an end
        elif marks[0] in "!?" and after and _word_char(after) and j == i + len(marks):
            return NO  # Yahoo!Japan, a?b
        return j

    def _abbreviation(self, i: int) -> bool:
        buf = self._buf
        k = i
        while k > 0 and not buf[k - 1].isspace() and buf[k - 1] not in "(\"'“‘":
            k -= 1
            if i - k > 12:
                return False
        word = buf[k:i]
        if len(word) == 1 and word.isupper():
            return True  # an initial: J. K. Rowling
        return word.lower() in ABBREVIATIONS

    def _list_number(self, i: int) -> bool:
        buf = self._buf
        k = i
        while k > 0 and buf[k - 1].isdigit() and i - k < 3:
            k -= 1
        if k == i:
            return False
        line_start = buf.rfind("\n", 0, k) + 1
        if line_start == 0 and not self._line_start:
            return False
        return buf[line_start:k].strip() == ""

    def _in_url(self, i: int) -> bool:
        buf = self._buf
        k = max(self._last_space + 1, buf.rfind("\n", 0, i) + 1, i - 300, 0)
        token = buf[k:i]
        return "://" in token or token.startswith("www.")

    def _forced_cut(self, i: int) -> int:
        """Cut a long piece without sentence marks: clause mark, space, CJK boundary."""
        for cut in (self._last_clause + 1, self._last_space + 1):
            if cut > 0 and self._buf[:cut].strip():
                return cut
        prev, cur = self._buf[i - 1], self._buf[i]
        if not (_word_char(prev) and _word_char(cur)):
            return i
        if i >= HARD_LIMIT * self.settings.max_chars:
            return i
        return 0


def _is_digit(ch: str) -> bool:
    return ch.isdigit() or ch in FULLWIDTH_DIGITS


def split(text: str, settings: ChunkingSettings | None = None) -> list[Chunk]:
    """All chunks of a complete text."""
    chunker = Chunker(settings)
    return [*chunker.feed(text), *chunker.flush()]
