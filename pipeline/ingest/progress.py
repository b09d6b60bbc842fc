"""How far the ingest stage got on each reports partition it owns: the progress marks it promises.

Pure: no Kafka. The marks timer (``runtime.agents.marks``) asks for a mark per owned
reports partition and sends it (``wire.records.encode_mark``) to every pairs partition.
"""

from __future__ import annotations

from pipeline.wire.records import ProgressMark

__all__ = ["SourceProgress"]


class SourceProgress:
    """How far the ingest stage got on each reports partition it owns (for progress marks).

    A partition's mark carries the largest event time processed on it. When the partition
    is idle (caught up, nothing new for ``idle_s`` wall seconds) the mark also says so, with
    the wall clock less ``idle_lag_s``: the aggregator then stops waiting for it, and once
    every partition is idle it closes windows older than that clock (a finished stream).
    Every mark carries ``now`` (in ms) as its ``at``: ``now`` is when the caller began to find out
    whether the partition is caught up, so a mark is never dated after what it says.

    >>> sp = SourceProgress(idle_s=5, idle_lag_s=120)
    >>> sp.mark(0, now=1.0, caught_up=True) is None   # nothing seen, not idle yet: nothing to promise
    True
    >>> sp.processed(0, offset=9, start=1000, now=50.0)
    >>> sp.mark(0, now=51.0, caught_up=True)
    ProgressMark(source=0, event_time=1000, idle=None, at=51000)
    >>> sp.mark(0, now=1200.0, caught_up=True)
    ProgressMark(source=0, event_time=1000, idle=1080, at=1200000)
    >>> sp.mark(0, now=1200.0, caught_up=False)
    ProgressMark(source=0, event_time=1000, idle=None, at=1200000)
    """

    def __init__(self, idle_s: float, idle_lag_s: float) -> None:
        self.idle_s = idle_s
        self.idle_lag_s = idle_lag_s
        self.max_start: dict[int, int] = {}
        self.last_offset: dict[int, int] = {}
        self.last_seen: dict[int, float] = {}

    def processed(self, partition: int, offset: int, start: int | None, now: float) -> None:
        self.last_offset[partition] = offset
        self.last_seen[partition] = now
        if start is not None and start > self.max_start.get(partition, -1):
            self.max_start[partition] = start

    def assigned(self, partition: int, now: float) -> None:
        self.last_seen.setdefault(partition, now)

    def revoked(self, partition: int) -> None:
        for d in (self.max_start, self.last_offset, self.last_seen):
            d.pop(partition, None)

    def idle(self, partition: int, now: float) -> bool:
        """Nothing processed on ``partition`` for ``idle_s`` (a candidate: the caller checks it is caught up)."""
        return now - self.last_seen.get(partition, now) >= self.idle_s

    def mark(self, partition: int, now: float, caught_up: bool) -> ProgressMark | None:
        """The progress mark to send for ``partition`` now, or ``None`` (nothing to promise yet)."""
        best = self.max_start.get(partition)
        idle = caught_up and self.idle(partition, now)
        if best is None and not idle:
            return None
        return ProgressMark(partition, best, int(now - self.idle_lag_s) if idle else None, int(now * 1000))
