"""Shell: land closed windows, anomaly events, attributions, NHI, monitors and dead letters in ClickHouse (consumer group ``<app_id>-sink``).

A plain aiokafka consumer rather than a Faust agent: the sink must commit offsets only
*after* a batch is written, and with chdb exactly one process may own the database, so
the sink runs in the processes whose ``roles`` include ``sink`` and nowhere else.
Writes are idempotent (``sink.WindowSink``), so a replay after a crash lands nothing twice.
The ClickHouse client is synchronous: every call runs in one dedicated thread.

Nothing ClickHouse or Kafka does stops the sink (the worker process keeps running its
other roles): a write that fails is retried with backoff (:func:`backoff_delays`) until
it succeeds, the batch held and its offsets not committed meanwhile; a table that has
gone (``DROP TABLE``, a database restored without it) is re-created by the migrations
before the retry; an offset commit refused (the group rebalanced while a write was
retried) is logged, and the batch, read again by whoever owns the partition, is
deduplicated on landing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from pipeline.errors import first_line
from pipeline.config import Settings
from pipeline.runtime import kafka
from pipeline.runtime.metrics import Metrics
from pipeline.clickhouse.writer import WindowSink
from pipeline.monitors.evaluate import monitor_row
from pipeline.runtime.topics import Topics
from pipeline.ingest.step import deadletter
from pipeline.ingest.validate import Rejection
from pipeline.wire.records import deadletter_record, later_part

__all__ = ["Lander", "backoff_delays", "is_missing_table", "route", "sink_deadletter", "TABLES"]

#: The tables the sink writes, in the order a batch is written.
TABLES = ("flow_windows", "instance_windows", "deadletter", "flow_anomalies", "flow_attributions", "nhi", "monitors",
          "monitor_windows", "monitor_nhi")

#: Tables written from the records of another table's topic (the closed windows' per-instance counters).
ALSO_FROM = {"instance_windows": "flow_windows"}


def sink_deadletter(origin: tuple[str, int, int], detail: str, *, payload: Any = None,
                    raw: bytes | None = None) -> dict[str, Any]:
    """A deadletter.v1 record (stage ``sink``, reason ``internal_error``) for a message of flowmon's own topics
    that cannot land: it is kept, with its bytes or value, instead of blocking the sink or vanishing.

    >>> r = sink_deadletter(("flow-windows-v1", 2, 41), "not a flow_windows record: KeyError: 'bytes'", payload={})
    >>> r["reason"], r["stage"], r["source"], r["payload"]
    ('internal_error', 'sink', {'topic': 'flow-windows-v1', 'partition': 2, 'offset': 41}, {})
    >>> sink_deadletter(("flow-windows-v1", 2, 42), "not JSON", raw=b"x")["payload_b64"]
    'eA=='
    """
    return deadletter_record(deadletter(Rejection("internal_error", detail[:1000], payload=payload, raw=raw), "sink",
                                        *origin))

log = logging.getLogger("flowmon.land")


def backoff_delays(first_s: float = 0.5, cap_s: float = 30.0) -> Iterator[float]:
    """Seconds to wait before each retry: doubling from ``first_s``, at most ``cap_s``, for ever.

    >>> from itertools import islice
    >>> list(islice(backoff_delays(0.5, 4), 6))
    [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    """
    delay = first_s
    while True:
        yield float(min(delay, cap_s))
        delay *= 2


def is_missing_table(exc: BaseException) -> bool:
    """True when ClickHouse said a table or database does not exist (codes 60 and 81).

    >>> is_missing_table(Exception("Code: 60. DB::Exception: Table default.flow_windows does not exist. (UNKNOWN_TABLE)"))
    True
    >>> is_missing_table(Exception("Connection refused"))
    False
    """
    text = str(exc)
    return "UNKNOWN_TABLE" in text or "UNKNOWN_DATABASE" in text


def route(table_of: dict[str, str], messages: Iterable[tuple[tuple[str, int, int], bytes | None, bytes | None, int]]
          ) -> tuple[dict[str, list[tuple[dict[str, Any], tuple[str, int, int]]]], list[dict[str, Any]]]:
    """One batch of the landed topics' messages ``(origin, key, value, timestamp)``, origin ``(topic, partition,
    offset)``, ``table_of`` naming each topic's table: per table of :data:`TABLES`, the records to write with their
    origins, and the sink's dead letters of what cannot land (not JSON, not an object, not a monitors record).

    The closed windows also give the ``instance_windows`` rows (:data:`ALSO_FROM`). A window sent in parts (its
    instances above the message limit, ``wire.records.encode_window``) gives its ``flow_windows`` row once, from
    part 0, and its instances from every part: parts that land in two batches must not insert the window twice.

    >>> w = {"src_subnet": "a", "instances": [{"instance": "h1"}], "instances_part": 0, "instances_parts": 2}
    >>> msgs = [(("w", 0, 7), b"a|b", orjson.dumps(w), 0),
    ...         (("w", 0, 8), b"a|b", orjson.dumps(dict(w, instances=[{"instance": "h2"}], instances_part=1)), 0),
    ...         (("w", 0, 9), b"a|b", b"{not json", 0)]
    >>> items, refused = route({"w": "flow_windows"}, msgs)
    >>> [o for _, o in items["flow_windows"]], [o for _, o in items["instance_windows"]]
    ([('w', 0, 7)], [('w', 0, 7), ('w', 0, 8)])
    >>> [(r["stage"], r["source"]["offset"]) for r in refused]
    [('sink', 9)]
    """
    items: dict[str, list[tuple[dict[str, Any], tuple[str, int, int]]]] = {t: [] for t in TABLES}
    refused: list[dict[str, Any]] = []
    for origin, key, value, timestamp in messages:
        table = table_of[origin[0]]
        if table == "monitors":  # keyed definitions and tombstones: the message is the row
            try:
                items[table].append((monitor_row(key, value, timestamp), origin))
            except (ValueError, UnicodeDecodeError) as exc:
                refused.append(sink_deadletter(origin, f"not a monitors record: {exc}", raw=value or b""))
            continue
        try:
            rec = orjson.loads(value)
            if not isinstance(rec, dict):
                raise TypeError(f"a JSON {type(rec).__name__}, not an object")
            items[table].append((rec, origin))
        except (orjson.JSONDecodeError, TypeError) as exc:
            refused.append(sink_deadletter(origin, f"not a {table} record: {exc}", raw=value))
    for table, source in ALSO_FROM.items():
        items[table] = items[source]
    items["flow_windows"] = [(r, o) for r, o in items["flow_windows"] if not later_part(r)]
    return items, refused


class Lander:
    """Consume the topics that land (windows, dead letters, anomalies, attributions, NHI, monitors, monitor windows
    and NHI); write batches; commit after each write."""

    def __init__(self, settings: Settings, conn: kafka.Connection | str, sink: WindowSink, executor: ThreadPoolExecutor,
                 metrics: Metrics | None = None, repair: Callable[[], Any] | None = None,
                 backoff: Callable[[], Iterator[float]] = backoff_delays) -> None:
        """``repair`` (run in ``executor``) re-creates missing tables (the migrations); ``backoff`` gives the
        waits between retries of a failed write."""
        self.settings = settings
        self.repair = repair
        self.backoff = backoff
        self.conn = conn
        self.sink = sink
        self.executor = executor
        self.metrics = metrics or Metrics()
        self.metrics.sink_healthy.set(1)  # until a write fails
        self.topics = Topics.from_settings(settings)

    async def run(self) -> None:
        """Land for ever; an unexpected failure of the consumer restarts it (after a backoff), never the worker."""
        delays = self.backoff()
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a sink that stops would silently stall every dashboard
                delay = next(delays)
                log.error("sink: consumer failed (%s); restarting it in %.1f s", first_line(exc), delay)
                await asyncio.sleep(delay)

    async def _consume(self) -> None:
        s = self.settings
        consumer = kafka.consumer(
            self.conn, self.topics.windows, self.topics.deadletter, self.topics.anomalies,
            self.topics.attributions, self.topics.nhi, self.topics.monitors, self.topics.monitor_windows,
            self.topics.monitor_nhi, group=f"{s.app_id}-sink", **kafka.group_timings(s),
            auto_offset_reset="earliest", max_partition_fetch_bytes=max(s.max_message_bytes * 2, 1_048_576),
        )
        table_of = {self.topics.windows: "flow_windows", self.topics.anomalies: "flow_anomalies",
                    self.topics.attributions: "flow_attributions", self.topics.nhi: "nhi",
                    self.topics.deadletter: "deadletter", self.topics.monitors: "monitors",
                    self.topics.monitor_windows: "monitor_windows", self.topics.monitor_nhi: "monitor_nhi"}
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=int(s.sink_flush_s * 1000), max_records=s.sink_batch)
                if not batch:
                    continue
                items, refused = route(table_of, (((tp.topic, tp.partition, m.offset), m.key, m.value, m.timestamp)
                                                  for tp, msgs in batch.items() for m in msgs))
                for table in TABLES:
                    pairs = items[table]
                    if not pairs:
                        continue
                    records = [r for r, _ in pairs]
                    bad = self.sink.unwritable(table, records)
                    if bad:
                        refused += [sink_deadletter(pairs[i][1], f"not a {table} record: {why}", payload=pairs[i][0])
                                    for i, why in bad.items()]
                        records = [r for i, r in enumerate(records) if i not in bad]
                    if records:
                        await self._write(table, records)
                    if table == "flow_windows":
                        self.metrics.landed.inc(len(records))
                if refused:
                    for r in refused:
                        log.error("sink: dead-lettered %s[%d]@%d: %s", r["source"]["topic"], r["source"]["partition"],
                                  r["source"]["offset"], r["detail"])
                    self.metrics.deadletters.labels(reason="internal_error").inc(len(refused))
                    await self._write("deadletter", refused)
                try:
                    await consumer.commit()
                except KafkaError as exc:  # the group moved on (rebalance) while a write was retried
                    log.warning("sink: offsets not committed (%s); the batch will be read again and deduplicated", exc)
        finally:
            await consumer.stop()

    async def _write(self, table: str, records: list[dict[str, Any]]) -> None:
        """Write ``records`` to ``table``, retrying with backoff until ClickHouse takes them."""
        write = {"flow_windows": self.sink.write_windows, "deadletter": self.sink.write_deadletters,
                 "flow_anomalies": self.sink.write_anomalies, "flow_attributions": self.sink.write_attributions,
                 "nhi": self.sink.write_nhi, "monitors": self.sink.write_monitors,
                 "monitor_windows": self.sink.write_monitor_windows, "monitor_nhi": self.sink.write_monitor_nhi,
                 "instance_windows": self.sink.write_instance_windows}[table]
        loop = asyncio.get_running_loop()
        delays = self.backoff()
        attempt = 0
        while True:
            try:
                await loop.run_in_executor(self.executor, write, records)
                if attempt:
                    log.warning("sink: %d %s rows landed after %d failed attempts", len(records), table, attempt)
                self.metrics.sink_healthy.set(1)
                return
            except Exception as exc:  # noqa: BLE001 - ClickHouse down, table dropped, ...: never lose the batch
                attempt += 1
                self.metrics.sink_errors.labels(table=table).inc()
                self.metrics.sink_healthy.set(0)
                if is_missing_table(exc) and self.repair is not None:
                    log.error("sink: %s is missing (%s); re-creating the schema", table, first_line(exc))
                    try:
                        await loop.run_in_executor(self.executor, self.repair)
                        continue  # retry at once on the re-created table
                    except Exception as repair_exc:  # noqa: BLE001
                        exc = repair_exc
                delay = next(delays)
                log.error("sink: writing %d %s rows failed (attempt %d): %s; retrying in %.1f s",
                          len(records), table, attempt, first_line(exc), delay)
                await asyncio.sleep(delay)
