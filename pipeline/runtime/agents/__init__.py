"""Shell: the Faust agents that wire topics and state to the pure cores, one module each.

* ``ingest`` (reports topic, read below Faust by an aiokafka consumer in its own group,
  ``<app_id>-ingest``, in batches; a task of the app): ``ingest.step.Ingest`` validates,
  places and pre-aggregates each report; one pairs message per pairs partition and batch,
  and dead letters, delivered before the batch's offsets are committed.
* ``marks`` (timer): promises, per reports partition the ingest reader owns, how far it got
  (``ingest.progress.SourceProgress``), on every pairs partition.
* ``aggregate`` (pairs topic): each message through its partition's
  ``aggregate.step.PartitionStep`` (windows, detection); closed windows to the windows
  topic, late partials to the dead-letter topic, alert events to the anomalies topic,
  the health of scored keys to the health topic, the changed state to the state topic
  (``runtime.restore``), all durable before the batch is acked.
* ``attribute`` (health topic, one partition): ``attribute.correlate.AttributionStage``;
  attributions and NHI records out, its state to its own topic.
* ``monitors`` (windows and NHI topics): each closed pair window and NHI period through
  ``monitors.evaluate`` against the current monitors (followed from the monitors topic by
  ``runtime.monitors.MonitorFollower``); monitor windows and monitor NHI records out.
* ``rebalance``: what a worker forgets or restores when partitions move.

At-least-once: Faust flushes the producer before it commits offsets (and the ingest reader
waits for its batch's deliveries before committing), so whatever an acked event caused is
durable first; replays are absorbed by the windows' per-source offsets (see ``aggregate.windows``).
"""

from __future__ import annotations

from pipeline.ingest.topology import Topology
from pipeline.runtime.agents import aggregate, attribute, ingest, marks, monitors, rebalance
from pipeline.runtime.agents.context import Context
from pipeline.runtime.app import Flow

__all__ = ["install", "Context"]


def install(flow: Flow, topology: Topology | None = None) -> Context:
    """Define the agents, the timer and the rebalance hooks on ``flow.app``; returns their shared context."""
    ctx = Context.create(flow, topology)
    for module in (ingest, marks, aggregate, attribute, monitors, rebalance):
        module.install(ctx)
    return ctx
