"""One cancel object per turn: Ctrl+C, a voice barge-in or a closed pipe stop a turn alike.

Any thread may call `Cancel.cancel`; each stage of the turn registers what stopping means for it
(close the stream, silence the voice) with `Cancel.on_cancel`, so nothing has to poll a flag.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable


class Cancel:
    """Set once, from any thread; registered callbacks run once, in the cancelling thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self.reason: str | None = None
        """Why the turn was cancelled (``interrupt``, ``barge-in``, ...), once it was."""

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str = "interrupt") -> None:
        """Cancel the turn; calling it again does nothing."""
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        failed: list[BaseException] = []
        for callback in reversed(callbacks):  # the last stage registered stops first
            try:
                callback()
            except Exception as exc:  # every stage still stops; the first failure is raised
                failed.append(exc)
        if failed:
            raise failed[0]

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` on cancel (at once if already cancelled); returns its remover."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return lambda: self._remove(callback)
        callback()
        return lambda: None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled (True) or the timeout passes (False)."""
        return self._event.wait(timeout)

    def _remove(self, callback: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._callbacks.remove(callback)
