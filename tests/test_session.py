"""The turn loop: a turn cancelled from another thread in every phase, and what it reports.

In-process fakes (tests/support/fakes.py) drive the turn directly; the real backends against the
local fake servers (tests/support/fakeservers.py) show the same for real sockets.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.fakes import ANSWER_HOLD, HOLD, FakeBackend, FakeSpeech
from tests.support.fakeservers import FakeServer, Script, unnoted
from voicechat.audio.playback import Heard
from voicechat.backends import create_backend, settings_for
from voicechat.cancel import Cancel
from voicechat.chat import Conversation, Turn
from voicechat.errors import EXIT_INTERRUPTED, StreamBroken
from voicechat.session import Session, piped
from voicechat.terminal import Terminal

WITHIN_S = 0.1
"""A cancel must end the turn this soon, whatever it was doing."""


class Shown:
    """A `voicechat.chat.View` that keeps what it was given."""

    def __init__(self) -> None:
        self.text = ""
        self.ended = 0

    def write(self, delta: str) -> None:
        self.text += delta

    def end(self) -> None:
        self.ended += 1


@pytest.fixture
def no_thread_left() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(threading.enumerate()) - before == set()


def cancel_when(
    ready: Callable[[], bool], cancel: Cancel, reason: str = "interrupt"
) -> tuple[threading.Thread, list[float]]:
    """From another thread: cancel once ``ready()``; records when it did."""
    at: list[float] = []

    def run() -> None:
        while not ready():
            time.sleep(0.005)
        time.sleep(0.05)  # well inside the phase
        at.append(time.monotonic())
        cancel.cancel(reason)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, at


def run_cancelled(
    conversation: Conversation,
    speech: FakeSpeech | None,
    ready: Callable[[], bool],
    on_main: bool = True,
    reason: str = "interrupt",
) -> tuple[Turn, Shown, float]:
    """Run a turn (on this thread, or a worker) cancelled from another; returns the delay."""
    cancel = Cancel()
    shown = Shown()
    canceller, at = cancel_when(ready, cancel, reason)
    result: list[Turn] = []
    if on_main:
        result.append(conversation.ask("q", shown, speech, cancel))
        returned = time.monotonic()
    else:
        done: list[float] = []

        def work() -> None:
            result.append(conversation.ask("q", shown, speech, cancel))
            done.append(time.monotonic())

        worker = threading.Thread(target=work)
        worker.start()
        worker.join(5)
        returned = done[0]
    canceller.join()
    return result[0], shown, returned - at[0]


@pytest.mark.parametrize("on_main", [True, False], ids=["main-thread", "worker-thread"])
@pytest.mark.usefixtures("no_thread_left")
def test_cancel_while_the_server_has_not_answered(on_main: bool) -> None:
    backend = FakeBackend()
    backend.enqueue([ANSWER_HOLD, "never"])
    conversation = Conversation(backend)
    speech = FakeSpeech()
    turn, shown, delay = run_cancelled(conversation, speech, backend.answering.is_set, on_main)
    assert delay < WITHIN_S
    assert turn.interrupted and turn.reply == "" and shown.text == ""
    assert conversation.turns == []  # nothing was said: the history stays as it was
    assert speech.interrupted_at is not None and shown.ended == 1


@pytest.mark.parametrize("on_main", [True, False], ids=["main-thread", "worker-thread"])
@pytest.mark.usefixtures("no_thread_left")
def test_cancel_while_waiting_for_the_first_token(on_main: bool) -> None:
    backend = FakeBackend()
    backend.enqueue([HOLD, "never"])
    conversation = Conversation(backend)
    speech = FakeSpeech()

    def holding() -> bool:
        return bool(backend.replies) and backend.replies[0].holding.is_set()

    turn, _, delay = run_cancelled(conversation, speech, holding, on_main)
    assert delay < WITHIN_S
    assert backend.replies[0].closed_at is not None  # the stream was closed: the server stops
    assert turn.interrupted and turn.reply == "" and speech.said == []
    assert conversation.turns == []  # nothing was shown: the history stays as it was


@pytest.mark.parametrize("on_main", [True, False], ids=["main-thread", "worker-thread"])
@pytest.mark.usefixtures("no_thread_left")
def test_cancel_mid_stream_keeps_the_reply_as_far_as_shown(on_main: bool) -> None:
    backend = FakeBackend()
    backend.enqueue(["One sentence here. ", "And a second", HOLD, " never shown."])
    conversation = Conversation(backend)
    speech = FakeSpeech()

    def holding() -> bool:
        return bool(backend.replies) and backend.replies[0].holding.is_set()

    turn, shown, delay = run_cancelled(conversation, speech, holding, on_main)
    assert delay < WITHIN_S
    assert turn.interrupted and turn.outcome is None
    assert shown.text == turn.reply == "One sentence here. And a second"
    assert conversation.messages()[-1] == {"role": "assistant", "content": turn.reply}
    assert speech.said == ["One sentence here."]  # the unfinished sentence is not spoken
    assert speech.interrupted_at is not None and backend.replies[0].closed_at is not None


@pytest.mark.parametrize("on_main", [True, False], ids=["main-thread", "worker-thread"])
@pytest.mark.usefixtures("no_thread_left")
def test_cancel_while_speaking_silences_the_voice(on_main: bool) -> None:
    backend = FakeBackend()
    backend.enqueue(["All of it. ", "Shown and queued."])
    conversation = Conversation(backend)
    speech = FakeSpeech(hold=True)
    turn, shown, delay = run_cancelled(conversation, speech, speech.finishing.is_set, on_main)
    assert delay < WITHIN_S
    assert speech.interrupted_at is not None
    assert turn.interrupted and turn.reply == shown.text == "All of it. Shown and queued."
    assert speech.said == ["All of it.", "Shown and queued."]


def test_a_cancel_after_the_turn_touches_nothing() -> None:
    backend = FakeBackend()
    backend.enqueue(["Done."])
    speech = FakeSpeech()
    cancel = Cancel()
    turn = Conversation(backend).ask("q", Shown(), speech, cancel)
    cancel.cancel()
    assert not turn.interrupted and speech.interrupted_at is None
    assert backend.replies[0].closed_at is None


def test_a_stream_error_keeps_the_text_and_speaks_what_came() -> None:
    backend = FakeBackend()
    backend.enqueue(["Half a reply. ", "And", StreamBroken("the connection dropped: retry")])
    conversation = Conversation(backend)
    speech = FakeSpeech()
    shown = Shown()
    with pytest.raises(StreamBroken):
        conversation.ask("q", shown, speech)
    assert conversation.turns[0].reply == shown.text == "Half a reply. And"
    assert conversation.turns[0].failed and speech.said == ["Half a reply.", "And"]


# --- the session: one place that reports -----------------------------------------------------


def session_with(backend: FakeBackend, **kwargs: object) -> tuple[Session, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    term = Terminal(out, err, env={})
    session = Session(term, Conversation(backend), "m", **kwargs)  # type: ignore[arg-type]
    session.term_out = out  # type: ignore[attr-defined]
    return session, err


def test_session_reports_errors_and_goes_on_over_lines() -> None:
    class Failing(FakeBackend):
        def chat(self, messages, generation):  # type: ignore[no-untyped-def]
            if len(self.requests) == 0:
                self.requests.append(list(messages))
                raise StreamBroken("the server hung up: retry")
            return super().chat(messages, generation)

    backend = Failing()
    backend.enqueue(["second answer"])
    session, err = session_with(backend)
    assert session.run(piped(["first\n", "\n", "second\n"])) == 9
    assert err.getvalue() == "voicechat: error: the server hung up: retry\n"
    assert session.term_out.getvalue() == "second answer\n"  # type: ignore[attr-defined]
    assert unnoted(backend.requests[-1][-1]["content"]) == "second"


def test_session_cancel_from_another_thread_is_an_interrupt() -> None:
    backend = FakeBackend()
    backend.enqueue(["shown", HOLD])
    session, err = session_with(backend)
    assert not session.cancel()  # no turn: nothing to stop

    def barge_in() -> None:
        while not (backend.replies and backend.replies[0].holding.is_set()):
            time.sleep(0.005)
        assert session.busy
        session.cancel("barge-in")

    thread = threading.Thread(target=barge_in)
    thread.start()
    assert session.turn("q") == EXIT_INTERRUPTED
    thread.join()
    assert err.getvalue() == "voicechat: interrupted\n"
    assert session.last is not None and session.last.reply == "shown"
    assert not session.busy


def test_sigterm_reason_ends_the_session_with_143() -> None:
    backend = FakeBackend()
    backend.enqueue(["a", HOLD])
    backend.enqueue(["never asked"])
    session, err = session_with(backend)

    def terminate() -> None:
        while not (backend.replies and backend.replies[0].holding.is_set()):
            time.sleep(0.005)
        session.cancel("SIGTERM")

    thread = threading.Thread(target=terminate)
    thread.start()
    assert session.run(piped(["one\n", "two\n"])) == 143
    thread.join()
    assert len(backend.requests) == 1
    assert err.getvalue() == "voicechat: ended by SIGTERM\n"


def test_session_warns_about_a_cut_and_prints_stats() -> None:
    backend = FakeBackend()
    backend.enqueue(["x"])
    session, err = session_with(backend, stats=True)
    assert session.turn("q") == 0
    assert "finish: stop" in err.getvalue()


# --- real backends, real sockets ------------------------------------------------------------


@pytest.mark.parametrize("on_main", [True, False], ids=["main-thread", "worker-thread"])
@pytest.mark.parametrize("protocol", ["ollama", "openai"])
def test_cancel_before_the_first_token_with_a_real_backend(protocol: str, on_main: bool) -> None:
    """Ollama answers with a status only with its first line; the OpenAI servers at once:
    both waits end within the bound and the server sees the connection close."""
    with FakeServer(protocol, models=["m"]) as server:  # type: ignore[arg-type]
        server.enqueue(Script(first_delay=30))
        backend = create_backend(settings_for(protocol, base_url=server.url, model="m"))
        try:
            conversation = Conversation(backend)
            turn, shown, delay = run_cancelled(conversation, None, server.received.is_set, on_main)
        finally:
            backend.close()
        assert delay < WITHIN_S
        assert turn.interrupted and shown.text == ""
        assert server.disconnected.wait(5)


@pytest.mark.parametrize("on_main", [True, False], ids=["main-thread", "worker-thread"])
@pytest.mark.parametrize("protocol", ["ollama", "openai"])
def test_cancel_mid_stream_with_a_real_backend(protocol: str, on_main: bool) -> None:
    with FakeServer(protocol, models=["m"]) as server:  # type: ignore[arg-type]
        server.enqueue(Script(tokens=["tok "] * 100, tokens_per_s=10))
        backend = create_backend(settings_for(protocol, base_url=server.url, model="m"))
        try:
            conversation = Conversation(backend)
            turn, shown, delay = run_cancelled(
                conversation, None, lambda: len(server.streamed) >= 3, on_main
            )
        finally:
            backend.close()
        assert delay < WITHIN_S
        assert turn.interrupted and turn.reply == shown.text
        assert shown.text.startswith("tok tok tok")
        assert server.disconnected.wait(5)
        assert len(server.streamed) < 100


@pytest.mark.parametrize("reason", ["interrupt", "barge-in"])
def test_an_interrupted_spoken_turn_records_what_was_heard(reason: str) -> None:
    """Ctrl+C keeps the reply as shown (the user may have read it); a voice barge-in keeps
    it as heard (the user was listening, and talked over the rest)."""
    backend = FakeBackend()
    backend.enqueue(["First sentence here. ", "Second one is cut off.", HOLD])
    speech = FakeSpeech()
    speech.played = [
        Heard("First sentence here.", 1.5, 1.5),
        Heard("Second one is cut off.", 0.5, 2.0),
    ]
    conversation = Conversation(backend)
    turn, shown, _ = run_cancelled(
        conversation,
        speech,
        lambda: bool(backend.replies) and backend.replies[0].holding.is_set(),
        reason=reason,
    )
    assert turn.interrupted and turn.heard == "First sentence here. Second"
    assert shown.text == "First sentence here. Second one is cut off."
    kept = shown.text if reason == "interrupt" else turn.heard
    assert turn.reply == kept
    assert conversation.turns == [turn]
    assert conversation.messages("next")[-2:] == [
        {"role": "assistant", "content": kept},
        {"role": "user", "content": "next"},
    ]


def test_a_barge_in_before_any_sound_leaves_the_question_unanswered() -> None:
    backend = FakeBackend()
    backend.enqueue(["Shown but never spoken. ", HOLD])
    speech = FakeSpeech()
    speech.played = []
    conversation = Conversation(backend)
    turn, shown, _ = run_cancelled(
        conversation,
        speech,
        lambda: bool(backend.replies) and backend.replies[0].holding.is_set(),
        reason="barge-in",
    )
    assert turn.interrupted and turn.heard == "" and shown.text
    assert conversation.turns == []  # nothing was heard: as if the question was never asked


def test_a_turn_spoken_to_its_end_has_no_heard_cut() -> None:
    backend = FakeBackend()
    backend.enqueue(["All of it."])
    turn = Conversation(backend).ask("q", Shown(), FakeSpeech())
    assert not turn.interrupted and turn.heard is None


# --- a signal landing as a turn starts ---------------------------------------------------------


def test_a_stop_that_found_no_turn_cancels_the_next_turn_before_it_asks() -> None:
    backend = FakeBackend()
    backend.enqueue(["never asked"])
    session, err = session_with(backend)
    assert not session.stop(KeyboardInterrupt(), "interrupt")  # no turn: held
    assert session.turn("q") == EXIT_INTERRUPTED
    assert all(reply.text == "" for reply in backend.replies)  # nothing was streamed
    assert session.term_out.getvalue() == ""  # type: ignore[attr-defined]
    assert err.getvalue() == "voicechat: interrupted\n"
    assert session.held() is None  # the turn took it: the main thread raises nothing


def test_a_held_stop_lasts_until_the_main_thread_handled_it() -> None:
    """Raising it does not spend it: Python may drop an exception raised in a finalizer."""
    session, _ = session_with(FakeBackend())
    interrupt = KeyboardInterrupt()
    session.stop(interrupt, "interrupt")
    assert session.held() is interrupt
    assert session.held() is interrupt
    session.handled()
    assert session.held() is None


RACE = """
import os, signal, sys, time
from voicechat.backends import create_backend, settings_for
from voicechat.chat import Conversation
from voicechat.session import Session
from voicechat.signals import Signals
from voicechat.terminal import Terminal

backend = create_backend(settings_for("ollama", base_url=sys.argv[1], model="qwen2.5:7b"))
session = Session(Terminal(), Conversation(backend), "m")
with Signals(session):
    # The worst timing, made certain: the signal thread decides "no turn" and the main
    # thread enters the turn before the forwarded signal's handler runs.
    signal.pthread_sigmask(signal.SIG_BLOCK, [Signals.FORWARD_SIGNAL])
    os.kill(os.getpid(), signal.SIGINT)
    while session._held is None:
        time.sleep(0.001)
    started = time.monotonic()
    code = session.turn("q")
    print(code, round(time.monotonic() - started, 3), flush=True)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [Signals.FORWARD_SIGNAL])  # nothing left
print("after", flush=True)
"""


SWALLOWED = """
import os, signal, sys, time
from voicechat.backends import create_backend, settings_for
from voicechat.chat import Conversation
from voicechat.__main__ import guard
from voicechat.session import Session
from voicechat.signals import Signals, install_early
from voicechat.terminal import Terminal

guard()
install_early()
backend = create_backend(settings_for("ollama", base_url=sys.argv[1], model="qwen2.5:7b"))


class Finalized:
    def __del__(self):
        # the forwarded signal's handler runs here, in a finalizer: Python drops what it raises
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [Signals.FORWARD_SIGNAL])
        time.sleep(0.05)


session = Session(Terminal(), Conversation(backend), "m")
with Signals(session):
    signal.pthread_sigmask(signal.SIG_BLOCK, [Signals.FORWARD_SIGNAL])
    os.kill(os.getpid(), signal.SIGINT)
    while session._held is None:
        time.sleep(0.001)
    Finalized()
    print("dropped", flush=True)  # the KeyboardInterrupt did not reach us
    started = time.monotonic()
    code = session.turn("q")
    print(code, round(time.monotonic() - started, 3), flush=True)
"""

BEFORE_SIGNALS = """
import os, signal, time
from voicechat.__main__ import guard
from voicechat.signals import Signals, install_early

guard()
install_early()


class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # Python's handler raises in here: dropped
        time.sleep(0.05)


Finalized()
print("dropped", flush=True)
try:
    with Signals():
        print("not raised", flush=True)
except KeyboardInterrupt:
    print("raised as signals took over", flush=True)
"""


MISSED = """
import os, select, signal, time
from voicechat.signals import Signals

with Signals():
    signal.pthread_sigmask(signal.SIG_BLOCK, [Signals.FORWARD_SIGNAL])
    os.kill(os.getpid(), signal.SIGINT)
    # The main thread misses the wake-up, as when it lands while input() waits for the GIL
    # after drawing the prompt: taken here, its handler never runs.
    signal.sigwait([Signals.FORWARD_SIGNAL])
    started = time.monotonic()
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [Signals.FORWARD_SIGNAL])
        readable, _, _ = select.select([os.pipe()[0]], [], [], 20)  # as input() waits for a key
        print("not interrupted", flush=True)
    except KeyboardInterrupt:
        print("interrupted", round(time.monotonic() - started, 3), flush=True)
"""


def test_ctrl_c_whose_wake_up_the_main_thread_missed_still_interrupts_it() -> None:
    result = run_child(MISSED)
    assert result.returncode == 0, result.stderr
    outcome, *took = result.stdout.split()
    assert outcome == "interrupted" and float(took[0]) < 5  # not the 20 s wait


def run_child(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent,
    )  # fmt: skip


def test_ctrl_c_dropped_by_python_in_a_finalizer_still_stops_the_next_turn() -> None:
    with FakeServer("ollama") as server:
        server.enqueue(Script(first_delay=40))
        result = run_child(SWALLOWED, server.url)
    assert result.returncode == 0, result.stderr
    dropped, outcome = result.stdout.splitlines()
    code, took = outcome.split()
    assert dropped == "dropped" and int(code) == EXIT_INTERRUPTED and float(took) < 5
    assert result.stderr == "voicechat: interrupted\n"  # no "Exception ignored" traceback


def test_ctrl_c_dropped_before_signals_took_over_is_raised_then() -> None:
    result = run_child(BEFORE_SIGNALS)
    assert result.stdout.splitlines() == ["dropped", "raised as signals took over"]
    assert result.stderr == ""  # no "Exception ignored" traceback


def test_ctrl_c_just_before_a_turn_starts_stops_that_turn_at_once(tmp_path: Path) -> None:
    with FakeServer("ollama") as server:
        server.enqueue(Script(first_delay=40))
        result = run_child(RACE, server.url)
    assert result.returncode == 0, result.stderr
    code, took = result.stdout.splitlines()[0].split()
    assert int(code) == EXIT_INTERRUPTED and float(took) < 5  # not the server's 40 s
    assert result.stdout.splitlines()[1] == "after"
    assert result.stderr == "voicechat: interrupted\n"
