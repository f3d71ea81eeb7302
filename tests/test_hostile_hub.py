"""A hostile or broken hub (tests/hub.py's hostile modes, HF_ENDPOINT at 127.0.0.1): whatever
it sends, voicechat writes nothing outside its folders, prints no secret, does not hang, and
says what happened in one line with the documented exit code (10: a model or voice file could
not be downloaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub import Hub, hub_env
from voicechat import voices

pytest.importorskip("huggingface_hub")

NAME = "en_US-tiny-medium"
FOLDER = "en/en_US/tiny/medium"
MODEL = b"not really an onnx model, but the bytes the catalog lists" * 10
CONFIG = json.dumps({"audio": {"sample_rate": 22050}, "language": {"code": "en_US"}})
ALLOWED = ("data", "cache", "hf", "config")
"""voicechat's folders under the test's home (XDG_DATA_HOME, XDG_CACHE_HOME, HF_HOME, ...)."""


def entry(key: str, files: dict[str, bytes | str]) -> dict[str, object]:
    """A voices.json entry of the real shape listing ``files`` (path -> content)."""
    import hashlib

    listed = {
        path: {
            "size_bytes": len(data.encode() if isinstance(data, str) else data),
            "md5_digest": hashlib.md5(data.encode() if isinstance(data, str) else data).hexdigest(),
        }
        for path, data in files.items()
    }
    return {
        "key": key,
        "language": {"code": "en_US", "name_native": "English", "name_english": "English"},
        "quality": "medium",
        "num_speakers": 1,
        "files": listed,
        "aliases": [],
    }


def serve_voice(hub: Hub, key: str, files: dict[str, bytes | str], name: str = NAME) -> None:
    """Serve ``files`` and a catalog listing them as the voice ``name`` (entry key ``key``)."""
    for path, data in files.items():
        hub.add(voices.REPO, path, data)
    catalog = {name: entry(key, files)}
    hub.add(voices.REPO, voices.CATALOG, json.dumps(catalog))


def cli(hub: Hub, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **hub_env(hub, home), "XDG_CONFIG_HOME": str(home / "config")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "voicechat", *args],
        capture_output=True, text=True, timeout=60, env=full, cwd=home,
    )  # fmt: skip


def written_outside(home: Path) -> list[str]:
    """Files under ``home`` that are not in one of voicechat's folders."""
    return sorted(
        str(p.relative_to(home))
        for p in home.rglob("*")
        if not p.is_dir() and p.relative_to(home).parts[0] not in ALLOWED
    )


def one_error_line(result: subprocess.CompletedProcess[str], code: int = 10) -> str:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("voicechat: error: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


# --- names from the catalog never choose a path -----------------------------------------------


@pytest.mark.parametrize(
    "key, files",
    [
        ("../../../../victim", {f"{FOLDER}/{NAME}.onnx": MODEL}),
        ("/tmp/voicechat-absolute-victim", {f"{FOLDER}/{NAME}.onnx": MODEL}),
        (NAME, {"en/.bashrc": "echo pwned"}),
        ("../../../..", {"en/.bashrc": "echo pwned"}),
        (NAME, {f"{FOLDER}/../../../../../../victim.onnx": MODEL}),
        (NAME, {f"/{FOLDER}/{NAME}.onnx": MODEL}),
        ("en_US-\x1b[2Jtiny", {f"{FOLDER}/{NAME}.onnx": MODEL}),
        (NAME, {f"{FOLDER}/{NAME}\n.onnx": MODEL}),
    ],
    ids=["dotdot-key", "absolute-key", "dotfile", "dotdot-key-dotfile", "dotdot-file",
         "absolute-file", "escape-key", "newline-file"],
)  # fmt: skip
def test_a_catalog_name_that_would_choose_a_path_is_refused(
    hub: Hub, tmp_path: Path, key: str, files: dict[str, bytes | str]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    serve_voice(hub, key, {**files, f"{FOLDER}/{NAME}.onnx.json": CONFIG})
    result = cli(hub, home, "voices", "pull", NAME, HOME=str(home))
    line = one_error_line(result)
    assert NAME in line and "refused" in line and "HF_ENDPOINT" in line
    assert "\x1b" not in result.stderr
    assert written_outside(home) == []
    assert not Path("/tmp/voicechat-absolute-victim").exists()
    assert not (home / "data" / "voicechat" / "voices" / NAME).exists()
    # the listing leaves the refused entry out instead of failing
    listed = cli(hub, home, "voices", "--available", HOME=str(home))
    assert listed.returncode == 0, listed.stderr
    assert "0 voices in rhasspy/piper-voices" in listed.stderr


def test_a_voice_folder_that_is_a_link_out_of_the_data_folder_is_refused(
    hub: Hub, tmp_path: Path
) -> None:
    """A symbolic link planted where the voice's folder goes must not lead the files out."""
    home = tmp_path / "home"
    victim = home / "victim"
    victim.mkdir(parents=True)
    folder = home / "data" / "voicechat" / "voices"
    folder.mkdir(parents=True)
    (folder / NAME).symlink_to(victim)
    serve_voice(hub, NAME, {f"{FOLDER}/{NAME}.onnx": MODEL, f"{FOLDER}/{NAME}.onnx.json": CONFIG})
    line = one_error_line(cli(hub, home, "voices", "pull", NAME, HOME=str(home)))
    assert "leads outside" in line
    assert list(victim.iterdir()) == []


def test_a_safe_catalog_still_pulls(hub: Hub, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    serve_voice(hub, NAME, {f"{FOLDER}/{NAME}.onnx": MODEL, f"{FOLDER}/{NAME}.onnx.json": CONFIG})
    result = cli(hub, home, "voices", "pull", NAME, HOME=str(home))
    assert result.returncode == 0, result.stderr
    pulled = home / "data" / "voicechat" / "voices" / NAME
    assert sorted(p.name for p in pulled.iterdir()) == [f"{NAME}.onnx", f"{NAME}.onnx.json"]
    assert written_outside(home) == []
