"""Each question tells the model when it was asked (voicechat/now.py): the machine's local
date, weekday, time and time zone, in the question's language; on by default, off with
``tell_time: false``; the same note for a question in every later request."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.support.environ import clean_env
from tests.support.fakeservers import FakeServer, Script
from voicechat.now import note

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def ask(tmp_path: Path, server: FakeServer, *args: str, stdin: str | None = None, **env: str):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "voicechat", *args],
        input=stdin, capture_output=True, text=True, timeout=30,
        env=clean_env(tmp_path, OLLAMA_HOST=server.url, **env),
    )  # fmt: skip


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/New_York", "UTC"])
def test_the_time_in_the_request_is_the_machines_in_its_zone(
    tmp_path: Path, ollama_server: FakeServer, zone: str
) -> None:
    before = datetime.now(ZoneInfo(zone))
    result = ask(tmp_path, ollama_server, "ask", "--mute", "What time is it?", TZ=zone)
    after = datetime.now(ZoneInfo(zone))
    assert result.returncode == 0, result.stderr
    (sent,) = ollama_server.chats[0].notes
    # one of the minutes the command ran in (it may have crossed one)
    expected = {note(at, "What time is it?") for at in (before, after)}
    assert sent in expected, (sent, expected)
    offset = before.utcoffset() or timedelta(0)
    sign = "+" if offset >= timedelta(0) else "-"
    hours, minutes = divmod(abs(int(offset.total_seconds())) // 60, 60)
    assert f"UTC{sign}{hours:02d}:{minutes:02d}" in sent
    assert WEEKDAYS[before.weekday()] in sent or WEEKDAYS[after.weekday()] in sent
    assert ollama_server.chats[0].messages[-1]["content"] == "What time is it?"


def test_a_chinese_question_is_told_the_time_in_chinese(
    tmp_path: Path, ollama_server: FakeServer
) -> None:
    result = ask(tmp_path, ollama_server, "ask", "--mute", "明天星期几？", TZ="Asia/Shanghai")
    assert result.returncode == 0, result.stderr
    (sent,) = ollama_server.chats[0].notes
    date = r"\d{4}年\d{1,2}月\d{1,2}日 星期[一二三四五六日]"
    assert re.fullmatch(rf"\[提问时间：{date} \d\d:\d\d，时区 UTC\+08:00.*。\]", sent), sent


def test_tell_time_false_sends_the_question_alone(
    tmp_path: Path, ollama_server: FakeServer
) -> None:
    profile = tmp_path / "quiet.yaml"
    profile.write_text(
        f"backend: {{kind: ollama, model: qwen2.5:7b, base_url: '{ollama_server.url}'}}\n"
        "tell_time: false\ntts: {engine: none}\n"
    )
    result = ask(tmp_path, ollama_server, "ask", "-p", str(profile), "What time is it?")
    assert result.returncode == 0, result.stderr
    assert ollama_server.chats[0].body["messages"][-1] == {
        "role": "user",
        "content": "What time is it?",
    }


def test_an_earlier_question_keeps_its_note_in_later_requests(
    tmp_path: Path, ollama_server: FakeServer
) -> None:
    """What was sent before is sent the same again, so a server's prompt cache stays valid."""
    ollama_server.enqueue(Script(tokens=["one"]), Script(tokens=["two"]))
    result = ask(tmp_path, ollama_server, "chat", "--mute", stdin="first\nsecond\n")
    assert result.returncode == 0, result.stderr
    first, second = (chat.body["messages"] for chat in ollama_server.chats[-2:])
    assert second[: len(first)] == first
    assert [m["content"] for m in ollama_server.chats[-1].messages[1:]] == [
        "first",
        "one",
        "second",
    ]
