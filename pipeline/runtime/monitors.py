"""Shell: the monitors topic (compacted, one partition; key = name, value = definition JSON, no value = deleted).

* :class:`MonitorFollower`: every worker keeps the current monitors by reading the topic
  from its beginning with a consumer of its own (no group: each worker must see every
  message) and following it for ever; ``ready`` is set once it has read up to the end it
  found at start, so a worker evaluates nothing with a set older than the topic was then.
  A change applies to the windows (and NHI periods) evaluated from then on.
* :func:`publish` / :func:`read_monitors`: what ``flowmon monitor`` does (write definitions or
  tombstones, durably; read the current set once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from aiokafka import TopicPartition

from pipeline.monitors.definition import Monitor, MonitorError
from pipeline.monitors.evaluate import MonitorSet
from pipeline.runtime import kafka

__all__ = ["MonitorFollower", "publish", "read_monitors"]

log = logging.getLogger("flowmon.monitors")


class MonitorFollower:
    """The current monitors of ``topic``, followed live (``monitors``: name -> :class:`Monitor`)."""

    def __init__(self, conn: kafka.Connection | str, topic: str,
                 on_change: Callable[[str, str], None] | None = None) -> None:
        self.conn = conn
        self.topic = topic
        self.set = MonitorSet()
        self.ready = asyncio.Event()
        self.on_change = on_change

    @property
    def monitors(self) -> dict[str, Monitor]:
        return self.set.monitors

    def apply(self, key: bytes | None, value: bytes | None, where: str = "") -> None:
        try:
            change = self.set.apply(key, value)
        except MonitorError as exc:  # published by hand, or by a newer flowmon: skipped, said once
            log.error("monitors: %s skipped: %s", where or "a message", exc)
            return
        if change is not None:
            name = (key or b"").decode("utf-8", "replace")
            m = self.set.monitors.get(name)
            log.info("monitors: %s %s%s (%d live)", name, change, f": {m.describe()}" if m else "",
                     len(self.set.monitors))
            if self.on_change is not None:
                self.on_change(name, change)

    async def run(self, poll_ms: int = 500) -> None:
        """Follow the topic for ever; a failure of the consumer restarts it (the set is rebuilt from the start)."""
        delay = 0.5
        while True:
            try:
                await self._follow(poll_ms)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a worker must not stop because its follower failed
                log.error("monitors: following %s failed (%s); again in %.1f s", self.topic, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _follow(self, poll_ms: int) -> None:
        consumer = kafka.reader(self.conn, 1 << 20, auto_offset_reset="earliest")
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in sorted(await _partitions(consumer, self.topic))]
            fresh = MonitorSet()  # rebuilt from the start, then swapped in: no half-read set is ever used

            def apply(tp: TopicPartition, m) -> None:
                try:
                    fresh.apply(m.key, m.value)
                except MonitorError as exc:
                    log.error("monitors: %s[%d]@%d skipped: %s", tp.topic, tp.partition, m.offset, exc)

            await kafka.read_to_end(consumer, tps, apply, poll_ms=poll_ms)
            before = self.set.monitors
            self.set = fresh
            log.info("monitors: %d live (%s)", len(fresh.monitors), ", ".join(sorted(fresh.monitors)) or "none")
            if self.on_change is not None:
                for name in sorted(set(before) | set(fresh.monitors)):
                    if before.get(name) != fresh.monitors.get(name):
                        self.on_change(name, "deleted" if name not in fresh.monitors else "changed")
            self.ready.set()
            while True:
                for tp, msgs in (await consumer.getmany(timeout_ms=poll_ms)).items():
                    for m in msgs:
                        self.apply(m.key, m.value, f"{tp.topic}[{tp.partition}]@{m.offset}")
        finally:
            await consumer.stop()


async def _partitions(consumer, topic: str, timeout_s: float = 30.0) -> set[int]:
    end = time.monotonic() + timeout_s
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        if time.monotonic() > end:
            raise TimeoutError(f"topic {topic} has no partitions (not created?)")
        await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public call for it
        await asyncio.sleep(0.2)


async def publish(conn: kafka.Connection | str, topic: str, items: Iterable[tuple[str, Monitor | None]]) -> int:
    """Write definitions (or, for None, tombstones) keyed by name; returns how many, once all are durable."""
    producer = kafka.producer(conn, acks="all", enable_idempotence=False)
    await producer.start()
    n = 0
    try:
        for name, m in items:
            await producer.send_and_wait(topic, None if m is None else m.to_json(), key=name.encode(), partition=0)
            n += 1
    finally:
        await producer.stop()
    return n


async def read_monitors(conn: kafka.Connection | str, topic: str, timeout_s: float = 30.0) -> dict[str, Monitor]:
    """The current monitors: the topic read once, from its beginning to its end; bad messages skipped."""
    consumer = kafka.reader(conn, 1 << 20, auto_offset_reset="earliest")
    await consumer.start()
    ms = MonitorSet()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]

        def apply(tp: TopicPartition, m) -> None:
            try:
                ms.apply(m.key, m.value)
            except MonitorError as exc:
                log.warning("monitors: offset %d skipped: %s", m.offset, exc)

        await kafka.read_to_end(consumer, tps, apply, timeout_s=timeout_s)
    finally:
        await consumer.stop()
    return ms.monitors
