"""The speaker: utterances in, sound out, while the model is still writing.

::

    say(utterance) -> [text Stage] -> synthesis worker -> trim/fade/pause -> [clip Stage]
                       (bounded,        (owns the engine)      |              (bounded, few)
                        large)                                 +-> save_audio WAV
                                                                  playback thread -> device
                                                                  (what was heard: heard())

The synthesis worker turns the next utterance into audio while the previous one plays, so
chunks follow each other without gaps. Both threads start in `start()`, which the turn
calls before sending the request: loading the engine and opening the device overlap the
model's first-token wait. Both hand-offs are a `voicechat.stage.Stage`: the threads sleep
until there is work, and an interrupt, a fault or `close` wakes whoever waits.

Faults never stop the reply: the first one calls ``warn`` with one line (what is missing,
how to fix it), then the speaker behaves as muted (`active` is False). A device fault
with ``save_audio`` set keeps synthesizing into the file. A device that failed is reopened
by the next `start()` (the next turn), so speech comes back with the audio server.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from voicechat.audio.playback import Heard
from voicechat.chunker import is_han
from voicechat.errors import ConfigError, VoicechatError
from voicechat.stage import STOP, Stage, block_signals

if TYPE_CHECKING:
    import numpy as np

    from voicechat.audio.echo import PlayedTap
    from voicechat.audio.playback import Player
    from voicechat.audio.wav import WavWriter
    from voicechat.settings import TTSSettings
    from voicechat.speakable import Lang, Piece
    from voicechat.tts import Engine

EngineFactory = Callable[["TTSSettings"], "Engine"]

MAX_TEXTS = 1000
"""Utterances waiting for synthesis (a few hundred bytes each): room for any normal reply,
so `say()` does not block the text display, yet bounded."""
MAX_CLIPS = 4
"""Synthesized chunks waiting to play: the worker stays a few chunks ahead, no more."""
HUNGRY_S = 0.3
"""Speech with less than this left to play (and nothing being synthesized) is about to run
dry: the chunker may then end a piece at a clause mark instead of waiting for the sentence."""
STALL_S = 10.0
"""`finish()` gives up (with a warning) when playback makes no progress for this long."""
JOIN_S = 2.0
TEXT_GOES_ON = "speech is off, the reply continues as text"

__all__ = ["Heard", "Speaker"]


def _stderr_warn(message: str) -> None:
    print(f"voicechat: warning: {message}", file=sys.stderr)


class Speaker:
    """Owns the synthesis worker and the playback thread; use as a context manager."""

    def __init__(
        self,
        settings: TTSSettings,
        *,
        save_audio: Path | None = None,
        warn: Callable[[str], None] = _stderr_warn,
        play: bool = True,
        engine: EngineFactory | None = None,
        then: str = TEXT_GOES_ON,
    ) -> None:
        """``engine`` builds the engine in the worker (default: `voicechat.tts.create_engine`).

        ``then`` ends the warning of a fault that silences speech (what happens next).
        Raises `ConfigError` when ``save_audio`` cannot be written (checked at once, by
        creating the temporary file the audio goes to).
        """
        self.settings = settings
        self._warn = warn
        self._then = then
        self._play = play
        self._factory = engine
        self._texts: Stage[Piece] = Stage(MAX_TEXTS)
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._engine_failed = False
        self._device_failed = False
        self._closed = False
        self._worker: threading.Thread | None = None
        self._loaded = threading.Event()
        self._worker_ended = threading.Event()
        self._player: Player | None = None
        self._writer: WavWriter | None = None
        self._save_path = save_audio
        self._saving = save_audio is not None
        """Saving was asked for and has not failed."""
        self.played = 0
        """Pieces handed to the device."""
        self._tap: PlayedTap | None = None
        self.saved = 0
        """Pieces written to the ``save_audio`` file."""
        self.save_failed: str | None = None
        """Why the ``save_audio`` file could not be written (one line), if it could not."""
        if save_audio is not None:
            from voicechat.audio.wav import WavWriter, describe

            try:
                self._writer = WavWriter(save_audio)
            except OSError as exc:
                raise ConfigError(f"--save-audio {describe(exc, Path(save_audio))}") from exc
        if self._muted:
            self._texts.break_()

    # --- public ----------------------------------------------------------------------------

    @property
    def _muted(self) -> bool:
        saving = self._saving
        return (
            self._engine_failed
            or not (saving or self._play)
            or (self._device_failed and not saving)
        )

    @property
    def active(self) -> bool:
        """False once speech has been disabled (muted by a fault, or nothing to do)."""
        return not self._muted

    @property
    def tap(self) -> PlayedTap | None:
        """Receives every block played: the echo reference for barge-in."""
        return self._tap

    @tap.setter
    def tap(self, tap: PlayedTap | None) -> None:
        """From now on, also for a device opened in an earlier turn."""
        with self._lock:
            self._tap = tap
            if self._player is not None:
                self._player.tap = tap

    @property
    def first_audio_at(self) -> float | None:
        """``time.monotonic()`` when this turn's first audio was handed to the device."""
        return self._player.first_audio_at if self._player is not None else None

    @property
    def hungry(self) -> bool:
        """Speech is about to fall silent while the reply goes on: a clause now beats a gap.

        False when nothing is played (muted, saving only), so those stay deterministic.
        """
        player = self._player
        if self._muted or player is None or player.failed:
            return False
        if self._texts.pending:
            return False  # an utterance is still being synthesized
        return player.ahead_s() < HUNGRY_S

    @property
    def wakeups(self) -> int:
        """How often the speech threads woke up or looped: what idling costs (tests count it)."""
        player = self._player
        return self._texts.wakeups + (player.wakeups if player is not None else 0)

    @property
    def underruns(self) -> int:
        """Gaps the device made mid-piece because it was fed too late (a busy machine)."""
        player = self._player
        return player.underruns if player is not None else 0

    def wait_ready(self, timeout: float) -> bool:
        """Block until the engine is loaded and the device open (False on timeout or fault)."""
        if not self._loaded.wait(timeout) or self._muted:
            return False
        player = self._player
        return player is None or player.wait_open(timeout)

    def heard(self) -> list[Heard]:
        """The pieces of this turn that started playing, in order, with how much of each has
        left the device so far: after `interrupt()`, what the listener actually heard."""
        player = self._player
        return player.heard() if player is not None else []

    def start(self) -> None:
        """Begin a turn: load the engine and open the device in the background (returns at
        once); a device that failed earlier is reopened."""
        with self._lock:
            if self._closed or self._engine_failed or not (self._play or self._writer):
                return
            if self._play and (self._player is None or self._player.failed):
                self._open_player()
            elif self._player is not None:
                self._player.forget_heard()
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="voicechat-synth", daemon=True
                )
                self._worker.start()

    def say(self, utterance: Piece) -> None:
        """Queue an utterance (blocks only if speech is ~1000 chunks behind)."""
        if self._muted or self._closed or not utterance.text.strip():
            return
        if self._worker is None:
            self.start()
        self._texts.put(utterance)

    def finish(self) -> None:
        """Block until everything queued has been heard (or saved)."""
        while not self._texts.join(STALL_S):
            if self._stalled():
                return
        player = self._player
        if player is None or player.failed:
            return
        # after an engine fault, what was already synthesized is still played out
        while not player.drain(STALL_S):
            if self._stalled():
                return

    def interrupt(self) -> None:
        """Silence within ~100 ms (a short fade); drop everything queued. Callable from any
        thread; the speaker stays usable."""
        self._texts.interrupt()
        player = self._player
        if player is not None:
            player.interrupt()

    def close(self) -> None:
        """Stop both threads (bounded waits) and release the device, engine and file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._texts.stop()
        try:
            if self._player is not None:
                self._player.close(JOIN_S)
        finally:
            try:
                if self._worker is not None and self._worker is not threading.current_thread():
                    self._worker_ended.wait(JOIN_S)  # not join(): see Player.close
            finally:
                self._close_file()

    def __enter__(self) -> Speaker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def report_faults_to(self, warn: Callable[[str], None], then: str = "") -> None:
        """Send fault messages to ``warn`` from now on, ending with ``then`` (what happens
        next). A command whose only job is speech collects them to report as its error."""
        self._warn, self._then = warn, then

    # --- faults ----------------------------------------------------------------------------

    def _next(self, message: str) -> str:
        return f"{message}; {self._then}" if self._then else message

    def _warn_once(self, kind: str, message: str) -> None:
        with self._lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
        with contextlib.suppress(Exception):  # a broken stderr must not kill the threads
            self._warn(message)

    def _engine_fault(self, message: str) -> None:
        """Mute for the rest of the session after one warning."""
        self._engine_failed = True
        self._texts.break_()
        self._warn_once("engine", self._next(message))

    def _device_fault(self, player: Player, message: str) -> None:
        """The playback thread cannot play: keep saving if asked to, else mute until the
        next `start()` tries the device again."""
        if player is not self._player:
            return
        self._device_failed = True
        if player.rate is not None:  # it had worked: a new outage, worth a new warning
            with self._lock:
                self._warned.discard("device")
        if self._saving:
            self._warn_once("device", f"{message}; only saving to {self._save_path}")
            return
        self._texts.break_()
        self._warn_once("device", self._next(f"{message} (--mute avoids this)"))

    def _stalled(self) -> bool:
        player = self._player
        if player is None or player.failed or player.pending == 0:
            return False
        if time.monotonic() - player.progress_at <= STALL_S:
            return False
        player.interrupt()
        self._device_fault(player, "audio output stalled (the device stopped taking audio)")
        return True

    def _open_player(self) -> None:
        from voicechat.audio.playback import Player
        from voicechat.tts import rate_hint

        old = self._player
        player = Player(
            self.settings.device,
            rate_hint=rate_hint(self.settings),
            on_fault=lambda message: self._device_fault(player, message),
            max_clips=MAX_CLIPS,
        )
        player.tap = self._tap
        self._player = player
        if old is not None:
            old.close(JOIN_S)
        if self._device_failed:
            self._device_failed = False
            if self._texts.broken and not self._engine_failed:
                self._texts.mend()
        player.start()

    # --- the synthesis worker --------------------------------------------------------------

    def _work(self) -> None:
        block_signals()
        engine = self._load()
        self._loaded.set()
        try:
            while (entry := self._texts.get()) is not STOP:
                generation, utterance = entry  # type: ignore[misc]
                try:
                    if engine is not None and generation == self._texts.generation:
                        self._speak(engine, utterance, generation)
                finally:
                    self._texts.done()
        finally:
            if engine is not None:
                with contextlib.suppress(Exception):
                    engine.close()
            self._worker_ended.set()

    def _load(self) -> Engine | None:
        try:
            if self._factory is not None:
                return self._factory(self.settings)
            from voicechat.tts import create_engine

            return create_engine(self.settings)
        except VoicechatError as exc:
            self._engine_fault(f"no voice: {exc}")
        except Exception as exc:
            self._engine_fault(f"the {self.settings.engine} engine failed to start ({exc})")
        return None

    def _speak(self, engine: Engine, utterance: Piece, generation: int) -> None:
        from voicechat.audio.playback import Clip

        player = self._player
        player_generation = player.generation if player is not None else 0
        runs = script_runs(utterance.text) if self.settings.mixed == "runs" else []
        if len(runs) < 2:
            runs = [(utterance.text, utterance.lang)]
        try:
            spoken = self._synthesize(engine, runs, generation)
        except VoicechatError as exc:
            self._engine_fault(f"speech failed: {exc}")
            return
        except Exception as exc:
            self._engine_fault(f"the {self.settings.engine} engine failed ({exc!r})")
            return
        if spoken is None or generation != self._texts.generation:
            return
        samples, rate = spoken
        pause = self.settings.sentence_pause if utterance.sentence_end else 0.0
        if self._writer is not None:
            self._save(samples, rate, pause)
        if player is not None and not player.failed:
            clip = Clip(samples, rate, pause, utterance.text)
            if player.put(clip, player_generation):
                self.played += 1

    def _synthesize(
        self, engine: Engine, runs: list[tuple[str, Lang]], generation: int
    ) -> tuple[np.ndarray, int] | None:
        """The runs' audio joined back to back (each trimmed: no silence at the joins),
        faded at both ends; ``None`` when there is nothing to hear or an interrupt came."""
        import numpy as np

        from voicechat.audio.pcm import as_samples, fade, resample, trim

        parts: list[np.ndarray] = []
        rate = 0
        for text, lang in runs:
            if generation != self._texts.generation:
                return None
            audio = engine.synthesize(text, lang)
            samples = trim(as_samples(audio.pcm), audio.sample_rate)
            rate = rate or audio.sample_rate
            if len(samples):
                parts.append(fade(resample(samples, audio.sample_rate, rate), rate))
        if not parts:
            return None
        return fade(np.concatenate(parts), rate), rate

    def _save(self, samples: np.ndarray, rate: int, pause: float) -> None:
        from voicechat.audio.pcm import silence

        writer = self._writer
        assert writer is not None
        try:
            writer.write(samples, rate)
            writer.write(silence(pause, writer.rate or rate), writer.rate or rate)
            self.saved += 1
        except OSError as exc:
            self._save_fault(exc)

    def _save_fault(self, exc: OSError) -> None:
        from voicechat.audio.wav import describe

        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.discard()
        self._saving = False
        self.save_failed = describe(exc, writer.path)
        self._warn_once("save", f"cannot write the audio file ({self.save_failed}); not saving")
        if self._muted:
            self._texts.break_()

    def _close_file(self) -> None:
        writer = self._writer
        if writer is None:
            return
        try:
            writer.close()
        except OSError as exc:
            self._save_fault(exc)
        else:
            self._writer = None


def script_runs(text: str) -> list[tuple[str, Lang]]:
    """``text`` cut into runs of Han characters (``zh``) and of other letters (``other``), so
    each run can be spoken by the voice for its language. Digits, spaces and punctuation join
    the run before them (at the start, the first run): the runs put together are ``text``.

    >>> script_runs("我用Python 3.11写了main.py。")
    [('我用', 'zh'), ('Python 3.11', 'other'), ('写了', 'zh'), ('main.py。', 'other')]
    >>> script_runs("共有3个GPU。")
    [('共有3个', 'zh'), ('GPU。', 'other')]
    >>> script_runs("2024年, OK")
    [('2024年, ', 'zh'), ('OK', 'other')]
    >>> script_runs("Hello, world."), script_runs("..."), script_runs("")
    ([('Hello, world.', 'other')], [('...', 'other')], [])
    """
    runs: list[tuple[str, Lang]] = []
    start = 0
    lang: Lang | None = None
    for i, char in enumerate(text):
        if not char.isalpha():
            continue  # neutral: stays with the run it is in
        kind: Lang = "zh" if is_han(char) else "other"
        if lang is None:
            lang = kind
        elif kind != lang:
            runs.append((text[start:i], lang))
            start, lang = i, kind
    if text:
        runs.append((text[start:], lang or "other"))
    return runs
