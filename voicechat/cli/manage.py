"""The commands that look after the set-up: ``profiles``, ``voices`` (and ``voices pull``),
``doctor`` and ``devices``."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING

import typer

from voicechat import profile as profiles_mod
from voicechat.cli.base import ProfileOpt, app, boundary
from voicechat.errors import ConfigError
from voicechat.signals import Signals
from voicechat.terminal import Terminal

if TYPE_CHECKING:
    pass

profiles_app = typer.Typer(
    help="List the profiles, or show one.",
    rich_markup_mode=None,
    invoke_without_command=True,
)
app.add_typer(profiles_app, name="profiles")

LANG_ALIASES = {"zh": ("zh", "cmn", "yue", "sit/cmn", "sit/yue"), "cn": ("zh", "cmn")}
"""espeak-ng names Chinese voices by dialect (cmn, yue), not ``zh``."""


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
    with boundary(term), Signals():  # SIGTERM/SIGHUP: one line and 143/129, as Ctrl+C
        from voicechat.tts import piper_voices as pulled

        catalog = pulled.catalog()
        for name in names:
            model = pulled.pull(name, catalog)
            term.info(f"{model.stem} is ready: tts.engine: piper, tts.voice: {model.stem}")


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

    with boundary(term), Signals():  # SIGTERM/SIGHUP: one line and 143/129, as Ctrl+C
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
