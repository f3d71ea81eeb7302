"""A private PulseAudio null sink, and a recorder of its monitor that time-stamps what was heard.

The null sink is a real, paced audio device (unlike ALSA's null device, which swallows a
second of audio in milliseconds), so onsets and gaps measured on its monitor are real.
PortAudio reaches it through ALSA's ``pulse`` plugin once ``PULSE_SERVER`` points at it.

Usable from pytest (fixtures ``null_sink``, ``monitor``) and from scripts::

    with NullSink.start() as sink, Recorder(sink.env) as rec:   # rec records testsink.monitor
        ...play something with sink.env in the environment...
    rec.onset()          # time.monotonic() of the first audible sample
    rec.sounds()         # [(start_s, end_s), ...] on the monotonic clock
    rec.gaps()           # silences between sounds, in seconds

``pulseaudio``/``pactl``/``parec`` missing: the fixtures skip with the apt-get line to fix it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

RATE = 48000
"""The monitor's recording rate (the sink's own rate: no resampling in the measurement)."""
SINK = "testsink"
THRESHOLD = 300
"""Peak amplitude (int16) above which a 5 ms window counts as sound (about -40 dBFS)."""
WINDOW_S = 0.005
INSTALL_HINT = "apt-get install pulseaudio pulseaudio-utils libasound2-plugins"

_CONFIG = f"""\
load-module module-native-protocol-unix auth-anonymous=1
load-module module-null-sink sink_name={SINK} rate={RATE} channels=2
set-default-sink {SINK}
set-default-source {SINK}.monitor
"""


def missing_tools() -> list[str]:
    """The PulseAudio programs this module needs that are not installed."""
    return [tool for tool in ("pulseaudio", "pactl", "parec") if shutil.which(tool) is None]


@dataclass
class NullSink:
    """A private PulseAudio server whose default sink is a null sink named ``testsink``."""

    root: Path
    """Scratch folder holding the runtime dir (socket) and the server's HOME."""
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    """Environment for clients (``PULSE_SERVER`` set); pass it to subprocesses."""

    @property
    def server(self) -> str:
        return self.env["PULSE_SERVER"]

    @classmethod
    def start(cls, timeout: float = 10.0) -> NullSink:
        """Start the server and wait until ``pactl info`` answers."""
        missing = missing_tools()
        if missing:
            raise RuntimeError(f"{', '.join(missing)} not installed: {INSTALL_HINT}")
        root = Path(tempfile.mkdtemp(prefix="voicechat-pulse-"))
        runtime, home = root / "run", root / "home"
        runtime.mkdir(mode=0o700)
        home.mkdir()
        (root / "sink.pa").write_text(_CONFIG)
        env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), HOME=str(home))
        env.pop("PULSE_SERVER", None)
        client_env = dict(env, PULSE_SERVER=f"unix:{runtime}/pulse/native")
        sink = cls(root, _spawn(root, env), client_env)
        try:
            sink._wait_up(timeout)
        except RuntimeError:
            sink.stop()
            raise
        return sink

    def _wait_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr
                err = stderr.read().decode(errors="replace") if stderr else ""
                raise RuntimeError(f"pulseaudio exited at start: {err.strip()[-300:]}")
            if self.answers():
                return
            time.sleep(0.05)
        raise RuntimeError(f"pulseaudio did not answer `pactl info` within {timeout} s")

    def kill(self) -> None:
        """Kill the server (SIGKILL, as a crash would): clients lose it mid-stream."""
        self.process.kill()
        self.process.wait(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()

    def restart(self, timeout: float = 10.0) -> None:
        """Start the server again on the same socket (after `kill`)."""
        env = {k: v for k, v in self.env.items() if k != "PULSE_SERVER"}
        self.process = _spawn(self.root, env)
        self._wait_up(timeout)

    def answers(self) -> bool:
        """True when the server is up (``pactl info`` succeeds against it)."""
        result = subprocess.run(
            ["pactl", "info"], env=self.env, capture_output=True, timeout=5, check=False
        )
        return result.returncode == 0

    def stop(self) -> None:
        """Stop the server by its PID and remove the scratch folder."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> NullSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(root: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "pulseaudio",
            "--daemonize=no",
            "-n",
            "-F",
            str(root / "sink.pa"),
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            "--log-target=stderr",
            "--log-level=error",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@dataclass
class Recorder:
    """Records ``testsink.monitor`` (or ``source``) with parec, time-stamping each block as it
    arrives.

    A sample's time is its block's arrival time minus the samples that follow it in the
    block, so onsets are located to about the recorder's latency (~5 ms).
    """

    env: dict[str, str]
    latency_ms: int = 5
    source: str = f"{SINK}.monitor"
    """What is recorded: the speaker's monitor, or the virtual microphone's (``micsink.monitor``:
    when the user's speech reached the microphone)."""
    _blocks: list[tuple[float, bytes]] = field(default_factory=list)
    _process: subprocess.Popen[bytes] | None = None
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Recorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start recording; returns once the first block arrived (the monitor is live)."""
        self._process = subprocess.Popen(
            [
                "parec",
                "-d",
                self.source,
                "--raw",
                "--format=s16le",
                f"--rate={RATE}",
                "--channels=1",
                f"--latency-msec={self.latency_ms}",
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._thread = threading.Thread(target=self._read, name="parec-reader", daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            self.stop()
            raise RuntimeError(f"parec delivered nothing from {self.source} within 5 s")

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()
        while True:
            data = os.read(fd, 4096)
            if not data:
                return
            self._blocks.append((time.monotonic(), data))
            self._ready.set()

    def stop(self) -> None:
        """Stop parec (by its PID) and the reader thread."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()

    def reset(self) -> None:
        """Forget what was recorded so far (the recording itself goes on)."""
        self._blocks = []

    def wait_quiet(self, quiet_s: float = 0.3, timeout: float = 30.0) -> bool:
        """Wait until the last ``quiet_s`` seconds recorded were silent (playback ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.05)
            sounds = self.sounds()
            if sounds and time.monotonic() - sounds[-1][1] >= quiet_s:
                return True
        return False

    # --- analysis -------------------------------------------------------------------------

    def _timeline(self) -> tuple[Any, Any]:
        """All samples and each one's time on the monotonic clock."""
        import numpy as np

        blocks = list(self._blocks)
        data = b"".join(chunk for _, chunk in blocks)
        samples = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")
        if not blocks:
            return samples, np.zeros(0)
        # the clock of the last sample of each block is its arrival; interpolate inside
        ends = np.cumsum([len(chunk) // 2 for _, chunk in blocks])
        arrivals = np.array([t for t, _ in blocks])
        # smooth the arrival clock: the earliest consistent estimate of the first sample
        start = float(np.min(arrivals - ends / RATE))
        times = start + (np.arange(len(samples)) + 1) / RATE
        return samples, times

    def sounds(self, threshold: int = THRESHOLD, min_gap: float = 0.0) -> list[tuple[float, float]]:
        """Stretches of sound as (start, end) monotonic times; gaps <= ``min_gap`` merged."""
        import numpy as np

        samples, times = self._timeline()
        win = int(RATE * WINDOW_S)
        n = len(samples) // win
        if n == 0:
            return []
        peaks = np.abs(samples[: n * win].astype(np.int32)).reshape(n, win).max(axis=1)
        loud = peaks > threshold
        result: list[tuple[float, float]] = []
        i = 0
        while i < n:
            if not loud[i]:
                i += 1
                continue
            j = i
            while j < n and loud[j]:
                j += 1
            first = i * win + int(np.argmax(np.abs(samples[i * win : (i + 1) * win]) > threshold))
            start, end = float(times[first]), float(times[j * win - 1])
            if result and start - result[-1][1] <= min_gap:
                result[-1] = (result[-1][0], end)
            else:
                result.append((start, end))
            i = j
        return result

    def onset(self, threshold: int = THRESHOLD) -> float | None:
        """Monotonic time of the first audible sample, or ``None`` if nothing was heard."""
        sounds = self.sounds(threshold)
        return sounds[0][0] if sounds else None

    def end(self, threshold: int = THRESHOLD) -> float | None:
        """Monotonic time of the last audible sample, or ``None`` if nothing was heard."""
        import numpy as np

        samples, times = self._timeline()
        loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
        return float(times[loud[-1]]) if len(loud) else None

    def gaps(self, threshold: int = THRESHOLD) -> list[float]:
        """Silences between consecutive sounds, in seconds."""
        sounds = self.sounds(threshold)
        return [b[0] - a[1] for a, b in itertools.pairwise(sounds)]

    def audible_seconds(self, threshold: int = THRESHOLD) -> float:
        """Seconds from the first to the last audible sample."""
        sounds = self.sounds(threshold)
        return sounds[-1][1] - sounds[0][0] if sounds else 0.0


# --- pytest fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def null_sink() -> Iterator[NullSink]:
    """The session's null sink; ``PULSE_SERVER`` is set for this process while it runs."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"audio tests need {', '.join(missing)}: {INSTALL_HINT}")
    sink = NullSink.start()
    before = os.environ.get("PULSE_SERVER")
    os.environ["PULSE_SERVER"] = sink.server
    try:
        yield sink
    finally:
        if before is None:
            os.environ.pop("PULSE_SERVER", None)
        else:
            os.environ["PULSE_SERVER"] = before
        sink.stop()


@pytest.fixture(scope="session")
def _session_recorder(null_sink: NullSink) -> Iterator[Recorder]:
    # one parec for the session: parec takes ~2 s to deliver its first block
    with Recorder(null_sink.env) as recorder:
        yield recorder


@pytest.fixture
def monitor(_session_recorder: Recorder) -> Recorder:
    """The recorder of the null sink's monitor, holding only what this test played."""
    _session_recorder.reset()
    return _session_recorder
