"""The commands that converse: ``ask`` (one question), ``chat`` (the REPL, hands-free or piped
lines) and ``say`` (speak text); bare ``voicechat`` is ``chat``."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from voicechat import __version__
from voicechat import profile as profiles_mod
from voicechat.cli.base import (
    InputDeviceOpt,
    LanguageOpt,
    ModelOpt,
    MuteOpt,
    ProfileOpt,
    SaveAudioOpt,
    SystemOpt,
    app,
    boundary,
    clean_arg,
    listen_once,
    open_backend,
    open_session,
    open_voice,
    open_voice_input,
    settle_heap,
    stt_settings,
    with_options,
)
from voicechat.errors import ConfigError, SpeechError
from voicechat.signals import Signals
from voicechat.terminal import Terminal, isatty

if TYPE_CHECKING:
    from voicechat.session import Question


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    """Ask a local LLM and hear the answer while it is still being written.

    Run `voicechat` alone for a spoken conversation, or `voicechat ask "question"`.
    """
    if version:
        Terminal().print(f"voicechat {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        ctx.invoke(chat)


@app.command()
def ask(
    question: list[str] | None = typer.Argument(
        None,
        help="The question. Text piped on stdin comes first, then a blank line, then it.",
        metavar="QUESTION...",
        show_default=False,
    ),
    profile: str | None = ProfileOpt,
    model: str | None = ModelOpt,
    system: str | None = SystemOpt,
    temperature: float | None = typer.Option(
        None, "--temperature", "-t", help="Sampling temperature (0-2).", metavar="T"
    ),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", help="Upper bound on reply tokens.", metavar="N"
    ),
    stats: bool = typer.Option(
        False, "--stats", help="Print time to first token/audio and tokens/s on stderr."
    ),
    mute: bool = MuteOpt,
    save_audio: Path | None = SaveAudioOpt,
    listen: bool = typer.Option(
        False, "--listen", help="Ask by voice: one utterance from the microphone."
    ),
    input_device: str | None = InputDeviceOpt,
    language: str | None = LanguageOpt,
) -> None:
    """Ask one question; the reply streams to stdout (and is spoken unless --mute)."""
    term = Terminal()
    with boundary(term), ExitStack() as stack:
        text = "" if listen else read_question(question)
        loaded = profiles_mod.load(profile)
        prof = with_options(
            loaded.profile,
            model=model,
            system=system,
            temperature=temperature,
            max_tokens=max_tokens,
        )
        signals = stack.enter_context(Signals())  # before any thread starts
        session = open_session(prof, term, stack, mute=mute, save_audio=save_audio, stats=stats)
        signals.session = session
        ahead = None
        if listen:
            from voicechat.questions.talk import Ahead

            stt = stt_settings(prof, input_device, language)
            ahead = stack.enter_context(closing(Ahead(session)))
            text = listen_once(stt, term, stack, ahead.guess if stt.read_ahead else None)
        term.prefetch()
        from voicechat.session import Question

        settle_heap()
        code = session.run([Question(text, ahead.take() if ahead is not None else None)])
    raise typer.Exit(code)


def read_question(words: list[str] | None) -> str:
    """Stdin (when piped), a blank line, then the argument; neither is a usage error."""
    argument = clean_arg(" ".join(words or [])).strip()
    piped = ""
    if not isatty(sys.stdin):
        data = sys.stdin.buffer.read() if sys.stdin is not None else b""
        piped = data.decode("utf-8", errors="replace").strip()
    if piped and argument:
        return f"{piped}\n\n{argument}"
    if piped or argument:
        return piped or argument
    raise ConfigError(
        'no question: give one as an argument (voicechat ask "...") or pipe text on stdin'
    )


@app.command()
def chat(
    profile: str | None = ProfileOpt,
    model: str | None = ModelOpt,
    system: str | None = SystemOpt,
    mute: bool = MuteOpt,
    stats: bool = typer.Option(False, "--stats", help="Print timing after each reply."),
    listen: bool = typer.Option(
        False, "--listen", help="Hands-free: questions from the microphone (also headless)."
    ),
    input_device: str | None = InputDeviceOpt,
    language: str | None = LanguageOpt,
) -> None:
    """A conversation: interactive on a terminal; with piped stdin, one turn per line."""
    from voicechat.session import piped

    term = Terminal()
    with boundary(term), ExitStack() as stack:
        loaded = profiles_mod.load(profile)
        prof = with_options(loaded.profile, model=model, system=system)
        signals = stack.enter_context(Signals())  # before any thread starts
        stt = stt_settings(prof, input_device, language)
        voice_input = open_voice_input(stt, stack) if listen else None
        session = open_session(prof, term, stack, mute=mute, save_audio=None, stats=stats)
        signals.session = session
        questions: Iterable[Question]
        if voice_input is not None:
            from voicechat.questions.talk import listening_line, spoken

            term.info(listening_line(stt, "Ctrl+C to stop"))
            questions = spoken(session, voice_input, term)
        elif isatty(sys.stdin):
            from voicechat.questions.repl import Repl

            session.muted = mute
            session.interactive = True
            repl = Repl(
                term, loaded, prof, session,
                new_backend=lambda p: open_backend(p, stack),
                new_voice=lambda p: open_voice(
                    p, mute=False, save_audio=None, term=term, stack=stack
                ),
            )  # fmt: skip
            repl.voice_input = open_voice_input(stt, stack, quiet=True, load_now=False)
            questions = repl.questions()
        else:
            questions = piped(stdin_lines())
        # a person at a prompt or a microphone goes on after Ctrl+C stops a reply
        settle_heap()
        code = session.run(questions, goes_on=voice_input is not None or session.interactive)
    raise typer.Exit(code)


def stdin_lines() -> Iterator[str]:
    """Piped stdin line by line; Ctrl+C or SIGTERM while waiting for a line ends the chat
    (`Signals` breaks the read)."""
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        yield line


@app.command()
def say(
    text: list[str] | None = typer.Argument(
        None,
        help="Text to speak (default: stdin, spoken as it arrives).",
        metavar="TEXT...",
        show_default=False,
    ),
    profile: str | None = ProfileOpt,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the chunks that would be spoken, one per line."
    ),
    mode: str | None = typer.Option(
        None,
        "--mode",
        help="Chunking: clause (speak early) or sentence.",
        metavar="clause|sentence",
    ),
    save_audio: Path | None = SaveAudioOpt,
    mute: bool = typer.Option(False, "--mute", help="Do not play (useful with --save-audio)."),
) -> None:
    """Speak text: an argument, or stdin read incrementally (pipe a model's output in)."""
    term = Terminal()
    with boundary(term), ExitStack() as stack:
        # SIGTERM/SIGHUP end it as Ctrl+C does: the audio saved so far is kept, not a .part
        stack.enter_context(Signals())
        loaded = profiles_mod.load(profile)
        chunking = loaded.profile.chunking
        if mode is not None:
            if mode not in ("clause", "sentence"):
                raise ConfigError(f"--mode {mode!r}: use clause or sentence")
            chunking = dataclasses.replace(chunking, mode=mode)  # type: ignore[arg-type]
        if text:
            deltas: Iterator[str] = iter([" ".join(text)])
        elif not isatty(sys.stdin):
            deltas = stdin_deltas()
        else:
            raise ConfigError('nothing to say: give text (voicechat say "...") or pipe it in')
        from voicechat.speakable import utterances

        if dry_run:
            for utterance in utterances(deltas, chunking):
                term.print(utterance.text)
            return
        voice = open_voice(loaded.profile, mute=mute, save_audio=save_audio, term=term, stack=stack)
        if voice is None:
            raise ConfigError(
                "nothing would be heard: the profile's tts.engine is none (or --mute without "
                "--save-audio); use --dry-run to see the chunks"
            )
        # speaking is this command's only job: a fault is its error (exit 13), not a warning
        faults: list[str] = []
        voice.report_faults_to(faults.append)
        voice.start()
        for utterance in utterances(deltas, chunking, hungry=lambda: voice.hungry):
            voice.say(utterance)
            if not voice.active:
                break  # nothing more can be played or saved
        voice.finish()
        voice.close()  # the WAV file is renamed into place here: its errors count too
        if faults:  # the fault says what still happened ("only saving to ...")
            raise SpeechError(f"could not say it: {faults[0]}")


def stdin_deltas() -> Iterator[str]:
    """Stdin as text pieces as soon as they arrive (not line by line, not at EOF)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    fd = sys.stdin.fileno()
    while True:
        data = os.read(fd, 4096)
        if not data:
            rest = decoder.decode(b"", final=True)
            if rest:
                yield rest
            return
        text = decoder.decode(data)
        if text:
            yield text
