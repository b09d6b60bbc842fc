"""The attribute agent: every pairs partition's health meets here (one partition: fleet-wide
correlation) -> ``AttributionStage`` -> attributions and NHI records; its state to its own topic."""

from __future__ import annotations

import asyncio
import logging
import time

from pipeline.attribute.correlate import AttributionStage
from pipeline.runtime.agents.context import Context, Pacer
from pipeline.runtime.restore import restore_stage
from pipeline.wire.events import HealthBatch
from pipeline.wire.records import encode

__all__ = ["install"]

log = logging.getLogger("flowmon.agents")


async def _publish(ctx: Context, recs: list[dict], nhi: list[dict]) -> list:
    t, m = ctx.topics, ctx.metrics
    futs = []
    for r in recs:
        futs.append(await ctx.send(t.attributions, encode(r), key=r["alert_id"].encode()))
        m.attributions.labels(cause=r["cause"]).inc()
    for r in nhi:
        futs.append(await ctx.send(t.nhi, encode(r), key=f"{r['scope_kind']}|{r['scope']}".encode()))
    return futs


def install(ctx: Context) -> None:
    flow, t, s, m = ctx.flow, ctx.topics, ctx.settings, ctx.metrics

    @flow.app.agent(flow.health, name="attribute")
    async def attribute(stream):
        pacer = Pacer()
        async for events in stream.take_events(1000, within=0.05):
            stage = ctx.stage
            if stage is None:
                stage = ctx.stage = AttributionStage(s.partitions, s.interval_s)
                replayed, recs, nhi = await restore_stage(flow.conn, t.attribution_state, t.health, stage,
                                                          events[0].message.offset, max_bytes=t.state_fetch_bytes)
                log.info("attribution stage restored: done up to %s, %d messages replayed", stage.done_upto, replayed)
                pending = await _publish(ctx, recs, nhi)
            else:
                pending = []
            now = time.time()
            for event in events:
                try:
                    # one interval at a time: a backlog's message can ready dozens, seconds of correlation,
                    # and the loop's other tasks get a turn between them
                    recs, nhi = stage.apply(HealthBatch.decode(event.value), now, event.message.offset, limit=1)
                    pending += await _publish(ctx, recs, nhi)
                    while stage.ready():
                        await pacer.tick()
                        pending += await _publish(ctx, *stage.more(now, limit=1))
                except Exception:  # a bug must not stop the stream; the message stays in the topic
                    log.exception("attribution failed on %s@%d", t.health, event.message.offset)
                    m.detect_errors.inc()
                    continue
                await pacer.tick()
            if pending:
                await asyncio.gather(*pending)
            nxt = stage.replay_from()
            state = {"stage": stage.state(), "replay_from": nxt if nxt is not None else events[-1].message.offset + 1}
            await ctx.send(t.attribution_state, encode(state), 0, b"stage")
