"""The state a pairs partition writes: typed keys, detector keys first, and read back by kind."""

from __future__ import annotations

import orjson
import pytest

from pipeline.aggregate.windows import PartitionWindows
from pipeline.detect.detection import Detection
from pipeline.runtime.restore import DETECT_KEY, PAIRS_KEY, PartitionState, StateKey, StateLog, load_state
from pipeline.aggregate.step import StepOutput
from pipeline.wire.records import Origin, PairsMessage, Partial, ProgressMark


def _state(sources: int = 1) -> PartitionState:
    return PartitionState(PartitionWindows(2, 600, 60, sources), Detection(interval_s=30, window_s=600))


def _feed(ps: PartitionState) -> None:
    for i in range(4):
        part = Partial(["s1", "a1", "v"], ["s2", "a2", "v"], 0, f"h{i % 2}", [1000, 10, 0, 0, 1, 1, 1, 900],
                       {157: 1}, [0, 0], [None, None, None], None, i, {157: 1})
        ps.step.apply(PairsMessage(Origin(0, i), 30 * i, 30 * i, [part]))
    ps.step.apply(ProgressMark(0, 200))


def test_detector_keys_first_typed_and_restored_by_kind():
    ps = _state()
    _feed(ps)
    writes = ps.take_dirty()
    kinds = [w.key.detector_key is not None for w in writes]
    assert any(kinds) and not all(kinds)
    assert kinds == sorted(kinds, reverse=True)  # detector keys first
    for w in writes:
        parts = orjson.loads(w.key.text)
        assert parts[0] == 2 and StateKey.parse(w.key.text) == w.key
        assert (parts[1] == DETECT_KEY) == (w.key.detector_key is not None)
    back = _state()
    for w in writes:
        if w.value is not None:
            back.load(w.key.text, orjson.loads(w.value))
    assert set(back.detection.keys) == set(ps.detection.keys)
    assert back.windows.watermark == ps.windows.watermark and back.windows.open.keys() == ps.windows.open.keys()
    assert ps.take_dirty() == []


def test_the_state_says_how_far_in_the_pairs_topic_it_reaches():
    """Written last (once it is durable, so is everything before it in the partition), only when it
    moved, and restored: the aggregate agent skips the pairs messages at or below it on a replay."""
    ps = _state()
    assert ps.pairs_offset == -1
    _feed(ps)
    ps.applied(41)
    ps.applied(40)  # never goes back
    writes = ps.take_dirty()
    assert orjson.loads(writes[-1].key.text) == [2, PAIRS_KEY] and orjson.loads(writes[-1].value) == {"offset": 41}
    assert all(orjson.loads(w.key.text)[1] != PAIRS_KEY for w in writes[:-1])
    assert ps.take_dirty() == []  # unchanged: not written again
    back = _state()
    for w in writes:
        if w.value is not None:
            back.load(w.key.text, orjson.loads(w.value))
    assert back.pairs_offset == 41 and back.windows.open.keys() == ps.windows.open.keys()
    ps.applied(42)
    assert [orjson.loads(w.value) for w in ps.take_dirty()] == [{"offset": 42}]


def test_state_writes_are_made_one_at_a_time_in_the_same_order(monkeypatch):
    """The aggregate agent sends each state write before the next is made (``iter_dirty``): a batch that
    scored tens of thousands of keys never holds all their states at once. The writes, their order (detector
    keys, windows, the pairs offset last) and what is left dirty are those of ``take_dirty``."""
    from pipeline.detect.detection import KeyState

    a, b = _state(), _state()
    for ps in (a, b):
        _feed(ps)
        ps.applied(7)
    want = a.take_dirty()
    made = []
    real = KeyState.state
    monkeypatch.setattr(KeyState, "state", lambda self: made.append(self.instance) or real(self))
    it = b.iter_dirty()
    first = next(it)
    assert len(made) == 1  # only the first key's state exists yet
    got = [first, *it]
    assert [(w.key, w.value) for w in got] == [(w.key, w.value) for w in want]
    assert got[-1].key.text == orjson.dumps([2, PAIRS_KEY]).decode() and orjson.loads(got[-1].value) == {"offset": 7}
    assert len(made) == sum(w.key.detector_key is not None for w in want) > 1
    assert list(b.iter_dirty()) == [] == a.take_dirty()  # nothing left dirty


def _pairs_stream(minutes: int = 40, idle_every: int = 0) -> list:
    """Two sources, three hosts towards two destinations, one report per host and 30-s interval; each
    source marks its progress after every interval: windows open, fill and close along the stream.
    ``idle_every``: source 1 is also marked idle after every that many intervals (its next report wakes it),
    as a live ingest stage's marks say of a quiet partition."""
    msgs: list = []
    rid = 0
    for i in range(2 * minutes):
        t = 30 * i
        if idle_every and i % idle_every == idle_every - 1:
            msgs.append(ProgressMark(1, None, t - 200))
        for src in (0, 1):
            for h, dst in ((f"h{src}a", "s2"), (f"h{src}b", "s3"), (f"h{src}c", "s2")):
                part = Partial(["s1", "a1", "v"], [dst, "a2", "v"], t - t % 600, h,
                               [1000 + rid, 10, rid % 3, 0, 1, 1, 1, 900], {157: 1}, [rid % 3, 0], [None, None, None],
                               None, rid, {157: 1})
                msgs.append(PairsMessage(Origin(src, rid), t, t, [part]))
                rid += 1
            msgs.append(ProgressMark(src, t))
    return msgs


def _landed(emitted: list) -> dict:
    """The last emission of each window (the sink keeps the latest ``closed_at``), by its totals."""
    return {(w.src_subnet, w.dst_subnet, w.window_start): (w.bytes, w.retransmissions, w.samples) for w in emitted}


@pytest.mark.parametrize("per_batch", [9, 400])
def test_a_batch_whose_state_writes_were_cut_anywhere_restores_and_replays_to_exact_totals(per_batch):
    """A worker that dies, or is paused and replaced, part way through a batch's state writes leaves a
    prefix of them in the state topic. Whoever restores it and replays the pairs messages from the committed
    offset (before the batch) must land exactly the windows an uninterrupted run lands, with nothing
    dead-lettered. No order of a batch's writes makes every prefix a state to replay onto: with the
    progress before the deletions of the windows it closed and forgot, those windows come back open with an
    older state while the watermark says they closed, and the replay's first change of progress (here: a
    source marked idle, woken by its next report) closes them before their messages come again, which it
    then drops as read again; with the deletions first, the replay opens them again and lands them short
    over the whole ones. So the restore keeps whole batches only (``StateLog``: a batch's writes end with
    its pairs offset). Batches of 400 messages are a backlog's: the watermark moves past a window's close
    and its forgetting in one batch (as in a worker whose state writes Apache Kafka refused part way
    through such a batch, where this was seen)."""
    msgs = _pairs_stream(minutes=60, idle_every=3)
    n = per_batch
    batches = [msgs[i:i + n] for i in range(0, len(msgs), n)]  # the pairs offset of message j is j
    whole = _state(sources=2)
    ref = []
    emitted: list[list] = []  # the windows emitted up to and including each batch (before its state writes)
    log: list[list] = []  # the state writes of each batch
    closing = []  # the batches that close windows
    forgetting = []  # the batches that forget closed windows (delete their state)
    for b, batch in enumerate(batches):
        out = StepOutput()
        for j, msg in enumerate(batch):
            whole.step.apply(msg, out)
            whole.applied(n * b + j)
        ref += out.closed
        emitted.append(list(ref))
        closing += [b] * bool(out.closed)
        log.append(whole.take_dirty())
        forgetting += [b] * any(w.value is None and w.key.detector_key is None for w in log[-1])
    want = _landed(ref)
    assert len(want) >= 6 and len(closing) >= 3 and forgetting
    ks = [3, *closing[:3]] if n < 100 else sorted(set(closing) & set(forgetting))
    assert ks
    for k in ks:  # an ordinary batch, and batches whose writes close (and forget) windows
        for cut in range(len(log[k]) + 1):
            topic = StateLog()
            for writes in [*log[:k], log[k][:cut]]:
                for w in writes:
                    topic.take(w.key.text.encode(), w.value, None)
            topic.finish()
            back = _state(sources=2)
            load_state(back, topic.latest)
            out = StepOutput()
            for j, msg in enumerate(msgs[n * k:], start=n * k):  # from the committed offset: batch k's first
                if j <= back.pairs_offset:
                    continue
                back.step.apply(msg, out)
                back.applied(j)
            assert out.late == [], (k, cut, len(log[k]))
            assert _landed(emitted[k] + out.closed) == want, (k, cut, len(log[k]))


def test_a_batch_writes_detectors_then_window_states_then_the_progress_then_the_windows_forgotten():
    """The order of a batch's state writes (``PartitionWindows.iter_dirty``), on batches that close and forget
    windows (a backlog's): the pairs offset last, which makes the batch whole for a restore (``StateLog``)."""
    from pipeline.aggregate.windows import PROGRESS_KEY

    msgs, n = _pairs_stream(minutes=60), 400
    ps = _state(sources=2)
    forgotten = 0
    for b in range(0, len(msgs), n):
        out = StepOutput()
        for j, msg in enumerate(msgs[b:b + n], start=b):
            ps.step.apply(msg, out)
            ps.applied(j)
        kinds = []  # 0 detector, 1 window state, 2 progress, 3 window forgotten, 4 pairs offset
        for w in ps.take_dirty():
            what = orjson.loads(w.key.text)[1]
            kinds.append(0 if w.key.detector_key is not None else 4 if what == PAIRS_KEY else
                         2 if what == PROGRESS_KEY else 3 if w.value is None else 1)
        assert kinds == sorted(kinds) and kinds.count(2) == 1, kinds
        forgotten += kinds.count(3)
    assert forgotten >= 4
