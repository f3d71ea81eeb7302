"""The Hugging Face hub as voicechat uses it: its settings, and huggingface_hub owned.

`download` is `voicechat.models.fetch`'s way to the network (models checks the names before
and the hash after). ``HF_ENDPOINT`` (a mirror, or the tests' local hub) and
``HF_HUB_OFFLINE`` are read at each call, not when huggingface_hub happens to be imported
(only here, only when called). Files land in the user's Hugging Face cache, shared with
every other tool that uses it.

Left to itself, huggingface_hub retries an unreachable or failing hub five times with
back-off (24 s and 10-12 log lines, each with the URL and any password in HF_ENDPOINT),
reports a mirror answering 500 as "check your connection", names the file it writes in its
cache after the hub's ETag header (an ETag of ../../x wrote outside it), reads a body to its
end however much longer than announced, waits for ever on a server that drips a byte now
and then, and labels its progress bar with the URL. So, inside `download`:

* its requests go through a guarded client (`_hub`): a failed connection, a 429 or a 5xx
  stop at once (the cache is used if it has the file); a HEAD whose ETag or commit id is not
  a hash is refused; a body stops at the first byte past the size the catalog or the HEAD
  announced, and must bring `PACE_BYTES` in every `PACE_SECONDS`; Xet is off, so every byte
  comes through that client;
* its log lines are off unless ``HF_HUB_VERBOSITY`` asks for them, and then redacted;
* its progress bar (on a terminal) is labelled with the file's name;
* each failure is one line with its cause: unreachable, refused (HTTP status), missing
  (404), too slow, or not behaving as a hub.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicechat.errors import ConfigError, ModelError
from voicechat.redact import redact_url, short

HUB_HINT = "pip install huggingface_hub (included in voicechat[piper])"
DEFAULT_ENDPOINT = "https://huggingface.co"
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")


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


def _import_hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ModelError(f"downloading models needs huggingface_hub ({exc}): {HUB_HINT}") from exc
    return huggingface_hub


# --- huggingface_hub, owned: its client, its logging, its progress bar ------------------


class _HubFailure(Exception):
    """Raised from inside huggingface_hub's calls (it does not catch it): `fetch` says it."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _Unreachable(_HubFailure):
    """No connection, or no answer in time: the cache may still have the file."""


class _Refused(_HubFailure):
    """The hub answered with an error status (429, 5xx): the cache may still have the file."""


class _Broken(_HubFailure):
    """The hub answered something no hub sends (a path for an ETag, a redirect loop)."""


class _TooSlow(_HubFailure):
    """Less than `PACE_BYTES` in `PACE_SECONDS`: a drip-feed, or a network too poor to finish."""


PACE_SECONDS = 30.0
PACE_BYTES = 32 << 10
"""A download must bring at least this much in every `PACE_SECONDS` (about 1 KB/s), else it
stops: a server that drips a byte now and then would otherwise hold it for ever (each read
comes before huggingface_hub's read timeout)."""
_ERROR_BODY = 1 << 20
"""Bytes of an error page read at most."""


@dataclass
class _Transfer:
    """The fetch in progress in this thread: what the guarded client knows of it."""

    where: str
    """``repo/file`` for messages."""
    size: int | None = None
    """The size the caller knows (a catalog's): the hub must announce and send exactly it."""
    max_size: int | None = None
    """The most a file of this kind may have (a catalog of 64 MB is not one)."""
    announced: int | None = None
    """The size the hub's HEAD announced."""
    window_start: float | None = None
    window_bytes: int = 0

    def limit(self) -> int | None:
        """Bytes the file may have: what the caller knows, else what the hub announced."""
        if self.size is not None:
            return self.size
        return self.announced if self.announced is not None else self.max_size

    def announce(self, size: int) -> None:
        """The hub's HEAD announced ``size`` bytes: refused if the caller knows otherwise."""
        if self.size is not None and size != self.size:
            raise _Broken(f"it announces {size} bytes where the catalog says {self.size}")
        if self.max_size is not None and size > self.max_size:
            raise _Broken(f"it announces {size} bytes, more than the {self.max_size} allowed")
        self.announced = size

    def pace(self, received: int) -> None:
        """Count ``received`` bytes; `_TooSlow` when a window brought too few."""
        now = time.monotonic()
        if self.window_start is None:
            self.window_start = now
        self.window_bytes += received
        if now - self.window_start >= PACE_SECONDS:
            if self.window_bytes < PACE_BYTES:
                raise _TooSlow(f"{self.window_bytes} bytes in the last {PACE_SECONDS:.0f} s")
            self.window_start, self.window_bytes = now, 0


_TRANSFER: contextvars.ContextVar[_Transfer | None] = contextvars.ContextVar(
    "voicechat_transfer", default=None
)
_HUB: Any = None
"""huggingface_hub once `_hub` has set it up."""
_HASH = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_RANGE_START = re.compile(r"bytes=(\d{1,18})-")


def _hub() -> Any:
    """huggingface_hub, imported and set up on first use (the guarded client, quiet logging)."""
    global _HUB
    if _HUB is not None:
        return _HUB
    hub = _import_hub()
    import httpx2

    class Guarded(httpx2.SyncByteStream):
        """A body read no further than ``most`` bytes, at `_Transfer.pace`."""

        def __init__(self, stream: Any, transfer: _Transfer, most: int | None) -> None:
            self._stream, self._transfer, self._most = stream, transfer, most

        def __iter__(self) -> Iterator[bytes]:
            got = 0
            for chunk in self._stream:
                got += len(chunk)
                if self._most is not None and got > self._most:
                    raise _Broken(f"it sent more than the {self._most} bytes announced")
                self._transfer.pace(len(chunk))
                yield chunk

        def close(self) -> None:
            self._stream.close()

    class GuardedClient(httpx2.Client):
        """huggingface_hub's client; inside `fetch` every answer passes `_checked` first."""

        def send(self, request: Any, *, stream: bool = False, **kwargs: Any) -> Any:
            transfer = _TRANSFER.get()
            if transfer is None:  # not one of ours: as huggingface_hub would
                return super().send(request, stream=stream, **kwargs)
            if request.method == "GET":
                transfer.pace(0)  # a retry after a read timeout counts as time too
                # a compressed body would be counted short: a few KB can unpack to gigabytes
                request.headers["Accept-Encoding"] = "identity"
            try:
                response = super().send(request, stream=True, **kwargs)
            except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.ProxyError) as exc:
                raise _Unreachable(_cause(exc)) from None
            except httpx2.TimeoutException:
                raise _Unreachable("no answer in time") from None
            except httpx2.TooManyRedirects:
                raise _Broken("it redirects in a loop") from None
            try:
                most = _checked(response, transfer)
                response.stream = Guarded(response.stream, transfer, most)
                if not stream:
                    response.read()
            except BaseException:
                response.close()
                raise
            return response

    def client() -> Any:
        # as huggingface_hub's default_client_factory, with the guard
        from huggingface_hub.utils._http import hf_request_event_hook

        return GuardedClient(
            event_hooks={"request": [hf_request_event_hook]}, follow_redirects=True, timeout=None
        )

    hub.set_client_factory(client)
    # Xet downloads run in hf_xet's own HTTP stack, outside the guard: plain HTTP instead
    # (the hub serves every file that way too)
    hub.constants.HF_HUB_DISABLE_XET = True
    _own_logging()
    _HUB = hub
    return hub


def _checked(response: Any, transfer: _Transfer) -> int | None:
    """Refuse an answer no hub sends, or one that says the hub is failing right now; the
    bytes its body may have."""
    status = response.status_code
    if status == 429 or status >= 500:
        raise _Refused(f"HTTP {status}")
    headers = response.headers
    if response.request.method == "HEAD":
        commit = headers.get("X-Repo-Commit")
        if commit is not None and not _GIT_SHA1.fullmatch(commit):
            raise _Broken(f"an X-Repo-Commit that is not a commit id ({short(repr(commit), 60)})")
        for name in ("X-Linked-Etag", "ETag"):
            value = headers.get(name)
            if value is None:
                continue
            etag = value.removeprefix("W/").strip('"')
            if not _HASH.fullmatch(etag):  # huggingface_hub names the cached file by it
                raise _Broken(f"an {name} that is not a hash ({short(repr(value), 60)})")
        # huggingface_hub takes the size from these; a redirect on the way has no say
        linked = headers.get("X-Linked-Size")
        raw = linked if linked is not None or status >= 300 else headers.get("Content-Length")
        if raw is not None:
            size = _length(raw)
            if size is None:
                raise _Broken(f"a size that is not a number ({short(repr(raw), 30)})")
            transfer.announce(size)
        return 0
    if not 200 <= status < 300:
        return _ERROR_BODY
    if headers.get("Content-Encoding", "identity").lower() != "identity":
        raise _Broken("a compressed body although none was asked for")
    limit = transfer.limit()
    if limit is None:
        return None
    ranged = _RANGE_START.match(response.request.headers.get("Range", ""))
    most = limit - (int(ranged[1]) if ranged else 0)
    length = _length(headers.get("Content-Length"))
    if length is not None and length > most:
        raise _Broken(f"it sends {length} bytes where {most} were announced")
    return most


def _length(value: str | None) -> int | None:
    """A Content-Length-like header as a number (None: absent or not a number)."""
    return int(value) if value is not None and value.isdigit() and len(value) <= 18 else None


class _Redacting(logging.Formatter):
    """huggingface_hub's lines, with secrets and control characters out, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        return short(super().format(record), 400)


def _own_logging() -> None:
    """huggingface_hub's log lines: off (voicechat says what failed, once), unless
    ``HF_HUB_VERBOSITY`` asks for them; then redacted."""
    logger = logging.getLogger("huggingface_hub")
    handler = logging.StreamHandler()
    handler.setFormatter(_Redacting())
    logger.handlers = [handler]
    logger.propagate = False
    if not os.environ.get("HF_HUB_VERBOSITY"):
        logger.setLevel(logging.CRITICAL + 1)


def _progress_class(hub: Any, label: str) -> Any:
    """huggingface_hub's progress bar labelled ``label`` (it would show the URL, or a name
    the server sent)."""
    from huggingface_hub.utils import tqdm as hub_tqdm

    class Progress(hub_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["desc"] = label
            super().__init__(*args, **kwargs)

    return Progress


def _cause(exc: BaseException) -> str:
    """What an HTTP library's exception says, short: ``connection refused``."""
    text = short(str(exc), 120) or type(exc).__name__
    match = re.search(r"\[Errno -?\d+\] (.*)", text)
    return (match[1] if match else text).lower()


# --- download ----------------------------------------------------------------------------------


def download(
    repo_id: str,
    filename: str,
    *,
    revision: str | None,
    named_by_user: bool,
    size: int | None = None,
    max_size: int | None = None,
) -> Path:
    """The cached path of ``filename`` of ``repo_id``, downloaded if needed (not yet verified:
    `voicechat.models.fetch` does that). ``named_by_user``: a missing name is the user's
    `ConfigError`, else a `ModelError` about the hub; ``size``/``max_size``: see `_Transfer`."""
    url = endpoint()
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"HF_ENDPOINT {redact_url(url)} is not an http:// or https:// URL")
    where = f"{repo_id}/{filename}" + (f" at {revision}" if revision else "")
    hub = _hub()
    token = _TRANSFER.set(_Transfer(where, size, max_size))
    try:
        try:
            return Path(
                _download(hub, repo_id, filename, revision, where, named_by_user, offline())
            )
        except (_Unreachable, _Refused) as failure:
            try:  # what huggingface_hub does itself when the hub cannot answer
                return Path(_download(hub, repo_id, filename, revision, where, named_by_user, True))
            except ModelError:
                raise _failed(failure, where) from None
        except _HubFailure as failure:
            raise _failed(failure, where) from None
    finally:
        _TRANSFER.reset(token)


def _failed(failure: _HubFailure, where: str) -> ModelError:
    """The one line for a hub that could not be reached, refused, or broke the rules."""
    host = redact_url(endpoint())
    if isinstance(failure, _Unreachable):
        return ModelError(
            f"cannot reach {host} to download {where} ({failure.detail}; not cached yet): "
            "check the network (or HF_ENDPOINT, a proxy) and run again"
        )
    if isinstance(failure, _TooSlow):
        return ModelError(
            f"download of {where} from {host} is too slow ({failure.detail}): check the "
            "network and run again"
        )
    if isinstance(failure, _Refused):
        return ModelError(
            f"{host} answered {failure.detail} for {where} (not cached yet): the server is "
            "failing; try again later (or another HF_ENDPOINT)"
        )
    return ModelError(
        f"{host} does not behave as a Hugging Face hub for {where} ({failure.detail}): "
        "refused; check HF_ENDPOINT"
    )


def _download(
    hub: Any,
    repo_id: str,
    filename: str,
    revision: str | None,
    where: str,
    named_by_user: bool,
    local_only: bool,
) -> str:
    """``hf_hub_download``, its errors translated (a `_HubFailure` passes through)."""
    import httpx2
    from huggingface_hub import errors as hub_errors

    host = redact_url(endpoint())
    wrong = ConfigError if named_by_user else ModelError
    check = "check the name" if named_by_user else "a mirror without it? check HF_ENDPOINT"
    try:
        path: str = hub.hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            endpoint=endpoint(),
            cache_dir=str(cache_dir()),
            local_files_only=local_only,
            tqdm_class=_progress_class(hub, filename.rsplit("/", 1)[-1]),
        )
        return path
    except hub_errors.LocalEntryNotFoundError as exc:
        if offline():
            raise ModelError(
                f"{where} is not downloaded yet and HF_HUB_OFFLINE is set: unset HF_HUB_OFFLINE "
                f"and run again with the network on (cache: {cache_dir()})"
            ) from None
        cause = exc.__cause__
        if isinstance(cause, hub_errors.FileMetadataError):
            raise ModelError(
                f"{host} does not answer for {where} as a Hugging Face hub does (no commit id "
                "or ETag): check HF_ENDPOINT"
            ) from None
        if isinstance(cause, hub_errors.HfHubHTTPError):
            status = getattr(cause.response, "status_code", None)
            raise ModelError(
                f"{host} refused {where} (HTTP {status}): check HF_TOKEN, a proxy, or HF_ENDPOINT"
            ) from None
        raise ModelError(f"{where} is not downloaded yet and {host} cannot be asked") from None
    except hub_errors.OfflineModeIsEnabled:
        raise ModelError(
            f"{where} is not downloaded yet and HF_HUB_OFFLINE is set: unset it and run again"
        ) from None
    except hub_errors.GatedRepoError:
        raise ModelError(
            f"{repo_id} is gated: accept its terms on its page at {host}/{repo_id} and set "
            "HF_TOKEN to an access token"
        ) from None
    except hub_errors.RepositoryNotFoundError:
        raise wrong(
            f"{repo_id}: no such repository at {host} ({check}; a private one needs HF_TOKEN)"
        ) from None
    except hub_errors.RevisionNotFoundError:
        raise wrong(f"{repo_id} has no revision {revision!r} on {host}: {check}") from None
    except hub_errors.EntryNotFoundError:
        raise wrong(
            f"{repo_id} has no file {filename}"
            + (f" at {revision}" if revision else "")
            + f" on {host}: {check}"
        ) from None
    except hub_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise ModelError(
            f"{host} refused {where} (HTTP {status}): check HF_TOKEN, a proxy, or HF_ENDPOINT"
        ) from None
    except httpx2.TooManyRedirects:
        raise _Broken("it redirects in a loop") from None
    except httpx2.HTTPError as exc:
        raise ModelError(
            f"download of {where} broke off ({_cause(exc)}): check the network and run again"
        ) from None
    except hub_errors.HFValidationError as exc:
        raise wrong(f"{where}: {short(exc, 160)}") from None
    except (FileExistsError, NotADirectoryError) as exc:
        raise ModelError(
            f"{short(str(exc.filename), 160)} is a file where the Hugging Face cache keeps a "
            "folder: move it away and run again"
        ) from None
    except (OSError, ValueError) as exc:  # disk full, cache not writable, size mismatch
        raise ModelError(f"download of {where} failed: {short(exc, 200)}") from None
