"""Model files from Hugging Face: downloaded once, verified, cached (one place for every kind).

Speech voices, GGUF models and recognizer weights all come through `fetch`, which wraps
``huggingface_hub.hf_hub_download`` (imported only here, only when called):

* ``HF_ENDPOINT`` (a mirror, or the tests' local hub) and ``HF_HUB_OFFLINE`` are read at each
  call, not when huggingface_hub happens to be imported;
* files land in the user's Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``), shared with every other tool that uses it;
* a progress bar goes to stderr (huggingface_hub's own; ``HF_HUB_DISABLE_PROGRESS_BARS=1``
  hides it); a connection that drops mid-file is resumed with a Range request;
* every file is verified against the hash the hub published for it: the SHA-256 of an LFS
  file, the git blob SHA-1 of a small one. huggingface_hub itself checks only the size, so a
  corrupted download would otherwise sit in the cache for good. A bad file is deleted and
  reported; a verified one is remembered (hashing a 4 GB model again at each start costs
  seconds on the Jetson).

Nothing the network sends chooses a path: every name that comes from a catalog or a hub
answer goes through `safe_name` / `safe_path`, and every file placed from such a name through
`inside`, which also checks that the destination resolves inside its folder.

Errors are `ConfigError` (no such repository, revision or file: the name is wrong) or
`ModelError` (offline and not cached, network down, corrupt download, disk full, a name
from the network that would choose a path), each one line that says what to do.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from voicechat.errors import ConfigError, ModelError
from voicechat.redact import short

HUB_HINT = "pip install huggingface_hub (included in voicechat[piper])"
DEFAULT_ENDPOINT = "https://huggingface.co"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
"""One path segment: letters, digits and ``_.+-``, not starting with a dot (so never ``..``
or a hidden file), no separator, no control character."""


class UnsafeName(ModelError):
    """A name from the network that would choose where a file goes: refused."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}: refused")
        self.reason = reason
        """What is wrong with the name, without the verdict."""


def safe_name(value: object, what: str) -> str:
    """``value`` if it is one path segment of the safe alphabet, else `UnsafeName`.

    >>> safe_name("en_US-joe-medium", "voice")
    'en_US-joe-medium'
    >>> safe_name("../../home/u", "voice")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    voicechat.models.UnsafeName: voice '../../home/u' is not a safe file name (...): refused
    """
    if isinstance(value, str) and _SEGMENT.fullmatch(value):
        return value
    raise UnsafeName(
        f"{what} {short(repr(value), 80)} is not a safe file name (one segment of letters, "
        "digits and _.+-)"
    )


def safe_path(value: object, what: str) -> str:
    """``value`` if it is a relative path whose every segment passes `safe_name`.

    >>> safe_path("en/en_US/joe/medium/en_US-joe-medium.onnx", "file")
    'en/en_US/joe/medium/en_US-joe-medium.onnx'
    """
    if not isinstance(value, str) or not value:
        raise UnsafeName(f"{what} {short(repr(value), 80)} is not a file path")
    for segment in value.split("/"):
        try:
            safe_name(segment, what)
        except UnsafeName:
            raise UnsafeName(
                f"{what} {short(repr(value), 120)} is not a safe path (each part one segment of "
                "letters, digits and _.+-, no '..', not absolute)"
            ) from None
    return value


def inside(root: Path, *names: str) -> Path:
    """``root / names...``, each name checked by `safe_path`, and the result resolved inside
    ``root`` (a symbolic link on the way must not lead out): the one way a name that came
    from the network becomes a path."""
    for name in names:
        safe_path(name, "file name")
    target = root.joinpath(*names)
    base = root.resolve()
    resolved = target.resolve()
    if resolved != base and base not in resolved.parents:
        raise UnsafeName(f"{short(str(target), 160)} leads outside {base}")
    return target


def _true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set: use the cache, never the network."""
    return _true(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"))


def endpoint() -> str:
    """Where files come from: ``HF_ENDPOINT`` or the Hugging Face hub."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def cache_dir() -> Path:
    """The user's Hugging Face cache, as huggingface_hub finds it (read now, not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "huggingface" / "hub"


def _verified_dir() -> Path:
    """Markers for blobs whose hash was checked once (named by that hash)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "voicechat" / "verified"


def _import_hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ModelError(f"downloading models needs huggingface_hub ({exc}): {HUB_HINT}") from exc
    return huggingface_hub


def _network_errors() -> tuple[type[BaseException], ...]:
    """The transport errors of whichever HTTP library this huggingface_hub uses."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for name in ("httpx2", "httpx", "requests"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        base = getattr(module, "TransportError", None) or getattr(module, "RequestException", None)
        if isinstance(base, type) and issubclass(base, BaseException):
            found.append(base)
    return tuple(found)


def fetch(repo_id: str, filename: str, *, revision: str | None = None) -> Path:
    """The local path of ``filename`` from the hub repository ``repo_id``, downloaded if needed.

    Verified against the hub's published hash; cached, so later calls (and offline runs)
    cost no download.
    """
    hub = _import_hub()
    from huggingface_hub import errors as hub_errors

    where = f"{repo_id}/{filename}" + (f" at {revision}" if revision else "")
    is_offline = offline()
    try:
        path = hub.hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            endpoint=endpoint(),
            cache_dir=str(cache_dir()),
            local_files_only=is_offline,
        )
    except hub_errors.LocalEntryNotFoundError as exc:
        if is_offline:
            raise ModelError(
                f"{where} is not downloaded yet and HF_HUB_OFFLINE is set: unset HF_HUB_OFFLINE "
                f"and run again with the network on (cache: {cache_dir()})"
            ) from None
        raise ModelError(
            f"cannot reach {endpoint()} to download {where} (not cached yet): check the network "
            "(or HF_ENDPOINT, a proxy) and run again"
        ) from exc
    except hub_errors.OfflineModeIsEnabled:
        raise ModelError(
            f"{where} is not downloaded yet and HF_HUB_OFFLINE is set: unset it and run again"
        ) from None
    except hub_errors.GatedRepoError:
        raise ModelError(
            f"{repo_id} is gated: accept its terms on its page at {endpoint()}/{repo_id} and set "
            "HF_TOKEN to an access token"
        ) from None
    except hub_errors.RepositoryNotFoundError:
        raise ConfigError(
            f"{repo_id}: no such repository at {endpoint()} (check the name; a private one "
            "needs HF_TOKEN)"
        ) from None
    except hub_errors.RevisionNotFoundError:
        raise ConfigError(f"{repo_id} has no revision {revision!r}: check the name") from None
    except hub_errors.EntryNotFoundError:
        raise ConfigError(
            f"{repo_id} has no file {filename}" + (f" at {revision}" if revision else "") + ": "
            "check the name"
        ) from None
    except hub_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "an error")
        raise ModelError(f"{endpoint()} answered {status} for {where}: try again later") from exc
    except _network_errors() as exc:
        raise ModelError(
            f"download of {where} broke off ({_first_line(exc)}): check the network and run again"
        ) from exc
    except OSError as exc:  # size mismatch after retries, disk full, cache not writable
        raise ModelError(f"download of {where} failed: {_first_line(exc)}") from exc
    local = Path(path)
    verify(local, where)
    return local


def verify(path: Path, what: str) -> None:
    """Check a cached file against the hash it is stored under; delete it if it does not match.

    The cache names each blob by the hub's ETag: the SHA-256 of an LFS file, the git blob
    SHA-1 of a small one. Anything else (a copy where symlinks are missing) is left alone.
    """
    blob = path.resolve()
    expected = blob.name
    marker = _verified_dir() / expected
    if marker.exists():
        return
    if _SHA256.fullmatch(expected):
        kind, actual = "sha256", _sha256(blob)
    elif _GIT_SHA1.fullmatch(expected):
        kind, actual = "git sha1", _git_sha1(blob)
    else:
        return
    if actual != expected:
        for stale in {path, blob}:
            stale.unlink(missing_ok=True)
        raise ModelError(
            f"download of {what} is corrupt ({kind} {actual[:12]}... is not the published "
            f"{expected[:12]}...): deleted it; run again to download it anew"
        )
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass  # only costs a second check next time


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _git_sha1(path: Path) -> str:
    """The git blob id: SHA-1 of ``blob <size>\\0`` and the content."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
