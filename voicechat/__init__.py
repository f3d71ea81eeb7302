"""voicechat: speak an LLM's reply while it is still being generated."""

__version__ = "0.1.0"
