"""The stage between speech threads: every event wakes the waiter, no timeouts needed."""

from __future__ import annotations

import doctest
import threading
import time
from collections.abc import Callable

import pytest

from voicechat import stage as stage_mod
from voicechat.stage import STOP, Stage


def test_doctests() -> None:
    assert doctest.testmod(stage_mod).failed == 0


def blocked(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run ``call`` in a thread and check it is blocked (it has not returned after 0.2 s)."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(0.2)
    assert thread.is_alive() and result == []
    return thread, result


def returns(thread: threading.Thread, result: list[object]) -> object:
    thread.join(1.0)
    assert not thread.is_alive()
    return result[0]


@pytest.mark.parametrize("event", ["interrupt", "break_", "stop"])
def test_a_producer_blocked_on_a_full_stage_is_released_by(event: str) -> None:
    s: Stage[int] = Stage(1)
    assert s.put(1)
    thread, result = blocked(lambda: s.put(2))
    getattr(s, event)()
    assert returns(thread, result) is False
    assert s.pending == 0  # the queued item was dropped too


def test_a_producer_blocked_on_a_full_stage_goes_on_when_the_consumer_takes() -> None:
    s: Stage[int] = Stage(1)
    s.put(1)
    thread, result = blocked(lambda: s.put(2))
    assert s.get() == (0, 1)
    assert returns(thread, result) is True


@pytest.mark.parametrize("event", ["done", "break_", "stop"])
def test_join_is_released_by(event: str) -> None:
    s: Stage[int] = Stage(4)
    s.put(1)
    s.get()
    thread, result = blocked(s.join)
    getattr(s, event)()
    assert returns(thread, result) is True


def test_a_waiting_consumer_wakes_for_an_item_or_stop_only() -> None:
    s: Stage[str] = Stage(4)
    thread, result = blocked(s.get)
    s.put("x")
    assert returns(thread, result) == (0, "x")
    thread, result = blocked(s.get)
    s.interrupt()  # nothing to hand over: it goes back to sleep
    time.sleep(0.1)
    assert thread.is_alive()
    s.stop()
    assert returns(thread, result) is STOP
    assert s.wakeups == 3  # the item, the interrupt and the stop: no timer


def test_stale_generation_is_refused_and_mend_reopens() -> None:
    s: Stage[int] = Stage(4)
    seen = s.generation
    s.interrupt()
    assert s.put(1, seen) is False and s.put(1) is True
    s.break_()
    assert s.put(2) is False and s.pending == 0
    s.mend()
    assert s.put(3) is True and s.queued() == [3]
