"""`voicechat.doctor`: one test per failing line, against real local servers, real espeak-ng
and a real PulseAudio null sink (or none at all)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.fakeservers import FakeServer, Script, dead_port
from voicechat import doctor, tts
from voicechat.backends import settings_for
from voicechat.doctor import Check, run_checks
from voicechat.profile import LoadedProfile, ProfileSource
from voicechat.settings import Profile, TTSSettings

TEXT_ONLY = TTSSettings(engine="none")


def loaded(
    kind: str, url: str, model: str, tts: TTSSettings = TEXT_ONLY, **backend: object
) -> LoadedProfile:
    settings = settings_for(kind, base_url=url, model=model, **backend)
    source = ProfileSource("test", Path("/profiles/test.yaml"), "path")
    return LoadedProfile(source, Profile(backend=settings, tts=tts))


def checks(prof: LoadedProfile, api_key: str | None = None, **options: object) -> dict[str, Check]:
    rows = list(run_checks(prof, api_key, check_audio=False, **options))  # type: ignore[arg-type]
    names = [row.name for row in rows]
    assert len(names) == len(set(names)), names
    for row in rows:
        assert row.detail and "\n" not in row.detail
        if row.ok is False:
            assert row.fix, f"{row.name} fails without a fix: {row.detail}"
    return {row.name: row for row in rows}


# --- everything fine ---------------------------------------------------------------------------


def test_healthy_ollama_profile_passes_every_check(ollama_server: FakeServer) -> None:
    rows = checks(loaded("ollama", ollama_server.url, "qwen2.5:7b"))
    assert [name for name in rows] == [
        "python",
        "profile",
        "server",
        "model",
        "generation",
        "voice",
        "audio output",
        "service",  # tests/test_service.py checks it
    ]
    assert all(rows[n].ok for n in ("python", "profile", "server", "model", "generation"))
    assert "Ollama 0.12.6" in rows["server"].detail
    assert rows["generation"].detail.startswith("first token after ")
    assert rows["voice"].ok is None and rows["audio output"].ok is None  # text-only profile
    # the one-token request really asked for one token
    assert ollama_server.chats[-1].body["options"]["num_predict"] == 1


def test_healthy_openai_profile_passes_every_check(openai_server: FakeServer) -> None:
    rows = checks(loaded("openai", openai_server.url, "local-model"))
    assert rows["server"].ok and rows["model"].ok and rows["generation"].ok
    assert rows["api key"].ok is None  # OPENAI_API_KEY unset, and a local server needs none
    assert openai_server.chats[-1].body["max_tokens"] == 1


def test_rows_arrive_one_by_one(ollama_server: FakeServer) -> None:
    """A generator: the CLI shows the quick rows while the slow ones still run."""
    ollama_server.enqueue(Script(first_delay=1.0))
    rows = run_checks(loaded("ollama", ollama_server.url, "qwen2.5:7b"), None, check_audio=False)
    started = time.monotonic()
    assert next(rows).name == "python"
    assert time.monotonic() - started < 0.5
    assert [row.name for row in rows][-1] == "service"
    assert time.monotonic() - started >= 1.0


# --- the machine -------------------------------------------------------------------------------


def test_python_too_old_fails_with_the_version_needed() -> None:
    row = doctor.python_check((3, 9, 18))
    assert row.ok is False
    assert "3.9.18" in row.detail and "3.10" in row.fix


def test_python_on_this_machine_passes() -> None:
    row = doctor.python_check()
    assert row.ok is True
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in row.detail


def test_jetson_release_is_read_from_the_tegra_file(tmp_path: Path) -> None:
    release = tmp_path / "nv_tegra_release"
    release.write_text(
        "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, "
        "DATE: Mon May  6 17:34:21 UTC 2024\n# KERNEL_VARIANT: oot\n"
    )
    assert doctor.jetson_release(release) == "L4T R36.3.0"
    assert doctor.jetson_release(tmp_path / "missing") is None


# --- the server --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_dead_server_fails_fast_and_skips_what_depends_on_it(kind: str) -> None:
    url = f"http://127.0.0.1:{dead_port()}" + ("/v1" if kind == "openai" else "")
    started = time.monotonic()
    rows = checks(loaded(kind, url, "m"))
    assert time.monotonic() - started < 3
    assert rows["server"].ok is False
    assert "nothing answers" in rows["server"].detail
    assert ("systemctl start ollama" if kind == "ollama" else "start the server") in rows[
        "server"
    ].fix
    assert rows["model"].ok is None and rows["generation"].ok is None


def test_server_that_never_accepts_fails_within_the_probe_timeout(blackhole: str) -> None:
    started = time.monotonic()
    rows = checks(loaded("ollama", blackhole, "qwen2.5:7b"), probe_timeout=1.0)
    assert time.monotonic() - started < 4
    assert rows["server"].ok is False
    assert "within 1 s" in rows["server"].detail


def test_ollama_profile_pointing_at_another_server(openai_server: FakeServer) -> None:
    root = openai_server.url.removesuffix("/v1")
    rows = checks(loaded("ollama", root, "qwen2.5:7b"))
    assert rows["server"].ok is False
    assert "is not Ollama" in rows["server"].detail
    assert "kind: openai" in rows["server"].fix


def test_openai_base_url_without_v1(openai_server: FakeServer) -> None:
    root = openai_server.url.removesuffix("/v1")
    rows = checks(loaded("openai", root, "local-model"))
    assert rows["server"].ok is False
    assert "404" in rows["server"].detail
    assert f"{root}/v1" in rows["server"].fix


def test_openai_server_refusing_the_key() -> None:
    with FakeServer("openai", models=["local-model"], api_key="right") as server:
        rows = checks(loaded("openai", server.url, "local-model"), api_key="wrong")
    assert rows["api key"].ok is True
    assert rows["server"].ok is False
    assert "refused the API key (401)" in rows["server"].detail
    assert "export OPENAI_API_KEY=" in rows["server"].fix


def test_required_api_key_missing_skips_the_server(openai_server: FakeServer) -> None:
    prof = loaded(
        "openai",
        openai_server.url,
        "local-model",
        api_key_env="VOICECHAT_TEST_KEY",
        api_key_required=True,
    )
    rows = checks(prof, api_key=None)
    assert rows["api key"].ok is False
    assert rows["api key"].fix.startswith("export VOICECHAT_TEST_KEY=")
    assert rows["server"].ok is None and rows["generation"].ok is None
    assert openai_server.requests == []  # nothing was sent without the key


# --- the model -----------------------------------------------------------------------------------


def test_ollama_model_not_pulled_says_ollama_pull() -> None:
    with FakeServer("ollama", models=["llama3.2:latest"]) as server:
        rows = checks(loaded("ollama", server.url, "qwen2.5:7b"))
    assert rows["server"].ok is True
    assert rows["model"].ok is False
    assert "llama3.2:latest" in rows["model"].detail
    assert rows["model"].fix == "ollama pull qwen2.5:7b"
    assert rows["generation"].ok is False  # the server's own 404, translated
    assert rows["generation"].fix == "ollama pull qwen2.5:7b"


def test_ollama_model_without_tag_matches_latest() -> None:
    with FakeServer("ollama", models=["llama3.2:latest"]) as server:
        rows = checks(loaded("ollama", server.url, "llama3.2"), probe_timeout=2)
    assert rows["model"].ok is True


def test_openai_model_not_listed_names_the_listed_ones() -> None:
    with FakeServer("openai", models=["gemma3-270m"], check_model=False) as server:
        rows = checks(loaded("openai", server.url, "local-model"))
    assert rows["model"].ok is False
    assert "gemma3-270m" in rows["model"].detail and "gemma3-270m" in rows["model"].fix


# --- the one-token generation -------------------------------------------------------------------


def test_generation_server_error(openai_server: FakeServer) -> None:
    openai_server.enqueue(Script(status=500, body="llama_decode failed"))
    rows = checks(loaded("openai", openai_server.url, "local-model"))
    assert rows["server"].ok is True
    assert rows["generation"].ok is False
    assert "500" in rows["generation"].detail
    assert "log" in rows["generation"].fix


@pytest.mark.parametrize("script", [Script(finish=None), Script(fault="empty")], ids=str)
def test_generation_without_an_end_is_a_failure(openai_server: FakeServer, script: Script) -> None:
    openai_server.enqueue(script)
    rows = checks(loaded("openai", openai_server.url, "local-model"))
    assert rows["generation"].ok is False
    assert "log" in rows["generation"].fix


def test_generation_error_line_mid_stream(ollama_server: FakeServer) -> None:
    ollama_server.enqueue(Script(fault="error_line"))
    rows = checks(loaded("ollama", ollama_server.url, "qwen2.5:7b"))
    assert rows["generation"].ok is False
    assert rows["generation"].fix


def test_generation_that_does_not_answer_in_time(ollama_server: FakeServer) -> None:
    ollama_server.enqueue(Script(first_delay=5.0))
    started = time.monotonic()
    rows = checks(loaded("ollama", ollama_server.url, "qwen2.5:7b"), generation_timeout=0.5)
    assert time.monotonic() - started < 3
    assert rows["generation"].ok is False
    assert "read_timeout" in rows["generation"].fix


# --- the voice -----------------------------------------------------------------------------------


def test_pyttsx3_speaks_english_and_chinese() -> None:
    rows = {row.name: row for row in tts.checks(TTSSettings(engine="pyttsx3"))}
    assert rows["voice"].ok is True and rows["voice (zh)"].ok is True
    assert "cmn" in rows["voice (zh)"].detail  # espeak's Mandarin voice, not the English one
    assert "s of speech" in rows["voice"].detail


def test_unknown_voice_fails_with_the_profile_key() -> None:
    rows = list(tts.checks(TTSSettings(engine="pyttsx3", voice="no-such-voice")))
    assert [(r.name, r.ok) for r in rows] == [("voice", False)]
    assert "no-such-voice" in rows[0].detail
    assert "voicechat voices" in rows[0].fix


def test_no_chinese_voice_is_a_failing_line() -> None:
    """Chinese given to the English voice is read as gibberish: the user must know."""
    settings = TTSSettings(engine="pyttsx3", voice="gmw/en", voice_zh="gmw/en")
    rows = {row.name: row for row in tts.checks(settings)}
    assert rows["voice"].ok is True
    assert rows["voice (zh)"].ok is False
    assert "tts.voice_zh" in rows["voice (zh)"].fix


def test_piper_without_its_model_fails(tmp_path: Path) -> None:
    settings = TTSSettings(engine="piper", model=str(tmp_path / "missing.onnx"))
    rows = list(tts.checks(settings))
    assert [(r.name, r.ok) for r in rows] == [("voice", False)]
    assert "missing.onnx" in rows[0].detail


def test_text_only_profile_needs_no_voice() -> None:
    rows = list(tts.checks(TEXT_ONLY))
    assert [(r.name, r.ok) for r in rows] == [("voice", None)]


def test_peak_of_silence_and_sound() -> None:
    assert tts.peak(b"\x00\x00" * 10) == 0
    assert tts.peak((-1234).to_bytes(2, "little", signed=True) + b"\x01\x00") == 1234


# --- the audio device (in a fresh process: PortAudio lists devices once, at import) ------------


def audio_row(env: dict[str, str], device: str | None = None) -> dict[str, object]:
    code = (
        "import dataclasses, json, sys\n"
        "from voicechat.audio.playback import checks\n"
        "from voicechat.settings import TTSSettings\n"
        "device = sys.argv[1] or None\n"
        "print(json.dumps(dataclasses.asdict(next(checks(TTSSettings(device=device))))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, device or ""],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_audio_output_on_the_null_sink(null_sink) -> None:
    row = audio_row({**os.environ, **null_sink.env})
    assert row["ok"] is True, row
    assert "accepts audio" in str(row["detail"])


def test_audio_output_device_that_does_not_exist(null_sink) -> None:
    row = audio_row({**os.environ, **null_sink.env}, device="no-such-device")
    assert row["ok"] is False
    assert "no-such-device" in str(row["detail"])
    assert "set tts.device to one of" in str(row["fix"])


def test_no_audio_output_at_all(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE")}
    # a server address where nothing listens: libpulse neither finds one nor autospawns one
    env.update(PULSE_SERVER=f"unix:{tmp_path}/no-pulse", HOME=str(tmp_path))
    row = audio_row(env)
    assert row["ok"] is False
    assert "no audio output device" in str(row["detail"])
    assert "PulseAudio" in str(row["fix"])


def test_portaudio_missing_says_apt_get(tmp_path: Path) -> None:
    """sounddevice without libportaudio2: a real import failure, forced by hiding the library."""
    code = (
        "import ctypes.util, dataclasses, json\n"
        "ctypes.util.find_library = lambda name: None\n"  # what a box without PortAudio sees
        "import sys\n"
        "from voicechat.audio.playback import checks\n"
        "from voicechat.settings import TTSSettings\n"
        "print(json.dumps(dataclasses.asdict(next(checks(TTSSettings())))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["ok"] is False
    assert row["fix"] == "apt-get install libportaudio2"


def test_devices_without_portaudio_is_one_line_and_exit_11() -> None:
    """`voicechat devices` on a box without libportaudio2: one line with the fix (it was a
    traceback), the same real import failure as above."""
    code = (
        "import ctypes.util, sys\n"
        "ctypes.util.find_library = lambda name: None\n"
        "sys.argv = ['voicechat', 'devices']\n"
        "from voicechat.__main__ import main\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 11, result.stderr
    assert result.stderr == (
        "voicechat: error: PortAudio library not found: apt-get install libportaudio2\n"
    )
