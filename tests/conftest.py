"""Shared fixtures: fake model servers (server_fixtures.py), the audio sink (audio_sink.py),
a local Hugging Face hub (hub.py), the virtual microphone with real speech (speech.py) and
a disk that fills up (disk.py)."""

pytest_plugins = [
    "tests.server_fixtures",
    "tests.audio_sink",
    "tests.hub",
    "tests.speech",
    "tests.echo_fixtures",
    "tests.disk",
]
