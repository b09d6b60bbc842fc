"""Rebalance hooks: after any rebalance every pairs partition's state is rebuilt from the state
topic (``aggregate.store``), and reports partitions' progress follows the assignment.

An in-memory state is never trusted across a rebalance (another worker may have advanced
that partition meanwhile); the write-through kept the state topic current for the
partitions we keep.
"""

from __future__ import annotations

import logging
import time

from faust.types import TP

from pipeline.runtime.agents.context import Context

__all__ = ["install"]

log = logging.getLogger("flowmon.agents")


def install(ctx: Context) -> None:
    app, t, progress = ctx.flow.app, ctx.topics, ctx.progress

    @app.on_partitions_revoked.connect
    async def on_revoked(sender, revoked: set[TP], **kwargs) -> None:
        ctx.stores.clear()
        if any(tp.topic == t.health for tp in revoked):
            ctx.stage = None  # restored from its state topic by whoever gets the partition next
        for tp in revoked:
            if tp.topic == t.reports:
                progress.revoked(tp.partition)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender, assigned: set[TP], **kwargs) -> None:
        ctx.stores.clear()
        now = time.time()
        mine = {tp.partition for tp in assigned if tp.topic == t.reports}
        for p in list(progress.last_seen):
            if p not in mine:
                progress.revoked(p)
        for p in mine:
            progress.assigned(p, now)
        log.info("assigned reports %s, pairs %s", sorted(mine),
                 sorted(tp.partition for tp in assigned if tp.topic == t.pairs))
