"""The marks timer: per reports partition the ingest reader owns, a progress mark to every pairs partition."""

from __future__ import annotations

import time

from pipeline.runtime.agents.context import Context
from pipeline.wire.records import encode_mark

__all__ = ["install"]


def install(ctx: Context) -> None:
    app, t, s, progress = ctx.flow.app, ctx.topics, ctx.settings, ctx.progress

    @app.timer(s.mark_interval_s)
    async def marks() -> None:
        reader = ctx.reader
        if reader is None:
            return
        now, epoch = time.time(), reader.epoch
        mine = reader.assignment()
        # idle candidates: nothing processed for source_idle_s
        idle = {tp for tp in mine if progress.idle(tp.partition, now)}
        # caught up: the next offset to process is at the log end. First by the end the last fetch
        # saw (no broker round trip), then, for a partition that looks caught up, by the end asked
        # now: the last fetch's answer may predate reports that the next fetch is bringing (a fetch
        # that returned another partition's records while these were being produced), and an idle
        # mark sent then lets the other partitions close windows those reports belong to. Only
        # idle partitions are asked, once per tick, in one request.
        # (not fetched yet, or revoked mid-rebalance: next tick)
        maybe = [tp for tp in mine if tp in idle and reader.fetched_to_end(tp)]
        try:
            ends = await reader.end_offsets(maybe)
        except Exception:  # the broker is away, a rebalance: not caught up this tick
            ends = {}
        caught = {tp for tp in maybe if tp in ends and reader.next_offset(tp.partition) >= ends[tp]}
        async with reader.marks_lock:
            # a hand-over while the ends were asked: these marks may speak for partitions this worker lost,
            # after it woke them for their next owner (``ReportsReader.wake``); the next tick says what is true
            if reader.epoch != epoch:
                return
            idle_marks = 0
            for tp in mine:
                caught_up = tp in caught
                mark = progress.mark(tp.partition, now, caught_up)
                if mark is None:
                    continue
                idle_marks += mark.idle is not None
                payload = encode_mark(mark)
                for p in range(s.partitions):
                    await ctx.send(t.pairs, payload, p)
            ctx.metrics.idle_sources.set(idle_marks)
