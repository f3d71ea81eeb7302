"""What the model is told of the present: the local date, weekday, time and time zone.

A model knows nothing of now; asked "what time is it" or "明天星期几" it guesses. Each
question carries a short note of when it was asked, in the question's language. The note
goes with the question (not into the system prompt), so the messages already sent stay the
same from turn to turn and a server keeps reusing its cache of them.

Pure formatting (no locale: names are spelled here, so the note does not depend on how the
machine is set up); the caller takes the time, once per question.
"""

from __future__ import annotations

from datetime import datetime

from voicechat.chunker import is_han

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_WEEKDAYS_ZH = "一二三四五六日"


def local_now() -> datetime:
    """The machine's local time, with its time zone (``TZ`` honoured)."""
    return datetime.now().astimezone()


def zone(at: datetime) -> str:
    """The time zone as an offset from UTC, with its abbreviation when it has one.

    >>> from datetime import timedelta, timezone
    >>> zone(datetime(2026, 12, 7, tzinfo=timezone(timedelta(hours=8), "CST")))
    'UTC+08:00 (CST)'
    >>> zone(datetime(2026, 12, 7, tzinfo=timezone.utc))
    'UTC+00:00'
    """
    offset = at.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "+" if minutes >= 0 else "-"
    text = f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    name = at.tzname()
    if name and name not in ("UTC", text) and not name.startswith(("UTC", "+", "-")):
        text += f" ({name})"
    return text


def note(at: datetime, question: str = "") -> str:
    """When ``question`` was asked, as one line in its language (Chinese when it has Han
    characters, else English).

    >>> from datetime import timedelta, timezone
    >>> at = datetime(2026, 12, 7, 14, 5, tzinfo=timezone(timedelta(hours=8), "CST"))
    >>> note(at, "What time is it?")
    '[Asked on Monday, 7 December 2026, at 14:05, time zone UTC+08:00 (CST).]'
    >>> note(at, "明天星期几？")
    '[提问时间：2026年12月7日 星期一 14:05，时区 UTC+08:00 (CST)。]'
    """
    clock = f"{at.hour:02d}:{at.minute:02d}"
    if any(is_han(c) for c in question):
        date = f"{at.year}年{at.month}月{at.day}日 星期{_WEEKDAYS_ZH[at.weekday()]}"
        return f"[提问时间：{date} {clock}，时区 {zone(at)}。]"
    date = f"{_WEEKDAYS[at.weekday()]}, {at.day} {_MONTHS[at.month - 1]} {at.year}"
    return f"[Asked on {date}, at {clock}, time zone {zone(at)}.]"


def with_note(question: str, at: datetime | None) -> str:
    """The question as the model receives it: the note, then the question (``at`` None: as
    it is)."""
    return question if at is None else f"{note(at, question)}\n{question}"
