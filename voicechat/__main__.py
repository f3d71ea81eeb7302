"""``python -m voicechat`` and the ``voicechat`` command.

The entry point imports the CLI inside a guard: Ctrl+C in the first ~70 ms (the imports)
exits 130 with one line, like Ctrl+C at any later moment, instead of a traceback. Only ``os``
and ``sys`` (loaded by the interpreter already) are imported outside it. Before this module
runs, the package's ``__init__`` remembers a Ctrl+C (Python is still finding and compiling
this file then); earlier still, during Python's own start-up, nothing of ours runs yet.
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
    remembered and acted on (`voicechat.signals.on_sigint`)."""
    if not isinstance(getattr(unraisable, "exc_value", None), KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)  # type: ignore[arg-type]


def _early_ctrl_c() -> bool:
    """Ctrl+C came while Python was starting this module (`voicechat/__init__.py` remembered
    it): the command exits 130 before it begins."""
    package = sys.modules.get("voicechat")
    return bool(getattr(package, "_CTRL_C", None))


def guard() -> None:
    """From the first instruction on, Ctrl+C is remembered and never printed as a traceback."""
    _signal.signal(_signal.SIGINT, _remember)
    sys.unraisablehook = _quiet


def main() -> None:
    guard()
    if _early_ctrl_c():
        interrupted(None)
    signals = None
    try:
        from voicechat import signals

        signals.install_early(interrupted_already=bool(_CTRL_C))  # see `on_sigint`
        from voicechat.cli import main as run

        run()
    except KeyboardInterrupt:
        interrupted(signals)
    except Exception:
        # Python turns a KeyboardInterrupt raised in some places of an import into another
        # error (``RuntimeError: Error calling __set_name__``): after a Ctrl+C, it is that
        if _CTRL_C or (signals is not None and signals.EARLY_INTERRUPT.is_set()):
            interrupted(signals)
        raise


def interrupted(signals: object) -> None:
    """Say so and exit 130 at once (`voicechat.signals.exit_now` says why not `sys.exit`)."""
    try:
        sys.stderr.write("voicechat: interrupted\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
    if signals is not None:
        signals.exit_now(130)  # type: ignore[attr-defined]
    os._exit(130)  # Ctrl+C before the signals module was loaded: nothing else to flush


if __name__ == "__main__":
    main()
