"""voicechat: speak an LLM's reply while it is still being generated."""

import sys as _sys

__version__ = "0.1.0"

_CTRL_C: list[bool] = []
"""Non-empty once Ctrl+C came between this import and the entry point's guard."""

if _sys.argv[:1] == ["-m"] or _sys.argv[0].rsplit("/", 1)[-1] == "voicechat":
    # Started as the command (`python -m voicechat`, or the `voicechat` script): from here
    # until the entry point's guard (`voicechat.__main__.guard`), Python would be finding,
    # compiling and starting the entry point, where nothing of ours can catch Ctrl+C, and it
    # would print a KeyboardInterrupt traceback. Remembered instead; the guard acts on it.
    # (SIGINT ignored, as for a background job, stays ignored; another program that merely
    # imports voicechat keeps its own handler.)
    import _signal

    if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
        try:  # noqa: SIM105 (contextlib would be one more import in the window)
            _signal.signal(_signal.SIGINT, lambda signum, frame: _CTRL_C.append(True))
        except ValueError:  # imported outside the main thread: nothing to guard
            pass
