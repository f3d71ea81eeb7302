"""Everything voicechat shows: the reply on stdout, status and warnings on stderr.

Reply text goes to stdout and nothing else does, so ``voicechat ask ... > file`` captures
exactly the reply. On a terminal the reply is rendered as Markdown while it streams: the
paragraph being written lives in a small `rich.live.Live` region and is printed for good
once it is complete, so long replies are never clipped and nothing redraws what is already
on screen. When stdout is not a terminal the text is written as it arrives, unchanged.
rich is imported only for the terminal case (``prefetch`` warms it up in the background
while the request is in flight).

This is the one door to stdout and stderr, so it is where the guarantees live: every line
has its escape sequences and control characters removed (newline and tab kept where text
keeps them), known secrets masked (`safe`), and a status line is one line of bounded length
(`voicechat.redact.short`). A hostile server's text can neither redraw the screen nor leak a key.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from voicechat.backends import Outcome
from voicechat.errors import OutputError
from voicechat.redact import MAX_LINE, scrub, short, strip_controls
from voicechat.signals import INTERRUPT_TOLD

FENCES = ("```", "~~~")
REFRESH_S = 0.08
"""Least time between redraws of the live paragraph: cheap on the Jetson's CPU."""
WAIT_SHOWN_AFTER_S = 1.0
"""A first token later than this gets a "waiting for MODEL" line (a warm model answers
sooner; loading a 7B model from storage takes seconds, which would look like a hang)."""
WAIT_TICK_S = 0.25


def safe(text: str) -> str:
    """What may reach the terminal: no escape codes, no control characters, no known secret.

    >>> safe("\\x1b[31mred\\x1b[0m and\\tplain https://bob:hunter2@host/")
    'red and\\tplain https://***@host/'
    """
    return scrub(strip_controls(text))


class OutputClosed(Exception):
    """stdout was closed by the reader (``voicechat ask ... | head``)."""


class Terminal:
    """The only writer to stdout/stderr."""

    def __init__(
        self,
        out: TextIO | None = None,
        err: TextIO | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.out = out if out is not None else sys.stdout  # None when started with >&-
        self.err = err if err is not None else sys.stderr
        env = os.environ if env is None else env
        self.no_color = "NO_COLOR" in env
        self.rich = isatty(self.out) and env.get("TERM") != "dumb"
        self._tty_err = isatty(self.err) and env.get("TERM") != "dumb"
        self._ansi = self._tty_err and not self.no_color
        self._ansi_out = self.rich and not self.no_color
        self._lock = threading.Lock()
        """Status lines come from the speech threads too: one line at a time."""
        self._waiting: Waiting | None = None
        """The transient waiting line of the reply in progress, if one may be drawn."""

    # --- stderr --------------------------------------------------------------------------

    def error(self, message: str) -> None:
        self._status("error: ", message, "31")

    def warn(self, message: str) -> None:
        self._status("warning: ", message, "33")

    def info(self, message: str) -> None:
        self._status("", message, "2")

    def interrupted(self) -> None:
        """Say that the command ends because of Ctrl+C, and remember it for the process
        (`voicechat.signals.INTERRUPT_TOLD`): the entry point then does not say it again."""
        INTERRUPT_TOLD.set()
        self.info("interrupted")

    def note(self, message: str) -> None:
        """Status inside an interactive session, where the program's name is noise."""
        self._status("", message, "2", prefix="")

    def _status(self, label: str, message: str, color: str, prefix: str = "voicechat: ") -> None:
        line = f"{prefix}{label}{short(message, MAX_LINE)}"
        if self._ansi:
            line = f"\x1b[{color}m{line}\x1b[0m"
        with self._lock:
            if self._waiting is not None:
                self._waiting.erase()  # redrawn below the status line on its next tick
            _write_quietly(self.err, line + "\n")

    def check(self, name: str, ok: bool | None, detail: str, fix: str = "") -> None:
        """One row of ``voicechat doctor`` on stdout, printed as soon as it is known."""
        mark, color = {True: ("ok", "32"), False: ("FAIL", "31"), None: ("--", "2")}[ok]
        if self._ansi_out:
            mark = f"\x1b[{color}m{mark:<4}\x1b[0m"
        self._emit(f"{mark:<4}  {short(name, MAX_LINE):<12}  {short(detail, MAX_LINE)}")
        if fix:
            self._emit(f"{'':<4}  {'':<12}  fix: {short(fix, MAX_LINE)}")

    def stats(self, outcome: Outcome | None, first_audio_s: float | None = None) -> None:
        """One line of timing on stderr (``--stats``)."""
        self.info(format_stats(outcome, first_audio_s))

    # --- stdout --------------------------------------------------------------------------

    def prefetch(self) -> None:
        """Import rich's renderer in the background while the request is in flight."""
        if self.rich:
            threading.Thread(target=_import_rich, name="voicechat-prefetch", daemon=True).start()

    def reply_view(self, model: str = "the model") -> ReplyView:
        """Where one reply's text goes as it streams.

        Until its first text (or its end), a "waiting for MODEL" line may show on stderr
        when that is a terminal; the view's first ``write`` or ``end`` removes it.
        """
        view = RichView(self.out, self.no_color) if self.rich else PlainView(self.out)
        if self._tty_err:
            self._waiting = Waiting(self.err, self._lock, f"waiting for {short(model, 80)}")
            view.before_text = self._end_waiting
        return view

    def _end_waiting(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.stop()

    def print(self, text: str = "") -> None:
        """A line of program output (lists, tables, dry-run chunks) on stdout."""
        self._emit(safe(text))

    def _emit(self, line: str) -> None:
        _write_out(self.out, line + "\n")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Aligned columns: readable on a terminal, parseable in a pipe."""
        rows = [[short(cell, MAX_LINE) for cell in row] for row in rows]
        widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
        for row in [headers, *rows]:
            cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
            self.print("  ".join(cells).rstrip())


class ReplyView:
    """One reply on stdout."""

    before_text: Callable[[], None] | None = None
    """Called once, before the first text or the end (removes the waiting line)."""

    def _text_comes(self) -> None:
        if self.before_text is not None:
            callback, self.before_text = self.before_text, None
            callback()

    def write(self, delta: str) -> None:
        raise NotImplementedError

    def end(self) -> None:
        """The reply is over (or was cut): leave the cursor on a fresh line."""
        raise NotImplementedError


class PlainView(ReplyView):
    """Text exactly as it arrives: what a pipe or a file should get."""

    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self._last = "\n"
        self._failed = False

    def write(self, delta: str) -> None:
        self._text_comes()
        delta = strip_controls(delta)
        try:
            _write_out(self.out, delta)
        except (OutputClosed, OutputError):
            self._failed = True  # the end of the reply writes nothing more
            raise
        self._last = delta[-1:] or self._last

    def end(self) -> None:
        self._text_comes()
        if self._last != "\n" and not self._failed:
            self.write("\n")


class RichView(ReplyView):
    """Markdown rendering while streaming, one paragraph (or code block) at a time."""

    def __init__(self, out: TextIO, no_color: bool) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=out, no_color=no_color, highlight=False)
        self._live = Live(
            console=self.console,
            auto_refresh=False,
            transient=True,
            vertical_overflow="visible",
        )
        self._blocks = Blocks(max_lines=max(self.console.height - 4, 4))
        self._drawn = 0.0
        self._started = False

    def write(self, delta: str) -> None:
        self._text_comes()
        delta = strip_controls(delta)  # the Markdown renderer would pass OSC/CSI through
        if not self._started:
            self._live.start()
            self._started = True
        for block in self._blocks.feed(delta):
            self._commit(block)
        now = time.monotonic()
        if now - self._drawn >= REFRESH_S or "\n" in delta:
            self._draw()
            self._drawn = now

    def end(self) -> None:
        self._text_comes()
        rest = self._blocks.flush()
        if self._started:
            self._live.update("", refresh=True)
            self._live.stop()
        if rest:
            self._print(rest)

    def _commit(self, block: str) -> None:
        self._live.update("", refresh=True)
        self._print(block)

    def _draw(self) -> None:
        self._live.update(_markdown(self._blocks.pending), refresh=True)

    def _print(self, block: str) -> None:
        if block.strip():
            self.console.print(_markdown(block))


class Waiting:
    """A transient "waiting for MODEL... 3 s" line on stderr until the reply's first text.

    Drawn only after `WAIT_SHOWN_AFTER_S`, redrawn 4 times a second (the thread otherwise
    sleeps: the Jetson's CPU is busy making the tokens), erased without a trace.
    """

    FRAMES = "|/-\\"

    def __init__(self, err: TextIO, lock: threading.Lock, label: str) -> None:
        self.err = err
        self.label = label
        self._lock = lock
        self._stop = threading.Event()
        self._shown = False
        self._since = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="voicechat-waiting", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._stop.wait(WAIT_SHOWN_AFTER_S):
            return
        frame = 0
        while True:
            with self._lock:
                if self._stop.is_set():
                    return
                waited = time.monotonic() - self._since
                spinner = self.FRAMES[frame % len(self.FRAMES)]
                try:
                    _write_quietly(self.err, f"\r\x1b[2K{spinner} {self.label}... {waited:.0f} s")
                except UnicodeEncodeError:
                    return  # a terminal that cannot show the model's name: no waiting line
                self._shown = True
            frame += 1
            if self._stop.wait(WAIT_TICK_S):
                return

    def erase(self) -> None:
        """Clear the line (the caller holds the terminal's lock)."""
        if self._shown:
            _write_quietly(self.err, "\r\x1b[2K")
            self._shown = False

    def stop(self) -> None:
        """Stop drawing and leave no trace; returns once the thread is gone."""
        self._stop.set()
        self._thread.join()
        with self._lock:
            self.erase()


class Blocks:
    """Cut streamed Markdown into blocks that render the same alone as in the whole.

    A block ends at a blank line outside code fences, or at a closing fence. A block that
    grows taller than ``max_lines`` is cut at its last complete line (a code block is closed
    and reopened around the cut) so the live region never outgrows the screen.
    """

    def __init__(self, max_lines: int = 40) -> None:
        self.max_lines = max_lines
        self.pending = ""
        self._fence: str | None = None
        """The opening fence line while inside a code block."""
        self._lines = 0

    def feed(self, delta: str) -> list[str]:
        done: list[str] = []
        start = len(self.pending)
        self.pending += delta
        while True:
            newline = self.pending.find("\n", start)
            if newline < 0:
                return done
            line_start = self.pending.rfind("\n", 0, newline) + 1
            line = self.pending[line_start:newline].strip()
            start = newline + 1
            self._lines += 1
            cut = self._after_line(line)
            if cut:
                done.append(self.pending[:start])
                self.pending = self.pending[start:]
                start = 0
                self._lines = 0
            elif self._lines >= self.max_lines:
                block = self.pending[:start]
                self.pending = self.pending[start:]
                start = 0
                self._lines = 0
                if self._fence is not None:
                    block += self._fence[:3] + "\n"
                    self.pending = self._fence + "\n" + self.pending
                    start = len(self._fence) + 1
                    self._lines = 1
                done.append(block)

    def _after_line(self, line: str) -> bool:
        """Track fences; True when the block ends after this line."""
        if self._fence is None:
            if line.startswith(FENCES):
                self._fence = line
                return False
            return line == "" and self.pending.strip() != ""
        if line.startswith(self._fence[:3]) and line.strip("`~") == "":
            self._fence = None
            return True
        return False

    def flush(self) -> str:
        rest, self.pending = self.pending, ""
        return rest


def _markdown(text: str) -> object:
    from rich.markdown import Markdown

    return Markdown(text)


def _import_rich() -> None:
    import rich.console
    import rich.live
    import rich.markdown  # noqa: F401


def _write_out(stream: TextIO | None, text: str) -> None:
    """Write to stdout: a reader gone is `OutputClosed`; a full disk or a closed stdout is
    an `OutputError` (one line on stderr and its exit code, not a traceback)."""
    if stream is None:
        raise OutputError("stdout is closed: run it with stdout open (a terminal, a file, a pipe)")
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        raise OutputClosed from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise OutputError(f"cannot write to stdout: {reason}") from None


def _write_quietly(stream: TextIO | None, text: str) -> None:
    """Write to stderr; a closed or full stderr must not break the reply nor its exit code."""
    try:
        stream.write(text)  # type: ignore[union-attr]
        stream.flush()  # type: ignore[union-attr]
    except (OSError, ValueError, AttributeError):
        pass


def isatty(stream: object) -> bool:
    """True for a terminal; False for anything else, also a closed or missing stream."""
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


def format_stats(outcome: Outcome | None, first_audio_s: float | None = None) -> str:
    """``first token 0.42 s · first audio 0.61 s · 12.3 tokens/s · 96 tokens · 8.1 s total``."""
    if outcome is None:
        return "no stats: the reply did not complete"
    parts = []
    if outcome.first_token_s is not None:
        parts.append(f"first token {outcome.first_token_s:.2f} s")
    if first_audio_s is not None:
        parts.append(f"first audio {first_audio_s:.2f} s")
    if outcome.tokens_per_s is not None:
        source = "measured" if outcome.measured else "server"
        parts.append(f"{outcome.tokens_per_s:.1f} tokens/s ({source})")
    if outcome.tokens is not None:
        parts.append(f"{outcome.tokens} tokens")
    parts.append(f"{outcome.total_s:.2f} s total")
    parts.append(f"finish: {outcome.finish}")
    return " · ".join(parts)
