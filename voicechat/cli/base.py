"""What every command shares: the `app`, its options, the error boundary, and the opening of a
profile's backend, conversation, voice and speech input (closed with the command's stack).

Heavy modules (requests, the openai SDK, rich, audio) are imported inside the functions that
need them: ``voicechat --help`` must stay fast on the Jetson's CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from voicechat import profile as profiles_mod
from voicechat.errors import EXIT_INTERRUPTED, ConfigError, VoicechatError
from voicechat.settings import Profile
from voicechat.signals import Ended
from voicechat.terminal import OutputClosed, Terminal, isatty

if TYPE_CHECKING:
    from voicechat.backends import Backend
    from voicechat.chat import Conversation
    from voicechat.questions.voice import VoiceInput
    from voicechat.session import Session
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


def settle_heap() -> None:
    """Start-up is over (the backend with its SDK, the voice): what it made lives as long as
    the process, so the garbage collector stops walking it (`gc.freeze`). Every full
    collection walked it all: with the OpenAI SDK loaded, ~25 ms here (more on a Jetson's
    CPU), a pause that could fall between a token and its text, or before a Ctrl+C is
    acted on."""
    import gc

    gc.freeze()


def clean_arg(text: str) -> str:
    """An argument as text: bytes that are not UTF-8 become U+FFFD, as stdin's do.

    Python hands them over as lone surrogates, which no server should receive.

    >>> clean_arg("caf\\udce9 ok")
    'caf\ufffd ok'
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


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
    settings: STTSettings, stack: ExitStack, quiet: bool = False, load_now: bool = True
) -> VoiceInput | None:
    """Spoken questions, the model loading in the background (``load_now`` False: from the
    first spoken question on); ``quiet``: None without the extra."""
    from voicechat.questions.voice import VoiceInput, available

    if quiet and not available():
        return None
    voice_input = VoiceInput(settings, load_now)
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
