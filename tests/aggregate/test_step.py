"""One pairs partition's step: windows -> detection -> health, as both the worker and the evaluation run it."""

from __future__ import annotations

import dataclasses
import logging

from pipeline.aggregate.step import PartitionStep, StepOutput
from pipeline.aggregate.windows import PartitionWindows
from pipeline.detect.detection import Detection
from pipeline.wire.records import SAMPLES, Origin, PairsMessage, Partial, ProgressMark

SRC, DST = ["s1", "a1", "v"], ["s2", "a2", "v"]


def _part(host: str, rid: int, ws: int = 0, retrans: int = 0) -> Partial:
    return Partial(SRC, DST, ws, host, [15_000_000, 150_000, retrans, 0, 3, 3, 3, 2400], {154: 3}, [retrans, 0],
                   [None, None, None], None, rid, {154: 3})


def _stream(n: int = 60, bad_from: int = 40) -> list:
    """Two hosts, one report each per 30-s interval, retransmissions from interval ``bad_from`` on; a
    mark after each interval."""
    msgs: list = []
    for i in range(n):
        t = 30 * i
        r = 5000 if i >= bad_from else 10
        msgs.append(PairsMessage(Origin(0, 2 * i), t, t, [_part("h0", 2 * i, t - t % 600, r)]))
        msgs.append(PairsMessage(Origin(0, 2 * i + 1), t, t, [_part("h1", 2 * i + 1, t - t % 600, r)]))
        msgs.append(ProgressMark(0, t))
    return msgs


def _new() -> PartitionStep:
    return PartitionStep(PartitionWindows(0, 600, 120, 1), Detection(interval_s=30, window_s=600))


def test_step_is_windows_then_detection_as_wired_by_hand():
    """The step gives what wiring ``PartitionWindows`` to ``Detection`` by hand gives (the agent and
    the evaluation each did so before)."""
    step, pw, det = _new(), PartitionWindows(0, 600, 120, 1), Detection(interval_s=30, window_s=600)
    out = StepOutput()
    closed, alerts, intervals = [], [], 0
    for msg in _stream():
        step.apply(msg, out)
        res = pw.apply(msg)
        closed += res.closed
        intervals += len(res.intervals)
        for iv in res.intervals:
            alerts += det.score_interval(iv)
    strip = lambda rs: [dataclasses.replace(r, closed_at=0.0) for r in rs]  # noqa: E731
    assert strip(out.closed) == strip(closed)
    assert out.alerts == alerts and any(a.event == "opened" for a in alerts)
    assert out.opened == [a for a in alerts if a.event == "opened"]
    assert out.applied == 120 and out.intervals == intervals == 59  # the last one is still open
    assert len(out.closed) == 2


def test_place_then_score_in_chunks_is_apply():
    """The aggregate agent places a message, then scores the intervals it completed a few at a time (the
    event loop gets turns between): the same windows, alerts and health as ``apply``. Here a second
    reports partition says nothing until the end, so its one mark completes every interval at once."""
    msgs = [m for m in _stream() if not isinstance(m, ProgressMark)] + [ProgressMark(0, 30 * 60),
                                                                         ProgressMark(1, 30 * 60)]
    whole, chunked = (PartitionStep(PartitionWindows(0, 600, 120, 2), Detection(interval_s=30, window_s=600))
                      for _ in range(2))
    a, b = StepOutput(), StepOutput()
    sizes = []
    for msg in msgs:
        whole.apply(msg, a)
        ivs = chunked.place(msg, b)
        sizes.append(len(ivs))
        for i in range(0, len(ivs), 7):
            chunked.score(ivs[i:i + 7], b)
    assert sizes[-1] == 60 and sum(sizes) == 60  # every interval, from the last mark
    strip = lambda rs: [dataclasses.replace(r, closed_at=0.0) for r in rs]  # noqa: E731
    assert strip(a.closed) == strip(b.closed) and len(a.closed) == 2  # the last window is still open
    assert a.alerts == b.alerts and a.opened == b.opened and a.opened
    assert (a.intervals, a.applied) == (b.intervals, b.applied) == (60, 120)
    assert whole.take_health() == chunked.take_health()


def test_health_update_once_per_change_with_the_opened_alerts():
    step = _new()
    updates = []
    for msg in _stream():
        step.apply(msg)
        u = step.take_health()
        if u is not None:
            updates.append(u)
        assert step.take_health() is None  # nothing new since
    uptos = [u.upto for u in updates if u.upto is not None]
    assert uptos == sorted(set(uptos))  # rises, each value once
    opened = [e for u in updates for e in u.opened]
    assert opened and all(e.event == "opened" for e in opened)
    assert all(h.t <= u.upto for u in updates for h in u.health)
    assert updates[-1].message().keys() == {"p", "upto", "health", "opened"}


def test_a_detector_error_is_counted_and_logged_not_raised(caplog):
    step = _new()

    def broken(iv):
        raise ValueError("bug")

    step.detection.score_interval = broken  # type: ignore[method-assign]
    out = StepOutput()
    with caplog.at_level(logging.ERROR, logger="flowmon.aggregate"):
        for msg in _stream(n=10):
            step.apply(msg, out)
    assert out.detect_errors == out.intervals > 0
    assert out.alerts == [] and out.applied == 20
    assert "detection failed" in caplog.text


def test_late_partial_dead_letter_says_where_and_why():
    step = _new()
    for msg in _stream(n=60):
        step.apply(msg)
    out = step.apply(PairsMessage(Origin(1, 99), 0, 0, [_part("h9", 999)]))
    (late,) = out.late
    dl = step.deadletter(late, "flow-reports-v1")
    assert (dl.reason, dl.stage, dl.source) == ("late", "aggregate", ("flow-reports-v1", 1, 99))
    assert dl.samples == late.partial.counters[SAMPLES] and dl.payload == late.partial
    assert "window 0 of s1->s2 closed" in dl.detail
