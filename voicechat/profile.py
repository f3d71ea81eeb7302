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
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union
from urllib.parse import urlsplit, urlunsplit

from voicechat.errors import AuthFailed, ConfigError
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
        f"no profile named {wanted!r}{via}: available: {names}; "
        f"or add {user_dir() / (wanted + '.yaml')}"
    )


def load(name_or_path: str | None = None, env: Mapping[str, str] | None = None) -> LoadedProfile:
    """Find, parse, validate and apply the environment to a profile."""
    source = find(name_or_path)
    profile = parse(source.path)
    profile, overrides = apply_env(profile, os.environ if env is None else env)
    return LoadedProfile(source, profile, overrides)


# --- parsing and validation ----------------------------------------------------------------


def parse(path: Path) -> Profile:
    """Read and validate one YAML file (safely: no tags, no object construction)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    data = _load_yaml(text, path)
    if data is None:
        raise ConfigError(f"{path}: the file is empty: expected a mapping with a 'backend' section")
    return _build(Profile, data, path, "")


def _load_yaml(text: str, path: Path) -> Any:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class StrictLoader(base):  # type: ignore[misc,valid-type]
        """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last)."""

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"{path}:{line}: duplicate key {key!r}: keep only one")
            seen[key] = loader.construct_object(value_node, deep=deep)
        return seen

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None


def _build(cls: type, data: Any, path: Path, prefix: str) -> Any:
    """Build dataclass ``cls`` from ``data``, naming ``path`` and the key path on errors."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {where}: expected a mapping, got {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            hint = _HINTS.get(str(key)) or f"expected one of: {', '.join(fields)}"
            raise ConfigError(f"{path}: {prefix}{key}: unknown key ({hint})")
    values = {}
    for name, f in fields.items():
        keypath = f"{prefix}{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{path}: {keypath}: missing ({_describe(hints[name])})")
            continue
        values[name] = _convert(hints[name], data[name], path, keypath)
    return cls(**values)


def _convert(tp: Any, value: Any, path: Path, keypath: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, keypath + ".")
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        for option in options:
            try:
                return _convert(option, value, path, keypath)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {keypath}: expected {_describe(tp)}, got {_kind(value)}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{path}: {keypath}: expected {_describe(tp)}, got {value!r}")
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
        raise ConfigError(f"{path}: {keypath}: expected {_describe(tp)}, got {_kind(value)}")
    return float(value) if tp is float else value


def _describe(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(t) for t in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    names = {type(None): "null", bool: "true/false", int: "an integer", float: "a number"}
    return names.get(tp, "a string")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# --- environment ---------------------------------------------------------------------------


def apply_env(profile: Profile, env: Mapping[str, str]) -> tuple[Profile, tuple[str, ...]]:
    """Let the standard variables win over the file, the way users expect.

    ``OLLAMA_HOST`` moves every Ollama profile (and an OpenAI-kind profile that points at
    Ollama's own ``/v1``); ``OPENAI_BASE_URL`` moves the other OpenAI-kind profiles. The
    API key is always read from the variable the profile names, never from the file.
    """
    backend = profile.backend
    var = backend_url_env(backend)
    value = env.get(var, "").strip() if var else ""
    if not value:
        return profile, ()
    if var == "OLLAMA_HOST":
        url = ollama_host(value)
        if backend.kind == "openai":
            url = url.rstrip("/") + "/v1"
    else:
        url = value
    backend = dataclasses.replace(backend, base_url=url)
    return dataclasses.replace(profile, backend=backend), (var,)


def backend_url_env(backend: BackendSettings) -> str | None:
    """The environment variable that overrides this backend's base URL, if any."""
    if backend.kind == "ollama" or _is_ollama_v1(backend.base_url):
        return "OLLAMA_HOST"
    return "OPENAI_BASE_URL"


def _is_ollama_v1(url: str) -> bool:
    parts = urlsplit(url)
    return parts.port == 11434 and parts.path.rstrip("/") == "/v1"


def ollama_host(value: str) -> str:
    """Normalise ``OLLAMA_HOST`` the way Ollama does, for a client.

    >>> ollama_host("")
    'http://127.0.0.1:11434'
    >>> ollama_host("jetson.local")
    'http://jetson.local:11434'
    >>> ollama_host(":8080")
    'http://127.0.0.1:8080'
    >>> ollama_host("[::1]")
    'http://[::1]:11434'
    >>> ollama_host("https://example.com")
    'https://example.com:443'
    >>> ollama_host("http://example.com/ollama")
    'http://example.com:80/ollama'
    >>> ollama_host("0.0.0.0:11434")
    'http://127.0.0.1:11434'
    """
    value = value.strip()
    scheme, sep, hostport = value.partition("://")
    default_port = "11434"
    if not sep:
        scheme, hostport = "http", value
    elif scheme == "http":
        default_port = "80"
    elif scheme == "https":
        default_port = "443"
    hostport, _, path = hostport.partition("/")
    host, port = _split_host_port(hostport)
    if not host or host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host != "::" else "::1"
    if not port or not port.isdigit() or int(port) > 65535:
        port = default_port
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit((scheme, netloc, "/" + path if path else "", "", "")).rstrip("/")


def _split_host_port(hostport: str) -> tuple[str, str]:
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if hostport.count(":") == 1:
        host, _, port = hostport.partition(":")
        return host, port
    return hostport, ""  # a bare name, or a bare IPv6 address without brackets


# --- secrets -------------------------------------------------------------------------------


def api_key_var(backend: BackendSettings) -> str | None:
    """The variable holding the key: the profile's choice, else ``OPENAI_API_KEY`` (openai)."""
    if backend.api_key_env:
        return backend.api_key_env
    return "OPENAI_API_KEY" if backend.kind == "openai" else None


def api_key(backend: BackendSettings, env: Mapping[str, str] | None = None) -> str | None:
    """The API key from the environment; fail before sending when a required one is unset."""
    var = api_key_var(backend)
    value = (os.environ if env is None else env).get(var, "").strip() if var else ""
    if not value and backend.api_key_required:
        raise AuthFailed(
            f"{backend.base_url} needs an API key and ${var} is not set: "
            f"export {var}=... (the key itself never goes into a profile)"
        )
    return value or None
