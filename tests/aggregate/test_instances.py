"""Per-instance counters of every window: exact, replay- and restore-proof, and always adding up to the window.

Invariant checked everywhere: for each counter, the sum over a closed window's ``instances`` equals the
window's own counter, and the instances are exactly its distinct reporters (``hosts``).
"""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.aggregate.windows import PartitionWindows
from pipeline.wire.records import PARTIAL_COUNTERS, FlowWindow, Origin, PairsMessage, decode_partial

W, LATE = 600, 60


def part(dst: str, ws: int, host: str, rid: int, n: int) -> dict:
    return {"src": ["s", "az-a", "v"], "dst": [dst, "az-b", "v"], "ws": ws, "host": host,
            "c": [n, 2 * n + 1, n % 3, n % 2, 1, 1 + n % 4, 1, 900 + n], "h": {160: 1}, "x": [n % 3, 0],
            "top": [None, None, None], "ip": None, "id": rid}


def stream(seed: int, sources: int, hosts: int, reports: int) -> list[dict]:
    """Data of several hosts per source, interleaved across sources, with marks; each report has its identity."""
    rng = random.Random(seed)
    per_source = []
    for s in range(sources):
        msgs, t = [], 0
        for off in range(reports):
            t += rng.choice([0, 30, 30, 60])
            host = f"h{s}-{rng.randrange(hosts)}"
            rid = rng.getrandbits(62)
            parts = [part(f"d{rng.randrange(3)}", t - t % W, host, rid, rng.randrange(1000))]
            if rng.random() < 0.1:  # a report with two partials of one key (both count)
                parts.append(dict(parts[0], dst=[parts[0]["dst"][0], "az-b", "other"], c=[1] * 8))
            msgs.append({"o": [s, off], "t": t, "g": t - t % 30, "parts": parts})
            if off % 20 == 0:
                msgs.append({"mark": [s, t]})
        msgs.append({"mark": [s, 10**9]})
        per_source.append(msgs)
    out = []
    while any(per_source):
        out.append(rng.choice([m for m in per_source if m]).pop(0))
    return out


def with_resends(msgs: list[dict], seed: int) -> list[dict]:
    """Some data messages sent again a little later, from another partition and offset (an agent re-sending)."""
    rng = random.Random(seed)
    out = list(msgs)
    for i, m in enumerate(msgs):
        if "o" in m and rng.random() < 0.15:
            end = next(k for k, x in enumerate(out) if x.get("mark", [0, 0])[1] == 10**9)  # before the stream ends
            j = out.index(m) + rng.randrange(1, 8)
            if j <= end:
                out.insert(j, dict(m, o=[m["o"][0], 10_000 + i]))
    return out


def expected_instances(msgs: list[dict]) -> dict[tuple[int, str], dict[str, list[int]]]:
    """(window_start, dst) -> instance -> counters, each report counted once (by its identity)."""
    seen: set[tuple] = set()
    out: dict[tuple[int, str], dict[str, list[int]]] = {}
    for m in msgs:
        if "o" not in m:
            continue
        parts = m["parts"]
        keys = {(p["ws"], p["dst"][0], p["id"]) for p in parts}
        for p in parts:
            if (p["ws"], p["dst"][0], p["id"]) in seen:
                continue
            cur = out.setdefault((p["ws"], p["dst"][0]), {}).setdefault(p["host"], [0] * 8)
            cur[:] = [a + b for a, b in zip(cur, p["c"])]
        seen |= keys
    return out


def run(msgs: list[dict], pw: PartitionWindows | None = None, sources: int = 1) -> tuple[PartitionWindows, list]:
    pw = pw or PartitionWindows(0, W, LATE, sources)
    closed = []
    for m in msgs:
        out = pw.apply(m)
        assert out.late == []
        closed += out.closed
    return pw, closed


def restored(pw: PartitionWindows) -> PartitionWindows:
    """A new object from ``pw``'s state as the state topic carries it (JSON)."""
    back = PartitionWindows(pw.partition, pw.window_s, pw.lateness_s, pw.sources)
    for k, v in pw.take_dirty().items():
        if v is not None:
            back.load(k, orjson.loads(orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS)))
    return back


def assert_adds_up(rec: FlowWindow) -> None:
    assert rec.instances is not None
    names = [e["instance"] for e in rec.instances]
    assert names == sorted(set(names)) and len(names) == rec.hosts
    for c in (*PARTIAL_COUNTERS, "bytes"):
        assert sum(e[c] for e in rec.instances) == getattr(rec, c), c


def by_window(closed: list[FlowWindow]) -> dict[tuple[int, str], dict[str, list[int]]]:
    out: dict[tuple[int, str], dict[str, list[int]]] = {}
    for rec in closed:
        key = (rec.window_start, rec.dst_subnet)
        assert key not in out, f"window {key} emitted twice"
        assert_adds_up(rec)
        out[key] = {e["instance"]: [e[c] for c in PARTIAL_COUNTERS] for e in rec.instances}
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 3), st.integers(1, 10), st.floats(0.05, 0.95))
def test_instances_exact_through_resends_and_a_restore(seed, sources, hosts, cut_at):
    """Any interleaving, reports re-sent, the state saved and restored (through JSON) at any point:
    every window's instances are exactly the per-instance sums of the distinct reports, and add up."""
    msgs = with_resends(stream(seed, sources, hosts, reports=40), seed)
    cut = int(len(msgs) * cut_at)
    pw, first = run(msgs[:cut], sources=sources)
    _, rest = run(msgs[cut:], restored(pw))
    assert by_window(first + rest) == expected_instances(msgs)
    # and the same without the restart
    assert by_window(run(msgs, sources=sources)[1]) == expected_instances(msgs)


def test_a_duplicate_report_counts_nowhere_and_a_split_one_in_its_instance():
    w = PartitionWindows(0, W, LATE, sources=2)
    a = part("d", 0, "h1", rid=11, n=5)
    assert w.apply({"o": [0, 1], "t": 0, "g": 0, "parts": [a]}).applied == 1
    assert w.apply({"o": [0, 1], "t": 0, "g": 0, "parts": [a]}).duplicates == 1  # replayed
    assert w.apply({"o": [1, 9], "t": 0, "g": 0, "parts": [dict(a)]}).duplicates == 1  # re-sent elsewhere
    assert w.apply({"o": [0, 2], "t": 0, "g": 0, "parts": [part("d", 0, "h1", rid=12, n=7)]}).applied == 1  # split
    assert w.apply({"o": [0, 3], "t": 0, "g": 0, "parts": [part("d", 0, "h2", rid=13, n=1)]}).applied == 1
    w = restored(w)  # a restart in between
    assert w.apply({"o": [1, 10], "t": 0, "g": 0, "parts": [dict(a)]}).duplicates == 1  # and again after it
    w.apply({"mark": [1, 0]})
    (rec,) = w.apply({"mark": [0, W + LATE]}).closed + w.apply({"mark": [1, W + LATE]}).closed
    assert_adds_up(rec)
    assert {e["instance"]: (e["bytes_sent"], e["samples"]) for e in rec.instances} == {"h1": (5 + 7, 2 + 4), "h2": (1, 2)}
    assert (rec.bytes_sent, rec.samples) == (13, 8)


def test_a_report_scored_late_for_detection_still_counts_in_its_instance():
    """The per-interval host sums miss a report that arrives after its interval was scored; the instance
    counters of its window do not."""
    w = PartitionWindows(0, W, lateness_s=300, sources=1, interval_lateness_s=15, grid_s=30)
    w.apply({"o": [0, 1], "t": 0, "g": 0, "parts": [part("d", 0, "h1", rid=1, n=10)]})
    scored = w.apply({"o": [0, 2], "t": 120, "g": 120, "parts": [part("d", 0, "h2", rid=2, n=20)]}).intervals
    assert [iv.t for iv in scored] == [0]
    late = w.apply({"o": [0, 3], "t": 0, "g": 0, "parts": [part("d", 0, "h3", rid=3, n=30)]})
    assert (late.applied, late.late_for_detection) == (1, 1)
    (rec,) = w.apply({"mark": [0, W + 300]}).closed
    assert_adds_up(rec)
    assert [(e["instance"], e["bytes_sent"]) for e in rec.instances] == [("h1", 10), ("h2", 20), ("h3", 30)]


def test_the_partial_and_its_interval_sums_are_not_changed_by_the_instance_counters():
    """A host's first partial seeds both its interval sums and its instance counters: a second report of
    that host adds to the instance, not to the first partial's own lists."""
    w = PartitionWindows(0, W, LATE, sources=1)
    first = decode_partial(part("d", 0, "h1", rid=1, n=3))
    before = list(first.counters)
    outs = [w.apply(PairsMessage(Origin(0, 1), 0, 0, [first])),
            w.apply(PairsMessage(Origin(0, 2), 30, 30, [decode_partial(part("d", 0, "h1", rid=2, n=4))]))]
    assert first.counters == before
    outs.append(w.apply({"mark": [0, W + LATE]}))
    assert [iv.hosts["h1"][0] for o in outs for iv in o.intervals] == [before, part("d", 0, "h1", 2, 4)["c"]]
    (rec,) = outs[-1].closed
    assert_adds_up(rec)


def test_a_window_from_the_state_of_an_older_worker_has_no_instances():
    """State written before the instance counters (no ``inst``): the window keeps counting, its instances are
    unknown (None), never a split that misses what came before the restart."""
    old = {"src": ["s", "az-a", "v"], "dst": ["d", "az-b", "v"], "ws": 0, "c": [5, 0, 0, 0, 1, 1, 1, 900],
           "h": {"157": 1}, "hosts": ["h"], "ids": [1], "iv": {}}
    w = PartitionWindows(0, W, LATE, sources=1)
    w.load('[0, 0, "s", "d"]', old)
    w.apply({"o": [0, 4], "t": 30, "g": 30, "parts": [part("d", 0, "h2", rid=2, n=7)]})
    w = restored(w)
    (rec,) = w.apply({"mark": [0, W + LATE]}).closed
    assert (rec.bytes_sent, rec.hosts, rec.instances) == (12, 2, None)


@pytest.mark.parametrize("seed", range(3))
def test_replayed_partition_gives_the_same_instances(seed):
    """A crash: the tail of the partition arrives again; replayed reports are duplicates everywhere."""
    msgs = stream(seed, sources=2, hosts=5, reports=120)
    cut = len(msgs) // 2
    _, closed = run(msgs[:cut] + msgs[cut - 30:cut] + msgs[cut:], sources=2)
    assert by_window(closed) == expected_instances(msgs)
