"""The turn loop for every input: a terminal, a pipe, (next) a microphone.

One place runs a turn and says what happened: the error line, the warning about how the
reply ended, ``--stats``, "interrupted". Each turn gets its own `Cancel`; whoever wants
the turn stopped calls `Session.cancel` from any thread: the `Signals` thread for Ctrl+C,
SIGTERM and SIGHUP, a voice barge-in for the microphone.

Signals arrive on a thread of their own (``sigwait``) rather than as Python handlers in
the main thread: a handler runs between any two bytecodes of whatever the main thread is
doing, so a burst of Ctrl+C would re-enter half-done work (a lock held, a generator running).
When no turn runs, the signal thread hands the interrupt to the main thread once, with a
signal of our own (`Signals.FORWARD_SIGNAL`) that also breaks a blocking call (``input()``).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voicechat.cancel import Cancel
from voicechat.errors import EXIT_INTERRUPTED, OutputError, VoicechatError

if TYPE_CHECKING:
    from voicechat.chat import Conversation, Speech, Turn
    from voicechat.readahead import ReadAhead
    from voicechat.terminal import Terminal

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


@dataclass
class Session:
    """Runs turns of one conversation and reports each; `turn` returns its exit status."""

    term: Terminal
    conversation: Conversation
    model: str = "the model"
    """Named in the "waiting for MODEL" line."""
    speech: Speech | None = None
    stats: bool = False
    raise_with: str = "--max-tokens (or generation.max_tokens)"
    """The fix named when a reply is cut at our token limit."""
    interactive: bool = False
    """The REPL: status lines without the program's name, and the conversation goes on."""
    last: Turn | None = None
    """The last turn that ran (interrupted or not)."""
    ended: int | None = None
    """The exit code once SIGTERM/SIGHUP ended the session; the input loop then stops."""
    muted: bool = False
    _cancel: Cancel | None = field(default=None, repr=False)
    _held: tuple[BaseException, str] | None = field(default=None, repr=False)
    """A signal's interrupt that found no turn: raised in the main thread (`held`), and the
    next turn starts cancelled unless the main thread `handled` it first."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def busy(self) -> bool:
        """A turn is running (a cancel would stop it)."""
        return self._cancel is not None

    def cancel(self, reason: str = "interrupt") -> bool:
        """Stop the running turn, from any thread; False when none runs (or it was stopped)."""
        if reason in ENDING:
            self.ended = ENDING[reason]
        with self._lock:
            cancel = self._cancel
        if cancel is None or cancel.cancelled:
            return False
        cancel.cancel(reason)
        return True

    def stop(self, exc: BaseException, reason: str) -> bool:
        """A signal's stop (the signal thread): True when a turn runs, which is cancelled.

        Otherwise ``exc`` is held, under the same lock a turn takes to start, so that a
        signal landing just as a turn starts cannot be lost: the main thread raises ``exc``
        (`held`), and a turn starting before that was handled starts cancelled.
        """
        if reason in ENDING:
            self.ended = ENDING[reason]
        with self._lock:
            cancel = self._cancel
            if cancel is None:
                self._held = (exc, reason)
                return False
        cancel.cancel(reason)  # nothing more if it was cancelled already
        return True

    def held(self) -> BaseException | None:
        """The held interrupt, for the main thread's signal handler to raise (no lock: the
        handler may run while the main thread holds it); None while a turn runs: it has it.

        Raising does not spend it: Python drops an exception raised inside a finalizer or
        an import's callback ("Exception ignored"), and the next turn must then still start
        cancelled. Whoever handles the exception and goes on calls `handled`.
        """
        held = self._held
        return None if held is None or self._cancel is not None else held[0]

    def handled(self) -> None:
        """The main thread caught the interrupt and goes on (the REPL's prompt): spent."""
        self._held = None

    def hold(self, exc: BaseException, reason: str) -> None:
        """An interrupt that came before this session was attached to `Signals`."""
        with self._lock:
            self._held = (exc, reason)

    def turn(self, question: str, ahead: ReadAhead | None = None) -> int:
        """Ask, show, speak, and say how it went: 0, the error's exit code, or 130/143/129.
        ``ahead``: the question's reply, read ahead (`Conversation.read_ahead`)."""
        cancel = Cancel()
        try:
            with self._lock:
                self._cancel = cancel
                held, self._held = self._held, None
            if held is not None:
                cancel.cancel(held[1])  # a signal came as the turn started: it stops at once
            turn = self.conversation.ask(
                question,
                self.term.reply_view(self.model),
                None if self.muted else self.speech,
                cancel,
                ahead,
            )
        except OutputError:
            raise  # nowhere to show replies: the session cannot go on
        except VoicechatError as exc:
            self.last = self.conversation.turns[-1] if self.conversation.turns else None
            self.term.error(str(exc))
            return self.ended or exc.exit_code
        finally:
            with self._lock:
                self._cancel = None
        self.last = turn
        if self.ended is not None:
            self._status(f"ended by {cancel.reason}")
            return self.ended
        if turn.interrupted:
            if self.interactive:
                self.term.note("interrupted (the reply so far stays in the conversation)")
            else:
                self.term.interrupted()
            return EXIT_INTERRUPTED
        from voicechat.chat import ending_warning

        max_tokens = self.conversation.generation.max_tokens
        warning = ending_warning(turn.outcome, max_tokens, self.raise_with)
        if warning:
            self.term.warn(warning)
        if self.stats:
            self.term.stats(turn.outcome, turn.first_audio_s)
        return 0

    def _status(self, message: str) -> None:
        (self.term.note if self.interactive else self.term.info)(message)

    def lines(self, lines: Iterable[str]) -> int:
        """A turn per non-empty line (a pipe); the exit code is the first failure's.

        A failed turn is reported and the next line still runs; an interrupt ends the loop.
        """
        status = 0
        for raw in lines:
            question = raw.strip()
            if not question:
                continue
            code = self.turn(question)
            if code == EXIT_INTERRUPTED or self.ended:
                return code
            status = status or code
        return status


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

    def __init__(self, session: Session | None = None) -> None:
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
    def session(self) -> Session | None:
        return self._session

    @session.setter
    def session(self, session: Session | None) -> None:
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
