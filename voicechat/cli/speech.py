"""The commands that only listen: ``transcribe`` (WAV files) and ``listen`` (the microphone),
each printing what was said."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from voicechat import profile as profiles_mod
from voicechat.cli.base import (
    InputDeviceOpt,
    LanguageOpt,
    ProfileOpt,
    app,
    boundary,
    load_recognizer,
    stt_settings,
)
from voicechat.errors import ConfigError
from voicechat.signals import Signals
from voicechat.terminal import Terminal, isatty

if TYPE_CHECKING:
    pass


@app.command()
def transcribe(
    files: list[Path] = typer.Argument(
        ..., help="WAV files (any rate, mono or stereo).", metavar="FILE.wav...", show_default=False
    ),
    profile: str | None = ProfileOpt,
    language: str | None = LanguageOpt,
) -> None:
    """Print what is said in WAV files: one line per file (prefixed with its name if several)."""
    term = Terminal()
    with boundary(term), ExitStack() as stack:
        stack.enter_context(Signals())  # before any thread starts (numpy's, as it is imported)
        from voicechat.audio.wav import WavFile
        from voicechat.errors import NothingHeard
        from voicechat.stt.listener import transcribe_file

        settings = stt_settings(profiles_mod.load(profile).profile, None, language)
        for path in files:  # every header is checked before the model loads
            with WavFile(path):
                pass
        recognizer = load_recognizer(settings, term)
        silent = 0
        for path in files:
            with WavFile(path) as wav:
                if wav.info.truncated:
                    term.warn(f"{path} ends before the audio its header announces: reading "
                              f"the {wav.info.seconds:.1f} s it holds")  # fmt: skip
                show = progress_shower(term, path.name, wav.info.seconds)
                try:
                    transcript = transcribe_file(recognizer, wav.pieces(), settings, show)
                finally:
                    show(None)
            if transcript is None:
                silent += 1
                why = "no audio in it" if wav.info.frames == 0 else "silence or noise"
                term.warn(f"{path}: nothing was heard ({why})")
                continue
            term.print(f"{path}: {transcript.text}" if len(files) > 1 else transcript.text)
        if silent:
            raise NothingHeard(f"nothing was heard in {silent} of {len(files)} files")


def progress_shower(term: Terminal, name: str, total_s: float) -> Callable[[float | None], None]:
    """Draws how far `transcribe` has read a file on stderr, when it is a terminal (None
    erases the line); does nothing otherwise."""
    if not isatty(term.err):
        return lambda done: None

    def show(done: float | None) -> None:
        line = "" if done is None else transcribe_progress(name, done, total_s)
        term.err.write("\r\x1b[K" + line)
        term.err.flush()

    return show


def transcribe_progress(name: str, done_s: float, total_s: float) -> str:
    """The progress line of `transcribe`.

    >>> transcribe_progress("talk.wav", 754.0, 7200.0)
    'transcribing talk.wav: 12:34 of 2:00:00 (10%)'
    """

    def clock(seconds: float) -> str:
        hours, rest = divmod(int(seconds), 3600)
        minutes = f"{rest // 60:02d}" if hours else str(rest // 60)
        return f"{hours}:" * bool(hours) + f"{minutes}:{rest % 60:02d}"

    share = done_s / total_s if total_s else 1.0
    return f"transcribing {name}: {clock(done_s)} of {clock(total_s)} ({share:.0%})"


@app.command()
def listen(
    once: bool = typer.Option(False, "--once", help="Stop after one utterance."),
    timeout: float | None = typer.Option(
        None,
        "--timeout",
        help="Give up (exit 12) when nobody speaks for this long (default with --once: 30 s).",
        metavar="S",
        show_default=False,
    ),
    profile: str | None = ProfileOpt,
    input_device: str | None = InputDeviceOpt,
    language: str | None = LanguageOpt,
) -> None:
    """Print what is said into the microphone, one utterance per line, as each one ends."""
    term = Terminal()
    with boundary(term), ExitStack() as stack:
        if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"--timeout {timeout:g}: give the seconds to wait, a number over 0")
        # before any thread starts (numpy's start as it is imported): SIGTERM as in `ask`
        stack.enter_context(Signals())
        from voicechat.stt.listener import Dropped, Recognized, open_listener

        settings = stt_settings(profiles_mod.load(profile).profile, input_device, language)
        listener = open_listener(settings, load_recognizer(settings, term), stack)
        if timeout is None and once:
            timeout = 30.0
        term.info("listening (Ctrl+C to stop)")
        for event in listener.events(timeout):
            if isinstance(event, Dropped):
                term.info(f"ignored: {event.reason}")
            elif isinstance(event, Recognized):
                if event.cut:
                    term.warn(f"over {settings.max_utterance:g} s of speech: cut there")
                term.print(event.transcript.text)
                if once:
                    break
