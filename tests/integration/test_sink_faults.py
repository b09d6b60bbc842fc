"""The sink outlives ClickHouse's faults: a dropped table, a server that cannot be reached for a while.

The lander runs here, in the test's event loop, on a real broker and a real ClickHouse
engine (chdb, a database of its own); nothing is mocked.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from pipeline.clickhouse.client import connect
from pipeline.clickhouse.migrations import migrate
from pipeline.clickhouse.sqlserve import SqlServer
from pipeline.clickhouse.writer import WindowSink
from pipeline.config import Settings
from pipeline.runtime.land import Lander
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.topics import Topics, ensure_topics
from tests.support.helpers import unique_name
from tests.support.proxy import TcpProxy
from tests.support.records import make_windows


@pytest.fixture
def database(client):
    """A migrated chdb database of its own (tests/conftest.py ``client``), under the name these tests read best."""
    return client


def _settings() -> Settings:
    prefix = unique_name("sf")
    return Settings(topic_prefix=prefix, app_id=prefix, partitions=2, sink_flush_s=0.2,
                    session_timeout_s=6, rebalance_timeout_s=6, heartbeat_s=1)


async def _send(bootstrap: str, topic: str, windows: list[dict]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await p.start()
    try:
        for w in windows:
            await p.send(topic, orjson.dumps(w))
        await p.flush()
    finally:
        await p.stop()


async def _until(predicate, timeout: float, task: asyncio.Task) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert not task.done(), f"the lander stopped: {task.exception() if not task.cancelled() else 'cancelled'}"
        if await asyncio.get_running_loop().run_in_executor(None, predicate):
            return
        await asyncio.sleep(0.3)
    raise AssertionError("timed out")


def test_sink_recreates_a_dropped_table(tansu_broker, database):
    """DROP TABLE flow_windows under a running sink: the next batch re-creates it and lands; nothing crashes."""
    s = _settings()
    topics = Topics.from_settings(s)
    bootstrap = str(tansu_broker.bootstrap)
    asyncio.run(ensure_topics(bootstrap, topics))
    reader = database  # a second handle for the test's own reads
    count = lambda: reader.command("SELECT count() FROM flow_windows FINAL")  # noqa: E731
    metrics = Metrics()
    first, second = make_windows(30, seed=1), make_windows(40, seed=2, window_start=1_700_001_000)

    async def go() -> None:
        executor = ThreadPoolExecutor(1)
        lander = Lander(s, bootstrap, WindowSink(database), executor, metrics, repair=lambda: migrate(database),
                        backoff=lambda: iter(lambda: 0.2, None))
        task = asyncio.create_task(lander.run())
        try:
            await _send(bootstrap, topics.windows, first)
            await _until(lambda: count() == 30, 60, task)
            await asyncio.get_running_loop().run_in_executor(executor, database.command, "DROP TABLE flow_windows")
            await _send(bootstrap, topics.windows, second)
            await _until(lambda: "flow_windows" in {r[0] for r in reader.query("SHOW TABLES").result_rows}
                         and count() == 40, 60, task)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    assert metrics.value("flowmon_sink_write_errors_total", table="flow_windows") >= 1
    got = {(r[0], r[1]): r[2] for r in reader.query(
        "SELECT src_subnet, dst_subnet, bytes FROM flow_windows FINAL").result_rows}
    assert got == {(w["src_subnet"], w["dst_subnet"]): w["bytes"] for w in second}


@pytest.mark.parametrize("fault", ["reset", "stall"])
def test_sink_waits_out_a_clickhouse_it_cannot_reach(tansu_broker, database, fault):
    """ClickHouse out of reach for 15 s mid-stream: a proxy resets its connections (a server gone), or answers
    nothing and resets nothing (a hung server, a partition: the sink learns of it only from ``sink_timeout_s``).
    The writes fail and are retried, the sink says it is unhealthy meanwhile, and every window lands once, with
    its bytes, when ClickHouse is back. With clickhouse_connect's own timeout (5 minutes) a stalled write would
    still be waiting when this test gives up on the second failed write."""
    s = _settings().model_copy(update={"sink_timeout_s": 3.0})
    topics = Topics.from_settings(s)
    bootstrap = str(tansu_broker.bootstrap)
    asyncio.run(ensure_topics(bootstrap, topics))
    server = SqlServer(database, writable=True).start()  # a ClickHouse server, in effect
    proxy = TcpProxy("127.0.0.1", server.port)
    metrics = Metrics()
    errors = lambda: metrics.value("flowmon_sink_write_errors_total", table="flow_windows")  # noqa: E731
    batches = [make_windows(50, seed=i, window_start=1_700_000_400 + 600 * i) for i in range(4)]
    count = lambda: database.command("SELECT count() FROM flow_windows FINAL")  # noqa: E731
    refused: list[int] = []  # what the proxy refused during the fault
    try:
        # as the worker makes its sink's client (pipeline/cli/worker.py)
        remote = connect(f"http://127.0.0.1:{proxy.port}/{database.database}", password=server.token,
                         timeout_s=s.sink_timeout_s)

        async def go() -> None:
            lander = Lander(s, bootstrap, WindowSink(remote), ThreadPoolExecutor(1), metrics,
                            backoff=lambda: iter(lambda: 1.0, None))
            task = asyncio.create_task(lander.run())
            try:
                await _send(bootstrap, topics.windows, batches[0])
                await _until(lambda: count() == 50, 60, task)
                proxy.down() if fault == "reset" else proxy.stall()
                cut_at = time.monotonic()
                for b in batches[1:]:
                    await _send(bootstrap, topics.windows, b)
                # the lander has tried and failed (its error counter says so): polled, not read after a fixed sleep,
                # since the consumer may take a while to fetch the new batches on a loaded machine
                await _until(lambda: errors() >= 2, 45, task)
                assert metrics.value("flowmon_sink_healthy") == 0
                await asyncio.sleep(max(0.0, 15 - (time.monotonic() - cut_at)))  # out of reach for 15 s at least
                assert count() == 50, "nothing can land while ClickHouse is out of reach"
                refused.append(proxy.refused)  # during the fault (closing the proxy at the end may refuse more)
                proxy.up()
                await _until(lambda: count() == 200, 90, task)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        asyncio.run(go())
    finally:
        proxy.close()
        server.stop()
    assert (refused[0] >= 1) == (fault == "reset"), "a reset proxy refuses new connections; a stalled one holds them"
    assert metrics.value("flowmon_sink_healthy") == 1
    got = {(r[0], r[1], r[2]): r[3] for r in database.query(
        "SELECT src_subnet, dst_subnet, toUnixTimestamp(window_start), bytes FROM flow_windows FINAL").result_rows}
    assert got == {(w["src_subnet"], w["dst_subnet"], w["window_start"]): w["bytes"] for b in batches for w in b}


def test_poison_records_are_dead_lettered_not_blocking(tansu_broker, database):
    """Records on the sink's topics that cannot become rows (a field missing, not JSON, not an object) land in
    the deadletter table with their origin and payload; the good records of the same batch land; nothing blocks."""
    s = _settings()
    topics = Topics.from_settings(s)
    bootstrap = str(tansu_broker.bootstrap)
    asyncio.run(ensure_topics(bootstrap, topics))
    good = make_windows(20, seed=9)
    poison = [orjson.dumps({"version": 1, "src_subnet": "x"}), b"\x00not json", b"[1, 2]"]
    metrics = Metrics()

    async def go() -> None:
        lander = Lander(s, bootstrap, WindowSink(database), ThreadPoolExecutor(1), metrics,
                        backoff=lambda: iter(lambda: 0.2, None))
        task = asyncio.create_task(lander.run())
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await p.start()
        try:
            for v in [orjson.dumps(w) for w in good[:10]] + poison + [orjson.dumps(w) for w in good[10:]]:
                await p.send_and_wait(topics.windows, v, partition=0)
        finally:
            await p.stop()
        try:
            await _until(lambda: database.command("SELECT count() FROM deadletter FINAL") == 3
                         and database.command("SELECT count() FROM flow_windows FINAL") == 20, 60, task)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    rows = database.query("SELECT stage, reason, source_offset, payload_encoding, detail FROM deadletter FINAL "
                          "ORDER BY source_offset").result_rows
    assert [r[:4] for r in rows] == [("sink", "internal_error", 10, "json"), ("sink", "internal_error", 11, "base64"),
                                     ("sink", "internal_error", 12, "base64")], rows
    assert "KeyError" in rows[0][4]
    assert metrics.value("flowmon_deadletter_samples_total", reason="internal_error") == 3
