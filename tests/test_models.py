"""models.fetch against the local hub (tests/support/hub.py): real HTTP, the real
huggingface_hub."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


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
