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

A write the worker's producer could not deliver (it gave up retrying, after Faust's
``producer_request_timeout``, or the broker refused it: a message above the topic's
``max.message.bytes``, a missing permission) must not be followed by a commit of the offsets
it was part of: Faust's commit flushes the producer, but a failed delivery does not stop it,
and a window state that never reached the state topic, under offsets committed past it,
would be lost at the next restore. :func:`exit_on_failed_write`, a done-callback on every
delivery future, ends the process at once, with one line and :data:`WRITE_FAILED`. A
future's callbacks run in the order they were added, and it is added when the write is sent,
before anything waits on it, so it runs before the commit's flush (or any ``gather``) returns.

A batch that fails part way (an exception in the aggregate agent: a state above the producer's
``max_request_size``, which aiokafka refuses before sending, or a bug) must not be committed either:
Faust's ``take_events`` acks a batch's events in its ``finally`` even when the agent's body raised,
and the agent is then restarted on the messages after it. The agent takes the events out of the
acknowledgements and :func:`exit_on_failed_batch` ends the process with one line and
:data:`BATCH_FAILED`; the next start reads the batch again from the stored state.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from pipeline.errors import BATCH_FAILED, STOP_TIMED_OUT, WRITE_FAILED, first_line

__all__ = ["die_with_parent", "exit_after", "exit_on_failed_write", "exit_on_failed_batch", "PR_SET_PDEATHSIG",
           "STOP_TIMED_OUT", "WRITE_FAILED", "BATCH_FAILED"]

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


def exit_on_failed_write(topic: str, fut: asyncio.Future, out: TextIO | None = None,
                         _exit: Callable[[int], object] = os._exit) -> None:
    """A delivery future's done-callback (``functools.partial(exit_on_failed_write, topic)``): when the write
    failed, print one line to ``out`` (stderr) and end the process with :data:`WRITE_FAILED` before anything
    that waits on the write resumes. A delivered or cancelled write: nothing.

    >>> import io
    >>> loop, out, codes = asyncio.new_event_loop(), io.StringIO(), []
    >>> ok, bad = loop.create_future(), loop.create_future()
    >>> ok.set_result(None); exit_on_failed_write("t", ok, out, codes.append); codes
    []
    >>> bad.set_exception(ValueError("[Error 10] too large"))
    >>> exit_on_failed_write("flow-window-state-v1", bad, out, codes.append); codes
    [74]
    >>> print(out.getvalue(), end="")      # doctest: +ELLIPSIS
    a write to flow-window-state-v1 failed (ValueError: [Error 10] too large): exiting before ... not committed
    >>> loop.close()
    """
    if fut.cancelled() or (exc := fut.exception()) is None:
        return
    _say_and_exit(f"a write to {topic} failed ({_why(exc)}): exiting before anything commits past it; fix the cause "
                  f"(the broker, the topic's max.message.bytes or permissions) and start the worker again: it reads "
                  f"again what it had not committed", WRITE_FAILED, out, _exit)


def exit_on_failed_batch(stage: str, n: int, exc: BaseException, out: TextIO | None = None,
                         _exit: Callable[[int], object] = os._exit) -> None:
    """End the process with :data:`BATCH_FAILED` after ``stage`` failed part way through a batch of ``n``
    messages with ``exc`` (its caller took the batch out of the acknowledgements and logged the traceback):
    one line to ``out`` (stderr) first.

    >>> import io
    >>> out, codes = io.StringIO(), []
    >>> exit_on_failed_batch("aggregate", 12, ValueError("boom"), out, codes.append); codes
    [70]
    >>> print(out.getvalue(), end="")      # doctest: +ELLIPSIS
    the aggregate stage failed on a batch of 12 messages (ValueError: boom): exiting before anything ... the log
    """
    _say_and_exit(f"the {stage} stage failed on a batch of {n} messages ({_why(exc)}): exiting before anything "
                  f"commits past it; the next start reads the batch again. If it fails again, the traceback is in the "
                  f"log", BATCH_FAILED, out, _exit)


def _why(exc: BaseException) -> str:
    """``exc`` in a few words: its type and first line (the type once)."""
    name, text = type(exc).__name__, first_line(exc)
    return text if name in text else f"{name}: {text}"


def _say_and_exit(line: str, code: int, out: TextIO | None, _exit: Callable[[int], object]) -> None:
    """Print ``line`` to ``out`` (stderr), then end the process with ``code``, whatever the print does."""
    stream = out if out is not None else sys.stderr
    try:
        stream.write(line + "\n")
        stream.flush()
    finally:
        _exit(code)
