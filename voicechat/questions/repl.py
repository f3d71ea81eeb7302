"""The interactive conversation's questions: a prompt with line editing, history, slash commands.

Only used when stdin is a terminal (piped chats are `voicechat.session.piped`); its questions
go to `Session.run` like every other source's. Ctrl+C stops the current reply and its voice
and returns to the prompt (the reply stays in the history as far as it was shown, marked
interrupted); Ctrl+C at the prompt does not exit; Ctrl+D does. The model is warmed up in the
background while the user types the first question.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from voicechat import __version__, files
from voicechat import profile as profiles_mod
from voicechat.chat import Conversation, Turn
from voicechat.errors import ConfigError, VoicechatError
from voicechat.redact import short
from voicechat.session import Question, Session
from voicechat.settings import Profile, TTSSettings, range_of
from voicechat.terminal import Terminal, format_stats

if TYPE_CHECKING:
    from voicechat.backends import Backend
    from voicechat.chat import Speech
    from voicechat.questions.voice import VoiceInput

HISTORY_ENV = "VOICECHAT_NO_HISTORY"
"""Set to 1 to keep no prompt history on disk."""
PROMPT = ">>> "
CONTINUE = "... "
BLOCK = '"""'
SAVE_VERSION = 1


class ExitRepl(Exception):
    """/exit, /bye."""


def history_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "voicechat" / "history"


@dataclass
class Repl:
    """One interactive session; `run` returns the exit code."""

    term: Terminal
    loaded: profiles_mod.LoadedProfile
    profile: Profile
    session: Session
    """Runs the turns (and reports them); holds the conversation and the voice."""
    new_backend: Callable[[Profile], Backend]
    new_voice: Callable[[Profile], Speech | None]
    voice_input: VoiceInput | None = None
    """Spoken questions (the [listen] extra): push-to-talk, /listen; None without the extra."""

    @property
    def conversation(self) -> Conversation:
        return self.session.conversation

    @property
    def voice(self) -> Speech | None:
        return self.session.speech

    @property
    def muted(self) -> bool:
        return self.session.muted

    @property
    def last(self) -> Turn | None:
        return self.session.last

    # --- the loop ----------------------------------------------------------------------------

    def questions(self) -> Iterator[Question]:
        """Typed lines and push-to-talk, for `Session.run`, until Ctrl+D or /exit; slash
        commands run here (``/listen on`` asks hands-free until Esc)."""
        history = _History()
        self._banner()
        self._warm_up()
        try:
            while True:
                try:
                    text = self._read()
                except KeyboardInterrupt:
                    self.session.handled()
                    self.term.note("(Ctrl+D or /exit to quit)")
                    continue
                except EOFError:
                    self.term.print()
                    return
                if not text.strip():  # Enter on an empty line: push-to-talk
                    from voicechat.questions.talk import talk

                    question = talk(self.session, self.voice_input, self.term)
                    if question is not None:
                        try:
                            yield question
                        finally:
                            if question.ahead is not None:
                                question.ahead.discard()  # the turn took it, unless it never ran
                elif not text.lstrip().startswith("/"):
                    yield Question(text)
                else:
                    try:
                        yield from self.command(text.strip())
                    except ExitRepl:
                        return
                    except KeyboardInterrupt:
                        self.session.handled()
                        self.term.note("interrupted")  # Ctrl+C during a slash command
        finally:
            history.save()

    def _read(self) -> str:
        line = input(PROMPT)
        if not line.lstrip().startswith(BLOCK):
            return line
        # A """ block, as in Ollama's REPL: everything up to the closing """.
        first = line.lstrip()[len(BLOCK) :]
        if first.strip() and first.rstrip().endswith(BLOCK):
            return first.rstrip()[: -len(BLOCK)].strip()
        lines = [first]
        while True:
            more = input(CONTINUE)
            if more.rstrip().endswith(BLOCK):
                lines.append(more.rstrip()[: -len(BLOCK)])
                return "\n".join(lines).strip("\n")
            lines.append(more)

    def _banner(self) -> None:
        self.term.note(
            f"voicechat {__version__} · profile {self.loaded.source.name} · "
            f"model {self.profile.backend.model} · {self._voice_named()}"
        )
        self.term.note('/help for commands, """ for several lines, Ctrl+C stops a reply, '
                       "Ctrl+D exits")  # fmt: skip
        if self.voice_input is not None:
            from voicechat.questions.talk import TALK_HINT

            self.term.note(TALK_HINT)

    def _voice_named(self) -> str:
        """The engine and voice that will speak: the fallback's while the profile's cannot."""
        tts = self.profile.tts
        if self.muted or self.voice is None:
            return "muted"
        if tts.fallback in (None, tts.engine):
            return f"{tts.engine} {tts.voice or 'default voice'}"
        from voicechat.tts import speaking_engine

        try:
            engine = speaking_engine(tts)
        except VoicechatError:  # neither can start: the speaker says why, once
            engine = tts.engine
        if engine == tts.engine:
            return f"{tts.engine} {tts.voice or 'default voice'}"
        return f"{engine} (tts.fallback: {tts.engine} cannot start here; see voicechat doctor)"

    def _warm_up(self) -> None:
        """Load the model now so the first question does not wait for it (errors surface
        on the first question, with their fix)."""
        backend = self.conversation.backend

        def warm() -> None:
            with contextlib.suppress(Exception):  # the first turn reports the same problem
                backend.warm_up()

        threading.Thread(target=warm, name="voicechat-warm-up", daemon=True).start()
        self.term.note(f"loading {self.profile.backend.model} in the background…")

    # --- slash commands --------------------------------------------------------------------

    def command(self, line: str) -> Iterator[Question]:
        """Run a slash command; the questions it asks (``/listen on``), if any."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        command = name.lower() if name.lower() in COMMANDS else ALIASES.get(name.lower(), "")
        entry = COMMANDS.get(command)
        if entry is None:
            close = [c for c in COMMANDS if c.startswith(name.lower()[:3])]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            self.term.error(f"unknown command {name}{hint}: /help lists them")
            return
        handler, _, needs = entry
        if needs and not arg:
            self.term.error(f"{name} needs {needs}: e.g. {example(command)}")
            return
        try:
            asked = handler(self, arg)
            if asked is not None:
                yield from asked
        except VoicechatError as exc:
            self.term.error(str(exc))

    def cmd_help(self, arg: str) -> None:
        rows = [(f"{n} {needs}".strip(), text) for n, (_, text, needs) in COMMANDS.items()]
        self.term.table(("COMMAND", "WHAT IT DOES"), rows)
        from voicechat.questions.talk import TALK_HINT

        self.term.note(TALK_HINT)

    def cmd_listen(self, arg: str) -> Iterator[Question]:
        from voicechat.questions.talk import listening

        return listening(self.session, self.voice_input, self.term, arg)

    def cmd_exit(self, arg: str) -> None:
        raise ExitRepl

    def cmd_reset(self, arg: str) -> None:
        self.conversation.reset()
        self.term.note("conversation forgotten")

    def cmd_mute(self, arg: str) -> None:
        self.session.muted = True
        if self.voice is not None:
            self.voice.interrupt()
        self.term.note("muted: text only (/unmute to speak again)")

    def cmd_unmute(self, arg: str) -> None:
        if self.voice is None:
            self.session.speech = self.new_voice(self.profile)
        if self.voice is None:
            self.term.error("no voice: the profile's tts.engine is none (try /profile NAME)")
            return
        self.session.muted = False
        self.term.note("speaking again")

    def cmd_voice(self, arg: str) -> None:
        from voicechat.tts import find_voice, list_voices, unknown_voice

        key = "voice_zh" if _looks_chinese_voice(arg) else "voice"
        voices = list_voices(self.profile.tts)
        voice = find_voice(arg, voices)
        if voice is None:
            from voicechat.tts import speaking_engine  # the fallback's, until pulled

            raise unknown_voice(key, arg, voices, speaking_engine(self.profile.tts))
        self._set_tts("/voice", **{key: voice.id})
        which = "Chinese" if key == "voice_zh" else "other"
        self.term.note(f"voice for {which} replies: {voice.id} ({voice.name})")

    def cmd_rate(self, arg: str) -> None:
        if not arg.strip().isdigit():
            lo, hi = range_of(TTSSettings, "rate")
            raise ConfigError(
                f"/rate {arg}: give words per minute from {lo:g} to {hi:g}, e.g. /rate 180"
            )
        rate = int(arg)
        self._set_tts("/rate", rate=rate)  # the range is the schema's (`profile.change`)
        self.term.note(f"rate {rate} words per minute")

    def cmd_model(self, arg: str) -> None:
        self._switch(
            profiles_mod.change(self.profile, {"backend.model": arg}, "/model"), self.loaded
        )
        self.term.note(f"model {arg} (the conversation continues)")

    def cmd_profile(self, arg: str) -> None:
        loaded = profiles_mod.load(arg)
        self._switch(loaded.profile, loaded, voice_too=True)
        self.term.note(
            f"profile {loaded.source.name}: model {loaded.profile.backend.model} "
            "(the conversation continues)"
        )

    def cmd_system(self, arg: str) -> None:
        if not arg:
            self.term.note(f"system prompt: {self.conversation.system or '(none)'}")
            return
        self.conversation.system = arg
        self.term.note("system prompt set")

    def cmd_stats(self, arg: str) -> None:
        if self.last is None:
            self.term.note("no reply yet")
            return
        self.term.note(format_stats(self.last.outcome, self.last.first_audio_s))
        if self.session.last_spoken is not None:
            from voicechat.session import timeline

            self.term.note(timeline(self.session.last_spoken, self.last))

    def cmd_save(self, arg: str) -> None:
        path = Path(arg).expanduser()
        if path.suffix.lower() in (".md", ".markdown"):
            text = to_markdown(self.conversation)
        else:
            text = json.dumps(to_json(self.conversation, self.profile), ensure_ascii=False,
                              indent=2) + "\n"  # fmt: skip
        try:
            files.write_text(path, text)  # a failed write leaves the old file as it was
        except OSError as exc:
            raise ConfigError(
                f"/save {arg}: cannot write: {exc.strerror or exc} (nothing was changed)"
            ) from None
        self.term.note(f"saved {len(self.conversation.turns)} turns to {path}")

    def cmd_load(self, arg: str) -> None:
        path = Path(arg).expanduser()
        turns, system = load_json(path)
        self.conversation.turns[:] = turns
        if system is not None:
            self.conversation.system = system
        self.term.note(f"loaded {len(turns)} turns from {path}")

    def cmd_history(self, arg: str) -> None:
        if not self.conversation.turns:
            self.term.note("the conversation is empty")
            return
        for i, turn in enumerate(self.conversation.turns, 1):
            mark = " [interrupted]" if turn.interrupted else ""
            self.term.print(f"{i}. you: {short(turn.question, 100)}")
            self.term.print(f"   assistant: {short(turn.reply, 100)}{mark}")

    # --- switching -------------------------------------------------------------------------

    def _set_tts(self, where: str, **changes: object) -> None:
        tts = {f"tts.{key}": value for key, value in changes.items()}
        self._switch(profiles_mod.change(self.profile, tts, where), self.loaded, voice_too=True)

    def _switch(
        self, profile: Profile, loaded: profiles_mod.LoadedProfile, voice_too: bool = False
    ) -> None:
        if profile.backend != self.profile.backend:
            old_backend = self.conversation.backend
            self.conversation.backend = self.new_backend(profile)
            old_backend.close()  # its connections are of no more use
            self.session.model = profile.backend.model
        self.conversation.generation = profile.generation
        self.conversation.chunking = profile.chunking
        self.conversation.tell_time = profile.tell_time
        if loaded is not self.loaded:
            self.conversation.system = profile.system
        if voice_too and profile.tts != self.profile.tts:
            old = self.voice
            self.session.speech = self.new_voice(profile)
            if old is not None:
                old.close()
        self.profile, self.loaded = profile, loaded


def _looks_chinese_voice(name: str) -> bool:
    return any(tag in name.lower() for tag in ("cmn", "zh", "yue", "huayan"))


# --- saving and loading ----------------------------------------------------------------------


def to_json(conversation: Conversation, profile: Profile) -> dict[str, object]:
    return {
        "voicechat": SAVE_VERSION,
        "model": profile.backend.model,
        "system": conversation.system,
        "turns": [
            {
                "question": t.question,
                "reply": t.reply,
                "interrupted": t.interrupted,
                **({"asked_at": t.asked_at.isoformat()} if t.asked_at is not None else {}),
            }
            for t in conversation.turns
        ],
    }


def to_markdown(conversation: Conversation) -> str:
    parts = ["# Conversation\n"]
    if conversation.system:
        parts.append(f"*System:* {conversation.system}\n")
    for turn in conversation.turns:
        when = f" ({turn.asked_at.isoformat(sep=' ', timespec='seconds')})" if turn.asked_at else ""
        parts.append(f"## You{when}\n\n{turn.question}\n")
        mark = "\n\n*(interrupted)*" if turn.interrupted else ""
        parts.append(f"## Assistant\n\n{turn.reply}{mark}\n")
    return "\n".join(parts)


def load_json(path: Path) -> tuple[list[Turn], str | None]:
    """Turns saved by /save FILE.json; every problem is one ConfigError line."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"/load {path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"/load {path}: not a saved conversation ({exc})") from None
    turns = data.get("turns") if isinstance(data, dict) else None
    if not isinstance(turns, list) or not all(
        isinstance(t, dict)
        and isinstance(t.get("question"), str)
        and isinstance(t.get("reply"), str)
        for t in turns
    ):
        raise ConfigError(f"/load {path}: not a conversation saved with /save FILE.json")
    system = data.get("system")
    return [
        Turn(
            t["question"],
            t["reply"],
            interrupted=bool(t.get("interrupted")),
            asked_at=_asked_at(t.get("asked_at")),
        )
        for t in turns
    ], system if isinstance(system, str) else None


def _asked_at(value: object) -> datetime | None:
    """A saved turn's time (ISO 8601 with its zone); absent or unreadable: unknown.

    >>> _asked_at("2026-12-07T14:05:00+08:00").hour, _asked_at("noon"), _asked_at(None)
    (14, None, None)
    """
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


# --- line editing ------------------------------------------------------------------------------


class _History:
    """readline history in the user's state folder, and tab completion of commands."""

    def __init__(self) -> None:
        self.path: Path | None = None
        try:
            import readline
        except ImportError:  # pragma: no cover - Windows without pyreadline
            self.readline = None
            return
        self.readline = readline
        readline.set_completer(_complete)
        readline.set_completer_delims(" \t\n")
        if "libedit" in (readline.__doc__ or ""):
            readline.parse_and_bind("bind ^I rl_complete")
        else:
            readline.parse_and_bind("tab: complete")
        if os.environ.get(HISTORY_ENV, "").strip() not in ("", "0"):
            return
        self.path = history_path()
        readline.set_history_length(1000)
        with contextlib.suppress(OSError):  # no history yet
            readline.read_history_file(self.path)

    def save(self) -> None:
        if self.readline is None or self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with files.replacing(self.path) as temp:  # a full disk keeps the old history
                self.readline.write_history_file(temp)
        except OSError:
            pass


def _complete(text: str, state: int) -> str | None:
    if not text.startswith("/"):
        return None
    names = sorted(n for n in [*COMMANDS, *ALIASES] if n.startswith(text))
    return names[state] + " " if state < len(names) else None


# name -> (handler, help, argument it needs ("" = none))
COMMANDS: dict[str, tuple[Callable[[Repl, str], Iterator[Question] | None], str, str]] = {
    "/help": (Repl.cmd_help, "list the commands", ""),
    "/exit": (Repl.cmd_exit, "leave (also /bye, Ctrl+D)", ""),
    "/reset": (Repl.cmd_reset, "forget the conversation", ""),
    "/mute": (Repl.cmd_mute, "text only", ""),
    "/unmute": (Repl.cmd_unmute, "speak the replies again", ""),
    "/voice": (Repl.cmd_voice, "speak with another voice (see: voicechat voices)", "NAME"),
    "/rate": (Repl.cmd_rate, "speaking rate in words per minute", "N"),
    "/model": (Repl.cmd_model, "ask another model from now on", "NAME"),
    "/profile": (Repl.cmd_profile, "switch to another profile", "NAME"),
    "/system": (Repl.cmd_system, "set the system prompt (no text: show it)", ""),
    "/stats": (Repl.cmd_stats, "time to first token and audio, tokens/s of the last reply", ""),
    "/save": (Repl.cmd_save, "save the conversation (.json, or .md to export)", "FILE"),
    "/load": (Repl.cmd_load, "load a conversation saved as .json", "FILE"),
    "/history": (Repl.cmd_history, "show the conversation so far", ""),
    "/listen": (Repl.cmd_listen, "hands-free: questions from the microphone (Esc stops)", "on|off"),
}
ALIASES = {"/bye": "/exit", "/quit": "/exit", "/?": "/help"}
EXAMPLES = {
    "/voice": "/voice gmw/en-us",
    "/rate": "/rate 180",
    "/model": "/model qwen2.5:3b",
    "/profile": "/profile local-openai",
    "/save": "/save chat.json",
    "/load": "/load chat.json",
    "/listen": "/listen on",
}


def example(command: str) -> str:
    """A usage example: the EXAMPLES row, else one made from the argument's name.

    >>> example("/rate"), example("/nosuch")
    ('/rate 180', '/nosuch')
    """
    if command in EXAMPLES:
        return EXAMPLES[command]
    needs = COMMANDS[command][2] if command in COMMANDS else ""
    return f"{command} {needs}".strip()
