"""The wake phrase with real speech through the virtual microphone (`chat --listen`): only
what starts with the phrase, or follows a reply within the window, reaches the server; the
phrase is taken off; a misspelt name and a Chinese homophone still wake it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.fakeservers import FakeServer, Script
from tests.support.speech import (
    CHINESE,
    ENGLISH,
    VirtualMic,
    chinese,
    with_silence,
    word_error_rate,
)

pytest.importorskip("faster_whisper", reason="speech input needs the [listen] extra")

FOLLOW_UP_S = 2.5


def asked(server: FakeServer) -> list[str]:
    """The questions as the user asked them (warm-up requests have no messages)."""
    return [c.messages[-1]["content"] for c in server.chats if c.body["messages"]]


def wait_for(server: FakeServer, count: int, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(asked(server)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return asked(server)


@pytest.mark.audio
def test_only_questions_that_start_with_the_wake_phrase_or_follow_a_reply_are_sent(
    virtual_mic: VirtualMic, english: dict[str, Path], ollama_server: FakeServer,
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
) -> None:  # fmt: skip
    profile = tmp_path / "wake.yaml"
    profile.write_text(
        f"backend: {{kind: ollama, model: qwen2.5:7b, base_url: '{ollama_server.url}'}}\n"
        "tts: {engine: none}\n"
        # 背景 (bei jing) is how a recogniser may write 北京: a homophone of the phrase
        f"stt: {{wake: ['hey jetson', '今天背景'], follow_up: {FOLLOW_UP_S}, language: auto}}\n"
    )
    for _ in range(4):
        ollama_server.enqueue(Script(tokens=["Sure."]))
    env = {k: v for k, v in virtual_mic.env.items() if not k.startswith(("VOICECHAT", "PYTEST"))}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_STATE_HOME=str(tmp_path / "state"),
               XDG_CACHE_HOME=str(tmp_path_factory.mktemp("cache")), NO_COLOR="1")  # fmt: skip
    wav = {name: with_silence(path, tmp_path / f"{name}.wav", 0.3, 0.2)
           for name, path in english.items()}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicechat", "chat", "--listen", "-p", str(profile)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "listening for 'hey jetson' or '今天背景'" in line, line
        time.sleep(1.0)  # the recognizer loads meanwhile
        virtual_mic.say(wav["en_chatter"])  # other people's talk: nothing is sent
        virtual_mic.say(wav["en_wake_weather"])
        assert len(wait_for(ollama_server, 1)) == 1
        virtual_mic.say(wav["en_story"])  # a follow-up, right after the reply
        assert len(wait_for(ollama_server, 2)) == 2
        time.sleep(FOLLOW_UP_S + 1.5)  # the window closes
        virtual_mic.say(wav["en_story"])  # no phrase, no window: not sent
        virtual_mic.say(wav["en_jenson_story"])  # a misspelt name still wakes it
        assert len(wait_for(ollama_server, 3)) == 3
        time.sleep(FOLLOW_UP_S + 1.5)
        virtual_mic.say(with_silence(chinese("zh_weather"), tmp_path / "zh.wav", 0.3, 0.2))
        wait_for(ollama_server, 4)
        time.sleep(1.0)  # anything else would arrive now
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    except AssertionError as exc:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"{exc}; asked {asked(ollama_server)}; stderr: {err}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    questions = asked(ollama_server)
    assert len(questions) == 4, (questions, err)
    weather, story, woken, zh = questions
    assert word_error_rate("what is the weather like in London today?", weather) <= 0.25, weather
    assert word_error_rate(ENGLISH["en_story"], story) <= 0.25, story
    assert word_error_rate("tell me a short story about a cat.", woken) <= 0.25, woken
    assert "jetson" not in weather.lower() and "jenson" not in woken.lower()
    # 今天北京的天气怎么样 with the phrase (by sound: jin tian bei jing) taken off
    assert word_error_rate(CHINESE["zh_weather"][4:], zh) <= 0.34, zh
    assert "Traceback" not in err
