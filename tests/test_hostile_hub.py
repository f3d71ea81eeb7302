"""A hostile or broken hub (tests/support/hub.py: hostile modes; HF_ENDPOINT at 127.0.0.1): whatever
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

from tests.support.fakeservers import dead_port
from tests.support.hub import Hub, hub_env
from voicechat.errors import ConfigError, ModelError
from voicechat.tts import piper_voices

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
        hub.add(piper_voices.REPO, path, data)
    catalog = {name: entry(key, files)}
    hub.add(piper_voices.REPO, piper_voices.CATALOG, json.dumps(catalog))


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
    serve_voice(hub, key, {**files, f"{FOLDER}/{NAME}.onnx.json": CONFIG})
    with pytest.raises(ModelError) as caught:
        piper_voices.pull(NAME)
    line = str(caught.value)
    assert "\n" not in line and "\x1b" not in line
    assert NAME in line and "refused" in line and "HF_ENDPOINT" in line
    assert written_outside(tmp_path) == []
    assert not Path("/tmp/voicechat-absolute-victim").exists()
    assert not (piper_voices.voices_dir() / NAME).exists()
    assert piper_voices.available() == []  # the listing leaves the refused entry out


def test_pulling_a_refused_voice_is_one_line_and_exit_10(hub: Hub, tmp_path: Path) -> None:
    """The case that replaced a user's .bashrc: a key of ../.. and a file named .bashrc."""
    home = tmp_path / "home"
    home.mkdir()
    serve_voice(hub, "../../../..", {"en/.bashrc": "echo pwned"})
    line = one_error_line(cli(hub, home, "voices", "pull", NAME, HOME=str(home)))
    assert "voice name '../../../..' is not a safe file name" in line and "HF_ENDPOINT" in line
    assert written_outside(home) == []
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


# --- one line per failure, with its cause, quickly, and no secret -----------------------------

PASSWORD = "hunter2-secret-pw"


def with_password(url: str) -> str:
    return url.replace("http://", f"http://mirror-user:{PASSWORD}@")


def closed_port() -> str:
    return f"http://127.0.0.1:{dead_port()}"


@pytest.mark.parametrize(
    "fault, words, not_words",
    [
        ("unreachable", ["cannot reach", "connection refused", "check the network"], []),
        ("500", ["answered HTTP 500", "failing", "try again later"], ["check the network"]),
        ("503", ["answered HTTP 503"], ["check the network"]),
        ("429", ["answered HTTP 429"], ["check the network"]),
        ("403", ["refused", "HTTP 403", "HF_TOKEN"], ["check the network"]),
        ("404", ["has no file voices.json", "HF_ENDPOINT"], ["check the name"]),
        ("loop", ["redirects in a loop", "HF_ENDPOINT"], ["check the network"]),
    ],
)
def test_a_failing_mirror_is_one_line_with_its_cause_and_no_password(
    hub: Hub, tmp_path: Path, fault: str, words: list[str], not_words: list[str]
) -> None:
    import time

    serve_voice(hub, NAME, {f"{FOLDER}/{NAME}.onnx": MODEL})
    url = closed_port() if fault == "unreachable" else hub.url
    if fault.isdigit() and fault != "404":
        hub.status[piper_voices.CATALOG] = int(fault)
    elif fault == "404":
        hub.missing.add(piper_voices.CATALOG)
    elif fault == "loop":
        hub.loops.add(piper_voices.CATALOG)
    started = time.monotonic()
    result = cli(hub, tmp_path, "voices", "--available", HF_ENDPOINT=with_password(url))
    took = time.monotonic() - started
    line = one_error_line(result)
    assert all(w in line for w in words), line
    assert not any(w in line for w in not_words), line
    assert PASSWORD not in result.stderr + result.stdout
    assert "http://***@127.0.0.1" in line  # which mirror, without its password
    assert took < 10, f"{took:.1f} s: retried"
    asked = [r for r in hub.requests if r.path.endswith(piper_voices.CATALOG)]
    assert len(asked) <= (20 if fault == "loop" else 1), "retried"


@pytest.mark.parametrize("fault", ["unreachable", "500"])
def test_a_failing_mirror_leaves_the_cached_catalog_usable(
    hub: Hub, tmp_path: Path, fault: str
) -> None:
    serve_voice(hub, NAME, {f"{FOLDER}/{NAME}.onnx": MODEL})
    assert cli(hub, tmp_path, "voices", "--available").returncode == 0  # cached now
    if fault == "500":
        hub.status[piper_voices.CATALOG] = 500
    url = closed_port() if fault == "unreachable" else hub.url
    result = cli(hub, tmp_path, "voices", "--available", HF_ENDPOINT=url)
    assert result.returncode == 0, result.stderr
    assert NAME in result.stdout and "error" not in result.stderr


def test_the_hubs_own_log_lines_are_redacted_when_asked_for(hub: Hub, tmp_path: Path) -> None:
    serve_voice(hub, NAME, {f"{FOLDER}/{NAME}.onnx": MODEL})
    result = cli(
        hub, tmp_path, "voices", "--available",
        HF_ENDPOINT=with_password(hub.url), HF_HUB_VERBOSITY="debug", HF_DEBUG="1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "HEAD http://***@127.0.0.1" in result.stderr  # huggingface_hub's debug lines
    assert PASSWORD not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "header, value",
    [
        ("ETag", '"../../../../escaped"'),
        ("ETag", '"/tmp/voicechat-escaped"'),
        ("X-Repo-Commit", "../../../../escaped"),
        ("X-Repo-Commit", None),
    ],
    ids=["etag-dotdot", "etag-absolute", "commit-dotdot", "no-commit"],
)
def test_a_header_that_would_name_a_file_in_the_cache_is_refused(
    hub: Hub, tmp_path: Path, header: str, value: str | None
) -> None:
    """huggingface_hub names the cached file by the hub's ETag and its folder by the commit."""
    home = tmp_path / "home"
    home.mkdir()
    serve_voice(hub, NAME, {f"{FOLDER}/{NAME}.onnx": MODEL})
    hub.headers[piper_voices.CATALOG] = {header: value}
    line = one_error_line(cli(hub, home, "voices", "--available"))
    assert "HF_ENDPOINT" in line
    assert (header if value else "no commit id") in line
    assert written_outside(home) == [] and not Path("/tmp/voicechat-escaped").exists()
    assert not list(tmp_path.glob("escaped*"))


# --- catalogs and voice configs that are not of their shape -----------------------------------


def test_a_catalog_nested_too_deeply_is_one_line(hub: Hub, tmp_path: Path) -> None:
    hub.add(piper_voices.REPO, piper_voices.CATALOG, "[" * 200_000 + "]" * 200_000)
    line = one_error_line(cli(hub, tmp_path, "voices", "--available"))
    assert "not a Piper voice catalog (nested too deeply)" in line and "HF_ENDPOINT" in line


@pytest.mark.parametrize(
    "field, value",
    [
        ("size_bytes", "1e400"),
        ("size_bytes", "Infinity"),
        ("size_bytes", "NaN"),
        ("size_bytes", "1" + "0" * 400),
        ("size_bytes", "-5"),
        ("size_bytes", "true"),
        ("size_bytes", '"570"'),
        ("md5_digest", '"../../x"'),
        ("num_speakers", "1e400"),
        ("num_speakers", "1" + "0" * 400),
        ("aliases", '"abc"'),
        ("language", '"en"'),
    ],
)
def test_a_catalog_entry_with_hostile_values_is_left_out_and_pulling_it_says_why(
    hub: Hub, field: str, value: str
) -> None:
    serve_catalog_with_a_bad_entry(hub, field, value)
    assert [v.key for v in piper_voices.available()] == [NAME]
    with pytest.raises(ModelError) as caught:
        piper_voices.pull("en_US-bad-medium")
    line = str(caught.value)
    assert "en_US-bad-medium" in line and "not readable" in line and field in line, line
    assert "\n" not in line and len(line) < 400


@pytest.mark.parametrize("value", ["1e400", "1" + "0" * 400], ids=["1e400", "10**400"])
def test_the_listing_of_a_catalog_with_huge_sizes_is_no_traceback(
    hub: Hub, tmp_path: Path, value: str
) -> None:
    """Its MB column once divided 10**400 by 1e6 (OverflowError)."""
    serve_catalog_with_a_bad_entry(hub, "size_bytes", value)
    listed = cli(hub, tmp_path, "voices", "--available")
    assert listed.returncode == 0, listed.stderr
    assert NAME in listed.stdout and "bad" not in listed.stdout
    line = one_error_line(cli(hub, tmp_path, "voices", "pull", "en_US-bad-medium"))
    assert "size_bytes" in line


def serve_catalog_with_a_bad_entry(hub: Hub, field: str, value: str) -> None:
    """A catalog with the tiny voice and ``en_US-bad-medium``, whose ``field`` is ``value``
    (JSON text, so that 1e400 and 10**400 reach the parser as they are)."""
    good = entry(NAME, {f"{FOLDER}/{NAME}.onnx": MODEL})
    bad = entry("en_US-bad-medium", {f"{FOLDER}/{NAME}.onnx": MODEL})
    placeholder = "@@VALUE@@"
    if field in ("size_bytes", "md5_digest"):
        bad["files"][f"{FOLDER}/{NAME}.onnx"][field] = placeholder  # type: ignore[index]
    else:
        bad[field] = placeholder
    text = json.dumps({NAME: good, "en_US-bad-medium": bad}).replace(f'"{placeholder}"', value)
    hub.add(piper_voices.REPO, f"{FOLDER}/{NAME}.onnx", MODEL)
    hub.add(piper_voices.REPO, piper_voices.CATALOG, text)


def pulled_voice(hub: Hub, home: Path) -> Path:
    """Pull the tiny voice; its config's path (to be spoiled)."""
    serve_voice(hub, NAME, {f"{FOLDER}/{NAME}.onnx": MODEL, f"{FOLDER}/{NAME}.onnx.json": CONFIG})
    result = cli(hub, home, "voices", "pull", NAME)
    assert result.returncode == 0, result.stderr
    return home / "data" / "voicechat" / "voices" / NAME / f"{NAME}.onnx.json"


SPOILED = {
    "list": "[]",
    "audio-list": '{"audio": []}',
    "rate-1e400": '{"audio": {"sample_rate": 1e400}}',
    "rate-10**400": '{"audio": {"sample_rate": 1' + "0" * 400 + "}}",
    "rate-zero": '{"audio": {"sample_rate": 0}}',
    "language-string": '{"audio": {"sample_rate": 22050}, "language": "en"}',
    "speakers-list": '{"audio": {"sample_rate": 22050}, "speaker_id_map": [1, 2]}',
    "nested": "[" * 200_000 + "]" * 200_000,
}


@pytest.mark.parametrize("spoiled", ["list", "rate-1e400"])
def test_a_pulled_voice_config_of_the_wrong_shape_falls_back_to_espeak(
    hub: Hub, tmp_path: Path, spoiled: str
) -> None:
    """`voices`, `doctor` and `say` speak with tts.fallback; without one, one line. (Two
    shapes here, for the AttributeError and the OverflowError; all of them below.)"""
    config = pulled_voice(hub, tmp_path)
    config.unlink()  # a new file: the pulled one is a hard link to the verified cache
    config.write_text(SPOILED[spoiled])
    profiles = tmp_path / "config" / "voicechat" / "profiles"
    profiles.mkdir(parents=True)
    backend = "backend: {kind: ollama, base_url: 'http://127.0.0.1:9', model: m}\n"
    (profiles / "fallback.yaml").write_text(
        backend + f"tts: {{engine: piper, voice: {NAME}, fallback: pyttsx3}}\n"
    )
    (profiles / "strict.yaml").write_text(backend + f"tts: {{engine: piper, voice: {NAME}}}\n")

    listed = cli(hub, tmp_path, "voices", "-p", "fallback")
    assert listed.returncode == 0, listed.stderr
    assert "voices of engine pyttsx3" in listed.stderr and "Traceback" not in listed.stderr
    doctor = cli(hub, tmp_path, "doctor", "--no-audio", "-p", "fallback")
    assert "Traceback" not in doctor.stderr + doctor.stdout
    assert "speaking with tts.fallback pyttsx3" in doctor.stdout + doctor.stderr
    wav = tmp_path / "said.wav"
    said = cli(hub, tmp_path, "say", "-p", "fallback", "--mute", "--save-audio", str(wav), "Hi.")
    assert said.returncode == 0, said.stderr
    assert wav.stat().st_size > 1000 and "Traceback" not in said.stderr

    strict = cli(hub, tmp_path, "say", "-p", "strict", "--mute", "--save-audio", str(wav), "Hi.")
    line = one_error_line(strict, strict.returncode)
    assert strict.returncode in (2, 13)
    assert "not a" in line and "Piper voice config" in line and f"voices pull {NAME}" in line
    # and what it says mends it
    assert cli(hub, tmp_path, "voices", "pull", NAME).returncode == 0
    assert config.read_text() == CONFIG


@pytest.mark.parametrize("spoiled", list(SPOILED))
def test_every_spoiled_voice_config_is_a_config_error_and_the_fallback_speaks(
    hub: Hub, tmp_path: Path, spoiled: str
) -> None:
    from voicechat.settings import TTSSettings
    from voicechat.tts import list_voices, rate_hint, speaking_engine

    config = piper_voices.voices_dir() / NAME / f"{NAME}.onnx.json"
    config.parent.mkdir(parents=True)
    config.with_suffix("").write_bytes(MODEL)
    config.write_text(SPOILED[spoiled])
    with pytest.raises(ConfigError) as caught:
        piper_voices.read_config(config.with_suffix(""))
    line = str(caught.value)
    assert "\n" not in line and "Piper voice config" in line and f"voices pull {NAME}" in line
    settings = TTSSettings(engine="piper", voice=NAME, fallback="pyttsx3")
    assert rate_hint(settings) is None
    assert speaking_engine(settings) == "pyttsx3" and list_voices(settings)


def test_ask_speaks_with_the_fallback_when_the_voice_config_says_1e400(
    hub: Hub, tmp_path: Path, ollama_server: object
) -> None:
    from tests.support.fakeservers import Script

    config = pulled_voice(hub, tmp_path)
    config.unlink()
    config.write_text(SPOILED["rate-1e400"])
    profiles = tmp_path / "config" / "voicechat" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "p.yaml").write_text(
        f"backend: {{kind: ollama, base_url: '{ollama_server.url}', model: qwen2.5:7b}}\n"  # type: ignore[attr-defined]
        f"tts: {{engine: piper, voice: {NAME}, fallback: pyttsx3}}\n"
    )
    ollama_server.enqueue(Script(tokens=["Hello there."]))  # type: ignore[attr-defined]
    wav = tmp_path / "reply.wav"
    result = cli(hub, tmp_path, "ask", "-p", "p", "--mute", "--save-audio", str(wav), "Hi?")
    assert result.returncode == 0, result.stderr
    assert "Hello there." in result.stdout and "Traceback" not in result.stderr
    assert wav.stat().st_size > 1000


# --- downloads that would never end -----------------------------------------------------------


@pytest.mark.parametrize("what", ["voice file", "catalog"])
def test_a_download_bigger_than_announced_stops_at_the_first_byte_too_many(
    hub: Hub, tmp_path: Path, what: str
) -> None:
    """3 GB where the catalog (or, for the catalog itself, the hub's HEAD) says a few bytes."""
    import time

    serve_voice(hub, NAME, {f"{FOLDER}/{NAME}.onnx": MODEL, f"{FOLDER}/{NAME}.onnx.json": CONFIG})
    path = f"{FOLDER}/{NAME}.onnx" if what == "voice file" else piper_voices.CATALOG
    hub.extra[path] = 3 << 30
    started = time.monotonic()
    args = ("voices", "pull", NAME) if what == "voice file" else ("voices", "--available")
    line = one_error_line(cli(hub, tmp_path, *args))
    assert time.monotonic() - started < 20
    assert "sent more than the" in line and "bytes announced" in line and "HF_ENDPOINT" in line
    assert hub.sent[path] < 64 << 20  # what the sockets' buffers took, not 3 GB
    blobs = list((tmp_path / "hf").rglob("*"))
    assert sum(p.stat().st_size for p in blobs if p.is_file()) < 1 << 20


def test_a_hub_announcing_another_size_than_the_catalog_is_refused(
    hub: Hub, tmp_path: Path
) -> None:
    serve_voice(hub, NAME, {f"{FOLDER}/{NAME}.onnx": MODEL, f"{FOLDER}/{NAME}.onnx.json": CONFIG})
    catalog = {NAME: entry(NAME, {f"{FOLDER}/{NAME}.onnx": MODEL[:100]})}
    hub.add(piper_voices.REPO, piper_voices.CATALOG, json.dumps(catalog))
    line = one_error_line(cli(hub, tmp_path, "voices", "pull", NAME))
    assert f"announces {len(MODEL)} bytes where the catalog says 100" in line
    assert not hub.gets(f"{FOLDER}/{NAME}.onnx")  # refused before the download


def test_a_compressed_body_is_refused(hub: Hub, tmp_path: Path) -> None:
    """A few compressed KB can unpack to gigabytes that no size check counted."""
    serve_voice(hub, NAME, {f"{FOLDER}/{NAME}.onnx": MODEL})
    hub.headers[piper_voices.CATALOG] = {"Content-Encoding": "gzip"}
    line = one_error_line(cli(hub, tmp_path, "voices", "--available"))
    assert "compressed" in line


def test_a_drip_feed_stops_at_the_pace_deadline(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from voicechat import hf_hub
    from voicechat.errors import ModelError

    monkeypatch.setattr(hf_hub, "PACE_SECONDS", 1.0)  # 30 s in real use
    serve_voice(
        hub, NAME, {f"{FOLDER}/{NAME}.onnx": MODEL * 4, f"{FOLDER}/{NAME}.onnx.json": CONFIG}
    )
    hub.drip[f"{FOLDER}/{NAME}.onnx"] = 0.01  # 100 bytes a second: the file would take 23 s
    started = time.monotonic()
    with pytest.raises(ModelError) as caught:
        piper_voices.pull(NAME)
    took = time.monotonic() - started
    assert "too slow" in str(caught.value) and "\n" not in str(caught.value)
    assert took < 6, f"{took:.1f} s"
    assert not piper_voices.is_pulled(NAME)


def test_a_file_where_the_voice_folder_goes_is_one_line_and_kept(hub: Hub, tmp_path: Path) -> None:
    serve_voice(hub, NAME, {f"{FOLDER}/{NAME}.onnx": MODEL, f"{FOLDER}/{NAME}.onnx.json": CONFIG})
    folder = tmp_path / "data" / "voicechat" / "voices"
    folder.mkdir(parents=True)
    (folder / NAME).write_text("the user's")
    line = one_error_line(cli(hub, tmp_path, "voices", "pull", NAME))
    assert "is a file where voicechat keeps a folder" in line
    assert (folder / NAME).read_text() == "the user's"
