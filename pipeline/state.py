"""Shell: read back the window state of one pairs partition from its compacted topic.

The aggregate agent writes every changed key of ``windows.PartitionWindows`` (JSON
value, or a tombstone) to partition p of the state topic, through the worker's
producer, before the events that caused the change are acknowledged. Whoever is
assigned pairs partition p next replays state partition p up to its end and rebuilds
the store; per-source offsets inside the state absorb any replay of the pairs topic.
"""

from __future__ import annotations

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from .windows import PartitionWindows

__all__ = ["restore"]


async def restore(bootstrap: str, topic: str, store: PartitionWindows, max_bytes: int = 8 << 20) -> int:
    """Load partition ``store.partition`` of ``topic`` into ``store``; returns the keys loaded."""
    tp = TopicPartition(topic, store.partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=max_bytes)
    await consumer.start()
    latest: dict[bytes, bytes | None] = {}
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        # an explicit offset: seek_to_beginning() is lazy, and on Apache Kafka position() then
        # answered the log end (seen in tests), which silently restored nothing
        consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for msg in batch.get(tp, ()):
                latest[msg.key] = msg.value
    finally:
        await consumer.stop()
    n = 0
    for key, value in latest.items():
        if value is not None:
            store.load(key.decode(), orjson.loads(value))
            n += 1
    return n
