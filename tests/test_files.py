"""Every file voicechat writes is replaced whole or not at all (voicechat/files.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pexpect
import pytest

from tests.support.fakeservers import FakeServer, Script
from tests.support.ptys import reap
from tests.test_repl import ask, spawn
from voicechat import files


def fill(folder: Path) -> None:
    """Take all the space that is left."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == 28
    finally:
        os.close(fd)


def test_a_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "chat.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    files.write_text(target, "new ünïcode")
    assert target.read_text(encoding="utf-8") == "new ünïcode"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # a replaced file keeps its mode
    assert [p.name for p in tmp_path.iterdir()] == ["chat.json"]


def test_a_failing_writer_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "history"
    target.write_text("precious")
    with pytest.raises(RuntimeError), files.opened(target) as stream:
        stream.write(b"half")
        raise RuntimeError("the process is ending")
    assert target.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["history"]


def test_a_full_disk_keeps_the_old_file(small_disk: Path) -> None:
    target = small_disk / "chat.json"
    target.write_text("the conversation saved before\n")
    fill(small_disk)
    with pytest.raises(OSError) as caught:
        files.write_text(target, "x" * 200_000)
    assert caught.value.errno == 28  # ENOSPC
    assert target.read_text() == "the conversation saved before\n"
    assert sorted(p.name for p in small_disk.iterdir()) == ["chat.json", "filler"]


def test_save_on_a_full_disk_says_so_and_keeps_the_old_save(
    tmp_path: Path, small_disk: Path, ollama_server: FakeServer
) -> None:
    ollama_server.enqueue(Script(tokens=["a long answer " * 400]))
    target = small_disk / "chat.json"
    target.write_text('{"voicechat": 1, "turns": []}\n')
    fill(small_disk)
    child = spawn(tmp_path, ollama_server)
    ask(child, "talk a lot")
    shown = ask(child, f"/save {target}")
    assert "cannot write: No space left on device (nothing was changed)" in shown
    assert target.read_text() == '{"voicechat": 1, "turns": []}\n'
    assert sorted(p.name for p in small_disk.iterdir()) == ["chat.json", "filler"]
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def test_history_on_a_full_disk_keeps_the_old_history(
    tmp_path: Path, small_disk: Path, ollama_server: FakeServer
) -> None:
    history = small_disk / "voicechat" / "history"
    history.parent.mkdir()
    history.write_text("an old question\n")
    fill(small_disk)
    child = spawn(tmp_path, ollama_server, XDG_STATE_HOME=str(small_disk))
    ask(child, "/help a new line")  # not a byte is left for it

    child.sendline("/exit")
    child.expect(pexpect.EOF)
    reap(child)
    assert child.exitstatus == 0
    assert history.read_text() == "an old question\n"
    assert sorted(p.name for p in history.parent.iterdir()) == ["history"]
