"""Every file voicechat writes: into a temporary file beside it, synced, then renamed.

A write that fails half-way (a full disk, a closed terminal ending the process) must not
destroy what was there: opening the target for writing truncates it at once. The rename is
atomic on POSIX, so the file is always either the old one or the whole new one.

::

    write_text(path, text)            # /save, the Markdown export
    with replacing(path) as temp:     # a writer that wants a path (readline's history)
        readline.write_history_file(temp)
    with opened(path) as f:           # a stream written piece by piece
        f.write(...)
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def replacing(path: Path | str) -> Iterator[Path]:
    """A temporary path in ``path``'s folder; renamed onto ``path`` when the block succeeds.

    The temporary file exists (empty) when the block starts, created with the permissions a
    new file gets (the umask), or the replaced file's own. On failure it is removed and the
    old file is left as it was.
    """
    target = Path(path)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(fd)
    try:
        with contextlib.suppress(OSError):
            os.chmod(temp, os.stat(target).st_mode & 0o7777)  # replacing: keep its mode
        yield temp
        _sync(temp)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _sync_folder(target.parent)


@contextlib.contextmanager
def opened(path: Path | str) -> Iterator[BinaryIO]:
    """A binary file to write; it replaces ``path`` only once closed without an error."""
    with replacing(path) as temp, open(temp, "wb") as stream:
        yield stream


def write_bytes(path: Path | str, data: bytes) -> None:
    """Replace ``path`` with ``data``, all or nothing.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_bytes(folder / "a.bin", b"one"); write_bytes(folder / "a.bin", b"two")
    >>> (folder / "a.bin").read_bytes(), sorted(p.name for p in folder.iterdir())
    (b'two', ['a.bin'])
    """
    with opened(path) as stream:
        stream.write(data)


def write_text(path: Path | str, text: str, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text``, all or nothing."""
    write_bytes(path, text.encode(encoding))


def _sync(path: Path) -> None:
    """The data on the disk before the rename makes it the file (else a crash leaves it empty)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    """The rename itself on the disk; some file systems cannot sync a folder: then it waits."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
