"""libespeak-ng driven synchronously through ctypes: the Linux path of the pyttsx3 engine.

On Linux pyttsx3 is a thin driver over this same library, and its driver is where the
bugs are (platform notes): asynchronous "retrieval" mode calls back on espeak's thread,
``runAndWait`` polls every 10 ms and can return early, state leaks between calls, every
file save prints on stdout, and in 2.99 ``setProperty('rate')`` is not applied reliably
(measured: the same duration at 120 and 300 wpm). In ``AUDIO_OUTPUT_SYNCHRONOUS`` mode
``espeak_Synth`` returns when the callback has received every sample: ~1.5 ms for a short
sentence here instead of 10-20 ms, no files, no threads, no stdout.

espeak keeps one global state per process, so every call holds `_LOCK`.
"""

from __future__ import annotations

import ctypes
import threading
from ctypes import POINTER, Structure, c_char_p, c_int, c_short, c_ubyte, c_uint, c_void_p
from typing import Any

from voicechat.errors import SpeechError

ESPEAK_HINT = "install espeak-ng's library: apt-get install libespeak-ng1"
_LIBRARIES = ("libespeak-ng.so.1", "libespeak-ng.so")
_SYNCHRONOUS = 2  # AUDIO_OUTPUT_SYNCHRONOUS
_RATE, _VOLUME = 1, 2  # espeakRATE, espeakVOLUME
_CHARS_UTF8 = 1
_LOCK = threading.RLock()


class _VoiceStruct(Structure):
    _fields_ = [
        ("name", c_char_p),
        ("languages", c_void_p),  # (priority byte, language, NUL)*, NUL: read by address
        ("identifier", c_char_p),
        ("gender", c_ubyte),
        ("age", c_ubyte),
        ("variant", c_ubyte),
        ("xx1", c_ubyte),
        ("score", c_int),
        ("spare", c_void_p),
    ]


_Callback = ctypes.CFUNCTYPE(c_int, POINTER(c_short), c_int, c_void_p)


class Espeak:
    """The process's espeak library, initialized for synchronous synthesis."""

    _instance: Espeak | None = None

    @classmethod
    def get(cls) -> Espeak:
        with _LOCK:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self) -> None:
        self.lib = self._load()
        lib = self.lib
        lib.espeak_Initialize.argtypes = [c_int, c_int, c_char_p, c_int]
        lib.espeak_Initialize.restype = c_int
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetParameter.argtypes = [c_int, c_int, c_int]
        lib.espeak_SetParameter.restype = c_int
        lib.espeak_SetVoiceByName.argtypes = [c_char_p]
        lib.espeak_SetVoiceByName.restype = c_int
        lib.espeak_Synth.argtypes = [c_char_p, ctypes.c_size_t, c_uint, c_int, c_uint, c_uint]
        lib.espeak_Synth.argtypes += [POINTER(c_uint), c_void_p]
        lib.espeak_Synth.restype = c_int
        lib.espeak_ListVoices.argtypes = [c_void_p]
        lib.espeak_ListVoices.restype = POINTER(POINTER(_VoiceStruct))
        self.sample_rate = lib.espeak_Initialize(_SYNCHRONOUS, 0, None, 0)
        if self.sample_rate <= 0:
            raise SpeechError(f"espeak-ng could not start (no voice data?): {ESPEAK_HINT}")
        self._pieces: list[bytes] = []
        self._callback = _Callback(self._on_samples)  # kept referenced: C holds it
        lib.espeak_SetSynthCallback(self._callback)

    @staticmethod
    def _load() -> ctypes.CDLL:
        errors = []
        for name in _LIBRARIES:
            try:
                return ctypes.CDLL(name)
            except OSError as exc:
                errors.append(str(exc))
        raise SpeechError(f"espeak-ng library not found ({errors[0]}): {ESPEAK_HINT}")

    def _on_samples(self, wav: Any, count: int, events: Any) -> int:
        if count > 0:
            self._pieces.append(ctypes.string_at(wav, count * 2))
        return 0

    def voices(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(identifier, name, languages) of every installed voice."""
        with _LOCK:
            found = []
            table = self.lib.espeak_ListVoices(None)
            i = 0
            while table[i]:
                voice = table[i].contents
                found.append(
                    (
                        (voice.identifier or b"").decode(errors="replace"),
                        (voice.name or b"").decode(errors="replace"),
                        _languages(voice.languages),
                    )
                )
                i += 1
            return found

    def synthesize(self, text: str, voice: str, rate: int, volume: float) -> bytes:
        """Mono int16 PCM at `sample_rate` for ``text``, spoken by ``voice``."""
        data = text.encode("utf-8")
        with _LOCK:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise SpeechError(f"espeak-ng has no voice {voice!r}")
            # parameters after the voice: loading a voice resets them
            self.lib.espeak_SetParameter(_RATE, int(rate), 0)
            self.lib.espeak_SetParameter(_VOLUME, round(volume * 100), 0)
            self._pieces = []
            status = self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, _CHARS_UTF8, None, None)
            pieces, self._pieces = self._pieces, []
        if status != 0:
            raise SpeechError(f"espeak-ng failed to synthesize (error {status})")
        return b"".join(pieces)


def _languages(address: int | None) -> tuple[str, ...]:
    """Decode espeak's packed language list: (priority byte, name, NUL)* then NUL."""
    if not address:
        return ()
    out = []
    offset = 0
    while True:
        priority = ctypes.string_at(address + offset, 1)
        if priority == b"\0":
            break
        name = ctypes.string_at(address + offset + 1)
        out.append(name.decode(errors="replace"))
        offset += 2 + len(name)
    return tuple(out)
