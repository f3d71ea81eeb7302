"""Ending pseudo-terminal children (pexpect) with the time a loaded machine needs.

pexpect's ``close()`` waits 0.1 s after closing the pty, then sends SIGHUP, SIGCONT, SIGINT and
(forced) SIGKILL 0.1 s apart, and raises "Could not terminate the child" when the child has not
been reaped 0.1 s after the last one. A child that is exiting cleanly (writing its history,
joining its threads, unmapping a few hundred MB) on a busy 2-core CI machine can take longer: CI
failed a passing test that way, in its teardown.
"""

from __future__ import annotations

import time

import pexpect

EXIT_S = 30.0


def reap(child: pexpect.spawn, timeout: float = EXIT_S) -> None:
    """Wait for a child that is ending (its EOF seen) to exit, then close it.

    Afterwards ``child.exitstatus`` / ``child.signalstatus`` say how it ended. A child still
    running after ``timeout`` is ended by ``close()``'s signals, which the caller's assertion on
    its exit status then reports.
    """
    deadline = time.monotonic() + timeout
    while child.isalive() and time.monotonic() < deadline:
        time.sleep(0.02)
    kill(child)


def kill(child: pexpect.spawn) -> None:
    """End a child in any state, as closing its terminal window would, and reap it."""
    if child.closed:
        return
    try:
        child.close(force=True)  # SIGHUP first, as a closed window; SIGKILL last
    except pexpect.ExceptionPexpect:
        child.wait()  # SIGKILL was sent: it ends, only later than pexpect allows for
        child.close(force=True)
