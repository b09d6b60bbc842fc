"""One pairs partition's step: a pairs-topic message -> windows -> detection -> what to emit.

Pure: no Kafka. The aggregate agent (``runtime.agents.aggregate``) and the scenario
evaluation (``sim.evaluate``) both run every message through ``PartitionStep.apply``, so
the worker and the evaluation cannot disagree on how windows, detection and the health
the attribution stage reads fit together.

* ``windows.PartitionWindows`` applies the message: closed windows, late partials (with
  their origin), complete grid intervals;
* every complete interval is scored by ``detect.Detection`` (when the step has one); a
  detector error is logged and counted (``StepOutput.detect_errors``), never raised: a
  detector bug must not stop the windows;
* ``take_health`` gathers, for the attribution stage, the health of every key scored since
  its last call, the alerts opened meanwhile and how far the partition has scored
  (``wire.records.HealthUpdate``).

Examples
--------
>>> from pipeline.wire.records import Origin, PairsMessage, Partial, ProgressMark
>>> step = PartitionStep(PartitionWindows(0, 600, 60, sources=1), Detection(interval_s=30, window_s=600))
>>> part = Partial(["s1", "a1", "v"], ["s2", "a2", "v"], 0, "h1", [100, 0, 0, 0, 1, 1, 1, 900], {157: 1},
...                [0, 0], [None, None, None], None, 7, {})
>>> out = step.apply(PairsMessage(Origin(0, 10), 0, 0, [part]))
>>> out.applied, out.intervals, step.take_health()   # upto moved (nothing before 0 - 30 is pending)
(1, 0, HealthUpdate(partition=0, upto=-30, health=[], opened=[]))
>>> step.take_health() is None   # nothing new
True
>>> out = step.apply(ProgressMark(0, 700))
>>> [w.window_start for w in out.closed], out.intervals
([0], 1)
>>> u = step.take_health()
>>> u.partition, u.upto, len(u.health), step.take_health()
(0, 670, 2, None)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pipeline.aggregate.windows import PartitionWindows
from pipeline.detect.detection import Detection
from pipeline.ingest.step import deadletter
from pipeline.ingest.validate import Rejection
from pipeline.wire.events import AnomalyEvent
from pipeline.wire.records import (
    SAMPLES,
    DeadLetter,
    FlowWindow,
    GridInterval,
    HealthUpdate,
    LatePartial,
    PairsMessage,
    ProgressMark,
)

__all__ = ["PartitionStep", "StepOutput"]

log = logging.getLogger("flowmon.aggregate")


@dataclass(slots=True)
class StepOutput:
    """What one or more ``PartitionStep.apply`` calls produced (they add to it)."""

    closed: list[FlowWindow] = field(default_factory=list)  # closed windows, to the windows topic
    late: list[LatePartial] = field(default_factory=list)  # late partials with their origin, to dead-letter
    alerts: list[AnomalyEvent] = field(default_factory=list)  # alert events, to the anomalies topic
    opened: list[AnomalyEvent] = field(default_factory=list)  # the "opened" ones among them
    intervals: int = 0  # complete grid intervals handed to detection
    applied: int = 0  # partials applied to their window
    duplicates: int = 0  # partials of reports already applied
    late_for_detection: int = 0  # partials applied after their interval was scored
    stale_marks: int = 0  # idle marks ignored: made before their source was last woken
    detect_errors: int = 0  # intervals detection failed on (logged)


class PartitionStep:
    """The windows and (optionally) the detectors of one pairs partition, applied in order."""

    def __init__(self, windows: PartitionWindows, detection: Detection | None = None) -> None:
        self.windows = windows
        self.detection = detection
        self.partition = windows.partition
        self._opened: list[AnomalyEvent] = []  # opened since the last take_health
        self._sent_upto: int | None = None  # the last upto take_health handed out

    def apply(self, msg: PairsMessage | ProgressMark | dict[str, Any], out: StepOutput | None = None) -> StepOutput:
        """Apply one pairs-topic message (a record, or its decoded JSON); adds to ``out`` when given.
        The same as :meth:`place` then :meth:`score` of every interval it completed."""
        if out is None:
            out = StepOutput()
        self.score(self.place(msg, out), out)
        return out

    def place(self, msg: PairsMessage | ProgressMark | dict[str, Any], out: StepOutput) -> list[GridInterval]:
        """The windows' part of :meth:`apply`: returns the grid intervals the message completed, which
        :meth:`score` must then be given, in order, before the next message (the aggregate agent scores
        them a few at a time, giving the event loop a turn in between: a message that completes a
        backlog's intervals is seconds of scoring)."""
        res = self.windows.apply(msg)
        out.closed += res.closed
        out.late += res.late
        out.applied += res.applied
        out.duplicates += res.duplicates
        out.late_for_detection += res.late_for_detection
        out.stale_marks += res.stale_marks
        return res.intervals if self.detection is not None else []

    def score(self, intervals: list[GridInterval], out: StepOutput) -> None:
        """Score complete grid intervals (from :meth:`place`) with the detectors."""
        det = self.detection
        if det is None or not intervals:
            return
        for iv in intervals:
            try:
                new = det.score_interval(iv)
            except Exception:  # a detector bug must not stop the windows
                log.exception("detection failed on %s->%s at %s", iv.src[0], iv.dst[0], iv.t)
                out.detect_errors += 1
                continue
            out.alerts += new
            opened = [e for e in new if e.event == "opened"]
            out.opened += opened
            self._opened += opened
        out.intervals += len(intervals)

    def take_health(self) -> HealthUpdate | None:
        """The attribution stage's update since the last call, or None when there is nothing new
        (no key scored, no alert opened, and ``upto`` unchanged). None without detection."""
        if self.detection is None:
            return None
        health = self.detection.take_health()
        opened, upto = self._opened, self.windows.iv_upto
        if not health and not opened and (upto is None or upto == self._sent_upto):
            return None
        self._opened = []
        if upto is not None:
            self._sent_upto = upto
        return HealthUpdate(self.partition, upto, health, opened)

    def deadletter(self, late: LatePartial, reports_topic: str) -> DeadLetter:
        """The dead letter of a late partial (its window had closed)."""
        part, origin = late
        pw = self.windows
        rej = Rejection("late", f"window {part.window_start} of {part.src[0]}->{part.dst[0]} "
                        f"closed (watermark {pw.watermark}, lateness {pw.lateness_s} s)",
                        samples=part.counters[SAMPLES], payload=part)
        return deadletter(rej, "aggregate", reports_topic, origin.partition, origin.offset)
