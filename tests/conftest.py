"""Shared fixtures: fake model servers (fakeservers.py) and the audio sink (audio_sink.py)."""

pytest_plugins = ["tests.fakeservers", "tests.audio_sink"]
