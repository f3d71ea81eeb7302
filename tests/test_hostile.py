"""Issue 12 as tables: hostile servers, profiles and environment values through the real CLI.

Every case asserts the exit code, one line on stderr (no traceback), no escape code or other
control character, no secret, and the text received so far kept on stdout.
"""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import pytest

from tests.support import cli
from tests.support.environ import clean_env
from tests.support.hostile import CASES, HostileServer

KEY = "sk-hostile-0123456789abcdef"
PASSWORD = "s3cr3t-pw-4711"
SECRETS = (KEY, PASSWORD, base64.b64encode(f"user:{PASSWORD}".encode()).decode())
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
MAX_ERROR_LINE = 600

# case -> (exit code for ollama, exit code for openai, text that must stay on stdout)
EXPECTED: dict[str, tuple[int, int, str]] = {
    "echo400": (7, 7, ""),
    "echo401": (5, 5, ""),
    "echo403": (5, 5, ""),
    "echo404": (4, 4, ""),
    "echo429": (7, 7, ""),
    "echo500": (7, 7, ""),
    "echo502": (7, 7, ""),
    "echo503": (7, 7, ""),
    "echomid": (9, 9, "Kept"),
    "notjson": (9, 9, "Kept"),
    "longline": (9, 9, "Kept"),
    "trickle": (8, 8, "Kept"),
    "html200": (9, 9, ""),
    "redirect301": (6, 6, ""),
    "redirect302": (6, 6, ""),
    "fastapi404": (6, 6, ""),
    "llamacpp404": (6, 6, ""),
    "badutf8": (0, 0, "Kept \ufffd"),
    "donefirst": (9, 9, ""),
    "whitespace": (9, 9, ""),
    "unterminated": (0, 9, "Kept"),
    "plain500": (7, 7, ""),
}


def voicechat(tmp_path: Path, *args: str, timeout: float = 30, **env: str):  # type: ignore[no-untyped-def]
    result = cli.run(*args, env=clean_env(tmp_path, **env), timeout=timeout, encoding="utf-8",
                     errors="replace")  # fmt: skip
    return result.returncode, result.stdout, result.stderr


def voicechat_in_process(tmp_path: Path, *args: str, **env: str):  # type: ignore[no-untyped-def]
    result = cli.invoke(*args, env=clean_env(tmp_path, **env))
    return result.returncode, result.stdout, result.stderr


def assert_clean(stdout: str, stderr: str, code: int) -> str:
    """No traceback, no control character, no secret; for a failure, exactly one line."""
    assert "Traceback" not in stderr
    for text in (stdout, stderr):
        assert not CONTROL.search(text), repr(text[:400])
        for secret in SECRETS:
            assert secret not in text, (secret, text[:400])
    if code == 0:
        return ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("voicechat: error: ")
    assert len(lines[0]) <= MAX_ERROR_LINE, len(lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def hostile_server():  # type: ignore[no-untyped-def]
    with HostileServer() as server:
        yield server


def profile_for(tmp_path: Path, server: HostileServer, case: str, protocol: str) -> Path:
    if protocol == "openai":
        backend = (
            f"{{kind: openai, base_url: '{server.url(case, 'openai')}', model: m, "
            "api_key_env: HOSTILE_KEY, progress_timeout: 1}"
        )
    else:
        url = server.url(case, "ollama", userinfo=f"user:{PASSWORD}")
        backend = f"{{kind: ollama, base_url: '{url}', model: m, progress_timeout: 1}}"
    path = tmp_path / f"{case}-{protocol}.yaml"
    path.write_text(f"backend: {backend}\ntts: {{engine: none}}\n")
    return path


def test_every_case_has_an_expectation() -> None:
    assert set(EXPECTED) == set(CASES)


@pytest.mark.parametrize("protocol", ["ollama", "openai"])
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_hostile_server(
    hostile_server: HostileServer, tmp_path: Path, case: str, protocol: str
) -> None:
    ollama_code, openai_code, kept = EXPECTED[case]
    expected = ollama_code if protocol == "ollama" else openai_code
    profile = profile_for(tmp_path, hostile_server, case, protocol)
    # the process around a command (its exit status, its streams) is the same for both
    # protocols and tested launched, with Ollama; the OpenAI half tests the SDK's faults as
    # they are translated, in this process: launched, each case paid the SDK's import
    run = voicechat if protocol == "ollama" else voicechat_in_process
    started = time.monotonic()
    code, stdout, stderr = run(tmp_path, "ask", "-p", str(profile), "q", HOSTILE_KEY=KEY)
    assert time.monotonic() - started < 20
    assert code == expected, stderr
    line = assert_clean(stdout, stderr, code)
    assert kept in stdout
    if case.startswith("redirect"):
        assert "redirected" in line and "elsewhere.example" in line
        assert "hunter2" not in line and "k9" not in line
    if case in ("fastapi404", "llamacpp404"):
        assert "ollama pull" not in line
    if case == "trickle":
        assert "progress_timeout" in line
    if case == "badutf8":
        assert "and more" in stdout


def test_a_refused_key_from_openai_api_key_does_not_say_set_api_key_env(
    hostile_server: HostileServer, tmp_path: Path
) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(
        f"backend: {{kind: openai, base_url: '{hostile_server.url('echo401', 'openai')}', "
        "model: m}\ntts: {engine: none}\n"
    )
    code, stdout, stderr = voicechat(tmp_path, "ask", "-p", str(profile), "q", OPENAI_API_KEY=KEY)
    line = assert_clean(stdout, stderr, code)
    assert code == 5
    assert "api_key_env" not in line and "$OPENAI_API_KEY" in line


# --- hostile profiles and environment values ---------------------------------------------------

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [*{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}]\n"
    for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)
DOTENV = "OPENAI_API_KEY=sk-live-abcdefghijklmnop0123456789\nOTHER_TOKEN=tok-9f8e7d6c5b4a\n"
SHADOW = (
    "root:$y$j9T$abcdefghijklmnopqrstuv$0123456789abcdefghijklmnopqrstuvwxyzABCDE:19000:0:99999:7:::\n"
    "daemon:*:19000:0:99999:7:::\n"
)
FILE_SECRETS = (
    "abcdefghijklmnop0123456789",
    "tok-9f8e7d6c5b4a",
    "0123456789abcdefghijklmnopqrstuvwxyz",
)
BACKEND = "backend: {kind: ollama, base_url: 'http://127.0.0.1:9', model: m}\n"

PROFILES: dict[str, tuple[str | bytes, str]] = {
    # name: (file content, text the error line must contain)
    "billion-laughs-kind": (
        LAUGHS + "backend: {kind: *i, base_url: 'http://h:1', model: m}\n",
        "aliases",
    ),
    "billion-laughs-engine": (LAUGHS + BACKEND + "tts: {engine: *i}\n", "aliases"),
    "dotenv": (DOTENV, "expected a mapping"),
    "shadow": (SHADOW, "unknown key"),
    "list-key": ("backend: {[a, b]: 1}\n", "a key must be"),
    "nan-temperature": (BACKEND + "generation: {temperature: .nan}\n", "generation.temperature"),
    "inf-timeout": (
        "backend: {kind: ollama, base_url: 'http://h:1', model: m, read_timeout: .inf}\n",
        "backend.read_timeout",
    ),
    "hot-temperature": (BACKEND + "generation: {temperature: 5}\n", "allowed 0 to 2"),
    "loud-volume": (BACKEND + "tts: {volume: 3.0}\n", "tts.volume: 3.0 is out of range"),
    "negative-timeout": (
        "backend: {kind: ollama, base_url: 'http://h:1', model: m, connect_timeout: -1}\n",
        "backend.connect_timeout",
    ),
    "many-retries": (
        "backend: {kind: ollama, base_url: 'http://h:1', model: m, retries: 99}\n",
        "allowed 0 to 10",
    ),
    "tiny-chunks": (BACKEND + "chunking: {max_chars: 0}\n", "chunking.max_chars"),
    "empty-url": ("backend: {kind: openai, base_url: '', model: m}\n", "is empty"),
    "no-scheme": (
        "backend: {kind: openai, base_url: 'localhost:8080/v1', model: m}\n",
        "no scheme",
    ),
    "ftp-url": ("backend: {kind: openai, base_url: 'ftp://h/v1', model: m}\n", "http or https"),
    "bad-ipv6": (
        "backend: {kind: openai, base_url: 'http://[bad/v1', model: m}\n",
        "not a valid URL",
    ),
    "keep-alive-on-openai": (
        "backend: {kind: openai, base_url: 'http://h:1/v1', model: m, keep_alive: 5m}\n",
        "backend.keep_alive: unknown key",
    ),
    "api-key-env-on-ollama": (
        "backend: {kind: ollama, base_url: 'http://h:1', model: m, api_key_env: K}\n",
        "backend.api_key_env: unknown key",
    ),
    "unknown-kind": ("backend: {kind: grpc, base_url: 'http://h:1', model: m}\n", "ollama, openai"),
    "escape-key": (BACKEND + '"\\e]0;pwned\\a\\e[2J": 1\n', "unknown key"),
    "deep": ("[" * 5000 + "]" * 5000 + "\n", ""),
    "binary": (b"\x00\xff\xfe\x1b[2J" * 100, "not UTF-8"),
    "huge": ("# " + "x" * 2_000_000 + "\n", "not a profile"),
    "key-in-value": (
        "backend: {kind: openai, base_url: 'http://h:1/v1', model: m,\n"
        "  api_key_env: 'sk-live-abcdefghijklmnop0123456789'}\n",
        "is not a variable name",
    ),
}


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_hostile_profile(tmp_path: Path, name: str) -> None:
    content, needle = PROFILES[name]
    path = tmp_path / (".env" if name == "dotenv" else f"{name}.yaml")
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    started = time.monotonic()
    code, stdout, stderr = voicechat(tmp_path, "ask", "-p", str(path), "q")
    assert time.monotonic() - started < 10
    assert code == 2, stderr
    line = assert_clean(stdout, stderr, code)
    assert needle in line
    for secret in FILE_SECRETS:
        assert secret not in line


def test_a_dotenv_file_through_voicechat_profile(tmp_path: Path) -> None:
    path = tmp_path / "app.env"
    path.write_text(DOTENV)
    code, stdout, stderr = voicechat(
        tmp_path, "ask", "q", VOICECHAT_PROFILE=str(tmp_path) + "/app.env"
    )
    assert code == 2
    line = assert_clean(stdout, stderr, code)
    assert all(secret not in line for secret in FILE_SECRETS)


@pytest.mark.parametrize(
    ("var", "value", "profile"),
    [
        ("OLLAMA_HOST", "::::", "ollama-qwen2.5-7b"),
        ("OLLAMA_HOST", "a b", "ollama-qwen2.5-7b"),
        ("OLLAMA_HOST", "http://h:1:2", "ollama-qwen2.5-7b"),
        ("OLLAMA_HOST", "ftp://example.com", "ollama-qwen2.5-7b"),
        ("OLLAMA_HOST", f"http://u:{PASSWORD}@h:port", "ollama-qwen2.5-7b"),
        ("OLLAMA_HOST", "h:99999", "ollama-qwen2.5-7b"),
        ("OLLAMA_HOST", "\x1b[2J", "ollama-openai"),
        ("OPENAI_BASE_URL", "http://[bad/v1", "local-openai"),
        ("OPENAI_BASE_URL", "localhost:8080/v1", "local-openai"),
        ("OPENAI_BASE_URL", "ftp://example.com/v1", "local-openai"),
    ],
)
@pytest.mark.parametrize("command", ["ask", "doctor"])
def test_hostile_environment(
    tmp_path: Path, var: str, value: str, profile: str, command: str
) -> None:
    args = [command, "-p", profile] + (["--mute", "q"] if command == "ask" else ["--no-audio"])
    code, stdout, stderr = voicechat(tmp_path, *args, **{var: value})
    assert code == 2, stderr
    assert "Traceback" not in stderr
    if command == "ask":
        line = assert_clean(stdout, stderr, code)
        assert var in line
    else:
        assert not CONTROL.search(stdout + stderr)
        assert PASSWORD not in stdout + stderr
        assert var in stdout + stderr
