"""Rebalance hooks of the Faust group: after any rebalance every pairs partition's state is rebuilt
from the state topic (``aggregate.store``). (The reports partitions' progress follows the ingest
reader's own group: ``agents.ingest.ReportsReader``.)

An in-memory state is never trusted across a rebalance (another worker may have advanced
that partition meanwhile); the write-through kept the state topic current for the
partitions we keep.
"""

from __future__ import annotations

import logging

from faust.types import TP

from pipeline.runtime.agents.context import Context

__all__ = ["install"]

log = logging.getLogger("flowmon.agents")


def install(ctx: Context) -> None:
    app, t = ctx.flow.app, ctx.topics

    @app.on_partitions_revoked.connect
    async def on_revoked(sender, revoked: set[TP], **kwargs) -> None:
        ctx.stores.clear()
        ctx.gaps.clear()
        if any(tp.topic == t.health for tp in revoked):
            ctx.stage = None  # restored from its state topic by whoever gets the partition next

    @app.on_partitions_assigned.connect
    async def on_assigned(sender, assigned: set[TP], **kwargs) -> None:
        ctx.stores.clear()
        ctx.gaps.clear()
        log.info("assigned pairs %s", sorted(tp.partition for tp in assigned if tp.topic == t.pairs))
