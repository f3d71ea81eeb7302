"""When the samples of an audio stream were captured: from their count, not their arrival.

A time stamp taken as a block arrives is late by a varying amount: the sound server hands
audio over in fragments (a burst of blocks at once), and the thread is scheduled late (a
busy interpreter holds the GIL for a tenth of a second at times). Stamping each block with
its arrival moves the audio back and forth under the echo canceller, and a burst larger
than its tolerance looked like lost audio: it measured the echo's delay again and again
and never listened. Counting samples gives a steady clock: the echo canceller's adaptive
filter is tuned to where the echo sits, and even a few milliseconds' move spoils it.
"""

from __future__ import annotations

import math

WINDOW_S = 0.5
"""Audio over which every block arriving more than `JUMP_S` late means the stream's time
moved on: longer than the bursts a sound server delivers in by default."""
JUMP_S = 0.1
"""Smallest move of the anchor (the first block's arrival): audio lost by the device, or a
clock drift that added up. Smaller changes of arrival times are delivery, not capture
(PulseAudio's null sink delivers ~30 ms later once a stream plays into it): the clock stays
put, as the echo canceller needs (a move of a few milliseconds spoils its filter)."""


class SampleClock:
    """Capture time of each block of a stream, from the count of samples before it.

    >>> clock = SampleClock(100)
    >>> [round(clock.end_of(10, at), 2) for at in (1.0, 1.3, 1.3, 1.3, 1.4)]
    [1.0, 1.1, 1.2, 1.3, 1.4]

    Blocks that come in a burst keep their places (above: three at 1.3), and so does a
    stream that is delivered 50 ms later from some moment on:

    >>> [round(clock.end_of(10, 1.55 + i / 10), 2) for i in range(6)][-1]
    2.0

    A whole window of blocks later than `JUMP_S` (here 0.45 s: that much audio was lost
    on the way) moves the anchor:

    >>> [round(clock.end_of(10, 2.55 + i / 10), 2) for i in range(10)][-1]
    3.45
    >>> clock.moved
    1
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._window = max(1, round(WINDOW_S * rate))
        self._t0: float | None = None
        """When sample 0 was captured."""
        self._count = 0
        self._seen = 0
        """Samples in the current window."""
        self._least = math.inf
        """Smallest lateness in the current window."""
        self.moved = 0
        """Times the anchor moved (diagnostics)."""

    def end_of(self, n: int, at: float) -> float:
        """When the last of the next ``n`` samples was captured; ``at``: when they arrived."""
        self._count += n
        if self._t0 is None:
            self._t0 = at - self._count / self.rate
        lateness = at - (self._t0 + self._count / self.rate)
        if lateness < -JUMP_S:  # the first block came late: this one is the better anchor
            self._t0 += lateness
            self.moved += 1
            lateness = 0.0
        self._least = min(self._least, lateness)
        self._seen += n
        if self._seen >= self._window:
            if self._least > JUMP_S:
                self._t0 += self._least
                self.moved += 1
            self._seen, self._least = 0, math.inf
        return self._t0 + self._count / self.rate
