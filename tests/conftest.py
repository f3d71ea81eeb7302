"""Shared fixtures: fake model servers (tests/fakeservers.py) and the audio sink (tests/audio_sink.py)."""

pytest_plugins = ["tests.fakeservers", "tests.audio_sink"]
