"""Find, load and strictly validate YAML backend profiles; apply environment overrides.

A profile is looked up by name in the user folder
(``$XDG_CONFIG_HOME/voicechat/profiles``, default ``~/.config/voicechat/profiles``) and then
among the profiles shipped with the package, so a user profile overrides a shipped one of
the same name; a path (anything with a ``/`` or a ``.yaml``/``.yml`` ending) is loaded as is.
Validation follows the dataclasses in `settings.py`: unknown keys, wrong types and missing
fields are `ConfigError`s naming the file, the key path and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from voicechat.errors import AuthFailed, ConfigError
from voicechat.redact import LazyPattern, redact_url, remember, short
from voicechat.settings import BackendSettings, Profile

DEFAULT_PROFILE = "ollama-qwen2.5-7b"
PROFILE_ENV = "VOICECHAT_PROFILE"
SUFFIXES = (".yaml", ".yml")

# Keys people reach for that we refuse on purpose, with the fix.
_HINTS = {
    "api_key": "keys are never stored in profiles: set api_key_env to the NAME of an "
    "environment variable that holds the key",
}


@dataclass(frozen=True)
class ProfileSource:
    """Where a profile was found."""

    name: str
    """The name users type (the file name without its suffix)."""
    path: Path
    """The YAML file."""
    origin: Literal["user", "shipped", "path"]
    """User folder, shipped with voicechat, or given as a path."""
    shadows_shipped: bool = False
    """A user profile that replaces a shipped one of the same name."""


@dataclass(frozen=True)
class LoadedProfile:
    """A validated profile with the environment applied."""

    source: ProfileSource
    """Where it came from."""
    profile: Profile
    """The settings."""
    overrides: tuple[str, ...] = ()
    """Which environment variables changed it (for ``profiles show``)."""


# --- locations ---------------------------------------------------------------------------


def user_dir() -> Path:
    """The user's profile folder (XDG config home)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "voicechat" / "profiles"


def shipped_dir() -> Path:
    """Profiles shipped with voicechat: inside the wheel, or ``configs/`` in a checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "configs"
    return packaged if packaged.is_dir() else here.parent / "configs"


def _profiles_in(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in SUFFIXES and p.is_file()}


def discover() -> list[ProfileSource]:
    """Every profile a name can select, user ones first; shadowed shipped ones are left out."""
    user = _profiles_in(user_dir())
    shipped = _profiles_in(shipped_dir())
    found = [ProfileSource(n, p, "user", shadows_shipped=n in shipped) for n, p in user.items()]
    found += [ProfileSource(n, p, "shipped") for n, p in shipped.items() if n not in user]
    return sorted(found, key=lambda s: s.name)


def find(name_or_path: str | None) -> ProfileSource:
    """Resolve ``--profile`` (or ``$VOICECHAT_PROFILE``, or the default) to a file."""
    wanted = name_or_path or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    if "/" in wanted or wanted.endswith(SUFFIXES) or wanted.startswith("~"):
        path = Path(wanted).expanduser()
        if not path.is_file():
            raise ConfigError(f"profile file {path} not found: check the path")
        return ProfileSource(path.stem, path, "path")
    for source in discover():
        if source.name == wanted:
            return source
    names = ", ".join(s.name for s in discover()) or "none"
    via = "" if name_or_path else f" (from ${PROFILE_ENV})" if os.environ.get(PROFILE_ENV) else ""
    raise ConfigError(
        f"no profile named {excerpt(wanted)}{via}: available: {names}; "
        f"or add {user_dir() / (short(wanted, 60) + '.yaml')}"
    )


def load(name_or_path: str | None = None, env: Mapping[str, str] | None = None) -> LoadedProfile:
    """Find, parse, validate and apply the environment to a profile."""
    source = find(name_or_path)
    profile = parse(source.path)
    profile, overrides = apply_env(profile, os.environ if env is None else env)
    return LoadedProfile(source, profile, overrides)


# --- parsing and validation ----------------------------------------------------------------

MAX_NODES = 10_000
"""YAML nodes a profile may expand to (aliases counted at every use): a profile has a few
dozen; a "billion laughs" file has billions, and must be refused before it is built."""
MAX_BYTES = 1_000_000
"""A profile is a few hundred bytes; a bigger file is not a profile."""


def parse(path: Path) -> Profile:
    """Read and validate one YAML file (safely: no tags, no object construction)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: over {MAX_BYTES // 1000} kB: not a profile")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text: not a YAML profile") from None
    data = _load_yaml(text, path)
    if data is None:
        raise ConfigError(f"{path}: the file is empty: expected a mapping with a 'backend' section")
    return build(data, str(path))


def build(data: Any, where: str) -> Profile:
    """A `Profile` from plain data (parsed YAML), checked exactly as a file is."""
    return _build(Profile, data, where, "")


def change(profile: Profile, changes: Mapping[str, Any], where: str = "") -> Profile:
    """The one door for changing a profile: ``{"backend.model": "x", "tts.rate": 200}``.

    Command-line options, environment variables and REPL commands all come through here
    and are checked exactly as the YAML file is (`ConfigError` naming ``where`` and the key
    path). ``None`` as a value sets the key to null (use the default where there is one).
    """
    data = dataclasses.asdict(profile)
    for keypath, value in changes.items():
        *parents, last = keypath.split(".")
        node = data
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                raise ConfigError(f"{where or 'change'}: {keypath}: no such setting")
            node = child
        node[last] = value
    return _build(Profile, data, where or "change", "")


def _load_yaml(text: str, path: Path) -> Any:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class StrictLoader(base):  # type: ignore[misc,valid-type]
        """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last)."""

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"{path}:{line}: a key must be a plain name, not a list/mapping")
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"{path}:{line}: duplicate key {excerpt(key)}: keep only one")
            seen[key] = loader.construct_object(value_node, deep=deep)
        return seen

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, path)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        # only the parser's own words: its context lines quote the file
        problem = short(getattr(exc, "problem", None) or "not valid YAML", 100)
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply: not a profile") from None
    finally:
        loader.dispose()


def _check_size(root: Any, path: Path) -> None:
    """Refuse a document that expands (aliases counted at each use) beyond `MAX_NODES`."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    active: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            children = _children(node)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_NODES:
                raise ConfigError(
                    f"{path}: expands to over {MAX_NODES} values (aliases): not a profile"
                )
            continue
        if key in sizes:
            continue
        if key in active:
            raise ConfigError(f"{path}: an alias refers to itself: not a profile")
        active.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _children(node: Any) -> list[Any]:
    value = node.value
    if not isinstance(value, list):
        return []
    out: list[Any] = []
    for item in value:
        if isinstance(item, tuple):
            out.extend(item)
        else:
            out.append(item)
    return out


def _build(cls: type, data: Any, where: str, prefix: str) -> Any:
    """Build dataclass ``cls`` from ``data``, naming ``where`` and the key path on errors."""
    label = prefix.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {label}: expected a mapping, got {_kind(data, quote=False)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    for key in data:
        if key not in fields:
            hint = _HINTS.get(str(key)) or f"expected one of: {', '.join(fields)}"
            raise ConfigError(f"{where}: {prefix}{_name(key)}: unknown key ({hint})")
    values = {}
    for name, f in fields.items():
        keypath = f"{prefix}{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: {keypath}: missing ({_describe(hints[name])})")
            continue
        tp = hints[name]
        if "kinds" in f.metadata:
            tp = _kind_settings(data[name], where, keypath)
        value = _convert(tp, data[name], where, keypath)
        _check_value(f, value, where, keypath)
        values[name] = value
    return cls(**values)


def _kind_settings(section: Any, where: str, keypath: str) -> type:
    """The ``Settings`` class of the section's ``kind`` (its module imported now)."""
    from voicechat.backends import KINDS, kind_module

    if not isinstance(section, dict):
        raise ConfigError(f"{where}: {keypath}: expected a mapping, got {_kind(section)}")
    if "kind" not in section:
        raise ConfigError(f"{where}: {keypath}.kind: missing (one of {', '.join(KINDS)})")
    kind = section["kind"]
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(
            f"{where}: {keypath}.kind: expected one of {', '.join(KINDS)}, got {_kind(kind)}"
        )
    return kind_module(kind).Settings  # type: ignore[no-any-return]


_VAR_NAME = LazyPattern(r"^[A-Za-z_][A-Za-z0-9_]{0,100}$")
_hint_cache: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _hint_cache.get(cls)
    if hints is None:
        hints = _hint_cache[cls] = typing.get_type_hints(cls)
    return hints


def _check_value(f: dataclasses.Field, value: Any, where: str, keypath: str) -> None:
    """The field's declared range (numbers) or its own check (``check`` in its metadata:
    URLs, a GGUF's name); NaN and infinity never pass."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {keypath}: {value} is not a number we can use")
    bounds = f.metadata.get("range")
    if bounds and isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = bounds
        if not lo <= value <= hi:
            raise ConfigError(
                f"{where}: {keypath}: {excerpt(value)} is out of range: allowed "
                f"{_number(lo)} to {_number(hi)}"
            )
    if f.metadata.get("env_name") and isinstance(value, str) and not _VAR_NAME.match(value):
        raise ConfigError(
            f"{where}: {keypath}: {excerpt(value)} is not a variable name: give the NAME of "
            "the environment variable that holds the value (e.g. OPENAI_API_KEY)"
        )
    check = f.metadata.get("check")
    if check and isinstance(value, str):
        problem = check(value)
        if problem:
            raise ConfigError(f"{where}: {keypath}: {problem}")


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _convert(tp: Any, value: Any, where: str, keypath: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, keypath + ".")  # type: ignore[arg-type]
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        for option in options:
            try:
                return _convert(option, value, where, keypath)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {keypath}: expected {_describe(tp)}, got {_kind(value)}")
    if origin is Literal:
        if isinstance(value, (str, int, float, bool)) and value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where}: {keypath}: expected {_describe(tp)}, got {_kind(value)}")
    if origin is tuple:  # tuple[str, ...]: a YAML list, kept frozen
        item = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {keypath}: expected {_describe(tp)}, got {_kind(value)}")
        return tuple(_convert(item, v, where, f"{keypath}[{i}]") for i, v in enumerate(value))
    ok = {
        type(None): value is None,
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp)
    if ok is None:  # pragma: no cover - a schema type this validator does not know
        raise TypeError(f"unsupported schema type {tp!r} at {keypath}")
    if not ok:
        raise ConfigError(f"{where}: {keypath}: expected {_describe(tp)}, got {_kind(value)}")
    return float(value) if tp is float else value


def _describe(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(t) for t in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0]).removeprefix('a ')}s"
    names = {type(None): "null", bool: "true/false", int: "an integer", float: "a number"}
    return names.get(tp, "a string")


def excerpt(value: object, length: int = 40) -> str:
    """A short, scrubbed quote of a value: never a whole line of an arbitrary file.

    >>> excerpt("OPENAI_API_KEY=sk-0123456789abcdef0123456789abcdef0123456789")
    "'OPENAI_API_KEY=***'"
    """
    if isinstance(value, str):
        return repr(short(value, length))
    if isinstance(value, (bool, int, float)) or value is None:
        return short(repr(value), length)
    return f"a {type(value).__name__}"


_KEY_NAME = LazyPattern(r"^[A-Za-z_][A-Za-z0-9_-]{0,40}$")


def _name(key: object) -> str:
    """A key as typed if it looks like a setting name; else a few characters of it."""
    if isinstance(key, str) and _KEY_NAME.match(key):
        return key
    return excerpt(key, 10)


def _kind(value: Any, quote: bool = True) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({excerpt(value)})"
    if isinstance(value, str):
        return f"a string ({excerpt(value)})" if quote else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def shown(profile: Profile) -> dict[str, Any]:
    """The profile as plain data for ``profiles show``: URLs with credentials and secret
    query values masked (the key itself is never in a profile)."""

    def walk(obj: Any) -> Any:
        if isinstance(obj, tuple):
            return list(obj)
        if not dataclasses.is_dataclass(obj):
            return obj
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("url") and isinstance(value, str):
                value = redact_url(value)
            out[f.name] = walk(value)
        return out

    return walk(profile)  # type: ignore[no-any-return]


# --- environment and secrets ------------------------------------------------------------


def apply_env(profile: Profile, env: Mapping[str, str]) -> tuple[Profile, tuple[str, ...]]:
    """Let the standard variables win over the file, the way users expect.

    Which variables apply is the backend kind's knowledge (its module's ``apply_env``):
    ``OLLAMA_HOST`` for Ollama, ``OPENAI_BASE_URL`` for OpenAI-compatible servers, ...
    A malformed value is a `ConfigError` naming the variable.
    """
    from voicechat.backends import kind_module

    settings, used = kind_module(profile.backend.kind).apply_env(profile.backend, env)
    if not used:
        return profile, ()
    return dataclasses.replace(profile, backend=settings), tuple(used)


def api_key_var(backend: BackendSettings) -> str | None:
    """The variable holding the key, as the kind decides; ``None`` where keys mean nothing."""
    from voicechat.backends import kind_module

    var = getattr(kind_module(backend.kind), "api_key_var", None)
    return var(backend) if var else None


def api_key(backend: BackendSettings, env: Mapping[str, str] | None = None) -> str | None:
    """The API key from the environment; fail before sending when a required one is unset.

    The key is remembered (`voicechat.redact`): no line we print can show it.
    """
    var = api_key_var(backend)
    value = (os.environ if env is None else env).get(var, "").strip() if var else ""
    remember(value)
    if not value and getattr(backend, "api_key_required", False):
        url = getattr(backend, "base_url", None)
        server = redact_url(url) if isinstance(url, str) else "the server"
        raise AuthFailed(
            f"{server} needs an API key and ${var} is not set: "
            f"export {var}=... (the key itself never goes into a profile)"
        )
    return value or None
