"""Publish flow reports to Kafka (aiokafka), fast; read a user's own JSON-lines file.

One Kafka message per report (orjson), keyed by the reporting instance id so one
agent's reports stay in order on one partition (the partition is the Java client's
murmur2(key) choice, as aiokafka's default partitioner computes it, cached per key).
For throughput the producer fills one record batch per partition itself
(``producer.create_batch`` / ``send_batch``) instead of awaiting ``send`` per message:
that is ~3-4x faster than per-message ``send`` (which costs ~15 µs of Python per
message). A batch goes out when it reaches ``max_batch_size`` bytes or is ``linger_ms``
old when the next message arrives, and at the end. aiokafka keeps at most one batch in
flight per partition, so order per key holds and a slow broker applies back-pressure.
No validation here: the pipeline validates and dead-letters. A user's file is sent line
by line (:func:`read_lines`): a line that is not JSON, or not UTF-8, is sent as it is
(:class:`Encoded`), so that the pipeline dead-letters it with its reason, like any other
bad input; :class:`LineCounts` says how many lines were of each kind.

Delivery: ``acks=all`` with aiokafka's retries (one batch in flight per partition, so a
retry keeps the order), and the idempotent producer (no duplicate from a retried
batch) when the broker grants producer ids (:func:`pipeline.runtime.kafka.supports_idempotence`;
Apache Kafka does, the embedded Tansu does not).

Examples
--------
>>> import tempfile, os
>>> with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
...     _ = f.write('{"version": 1, "instance": "a"}\\n\\n[1, 2]\\n')
>>> counts = LineCounts()
>>> [(line.kind, line.value) for line in read_lines(f.name, counts)], counts.json, counts.blank
([('json', {'version': 1, 'instance': 'a'}), ('json', [1, 2])], 2, 1)
>>> os.unlink(f.name)
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import sys
import time
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from aiokafka.partitioner import murmur2

from pipeline.runtime import kafka

__all__ = ["ProduceStats", "Encoded", "Line", "LineCounts", "read_lines", "produce_reports"]


class Encoded(NamedTuple):
    """A message already in bytes (sent as it is): a user's line that is not JSON, or any pre-encoded report."""

    value: bytes
    key: bytes | None = None
    samples: int = 1


class Line(NamedTuple):
    """One non-blank line of a user's file: its number, its bytes, and what it is.

    ``kind``: ``json`` (``value`` is the decoded JSON), ``not_json`` or ``not_utf8``
    (``problem`` says what is wrong; the line is sent as it is and dead-lettered).
    """

    number: int
    raw: bytes
    kind: str
    value: Any = None
    problem: str = ""

    def message(self) -> Any:
        """What to send: the decoded value (keyed by its instance), or the raw bytes."""
        return self.value if self.kind == "json" else Encoded(self.raw, None, 1)


@dataclass
class LineCounts:
    """Lines read from a user's file, by kind, with the first few bad line numbers."""

    json: int = 0
    not_json: int = 0
    not_utf8: int = 0
    blank: int = 0
    bad_lines: list[int] = field(default_factory=list)

    def add(self, line: Line) -> None:
        setattr(self, line.kind, getattr(self, line.kind) + 1)
        if line.kind != "json" and len(self.bad_lines) < 10:
            self.bad_lines.append(line.number)

    def __str__(self) -> str:
        """
        >>> str(LineCounts(json=5, not_json=1, blank=2, bad_lines=[4]))
        '5 JSON lines; 1 not JSON (sent: the pipeline dead-letters them; lines 4); 2 blank lines skipped'
        """
        parts = [f"{self.json:,} JSON lines"]
        bad = [f"{n:,} {what}" for n, what in ((self.not_json, "not JSON"), (self.not_utf8, "not UTF-8")) if n]
        if bad:
            more = "…" if len(self.bad_lines) < self.not_json + self.not_utf8 else ""
            parts.append(f"{', '.join(bad)} (sent: the pipeline dead-letters them; lines "
                         f"{', '.join(map(str, self.bad_lines))}{more})")
        if self.blank:
            parts.append(f"{self.blank:,} blank lines skipped")
        return "; ".join(parts)


@dataclass
class ProduceStats:
    """What :func:`produce_reports` sent: messages (reports), samples, value bytes, time."""

    reports: int = 0
    samples: int = 0
    bytes: int = 0
    seconds: float = 0.0
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    @property
    def reports_per_s(self) -> float:
        return self.reports / self.seconds if self.seconds > 0 else 0.0

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (f"{self.reports:,} reports, {self.samples:,} samples, {self.bytes / 1e6:,.1f} MB in "
                f"{self.seconds:.2f} s ({self.reports_per_s:,.0f} reports/s, {self.samples_per_s:,.0f} samples/s)")


def _samples_in(report: Any) -> int:
    """Samples in a decoded report, for the progress line (a flat sample, or anything else, counts as one;
    the worker's own count of a message it refuses is ``ingest.validate``'s, from the raw bytes)."""
    if isinstance(report, dict):
        s = report.get("samples")
        return len(s) if isinstance(s, list) else 1
    return 1


async def produce_reports(
    conn: kafka.Connection | str,
    topic: str,
    reports: Iterable[Any] | AsyncIterable[Any],
    *,
    progress: Callable[[ProduceStats], None] | None = None,
    progress_every: int = 10_000,
    linger_ms: int = 50,
    max_batch_size: int = 256 * 1024,
    max_request_size: int = 8 << 20,
    compression_type: str | None = None,
    acks: int | str = "all",
    idempotent: bool | None = None,
    client_id: str = "flowmon-produce",
    **producer_kwargs: Any,
) -> ProduceStats:
    """Send every report (a dict, or any JSON value) to ``topic``; return the counts.

    ``reports`` may be a plain or an async iterable (e.g. one that paces a simulation in
    real time). ``key`` = ``report["instance"]`` (UTF-8) when it is a string, else none
    (such messages are spread round-robin). ``progress`` is called with the running stats
    every ``progress_every`` reports and once at the end. ``max_batch_size`` is bytes per
    partition batch (256 KiB measured best against the embedded broker: smaller batches
    pipeline better); ``compression_type`` needs aiokafka's optional codecs. Extra keyword
    arguments go to ``AIOKafkaProducer``. The topic must exist (or the broker must
    auto-create it). Raises the first delivery error after the others are settled.
    An :class:`Encoded` item is sent as its bytes. ``idempotent``: use the idempotent
    producer (``None``: when the broker supports it and ``acks`` is ``all``).
    """
    if idempotent is None:
        idempotent = acks in ("all", -1) and await kafka.supports_idempotence(conn)
    producer = kafka.producer(conn, client_id=client_id, linger_ms=linger_ms, max_batch_size=max_batch_size,
                              max_request_size=max_request_size, compression_type=compression_type, acks=acks,
                              enable_idempotence=idempotent, **producer_kwargs)
    stats = ProduceStats()
    dumps = orjson.dumps
    await producer.start()
    try:
        batches = _Batches(producer, topic, sorted(await producer.partitions_for(topic)), linger_ms / 1000.0)
        next_progress = progress_every

        async def put(report: Any) -> None:
            nonlocal next_progress
            if isinstance(report, Encoded):
                value = report.value
                await batches.add(report.key, value)
                stats.samples += report.samples
            else:
                value = dumps(report)
                inst = report.get("instance") if isinstance(report, dict) else None
                await batches.add(inst.encode() if isinstance(inst, str) else None, value)
                stats.samples += _samples_in(report)
            stats.reports += 1
            stats.bytes += len(value)
            if progress is not None and stats.reports >= next_progress:
                next_progress += progress_every
                stats.seconds = time.perf_counter() - stats._t0
                progress(stats)

        if isinstance(reports, AsyncIterable):
            async for report in reports:
                await put(report)
        else:
            for report in reports:
                await put(report)
        await batches.close()
    finally:
        await producer.stop()
    stats.seconds = time.perf_counter() - stats._t0
    if progress is not None:
        progress(stats)
    return stats


class _Batches:
    """The record batches being filled, one per partition (see the module docstring).

    A keyed message goes to the Java client's partition for its key (murmur2, cached per
    key), an unkeyed one round-robin. A batch is shipped when full, when it is ``linger_s``
    old as the next message for its partition arrives, and at :meth:`close`.
    """

    def __init__(self, producer: Any, topic: str, partitions: list[int], linger_s: float) -> None:
        self.producer = producer
        self.topic = topic
        self.partitions = partitions
        self.linger_s = linger_s
        self._part_of: dict[bytes, int] = {}
        self._round_robin = itertools.cycle(partitions)
        self._builders: dict[int, Any] = {}
        self._born: dict[int, float] = {}
        self._pending: list[asyncio.Future[Any]] = []

    def _place(self, key: bytes) -> int:
        p = self._part_of[key] = self.partitions[(murmur2(key) & 0x7FFFFFFF) % len(self.partitions)]
        return p

    async def add(self, key: bytes | None, value: bytes) -> None:
        """Append one message to its partition's batch, shipping that batch when full or old enough."""
        if key is None:
            p = next(self._round_robin)
        else:  # the hot path: no method call for a known key
            p = self._part_of.get(key)
            if p is None:
                p = self._place(key)
        b = self._builders.get(p)
        if b is None:
            b = self._open(p)
        elif b.append(key=key, value=value, timestamp=None) is not None:
            b = None
        else:  # full: ship it, start a new one
            await self._ship(p)
            b = self._open(p)
        if b is not None:
            b.append(key=key, value=value, timestamp=None)
        if time.monotonic() - self._born[p] >= self.linger_s:
            await self._ship(p)

    async def close(self) -> None:
        """Ship what is left and wait for every delivery; raise the first error after all settled."""
        for p in list(self._builders):
            await self._ship(p)
        results = await asyncio.gather(*self._pending, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    def _open(self, p: int) -> Any:
        b = self._builders[p] = self.producer.create_batch()
        self._born[p] = time.monotonic()
        return b

    async def _ship(self, p: int) -> None:
        pending = self._pending
        pending.append(await self.producer.send_batch(self._builders.pop(p), self.topic, partition=p))
        if len(pending) >= 256:
            for f in pending:
                if f.done():
                    f.result()  # raise delivery errors early
            pending[:] = [f for f in pending if not f.done()]


def _open_lines(path: str | Path) -> Any:
    if str(path) == "-":  # stdin: read it, but leave it open
        return contextlib.nullcontext(sys.stdin.buffer)
    p = Path(path)
    return gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")


def read_lines(path: str | Path, counts: LineCounts | None = None) -> Iterator[Line]:
    """Each non-blank line of a JSON-lines file (``.gz`` too; ``-`` = stdin), as a :class:`Line`; never raises
    on content (a bad line is a ``not_json``/``not_utf8`` line). ``counts`` is updated as lines go by."""
    with _open_lines(path) as fh:
        for number, raw in enumerate(fh, 1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                if counts is not None:
                    counts.blank += 1
                continue
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                line = Line(number, raw, "not_utf8", problem=f"not UTF-8 (byte {e.start})")
            else:
                try:
                    line = Line(number, raw, "json", orjson.loads(raw))
                except orjson.JSONDecodeError as e:
                    line = Line(number, raw, "not_json", problem="not JSON (" + " ".join(str(e).split()) + ")")
            if counts is not None:
                counts.add(line)
            yield line
