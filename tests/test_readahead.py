"""Reading a reply ahead (voicechat/readahead.py) against the scripted servers over real
sockets: the request leaves before the question is certain, the turn takes what came if the
question was that one, and anything else closes the stream (the server sees the hang-up)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.fakeservers import FakeServer, Script
from tests.test_session import Shown, cancel_when
from voicechat.backends import create_backend, settings_for
from voicechat.cancel import Cancel
from voicechat.chat import Conversation
from voicechat.errors import VoicechatError


def reader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "voicechat-read-ahead"]


def conversation_on(server: FakeServer, protocol: str) -> Conversation:
    return Conversation(create_backend(settings_for(protocol, base_url=server.url, model="m")))


def wait_for(ready, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.01)


@pytest.mark.parametrize("protocol", ["ollama", "openai"])
def test_the_request_leaves_at_once_and_the_turn_takes_what_came(protocol: str) -> None:
    tokens = ["The moon", " is far", " away."]
    with FakeServer(protocol, models=["m"]) as server:  # type: ignore[arg-type]
        server.enqueue(Script(tokens=tokens, first_delay=0.2))
        conversation = conversation_on(server, protocol)
        ahead = conversation.read_ahead("How far is the moon?")
        assert server.received.wait(5), "nothing was sent before the turn"
        wait_for(lambda: len(server.streamed) == len(tokens))  # all of it before the turn
        shown = Shown()
        turn = conversation.ask("How far is the moon?", shown, ahead=ahead)
    assert shown.text == turn.reply == "The moon is far away."
    assert len(server.chats) == 1 and not server.disconnected.is_set()
    assert turn.outcome is not None and turn.outcome.finish == "stop"
    assert turn.started == ahead.started  # the question's time is when it was sent
    assert [t.question for t in conversation.turns] == ["How far is the moon?"]
    assert reader_threads() == []


def test_a_read_ahead_for_another_question_is_closed_and_the_real_one_asked() -> None:
    with FakeServer("ollama", models=["m"]) as server:
        server.enqueue(Script(tokens=["guess "] * 200, tokens_per_s=20), Script(tokens=["Yes."]))
        conversation = conversation_on(server, "ollama")
        ahead = conversation.read_ahead("Is it far")  # the user went on: "...to the moon?"
        wait_for(lambda: len(server.streamed) >= 2)
        turn = conversation.ask("Is it far to the moon?", Shown(), ahead=ahead)
        assert server.disconnected.wait(5), "the guessed request was never closed"
    assert turn.reply == "Yes."
    asked = [chat.messages[-1]["content"] for chat in server.chats]
    assert asked == ["Is it far", "Is it far to the moon?"]
    assert reader_threads() == []


def test_a_cancel_while_reading_ahead_stops_the_stream_and_keeps_what_was_shown() -> None:
    with FakeServer("ollama", models=["m"]) as server:
        server.enqueue(Script(tokens=["word "] * 200, tokens_per_s=20))
        conversation = conversation_on(server, "ollama")
        ahead = conversation.read_ahead("Talk")
        shown, cancel = Shown(), Cancel()
        canceller, _ = cancel_when(lambda: len(shown.text) >= 15, cancel)
        turn = conversation.ask("Talk", shown, cancel=cancel, ahead=ahead)
        canceller.join()
        assert server.disconnected.wait(5)
    assert turn.interrupted and turn.reply == shown.text and turn.reply.startswith("word word")
    assert reader_threads() == []


@pytest.mark.parametrize("protocol", ["ollama", "openai"])
def test_an_error_read_ahead_is_the_error_the_turn_would_have_raised(protocol: str) -> None:
    body = '{"error": "model is overloaded"}'
    messages = []
    for ahead in (False, True):
        with FakeServer(protocol, models=["m"]) as server:  # type: ignore[arg-type]
            server.enqueue(Script(status=503, body=body))
            conversation = conversation_on(server, protocol)
            early = conversation.read_ahead("q") if ahead else None
            with pytest.raises(VoicechatError) as caught:
                conversation.ask("q", Shown(), ahead=early)
        messages.append(str(caught.value).replace(str(server.port), "PORT"))
        assert conversation.turns == []
    assert messages[0] == messages[1] and "overloaded" in messages[1]
    assert reader_threads() == []
