"""The monitor agents: closed pair windows and NHI periods -> the monitors they fall in or touch.

Stateless: every record is evaluated against the monitors current when it is read
(``runtime.monitors.MonitorFollower``, which every worker runs on its own), and what it
gives is keyed so that a replay collapses in ClickHouse (``monitor_windows``,
``monitor_nhi``). Nothing is read before the follower has caught up with the monitors
topic as it was at the worker's start. Records are sent, and delivered, before the batch
is acked.
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from pipeline.monitors.evaluate import nhi_records, sides, window_records
from pipeline.monitors.scope import Placements
from pipeline.runtime.agents.context import Context
from pipeline.runtime.monitors import MonitorFollower
from pipeline.wire.records import encode, later_part

__all__ = ["install"]

log = logging.getLogger("flowmon.agents")


def install(ctx: Context) -> None:
    flow, t = ctx.flow, ctx.topics
    follower = MonitorFollower(flow.conn, t.monitors)
    placements = Placements.from_topology(ctx.topology)
    ctx.monitors = follower
    nhi_topic = flow.app.topic(t.nhi, partitions=t.partitions_of(t.nhi), key_type=bytes, value_type=bytes,
                               key_serializer="raw", value_serializer="raw")

    @flow.app.task
    async def follow_monitors() -> None:
        await follower.run()

    @flow.app.agent(flow.windows, name="monitor_windows")
    async def monitor_windows(stream):
        async for events in stream.take_events(1000, within=0.05):
            await follower.ready.wait()
            monitors = list(follower.monitors.values())
            pending = []
            for event in events:
                try:
                    w = orjson.loads(event.value)
                    if later_part(w):  # part 0 of this window was evaluated
                        continue
                    src, dst = sides(w)
                    placements.learn(src)
                    placements.learn(dst)
                    recs = window_records(w, monitors, placements.region)
                except Exception:  # a bug or a foreign record must not stop the stream; it stays in the topic
                    log.exception("monitors: window %s@%d not evaluated", t.windows, event.message.offset)
                    continue
                for r in recs:
                    key = f"{r['monitor']}|{r['src_subnet']}|{r['dst_subnet']}".encode()
                    pending.append(await ctx.send(t.monitor_windows, encode(r), key=key))
            if pending:
                await asyncio.gather(*pending)

    @flow.app.agent(nhi_topic, name="monitor_nhi")
    async def monitor_nhi(stream):
        async for events in stream.take_events(100, within=0.05):
            await follower.ready.wait()
            monitors = list(follower.monitors.values())
            pending = []
            for event in events:
                try:
                    recs = nhi_records(orjson.loads(event.value), monitors, placements)
                except Exception:
                    log.exception("monitors: NHI period %s@%d not evaluated", t.nhi, event.message.offset)
                    continue
                for r in recs:
                    key = f"{r['monitor']}|{r['scope_kind']}|{r['scope']}".encode()
                    pending.append(await ctx.send(t.monitor_nhi, encode(r), key=key))
            if pending:
                await asyncio.gather(*pending)
