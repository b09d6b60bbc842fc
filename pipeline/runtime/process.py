"""Child processes that die with their parent (the embedded broker, the demo's worker); a stop that cannot hang.  *shell*

A flowmon process that is SIGKILLed (OOM killer, ``kill -9``, a crashed terminal) gets no
chance to stop what it started; without help its embedded Tansu broker would keep
running, holding its port and memory. :func:`die_with_parent` is a ``preexec_fn`` for
``subprocess.Popen`` that asks Linux to send the child SIGKILL when the parent goes
(``prctl(PR_SET_PDEATHSIG)``), and exits at once if the parent is already gone.

Linux delivers the signal when the *thread* that started the child exits: start such
children from a thread that lives as long as the process (the main thread, as flowmon
does). On other systems it does nothing.

A worker asked to stop (SIGTERM, Ctrl-C) stops cleanly: it finishes its batch, commits and
leaves its groups. When the broker no longer answers, that never ends: aiokafka retries its
commit and its coordinator lookup for ever (measured: a worker whose broker was gone was
still running a minute after SIGTERM, ~125 log lines a second). :func:`exit_after` is the
deadline: a daemon thread that, ``grace_s`` seconds after the stop began, says so in one
line and ends the process as a crash would (``os._exit``). Nothing is lost by it: delivery is
at least once, so what the worker had not committed is read again by the next owner.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from pipeline.errors import STOP_TIMED_OUT

__all__ = ["die_with_parent", "exit_after", "PR_SET_PDEATHSIG", "STOP_TIMED_OUT"]

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


def exit_after(grace_s: float, what: str, out: TextIO | None = None,
               _exit: Callable[[int], object] = os._exit) -> threading.Timer:
    """Start the deadline of a stop: unless the process has exited within ``grace_s`` seconds, print one
    line to ``out`` (stderr) and end it with :data:`STOP_TIMED_OUT`. ``what``: the process, for the line.
    Returns the timer (``cancel()`` it if the stop is called off).

    >>> import io
    >>> out, codes = io.StringIO(), []
    >>> exit_after(0.01, "worker 7", out, codes.append).join()
    >>> codes, out.getvalue()       # doctest: +ELLIPSIS
    ([75], 'worker 7 did not stop within 0.01 s ... the next owner of its partitions reads again what it had not committed\\n')
    """

    def expire() -> None:
        stream = out if out is not None else sys.stderr
        try:
            stream.write(f"{what} did not stop within {grace_s:g} s (a broker or ClickHouse it waits for does not "
                         f"answer): exiting now; the next owner of its partitions reads again what it had not "
                         f"committed\n")
            stream.flush()
        finally:
            _exit(STOP_TIMED_OUT)

    timer = threading.Timer(grace_s, expire)
    timer.daemon = True
    timer.start()
    return timer
