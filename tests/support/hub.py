"""A local stand-in for the Hugging Face hub on 127.0.0.1, speaking what huggingface_hub requests.

``hf_hub_download`` sends ``HEAD {endpoint}/{repo}/resolve/{revision}/{path}`` and reads
``X-Repo-Commit``, ``X-Linked-Etag`` (else ``ETag``) and ``X-Linked-Size`` (else
``Content-Length``); then it GETs the file, with ``Range: bytes=N-`` when it resumes after a
dropped connection. As on the real hub:

* a small (git) file answers the HEAD with 200, ``ETag`` = its git blob SHA-1;
* an LFS file (``lfs=True``, the default for files over 1 MB) answers with a 302 to a second
  server standing in for the CDN (another origin, so huggingface_hub does not follow it on
  HEAD and takes the metadata from the 302), ``X-Linked-Etag`` = its SHA-256 and
  ``X-Linked-Size``; the CDN serves the bytes with Range support;
* an unknown repository is 401 with ``X-Error-Code: RepoNotFound``, an unknown revision 404
  ``RevisionNotFound``, an unknown file 404 ``EntryNotFound``.

Faults, per file path: ``corrupt`` (same size, one byte flipped), ``drop`` (close the
connection after N bytes, for the next ``times`` GETs), ``missing`` (404 EntryNotFound).
Hostile modes, per file path, for what a broken or malicious mirror does: ``status`` (answer
500, 403, 429...), ``loops`` (a redirect to itself, for ever), ``extra`` (the GET sends that
many bytes more than the HEAD announced, with no Content-Length to warn the client, made as
they are sent: a 3 GB answer costs no memory), ``drip`` (the GET sends one byte every so
many seconds), ``headers`` (HEAD and GET answer with these headers instead: a hostile
``ETag``, no ``X-Repo-Commit``). ``sent`` counts the body bytes each path got out before the
client stopped reading.
Every request is recorded (``hub.requests``).

Usage: the ``hub`` fixture points ``HF_ENDPOINT`` at it and ``HF_HOME``/``XDG_*`` at a
temporary folder::

    def test_x(hub):
        hub.add("org/repo", "model.gguf", data)        # bytes or a Path
        path = voicechat.models.fetch("org/repo", "model.gguf")
"""

from __future__ import annotations

import hashlib
import itertools
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

LFS_THRESHOLD = 1 << 20
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")


@dataclass
class HubFile:
    """One file of a repository."""

    source: bytes | Path
    """Its content, or the file holding it (served without loading it all)."""
    lfs: bool
    """Stored in LFS: served through the CDN, identified by its SHA-256."""
    _sha256: str | None = None
    _git_sha1: str | None = None

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size

    def read(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes from ``start`` to ``end`` (exclusive), in blocks."""
        end = self.size if end is None else end
        if isinstance(self.source, bytes):
            yield self.source[start:end]
            return
        with self.source.open("rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                block = f.read(min(left, 1 << 16))
                if not block:
                    return
                left -= len(block)
                yield block

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            digest = hashlib.sha256()
            for block in self.read():
                digest.update(block)
            self._sha256 = digest.hexdigest()
        return self._sha256

    @property
    def git_sha1(self) -> str:
        if self._git_sha1 is None:
            digest = hashlib.sha1(f"blob {self.size}\0".encode())
            for block in self.read():
                digest.update(block)
            self._git_sha1 = digest.hexdigest()
        return self._git_sha1

    @property
    def md5(self) -> str:
        digest = hashlib.md5()
        for block in self.read():
            digest.update(block)
        return digest.hexdigest()


@dataclass
class Request:
    """One request the hub (or its CDN) received."""

    method: str
    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    server: str
    """``hub`` or ``cdn``."""


@dataclass
class Drop:
    after: int
    """Bytes of the body sent before the connection is closed."""
    times: int
    """GETs that drop; later ones are served whole."""


@dataclass
class Hub:
    """The fake hub's state; `HubServer` serves it."""

    repos: dict[str, dict[str, HubFile]] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)
    revisions: dict[str, set[str]] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    """Paths served with one byte flipped (same size)."""
    drops: dict[str, Drop] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    """Paths answered with 404 EntryNotFound although the repository has them."""
    status: dict[str, int] = field(default_factory=dict)
    """Paths answered with this HTTP status (HEAD and GET), as a failing mirror does."""
    loops: set[str] = field(default_factory=set)
    """Paths answered with a redirect to themselves."""
    extra: dict[str, int] = field(default_factory=dict)
    """Paths whose GET sends this many bytes beyond the announced size."""
    drip: dict[str, float] = field(default_factory=dict)
    """Paths whose GET sends one byte every this many seconds."""
    headers: dict[str, dict[str, str | None]] = field(default_factory=dict)
    """Paths whose answers carry these headers (None: left out) instead of the real ones."""
    sent: dict[str, int] = field(default_factory=dict)
    """Body bytes written per path (what the client read, give or take the socket buffers)."""
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    cdn_url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self,
        repo_id: str,
        path: str,
        content: bytes | str | Path,
        *,
        lfs: bool | None = None,
        revisions: tuple[str, ...] = ("main",),
    ) -> HubFile:
        """Put a file into a repository (created on first use)."""
        source = content.encode() if isinstance(content, str) else content
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        hub_file = HubFile(source, size > LFS_THRESHOLD if lfs is None else lfs)
        self.repos.setdefault(repo_id, {})[path] = hub_file
        self.commits.setdefault(repo_id, hashlib.sha1(repo_id.encode()).hexdigest())
        self.revisions.setdefault(repo_id, set()).update(revisions)
        return hub_file

    def drop(self, path: str, after: int, times: int = 1) -> None:
        """Close the connection after ``after`` body bytes, for the next ``times`` GETs."""
        self.drops[path] = Drop(after, times)

    def gets(self, path: str) -> list[Request]:
        """The GETs of a file's bytes (at the hub or its CDN)."""
        wanted = {f"/cdn/{f.sha256}" for r in self.repos.values() if (f := r.get(path))}
        return [
            r
            for r in self.requests
            if r.method == "GET" and (r.path in wanted or r.path.endswith(f"/{path}"))
        ]

    def _by_sha(self, sha: str) -> tuple[str, HubFile] | None:
        for files in self.repos.values():
            for path, hub_file in files.items():
                if hub_file.lfs and hub_file.sha256 == sha:
                    return path, hub_file
        return None


def _handler(hub: Hub, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _answer(self, head: bool) -> None:
            with hub.lock:
                headers = {k.lower(): v for k, v in self.headers.items()}
                hub.requests.append(Request(self.command, self.path, headers, role))
            path = self.path.split("?", 1)[0]
            if role == "cdn":
                match = _CDN.match(path)
                found = hub._by_sha(match["sha"]) if match else None
                if found is None:
                    return self._error(404, None, "not found")
                return self._send_file(found[0], found[1], head)
            match = _RESOLVE.match(path)
            if match is None:
                return self._error(404, None, "page not found")
            repo, rev, name = match["repo"], match["rev"], match["path"]
            files = hub.repos.get(repo)
            if files is None:
                return self._error(401, "RepoNotFound", "Repository not found")
            commit = hub.commits[repo]
            if rev not in hub.revisions[repo] and rev != commit:
                return self._error(404, "RevisionNotFound", "Invalid rev id", commit)
            hub_file = files.get(name)
            if hub_file is None or name in hub.missing:
                return self._error(404, "EntryNotFound", "Entry not found", commit)
            if name in hub.status:
                return self._error(hub.status[name], None, "the mirror is failing")
            if name in hub.loops:
                self.send_response(302)
                self.send_header("Location", self.path)  # here again, for ever
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if hub_file.lfs:
                self.send_response(302)
                self._headers(
                    name,
                    {
                        "Location": f"{hub.cdn_url}/cdn/{hub_file.sha256}",
                        "X-Repo-Commit": commit,
                        "ETag": f'"{hub_file.git_sha1}"',  # the pointer file's id
                        "X-Linked-Etag": f'"{hub_file.sha256}"',
                        "X-Linked-Size": str(hub_file.size),
                        "Content-Length": "0",
                    },
                )
                self.end_headers()
                return None
            return self._send_file(name, hub_file, head, commit=commit)

        def _headers(self, name: str, headers: dict[str, str]) -> None:
            """Send ``headers``, with the path's hostile replacements."""
            replaced = hub.headers.get(name, {})
            for key, value in {**headers, **replaced}.items():
                if value is not None:
                    self.send_header(key, value)

        def _error(self, status: int, code: str | None, message: str, commit: str = "") -> None:
            body = f'{{"error":"{message}"}}'.encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _send_file(self, name: str, hub_file: HubFile, head: bool, commit: str = "") -> None:
            size = hub_file.size
            start = 0
            ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            end = size
            if ranged:
                start = int(ranged[1])
                end = int(ranged[2]) + 1 if ranged[2] else size
            if start > size or end > size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if ranged else 200)
            headers = (
                {"X-Repo-Commit": commit, "ETag": f'"{hub_file.git_sha1}"'}
                if commit
                else {"ETag": f'"{hub_file.sha256}"'}
            )
            if ranged:
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            extra = 0 if head else hub.extra.get(name, 0)
            headers.update({"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"})
            if extra:  # no length to check first: the body ends when the connection does
                headers["Connection"] = "close"
                self.close_connection = True
            else:
                headers["Content-Length"] = str(end - start)
            self._headers(name, headers)
            self.end_headers()
            if head:
                return
            if name in hub.drip or extra:
                return self._send_hostile(name, hub_file, start, end, extra)
            drop = hub.drops.get(name)
            limit = None
            if drop is not None and drop.times > 0:
                drop.times -= 1
                limit = max(0, drop.after - start)
            sent = 0
            for block in hub_file.read(start, end):
                if name in hub.corrupt:
                    block = _flip(block, start + sent, size)
                if limit is not None and sent + len(block) >= limit:
                    self.wfile.write(block[: limit - sent])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # the connection drops mid-file
                    return
                self.wfile.write(block)
                sent += len(block)

        def _send_hostile(
            self, name: str, hub_file: HubFile, start: int, end: int, extra: int
        ) -> None:
            """The body one byte at a time (``drip``) or with ``extra`` bytes after it."""
            delay = hub.drip.get(name)
            blocks = itertools.chain(hub_file.read(start, end), _zeros(extra) if extra else ())
            try:
                for block in blocks:
                    pieces = [block[i : i + 1] for i in range(len(block))] if delay else [block]
                    for piece in pieces:
                        self.wfile.write(piece)
                        self.wfile.flush()
                        with hub.lock:
                            hub.sent[name] = hub.sent.get(name, 0) + len(piece)
                        if delay:
                            time.sleep(delay)
            except OSError:
                self.close_connection = True  # the client stopped reading: good

    return Handler


def _zeros(count: int, block: int = 1 << 16) -> Iterator[bytes]:
    """``count`` zero bytes in blocks, made as they are sent."""
    zeros = bytes(block)
    while count > 0:
        yield zeros[: min(block, count)]
        count -= block


def _flip(block: bytes, offset: int, size: int) -> bytes:
    """Flip the middle byte of the file if it is in this block."""
    middle = size // 2
    if offset <= middle < offset + len(block):
        i = middle - offset
        return block[:i] + bytes([block[i] ^ 0xFF]) + block[i + 1 :]
    return block


class HubServer:
    """The hub and its CDN on two ports of 127.0.0.1 (two origins, as in real life)."""

    def __init__(self, hub: Hub | None = None) -> None:
        self.hub = hub or Hub()
        self._servers = [
            ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.hub, role))
            for role in ("hub", "cdn")
        ]
        for server in self._servers:
            server.daemon_threads = True
        self.hub.url = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.hub.cdn_url = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        self._threads = [
            threading.Thread(target=s.serve_forever, args=(0.05,), name="fake-hub", daemon=True)
            for s in self._servers
        ]

    def __enter__(self) -> Hub:
        for thread in self._threads:
            thread.start()
        return self.hub

    def __exit__(self, *exc: object) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)


def hub_env(hub: Hub, home: Path) -> dict[str, str]:
    """Environment sending huggingface_hub (and voicechat) to ``hub``, with caches in ``home``."""
    return {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(home / "hf"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_DATA_HOME": str(home / "data"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    }


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    """A running fake hub; ``HF_ENDPOINT``, ``HF_HOME`` and the XDG folders point at it/tmp."""
    with HubServer() as served:
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        for name, value in hub_env(served, tmp_path).items():
            monkeypatch.setenv(name, value)
        yield served
