"""The marks timer: per reports partition owned, a progress mark to every pairs partition."""

from __future__ import annotations

import time
from typing import Any

from pipeline.runtime.agents.context import Context
from pipeline.wire.records import encode_mark

__all__ = ["install"]


def _committed(consumer: Any, tp: Any) -> int:
    """Where the group committed ``tp``, as Faust last read or wrote it (0 if never).

    Faust keeps it in ``Consumer._committed_offset`` and has no public accessor for it: the
    public ``position()`` is the *fetch* position, which runs ahead of what was processed
    (prefetched batches), and would declare a partition caught up before its buffered reports
    were processed; ``committed()`` asks the broker every tick. The one private read, here.
    """
    return consumer._committed_offset.get(tp) or 0


def install(ctx: Context) -> None:
    app, t, s, progress = ctx.flow.app, ctx.topics, ctx.settings, ctx.progress

    @app.timer(s.mark_interval_s)
    async def marks() -> None:
        now = time.time()
        mine = [tp for tp in app.consumer.assignment() if tp.topic == t.reports]
        # idle candidates: nothing processed for source_idle_s
        idle = {tp for tp in mine if progress.idle(tp.partition, now)}
        for tp in mine:
            caught_up = False
            # the log end as the last fetch saw it: no broker round trip (ListOffsets took ~1 s per
            # tick on Kafka), and right on Tansu, whose ListOffsets answers the last batch's base + 1
            try:
                end = app.consumer.highwater(tp) if tp in idle else None
            except Exception:  # not fetched yet, or mid-rebalance: try again next tick
                end = None
            if end is not None:
                last = progress.last_offset.get(tp.partition)
                # next offset to process: after what we processed, else where the group committed
                nxt = last + 1 if last is not None else _committed(app.consumer, tp)
                caught_up = nxt >= end
            mark = progress.mark(tp.partition, now, caught_up)
            if mark is None:
                continue
            payload = encode_mark(mark)
            for p in range(s.partitions):
                await ctx.send(t.pairs, payload, p)
