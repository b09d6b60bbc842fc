"""Child processes that die with their parent (the embedded broker, the demo's worker).  *shell*

A flowmon process that is SIGKILLed (OOM killer, ``kill -9``, a crashed terminal) gets no
chance to stop what it started; without help its embedded Tansu broker would keep
running, holding its port and memory. :func:`die_with_parent` is a ``preexec_fn`` for
``subprocess.Popen`` that asks Linux to send the child SIGKILL when the parent goes
(``prctl(PR_SET_PDEATHSIG)``), and exits at once if the parent is already gone.

Linux delivers the signal when the *thread* that started the child exits: start such
children from a thread that lives as long as the process (the main thread, as flowmon
does). On other systems it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["die_with_parent", "PR_SET_PDEATHSIG"]

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when this process dies (None off Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:  # runs in the child, between fork and exec
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec
