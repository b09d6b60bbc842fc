"""Window state survives in its topic: what a worker wrote is what the next owner restores."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import AIOKafkaProducer

from tests.support.helpers import unique_name
from pipeline.config import Settings
from pipeline.wire.records import encode
from pipeline.runtime.restore import PartitionState, restore
from pipeline.runtime.topics import Topics, ensure_topics
from pipeline.aggregate.windows import PartitionWindows


def _part(dst: str, n: int) -> dict:
    return {"src": ["s", "a", "v"], "dst": [dst, "a2", "v"], "ws": 0, "host": f"h{n}",
            "c": [n, 1, 0, 0, 1, 1, 1, 500], "h": {143: 1}, "x": [0, 0], "top": [None, None, "10.0.9.4"],
            "ip": f"10.0.0.{n % 250}", "id": 1000 + n}


def test_restore_round_trip(broker):
    topics = Topics.from_settings(Settings(topic_prefix=unique_name("st"), partitions=4))
    asyncio.run(ensure_topics(broker, topics))
    state = PartitionState(PartitionWindows(2, 600, 60, sources=1))
    written = state.windows

    async def write() -> None:
        # linger: many records per batch, as a busy worker writes them (Tansu's ListOffsets
        # answers the last batch's base offset + 1: the restore must not trust it alone)
        prod = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=200)
        await prod.start()
        try:
            for i in range(200):  # one pairs message per batch: its writes end with the pairs offset
                written.apply({"o": [0, i], "t": 30 * (i // 10), "parts": [_part(f"d{i % 7}", i)]})
                state.applied(i)
                for w in state.take_dirty():
                    await prod.send(topics.state, w.value, key=w.key.text.encode(), partition=2)
            await prod.flush()
        finally:
            await prod.stop()

    asyncio.run(write())
    back = PartitionState(PartitionWindows(2, 600, 60, sources=1))
    restored = back.windows
    n = asyncio.run(restore(broker, topics.state, back))
    assert n == len(written.open) + len(written.closed) + 2  # + the progress and pairs offset keys
    assert back.pairs_offset == 199
    assert {k: a.state() for k, a in restored.open.items()} == {k: a.state() for k, a in written.open.items()}
    assert restored.watermark == written.watermark
    # a replayed partial is recognised as a duplicate by the restored state
    assert restored.apply({"o": [0, 150], "t": 450, "parts": [_part("d3", 150)]}).duplicates == 1


def test_restore_empty_partition(broker):
    topics = Topics.from_settings(Settings(topic_prefix=unique_name("st"), partitions=2))
    asyncio.run(ensure_topics(broker, topics))
    pw = PartitionWindows(1, 600, 60, sources=1)
    assert asyncio.run(restore(broker, topics.state, pw, timeout_s=30)) == 0
    assert pw.open == {} and pw.watermark is None


class _Keys:
    """A store that keeps what a restore loads, key by key."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.loaded: dict[str, dict] = {}

    def load(self, key: str, val: dict) -> None:
        self.loaded[key] = val


def test_restore_ignores_a_stale_owners_late_writes(broker):
    """Writes from a worker that lost the partition (it was paused, and resumed after the next owner
    wrote its marker) never count in a restore, nor does a marker made before the owner's one; the
    owner's writes do, and so does what came before any marker. Only whole batches count: a batch's
    writes end with its pairs offset, and writes after the last one (a batch cut part way) do not."""
    from pipeline.runtime.restore import WRITER_HEADER, owner_marker, restore_owned

    topics = Topics.from_settings(Settings(topic_prefix=unique_name("st"), partitions=2))
    asyncio.run(ensure_topics(broker, topics))

    async def write() -> None:
        prod = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=50)
        await prod.start()
        try:
            async def put(key: str, val: dict | None, writer: str | None) -> None:
                headers = [(WRITER_HEADER, writer.encode())] if writer else None
                await prod.send(topics.state, None if val is None else encode(val), key=key.encode(), partition=1,
                                headers=headers)

            async def own(writer: str, at: float) -> None:
                m = owner_marker(1, writer, at)
                await prod.send(topics.state, m.value, key=m.key.text.encode(), partition=1)

            pairs = '[1,"__pairs__"]'
            await put("k1", {"v": 1}, None)      # from a worker older than the markers: counts
            await put("k2", {"v": 1}, None)
            await put(pairs, {"offset": 1}, None)
            await own("a", 100.0)
            await put("k1", {"v": 2}, "a")       # the owner's
            await put("k1", {"v": 0}, "z")       # a stale owner resumed: ignored, k1 stays 2
            await put("k2", None, "z")           # its tombstone too: k2 stays
            await put(pairs, {"offset": 2}, "a")
            await put("k5", {"v": 5}, "a")       # a batch of a's cut part way (no pairs offset): dropped ...
            await own("c", 200.0)                # ... when the next owner's marker comes
            await put("k3", {"v": 3}, "c")
            await put("k1", {"v": 9}, "a")       # a is the stale one now
            await own("y", 150.0)                # a marker made before c's, delivered late: not an owner
            await put("k3", {"v": 4}, "y")
            await put("k4", {"v": 4}, "c")       # c still owns
            await put(pairs, {"offset": 3}, "c")
            await put("k4", {"v": 6}, "c")       # c's next batch, cut part way: k4 stays 4
            await put("k6", {"v": 6}, "c")
            await prod.flush()
        finally:
            await prod.stop()

    asyncio.run(write())
    store = _Keys(1)
    [got] = asyncio.run(restore_owned(broker, topics.state, [store], timeout_s=30))
    assert store.loaded == {"k1": {"v": 2}, "k2": {"v": 1}, "k3": {"v": 3}, "k4": {"v": 4},
                            '[1,"__pairs__"]': {"offset": 3}}
    assert got.keys == 5 and got.ignored == 5 and got.torn == 3
    # the keys whose last record is ignored (k1: a's after c's marker, k2: z's tombstone, k3: y's, k4: of a
    # cut batch): compaction would keep only that record, which every later restore ignores, so the owner
    # writes again what it loaded (k5, k6 have nothing that counts)
    assert {k: orjson.loads(v) for k, v in got.rewrite.items()} == {
        b"k1": {"v": 2}, b"k2": {"v": 1}, b"k3": {"v": 3}, b"k4": {"v": 4}}
