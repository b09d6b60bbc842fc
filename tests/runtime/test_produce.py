"""pipeline.runtime.produce with a stand-in producer: partitions, order per key, batching, counts, errors."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.partitioner import murmur2

import pipeline.runtime.produce as produce_module
from pipeline.runtime.produce import produce_reports


class _Batch:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes]] = []

    def append(self, key, value, timestamp):
        if len(self.records) >= self.capacity:
            return None  # full, as aiokafka's BatchBuilder says it
        self.records.append((key, value))
        return object()


class _Producer:
    """What produce_reports uses of AIOKafkaProducer; records every batch sent."""

    def __init__(self, partitions: int = 4, capacity: int = 3, fail: bool = False) -> None:
        self.partitions, self.capacity, self.fail = partitions, capacity, fail
        self.sent: list[tuple[int, list[tuple[bytes | None, bytes]]]] = []
        self.started = self.stopped = False

    async def start(self):
        self.started = True

    async def stop(self):
        self.stopped = True

    async def partitions_for(self, topic):
        return set(range(self.partitions))

    def create_batch(self):
        return _Batch(self.capacity)

    async def send_batch(self, batch, topic, partition):
        self.sent.append((partition, batch.records))
        fut = asyncio.get_running_loop().create_future()
        if self.fail:
            fut.set_exception(RuntimeError("broker said no"))
        else:
            fut.set_result(None)
        return fut


@pytest.fixture
def producer(monkeypatch):
    made: list[_Producer] = []

    def make(**kw):
        p = _Producer(**kw)
        made.append(p)
        monkeypatch.setattr(produce_module.kafka, "producer", lambda bootstrap, **options: p)
        return p
    return make


def test_keys_partitions_order_and_counts(producer):
    p = producer(partitions=4, capacity=3)
    reports = [{"instance": f"i-{n % 5}", "seq": n, "samples": [1] * (n % 3)} for n in range(40)]
    reports += [[1, 2], {"no": "instance"}]  # unkeyed: round-robin
    seen: list[int] = []
    stats = asyncio.run(produce_reports("x:1", "t", reports, progress_every=10,
                                        progress=lambda st: seen.append(st.reports)))
    assert p.started and p.stopped
    assert (stats.reports, stats.samples) == (42, sum(n % 3 for n in range(40)) + 2)
    assert seen == [10, 20, 30, 40, 42]
    by_key: dict[bytes, list[int]] = {}
    unkeyed = []
    for part, records in p.sent:
        assert 0 < len(records) <= 3
        for key, value in records:
            if key is None:
                unkeyed.append(part)
                continue
            assert part == (murmur2(key) & 0x7FFFFFFF) % 4  # the Java client's partition for the key
            by_key.setdefault(key, []).append(int(value.split(b'"seq":')[1].split(b",")[0]))
    assert {k: v for k, v in by_key.items()} == {f"i-{i}".encode(): list(range(i, 40, 5)) for i in range(5)}
    assert sorted(unkeyed) == [0, 1]  # one each, in turn
    assert sum(len(r) for _, r in p.sent) == 42


def test_first_delivery_error_is_raised_after_all_settled(producer):
    p = producer(fail=True)
    with pytest.raises(RuntimeError, match="broker said no"):
        asyncio.run(produce_reports("x:1", "t", [{"instance": "a"}] * 5))
    assert p.stopped


def test_async_iterable(producer):
    p = producer()

    async def gen():
        for n in range(7):
            yield {"instance": "a", "n": n}

    stats = asyncio.run(produce_reports("x:1", "t", gen()))
    assert stats.reports == 7 and sum(len(r) for _, r in p.sent) == 7
