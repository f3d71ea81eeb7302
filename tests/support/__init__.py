"""What the tests run on, kept apart from the tests themselves (scripts/bench_*.py use it too).

- ``fakeservers``: fake Ollama and OpenAI-compatible servers speaking the exact wire formats;
  ``server_fixtures``: their pytest fixtures; ``hostile``: a server that misbehaves on demand.
- ``hub``: a local stand-in for the Hugging Face hub.
- ``fakes``: in-process fakes of a backend and of speech.
- ``cli``: THE CLI runner (``python -m voicechat ...`` in a child process or on a pty);
  ``environ``: the clean environment it runs in; ``ptys``: ending pty children.
- ``audio_sink``: the private PulseAudio null sink and a recorder of what it played;
  ``speech``: the virtual microphone and real speech to play into it; ``echo_fixtures``:
  loudspeaker echo into that microphone; ``bargein``: one reply played while barge-in watches.
- ``disk``: a disk that really fills up.

A test that uses the private PulseAudio server (fixture ``null_sink``, and through it
``monitor``, ``virtual_mic``, ``loopback``) is marked ``audio`` by tests/conftest.py.
"""
