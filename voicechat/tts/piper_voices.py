"""Piper's voice catalog: the voices of `rhasspy/piper-voices` on Hugging Face, pulled here.

The repository publishes ``voices.json``: for every voice (``zh_CN-huayan-medium``) its
language, quality, speakers and files (``zh/zh_CN/huayan/medium/zh_CN-huayan-medium.onnx``,
its ``.onnx.json`` and ``MODEL_CARD``), each with its size and MD5. `pull` downloads a voice's
files through `voicechat.models.fetch` (cache, progress bar, resume, hub hash check), checks
them again against ``voices.json``, and places them in the user's data folder
(``$XDG_DATA_HOME/voicechat/voices/NAME/``, default ``~/.local/share/...``) atomically, as a
hard link to the cached file where the file system allows (no second copy on disk).

A profile names a pulled voice instead of a path (``tts.voice: zh_CN-huayan-medium``):
`resolve` turns such a name into the model's path for the Piper engine, and `read_config`
reads a voice's ``.onnx.json`` checked for the shape the engine needs. It imports nothing
of `voicechat.tts`: the Piper engine and the registry's fallback import it, not the reverse.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicechat import hf_hub, models
from voicechat.errors import ConfigError, ModelError
from voicechat.redact import redact_url, short

REPO = "rhasspy/piper-voices"
"""The Piper voices repository on Hugging Face."""
CATALOG = "voices.json"
"""Its list of voices, at the repository's root."""
REVISION = "main"


@dataclass(frozen=True)
class VoiceFile:
    """One file of a voice, as ``voices.json`` describes it."""

    path: str
    """Path inside the repository (``zh/zh_CN/huayan/medium/zh_CN-huayan-medium.onnx``)."""
    size: int
    """Published size in bytes."""
    md5: str
    """Published MD5 digest (hex)."""


@dataclass(frozen=True)
class PiperVoice:
    """A voice the repository offers."""

    key: str
    """Its name: ``LANG_REGION-NAME-QUALITY`` (``zh_CN-huayan-medium``)."""
    language: str
    """Language code (``zh_CN``)."""
    language_name: str
    """The language's own name, and in English (``中文 (Chinese)``)."""
    quality: str
    """``x_low``, ``low``, ``medium`` or ``high``."""
    speakers: int
    """Number of speakers (more than one: pick with ``tts.voice`` after pulling)."""
    files: tuple[VoiceFile, ...]
    """Everything to download."""
    aliases: tuple[str, ...] = ()
    """Older names the repository still accepts."""

    @property
    def size(self) -> int:
        """Bytes to download."""
        return sum(f.size for f in self.files)


def voices_dir() -> Path:
    """Where pulled voices live: ``$XDG_DATA_HOME/voicechat/voices``."""
    home = os.path.expanduser("~")
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
    return Path(base) / "voicechat" / "voices"


def model_path(name: str) -> Path:
    """Where the model of the pulled voice ``name`` is (or would be)."""
    return voices_dir() / name / f"{name}.onnx"


def resolve(value: str | None) -> str | None:
    """A pulled voice's model path for a voice name; any other value (a path) unchanged.

    >>> resolve("/models/x.onnx"), resolve(None)
    ('/models/x.onnx', None)
    """
    if not value or not _is_name(value):
        return value
    model = model_path(value)
    return str(model) if model.is_file() else value


def _is_name(value: str) -> bool:
    """A voice name rather than a path (``zh_CN-huayan-medium``, not ``~/v/x.onnx``)."""
    return "/" not in value and os.sep not in value and not value.endswith(".onnx")


def piper_model(model: str | None, voice: str | None) -> tuple[str | None, str]:
    """What names the Piper model, and its key: ``tts.model``, else ``tts.voice`` when it is
    a voice name of the repository's form (``LANG-NAME-QUALITY``), pulled or not."""
    if model:
        return model, "model"
    if voice and _is_name(voice) and voice.count("-") >= 2 and "_" in voice.split("-")[0]:
        return voice, "voice"
    return None, "model"


def missing_model(key: str, value: str) -> str:
    """The one-line error for a model that is not there: pull it, or fix the path."""
    if _is_name(value):
        return f"tts.{key} {value}: no such voice pulled here: voicechat voices pull {value}"
    return f"tts.{key} {value}: no such model file"


RATES = (8000, 192_000)
"""Sample rates a Piper voice may have (its models use 16 and 22.05 kHz)."""


def read_config(model: Path) -> dict[str, Any]:
    """The voice config beside ``model`` (``MODEL.onnx.json``), checked for the shape the engine
    reads; else a one-line `ConfigError` (the profile's tts.fallback then speaks)."""
    path = Path(f"{model}.json")
    fix = (
        f"pull it again: voicechat voices pull {model.stem}"
        if voices_dir() in path.parents
        else "put the .onnx.json that came with the model beside it"
    )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else short(exc, 80)
        raise ConfigError(f"{path} is not a readable Piper voice config ({why}): {fix}") from None
    problem = _config_problem(config)
    if problem:
        raise ConfigError(f"{path} is not a Piper voice config ({problem}): {fix}")
    return config  # type: ignore[no-any-return]


def _config_problem(config: Any) -> str | None:
    """What in a voice config the engine could not use (None: nothing)."""
    if not isinstance(config, dict):
        return "not a JSON object"
    audio = config.get("audio")
    rate = audio.get("sample_rate") if isinstance(audio, dict) else None
    if isinstance(rate, bool) or not isinstance(rate, int) or not RATES[0] <= rate <= RATES[1]:
        return f"audio.sample_rate {short(repr(rate), 24)} is not a sample rate"
    for section, key in (("language", "code"), ("espeak", "voice")):
        value = config.get(section, {})
        if not isinstance(value, dict) or not isinstance(value.get(key, ""), str):
            return f"{section}.{key} is not a string"
    speakers = config.get("speaker_id_map") or {}
    if not isinstance(speakers, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 16
        for k, v in speakers.items()
    ):
        return "speaker_id_map is not a map of names to speaker numbers"
    return None


def is_pulled(name: str) -> bool:
    """The voice's model and config are in the data folder."""
    model = model_path(name)
    return model.is_file() and Path(f"{model}.json").is_file()


def installed() -> list[str]:
    """Names of the pulled voices."""
    folder = voices_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and is_pulled(p.name))


class Catalog(dict[str, PiperVoice]):
    """The catalog's voices by name; ``rejected`` holds the entries refused, with why."""

    def __init__(self) -> None:
        super().__init__()
        self.rejected: dict[str, str] = {}


MAX_FILE = 1 << 36
"""Bytes a voice file may have (64 GiB): a size beyond it is a damaged catalog, not a voice."""
MAX_CATALOG = 64 << 20
"""Bytes ``voices.json`` may have (the real one has a few MB)."""
_MD5 = re.compile(r"[0-9a-f]{32}")


class _Unreadable(ValueError):
    """An entry of the catalog that is not of its shape."""


def parse_catalog(data: Any) -> Catalog:
    """``voices.json`` as `PiperVoice` objects.

    An entry that is not of the catalog's shape, or whose names would choose where a file
    goes (``..``, an absolute path, a separator), is left out of the listing and remembered in
    ``rejected``, so that pulling it says why instead of "no such voice".
    """
    voices = Catalog()
    if not isinstance(data, dict):
        raise _Unreadable("not a JSON object")
    for key, entry in data.items():
        try:
            voices[key] = _voice(key, entry)
        except models.UnsafeName as exc:
            voices.rejected[key] = exc.reason
        except _Unreadable as exc:
            voices.rejected[key] = f"its entry is not readable ({exc})"
    return voices


def _voice(key: str, entry: Any) -> PiperVoice:
    """One entry of ``voices.json``: `models.UnsafeName` for a name that would choose a path,
    `_Unreadable` for anything else that is not as Piper's catalog writes it."""
    if not isinstance(entry, dict):
        raise _Unreadable("not a JSON object")
    name = models.safe_name(entry.get("key") or key, "voice name")
    if name != key:
        models.safe_name(key, "voice name")
    files = []
    for path, info in _of(entry.get("files") or {}, dict, "files").items():
        info = _of(info, dict, path)
        size = _count(info.get("size_bytes"), f"{path}'s size_bytes", MAX_FILE)
        md5 = info.get("md5_digest")
        if not isinstance(md5, str) or not _MD5.fullmatch(md5.lower()):
            raise _Unreadable(f"{short(path, 60)}'s md5_digest is not an MD5 digest")
        files.append(VoiceFile(models.safe_path(path, f"{name}'s file"), size, md5.lower()))
    language = _of(entry.get("language") or {}, dict, "language")
    native, english = (
        short(_of(language.get(k, ""), str, f"language.{k}"), 60)
        for k in ("name_native", "name_english")
    )
    return PiperVoice(
        key=name,
        language=short(_of(language.get("code", ""), str, "language.code"), 20),
        language_name=f"{native} ({english})" if native and english != native else native,
        quality=short(_of(entry.get("quality", ""), str, "quality"), 20),
        speakers=_count(entry.get("num_speakers") or 1, "num_speakers", 100_000),
        files=tuple(files),
        aliases=tuple(
            short(_of(a, str, "aliases"), 80)
            for a in _of(entry.get("aliases") or [], list, "aliases")
        ),
    )


def _of(value: Any, kind: type, what: str) -> Any:
    """``value`` if it is a ``kind`` (dict, list, str), else `_Unreadable`."""
    if not isinstance(value, kind):
        names = {dict: "JSON object", list: "list", str: "string"}
        raise _Unreadable(f"{short(what, 60)} is not a {names[kind]}")
    return value


def _count(value: Any, what: str, most: int) -> int:
    """A whole number from 0 to ``most`` (not 1e400, not 10**400, not true)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise _Unreadable(f"{short(what, 60)} {short(repr(value), 24)} is not a count up to {most}")
    return value


def catalog() -> Catalog:
    """The voices the repository offers (``voices.json``, fetched or from the cache)."""
    path = models.fetch(REPO, CATALOG, revision=REVISION, named_by_user=False, max_size=MAX_CATALOG)
    try:
        return parse_catalog(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else short(exc, 80)
        raise ModelError(
            f"{CATALOG} of {REPO} from {redact_url(hf_hub.endpoint())} is not a Piper voice "
            f"catalog ({why}): check HF_ENDPOINT"
        ) from None


def available(lang: str | None = None) -> list[PiperVoice]:
    """The catalog's voices, sorted; only those for ``lang`` (``zh``, ``zh_CN``, ``en-us``)."""
    voices = sorted(catalog().values(), key=lambda v: v.key)
    if not lang:
        return voices
    wanted = lang.replace("-", "_").lower()
    return [
        v
        for v in voices
        if v.language.lower() == wanted or v.language.lower().split("_")[0] == wanted
    ]


def find(name: str, voices: dict[str, PiperVoice]) -> PiperVoice:
    """The voice ``name`` (or an alias) names; else a `ConfigError` listing close matches."""
    if name in voices:
        return voices[name]
    refused = getattr(voices, "rejected", {}).get(name)
    if refused:
        raise ModelError(
            f"{name} in {CATALOG} from {redact_url(hf_hub.endpoint())}: {refused}, refused; the "
            "catalog is damaged or not Piper's (check HF_ENDPOINT)"
        )
    for voice in voices.values():
        if name in voice.aliases:
            return voice
    lowered = {k.lower(): k for k in voices}
    if name.lower() in lowered:
        return voices[lowered[name.lower()]]
    close = difflib.get_close_matches(name.lower(), list(lowered), n=4, cutoff=0.6)
    hint = (
        f"did you mean {', '.join(lowered[c] for c in close)}?"
        if close
        else "list them with: voicechat voices --available"
    )
    raise ConfigError(f"no Piper voice named {name!r} in {REPO}: {hint}")


def pull(name: str, voices: dict[str, PiperVoice] | None = None) -> Path:
    """Download the voice ``name`` into the data folder; its model's path.

    Each file is checked against the size and MD5 ``voices.json`` publishes; a voice already
    pulled and intact costs no download, a damaged one is replaced.
    """
    voice = find(name, catalog() if voices is None else voices)
    for spec in voice.files:
        target = models.inside(voices_dir(), voice.key, spec.path.rsplit("/", 1)[-1])
        if (
            target.is_file()
            and target.stat().st_size == spec.size
            and models.digest(target, "md5") == spec.md5
        ):
            continue  # pulled before, and intact
        cached = models.fetch(
            REPO, spec.path, revision=REVISION, named_by_user=False, size=spec.size
        )
        check(cached, spec)
        models.place(cached, target)
    model = model_path(voice.key)
    if not is_pulled(voice.key):
        raise ModelError(
            f"{voice.key}: {REPO} lists no .onnx model and .onnx.json config for it: "
            "pick another voice (voicechat voices --available)"
        )
    return model


def check(path: Path, spec: VoiceFile) -> None:
    """The file has the published size and MD5; else it is deleted from the cache and reported."""
    size = path.stat().st_size
    digest = models.digest(path, "md5") if size == spec.size else ""
    if size == spec.size and digest == spec.md5:
        return
    models.discard(path)
    found = f"{size} bytes" if size != spec.size else f"MD5 {digest[:12]}..."
    raise ModelError(
        f"{spec.path} does not match {CATALOG} ({found}, published {spec.size} bytes, MD5 "
        f"{spec.md5[:12]}...): deleted it; run again to download it anew"
    )
