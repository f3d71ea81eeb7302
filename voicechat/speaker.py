"""The speaker: utterances in, sound out, while the model is still writing.

::

    say(utterance) -> [text queue] -> synthesis worker -> trim/fade/pause -> [clip queue]
                       (bounded,                (owns the engine)    |         (bounded, few)
                        large)                                       +-> save_audio WAV
                                                                      playback thread -> device

The synthesis worker turns the next utterance into audio while the previous one plays, so
chunks follow each other without gaps. Both threads start in `start()`, which the turn
calls before sending the request: loading the engine and opening the device overlap the
model's first-token wait.

Faults never stop the reply: the first one calls ``warn`` with one line (what is missing,
how to fix it), then the speaker behaves as muted (`active` is False). A device fault
with ``save_audio`` set keeps synthesizing into the file.
"""

from __future__ import annotations

import contextlib
import json
import queue
import sys
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicechat.errors import VoicechatError

if TYPE_CHECKING:
    import numpy as np

    from voicechat.playback import Player
    from voicechat.settings import TTSSettings
    from voicechat.speakable import Utterance
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


def _stderr_warn(message: str) -> None:
    print(f"voicechat: warning: {message}", file=sys.stderr)


class _Stop:
    """Sentinel for the synthesis worker."""


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
    ) -> None:
        """``engine`` builds the engine in the worker (default: `voicechat.tts.create_engine`)."""
        self.settings = settings
        self._save_path = save_audio
        self._warn = warn
        self._play = play
        self._factory = engine
        self._texts: queue.Queue[tuple[int, Utterance] | _Stop] = queue.Queue(MAX_TEXTS)
        self._lock = threading.Condition()
        self._pending = 0
        """Utterances accepted by `say` and not yet handed to playback/saving."""
        self._generation = 0
        """Bumped by `interrupt`: utterances of an older generation are dropped."""
        self._warned: set[str] = set()
        self._muted = not play and save_audio is None
        self._closed = False
        self._worker: threading.Thread | None = None
        self._player: Player | None = None
        self._writer: wave.Wave_write | None = None
        self._save_rate: int | None = None

    # --- public ----------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """False once speech has been disabled (muted by a fault, or nothing to do)."""
        return not self._muted

    @property
    def first_audio_at(self) -> float | None:
        """``time.monotonic()`` when the first chunk's audio was handed to the device."""
        return self._player.first_audio_at if self._player is not None else None

    @property
    def hungry(self) -> bool:
        """Speech is about to fall silent while the reply goes on: a clause now beats a gap.

        False when nothing is played (muted, saving only), so those stay deterministic.
        """
        player = self._player
        if self._muted or player is None or player.failed:
            return False
        with self._lock:
            if self._pending:
                return False  # an utterance is still being synthesized
        return player.ahead_s() < HUNGRY_S

    def start(self) -> None:
        """Load the engine and open the device in the background; returns at once."""
        if self._muted or self._closed or self._worker is not None:
            return
        if self._play:
            from voicechat.playback import Player

            self._player = Player(
                self.settings.device,
                rate_hint=_rate_hint(self.settings),
                on_fault=self._device_fault,
                max_clips=MAX_CLIPS,
            )
            self._player.start()
        self._worker = threading.Thread(target=self._work, name="voicechat-synth", daemon=True)
        self._worker.start()

    def say(self, utterance: Utterance) -> None:
        """Queue an utterance (blocks only if speech is ~1000 chunks behind)."""
        if self._muted or self._closed or not utterance.text.strip():
            return
        self.start()
        with self._lock:
            self._pending += 1
            item = (self._generation, utterance)
        while not self._muted:
            try:
                self._texts.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        self._done(1)

    def finish(self) -> None:
        """Block until everything queued has been heard (or saved)."""
        with self._lock:
            while self._pending > 0 and not self._muted:
                self._lock.wait(0.1)
        player = self._player
        if player is None or player.failed:
            return
        # after an engine fault, what was already synthesized is still played out
        while not player.drain(timeout=0.1):
            if player.failed:
                return
            if time.monotonic() - player.progress_at > STALL_S:
                self._disable("audio output stalled (the device stopped taking audio)", "device")
                return

    def interrupt(self) -> None:
        """Silence within ~100 ms; drop everything queued. The speaker stays usable."""
        with self._lock:
            self._generation += 1
        dropped = 0
        while True:
            try:
                item = self._texts.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Stop):
                self._texts.put_nowait(item)
                break
            dropped += 1
        self._done(dropped)
        if self._player is not None:
            self._player.interrupt()

    def close(self) -> None:
        """Stop both threads (bounded waits) and release the device, engine and file."""
        if self._closed:
            return
        self._closed = True
        self.interrupt()
        worker = self._worker
        if worker is not None:
            with contextlib.suppress(queue.Full):
                self._texts.put(_Stop(), timeout=JOIN_S)
            worker.join(JOIN_S)
        if self._player is not None:
            self._player.close(JOIN_S)
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.close()
            self._writer = None

    def __enter__(self) -> Speaker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- faults ----------------------------------------------------------------------------

    def _warn_once(self, kind: str, message: str) -> None:
        with self._lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
        with contextlib.suppress(Exception):  # a broken stderr must not kill the threads
            self._warn(message)

    def _disable(self, message: str, kind: str) -> None:
        """Mute for the rest of the session after one warning."""
        already = self._muted
        with self._lock:
            self._muted = True
            self._pending = 0
            self._lock.notify_all()
        if not already:
            self._warn_once(kind, f"{message}; speech is off, the reply continues as text")

    def _device_fault(self, message: str) -> None:
        """The playback thread cannot play: keep saving if asked to, else mute."""
        if self._save_path is not None:
            self._warn_once("device", f"{message}; only saving to {self._save_path}")
        else:
            self._disable(f"{message} (--mute avoids this)", "device")

    # --- the synthesis worker --------------------------------------------------------------

    def _done(self, count: int) -> None:
        if count:
            with self._lock:
                self._pending = max(0, self._pending - count)
                self._lock.notify_all()

    def _work(self) -> None:
        engine = self._load()
        try:
            while True:
                item = self._texts.get()
                if isinstance(item, _Stop):
                    return
                generation, utterance = item
                try:
                    if engine is not None and not self._muted and generation == self._generation:
                        self._speak(engine, utterance, generation)
                finally:
                    self._done(1)
        finally:
            if engine is not None:
                with contextlib.suppress(Exception):
                    engine.close()

    def _load(self) -> Engine | None:
        try:
            if self._factory is not None:
                return self._factory(self.settings)
            from voicechat.tts import create_engine

            return create_engine(self.settings)
        except VoicechatError as exc:
            self._disable(f"no voice: {exc}", "engine")
        except Exception as exc:
            self._disable(f"the {self.settings.engine} engine failed to start ({exc})", "engine")
        return None

    def _speak(self, engine: Engine, utterance: Utterance, generation: int) -> None:
        from voicechat.playback import Clip, as_samples, fade, trim

        epoch = self._player.epoch if self._player is not None else 0
        try:
            audio = engine.synthesize(utterance.text, utterance.lang)
        except VoicechatError as exc:
            self._disable(f"speech failed: {exc}", "engine")
            return
        except Exception as exc:
            self._disable(f"the {self.settings.engine} engine failed ({exc!r})", "engine")
            return
        samples = fade(trim(as_samples(audio.pcm), audio.sample_rate), audio.sample_rate)
        if len(samples) == 0 or generation != self._generation:
            return
        pause = self.settings.sentence_pause if utterance.sentence_end else 0.0
        if self._save_path is not None:
            self._save(samples, audio.sample_rate, pause)
        player = self._player
        if player is not None and not player.failed:
            player.put(Clip(samples, audio.sample_rate, pause), epoch)

    def _save(self, samples: np.ndarray, rate: int, pause: float) -> None:
        import numpy as np

        from voicechat.playback import resample

        try:
            if self._writer is None:
                assert self._save_path is not None
                writer = wave.open(str(self._save_path), "wb")  # noqa: SIM115 (kept open)
                writer.setnchannels(1)
                writer.setsampwidth(2)
                writer.setframerate(rate)
                self._writer, self._save_rate = writer, rate
            out = resample(samples, rate, self._save_rate or rate)
            silence = np.zeros(int(pause * (self._save_rate or rate)), dtype=np.int16)
            # wave patches the header after each write: the file is valid at every moment
            self._writer.writeframes(out.astype("<i2").tobytes() + silence.tobytes())
        except OSError as exc:
            self._save_path = None
            self._warn_once("save", f"cannot write the audio file ({exc}); not saving")


def _rate_hint(settings: TTSSettings) -> int | None:
    """The engine's output rate, known before loading it: the device is opened at it."""
    if settings.engine == "pyttsx3" and sys.platform.startswith("linux"):
        return 22050  # espeak-ng
    if settings.engine == "piper" and settings.model:
        try:
            config: Any = json.loads(Path(f"{settings.model}.json").read_text(encoding="utf-8"))
            return int(config["audio"]["sample_rate"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return None
