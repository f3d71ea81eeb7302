"""A reply read ahead: the request goes out before the question is certain.

Hands-free, the end of an utterance is confirmed only after ``stt.end_silence`` of silence
(0.5 s; up to ``stt.max_pause`` when its words sound unfinished, `voicechat.stt.turn`), but
its transcript is usually ready at the first short pause (early recognition).
Sending the request then, and holding what comes back, unseen and unheard, until the end is
confirmed, takes that wait off the time to the first sound. If the user goes on speaking,
the read-ahead is discarded: closing its stream is how the server learns to stop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voicechat.backends import Message, Outcome, Reply


class ReadAhead:
    """A `Reply` iterated on a thread of its own from the moment it is made.

    Iterate it (once) as the reply itself: the deltas that arrived already come first, then
    the rest as they arrive, then the reply's error, if it ended with one. `close` works
    from any thread, as the reply's does; `discard` also waits for the thread.
    """

    def __init__(
        self, reply: Reply, messages: list[Message], asked_at: datetime | None = None
    ) -> None:
        self.messages = messages
        """The request it answers: `Conversation.ask` takes it only for the same one."""
        self.asked_at = asked_at
        """The wall-clock time the question was asked at, as its request told the model."""
        self.started = time.monotonic()
        """When the request was sent (the question's time, for the turn's statistics)."""
        self._reply = reply
        self._deltas: list[str] = []
        self._error: BaseException | None = None
        self._done = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="voicechat-read-ahead")
        self._thread.start()

    @property
    def outcome(self) -> Outcome | None:
        return self._reply.outcome

    def _read(self) -> None:
        try:
            for delta in self._reply:
                with self._changed:
                    self._deltas.append(delta)
                    self._changed.notify_all()
        except BaseException as exc:  # raised in the reader's thread by `__iter__`
            self._error = exc
        finally:
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def __iter__(self) -> Iterator[str]:
        i = 0
        while True:
            with self._changed:
                while i == len(self._deltas) and not self._done:
                    self._changed.wait()
                if i == len(self._deltas):
                    if self._error is not None:
                        raise self._error
                    return
                delta = self._deltas[i]
            i += 1
            yield delta

    def close(self) -> None:
        """Abort from any thread (a cancel): the stream stops, and so does the reader."""
        self._reply.close()

    def discard(self) -> None:
        """Close it unless it has ended, and wait for its thread (the question was not this)."""
        with self._changed:
            done = self._done
        if not done:
            self._reply.close()
        self._thread.join()
