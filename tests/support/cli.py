"""The CLI runner: ``python -m voicechat ARGS`` in a child process, as users run it.

For the tests that are about the process (exit codes, what reaches stdout and stderr, signals,
pipes, terminals); a test about logic calls the Python API instead, which saves a ~1 s launch.

- `run` waits for the process (stdin closed unless ``input`` is given; output captured as text);
- `start` returns the running process (``subprocess.Popen``, pipes for stdout and stderr);
- `spawn` runs it on a pseudo-terminal (``pexpect.spawn``);
- `invoke` runs it in the test's own process (typer's ``CliRunner``): no launch, for a test
  about what a command decides and prints rather than about the process;
- the ``voicechat`` fixture does the same in `clean_env` (config and state folders of the
  test's own, no user settings): ``voicechat.run("ask", "q", OLLAMA_HOST=url)``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.environ import clean_env

COMMAND = (sys.executable, "-m", "voicechat")


def command(*args: str) -> list[str]:
    """The command line that runs voicechat with ``args``."""
    return [*COMMAND, *args]


def run(
    *args: str,
    env: dict[str, str] | None = None,
    input: str | bytes | None = None,
    timeout: float = 30,
    text: bool = True,
    **kw: Any,
) -> subprocess.CompletedProcess:
    """Run voicechat to its end; stdin is closed unless ``input`` is given, stdout and stderr
    are captured unless ``stdout``/``stderr`` say otherwise."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    if input is None:
        kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(command(*args), input=input, timeout=timeout, text=text, env=env, **kw)


def invoke(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """voicechat ``args`` run in this process (typer's ``CliRunner``), with its exit code,
    stdout and stderr as `run` gives them, and no launch: for a test about what a command
    decides and prints (how a server's fault is translated), not about the process (signals,
    the streams' file descriptors, the interpreter's exit), which `run` tests.

    The command's signal handling is undone after it: `voicechat.signals.Signals` blocks
    SIGINT, SIGTERM and SIGHUP in the main thread for good (the process is about to exit),
    which would leave this test process deaf to them."""
    import signal

    from typer.testing import CliRunner

    from voicechat.cli import app
    from voicechat.signals import Signals

    watched = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, Signals.FORWARD_SIGNAL)
    handlers = {signum: signal.getsignal(signum) for signum in watched}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return subprocess.CompletedProcess(
        [*COMMAND, *args], result.exit_code, result.stdout, result.stderr
    )


def start(
    *args: str, env: dict[str, str] | None = None, text: bool = True, **kw: Any
) -> subprocess.Popen:
    """Start voicechat; stdin is closed and stdout and stderr are pipes unless ``kw`` says
    otherwise."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(command(*args), text=text, env=env, **kw)


def spawn(*args: str, env: dict[str, str] | None = None, **kw: Any):  # type: ignore[no-untyped-def]
    """Start voicechat on a pseudo-terminal (``pexpect.spawn``: text, 60 s to expect)."""
    import pexpect

    kw.setdefault("encoding", "utf-8")
    kw.setdefault("timeout", 60)
    return pexpect.spawn(COMMAND[0], [*COMMAND[1:], *args], env=env, **kw)


class Runner:
    """`run`, `start` and `spawn` in `clean_env` for one test; keyword arguments in upper case
    are environment variables (``OLLAMA_HOST=url``), the others go to the runner."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def env(self, **variables: str) -> dict[str, str]:
        return clean_env(self.tmp_path, **variables)

    def _split(self, kw: dict[str, Any]) -> dict[str, Any]:
        variables = {k: kw.pop(k) for k in [k for k in kw if k.isupper()]}
        kw["env"] = self.env(**{**kw.pop("env", {}), **variables})
        return kw

    def run(self, *args: str, **kw: Any) -> subprocess.CompletedProcess:
        return run(*args, **self._split(kw))

    def start(self, *args: str, **kw: Any) -> subprocess.Popen:
        return start(*args, **self._split(kw))

    def spawn(self, *args: str, **kw: Any):  # type: ignore[no-untyped-def]
        return spawn(*args, **self._split(kw))


@pytest.fixture
def voicechat(tmp_path: Path) -> Runner:
    """The CLI runner in a clean environment of the test's own (see the module docstring)."""
    return Runner(tmp_path)


@pytest.fixture(scope="module")
def python_start_s() -> float:
    """How long Python takes now to start and reach our entry point (``-m`` imports runpy and
    the package first), the longest of three: before that, no code of ours can guard against
    Ctrl+C, and a loaded machine makes it several times longer."""
    import time

    times = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import runpy, voicechat"], check=True)
        times.append(time.monotonic() - started)
    return max(times)
