"""The end of a turn: the transcript cues (pure, table-tested) and the endpointer that waits
for a verdict on a pause, up to ``stt.max_pause``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicechat.settings import STTSettings
from voicechat.stt.turn import ZH_CUES, CueJudge, cue
from voicechat.stt.vad import FRAME, FRAME_S, Endpointer, Pause, Resumed, Utterance, endpointer

UNFINISHED = [
    ("I went to the store and then", "and then"),
    ("I went to the store and then.", "and then"),
    ("Tell me a story because", "because"),
    ("Tell me a story, because.", "because"),
    ("I was wondering if", "if"),
    ("What is the best way to", "to"),
    ("Can you tell me about", "about"),
    ("I need a recipe for.", "for"),
    ("I want to buy the", "the"),
    ("Is it this one or", "or"),
    ("It was raining so", "so"),
    ("Could you, um", "um"),
    ("I was thinking...", "..."),
    ("I was thinking…", "…"),
    ("Where should I start,", ","),
    ("I want to learn programming and then?", "and then"),
    ("我想学习编程，应该", "应该"),
    ("我想学习编程，应该。", "应该"),
    ("我想学习编程，應該", "應該"),  # Whisper may write traditional characters
    ("今天下午那个", "那个"),
    ("我去了商店，然后", "然后"),
    ("我去了商店，然後", "然後"),
    ("我不想去因为", "因为"),
    ("请给我讲一个关于", "关于"),
    ("请給我講一個關於", "關於"),
    ("我想", "我想"),
    ("你好，", "，"),
    ("请给我讲一个", "一个"),  # one of something, the something not said yet
    ("請給我講一個", "一個"),
    ("My sister said that", "said that"),
    # an embedded question opened and not said yet (Whisper puts a "?" after it)
    ("Can you tell me how far?", "me how far"),
    ("Do you know how many?", "know how many"),
    ("I wonder why", "wonder why"),
]
FINISHED = [
    "What is the weather like in London today?",
    "Tell me a short story about a cat.",
    "I bought some milk",
    "What are you looking at?",  # a stranded preposition in a question
    "Who did you go with?",
    "Can you tell me how far the moon is from the Earth?",
    "How far is the moon?",
    "Tell me what you think.",
    "Can you tell me how?",
    "I think so.",
    "I hope so",
    "Is that so?",
    "Turn it on.",
    "Thanks!",
    "Stop!",
    "今天北京的天气怎么样？",
    "现在几点了",
    "天气很暖和。",  # ends in 和, a word of its own here
    "然后呢？",  # "and then?": a question
    "我想听一首轻松的音乐。",
    "",
    "   ",
    "...?!",
]


@pytest.mark.parametrize(("text", "found"), UNFINISHED)
def test_an_unfinished_ending_is_found(text: str, found: str) -> None:
    assert cue(text) == found
    verdict = CueJudge().judge(text, np.zeros(0, np.float32))
    assert not verdict.finished and found in verdict.why


@pytest.mark.parametrize("text", FINISHED)
def test_a_finished_turn_has_no_cue(text: str) -> None:
    assert cue(text) is None
    assert CueJudge().judge(text, np.zeros(0, np.float32)).finished


def test_every_chinese_cue_has_its_traditional_form() -> None:
    assert "然后" in ZH_CUES and "然後" in ZH_CUES and "應該" in ZH_CUES and "那個" in ZH_CUES


@given(st.text(max_size=60))
def test_any_text_is_judged_without_error(text: str) -> None:
    found = cue(text)
    assert found is None or (found and found.split()[-1] in text.lower())


# --- the endpointer waits for a verdict ------------------------------------------------------


def feed(ep: Endpointer, probs: list[float], decide_at: dict[int, bool] | None = None):
    """(frame index, event) for each event; ``decide_at``: a verdict given before that frame."""
    out = []
    for i, p in enumerate(probs):
        if decide_at and i in decide_at:
            ep.decide(decide_at[i])
        out.extend((i, e) for e in ep.push(np.full(FRAME, i, np.float32), p))
    return out


def frames(seconds: float) -> int:
    return round(seconds / FRAME_S)


def end_of(events: list) -> int:
    (at,) = [i for i, e in events if isinstance(e, Utterance)]
    return at


SPEECH = 20


def test_a_pause_judged_finished_ends_after_the_end_silence() -> None:
    ep = Endpointer(end_silence=0.5, pre_roll=0.0, max_pause=2.5)
    verdict_at = SPEECH + frames(0.3)  # the early transcript is ready 0.3 s into the pause
    events = feed(ep, [0.9] * SPEECH + [0.0] * frames(3.0), {verdict_at: True})
    assert end_of(events) == SPEECH + frames(0.5) - 1


def test_a_verdict_later_than_the_end_silence_ends_the_pause_at_once() -> None:
    ep = Endpointer(end_silence=0.5, pre_roll=0.0, max_pause=2.5)
    verdict_at = SPEECH + frames(0.9)
    events = feed(ep, [0.9] * SPEECH + [0.0] * frames(3.0), {verdict_at: True})
    assert end_of(events) == verdict_at


def test_a_pause_judged_unfinished_waits_up_to_max_pause() -> None:
    ep = Endpointer(end_silence=0.5, pre_roll=0.0, max_pause=2.5)
    events = feed(ep, [0.9] * SPEECH + [0.0] * frames(3.0), {SPEECH + frames(0.3): False})
    assert end_of(events) == SPEECH + frames(2.5) - 1


def test_an_undecided_pause_waits_up_to_max_pause_and_no_longer() -> None:
    ep = Endpointer(end_silence=0.5, pre_roll=0.0, max_pause=2.5)
    assert end_of(feed(ep, [0.9] * SPEECH + [0.0] * frames(3.0))) == SPEECH + frames(2.5) - 1


def test_speech_after_an_unfinished_pause_keeps_one_utterance() -> None:
    """ "...and then" [1 s] "I bought some milk": one utterance, the second pause decided anew."""
    ep = Endpointer(end_silence=0.5, pre_roll=0.0, max_pause=2.5)
    probs = [0.9] * SPEECH + [0.0] * frames(1.0) + [0.9] * SPEECH + [0.0] * frames(1.0)
    second = 2 * SPEECH + frames(1.0) + frames(0.2)
    events = feed(ep, probs, {SPEECH + frames(0.2): False, second: True})
    kinds = [type(e) for _, e in events if not isinstance(e, Pause)]
    assert Resumed in kinds and kinds.count(Utterance) == 1
    assert end_of(events) == 2 * SPEECH + frames(1.0) + frames(0.5) - 1
    assert not ep.undecided


def resumed(events: list) -> Resumed:
    (event,) = [e for _, e in events if isinstance(e, Resumed)]
    return event


@pytest.mark.parametrize(
    ("gap", "verdict_at", "held"),
    [(1.0, None, True), (0.4, None, False), (1.0, 0.2, False)],
    ids=["undecided past end_silence", "shorter than end_silence", "decided in time"],
)
def test_speech_after_a_pause_that_waited_past_end_silence_is_held(
    gap: float, verdict_at: float | None, held: bool
) -> None:
    """Only a pause that would have ended the utterance, had its verdict come in time, is
    held for a split after the fact (`Resumed.held`)."""
    ep = Endpointer(end_silence=0.5, pre_roll=0.0, max_pause=2.5)
    probs = [0.9] * SPEECH + [0.0] * frames(gap) + [0.9] * SPEECH
    decide = {SPEECH + frames(verdict_at): False} if verdict_at is not None else None
    event = resumed(feed(ep, probs, decide))
    assert (event.held is not None) == held, event


def test_a_held_pause_split_after_the_fact_starts_a_new_utterance_with_its_pre_roll() -> None:
    """The first part is the held `Pause`'s samples; the rest ends as an utterance of its
    own that holds none of the first part's frames, with the pre-roll taken from the pause."""
    ep = Endpointer(end_silence=0.5, pre_roll=0.3, max_pause=2.5)
    probs = [0.0] * 5 + [0.9] * SPEECH + [0.0] * frames(1.0) + [0.9] * SPEECH + [0.0] * frames(3)
    events, held = [], None
    for i, p in enumerate(probs):
        for e in ep.push(np.full(FRAME, i, np.float32), p):
            events.append((i, e))
            if isinstance(e, Resumed):
                held = e.held
                assert held is not None
                ep.split(held)  # the verdict: finished
    assert held is not None
    (pause,) = [e for _, e in events if isinstance(e, Pause)][:1]
    (utterance,) = [e for _, e in events if isinstance(e, Utterance)]
    first_frames = set(np.unique(pause.samples).astype(int))
    rest_frames = set(np.unique(utterance.samples).astype(int))
    assert not first_frames & rest_frames
    resumed_at = 5 + SPEECH + frames(1.0)
    pre = frames(0.3) + 2  # pre-roll and the frames that start speech
    assert min(rest_frames) == resumed_at - pre and max(first_frames) < resumed_at - pre
    assert held.speech == SPEECH


def test_without_max_pause_nothing_waits_for_a_verdict() -> None:
    ep = Endpointer(end_silence=0.5, pre_roll=0.0)
    events = feed(ep, [0.9] * SPEECH + [0.0] * frames(1.0))
    assert not ep.judged and end_of(events) == SPEECH + frames(0.5) - 1


def test_a_max_pause_no_longer_than_the_end_silence_turns_the_judge_off() -> None:
    settings = STTSettings(end_silence=4.0)  # max_pause stays 2.5
    assert not endpointer(settings, judged=True).judged
    assert endpointer(STTSettings(), judged=True).judged
    assert not endpointer(STTSettings()).judged  # files and barge-in: silence alone
