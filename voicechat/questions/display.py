"""What speech input shows while it works, as plain strings (the CLI writes them to stderr)."""

from __future__ import annotations

from typing import TextIO

BAR = 20
FLOOR_DB = -60.0


def progress_line(done: int, total: int) -> str:
    """One redrawable line for assembling the recognition model.

    >>> progress_line(50, 100)
    'preparing the speech recognition model (once): [##########          ]  50%'
    """
    frac = done / total if total else 1.0
    filled = round(frac * BAR)
    return (
        "preparing the speech recognition model (once): "
        f"[{'#' * filled}{' ' * (BAR - filled)}] {frac:4.0%}"
    )


def meter_line(db: float, elapsed: float, speaking: bool, key_hint: str = "") -> str:
    """The live recording line: a level bar and the elapsed time.

    >>> meter_line(-30.0, 1.25, True)
    'listening  1.2 s  [##########          ]  speech'
    """
    frac = min(1.0, max(0.0, (db - FLOOR_DB) / -FLOOR_DB))
    filled = round(frac * BAR)
    state = "speech" if speaking else ""
    line = f"listening {elapsed:4.1f} s  [{'#' * filled}{' ' * (BAR - filled)}]  {state}"
    if key_hint:
        line = f"{line:<49} {key_hint}"
    return line.rstrip()


class LiveLine:
    """A redrawable status line on a terminal's stderr (nothing when it is not a terminal)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = _isatty(stream)
        self.shown = False

    def __call__(self, line: str | None) -> None:
        if not self.enabled or (line is None and not self.shown):
            return
        self.stream.write("\r\x1b[K" + (line or ""))
        self.stream.flush()
        self.shown = line is not None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
