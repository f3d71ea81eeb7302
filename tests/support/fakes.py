"""In-process fakes of a backend and of speech, for direct tests of a turn.

Beside the real-server tests (tests/support/fakeservers.py), these implement the same interfaces
without sockets or sound, in the style of llm's ``MockModel``: queue what the next reply
says with ``enqueue([...])``, then look at what was asked and what happened::

    backend = FakeBackend()
    backend.enqueue(["Hello", HOLD, " there."])   # HOLD: the stream stalls until closed
    backend.enqueue(["Half", StreamBroken("...")]) # an exception: the stream breaks there
    conversation = Conversation(backend)

`ANSWER_HOLD` as the first item: the server has not answered yet (a model still loading); like
the real backends, ``chat()`` returns at once and the wait is in the first read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from voicechat.audio.playback import Heard
from voicechat.backends import Message, Outcome
from voicechat.settings import GenerationSettings
from voicechat.speakable import Piece

HOLD = object()
"""In a script: the stream stalls here until the reply is closed."""
ANSWER_HOLD = object()
"""First in a script: no answer from the server yet (the first read waits until closed)."""


class FakeReply:
    """A `voicechat.backends.Reply`: ``close()`` from any thread ends the iteration at once."""

    def __init__(self, script: Sequence[object], answering: threading.Event | None = None) -> None:
        self._script = list(script)
        self._answering = answering or threading.Event()
        self._closed = threading.Event()
        self.text = ""
        self.outcome: Outcome | None = None
        self.closed_at: float | None = None
        self.holding = threading.Event()
        """Set while the stream stalls at a HOLD."""
        self.sent = threading.Event()
        """Set once the first delta was handed out."""

    def __iter__(self) -> Iterator[str]:
        started = time.monotonic()
        for item in self._script:
            if self._closed.is_set():
                return
            if item is HOLD or item is ANSWER_HOLD:
                (self._answering if item is ANSWER_HOLD else self.holding).set()
                self._closed.wait()
                return
            if isinstance(item, BaseException):
                raise item  # the stream breaks here, as a backend raises it
            assert isinstance(item, str)
            self.text += item
            self.sent.set()
            yield item
        self.outcome = Outcome(
            "stop", 0.0, time.monotonic() - started, len(self._script), None, True, len(self.text)
        )

    def close(self) -> None:
        if self.closed_at is None:
            self.closed_at = time.monotonic()
        self._closed.set()


class FakeBackend:
    """A `voicechat.backends.Backend` answering from queued scripts."""

    larger_context = "give the fake a larger context"

    def __init__(self) -> None:
        self._scripts: list[list[object]] = []
        self.requests: list[list[Message]] = []
        self.replies: list[FakeReply] = []
        self.answering = threading.Event()
        """Set while a reply waits for the server's answer (ANSWER_HOLD)."""
        self.closed = False

    def enqueue(self, script: Sequence[object]) -> None:
        self._scripts.append(list(script))

    def chat(self, messages: Sequence[Message], generation: GenerationSettings) -> FakeReply:
        self.requests.append(list(messages))
        script = self._scripts.pop(0) if self._scripts else ["ok"]
        reply = FakeReply(script, self.answering)
        self.replies.append(reply)
        return reply

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class FakeSpeech:
    """A `voicechat.chat.Speech`: records what it was given; ``finish()`` holds if asked to."""

    def __init__(self, hold: bool = False) -> None:
        self.said: list[str] = []
        self.started = False
        self.interrupted_at: float | None = None
        self.first_audio_at: float | None = None
        self.hungry = False
        self.closed = False
        self._hold = hold
        self.played: list[Heard] | None = None
        self._released = threading.Event()
        self.finishing = threading.Event()
        """Set when ``finish()`` waits (the turn is in its speaking phase)."""

    def start(self) -> None:
        self.started = True

    def say(self, utterance: Piece) -> None:
        if self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
        self.said.append(utterance.text)

    def finish(self) -> None:
        self.finishing.set()
        if self._hold:
            self._released.wait()

    def interrupt(self) -> None:
        if self.interrupted_at is None:
            self.interrupted_at = time.monotonic()
        self._released.set()

    def close(self) -> None:
        self.closed = True

    def heard(self) -> list[Heard]:
        """Every piece said was heard whole, unless ``played`` says otherwise."""
        return (
            self.played
            if self.played is not None
            else [Heard(text, 1.0, 1.0) for text in self.said]
        )
