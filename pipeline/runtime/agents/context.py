"""What the agents share: the flow, the cores they feed, and the per-worker state they keep."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pipeline.attribute.correlate import AttributionStage
from pipeline.config import Settings
from pipeline.ingest.progress import SourceProgress
from pipeline.ingest.step import Ingest
from pipeline.ingest.topology import Topology
from pipeline.ingest.validate import Validator
from pipeline.runtime.app import Flow
from pipeline.runtime.gaps import Gaps
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.process import exit_on_failed_write
from pipeline.runtime.restore import PartitionState
from pipeline.runtime.topics import Topics

__all__ = ["Context", "PAIRS_MESSAGE_BYTES", "Pacer"]

#: Largest pairs (or health) message a stage sends (a batch's messages for one partition are split above it).
PAIRS_MESSAGE_BYTES = 512 * 1024


class Pacer:
    """Gives the event loop a turn every ``every_s`` seconds of an agent's work.

    An agent handles a whole batch (up to 1,000 pairs messages) between two awaits; on a
    backfill that was 6–13 s of pure CPU, during which nothing else on the loop ran: the
    sink's consumer missed its heartbeats (its group rebalanced), timers (progress marks,
    health) fired late. Faust waits for a batch's events to be acked before it lets a
    rebalance revoke their partitions, so yielding inside a batch is safe.

    Why 0.5 s: a turn lets the other agent cut its batches smaller, and smaller batches
    cost more (state written per batch). Measured on the week test (20 k small reports):
    no pacing 105 s, 1 s 130 s, 0.5 s 132 s, 50 ms 282 s. 0.5 s keeps the stall far
    below the session timeout at a modest cost.

    Why a turn is ``turn_s`` (2 ms) of the loop and not one ``sleep(0)``: ``sleep(0)`` lets
    every other task take *one* step, and then this agent has the loop for another 0.5 s.
    What the others do takes several steps each (a group rejoin, a fetch, a timer of mode:
    each await that waits on another is a step), so each advanced one step per 0.5 s. A
    thread sampling a 50-ms loop timer during a one-worker fleet backlog (Tansu) saw the loop
    unanswered for 3.1–4.0 s at a time with ``sleep(0)``, 0.6–1.4 s with 2 ms; end to end the
    same (median after/before 1.01 on Tansu, 1.02 on Kafka, two pairs each).
    """

    def __init__(self, every_s: float = 0.5, turn_s: float = 0.002) -> None:
        self.every_s = every_s
        self.turn_s = turn_s
        self._next = time.monotonic() + every_s

    async def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            await asyncio.sleep(self.turn_s)
            self._next = time.monotonic() + self.every_s


@dataclass
class Context:
    """The flow, the ingest core and the worker's state: pairs partitions' steps (``stores``,
    rebuilt after every rebalance), reports partitions' progress, the attribution stage."""

    flow: Flow
    core: Ingest
    progress: SourceProgress
    stores: dict[int, PartitionState] = field(default_factory=dict)
    stage: AttributionStage | None = None  # restored on its first batch (the health topic's one partition)
    topology: Topology | None = None
    monitors: Any = None  # the runtime.monitors.MonitorFollower the monitor agents read (set by their install)
    reader: Any = None  # the ingest stage's agents.ingest.ReportsReader (set by its install)
    gaps: Gaps = field(default_factory=Gaps)  # pairs partitions moved back to the message after their state's

    @classmethod
    def create(cls, flow: Flow, topology: Topology | None = None) -> Context:
        s = flow.settings
        core = Ingest(Validator(topology, max_future_s=s.max_future_s, max_message_bytes=s.max_message_bytes,
                                max_samples=s.max_samples_per_report), s.window_s, s.partitions, grid_s=s.interval_s)
        return cls(flow, core, SourceProgress(s.source_idle_s, s.source_idle_lag_s), topology=topology)

    @property
    def settings(self) -> Settings:
        return self.flow.settings

    @property
    def topics(self) -> Topics:
        return self.flow.topics

    @property
    def metrics(self) -> Metrics:
        return self.flow.metrics

    async def send(self, topic: str, value: bytes | None, partition: int | None = None, key: bytes | None = None,
                   headers: list[tuple[str, bytes]] | None = None):
        """Send through the worker's producer; returns the delivery future. A write that fails ends the worker
        before anything commits past it (``process.exit_on_failed_write``)."""
        fut = await self.flow.app.producer.send(topic, key, value, partition, None, headers)
        fut.add_done_callback(partial(exit_on_failed_write, topic))
        return fut
