"""The process's interrupts: Ctrl+C, SIGTERM and SIGHUP, from the first instruction to the exit.

Signals arrive on a thread of their own (``sigwait``) rather than as Python handlers in
the main thread: a handler runs between any two bytecodes of whatever the main thread is
doing, so a burst of Ctrl+C would re-enter half-done work (a lock held, a generator running).
When no turn runs, the signal thread hands the interrupt to the main thread once, with a
signal of our own (`Signals.FORWARD_SIGNAL`) that also breaks a blocking call (``input()``).

Before `Signals` takes over, `on_sigint` remembers a Ctrl+C (`EARLY_INTERRUPT`); before this
module is imported, the entry point's guard (`voicechat.__main__`) does, with no import at all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

ENDING = {"SIGTERM": 143, "SIGHUP": 129}
"""Cancel reasons that end the whole session, and their exit codes (128 + signal)."""
REPEAT_S = 0.5
"""Ctrl+C this soon after the last one repeats it (one intent, e.g. a key held down)."""
RESEND_S = 0.1
"""The main thread's wake-up is sent again this often until its handler has run: CPython can
miss one (see `Signals`)."""


class Ended(BaseException):
    """SIGTERM or SIGHUP arrived outside a turn: leave cleanly with ``exit_code``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


class Interruptible(Protocol):
    """What `Signals` stops: the session whose turn is running (`voicechat.session.Session`)."""

    def stop(self, exc: BaseException, reason: str) -> bool: ...

    def held(self) -> BaseException | None: ...

    def hold(self, exc: BaseException, reason: str) -> None: ...


class Signals:
    """Ctrl+C, SIGTERM and SIGHUP, taken on a thread of their own; a context manager.

    Ctrl+C cancels the session's running turn; outside a turn it interrupts the main thread
    (KeyboardInterrupt), and a Ctrl+C within `REPEAT_S` of the last one is the same intent.
    SIGTERM/SIGHUP cancel the turn and end the session (`Session.ended`); outside a turn they
    raise `Ended` in the main thread. The main thread gets its exception from a handler of
    `FORWARD_SIGNAL` (a real signal: it breaks a blocking ``input()`` or read as well).
    That wake-up can be missed: a signal landing just before a blocking call starts only
    marks the handler as due, and the call then blocks. CPython's ``input()`` opens that
    window wide: after drawing the prompt, readline's pre-input hook waits for the GIL (up to
    5 ms when another thread runs Python) before it blocks on the terminal, and a Ctrl+C
    pressed then did nothing (1 in 5 at the first prompt, measured). So the wake-up is sent
    again every `RESEND_S` until the handler has run; the handler raises once per forward.
    Enter before any other thread starts: threads inherit the blocked signals, so only this
    one receives them. Once left, the signals stay blocked: it ends a command, and the
    process exits right after.
    """

    WATCHED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    FORWARD_SIGNAL = signal.SIGUSR1

    def __init__(self, session: Interruptible | None = None) -> None:
        self._session = session
        self._main = threading.get_ident()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._forwarded: tuple[BaseException, str] | None = None
        """For the main thread while no session is attached (start-up); kept, like
        `Session.held`, until the session is attached or the process ends."""
        self._last_int = 0.0
        self._ending = False
        self._sent = 0
        """Forwards to the main thread so far; only the signal thread counts them, once it runs."""
        self._taken = 0
        """The forwards whose handler has run (set by the handler: no lock there)."""

    @property
    def session(self) -> Interruptible | None:
        return self._session

    @session.setter
    def session(self, session: Interruptible | None) -> None:
        """Attach the session whose turns signals stop (an interrupt not yet acted on goes
        with it: its first turn starts cancelled)."""
        forwarded, self._forwarded = self._forwarded, None
        if session is not None and forwarded is not None:
            session.hold(*forwarded)
        self._session = session

    def __enter__(self) -> Signals:
        if threading.current_thread() is not threading.main_thread():
            return self  # signals are the main thread's business; nothing to do elsewhere
        if EARLY_INTERRUPT.is_set():
            raise KeyboardInterrupt  # a Ctrl+C before now was swallowed (see `on_sigint`)
        self._main = threading.get_ident()
        signal.signal(self.FORWARD_SIGNAL, self._on_forward)
        signal.pthread_sigmask(signal.SIG_BLOCK, self.WATCHED)
        early = EARLY_INTERRUPT.is_set()  # it came while this took over
        if early:
            self._forwarded = (KeyboardInterrupt(), "interrupt")
            self._sent = 1
        self._thread = threading.Thread(target=self._run, name="voicechat-signals", daemon=True)
        self._thread.start()
        if early:
            signal.pthread_kill(self._main, self.FORWARD_SIGNAL)
        return self

    def __exit__(self, *exc: object) -> None:
        thread = self._thread
        if thread is None:
            return
        self._closing = True
        signal.pthread_kill(thread.ident or 0, signal.SIGINT)  # wakes sigwait: it then ends
        thread.join()
        self._thread = None
        # The signals stay blocked: the command is over, and the rest of a burst of Ctrl+C
        # belongs to what already ended it (unblocked, it would kill the exiting process).

    def _on_forward(self, signum: int, frame: object) -> None:
        """The main thread's handler: raise what the signal thread handed over, once (a
        wake-up sent again must not raise it again in the code that is handling it)."""
        if self._taken == self._sent:
            return
        self._taken = self._sent
        forwarded = self._forwarded[0] if self._forwarded is not None else None
        if forwarded is None and self._session is not None:
            forwarded = self._session.held()
        if forwarded is not None:
            raise forwarded

    def _run(self) -> None:
        while True:
            if self._taken < self._sent:  # the main thread has not woken up yet: see above
                info = signal.sigtimedwait(self.WATCHED, RESEND_S)
                if info is None:
                    signal.pthread_kill(self._main, self.FORWARD_SIGNAL)
                    continue
                signum = info.si_signo
            else:
                signum = signal.sigwait(self.WATCHED)
            if self._closing:
                return
            # a stage that failed to stop must not end this thread
            with contextlib.suppress(Exception):
                self.dispatch(signum)

    def dispatch(self, signum: int) -> None:
        """What a signal means now: stop the turn, or interrupt the main thread."""
        if signum == signal.SIGINT:
            now = time.monotonic()
            repeated = now - self._last_int < REPEAT_S
            self._last_int = now
            if not repeated:
                self._stop(KeyboardInterrupt(), "interrupt")
            return
        if self._ending:
            return  # the session is ending already
        self._ending = True
        # a turn that was running ends (it may be over already: closing the stream is
        # immediate), then the input loop sees `ended`
        self._stop(Ended(signum), signal.Signals(signum).name)

    def _stop(self, exc: BaseException, reason: str) -> None:
        session = self._session
        if session is not None and session.stop(exc, reason):
            return  # the running turn stops
        if session is None:
            self._forwarded = (exc, reason)
        self._sent += 1
        signal.pthread_kill(self._main, self.FORWARD_SIGNAL)


class SignalFlag:
    """A flag a signal handler sets: a plain attribute, no lock. (A `threading.Event` took
    its lock in the handler: a second Ctrl+C landing inside ``set`` ran the handler again,
    which waited for the lock the first one held, and a burst of Ctrl+C hung the process.)"""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


EARLY_INTERRUPT = SignalFlag()
"""Set by `on_sigint`: a Ctrl+C came before `Signals` took over."""
INTERRUPT_TOLD = SignalFlag()
"""Set once "interrupted" was said (`voicechat.terminal.Terminal.interrupted`): the entry
point does not say it again."""


def on_sigint(signum: int, frame: object) -> None:
    """Ctrl+C until `Signals` takes over (installed first thing by the entry point).

    Raises KeyboardInterrupt as Python's own handler does, and remembers it: raised inside a
    finalizer or an import's weakref callback, Python drops it ("Exception ignored"), and the
    command would go on; `Signals` then raises it again as it takes over.
    """
    EARLY_INTERRUPT.set()
    raise KeyboardInterrupt


def install_early(interrupted_already: bool = False) -> None:
    """Ctrl+C is remembered from now on (`on_sigint`); the entry point's guard remembered
    any before (``interrupted_already``)."""
    signal.signal(signal.SIGINT, on_sigint)
    if interrupted_already:
        EARLY_INTERRUPT.set()
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        # SIGTERM forwarded into a finalizer: held for the next turn, not a traceback (the
        # entry point's guard does the same for KeyboardInterrupt)
        if not isinstance(unraisable.exc_value, Ended):
            previous(unraisable)

    sys.unraisablehook = hook


_BEFORE_EXIT: list[Callable[[], None]] = []


def before_exit_now(cleanup: Callable[[], None]) -> None:
    """Run ``cleanup`` in `exit_now` as well: ``os._exit`` runs no ``atexit`` handler and no
    finalizer (a temporary folder would stay behind). It must be quick and must not raise."""
    _BEFORE_EXIT.append(cleanup)


def exit_now(code: int) -> None:
    """Exit with ``code`` at once (nothing runs yet that needs a clean shutdown but what
    `before_exit_now` registered).

    Not `sys.exit`: CPython marks a KeyboardInterrupt raised inside ``exec`` (dataclasses
    build their methods with it while modules import) as unhandled even when it was caught,
    and then ends the process by SIGINT instead of with our exit code.
    """
    for cleanup in _BEFORE_EXIT:
        with contextlib.suppress(Exception):
            cleanup()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(code)
