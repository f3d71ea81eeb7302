"""faster-whisper (CTranslate2, int8 on the CPU) with multilingual Whisper.

``stt.model: base`` is Whisper base assembled from its PyPI parts (`whisper_model`); any
other value is the path of a CTranslate2 Whisper folder (``small``, ``medium``... converted
or downloaded by the user). Greedy decoding without timestamps and without conditioning on
earlier text: an utterance is short, and this keeps a 3 s question under a second here.

Mandarin comes out in Traditional characters unless prompted: a Simplified prompt fixes
that and, with the language left on auto, English is still recognised as English.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicechat.checks import Check
from voicechat.chunker import is_han
from voicechat.errors import ConfigError, ListenError
from voicechat.redact import reason
from voicechat.stt import whisper_model
from voicechat.stt.base import SAMPLE_RATE, Transcript, language_code, require

if TYPE_CHECKING:
    import numpy as np

    from voicechat.settings import STTSettings

ONE_WINDOW_S = 29.0
"""Utterances up to this long are encoded once (Whisper's window is 30 s)."""
SHORT_WINDOW_S = 12.0
"""The encoder's window for a spoken question: Whisper pads every input to 30 s and the
encoder's cost grows with the window, so a question is padded to 12 s instead (CTranslate2
takes a shorter input). On 126 utterances (six English voices, recorded Chinese at three
speeds; ``python scripts/eval_window.py``) the mean word error rate was 0.068 at 15 s and
0.065 at 12 s, recognition 0.31 s and 0.27 s (median, 2 threads); at 10 s some were lost
whole (0.26)."""
SHORT_PAD_S = 1.0
"""Silence the short window keeps after the speech (Whisper wants some to end the text)."""
TAIL_PAD_S = 0.2
"""Silence appended to an utterance: one cut a frame after its speech (early recognition)
then reads as one cut later does (without it, 现在几点了 came out in Traditional
characters when cut that early)."""
ZH_PROMPT = "以下是普通话的句子。"
"""'What follows are Mandarin sentences.' in Simplified characters: steers output to Simplified."""


def model_path(settings: STTSettings, progress: whisper_model.Progress | None = None) -> Path:
    """The CTranslate2 folder ``stt.model`` names, assembling Whisper base when needed."""
    if settings.model == "base":
        return whisper_model.ensure(progress)
    path = Path(settings.model).expanduser()
    if not (path / "model.bin").is_file():
        raise ConfigError(
            f"stt.model {settings.model!r} is not a CTranslate2 Whisper folder (no model.bin): "
            "use base, or the path of a converted model"
        )
    return path


class FasterWhisper:
    """One loaded model; `transcribe` is called from one thread at a time."""

    def __init__(self, settings: STTSettings, progress: whisper_model.Progress | None = None):
        fw = require("faster_whisper", "faster-whisper")
        language = language_code(settings.language)
        if language is not None and language not in _languages():
            raise ConfigError(
                f"stt.language {settings.language!r} is not a Whisper language: use auto, "
                "or a code such as zh, en, de, ja"
            )
        path = model_path(settings, progress)
        try:
            self._model: Any = fw.WhisperModel(
                str(path),
                device="cpu",
                compute_type="int8",
                cpu_threads=settings.threads or auto_threads(),
                num_workers=1,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ListenError(
                f"the speech recognition model at {path} does not load ({reason(exc)}): "
                f"remove the folder and run again, or {whisper_model.FIX}"
            ) from None
        self._settings = settings

    def transcribe(
        self, samples: np.ndarray, language: str | None = None, hint: str = ""
    ) -> Transcript:
        """Recognise one utterance (mono float32 at 16 kHz); ``hint`` goes in the prompt."""
        if len(samples) <= ONE_WINDOW_S * SAMPLE_RATE:
            return self._one_window(samples, language, hint)
        return self._long(samples, language, hint)

    def _one_window(self, samples: np.ndarray, language: str | None, hint: str) -> Transcript:
        """An utterance within Whisper's 30 s window: encoded once (a short one in a
        `SHORT_WINDOW_S` window).

        faster-whisper's ``transcribe`` with the language on auto runs the encoder twice
        (once to detect the language, once to decode): the encoder over the padded 30 s
        window is most of the cost, so this halves the time to text. Same prompt, same
        greedy decoding and the same scores as ``_long``.
        """
        import numpy as np
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        start = time.monotonic()
        model = self._model
        extractor = model.feature_extractor
        tail = np.zeros(int(TAIL_PAD_S * SAMPLE_RATE), samples.dtype)
        features = model.feature_extractor(np.concatenate([samples, tail]))
        frames = extractor.nb_max_frames  # 30 s
        if len(samples) <= (SHORT_WINDOW_S - SHORT_PAD_S - TAIL_PAD_S) * SAMPLE_RATE:
            frames = int(SHORT_WINDOW_S * extractor.sampling_rate / extractor.hop_length)
        encoder_output = model.encode(pad_or_trim(features[..., :frames], frames))
        if language is None:
            detected = model.model.detect_language(encoder_output)[0]
            language = _likeliest(detected, hint)
        tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language
        )
        text = _prompt(language, hint)  # the language is known here (detected or set)
        previous = tokenizer.encode(" " + text) if text else []
        prompt = model.get_prompt(tokenizer, previous, without_timestamps=True)
        result = model.model.generate(
            encoder_output,
            [prompt],
            beam_size=1,
            max_length=model.max_length // 2,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1])),
        )[0]  # fmt: skip
        tokens = result.sequences_ids[0]
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        return Transcript(
            text=tokenizer.decode(tokens).strip(),
            language=language,
            no_speech_prob=result.no_speech_prob,
            audio_s=len(samples) / SAMPLE_RATE,
            compute_s=time.monotonic() - start,
            avg_logprob=avg_logprob if tokens else -10.0,
        )

    def _long(self, samples: np.ndarray, language: str | None, hint: str) -> Transcript:
        """Over 30 s (a file): faster-whisper's own loop, window after window."""
        start = time.monotonic()
        prompt = _prompt(language, hint)
        segments, info = self._model.transcribe(
            samples,
            language=language,
            task="transcribe",
            beam_size=1,
            best_of=1,
            temperature=0.0,
            condition_on_previous_text=False,
            initial_prompt=prompt or None,
            without_timestamps=True,
            vad_filter=False,
            no_speech_threshold=self._settings.no_speech_threshold,
        )
        texts, no_speech, logprobs = [], [], []
        for segment in segments:  # decoding happens while iterating
            texts.append(segment.text.strip())
            no_speech.append(segment.no_speech_prob)
            logprobs.append(segment.avg_logprob)
        text = ("" if info.language == "zh" else " ").join(t for t in texts if t).strip()
        # the segments' means: the worst one alone (a weak stretch in a minute of clear
        # speech) would make the whole text look like no speech to the hallucination gate;
        # faster-whisper has dropped the segments that are no speech by that same rule
        count = len(no_speech)
        return Transcript(
            text=text,
            language=info.language,
            no_speech_prob=sum(no_speech) / count if count else 1.0,
            audio_s=len(samples) / SAMPLE_RATE,
            compute_s=time.monotonic() - start,
            avg_logprob=sum(logprobs) / count if count else -10.0,
        )

    def close(self) -> None:
        self._model = None


def auto_threads() -> int:
    """The cores this process may use, 1 to 4: the user waits for recognition with little
    else running (the reply has not begun), and here two threads took a 3 s question from
    0.36 s to 0.30 s, and were no slower than one with the other core kept busy."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _likeliest(detected: list[tuple[str, float]], hint: str) -> str:
    """The detected language (Whisper's ``("<|zh|>", p)`` pairs, likeliest first); with a
    hint, the likeliest among the hint's languages (Chinese for Han words, English for the
    others): a stop word is too short to tell its language by, and Whisper took espeak's
    "停下" for Thai.

    >>> pairs = [("<|th|>", 0.4), ("<|zh|>", 0.3), ("<|en|>", 0.2)]
    >>> _likeliest(pairs, ""), _likeliest(pairs, "stop, 停下"), _likeliest(pairs, "stop")
    ('th', 'zh', 'en')
    """
    codes = [token[2:-2] for token, _ in detected]  # "<|zh|>" -> "zh"
    words = [w.strip() for w in hint.split(",") if w.strip()]
    among = {"zh" if any(is_han(c) for c in w) else "en" for w in words}
    return next((code for code in codes if code in among), codes[0])


def _prompt(language: str | None, hint: str) -> str:
    """The decoder's prompt: the Simplified Chinese one for Chinese (detected or set; with
    faster-whisper's own loop also while undetected: auto-detected English is decided before
    the prompt, so it cannot sway the language), then the hint's words in the language's
    script (others would pull the decoder into their script).

    >>> _prompt("en", "stop, wait, 停")
    'Stop. Wait.'
    >>> _prompt("zh", "stop, 停下")
    '以下是普通话的句子。 停下。'
    """
    zh = language == "zh"
    words = [w.strip() for w in hint.split(",") if w.strip()]
    words = [w for w in words if any(is_han(c) for c in w) == zh]
    said = "".join(f"{w}。" for w in words) if zh else " ".join(f"{w.capitalize()}." for w in words)
    return " ".join(p for p in (ZH_PROMPT if zh or language is None else "", said) if p)


def create(settings: STTSettings, progress: whisper_model.Progress | None = None) -> FasterWhisper:
    return FasterWhisper(settings, progress)


def checks(settings: STTSettings) -> Iterator[Check]:
    """Is the recognizer installed, and is its model present and intact?"""
    try:
        require("faster_whisper", "faster-whisper")
    except ListenError as exc:
        yield Check("speech recognition", False, "faster-whisper is not installed", _fix(exc))
        return
    if settings.model != "base":
        try:
            path = model_path(settings)
        except ConfigError as exc:
            yield Check("recognition model", False, str(exc), "set stt.model: base")
            return
        yield Check("recognition model", True, f"CTranslate2 Whisper at {path}")
        return
    try:
        path = whisper_model.ensure()
    except ListenError as exc:
        yield Check("recognition model", False, str(exc).split(":")[0], whisper_model.FIX)
        return
    problem = whisper_model.verify(path)
    if problem:
        yield Check(
            "recognition model", False, f"Whisper base at {path}: {problem}", f"rm -r {path}"
        )
    else:
        yield Check("recognition model", True, f"Whisper base, verified ({path})")


def _languages() -> tuple[str, ...]:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return tuple(_LANGUAGE_CODES)


def _fix(exc: Exception) -> str:
    return str(exc).rsplit(": ", 1)[-1]
