"""The hand-off between two threads of the speech pipeline (text -> synth worker -> playback).

One `Stage` is a bounded queue plus what both speech threads need around it, behind ONE
condition variable, so every event (an item, room, an interrupt, a fault, stop) wakes
whoever waits for it and no wait needs a timeout to notice anything:

- ``generation``: `interrupt` bumps it and drops what is queued; the consumer compares the
  generation an item was queued under with the current one to drop work in progress.
- ``pending``: items accepted and not yet `done`; `join` waits for it to reach zero.
- `break_`: the consumer cannot work (a device or engine fault): queued items are dropped,
  `put` refuses at once, `join` returns.
- `stop`: `get` returns `STOP` (the sentinel), so the consumer thread ends.

::

    producer: put(item) --blocks while full--> [ items ] --get()--> consumer ... done()
    anyone:   interrupt() / break_() / stop() --notify--> every waiter re-checks
"""

from __future__ import annotations

import signal
import threading
from collections import deque
from collections.abc import Callable
from typing import Final, Generic, TypeVar

T = TypeVar("T")


class _Stop:
    def __repr__(self) -> str:
        return "STOP"


STOP: Final = _Stop()
"""What `Stage.get` returns once `Stage.stop` was called: the consumer thread ends."""


class Stage(Generic[T]):
    """A bounded queue of ``(generation, item)`` with interrupt, fault and stop built in.

    >>> s = Stage[str](maxsize=2)
    >>> s.put("a"), s.put("b"), s.pending
    (True, True, 2)
    >>> s.get()
    (0, 'a')
    >>> s.interrupt()  # drops "b"; "a" is still being worked on
    1
    >>> s.pending, s.put("c")
    (1, True)
    >>> s.done(); s.get(); s.done(); s.join(timeout=0)
    (1, 'c')
    True
    >>> s.stop(); s.get()
    STOP
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.cond = threading.Condition()
        """The one lock and condition of this stage; owners may wait on it for their own
        state (use `wait_for`) and must `notify` after changing such state."""
        self._items: deque[tuple[int, T]] = deque()
        self.generation = 0
        """Bumped by `interrupt`: work queued under an older generation is dropped."""
        self._pending = 0
        self.broken = False
        """Set by `break_`: the consumer cannot work; cleared by `mend`."""
        self.stopped = False
        self.current: T | None = None
        """The item the consumer got last and has not marked `done` yet."""
        self.wakeups = 0
        """How often `get` woke up without returning an item: idle cost, counted for tests."""

    # --- producer side -------------------------------------------------------------------

    def put(self, item: T, generation: int | None = None) -> bool:
        """Queue ``item``, blocking while the stage is full.

        ``generation`` is the one the caller saw when it decided on the item (default: the
        current one): after an interrupt since, the item is dropped. False when dropped
        (interrupted, broken or stopped).
        """
        with self.cond:
            if generation is None:
                generation = self.generation
            while True:
                if self.broken or self.stopped or generation != self.generation:
                    return False
                if len(self._items) < self.maxsize:
                    self._items.append((generation, item))
                    self._pending += 1
                    self.cond.notify_all()
                    return True
                self.cond.wait()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every accepted item is `done` (or the stage broke or stopped).

        False only when ``timeout`` passed first; the timeout is a deadline for watchdogs,
        never needed to notice an event.
        """
        with self.cond:
            return self.cond.wait_for(
                lambda: self._pending == 0 or self.broken or self.stopped, timeout
            )

    # --- consumer side -------------------------------------------------------------------

    def get(self) -> tuple[int, T] | _Stop:
        """The next ``(generation, item)``, blocking until there is one, or `STOP`."""
        with self.cond:
            while True:
                if self.stopped:
                    return STOP
                if self._items:
                    entry = self._items.popleft()
                    self.current = entry[1]
                    self.cond.notify_all()  # room for a blocked producer
                    return entry
                self.cond.wait()
                self.wakeups += 1

    def get_nowait(self) -> tuple[int, T] | _Stop | None:
        """Like `get`, but ``None`` at once when nothing is queued."""
        with self.cond:
            if self.stopped:
                return STOP
            if not self._items:
                return None
            entry = self._items.popleft()
            self.current = entry[1]
            self.cond.notify_all()
            return entry

    def done(self, count: int = 1) -> None:
        """The consumer finished (or dropped) ``count`` items it got."""
        with self.cond:
            self._pending = max(0, self._pending - count)
            self.current = None
            self.cond.notify_all()

    # --- anyone ----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Items accepted and not yet done (queued or being worked on)."""
        with self.cond:
            return self._pending

    def queued(self) -> list[T]:
        """A snapshot of the items waiting (not the one being worked on)."""
        with self.cond:
            return [item for _, item in self._items]

    def interrupt(self) -> int:
        """Drop what is queued and make work in progress stale; returns the new generation."""
        with self.cond:
            self.generation += 1
            self._drop()
            return self.generation

    def break_(self) -> None:
        """The consumer cannot work: drop everything, refuse new items, release `join`."""
        with self.cond:
            self.broken = True
            self._drop()
            self._pending = 0

    def mend(self) -> None:
        """Accept items again after `break_` (the consumer works again)."""
        with self.cond:
            self.broken = False
            self.cond.notify_all()

    def stop(self) -> None:
        """Drop what is queued and make `get` return `STOP`; idempotent."""
        with self.cond:
            self.stopped = True
            self.generation += 1
            self._drop()

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait on the stage's condition until ``predicate()`` (checked under the lock)."""
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def notify(self) -> None:
        """Wake every waiter to re-check (after changing state they wait for)."""
        with self.cond:
            self.cond.notify_all()

    def _drop(self) -> None:
        self._pending = max(0, self._pending - len(self._items))
        self._items.clear()
        self.cond.notify_all()


def block_signals() -> None:
    """Call first in a stage's own thread: process signals (Ctrl+C, SIGTERM, SIGHUP, ...) are
    then delivered to the main thread only.

    A signal delivered to the playback thread interrupts the device write it sits in (EINTR):
    PortAudio's ALSA path then fails the stream ("File descriptor in bad state") and, with a
    burst of Ctrl+C, tore the stream down while the process was exiting (heap corruption).
    """
    if threading.current_thread() is threading.main_thread():
        return
    watched = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}
    watched |= {signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
