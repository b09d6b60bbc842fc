"""Windows core: exact sums, emitted once, replay-proof, deterministic, state round-trips."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.aggregate.windows import PartitionWindows
from pipeline.wire.records import unpack_ids

W, LATE = 600, 60


def part(dst: str, ws: int, n: int, host: str = "h", rid: int | None = None) -> dict:
    """A partial of the report identified by ``rid`` (default: one report per host and ``n``)."""
    return {"src": ["s", "az-a", "v"], "dst": [dst, "az-b", "v"], "ws": ws, "host": host,
            "c": [n, 2 * n, n % 3, 0, 1, 1, 1, 1000 + n], "h": {160: 1}, "x": [n % 3, 0],
            "top": [None, None, "10.0.1.4"], "ip": "10.0.0.4",
            "id": rid if rid is not None else hash((host, n)) & (2**62 - 1)}


def stream(seed: int, sources: int = 3, reports: int = 300) -> list[dict]:
    """Messages as one pairs partition sees them: data from several sources, interleaved, plus marks."""
    rng = random.Random(seed)
    per_source = []
    for s in range(sources):
        msgs, t = [], 0
        for off in range(reports):
            t += rng.choice([0, 30, 30, 60])
            msgs.append({"o": [s, off], "t": t, "parts": [part(f"d{rng.randrange(4)}", t - t % W, off, f"h{s}")]})
            if off % 25 == 0:
                msgs.append({"mark": [s, t]})
        msgs.append({"mark": [s, 10**9]})  # the source is done (idle): flush
        per_source.append(msgs)
    out = []
    while any(per_source):  # interleave, keeping each source's order
        src = rng.choice([m for m in per_source if m])
        out.append(src.pop(0))
    return out


def run(msgs: list[dict], pw: PartitionWindows | None = None, sources: int = 3):
    pw = pw or PartitionWindows(0, W, LATE, sources)
    closed, late, dups = [], [], 0
    for m in msgs:
        out = pw.apply(m)
        closed += out.closed
        late += out.late
        dups += out.duplicates
    return pw, closed, late, dups


def totals(closed: list[dict]) -> dict:
    t: dict = {}
    for r in closed:
        k = (r.dst_subnet, r.window_start)
        assert k not in t, f"window {k} emitted twice"
        t[k] = r.bytes_sent
    return t


def expected(msgs: list[dict]) -> dict:
    t: dict = {}
    for m in msgs:
        for p in m.get("parts", ()):
            k = (p["dst"][0], p["ws"])
            t[k] = t.get(k, 0) + p["c"][0]
    return t


@pytest.mark.parametrize("seed", range(5))
def test_every_window_emitted_once_with_exact_sums(seed):
    msgs = stream(seed)
    _, closed, late, dups = run(msgs)
    assert late == [] and dups == 0
    assert totals(closed) == expected(msgs)


@pytest.mark.parametrize("seed", range(3))
def test_replayed_messages_are_duplicates(seed):
    msgs = stream(seed)
    cut = len(msgs) // 2
    # a crash: everything after `cut` arrives, then the last 40 messages before it arrive again
    replayed = msgs[:cut] + msgs[cut - 40:cut] + msgs[cut:]
    _, closed, late, dups = run(replayed)
    assert totals(closed) == expected(msgs)
    assert dups == sum(len(m["parts"]) for m in msgs[cut - 40:cut] if "o" in m)


def test_a_replay_after_its_windows_were_forgotten_is_duplicate_not_late():
    """The ingest stage on a backlog runs windows ahead of the aggregate; when a worker dies, its
    reports partitions are read again from the last commit, and their pairs messages come after
    everything, their windows long closed and forgotten. Still duplicates, across a restore too."""
    msgs = stream(2)
    data = [m for m in msgs if "o" in m]
    early = data[:30]
    pw, closed, late, dups = run(msgs)
    assert pw.closed == {} or all(k[0] > early[-1]["t"] for k in pw.closed)  # their windows are forgotten
    restored = PartitionWindows(0, W, LATE, 3)
    for k, v in pw.take_dirty().items():
        if v is not None:
            restored.load(k, orjson.loads(orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS)))
    for target in (pw, restored):
        _, closed2, late2, dups2 = run(early, target)
        assert (closed2, late2) == ([], [])
        assert dups2 == sum(len(m["parts"]) for m in early)
    # a message of a source's own that is new (above what it reached) and that late is still late
    s, off = early[0]["o"][0], max(m["o"][1] for m in data if m["o"][0] == early[0]["o"][0])
    out = pw.apply({"o": [s, off + 1], "t": 0, "parts": [part("d0", 0, 1, f"h{s}", rid=12345)]})
    assert len(out.late) == 1 and out.duplicates == 0


def test_state_round_trip_mid_stream_gives_the_same_result():
    msgs = stream(7)
    cut = len(msgs) // 3
    pw, closed1, _, _ = run(msgs[:cut])
    state = {k: v for k, v in pw.take_dirty().items()}
    restored = PartitionWindows(0, W, LATE, 3)
    for k, v in state.items():
        if v is not None:
            restored.load(k, orjson.loads(orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS)))
    _, closed2, late, _ = run(msgs[cut:], restored)
    assert late == []
    assert totals(closed1 + closed2) == expected(msgs)


def test_watermark_is_the_slowest_source():
    pw = PartitionWindows(0, W, LATE, sources=2)
    pw.apply({"o": [0, 1], "t": 0, "parts": [part("d", 0, 5)]})
    assert pw.apply({"mark": [0, 5000]}).closed == []  # source 1 has not spoken
    assert pw.watermark is None
    out = pw.apply({"mark": [1, W + LATE - 1]})
    assert out.closed == [] and pw.watermark == W + LATE - 1
    out = pw.apply({"mark": [1, W + LATE]})
    assert [r.window_start for r in out.closed] == [0]


def test_late_partial_is_handed_back_not_merged():
    pw = PartitionWindows(0, W, LATE, sources=1)
    pw.apply({"o": [0, 1], "t": 0, "parts": [part("d", 0, 5)]})
    closed = pw.apply({"mark": [0, 2 * W]}).closed
    out = pw.apply({"o": [0, 2], "t": 30, "parts": [part("d", 0, 7)]})
    assert len(closed) == 1 and closed[0].bytes_sent == 5
    assert len(out.late) == 1 and out.late[0].origin == (0, 2) and out.closed == []
    # after two more windows the closed window is forgotten (bounded memory) and still late
    pw.apply({"mark": [0, 5 * W]})
    assert pw.closed == {}
    assert len(pw.apply({"o": [0, 3], "t": 30, "parts": [part("d", 0, 1)]}).late) == 1


def test_inputs_not_mutated_and_state_pickles():
    msgs = stream(3, reports=50)
    before = copy.deepcopy(msgs)
    pw, _, _, _ = run(msgs)
    assert msgs == before
    assert pickle.loads(pickle.dumps(pw)).watermark == pw.watermark


def test_deterministic():
    a = run(stream(11))[1]
    b = run(stream(11))[1]
    strip = lambda rs: [dataclasses.replace(r, closed_at=0.0) for r in rs]  # noqa: E731
    assert strip(a) == strip(b)


def test_hosts_are_distinct_reporters_and_rtt_percentiles():
    pw = PartitionWindows(0, W, LATE, sources=1)
    for i, host in enumerate(["a", "b", "a", "c"]):
        p = part("d", 0, 1, host, rid=i)  # "a" sends two different reports
        p["h"] = {159: 1} if i < 3 else {266: 1}  # three ~1 ms, one ~100 ms
        pw.apply({"o": [0, i], "t": 0, "parts": [p]})
    (rec,) = pw.apply({"mark": [0, W + LATE]}).closed
    assert rec.hosts == 3 and rec.samples == 4
    assert 950 < rec.rtt_p50_us < 1050 and rec.rtt_p99_us > 90_000


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 4))
def test_any_interleaving_same_totals(seed, sources):
    msgs = stream(seed, sources=sources, reports=60)
    _, closed, late, _ = run(msgs, sources=sources)
    assert late == []
    assert totals(closed) == expected(msgs)


def test_backfill_into_an_idle_partition_is_not_late():
    """A worker idle since start (its sources say so, with a wall clock far ahead) then gets
    yesterday's data: it is accepted, and flushed once every source is idle again."""
    pw = PartitionWindows(0, W, LATE, sources=2)
    clock = 10**7  # "now - lag", far after the data below
    assert pw.apply({"mark": [0, None], "idle": clock}).closed == []
    assert pw.apply({"mark": [1, None], "idle": clock}).closed == []
    out = pw.apply({"o": [0, 5], "t": 30, "parts": [part("d", 0, 9)]})
    assert out.late == [] and out.applied == 1
    # source 0 is active again: its data holds the watermark, nothing closes yet
    assert pw.apply({"mark": [0, 30]}).closed == []
    closed = pw.apply({"mark": [0, 30], "idle": clock}).closed  # both idle again: the stream is over
    assert [(r.window_start, r.bytes_sent) for r in closed] == [(0, 9)]


def test_idle_source_does_not_hold_the_watermark_back():
    pw = PartitionWindows(0, W, LATE, sources=2)
    pw.apply({"o": [0, 1], "t": 0, "parts": [part("d", 0, 5)]})
    pw.apply({"mark": [1, None], "idle": 50})  # source 1 has nothing, and is quiet
    out = pw.apply({"mark": [0, W + LATE]})
    assert [r.window_start for r in out.closed] == [0] and pw.watermark == W + LATE


def test_all_idle_closes_only_windows_older_than_the_clock():
    """Real time: the whole fleet quiet between two 30 s bursts must not close the current window."""
    pw = PartitionWindows(0, W, LATE, sources=1)
    pw.apply({"o": [0, 1], "t": 10 * W, "parts": [part("d", 10 * W, 5)]})
    now_less_lag = 10 * W + 200 - 120  # wall clock 200 s into the window, lag 120 s
    assert pw.apply({"mark": [0, 10 * W], "idle": now_less_lag}).closed == []
    assert len(pw.apply({"mark": [0, 10 * W], "idle": 11 * W + LATE}).closed) == 1


def test_idle_state_round_trips():
    pw = PartitionWindows(3, W, LATE, sources=2)
    pw.apply({"mark": [0, 100], "idle": 5000})
    pw.apply({"mark": [1, 200]})
    state = pw.take_dirty()
    back = PartitionWindows(3, W, LATE, sources=2)
    for k, v in state.items():
        back.load(k, v)
    assert back.idle == {0: 5000} and back.progress == {0: 100, 1: 200} and back.watermark == pw.watermark == 200


def test_an_idle_mark_made_before_its_source_was_woken_is_ignored():
    """Worker A owned source 1 and was frozen while it made an idle mark (at 4000 ms); past its session
    timeout worker B got the source, woke it (at 5000) and reads a backlog there, while source 0's own
    backlog goes through. A's mark, sent when it thaws, must not mark source 1 idle: source 0 would then
    close window 0, and B's reports for it would be late. B's own idle mark, later, is taken."""
    pw = PartitionWindows(0, W, LATE, sources=2)
    pw.apply({"mark": [0, 10], "idle": 50, "at": 1000})
    pw.apply({"mark": [1, 20], "idle": 50, "at": 1000})  # both quiet
    pw.apply({"mark": [1, None], "at": 5000})  # B got source 1 and woke it
    out = pw.apply({"mark": [1, 20], "idle": 60, "at": 4000})  # A thaws: its stale promise
    assert out.stale_marks == 1 and 1 not in pw.idle
    pw.apply({"o": [0, 7], "t": 30, "parts": [part("d", 0, 5, "h0")]})
    assert pw.apply({"mark": [0, 3 * W], "at": 6000}).closed == []  # source 1 holds window 0 back
    out = pw.apply({"o": [1, 9], "t": 40, "parts": [part("d", 0, 7, "h1")]})  # B's backlog
    assert out.late == [] and out.applied == 1
    assert pw.apply({"mark": [1, 40], "idle": 70, "at": 4999}).stale_marks == 1  # still before the wake
    out = pw.apply({"mark": [1, 40], "idle": 70, "at": 7000})  # B, caught up and quiet
    assert out.stale_marks == 0 and [(r.window_start, r.bytes_sent) for r in out.closed] == [(0, 12)]


def test_the_last_wake_survives_a_restore_and_undated_marks_are_taken():
    pw = PartitionWindows(0, W, LATE, sources=2)
    pw.apply({"mark": [1, None], "at": 5000})
    pw.apply({"mark": [1, 8000]})  # an undated (earlier version's) active mark leaves the date alone
    back = PartitionWindows(0, W, LATE, sources=2)
    for k, v in pw.take_dirty().items():
        back.load(k, v)
    assert back.woke == {1: 5000}
    assert back.apply({"mark": [1, None], "idle": 60, "at": 4000}).stale_marks == 1 and back.idle == {}
    assert back.apply({"mark": [1, None], "idle": 60}).stale_marks == 0 and back.idle == {1: 60}


def test_restored_watermark_never_goes_back():
    """Source 1 was idle while source 0 advanced the watermark; it wakes with older data's
    progress. A restored store must keep the watermark where the live one had it."""
    pw = PartitionWindows(0, W, LATE, sources=2)
    pw.apply({"mark": [1, None], "idle": 10})
    pw.apply({"mark": [0, 5 * W]})
    pw.apply({"mark": [1, 2 * W]})  # source 1 active again, behind
    assert pw.watermark == 5 * W
    back = PartitionWindows(0, W, LATE, sources=2)
    for k, v in pw.take_dirty().items():
        back.load(k, v)
    assert back.watermark == 5 * W


def test_two_partials_of_one_key_in_one_report_both_count():
    """Found by the hypothesis test at a running worker: a report whose samples place two endpoints
    of one subnet differently (another vpc) yields two partials with the same window key."""
    w = PartitionWindows(partition=0, window_s=600, lateness_s=60, sources=1)
    a = {"src": ["s1", "a1", "v1"], "dst": ["s2", "a2", "v1"], "ws": 0, "host": "h1",
         "c": [100, 0, 0, 0, 1, 1, 1, 900], "h": {}, "x": [0, 0], "top": [None, None, None], "ip": None, "id": 7}
    b = dict(a, dst=["s2", "a2", "other"], c=[50, 0, 0, 0, 1, 1, 1, 900])
    out = w.apply({"o": [0, 7], "t": 0, "parts": [a, b]})
    assert (out.applied, out.duplicates) == (2, 0)
    assert w.apply({"o": [0, 7], "t": 0, "parts": [a, b]}).duplicates == 2  # the replay: both skipped
    closed = w.apply({"mark": [0, 660]}).closed
    assert [(r.bytes_sent, r.samples) for r in closed] == [(150, 2)]


def test_a_report_sent_again_counts_once_and_a_split_one_twice():
    """An agent re-sends a report (same identity, any partition or offset): counted once, as a
    duplicate, also after its window closed; two different reports of one host and interval (an
    agent splitting its interval) both count."""
    w = PartitionWindows(partition=0, window_s=600, lateness_s=60, sources=2)
    first = part("d", 0, 5, "h1", rid=11)
    assert w.apply({"o": [0, 3], "t": 0, "g": 0, "parts": [first]}).applied == 1
    assert w.apply({"o": [1, 40], "t": 0, "g": 0, "parts": [dict(first)]}).duplicates == 1  # re-sent elsewhere
    assert w.apply({"o": [0, 4], "t": 0, "g": 0, "parts": [part("d", 0, 5, "h1", rid=12)]}).applied == 1  # split
    w.apply({"mark": [1, 0]})
    closed = w.apply({"mark": [0, 660]}).closed + w.apply({"mark": [1, 660]}).closed
    assert [(r.bytes_sent, r.samples, r.hosts) for r in closed] == [(10, 2, 1)]
    again = w.apply({"o": [1, 41], "t": 0, "g": 0, "parts": [dict(first)]})
    assert (again.duplicates, again.late) == (1, [])  # not late: a duplicate, counted and skipped
    other = w.apply({"o": [1, 42], "t": 0, "g": 0, "parts": [part("d", 0, 6, "h1", rid=13)]})
    assert len(other.late) == 1  # a new report for a closed window is late, as before


def test_state_from_before_report_identities_restores():
    """A state topic written by the previous version (offsets per source, two-item interval entries)
    restores: windows keep their sums, pending intervals are scored, new reports count."""
    old_open = {"src": ["s", "az-a", "v"], "dst": ["d", "az-b", "v"], "ws": 0, "c": [5, 0, 0, 0, 1, 1, 1, 900],
                "h": {"157": 1}, "hosts": ["h"], "seen": {"0": 3},
                "iv": {"0": {"h": [[5, 0, 0, 0, 1, 1, 1, 900], {"157": 1}]}}}
    w = PartitionWindows(0, W, LATE, sources=1)
    w.load('[0, 0, "d2", "d"]', {"closed": True, "seen": {"0": 2}})
    w.load('[0, 0, "s", "d"]', old_open)
    first = w.apply({"o": [0, 4], "t": 30, "g": 30, "parts": [part("d", 0, 7, "h2")]})
    assert first.applied == 1
    out = w.apply({"mark": [0, W + LATE]})
    assert [iv.t for iv in first.intervals + out.intervals] == [0, 30]
    assert first.intervals[0].hosts["h"][2:] == [[0, 0], [None, None, None], None, {}]
    assert [(r.bytes_sent, r.hosts) for r in out.closed] == [(12, 2)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**63 - 1), st.integers(0, 9)), min_size=1, max_size=300),
       st.integers(0, 300), st.booleans())
def test_a_resent_report_is_a_duplicate_open_restored_or_closed(sends, restore_at, pickled):
    """A closed window keeps its report identities sorted in an array (``ClosedIds``: a set of ints costs
    ~120 B per identity, and a window of 5 reporters' 30-s reports holds 100). Whether the window is
    open, restored from the state topic or closed, a re-sent report is a duplicate; a new one after it
    closed is late; the open window's state names every identity applied. ``sends``: (identity, how many of
    the first sends to repeat right after it)."""
    pw = PartitionWindows(0, W, LATE, sources=1)
    applied: list[int] = []
    sent: list[int] = []
    offset = 0

    def send(rid: int) -> tuple[int, int, int]:
        nonlocal offset
        offset += 1  # each send is a new message (an agent re-sending from elsewhere), never a replay
        out = pw.apply({"o": [0, offset], "t": 0, "g": 0, "parts": [part("d", 0, 1, f"h{rid % 7}", rid=rid)]})
        return out.applied, out.duplicates, len(out.late)

    for k, (rid, again) in enumerate(sends):
        if k == restore_at:  # a restart: the state as the state topic carries it
            state = pw.take_dirty()
            pw = PartitionWindows(0, W, LATE, sources=1)
            for key, val in state.items():
                pw.load(key, orjson.loads(orjson.dumps(val, option=orjson.OPT_NON_STR_KEYS)))
        assert send(rid) == ((0, 1, 0) if rid in applied else (1, 0, 0))
        if rid not in applied:
            applied.append(rid)
        sent.append(rid)
        for old in sent[:again]:
            assert send(old) == (0, 1, 0)
        if k % 3 == 0 or k == restore_at:  # the state's identities, sorted from the last state's and the new
            assert unpack_ids(pw.open[(0, "s", "d")].state()["I"]) == sorted(applied)
    if pickled:
        pw = pickle.loads(pickle.dumps(pw))
    (rec,) = pw.apply({"mark": [0, W + LATE]}).closed
    assert rec.samples == len(applied)
    ids = pw.closed[(0, "s", "d")]
    assert sorted(ids) == sorted(applied) and len(ids) == len(applied)
    for rid in applied:
        assert send(rid) == (0, 1, 0)  # re-sent after its window closed: a duplicate
    for new in (0, 2**63 - 1, *(r + 1 for r in applied[:20])):
        if new not in applied:
            assert send(new) == (0, 0, 1)  # a new report for the closed window: late
    state = pw.take_dirty()  # the closed window's identities restore as they were
    again = PartitionWindows(0, W, LATE, sources=1)
    for key, val in state.items():
        if val is not None:
            again.load(key, orjson.loads(orjson.dumps(val, option=orjson.OPT_NON_STR_KEYS)))
    assert list(again.closed[(0, "s", "d")]) == sorted(applied)


def test_an_open_windows_state_names_every_identity_mid_stream_and_after_a_restore():
    """A window's state is written after every batch that touches it; its identities are sorted from the
    last state's and those added since (``WindowAgg.sorted_ids``). Whatever the states taken in between, a
    restore (nothing sorted yet) or a re-sent report, the state names exactly the reports applied."""
    rng = random.Random(5)
    pw = PartitionWindows(0, W, LATE, sources=1)
    applied: set[int] = set()
    for off in range(1, 400):
        rid = rng.choice(sorted(applied)) if applied and rng.random() < 0.2 else rng.getrandbits(63)
        pw.apply({"o": [0, off], "t": 0, "g": 0, "parts": [part("d", 0, 1, f"h{rid % 5}", rid=rid)]})
        applied.add(rid)
        if rng.random() < 0.3:
            assert unpack_ids(pw.open[(0, "s", "d")].state()["I"]) == sorted(applied)
        if off % 97 == 0:  # a restart
            state = pw.take_dirty()
            pw = PartitionWindows(0, W, LATE, sources=1)
            for key, val in state.items():
                pw.load(key, orjson.loads(orjson.dumps(val, option=orjson.OPT_NON_STR_KEYS)))
    assert unpack_ids(pw.open[(0, "s", "d")].state()["I"]) == sorted(applied)
    (rec,) = pw.apply({"mark": [0, W + LATE]}).closed
    assert rec.samples == len(applied) and list(pw.closed[(0, "s", "d")]) == sorted(applied)
