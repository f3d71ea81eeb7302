"""The environment a voicechat child process runs in during the tests."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def clean_env(
    tmp_path: Path, base: Mapping[str, str] | None = None, **extra: str
) -> dict[str, str]:
    """The user's environment (or ``base``, e.g. a virtual microphone's) without variables
    that would move the profile, with config and state folders of the test's own."""
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if k not in ("OLLAMA_HOST", "OPENAI_BASE_URL", "OPENAI_API_KEY", "VOICECHAT_PROFILE")
        and not k.startswith("PYTEST")
    }
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_STATE_HOME=str(tmp_path / "state"))
    env.update(extra)
    return env
