"""Sound devices: the one place that imports sounddevice and reads device names.

PortAudio is a system library; sounddevice fails to import (``OSError``) without it. Every
user of a device (playback, the microphone, the doctor, `voicechat devices`) goes through
`sounddevice()`, so the fix is worded once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voicechat.errors import ListenError
from voicechat.redact import reason

PORTAUDIO_FIX = "apt-get install libportaudio2"
SOUNDDEVICE_FIX = "pip install sounddevice"


class NoSoundLibrary(ListenError):
    """sounddevice or PortAudio is missing; ``detail`` says which, ``fix`` how to install it.

    A `ListenError` (exit 11) where nothing translates it (`voicechat devices`): without
    PortAudio there is no microphone either; playback and the doctor turn it into their own
    warning or row."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(f"{detail}: {fix}")
        self.detail = detail
        self.fix = fix


def sounddevice() -> Any:
    """The sounddevice module, or `NoSoundLibrary` saying what is missing."""
    try:
        import sounddevice as sd
    except OSError:  # the module is there, the PortAudio library is not
        detail = "PortAudio library not found"  # what sounddevice says, every time
        raise NoSoundLibrary(detail, PORTAUDIO_FIX) from None
    except ImportError as exc:
        raise NoSoundLibrary(f"sounddevice is missing ({reason(exc)})", SOUNDDEVICE_FIX) from None
    return sd


def parse_device(device: str | int | None) -> int | str | None:
    """A device index given as text becomes an int; names stay names (sounddevice matches
    parts of names).

    >>> parse_device("3"), parse_device("USB Audio"), parse_device(""), parse_device(None)
    (3, 'USB Audio', None, None)
    """
    if device is None or device == "":
        return None
    if isinstance(device, int):
        return device
    return int(device) if device.strip().isdigit() else device


def list_devices() -> list[dict[str, Any]]:
    """Every PortAudio device with its index, name, channels and default rate."""
    sd = sounddevice()
    devices = []
    try:
        default_in, default_out = sd.default.device
    except Exception:
        default_in = default_out = -1
    for index, info in enumerate(sd.query_devices()):
        devices.append(
            {
                "index": index,
                "name": str(info["name"]),
                "inputs": int(info["max_input_channels"]),
                "outputs": int(info["max_output_channels"]),
                "rate": int(info["default_samplerate"]),
                "default_input": index == default_in,
                "default_output": index == default_out,
            }
        )
    return devices


def names(sd: Any, kind: str) -> list[str]:
    """The names of the devices with ``kind`` (``input`` or ``output``) channels."""
    key = f"max_{kind}_channels"
    try:
        return [str(d["name"]) for d in sd.query_devices() if d[key] > 0]
    except Exception:
        return []


@dataclass(frozen=True)
class DeviceProblem:
    """Why no output could be opened: the one wording used by playback and the doctor."""

    detail: str
    """What failed, with the library's reason."""
    fix: str
    """The command or setting that fixes it (the doctor's fix column)."""
    hint: str
    """A short form of the fix for a warning line."""

    @property
    def warning(self) -> str:
        return f"{self.detail}: {self.hint}" if self.hint else self.detail


def output_problem(device: Any, exc: BaseException, sd: Any) -> DeviceProblem:
    """Why output ``device`` (``None``: the default) cannot be opened, and what to do."""
    why = reason(exc)
    found = names(sd, "output")
    if not found:
        return DeviceProblem(
            f"no audio output device ({why})",
            "connect speakers or headphones, or start PulseAudio (pulseaudio --start); "
            "aplay -l lists the sound cards",
            "connect one or start PulseAudio",
        )
    shown = ", ".join(repr(n) for n in found)
    if device is not None:
        return DeviceProblem(
            f"tts.device {device!r} cannot be opened ({why})",
            f"set tts.device to one of: {shown}",
            f"output devices are {shown}",
        )
    return DeviceProblem(
        f"the default audio output cannot be opened ({why})",
        f"set tts.device to one of: {shown}",
        "",
    )
