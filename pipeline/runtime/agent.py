"""Shell of ``flowmon agent``: the interval clock, the kernel's destroy notifications, and the sender
that drains the spool to the reports topic.

The core (:class:`pipeline.agent.host.HostAgent`) closes each interval into the on-disk
spool; :class:`Sender` sends spooled intervals in order, one Kafka message per report,
keyed by the instance id (one partition per agent: its reports stay in order), with
``acks=all``, aiokafka's retries, and the idempotent producer when the broker grants
producer ids. A spool file is removed only once the broker acknowledged every message
in it. While the broker is unreachable, intervals accumulate in the spool (bounded) and
the sender retries with backoff (0.5 s doubling to 30 s), saying so in one log line per
outage; when the broker answers again it drains them oldest first. A message re-sent
after an unacknowledged attempt carries the same ``report_id``: the pipeline counts it
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from collections.abc import Callable
from typing import Any

from pipeline.agent.host import HostAgent, Interval
from pipeline.runtime import kafka

__all__ = ["Sender", "run_agent"]

log = logging.getLogger("flowmon.agent")

#: destroy notifications are read in batches, this long after the first of a batch arrives
NOTIFICATION_BATCH_S = 0.2
#: how long the first look at the broker and a producer's start may take (a slow TLS or SASL link)
START_TIMEOUT_S = 20.0


class Sender:
    """Drains a :class:`~pipeline.agent.spool.Spool` to ``topic`` (see the module doc)."""

    def __init__(self, conn: kafka.Connection, topic: str, core: HostAgent, backoff_max_s: float = 30.0,
                 timeout_s: float = 5.0) -> None:
        self.conn = conn
        self.topic = topic
        self.core = core
        self.key = core.me.instance.encode()
        self.backoff_max_s = backoff_max_s
        self.timeout_s = timeout_s
        self.wake = asyncio.Event()
        self.sent_messages = 0
        self.sent_files = 0
        self.outage_since: float | None = None
        self.idempotent: bool | None = None
        self._producer: Any = None
        self._stopping: set[asyncio.Task] = set()  # producers given up, still stopping (``_reset``)

    async def _ensure(self) -> Any:
        if self._producer is None:
            if self.idempotent is None:
                # asked until the broker answers: an outage at the agent's start must not turn idempotence off
                # for good. A broker silent for the delivery timeout is an outage, said then; the look itself
                # may take up to START_TIMEOUT_S (a slow link)
                look = asyncio.ensure_future(kafka.grants_producer_ids(self.conn, timeout_s=START_TIMEOUT_S))
                try:
                    if not (await asyncio.wait({look}, timeout=self.timeout_s))[0]:
                        self._outage(f"no answer within {self.timeout_s:g} s")
                    self.idempotent = await look
                finally:
                    if not look.done():  # this attempt was cancelled (the agent stops): let the look close its client
                        look.cancel()
                        await asyncio.wait({look}, timeout=2.0)
            p = kafka.producer(self.conn, client_id=f"flowmon-agent-{self.core.me.instance}", acks="all",
                               enable_idempotence=self.idempotent, request_timeout_ms=15_000,
                               max_request_size=max(1 << 20, self.core.max_bytes + 4096), linger_ms=5)
            try:
                await asyncio.wait_for(p.start(), START_TIMEOUT_S)
            except BaseException:
                with contextlib.suppress(Exception):
                    await p.stop()
                raise
            self._producer = p
        return self._producer

    async def _reset(self) -> None:
        """Give the producer up (after a failed delivery, and at the end); what it held is still spooled.

        Its ``stop()`` first waits for what it holds to be delivered or to time out: against a broker
        that stops answering without closing its connections (frozen, or a partition that drops its
        packets), the whole request timeout. Cancelled before that, it would leave the producer's tasks
        and connections running for good (and asyncio later logs them "destroyed but pending"). So the
        stop runs to its end as a task of its own, waited for 5 s here, and at the end by :meth:`close`."""
        p, self._producer = self._producer, None
        if p is not None:
            stopping = asyncio.create_task(p.stop(), name="flowmon-agent-producer-stop")
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopped)
            await asyncio.wait({stopping}, timeout=5.0)

    def _stopped(self, task: asyncio.Task) -> None:
        self._stopping.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("a producer given up stopped with %s", kafka.reason(task.exception()))

    async def drain_once(self) -> int:
        """Send every spooled interval, oldest first; returns the intervals sent. Raises on a delivery failure."""
        sent = 0
        for seq, messages in self.core.spool.pending():
            producer = await self._ensure()

            async def send_all() -> None:
                futures = [await producer.send(self.topic, m, key=self.key) for m in messages]
                await asyncio.gather(*futures)
            # a healthy broker acknowledges in milliseconds: beyond the timeout, say so and retry (same report_ids)
            await asyncio.wait_for(send_all(), self.timeout_s)
            self.core.spool.remove(seq)
            self.sent_messages += len(messages)
            self.sent_files += 1
            sent += 1
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                n = await self.drain_once()
                if self.outage_since is not None:
                    log.warning("broker %s answers again after %.0f s; spool drained (%d intervals this round)",
                                self.conn.bootstrap, time.monotonic() - self.outage_since, n)
                    self.outage_since = None
                backoff = 0.5
                self.wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 5.0)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any delivery failure (a timeout too): keep the spool, retry
                self._outage(f"no acknowledgement within {self.timeout_s:g} s"
                             if isinstance(e, asyncio.TimeoutError) else kafka.reason(e, self.conn))
                await self._reset()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(self.backoff_max_s, backoff * 2)

    def _outage(self, why: str) -> None:
        """Say, once per outage, that the broker cannot be reached and why."""
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            files, size = self.core.spool.size()
            log.warning("cannot deliver to %s (%s); reports stay in the spool (%d intervals, %d bytes) and are sent "
                        "when it answers", self.conn.bootstrap, why, files, size)

    async def close(self, drain_s: float = 5.0) -> None:
        """Try to send what is spooled for up to ``drain_s`` seconds, then stop the producer (the rest stays spooled)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.drain_once(), drain_s)
        await self._reset()
        if self._stopping:  # a producer given up during an outage: its stop ends within its request timeout
            await asyncio.wait(self._stopping, timeout=20.0)


def _boundary(now: float, interval_s: int) -> int:
    return int(math.floor(now / interval_s) * interval_s)


async def run_agent(core: HostAgent, conn: kafka.Connection, topic: str, interval_s: int,
                    on_interval: Callable[[Interval], None] | None = None,
                    stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``): close an interval at every multiple of ``interval_s``
    (the agent's clock), and at the stop a last, shorter one; send the spool throughout."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    events = core.kernel.subscribe() if hasattr(core.kernel, "subscribe") else None

    def on_readable() -> None:
        # wake once per batch, not once per closed connection: stop watching, drain the queue a little
        # later (the socket's 8 MB buffer holds ~10,000 closes a second meanwhile), then watch again
        loop.remove_reader(events.fileno())
        loop.call_later(NOTIFICATION_BATCH_S, drain)

    def drain() -> None:
        core.on_destroyed()
        if not stop.is_set():
            loop.add_reader(events.fileno(), on_readable)

    if events is not None:
        loop.add_reader(events.fileno(), on_readable)
    core.poll()  # connections open now are the base (or continue from the saved counters)
    sender = Sender(conn, topic, core)
    send_task = asyncio.create_task(sender.run(stop), name="flowmon-agent-sender")
    start = _boundary(time.time(), interval_s)
    try:
        while not stop.is_set():
            end = start + interval_s
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, end - time.time()))
            now = time.time()
            if stop.is_set():  # the last, shorter interval
                nxt, length = end, max(1, min(interval_s, int(round(now - start))))
            else:  # woken late (a suspended host): the deltas of the whole gap go in one report
                nxt = max(end, _boundary(now, interval_s))
                length = min(3600, nxt - start)
            iv = core.close_interval(start, length)
            sender.wake.set()
            if on_interval is not None:
                on_interval(iv)
            start = nxt
    finally:
        stop.set()
        if events is not None:
            loop.remove_reader(events.fileno())
        send_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await send_task
        await sender.close()
