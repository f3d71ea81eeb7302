"""The command line: parse, load the profile, run, and map errors to exit codes.

This module and `voicechat.terminal` are the only ones that talk to the user. Every error
reaches the user as one line on stderr and a documented exit code (see `voicechat.errors`);
Ctrl+C exits 130. Heavy modules (requests, the openai SDK, rich, audio) are imported inside
the commands that need them: ``voicechat --help`` must stay fast on the Jetson's CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from voicechat import __version__
from voicechat import profile as profiles_mod
from voicechat.errors import EXIT_INTERRUPTED, ConfigError, VoicechatError
from voicechat.settings import Profile
from voicechat.terminal import OutputClosed, Terminal

if TYPE_CHECKING:
    from voicechat.backends import Backend
    from voicechat.chat import Conversation, Turn
    from voicechat.speaker import Speaker

app = typer.Typer(
    name="voicechat",
    help="Ask a local LLM and hear the answer while it is still being written.",
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    no_args_is_help=False,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
profiles_app = typer.Typer(
    help="List the profiles, or show one.",
    rich_markup_mode=None,
    invoke_without_command=True,
)
app.add_typer(profiles_app, name="profiles")

LANG_ALIASES = {"zh": ("zh", "cmn", "yue", "sit/cmn", "sit/yue"), "cn": ("zh", "cmn")}
"""espeak-ng names Chinese voices by dialect (cmn, yue), not ``zh``."""
PROFILE_HELP = "Profile name or YAML path (default: $VOICECHAT_PROFILE, else ollama-qwen2.5-7b)."
ProfileOpt = typer.Option(None, "--profile", "-p", help=PROFILE_HELP, metavar="NAME|PATH")
MuteOpt = typer.Option(False, "--mute", help="Text only: do not speak.")
ModelOpt = typer.Option(
    None, "--model", "-m", help="Model name (overrides the profile).", metavar="MODEL"
)
SystemOpt = typer.Option(
    None, "--system", "-s", help="System prompt (overrides the profile).", metavar="TEXT"
)
SaveAudioOpt = typer.Option(
    None, "--save-audio", help="Also write what is spoken to this WAV file.", metavar="FILE.wav"
)


@contextmanager
def boundary(term: Terminal) -> Iterator[None]:
    """Where errors become one line on stderr and an exit code."""
    try:
        yield
    except VoicechatError as exc:
        term.error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        term.info("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except OutputClosed:
        _silence_stdout()
        raise typer.Exit(0) from None


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


# --- ask -----------------------------------------------------------------------------------


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
) -> None:
    """Ask one question; the reply streams to stdout (and is spoken unless --mute)."""
    term = Terminal()
    with boundary(term), ExitStack() as stack:
        text = read_question(question)
        loaded = profiles_mod.load(profile)
        prof = with_options(
            loaded.profile,
            model=model,
            system=system,
            temperature=temperature,
            max_tokens=max_tokens,
        )
        conversation = open_conversation(prof, stack)
        voice = open_voice(prof, mute=mute, save_audio=save_audio, term=term, stack=stack)
        term.prefetch()
        turn = conversation.ask(text, term.reply_view(prof.backend.model), voice)
        report_end(term, turn, stats, prof.generation.max_tokens)


def read_question(words: list[str] | None) -> str:
    """Stdin (when piped), a blank line, then the argument; neither is a usage error."""
    argument = " ".join(words or []).strip()
    piped = ""
    if not _isatty(sys.stdin):
        data = sys.stdin.buffer.read() if sys.stdin is not None else b""
        piped = data.decode("utf-8", errors="replace").strip()
    if piped and argument:
        return f"{piped}\n\n{argument}"
    if piped or argument:
        return piped or argument
    raise ConfigError(
        'no question: give one as an argument (voicechat ask "...") or pipe text on stdin'
    )


def with_options(prof: Profile, **options: object) -> Profile:
    """The profile with the command line's overrides applied (``None`` = not given)."""
    temperature = options.get("temperature")
    if isinstance(temperature, float) and not 0.0 <= temperature <= 2.0:
        raise ConfigError(f"--temperature {temperature:g} is out of range: use 0 to 2")
    max_tokens = options.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens < 1:
        raise ConfigError(f"--max-tokens {max_tokens} must be at least 1")
    backend, generation = prof.backend, prof.generation
    if options.get("model"):
        backend = dataclasses.replace(backend, model=str(options["model"]))
    sampling = {k: options[k] for k in ("temperature", "max_tokens") if options.get(k) is not None}
    if sampling:
        generation = dataclasses.replace(generation, **sampling)  # type: ignore[arg-type]
    system = options["system"] if options.get("system") is not None else prof.system
    return dataclasses.replace(
        prof,
        backend=backend,
        generation=generation,
        system=system,  # type: ignore[arg-type]
    )


def open_backend(prof: Profile, stack: ExitStack) -> Backend:
    """The profile's backend, closed with the stack (the API key checked first)."""
    from voicechat.backends import create_backend

    backend = create_backend(prof.backend, profiles_mod.api_key(prof.backend))
    stack.callback(backend.close)
    return backend


def open_conversation(prof: Profile, stack: ExitStack) -> Conversation:
    """A new conversation with the profile's backend."""
    from voicechat.chat import Conversation

    return Conversation(open_backend(prof, stack), prof.generation, prof.chunking, prof.system)


def open_voice(
    prof: Profile, *, mute: bool, save_audio: Path | None, term: Terminal, stack: ExitStack
) -> Speaker | None:
    """The speaker for this run, or ``None`` for text only."""
    if save_audio is not None and save_audio.suffix.lower() != ".wav":
        raise ConfigError(f"--save-audio {save_audio}: the file name must end in .wav")
    if prof.tts.engine == "none" and save_audio is None:
        return None
    if prof.tts.engine == "none":
        raise ConfigError(
            "--save-audio needs a speech engine, but the profile's tts.engine is none: "
            "set tts.engine to pyttsx3 or piper"
        )
    if mute and save_audio is None:
        return None
    from voicechat.speaker import Speaker

    speaker = Speaker(prof.tts, save_audio=save_audio, warn=term.warn, play=not mute)
    stack.callback(speaker.close)
    return speaker


def report_end(term: Terminal, turn: Turn, stats: bool, max_tokens: int | None) -> None:
    """Warnings about how the reply ended, and ``--stats``."""
    from voicechat.chat import ending_warning

    warning = ending_warning(turn.outcome, max_tokens, "--max-tokens (or generation.max_tokens)")
    if warning:
        term.warn(warning)
    if stats:
        term.stats(turn.outcome, turn.first_audio_s)


# --- profiles ------------------------------------------------------------------------------


@profiles_app.callback()
def profiles(ctx: typer.Context) -> None:
    """List profiles: name, backend, model, and where each came from."""
    if ctx.invoked_subcommand is not None:
        return
    term = Terminal()
    with boundary(term):
        rows = []
        default = os.environ.get(profiles_mod.PROFILE_ENV) or profiles_mod.DEFAULT_PROFILE
        for source in profiles_mod.discover():
            try:
                prof = profiles_mod.parse(source.path)
                backend, model = prof.backend.kind, prof.backend.model
            except ConfigError:
                backend, model = "invalid", "(run: voicechat profiles show " + source.name + ")"
            origin = f"{source.origin} ({source.path})"
            if source.shadows_shipped:
                origin += ", replaces the shipped one"
            mark = "*" if source.name == default else ""
            rows.append((source.name + mark, backend, model, origin))
        term.table(("NAME", "BACKEND", "MODEL", "FROM"), rows)
        term.info(f"* = used by default; select with --profile NAME or ${profiles_mod.PROFILE_ENV}")


@profiles_app.command("show")
def profiles_show(
    name: str | None = typer.Argument(None, help="Profile name or path (default: the default)."),
) -> None:
    """Print the resolved profile (environment applied, secrets masked)."""
    term = Terminal()
    with boundary(term):
        loaded = profiles_mod.load(name)
        for line in describe_profile(loaded):
            term.print(line)


def describe_profile(loaded: profiles_mod.LoadedProfile) -> list[str]:
    """The profile as YAML, with where it came from; API keys shown only as set/unset."""
    import yaml

    from voicechat.backends import redact_url

    data = dataclasses.asdict(loaded.profile)
    data["backend"]["base_url"] = redact_url(data["backend"]["base_url"])
    lines = [f"# {loaded.source.name}: {loaded.source.origin} profile at {loaded.source.path}"]
    if loaded.overrides:
        lines.append(f"# overridden by: {', '.join('$' + v for v in loaded.overrides)}")
    var = profiles_mod.api_key_var(loaded.profile.backend)
    if var:
        state = "set (value hidden)" if os.environ.get(var) else "not set"
        lines.append(f"# API key: ${var} is {state}")
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=96)
    return lines + text.rstrip("\n").splitlines()


# --- chat (REPL and pipes) -----------------------------------------------------------------


@app.command()
def chat(
    profile: str | None = ProfileOpt,
    model: str | None = ModelOpt,
    system: str | None = SystemOpt,
    mute: bool = MuteOpt,
    stats: bool = typer.Option(False, "--stats", help="Print timing after each reply."),
) -> None:
    """A conversation: interactive on a terminal; with piped stdin, one turn per line."""
    term = Terminal()
    with boundary(term), ExitStack() as stack:
        loaded = profiles_mod.load(profile)
        prof = with_options(loaded.profile, model=model, system=system)
        conversation = open_conversation(prof, stack)
        voice = open_voice(prof, mute=mute, save_audio=None, term=term, stack=stack)
        if _isatty(sys.stdin):
            from voicechat.repl import Repl

            repl = Repl(
                term, loaded, prof, conversation, voice,
                new_backend=lambda p: open_backend(p, stack),
                new_voice=lambda p: open_voice(
                    p, mute=False, save_audio=None, term=term, stack=stack
                ),
                stats=stats,
                muted=mute,
            )  # fmt: skip
            code = repl.run()
        else:
            code = chat_lines(conversation, voice, term, stats=stats, model=prof.backend.model)
    raise typer.Exit(code)


def chat_lines(
    conversation: Conversation, voice: Speaker | None, term: Terminal, *, stats: bool, model: str
) -> int:
    """Piped chat: each non-empty stdin line is a user turn of one conversation.

    A failed turn is reported and the next line still runs; the exit code is the first
    failure's.
    """
    status = 0
    for raw in sys.stdin:
        question = raw.strip()
        if not question:
            continue
        try:
            turn = conversation.ask(question, term.reply_view(model), voice)
        except VoicechatError as exc:
            term.error(str(exc))
            status = status or exc.exit_code
            continue
        report_end(term, turn, stats, conversation.generation.max_tokens)
    return status


# --- say, voices ---------------------------------------------------------------------------


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
        loaded = profiles_mod.load(profile)
        chunking = loaded.profile.chunking
        if mode is not None:
            if mode not in ("clause", "sentence"):
                raise ConfigError(f"--mode {mode!r}: use clause or sentence")
            chunking = dataclasses.replace(chunking, mode=mode)  # type: ignore[arg-type]
        if text:
            deltas: Iterator[str] = iter([" ".join(text)])
        elif not _isatty(sys.stdin):
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
        voice.start()
        for utterance in utterances(deltas, chunking, hungry=lambda: voice.hungry):
            voice.say(utterance)
        voice.finish()


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


@app.command()
def voices(
    profile: str | None = ProfileOpt,
    lang: str | None = typer.Option(
        None, "--lang", help="Only voices for this language code (e.g. zh, en).", metavar="CODE"
    ),
) -> None:
    """List the speech engine's voices (id, name, languages) to pick one for the profile."""
    term = Terminal()
    with boundary(term):
        from voicechat.tts import list_voices

        tts = profiles_mod.load(profile).profile.tts
        found = list_voices(tts)
        if lang:
            wanted = LANG_ALIASES.get(lang.lower(), (lang.lower(),))
            found = [
                v
                for v in found
                if any(code.lower().startswith(wanted) for code in (*v.languages, v.id))
            ]
        rows = [(v.id, v.name, ", ".join(v.languages)) for v in found]
        term.table(("ID", "NAME", "LANGUAGES"), rows)
        term.info(f"{len(rows)} voices of engine {tts.engine}; set tts.voice / tts.voice_zh")


# --- doctor --------------------------------------------------------------------------------


@app.command()
def doctor(
    profile: str | None = ProfileOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON (for scripts)."),
    audio: bool = typer.Option(
        True, "--audio/--no-audio", help="Check the audio output device (default: yes)."
    ),
) -> None:
    """Check every link from question to sound (server, model, voice, audio) and say what to fix.

    Exit code 0 when everything the profile needs works, 1 when something is broken,
    2 when the profile itself does not load.
    """
    from voicechat import doctor as doctor_mod

    term = Terminal()
    rows: list[doctor_mod.Check] = []

    def show(row: doctor_mod.Check) -> None:
        rows.append(row)
        if not as_json:
            term.check(row.name, row.ok, row.detail, row.fix)

    with boundary(term):
        try:
            loaded = profiles_mod.load(profile)
        except ConfigError as exc:
            # The rest depends on the profile: report Python and the error, nothing else.
            show(doctor_mod.python_check())
            show(doctor_mod.Check("profile", False, str(exc)))  # the message says the fix
            code = exc.exit_code
        else:
            # The key's value, without the error that `profile.api_key` raises when it is
            # missing: the doctor reports that as a row instead.
            var = profiles_mod.api_key_var(loaded.profile.backend)
            key = os.environ.get(var) if var else None
            for row in doctor_mod.run_checks(loaded, key or None, check_audio=audio):
                show(row)
            code = 1 if any(row.ok is False for row in rows) else 0
        if as_json:
            term.print(json.dumps([dataclasses.asdict(r) for r in rows], ensure_ascii=False))
        elif code:
            broken = sum(row.ok is False for row in rows)
            term.info(f"{broken} check{'s' if broken > 1 else ''} failed: see the fixes above")
        raise typer.Exit(code)


# --- entry point ---------------------------------------------------------------------------


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
        term.info("interrupted")
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else 0)


def _click_error(name: str) -> type[Exception]:
    """click's exception classes, wherever this typer version keeps click (vendored or not)."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


def _silence_stdout() -> None:
    """After the reader left, make the interpreter's final flush of stdout harmless."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
