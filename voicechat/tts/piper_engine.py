"""Piper: a neural voice from an ``.onnx`` model (optional extra: ``voicechat[piper]``).

The model is loaded once (1-2 s, ~160 MB), in the speaker's synthesis worker while the
model server is still thinking. ``tts.model`` is the English/main model; ``tts.voice_zh``
may name a second model file used for Chinese chunks (loaded on the first one).
``tts.voice`` picks a speaker of a multi-speaker model. ``tts.rate`` maps to Piper's
length scale relative to 175 words per minute.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicechat.errors import ConfigError, SpeechError
from voicechat.tts import Audio, VoiceInfo

if TYPE_CHECKING:
    from collections.abc import Iterator

    from voicechat.checks import Check
    from voicechat.settings import TTSSettings
    from voicechat.speakable import Lang

PIPER_HINT = "pip install 'voicechat[piper]'"
BASE_RATE = 175
"""``tts.rate`` at which Piper speaks at its model's natural speed."""


def _model_file(value: str | None, key: str) -> Path:
    if not value:
        raise ConfigError(
            f"tts.{key} is not set: piper needs the path to a voice model (.onnx, with its "
            ".onnx.json beside it)"
        )
    from voicechat.tts import piper_voices

    path = Path(piper_voices.resolve(value) or value).expanduser()
    if not path.is_file():
        raise ConfigError(piper_voices.missing_model(key, value))
    if not Path(f"{path}.json").is_file():
        raise ConfigError(f"tts.{key} {value}: its config {path.name}.json is missing beside it")
    return path


def _model_setting(settings: TTSSettings) -> tuple[str | None, str]:
    """``tts.model``, else ``tts.voice`` when it names a pulled voice (voicechat voices pull)."""
    from voicechat.tts import piper_voices

    return piper_voices.piper_model(settings.model, settings.voice)


def _config(model: Path) -> dict[str, Any]:
    from voicechat.tts import piper_voices

    return piper_voices.read_config(model)


def _voices_of(model: Path, config: dict[str, Any]) -> list[VoiceInfo]:
    language = config.get("language", {}).get("code") or config.get("espeak", {}).get("voice")
    languages = (str(language),) if language else ()
    speakers = config.get("speaker_id_map") or {}
    if not speakers:
        return [VoiceInfo(id=model.stem, name=model.stem, languages=languages)]
    return [
        VoiceInfo(id=name, name=f"{model.stem} {name}", languages=languages) for name in speakers
    ]


def model_voices(settings: TTSSettings) -> list[VoiceInfo]:
    """The voices (speakers) of the profile's model(s), without loading them."""
    models = [_model_file(*_model_setting(settings))]
    if settings.voice_zh:
        models.append(_model_file(settings.voice_zh, "voice_zh"))
    return [voice for model in models for voice in _voices_of(model, _config(model))]


def _import_piper() -> Any:
    try:
        import piper
    except ImportError as exc:
        raise SpeechError(f"the piper engine is not installed ({exc}): {PIPER_HINT}") from exc
    return piper


class PiperEngine:
    """Piper voices; create and use from one thread."""

    def __init__(self, settings: TTSSettings) -> None:
        self._settings = settings
        self._model = _model_file(*_model_setting(settings))
        self._model_zh = _model_file(settings.voice_zh, "voice_zh") if settings.voice_zh else None
        if self._model_zh is not None:
            _config(self._model_zh)  # checked now: loaded at the first Chinese piece
        config = _config(self._model)
        self._voices = _voices_of(self._model, config)
        speakers: dict[str, int] = config.get("speaker_id_map") or {}
        self._speaker: int | None = None
        if settings.voice and speakers:
            if settings.voice not in speakers:
                raise ConfigError(
                    f"tts.voice {settings.voice!r} is not a speaker of {self._model.name}: "
                    f"try {', '.join(list(speakers)[:8])}"
                )
            self._speaker = speakers[settings.voice]
        elif settings.voice and settings.voice != self._model.stem:
            raise ConfigError(
                f"tts.voice {settings.voice!r}: {self._model.name} has one voice "
                f"({self._model.stem}); leave tts.voice empty"
            )
        if settings.rate <= 0:
            raise ConfigError(f"tts.rate {settings.rate} must be positive")
        piper = _import_piper()
        self._piper = piper
        self._voice = self._load(self._model)
        self._voice_zh: Any = None

    def _load(self, model: Path) -> Any:
        try:
            return self._piper.PiperVoice.load(model)
        except Exception as exc:  # onnxruntime raises its own types for bad models
            raise SpeechError(f"piper could not load {model.name}: {exc}") from exc

    def voices(self) -> list[VoiceInfo]:
        return list(self._voices)

    def synthesize(self, text: str, lang: Lang) -> Audio:
        """All of ``text`` as one piece (Piper yields one chunk per sentence)."""
        voice, speaker = self._voice, self._speaker
        if lang == "zh" and self._model_zh is not None:
            if self._voice_zh is None:
                self._voice_zh = self._load(self._model_zh)
            voice, speaker = self._voice_zh, None
        config = self._piper.SynthesisConfig(
            speaker_id=speaker,
            length_scale=BASE_RATE / self._settings.rate,
            volume=self._settings.volume,
        )
        pieces: list[bytes] = []
        rate = int(voice.config.sample_rate)
        try:
            for chunk in voice.synthesize(text, syn_config=config):
                pieces.append(chunk.audio_int16_bytes)
                rate = int(chunk.sample_rate)
        except Exception as exc:
            raise SpeechError(f"piper failed: {exc}") from exc
        return Audio(b"".join(pieces), rate)

    def close(self) -> None:
        self._voice = self._voice_zh = None


# --- what the registry asks of an engine module ------------------------------------------------

FIX = "pip install 'voicechat[piper]' and set tts.model to a Piper .onnx voice"
"""What makes this engine work on a machine where it does not."""
ZH_FIX = (
    "download a Chinese Piper voice (e.g. zh_CN-huayan-medium) and set tts.voice_zh to its "
    ".onnx file"
)


def create(settings: TTSSettings) -> PiperEngine:
    """Settings: ``tts.model`` is the main voice model (.onnx, its .onnx.json beside it),
    ``tts.voice_zh`` a second model for Chinese pieces, ``tts.voice`` a speaker of a
    multi-speaker model."""
    return PiperEngine(settings)


def voices(settings: TTSSettings) -> list[VoiceInfo]:
    """The speakers of the profile's model(s), without loading them."""
    return model_voices(settings)


def rate_hint(settings: TTSSettings) -> int | None:
    """The model's sample rate, from its JSON config (the device is opened at it)."""
    try:
        rate: int = _config(_model_file(*_model_setting(settings)))["audio"]["sample_rate"]
    except ConfigError:
        return None
    return rate


def checks(settings: TTSSettings) -> Iterator[Check]:
    """The doctor's rows: the model loads and speaks; a Chinese model is optional."""
    from voicechat.checks import Check
    from voicechat.tts import loaded_check, spoken_check

    engine, failed = loaded_check(settings, create, FIX)
    if engine is None:
        assert failed is not None
        yield failed
        return
    try:
        label = Path(_model_setting(settings)[0] or "").stem or "default voice"
        yield spoken_check(engine, "other", "voice", label, FIX)
        if settings.voice_zh:
            yield spoken_check(engine, "zh", "voice (zh)", Path(settings.voice_zh).stem, FIX)
        else:
            yield Check(
                "voice (zh)",
                None,
                "no Chinese voice: Chinese text is read by the main voice",
                ZH_FIX,
            )
    finally:
        engine.close()
