"""Devices and signal, below every conversation: playback, the microphone, echo cancellation,
sample clock, resampling and levels, WAV files, device names. Nothing here imports the
conversation (sessions, questions, backends).

Speech in runs at one format everywhere, fixed here (numpy-free, so the recognizer registry
can name it without loading numpy).
"""

RATE = 16000
"""Speech in (microphone, files, VAD, recognizers): mono float32 at this rate."""
FRAME = 512
"""Samples per microphone frame (32 ms): the frame Silero's VAD takes at `RATE`."""
