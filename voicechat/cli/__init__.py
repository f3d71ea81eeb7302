"""The command line: parse, load the profile, run, and map errors to exit codes.

This package and `voicechat.terminal` are the only ones that talk to the user: `base` (the
app, its options, the error boundary, opening what a command needs), `converse` (ask, chat,
say), `manage` (profiles, voices, doctor, devices), `speech` (transcribe, listen); this module
is the entry point. Every error
reaches the user as one line on stderr and a documented exit code (see `voicechat.errors`);
Ctrl+C exits 130. Heavy modules (requests, the openai SDK, rich, audio) are imported inside
the commands that need them: ``voicechat --help`` must stay fast on the Jetson's CPU.
"""

from __future__ import annotations

import os
import sys

import typer

from voicechat.cli import converse, manage, speech  # noqa: F401  (each registers its commands)
from voicechat.cli.base import app
from voicechat.errors import EXIT_INTERRUPTED
from voicechat.signals import INTERRUPT_TOLD, exit_now
from voicechat.terminal import Terminal


def main() -> None:
    """Console entry point: usage errors become one line and exit code 2."""
    term = Terminal()
    try:
        code = app(standalone_mode=False, prog_name="voicechat")
    except _click_error("UsageError") as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx else ""
        term.error(exc.format_message() + hint)  # type: ignore[attr-defined]
        code = 2
    except _click_error("ClickException") as exc:
        term.error(exc.format_message())  # type: ignore[attr-defined]
        code = exc.exit_code  # type: ignore[attr-defined]
    except (typer.Abort, KeyboardInterrupt):
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED and not INTERRUPT_TOLD.is_set():
        term.interrupted()  # a Ctrl+C before the command's boundary (typer returns 130 silently)
    settle_std_streams()
    if code == EXIT_INTERRUPTED:
        # The command's threads and files are closed by now; see `exit_now` for why not
        # sys.exit (a caught Ctrl+C during a lazy import would end the process by SIGINT).
        exit_now(code)
    sys.exit(code if isinstance(code, int) else 0)


def _click_error(name: str) -> type[Exception]:
    """click's exception classes, wherever this typer version keeps click (vendored or not)."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


def settle_std_streams() -> None:
    """Make the interpreter's final flush harmless, so the exit code stays ours.

    A stdout whose reader left, or a full or closed stderr, would fail that flush again
    (Python then exits 120 with "Exception ignored"): such a stream is pointed at /dev/null.
    """
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError):
                pass
