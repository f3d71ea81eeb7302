"""Cut a stream of text deltas into speakable pieces, as early as sense allows.

Pure text logic: no threads, no I/O. `Chunker.feed` takes each delta and returns the pieces
it completed; `flush` returns the rest at the end of the stream. The chunker is a state
machine that reads each character once, in order, and decides only on characters it has
seen: where the next character decides (is this ``.`` a decimal point? does ``”`` follow
``。``?), it waits for exactly that character. So the pieces never depend on how the text was
cut into deltas, and the work is linear: a character is examined at most twice, and the
pending text is bounded (about ``max_chars``; 4x that for one endless word), so appending a
delta never copies more than that.

Rules:

* A newline ends a piece (Markdown is read line by line); a piece is never only whitespace
  unless a run of whitespace exceeds ``max_chars``.
* Sentence marks ``。！？!?…`` and ``.`` end a sentence, together with repeated marks
  (``?!`` ``……`` ``...``) and the closing quotes, brackets and emphasis after them
  (``。”`` ``.)`` ``！**``).
* Not an end: ``.`` before a letter, digit or other ASCII character (3.14, 13.81万亿, v1.2.3,
  main.py, 192.168.0.1, a@b.com, ./run.sh); ``.`` after an abbreviation (Dr. e.g. etc. U.S.)
  or an initial (J. K.), after a list number at the start of a line (``1.``), or after
  ``No.`` before a number; Latin marks when the sentence goes on in lower case (an ellipsis
  in the middle of a sentence, ``"Why?" she asked``); an ellipsis straight before Chinese
  text (然后……他走了); ``!`` ``?`` glued to a word (Yahoo!Japan); any mark inside a URL.
* A full-width sentence mark (``。！？``, and ``．`` before a letter) followed straight by a
  Latin letter or digit ends the piece however short it is (……散射！Makes sense?): the
  reply switches language there, and ``min_chars`` would otherwise glue the two together.
* The first piece (``clause`` mode) may end at a clause mark ``，、；：,;:`` once it holds
  ``first_min_chars`` Chinese characters (words count too) or ``first_min_words`` words, so
  speech starts one clause in. Later pieces end at sentences; a sentence with fewer than
  ``min_chars`` visible characters merges with the next one. ``,`` ``:`` between digits
  (1,000 3:30 １，０００) and ``:`` before ``/`` (http://) are not clause marks.
* ``eager`` (the voice is about to fall silent, in ``clause`` mode): the piece may end at its
  last clause mark, or the next one, under the same length rule as the first piece. Only
  this depends on timing; without it the pieces depend on the text alone.
* A piece is cut at ``max_chars`` characters, and a run without clause marks already at
  ``max_chars`` counted in speaking time: a Chinese character weighs ``cjk_weight`` Latin
  characters (saying it takes ~3x as long), so unpunctuated Chinese is cut after a few dozen
  characters while a long sentence with commas stays whole. The cut goes at a clause mark or
  a space in the piece's second half, else after a function character (的 了 是 在 和 ...)
  in its second half, else between Chinese characters, else at any clause mark or space;
  never inside a Latin word, a number or a URL (unless one runs past 4x ``max_chars``).
"""

from __future__ import annotations

from dataclasses import dataclass

from voicechat.settings import ChunkingSettings

SENTENCE_MARKS = frozenset(".。！？!?…．｡‼⁇⁈⁉")
LATIN_MARKS = frozenset(".!?")
"""After these, whitespace and then a lower-case letter mean the sentence goes on."""
FULLWIDTH_ENDS = frozenset("。！？｡．‼⁇⁈⁉")
"""Sentence marks of CJK text: a Latin letter or digit straight after one starts a new piece."""
CLAUSE_MARKS = frozenset("，、；：,;:")
CLOSERS = frozenset("\"'”’」』）)]】》〉｣*_`")
"""Stay with the sentence mark before them (quotes, brackets, Markdown emphasis)."""
TOKEN_BREAKS = frozenset("([{<\"'")
"""Start a new token (for abbreviations and URLs), like whitespace and non-ASCII text."""
WORD_INNER = frozenset("'’-")
"""Inside a word (don't, well-known): the letters after them start no new word."""
JOINERS = frozenset(".,:/-_@'’%&=?#+~，：．")
"""Between word characters these glue one token (3.14 1,000 a@b.com): never cut beside them."""
ABBREVIATIONS = frozenset(
    ("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "u.s",
     "u.k", "u.n", "cf", "al", "approx", "dept", "mt", "ft", "gen", "col", "lt", "sgt", "capt",
     "gov", "rev", "hon", "esp", "viz", "ca")
)  # fmt: skip
"""A ``.`` after these never ends a sentence."""
NUMBER_ABBREVIATIONS = frozenset(("no", "nr", "vol", "fig", "ch", "p", "pp", "sec", "eq", "art"))
"""A ``.`` after these is no end when a number follows (``No. 5``), but ``I said no.`` is."""
FUNCTION_CHARS = frozenset("的了着过是在和与及或而但就也都还又把被给对从向让吗呢吧啊")
"""Common Chinese function characters: after one is a natural place to cut unpunctuated text."""
HARD_LIMIT = 4
"""One unbroken word longer than ``HARD_LIMIT * max_chars`` is cut anyway (memory stays bounded)."""
RUN_CAP = 32
"""Longest run of sentence marks (or of closers) kept together; more is cut anyway."""
SPACE_CAP = 8
"""Spaces after a Latin mark searched for the next word's case before deciding it is an end."""

# Scanner states.
_NORMAL, _CLAUSE, _MARKS, _CLOSING, _SPACES = range(5)
# Line states, for list numbers at the start of a line.
_LINE_START, _LINE_DIGITS, _LINE_OTHER = range(3)


@dataclass(frozen=True)
class Chunk:
    """One piece of raw reply text, exactly as received."""

    text: str
    """The raw text; all chunks of a reply, concatenated, are the reply."""
    sentence_end: bool
    """True when the piece ends a sentence, a line or the reply (not a clause or a long run)."""


@dataclass(frozen=True)
class _Snap:
    """A possible cut point in the current piece, with the piece's counts up to it."""

    at: int
    """Absolute offset just after the clause mark, whitespace or function character."""
    cjk: int
    """Chinese characters before it."""
    words: int
    """Latin words before it."""
    visible: int
    """Non-whitespace characters before it."""

    def after(self, cut: _Snap) -> _Snap:
        """The same point, counted from ``cut`` (the piece now starts there)."""
        return _Snap(
            self.at, self.cjk - cut.cjk, self.words - cut.words, self.visible - cut.visible
        )


def is_han(ch: str) -> bool:
    """Chinese characters (Han ideographs): what is read by a Chinese voice.

    >>> [is_han(c) for c in "天a。の"]
    [True, False, False, False]
    """
    code = ord(ch)
    if code < 0x3400:
        return False
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0xF900 <= code <= 0xFAFF
        or 0x20000 <= code <= 0x2FFFF
    )


def is_cjk(ch: str) -> bool:
    """Chinese/Japanese ideographs and kana (the characters that are spoken as syllables)."""
    code = ord(ch)
    if code < 0x3040:  # Latin, digits, punctuation: most characters of most replies
        return False
    return code <= 0x30FF or is_han(ch)  # kana, or Han


def _latin(ch: str) -> bool:
    """A letter or digit of a space-separated script: a cut beside another one splits a word."""
    return ch.isalnum() and not is_cjk(ch)


def _ascii_token(ch: str) -> bool:
    return ch.isascii() and ch.isprintable() and not ch.isspace() and ch != ""


def _digit(ch: str) -> bool:
    return ch.isdigit()  # also full-width ０-９


class Chunker:
    """Streaming cutter; one instance per reply."""

    def __init__(self, settings: ChunkingSettings | None = None) -> None:
        self.settings = settings or ChunkingSettings()
        self._max = max(1, self.settings.max_chars)
        self._cjk_extra = max(0.0, self.settings.cjk_weight - 1.0)
        """What a Chinese character weighs beyond one Latin character, in ``max_chars``."""
        self.examined = 0
        """Characters looked at so far, repeats included: the measure of work tests bound."""
        self._reset()

    def _reset(self) -> None:
        """The state at the start of a reply."""
        self._buf = ""
        """Text from the start of the current piece (or a little before) to the end of input."""
        self._base = 0
        """Absolute offset of ``_buf[0]``; all other offsets below are absolute."""
        self._pos = 0
        """Next character to examine."""
        self._start = 0
        """Where the current piece starts."""
        self._first = True
        """No piece with visible text has been cut yet."""
        self._eager = False
        """The voice is running dry: the next clause mark may end the piece."""
        self._state = _NORMAL
        # Text state before _pos (independent of where pieces were cut).
        self._p1 = self._p2 = ""
        """The two characters before ``_pos``."""
        self._line = _LINE_START
        self._line_digits = 0
        self._tok_start = 0
        """Start of the current token (URL, file name, abbreviation...)."""
        self._tok_url = False
        # A pending sentence end or clause mark.
        self._mark = 0
        """Where the pending marks start."""
        self._cut_at = 0
        """Where the pending piece would end (after its marks and closers)."""
        self._run = ""
        self._closers = 0
        self._spaces = 0
        self._mark_url = False
        self._mark_number_abbr = False
        self._new_piece()

    def _new_piece(self) -> None:
        self._cjk = 0
        self._words = 0
        self._visible = 0
        self._clause_snap: _Snap | None = None
        """After the piece's last clause mark."""
        self._space_snap: _Snap | None = None
        """After its last whitespace."""
        self._func_snap: _Snap | None = None
        """After its last Chinese function character (的 了 是 ...)."""

    def _snap(self) -> _Snap:
        return _Snap(self._pos, self._cjk, self._words, self._visible)

    def _too_long(self, pos: int, c: str) -> bool:
        """The piece reached ``max_chars``: in characters, or with ``c`` it would pass it in
        speaking time since its last clause mark (a long sentence with commas stays whole, a
        long run without is cut)."""
        if pos - self._start >= self._max:
            return True
        if pos == self._start:
            return False  # one character always fits
        run = self._length(pos + 1, self._cjk + is_cjk(c))
        clause = self._clause_snap
        if clause is not None:
            run -= self._length(clause.at, clause.cjk)
        return run > self._max

    def _length(self, at: int, cjk: int) -> float:
        """The piece's length up to ``at`` in Latin characters' speaking time."""
        return at - self._start + self._cjk_extra * cjk

    # --- public -------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Characters held: what each `feed` may copy, so tests bound it to prove linearity."""
        return len(self._buf)

    def feed(self, delta: str, *, eager: bool = False) -> list[Chunk]:
        """The pieces completed by this delta (often none).

        ``eager``: speech is about to run dry, so rather than wait for the sentence to end,
        end the piece at its last clause mark (or at the next one in ``delta``) when what
        comes before it is as long as a first piece must be. One such cut per call.
        """
        keep = self._start - self._base
        if keep > 0:  # drop emitted text so appending stays cheap
            self._buf = self._buf[keep:]
            self._base += keep
        self._buf += delta
        self._eager = eager and self.settings.mode == "clause"
        out = self._scan(final=False) if delta else []
        if self._eager and not out:
            self._take_clause(out)
        self._eager = False
        return out

    def flush(self) -> list[Chunk]:
        """The end of the stream: everything not yet returned."""
        chunks = self._scan(final=True)
        rest = self._buf[self._start - self._base :]
        if chunks and not rest:
            chunks[-1] = Chunk(chunks[-1].text, True)  # the end of the reply ends a sentence
        if rest:
            if chunks and not rest.strip():
                chunks[-1] = Chunk(chunks[-1].text + rest, True)  # trailing whitespace
            else:
                chunks.append(Chunk(rest, True))
        self._reset()  # ready for another reply
        return chunks

    # --- scanning -----------------------------------------------------------------------------

    def _scan(self, final: bool) -> list[Chunk]:
        out: list[Chunk] = []
        end = self._base + len(self._buf)
        while self._pos < end or (final and self._state != _NORMAL):
            c = self._buf[self._pos - self._base] if self._pos < end else ""
            self.examined += 1
            state = self._state
            if state == _NORMAL:
                self._normal(c, out)
            elif state == _CLAUSE:
                self._clause_decide(c, out)
            elif state == _SPACES:
                self._spaces_step(c, out)
            else:
                self._marks_step(c, out)
        return out

    def _consume(self, c: str) -> None:
        """Take ``c`` into the current piece, updating counts and the text state."""
        pos, p1 = self._pos, self._p1
        if c.isspace():
            self._space_snap = _Snap(pos + 1, self._cjk, self._words, self._visible)
            self._tok_start, self._tok_url = pos + 1, False
            if c == "\n":
                self._line, self._line_digits = _LINE_START, 0
        else:
            self._visible += 1
            if is_cjk(c):
                self._cjk += 1
                if c in FUNCTION_CHARS:
                    self._func_snap = _Snap(pos + 1, self._cjk, self._words, self._visible)
            elif _latin(c) and not _latin(p1) and p1 not in WORD_INNER:
                self._words += 1
            if c in TOKEN_BREAKS or not c.isascii():
                self._tok_start, self._tok_url = pos + 1, False
            elif c == "/" and p1 == "/" and self._p2 == ":":
                self._tok_url = True
            line = self._line
            if line == _LINE_START:
                if _digit(c):
                    self._line, self._line_digits = _LINE_DIGITS, 1
                elif c not in "#>*+-":
                    self._line = _LINE_OTHER
            elif line == _LINE_DIGITS:
                if _digit(c) and self._line_digits < 3:
                    self._line_digits += 1
                else:
                    self._line = _LINE_OTHER
        self._p2, self._p1 = p1, c
        self._pos = pos + 1

    def _normal(self, c: str, out: list[Chunk]) -> None:
        pos = self._pos
        if self._too_long(pos, c) and self._forced_cut(c, out):
            return
        if c == "\n":
            self._consume(c)
            if self._visible:
                self._emit(self._pos, True, out)
        elif c in SENTENCE_MARKS:
            if c == "." and self._dot_is_not_a_mark():
                self._consume(c)
                return
            self._mark, self._run, self._closers, self._spaces = pos, c, 0, 0
            self._mark_url = self._tok_url
            self._mark_number_abbr = c == "." and self._token(pos).lower() in NUMBER_ABBREVIATIONS
            self._consume(c)
            self._cut_at = self._pos
            self._state = _MARKS
        elif c in CLAUSE_MARKS and not self._tok_url:
            before = self._p1
            self._mark, self._run = pos, c
            self._consume(c)
            if (c in ",，:：" and _digit(before)) or (c == ":" and _latin(before)):
                self._state = _CLAUSE  # 1,000 3:30 http://: the next character decides
            else:
                self._clause_ok(out)
        else:
            self._consume(c)

    def _dot_is_not_a_mark(self) -> bool:
        """A ``.`` that is part of a list number or an abbreviation: nothing to decide."""
        if self._line == _LINE_DIGITS:
            return True  # "1." at the start of a line
        word = self._token(self._pos)
        if len(word) == 1 and "A" <= word <= "Z" and word != "I":
            return True  # an initial: J. K. Rowling
        return word.lower() in ABBREVIATIONS

    def _token(self, pos: int) -> str:
        """The token just before ``pos`` if it is short enough to be an abbreviation."""
        start = self._tok_start
        if pos - start > 8 or start < self._base:
            return ""
        return self._buf[start - self._base : pos - self._base]

    # --- clause marks -------------------------------------------------------------------------

    def _clause_decide(self, c: str, out: list[Chunk]) -> None:
        self._state = _NORMAL
        mark = self._run
        if c and ((_digit(c) and mark in ",，:：") or (mark == ":" and c == "/")):
            return  # 1,000  3:30  http://  -- c is examined again in the normal state
        self._clause_ok(out)

    def _clause_ok(self, out: list[Chunk]) -> None:
        """A clause mark just before ``_pos`` is real: remember it; maybe end the first piece."""
        self._clause_snap = self._snap()
        early = (self._first and self.settings.mode == "clause") or self._eager
        if early and self._first_long_enough():
            self._emit(self._pos, False, out)

    def _first_long_enough(self, cjk: int | None = None, words: int | None = None) -> bool:
        """Whether the piece so far (or up to a snapshot's counts) may end at a clause mark."""
        cjk = self._cjk if cjk is None else cjk
        words = self._words if words is None else words
        s = self.settings
        if cjk:
            return cjk + words >= s.first_min_chars
        return words >= s.first_min_words

    def _take_clause(self, out: list[Chunk]) -> None:
        """Eager: end the piece at its last clause mark, if the text before it is long enough."""
        snap = self._clause_snap
        if self._state != _NORMAL or snap is None or snap.at <= self._start:
            return
        if self._first_long_enough(snap.cjk, snap.words):
            self._emit(snap.at, False, out)

    # --- sentence marks -----------------------------------------------------------------------

    def _marks_step(self, c: str, out: list[Chunk]) -> None:
        """After sentence marks (state ``_MARKS``) or their closers (``_CLOSING``)."""
        if c in SENTENCE_MARKS and self._state == _MARKS and len(self._run) < RUN_CAP:
            self._run += c
            self._consume(c)
            self._cut_at = self._pos
        elif c in CLOSERS and self._closers < RUN_CAP:
            self._closers += 1
            self._state = _CLOSING
            self._consume(c)
            self._cut_at = self._pos
        else:
            self._decide(c, out)

    def _decide(self, c: str, out: list[Chunk]) -> None:
        """The first character after the marks and closers decides (``""`` at the end)."""
        if not c:
            return self._sentence_end(out)
        if c == "\n":
            return self._sentence_end_with_newline(out)
        run = self._run
        latin = any(m in LATIN_MARKS for m in run)
        ellipsis = "…" in run or run.count(".") >= 2
        if c.isspace():
            if (latin or ellipsis) and not self._mark_url:
                self._state = _SPACES
                self._spaces = 1
                self._consume(c)
                return None
            return self._sentence_end(out)
        fullwidth = any(m in FULLWIDTH_ENDS for m in run) and not (run == "．" and _digit(c))
        if fullwidth and _latin(c) and self._visible > len(run) + self._closers:
            self._state = _NORMAL  # 散射！Makes sense?  (but ３．１４ stays a number)
            return self._emit(self._cut_at, True, out)
        if not self._closers:
            if self._mark_url and c not in CLOSERS:
                return self._not_an_end()  # https://example.com/a?b=1
            if run in (".", "．") and (c.isascii() or _latin(c)):
                return self._not_an_end()  # 3.14 main.py v1.2.3 ./run.sh ３．１４
            if ellipsis and (is_cjk(c) or c.islower()):
                return self._not_an_end()  # 然后……他走了  wait...what
            if latin and _latin(c) and all(m in "!?" for m in run):
                return self._not_an_end()  # Yahoo!Japan
        return self._sentence_end(out)

    def _spaces_step(self, c: str, out: list[Chunk]) -> None:
        """Whitespace after Latin marks: the next visible character's case decides."""
        if not c:
            self._state = _NORMAL
            self._emit_if_long(self._pos, out)  # keep the trailing spaces
        elif c == "\n":
            self._sentence_end_with_newline(out)
        elif c.isspace():
            if self._spaces >= SPACE_CAP:
                self._sentence_end(out)
            else:
                self._spaces += 1
                self._consume(c)
        elif c.islower() or (_digit(c) and self._mark_number_abbr):
            self._not_an_end()  # "Why?" she asked. / No. 5
        else:
            self._sentence_end(out)

    def _not_an_end(self) -> None:
        self._state = _NORMAL

    def _sentence_end(self, out: list[Chunk]) -> None:
        self._state = _NORMAL
        self._emit_if_long(self._cut_at, out)

    def _sentence_end_with_newline(self, out: list[Chunk]) -> None:
        self._state = _NORMAL
        self._consume("\n")
        self._emit(self._pos, True, out)

    def _emit_if_long(self, cut: int, out: list[Chunk]) -> None:
        if self._first and self.settings.mode == "clause":
            long_enough = self._first_long_enough()
        else:
            long_enough = self._visible >= self.settings.min_chars
        if long_enough:
            self._emit(cut, True, out)

    # --- cutting ------------------------------------------------------------------------------

    def _forced_cut(self, c: str, out: list[Chunk]) -> bool:
        """The piece reached ``max_chars`` without a sentence end: cut it somewhere sane."""
        pos, start = self._pos, self._start
        half = self._max / 2
        clause, space, func = self._clause_snap, self._space_snap, self._func_snap

        def late(snap: _Snap | None) -> bool:
            return snap is not None and self._length(snap.at, snap.cjk) >= half

        candidates = []
        if clause and late(clause):
            candidates.append(clause.at)
        if space and late(space) and space.visible:
            candidates.append(space.at)
        if func and late(func) and func.at < pos and self._can_cut_before(self._char(func.at)):
            candidates.append(func.at)  # 我们今天讨论的|问题
        if self._visible and self._can_cut_before(c):
            candidates.append(pos)
        if clause:
            candidates.append(clause.at)
        if space and space.visible:
            candidates.append(space.at)
        if not candidates and (not self._visible or pos - start >= HARD_LIMIT * self._max):
            candidates.append(pos)  # only whitespace, or one endless word
        if not candidates:
            return False
        self._emit(candidates[0], False, out)
        return True

    def _char(self, at: int) -> str:
        return self._buf[at - self._base]

    def _can_cut_before(self, c: str) -> bool:
        """Whether a cut between the previous character and ``c`` keeps words and numbers whole."""
        p1, p2 = self._p1, self._p2
        if self._tok_url and not c.isspace():
            return False
        if _ascii_token(p1) and _ascii_token(c):
            return False  # one Latin token: a word, number, path, URL or e-mail address
        if _latin(c) and (_latin(p1) or (p1 in JOINERS and _latin(p2))):
            return False
        return not (_latin(p1) and c in JOINERS)

    def _emit(self, cut: int, sentence_end: bool, out: list[Chunk]) -> None:
        """Cut the current piece at ``cut`` (``_pos`` or an earlier offset)."""
        text = self._buf[self._start - self._base : cut - self._base]
        out.append(Chunk(text, sentence_end))
        self._start = cut
        self._eager = False  # one early cut is what the voice needed
        if text.strip():
            self._first = False
        # Counts for the text after the cut, from the snapshots taken at the cut points.
        now = self._snap()
        snaps = (self._clause_snap, self._space_snap, self._func_snap)
        at = next((snap for snap in snaps if snap and snap.at == cut), None)
        if cut == self._pos:
            self._new_piece()
            return
        if at is None:  # cut at a sentence end: only whitespace follows it
            at = _Snap(cut, now.cjk, now.words, now.visible)
        self._new_piece()
        rest = now.after(at)
        self._cjk, self._words, self._visible = rest.cjk, rest.words, rest.visible
        clause, space, func = (s.after(at) if s and s.at > cut else None for s in snaps)
        self._clause_snap, self._space_snap, self._func_snap = clause, space, func


def split(text: str, settings: ChunkingSettings | None = None) -> list[Chunk]:
    """All chunks of a complete text."""
    chunker = Chunker(settings)
    return [*chunker.feed(text), *chunker.flush()]
