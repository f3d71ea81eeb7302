"""The exception tree; each error carries a one-line message that says how to fix it.

::

    VoicechatError                      exit 1 unless a subclass says otherwise
     +-- ConfigError                    2  bad profile, bad option, bad input
     +-- BackendError                   talking to the model server failed
     |    +-- BackendUnreachable        3  nothing listens at the base URL
     |    +-- ModelNotFound             4  the server does not have the model
     |    +-- AuthFailed                5  401/403, or the API key variable is unset
     |    +-- EndpointNotFound          6  plain 404: the base URL is wrong (missing /v1?)
     |    +-- ServerError               7  429, 5xx, or a request the server refused
     |    +-- BackendTimeout            8  connect or read timeout
     |    +-- StreamBroken              9  the reply stopped early: dropped connection,
     |         |                           error line mid-stream, empty body
     |         +-- EmptyReply           9  the reply ended as it should, without any text
     +-- SpeechError                    13 `say` could not play or save; elsewhere never
                                           fatal: the CLI warns and goes on as text
     +-- ModelError                     10 a model file could not be fetched: offline and not
                                           cached, network down, corrupt download, disk full
     +-- ListenError                    11 speech input cannot run: no microphone, the
          |                                [listen] extra or the recognition model missing
          +-- NothingHeard              12 only silence (or noise) before the time ran out

Backends raise these (translated once, where the wire is read); only the CLI maps them
to messages on stderr and exit codes.
"""

from __future__ import annotations


class VoicechatError(Exception):
    """Base of every error voicechat reports to the user."""

    exit_code = 1


class ConfigError(VoicechatError):
    """A profile or command-line value is wrong; the message names the file/key/option."""

    exit_code = 2


class BackendError(VoicechatError):
    """The model server could not give a (complete) reply."""

    exit_code = 7


class BackendUnreachable(BackendError):
    exit_code = 3


class ModelNotFound(BackendError):
    exit_code = 4


class AuthFailed(BackendError):
    exit_code = 5


class EndpointNotFound(BackendError):
    exit_code = 6


class ServerError(BackendError):
    exit_code = 7


class BackendTimeout(BackendError):
    exit_code = 8


class StreamBroken(BackendError):
    """The stream ended early; the text received so far has been shown."""

    exit_code = 9


class EmptyReply(StreamBroken):
    """The reply ended with a finish reason but no text (nothing, or only whitespace): a
    damaged model, or a server that answers nothing. Every backend's `Reply` checks it."""

    def __init__(self, message: str, finish: str) -> None:
        super().__init__(message)
        self.finish = finish
        """The finish reason the reply ended with (``stop``, ``length``, ...)."""


class SpeechError(VoicechatError):
    """TTS or audio output is unavailable or failed; the reply continues as text (only
    `voicechat say`, whose one job is speech, fails with it)."""

    exit_code = 13


class ModelError(VoicechatError):
    """A model or voice file could not be downloaded or failed verification (models.py)."""

    exit_code = 10


class ListenError(VoicechatError):
    """Speech input (microphone, VAD, recognizer) cannot run; the message says the fix."""

    exit_code = 11


class NothingHeard(ListenError):
    """Listening ended without an utterance (silence, or only noise)."""

    exit_code = 12


class OutputError(VoicechatError):
    """stdout cannot be written (a full disk, closed): the reply has nowhere to go."""

    exit_code = 14


EXIT_INTERRUPTED = 130
