"""The command line: parse, load the profile, run, and map errors to exit codes.

This module and `voicechat.terminal` are the only ones that talk to the user. Every error
reaches the user as one line on stderr and a documented exit code (see `voicechat.errors`);
Ctrl+C exits 130. Heavy modules (requests, the openai SDK, rich, audio) are imported inside
the commands that need them: ``voicechat --help`` must stay fast on the Jetson's CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from voicechat import __version__
from voicechat import profile as profiles_mod
from voicechat.errors import EXIT_INTERRUPTED, ConfigError, SpeechError, VoicechatError
from voicechat.settings import Profile
from voicechat.signals import INTERRUPT_TOLD, Ended, Signals, exit_now
from voicechat.terminal import OutputClosed, Terminal, isatty

if TYPE_CHECKING:
    from voicechat.backends import Backend
    from voicechat.chat import Conversation
    from voicechat.questions.voice import VoiceInput
    from voicechat.session import Question, Session
    from voicechat.settings import STTSettings
    from voicechat.speaker import Speaker
    from voicechat.stt import Recognizer

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
InputDeviceOpt = typer.Option(
    None, "--input-device", help="Microphone name or index (see `voicechat devices`).",
    metavar="DEVICE",
)  # fmt: skip
LanguageOpt = typer.Option(
    None, "--language", "-l", help="Spoken language: auto, zh, en, ... (default: stt.language).",
    metavar="CODE",
)  # fmt: skip


@contextmanager
def boundary(term: Terminal) -> Iterator[None]:
    """Where errors become one line on stderr and an exit code."""
    try:
        yield
    except VoicechatError as exc:
        term.error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        term.interrupted()
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Ended as exc:
        term.info(f"ended by {exc}")
        raise typer.Exit(exc.exit_code) from None
    except OutputClosed:
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

        code = session.run([Question(text, ahead.take() if ahead is not None else None)])
    raise typer.Exit(code)


def clean_arg(text: str) -> str:
    """An argument as text: bytes that are not UTF-8 become U+FFFD, as stdin's do.

    Python hands them over as lone surrogates, which no server should receive.

    >>> clean_arg("caf\\udce9 ok")
    'caf\ufffd ok'
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


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


def with_options(prof: Profile, **options: object) -> Profile:
    """The profile with the command line's overrides applied (``None`` = not given), each
    checked by the one door (`voicechat.profile.change`) exactly as the YAML file is."""
    keys = {
        "model": "backend.model",
        "temperature": "generation.temperature",
        "max_tokens": "generation.max_tokens",
        "system": "system",
    }
    for name, value in options.items():
        if value is None or (value == "" and name != "system"):
            continue
        value = clean_arg(value) if isinstance(value, str) else value
        option = "--" + name.replace("_", "-")
        prof = profiles_mod.change(prof, {keys[name]: value}, option)
    return prof


def open_backend(prof: Profile, stack: ExitStack) -> Backend:
    """The profile's backend, closed with the stack (the API key checked first)."""
    from voicechat.backends import create_backend

    backend = create_backend(prof.backend, profiles_mod.api_key(prof.backend))
    stack.callback(backend.close)
    return backend


def open_conversation(prof: Profile, stack: ExitStack) -> Conversation:
    """A new conversation with the profile's backend."""
    from voicechat.chat import Conversation

    return Conversation(
        open_backend(prof, stack),
        prof.generation,
        prof.chunking,
        prof.system,
        tell_time=prof.tell_time,
    )


def open_session(
    prof: Profile,
    term: Terminal,
    stack: ExitStack,
    *,
    mute: bool,
    save_audio: Path | None,
    stats: bool,
) -> Session:
    """The turn loop for ``ask`` and piped ``chat``: a conversation, its voice, its reports."""
    from voicechat.session import Session

    conversation = open_conversation(prof, stack)
    voice = open_voice(prof, mute=mute, save_audio=save_audio, term=term, stack=stack)
    return Session(term, conversation, prof.backend.model, voice, stats=stats)


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

    data = profiles_mod.shown(loaded.profile)
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
            repl.voice_input = open_voice_input(stt, stack, quiet=True)
            questions = repl.questions()
        else:
            questions = piped(stdin_lines())
        # a person at a prompt or a microphone goes on after Ctrl+C stops a reply
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


voices_app = typer.Typer(
    help="List voices; pull Piper voices from Hugging Face.",
    rich_markup_mode=None,
    invoke_without_command=True,
)
app.add_typer(voices_app, name="voices")


@voices_app.callback()
def voices(
    ctx: typer.Context,
    profile: str | None = ProfileOpt,
    lang: str | None = typer.Option(
        None, "--lang", help="Only voices for this language code (e.g. zh, en).", metavar="CODE"
    ),
    available: bool = typer.Option(
        False, "--available", help="List the Piper voices that can be pulled (voices pull NAME)."
    ),
) -> None:
    """List the speech engine's voices (id, name, languages) and the pulled Piper voices."""
    if ctx.invoked_subcommand is not None:
        return
    term = Terminal()
    with boundary(term):
        from voicechat.tts import piper_voices as pulled

        if available:
            have = set(pulled.installed())
            rows = [
                (("* " if v.key in have else "  ") + v.key, v.language_name, v.quality,
                 f"{v.size / 1e6:.0f} MB")
                for v in pulled.available(lang)
            ]  # fmt: skip
            term.table(("NAME", "LANGUAGE", "QUALITY", "SIZE"), rows)
            term.info(f"{len(rows)} voices in {pulled.REPO}; * = pulled; get one: voices pull NAME")
            return
        from voicechat.tts import list_voices, speaking_engine

        tts = profiles_mod.load(profile).profile.tts
        found, engine = list_voices(tts), speaking_engine(tts)
        if lang:
            wanted = LANG_ALIASES.get(lang.lower(), (lang.lower(),))
            found = [
                v
                for v in found
                if any(code.lower().startswith(wanted) for code in (*v.languages, v.id))
            ]
        rows = [(v.id, v.name, ", ".join(v.languages)) for v in found]
        term.table(("ID", "NAME", "LANGUAGES"), rows)
        term.info(f"{len(rows)} voices of engine {engine}; set tts.voice / tts.voice_zh")
        if engine != tts.engine:
            term.info(f"(tts.fallback: {tts.engine} cannot start here; see voicechat doctor)")
        names = pulled.installed()
        if names:
            term.info(f"pulled Piper voices (engine piper, tts.voice: NAME): {', '.join(names)}")


@voices_app.command("pull")
def voices_pull(
    names: list[str] = typer.Argument(..., help="Voice names, e.g. zh_CN-huayan-medium."),
) -> None:
    """Download Piper voices from Hugging Face into your data folder (verified, resumable)."""
    term = Terminal()
    with boundary(term):
        from voicechat.tts import piper_voices as pulled

        catalog = pulled.catalog()
        for name in names:
            model = pulled.pull(name, catalog)
            term.info(f"{model.stem} is ready: tts.engine: piper, tts.voice: {model.stem}")


# --- doctor --------------------------------------------------------------------------------


@app.command()
def doctor(
    profile: str | None = ProfileOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON (for scripts)."),
    audio: bool = typer.Option(
        True, "--audio/--no-audio", help="Check the audio output device (default: yes)."
    ),
    listen: bool = typer.Option(
        False,
        "--listen",
        help="Also check speech input: microphone and echo (with --audio: plays a test "
        "sound), recognition model, VAD.",
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
            rows_iter = doctor_mod.run_checks(
                loaded, key or None, check_audio=audio, check_listen=listen
            )
            for row in rows_iter:
                show(row)
            code = 1 if any(row.ok is False for row in rows) else 0
        if as_json:
            term.print(json.dumps([dataclasses.asdict(r) for r in rows], ensure_ascii=False))
        elif code:
            broken = sum(row.ok is False for row in rows)
            term.info(f"{broken} check{'s' if broken > 1 else ''} failed: see the fixes above")
        raise typer.Exit(code)


# --- speech input (the [listen] extra) -----------------------------------------------------


def stt_settings(prof: Profile, device: str | None, language: str | None) -> STTSettings:
    """The profile's ``stt`` section with ``--input-device`` / ``--language`` applied."""
    changes = {k: v for k, v in (("device", device), ("language", language)) if v is not None}
    return dataclasses.replace(prof.stt, **changes)


def load_recognizer(settings: STTSettings, term: Terminal) -> Recognizer:
    """The recognizer, loaded now; preparing the model on first use draws a bar on a terminal."""
    from voicechat import stt
    from voicechat.questions.display import progress_line

    def progress(done: int, total: int) -> None:
        term.err.write("\r" + progress_line(done, total) + ("\n" if done >= total else ""))
        term.err.flush()

    return stt.create(settings, progress if isatty(term.err) else None)


def open_voice_input(
    settings: STTSettings, stack: ExitStack, quiet: bool = False
) -> VoiceInput | None:
    """Spoken questions, the model loading in the background; ``quiet``: None without the extra."""
    from voicechat.questions.voice import VoiceInput, available

    if quiet and not available():
        return None
    voice_input = VoiceInput(settings)
    stack.callback(voice_input.close)
    return voice_input


def listen_once(
    settings: STTSettings,
    term: Terminal,
    stack: ExitStack,
    on_guess: Callable[[str | None], None] | None = None,
) -> str:
    """One spoken question (``ask --listen``): a level meter on a terminal, then its text;
    ``on_guess`` gets the likely text before the end is confirmed (`VoiceInput.hands_free`)."""
    from voicechat.questions.display import LiveLine
    from voicechat.questions.talk import show_question

    voice_input = open_voice_input(settings, stack)
    assert voice_input is not None
    term.info("listening: ask your question")
    text = voice_input.push_to_talk(LiveLine(term.err), None, 30.0, on_guess)
    if not text:
        raise ConfigError("no question was asked")
    show_question(term, text)
    return text


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
def devices() -> None:
    """List audio devices: microphones (stt.device, --input-device) and outputs (tts.device)."""
    term = Terminal()
    with boundary(term):
        from voicechat.audio.devices import list_devices

        found = list_devices()
        rows = [
            (str(d["index"]), d["name"], str(d["inputs"]), str(d["outputs"]), str(d["rate"]),
             " ".join(m for m, on in (("in", d["default_input"]), ("out", d["default_output"]))
                      if on))
            for d in found
        ]  # fmt: skip
        term.table(("INDEX", "NAME", "IN", "OUT", "RATE", "DEFAULT"), rows)
        if not any(d["inputs"] for d in found):
            term.warn("no microphone found: connect one (or start PulseAudio)")


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
