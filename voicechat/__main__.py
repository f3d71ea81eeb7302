"""``python -m voicechat`` and the ``voicechat`` command.

The entry point imports the CLI inside a guard: Ctrl+C in the first ~70 ms (the imports)
exits 130 with one line, like Ctrl+C at any later moment, instead of a traceback. Only ``os``
and ``sys`` (loaded by the interpreter already) are imported outside it.
"""

import _signal  # the interpreter's own, loaded already (``signal`` would import enum first)
import os
import sys

_CTRL_C: list[bool] = []
"""Non-empty once Ctrl+C came while the session module was importing."""


def _remember(signum: int, frame: object) -> None:
    _CTRL_C.append(True)
    raise KeyboardInterrupt


def _quiet(unraisable: object) -> None:
    """Python's hook for exceptions it cannot raise (in a finalizer, an import's callback),
    without the "Exception ignored ... KeyboardInterrupt" traceback: that interrupt is
    remembered and acted on (`voicechat.session.on_sigint`)."""
    if not isinstance(getattr(unraisable, "exc_value", None), KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)  # type: ignore[arg-type]


def guard() -> None:
    """From the first instruction on, Ctrl+C is remembered and never printed as a traceback."""
    _signal.signal(_signal.SIGINT, _remember)
    sys.unraisablehook = _quiet


def main() -> None:
    guard()
    early = None
    try:
        from voicechat.session import EARLY_INTERRUPT as early
        from voicechat.session import install_early

        install_early(interrupted_already=bool(_CTRL_C))  # see `on_sigint`
        from voicechat.cli import main as run

        run()
    except KeyboardInterrupt:
        interrupted()
    except Exception:
        # Python turns a KeyboardInterrupt raised in some places of an import into another
        # error (``RuntimeError: Error calling __set_name__``): after a Ctrl+C, it is that
        if _CTRL_C or (early is not None and early.is_set()):
            interrupted()
        raise


def interrupted() -> None:
    try:
        sys.stderr.write("voicechat: interrupted\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
    exit_now(130)


def exit_now(code: int) -> None:
    """Exit with ``code`` at once (nothing runs yet that needs a clean shutdown).

    Not `sys.exit`: CPython marks a KeyboardInterrupt raised inside ``exec`` (dataclasses
    build their methods with it while modules import) as unhandled even when it was caught,
    and then ends the process by SIGINT instead of with our exit code.
    """
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (contextlib is not imported this early)
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
