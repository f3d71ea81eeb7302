"""Fake Ollama/OpenAI servers on 127.0.0.1 speaking the exact wire formats (in progress)."""
