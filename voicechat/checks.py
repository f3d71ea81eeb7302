"""A doctor row: every component (backend kind, speech engine, recognizer) reports its own.

`voicechat doctor` only runs what the components yield; each kind module knows its checks
and its fixes, so the doctor never re-implements a protocol or repeats an error's wording.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """One row of the doctor's report."""

    name: str
    """What was checked (``server``, ``model``, ``voice (zh)``, ...)."""
    ok: bool | None
    """True: works; False: broken; None: skipped or not applicable."""
    detail: str
    """What was found, in one line."""
    fix: str = ""
    """For a failing check: the command or setting that fixes it."""
