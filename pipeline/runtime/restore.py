"""Shell: the state of pairs partitions in their compacted topic, and reading it back.

The aggregate agent writes every changed key of a partition's ``aggregate.step.PartitionStep``
(its ``windows.PartitionWindows`` and ``detect.Detection``; ``PartitionState`` names the
keys, ``StateKey``; JSON value, or a tombstone) to partition p of the state topic, through
the worker's producer, before the events that caused the change are acknowledged. Whoever is
assigned pairs partition p next replays state partition p up to its end and rebuilds
the store. The state also says up to which pairs offset it reaches (``PAIRS_KEY``, written
last), so the pairs messages a replay brings again are skipped; report identities inside the
windows absorb the rest (a replay of the reports, re-sent reports).

Whole batches. A worker may die, or have the broker refuse its writes, part way through one
batch's writes; those of one partition are stored in the order they were sent, so what is left
is a prefix, and the replay starts from the previous batch's pairs offset. No order of the writes
makes every prefix a state that replay rebuilds exactly, so a batch's writes end with its pairs
offset, and a restore keeps only what the last pairs offset closes (:class:`StateLog`). (A batch
writes its detector keys, then its windows' states, their progress, the deletions of the windows
it forgot, and the pairs offset: ``PartitionState.iter_dirty``, ``PartitionWindows.iter_dirty``.)

Owners. A worker put out of the group without knowing it (paused past the session timeout)
may still deliver state writes after another worker took the partition over and restored it:
its producer sends what it had buffered when it resumes. The state topic keeps the last write
of each key, so a later restore would mix the two workers' keys, and skip (``PAIRS_KEY``)
pairs messages the stale keys never had. So whoever restores a partition first writes an
*owner marker* there (:func:`owner_marker`: a key of its own, never compacted away, naming a
writer id), and every state write it makes carries that id in a record header
(``WRITER_HEADER``). Reading a partition back, a record whose writer is not the one the last
marker before it names is ignored: a stale owner's late writes never count. The restoring worker
reads past its own marker, so it sees exactly what any later restore will see. A marker counts
only if it was made later (wall clock, in it) than the owner marker before it: the aggregate
agent makes one only after the group coordinator confirmed it is a member (``runtime.fence``),
so a worker paused between that and its marker's delivery made it before it was put out of
the group, at least a session timeout before its successor made its own. (This assumes the
workers' clocks agree to well within the session timeout.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import orjson
from aiokafka import TopicPartition

from pipeline.aggregate.step import PartitionStep
from pipeline.aggregate.windows import PartitionWindows
from pipeline.detect.detection import Detection
from pipeline.runtime import kafka
from pipeline.wire.events import HealthBatch
from pipeline.wire.records import encode, encode_state

__all__ = ["restore", "restore_many", "restore_stage", "PartitionState", "StateKey", "StateWrite", "DETECT_KEY",
           "PAIRS_KEY", "OWNER_KEY", "WRITER_HEADER", "new_writer", "owner_marker", "Restored", "restore_owned",
           "StateLog", "load_state"]

#: Second element of the state keys that hold detector state: ``[partition, "__detect__", scope, a, b]``.
DETECT_KEY = "__detect__"

#: Second element of an owner marker's key: ``[partition, "__owner__", writer]`` -> ``{"writer": writer, "at": t}``.
OWNER_KEY = "__owner__"

#: Record header naming the writer (the owner marker's id) of a state write.
WRITER_HEADER = "flowmon-writer"

#: Second element of the key that says how far in the pairs topic a partition's state reaches:
#: ``[partition, "__pairs__"]`` -> ``{"offset": N}`` (every message up to offset N is in the state).
PAIRS_KEY = "__pairs__"


class StateKey(NamedTuple):
    """A state-topic key: JSON ``[partition, "__detect__", scope, a, b]`` for a detector key, else
    a windows key (``windows.PartitionWindows.key_str``).

    >>> k = StateKey.detector(3, ("pair", "s1", "s2"))
    >>> k.text, StateKey.parse(k.text) == k
    ('[3,"__detect__","pair","s1","s2"]', True)
    >>> StateKey.parse('[3,"__progress__"]').detector_key is None
    True
    """

    partition: int
    detector_key: tuple[str, ...] | None  # the detector's key, or None: a windows key
    text: str

    @classmethod
    def detector(cls, partition: int, key: tuple[str, ...]) -> StateKey:
        return cls(partition, tuple(key), orjson.dumps([partition, DETECT_KEY, *key]).decode())

    @classmethod
    def parse(cls, text: str) -> StateKey:
        parts = orjson.loads(text)
        return cls(parts[0], tuple(parts[2:]) if parts[1] == DETECT_KEY else None, text)


def new_writer() -> str:
    """A writer id for the owner marker of one restore (unique across workers and restarts)."""
    return uuid.uuid4().hex


def owner_marker(partition: int, writer: str, at: float) -> StateWrite:
    """The record that makes ``writer`` the owner of state partition ``partition`` from here on,
    made at wall-clock time ``at``.

    >>> w = owner_marker(2, "ab12", 1700000000.5)
    >>> w.key.text, orjson.loads(w.value)
    ('[2,"__owner__","ab12"]', {'writer': 'ab12', 'at': 1700000000.5})
    """
    return StateWrite(StateKey(partition, None, orjson.dumps([partition, OWNER_KEY, writer]).decode()),
                      encode({"writer": writer, "at": at}))


def _marker(key: bytes | None, value: bytes | None) -> tuple[bytes, float] | None:
    """An owner marker's writer (as the header carries it) and time, or None for any other record."""
    if key is None or value is None or b'"__owner__"' not in key:
        return None
    parts = orjson.loads(key)
    if len(parts) != 3 or parts[1] != OWNER_KEY:
        return None
    return parts[2].encode(), float(orjson.loads(value).get("at", 0.0))


def _writer_of(record: Any) -> bytes | None:
    for name, value in record.headers or ():
        if name == WRITER_HEADER:
            return value
    return None


class Restored(NamedTuple):
    """What a restore loaded from one partition: keys loaded, records ignored as a stale owner's, and the
    keys the restoring owner must write again (``rewrite``: key -> the value it loaded): those whose last
    record is one it ignored (a stale owner's, or part of a batch whose writes were cut). Compaction keeps
    only a key's last record; without a new write by the owner, it would in time remove the value that
    counts and leave the ignored one, which every later restore ignores: the key would be lost (a quiet
    pair's window or detector state, never rewritten). ``torn``: the records of an unfinished batch."""

    keys: int
    ignored: int
    rewrite: dict[bytes, bytes] = {}
    torn: int = 0


def _is_pairs_key(key: bytes | None) -> bool:
    return key is not None and key.endswith(b',"__pairs__"]')


class StateLog:
    """What a restore keeps of one state partition, fed its records in offset order (pure: no Kafka).

    * Owner markers: a record written by another writer than the one the last marker names is ignored
      (a stale owner's, ``runtime.fence``); a marker made earlier than the current owner's is ignored.
    * Batches: a batch's writes end with its pairs offset (``PartitionState.iter_dirty``), and only
      whole batches count. The writes after the owner's last pairs offset are an unfinished batch (the
      worker died, or the broker refused a write, part way through): they are kept aside, and dropped
      when a new owner's marker comes or the partition ends. Part of a batch is not a state the pairs
      messages can be replayed onto: its progress may already have closed and forgotten windows whose
      deletions it did not reach, so the replay would find them open with an older state while the
      watermark says they closed, close them at its first step before their messages come again, and
      drop those messages as read again (seen on Apache Kafka with the state topic refusing writes).

    >>> log = StateLog()
    >>> log.take(b'[0,"__owner__","w1"]', b'{"writer":"w1","at":1.0}', None)
    >>> for k, v in ((b'[0,60,"a","b"]', b'{"n":1}'), (b'[0,"__pairs__"]', b'{"offset":9}'),
    ...              (b'[0,60,"a","b"]', b'{"n":2}'), (b'[0,"__progress__"]', b'{"w":1}')):
    ...     log.take(k, v, b"w1")
    >>> log.finish()
    >>> sorted(log.latest.items()), log.torn, sorted(log.rewrite())
    ([(b'[0,"__pairs__"]', b'{"offset":9}'), (b'[0,60,"a","b"]', b'{"n":1}')], 2, [b'[0,60,"a","b"]'])
    """

    def __init__(self, batches: bool = True) -> None:
        #: False: every record counts on its own (a topic whose writes are single records, the attribution stage's)
        self.batches = batches
        self.owner: bytes | None = None  # None: no marker yet, every record counts
        self.owner_at = float("-inf")
        self.latest: dict[bytes, bytes | None] = {}  # key -> last value of the whole batches
        self.pending: dict[bytes, bytes | None] = {}  # the current owner's writes since its last pairs offset
        self.ignored = 0
        self.torn = 0
        self.shadowed: set[bytes] = set()  # keys whose last record was ignored or torn

    def take(self, key: bytes | None, value: bytes | None, writer: bytes | None) -> None:
        """One record, in offset order (``writer``: its :data:`WRITER_HEADER`, or None)."""
        marker = _marker(key, value)
        if marker is not None:
            # a marker made before the current owner's is a stale worker's, delivered late: its maker
            # was still in the group when it made it, so the current owner's came later
            if marker[1] > self.owner_at:
                self._drop_pending()  # the previous owner's unfinished batch never counts
                self.owner, self.owner_at = marker
            else:
                self.ignored += 1
        elif self.owner is not None and writer != self.owner:
            self.ignored += 1
            if key is not None:
                self.shadowed.add(key)
        elif key is not None:
            self.pending[key] = value
            self.shadowed.discard(key)  # its last record is this one (dropped with its batch if that is cut)
            if not self.batches or _is_pairs_key(key):  # the batch is whole: it counts
                self.latest.update(self.pending)
                self.pending.clear()

    def finish(self) -> None:
        """The partition's end: an unfinished batch there does not count."""
        self._drop_pending()

    def _drop_pending(self) -> None:
        self.torn += len(self.pending)
        self.shadowed.update(self.pending)
        self.pending.clear()

    def rewrite(self) -> dict[bytes, bytes]:
        """The keys the restoring owner writes again, with the value that counts (see :class:`Restored`)."""
        return {k: v for k in sorted(self.shadowed) if (v := self.latest.get(k)) is not None}


class StateWrite(NamedTuple):
    """One record for the state topic: key, JSON value or None (a tombstone)."""

    key: StateKey
    value: bytes | None


class PartitionState:
    """What one pairs partition keeps (one state topic partition): its step, i.e. its windows and,
    optionally, its detectors."""

    def __init__(self, windows: PartitionWindows, detection: Detection | None = None) -> None:
        self.step = PartitionStep(windows, detection)
        self.windows = windows
        self.detection = detection
        self.partition = windows.partition
        #: Every pairs message up to this offset is in the state (-1: none). The aggregate agent skips
        #: what a replay brings again below it: a replay of the pairs topic from the group's committed
        #: offset (behind what the state holds after a crash or a rebalance) can reach back further
        #: than the windows remember the reports they closed with (one window length), and would
        #: dead-letter as late what the state already counts.
        self.pairs_offset = -1
        self._pairs_dirty = False
        #: the writer id of the owner marker this state was restored under (its writes carry it)
        self.writer: str | None = None

    def applied(self, offset: int) -> None:
        """The pairs message at ``offset`` is in the state now."""
        if offset > self.pairs_offset:
            self.pairs_offset = offset
            self._pairs_dirty = True

    def load(self, key: str, val: dict[str, Any]) -> None:
        if key == self._pairs_key():
            self.pairs_offset = max(self.pairs_offset, int(val["offset"]))
            return
        k = StateKey.parse(key)
        if k.detector_key is not None:
            if self.detection is not None:
                self.detection.load(k.detector_key, val)
        else:
            self.windows.load(key, val)

    def take_dirty(self) -> list[StateWrite]:
        """Changed keys: detector keys first, then the windows' (``PartitionWindows.iter_dirty``: states, the
        progress, deletions), then the pairs offset.

        The writes of one partition arrive in order, so if a crash loses the tail of a
        batch's writes, a detector may have recorded an interval whose window state still
        holds it unscored; it is then scored again on restart, and ``Detection`` skips it
        (each key remembers the last interval it scored). The reverse order would lose it.
        """
        return list(self.iter_dirty())

    def iter_dirty(self) -> Iterator[StateWrite]:
        """:meth:`take_dirty` one write at a time, in the same order, each state built and encoded when it is
        reached: the aggregate agent hands each to the producer before the next is made, so a batch that
        scored tens of thousands of keys never holds all their states at once. What is dirty is taken
        when the iteration starts."""
        partition = self.partition
        wrote = False
        if self.detection is not None:
            for k, v in self.detection.iter_dirty():
                wrote = True
                yield StateWrite(StateKey.detector(partition, k), None if v is None else encode_state(v))
        for text, v in self.windows.iter_dirty():
            wrote = True
            yield StateWrite(StateKey(partition, None, text), None if v is None else encode_state(v))
        # last, and after every batch that wrote anything: it makes the batch whole (``StateLog``), and once it
        # is durable, every write before it in the partition is too
        if self._pairs_dirty or wrote:
            yield self.pairs_write()

    def pairs_write(self) -> StateWrite:
        """The write of the pairs offset the state reaches: it ends a batch's writes."""
        self._pairs_dirty = False
        return StateWrite(StateKey(self.partition, None, self._pairs_key()), encode({"offset": self.pairs_offset}))

    def _pairs_key(self) -> str:
        return orjson.dumps([self.partition, PAIRS_KEY]).decode()


async def restore(conn: kafka.Connection | str, topic: str, store: PartitionWindows | PartitionState, **kw) -> int:
    """Load partition ``store.partition`` of ``topic`` into ``store``; returns the keys loaded."""
    return (await restore_many(conn, topic, [store], **kw))[0]


async def restore_many(conn: kafka.Connection | str, topic: str, stores: list[PartitionWindows] | list[PartitionState], max_bytes: int = 8 << 20,
                       timeout_s: float = 120.0, batches: bool = True) -> list[int]:
    """``restore`` for several partitions with one consumer; returns the keys loaded per store.

    Reads each partition from its beginning to its end (:func:`kafka.read_to_end`), keeping the
    latest value of each key, then loads the keys whose latest value is not a tombstone. A record
    written by another writer than the one the last owner marker before it names is ignored, and so
    are the writes after the last pairs offset (a batch cut part way; ``batches=False``: every record
    is whole by itself). :class:`StateLog` says which count.
    """
    return [r.keys for r in await restore_owned(conn, topic, stores, max_bytes=max_bytes, timeout_s=timeout_s,
                                                batches=batches)]


async def restore_owned(conn: kafka.Connection | str, topic: str, stores: list[PartitionWindows] | list[PartitionState],
                        max_bytes: int = 8 << 20, timeout_s: float = 120.0, batches: bool = True) -> list[Restored]:
    """:func:`restore_many`, also saying per store how many records were ignored (a stale owner's, a cut
    batch's). ``batches``: only whole batches count (:class:`StateLog`)."""
    if not stores:
        return []
    tps = [TopicPartition(topic, st.partition) for st in stores]
    consumer = kafka.reader(conn, max_bytes, auto_offset_reset="earliest")
    await consumer.start()
    logs = {tp.partition: StateLog(batches) for tp in tps}

    def take(tp: TopicPartition, msg: Any) -> None:
        logs[tp.partition].take(msg.key, msg.value, _writer_of(msg))

    try:
        await kafka.read_to_end(consumer, tps, take, timeout_s=timeout_s)
    finally:
        await consumer.stop()
    out = []
    for st in stores:
        log = logs[st.partition]
        log.finish()
        out.append(Restored(load_state(st, log.latest), log.ignored, log.rewrite(), log.torn))
    return out


def load_state(store: PartitionWindows | PartitionState, latest: dict[bytes, bytes | None]) -> int:
    """Load the keys of ``latest`` (:attr:`StateLog.latest`) that are not deleted into ``store``; how many."""
    n = 0
    for key, value in latest.items():
        if value is not None:
            store.load(key.decode(), orjson.loads(value))
            n += 1
    return n


class _StageState:
    partition = 0

    def __init__(self) -> None:
        self.value: dict | None = None

    def load(self, key: str, val: dict) -> None:
        if key == "stage":
            self.value = val


async def restore_stage(conn: kafka.Connection | str, state_topic: str, health_topic: str, stage, first_offset: int,
                        timeout_s: float = 120.0, max_bytes: int = 8 << 20) -> tuple[int, list[dict], list[dict]]:
    """Restore an ``attribute.AttributionStage``: its saved state, then the health messages from the
    saved restart point up to ``first_offset`` (where the stream resumes). Returns how many were
    replayed, and the attribution and NHI records intervals completed during the replay produced
    (the caller publishes them).

    The state is written after every batch; intervals still pending then are read again from the
    health topic, and the stage counts each (interval, key) once, so nothing is lost or doubled.
    """
    holder = _StageState()
    await restore_many(conn, state_topic, [holder], max_bytes=max_bytes, batches=False)  # one record: whole itself
    recs: list[dict] = []
    nhi: list[dict] = []
    if holder.value is None:
        return 0, recs, nhi
    stage.load(holder.value["stage"])
    start = holder.value["replay_from"]
    if start >= first_offset:
        return 0, recs, nhi
    tp = TopicPartition(health_topic, 0)
    consumer = kafka.reader(conn, max_bytes)
    await consumer.start()
    n = 0
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        deadline = time.monotonic() + timeout_s
        while True:
            batch = await consumer.getmany(tp, timeout_ms=500)
            for msg in batch.get(tp, []):
                if msg.offset >= first_offset:
                    return n, recs, nhi
                r, h = stage.apply(HealthBatch.decode(msg.value), time.time(), msg.offset)
                recs += r
                nhi += h
                n += 1
            if await consumer.position(tp) >= first_offset:
                return n, recs, nhi
            if time.monotonic() > deadline:
                raise TimeoutError(f"replaying {health_topic} from {start}")
    finally:
        await consumer.stop()
