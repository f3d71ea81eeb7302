"""The wake phrase, as pure logic (voicechat/questions/wake.py): matched by sound in English
and Chinese, taken off the question; the follow-up window; what is not admitted is dropped."""

from __future__ import annotations

import pytest

from voicechat.questions.wake import Admitted, Gate, find

PHRASES = ("hey jetson", "你好小杰")


@pytest.mark.parametrize(
    ("heard", "rest"),
    [
        ("Hey Jetson, what time is it?", "what time is it?"),
        ("hey jetson what time is it", "what time is it"),
        ("Hey, Jetson! Tell me a story.", "Tell me a story."),
        ("Hey Jenson, tell me a story.", "tell me a story."),  # a misspelt name
        ("Hey Jetsen. What is the weather?", "What is the weather?"),
        ("Hey Jet son, what now?", "what now?"),  # one word heard as two
        ("Oh, hey Jetson, what now?", "what now?"),  # a recogniser's lead-in
        ("你好小杰，现在几点了？", "现在几点了？"),
        ("你好小姐，现在几点了？", "现在几点了？"),  # a homophone
        ("你好，小洁。今天天气怎么样？", "今天天气怎么样？"),
        ("嗯，你好小杰，讲个故事", "讲个故事"),
        ("Hey Jetson.", ""),
        ("你好小杰。", ""),
    ],
)
def test_a_wake_phrase_is_found_by_sound_and_taken_off(heard: str, rest: str) -> None:
    found = find(heard, PHRASES)
    assert found is not None, heard
    assert found.rest == rest


@pytest.mark.parametrize(
    "heard",
    [
        "What time is it?",
        "Hey there, what is the weather like?",
        "I told Jetson about it yesterday.",  # the name, but not at the start
        "今天天气怎么样？",
        "你好，今天天气怎么样？",
        "",
        "...",
    ],
)
def test_speech_without_the_phrase_does_not_wake_it(heard: str) -> None:
    assert find(heard, PHRASES) is None


def test_the_follow_up_window_and_the_phrase_alone() -> None:
    gate = Gate(PHRASES, follow_up_s=8.0)
    assert gate.admit("What time is it?", 10.0) == Admitted("ignore")
    assert gate.admit("Hey Jetson, what time is it?", 11.0) == Admitted(
        "question", "what time is it?"
    )
    gate.replied(20.0)  # the reply ended: a follow-up needs no phrase for 8 s
    assert gate.admit("And tomorrow?", 27.5) == Admitted("question", "And tomorrow?")
    gate.replied(30.0)
    assert gate.admit("Hey Jetson, and Friday?", 31.0) == Admitted("question", "and Friday?")
    assert gate.admit("Somebody else talking", 38.5) == Admitted("ignore")
    # the phrase alone: acknowledged, and the next utterance is the question
    assert gate.admit("Hey Jetson.", 50.0) == Admitted("wake")
    assert gate.admit("What is the weather?", 53.0) == Admitted("question", "What is the weather?")
    assert gate.admit("Unrelated chatter", 70.0) == Admitted("ignore")


def test_peek_changes_nothing_and_no_phrases_admits_everything() -> None:
    gate = Gate(PHRASES, follow_up_s=8.0)
    assert gate.peek("Hey Jetson.", 1.0) == Admitted("wake")
    assert gate.admit("What now?", 2.0) == Admitted("ignore")  # peek opened no window
    everything = Gate((), follow_up_s=8.0)
    assert everything.admit("What now?", 0.0) == Admitted("question", "What now?")
    everything.replied(1.0)
    assert everything.open_until == float("-inf")


def test_the_acknowledgement_speaks_the_phrase_language() -> None:
    assert Gate(("你好小杰", "hey jetson"), 8.0).acknowledgement() == "我在。"
    assert Gate(("hey jetson",), 8.0).acknowledgement() == "Yes?"


def test_the_screen_tells_from_an_utterance_start_only_while_a_phrase_is_needed() -> None:
    gate = Gate(PHRASES, follow_up_s=8.0)
    screen = gate.screen(0.0)
    assert screen is not None
    assert screen("Hey Jetson, what is the") and not screen("So I told him the meeting")
    gate.replied(10.0)
    assert gate.screen(15.0) is None  # in the window: anything may be a question
    # judged by when the utterance began: a long follow-up that began in the window and
    # ended after it is not screened (admit takes it by its start too)
    assert gate.screen(17.9) is None and gate.admit("So about that", 17.9).kind == "question"
    assert gate.screen(18.5) is not None
    assert Gate((), 8.0).screen(0.0) is None
