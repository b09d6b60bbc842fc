"""Detection core: model contract (river's checks, adapted), alert lifecycle, persistence, intervals."""

from __future__ import annotations

import numpy as np
import orjson

from pipeline.detect.contract import Verdict
from pipeline.detect.lifecycle import AlertBook
from pipeline.detect.detection import DEFAULTS, Detection, observe
from pipeline.wire.rtt import bucket, quantile
from pipeline.aggregate.windows import PartitionWindows
from pipeline.wire.records import GridInterval

SRC, DST = ["s1", "a1", "v"], ["s2", "a2", "v"]


def _iv(t: int, *, rtt_us: float = 800.0, retrans: int = 1, timeouts: int = 0, hosts=("h0", "h1"),
        sent: int = 15_000_000) -> GridInterval:
    out = {}
    for i, h in enumerate(hosts):
        c = [sent, sent // 100, retrans, timeouts, 3, 3, 12, int(12 * rtt_us * (1 + 0.01 * ((t // 30 + i) % 5)))]
        # three samples (remotes) per host, the counts spread evenly over them
        b = int(bucket(np.array([c[7] // 12]))[0])  # three samples, their observations all near the mean
        out[h] = [c, {b: 12}, [-(-retrans // 3), -(-timeouts // 3)], [None, None, None], f"10.0.0.{i + 4}", {b: 3}]
    return GridInterval(t, SRC, DST, out)


def _feed(d: Detection, ivs) -> list[dict]:
    return [e for iv in ivs for e in d.interval(iv)]


# the model contract (input not mutated, state round trip, same input -> same scores, foreign pickles
# refused) is checked on every model in tests/detect/test_contract.py


def test_baseline_never_learns_from_flagged_intervals():
    d = Detection()
    _feed(d, [_iv(30 * k) for k in range(40)])
    key = ("pair", "s1", "s2")
    before = d.keys[key].model.seen["retrans_rate"]
    ev = _feed(d, [_iv(30 * k, retrans=400) for k in range(40, 60)])
    assert [e["event"] for e in ev if e["scope"] == "pair" and e["metric"] == "retrans_rate"][:1] == ["opened"]
    assert d.keys[key].model.seen["retrans_rate"] == before  # 20 flagged intervals, none learned
    # and the fault stays anomalous to the end: no 'resolved' while it lasts
    assert not [e for e in ev if e["event"] == "resolved"]


def test_lifecycle_opened_updated_resolved_once_per_window():
    d = Detection(window_s=600)
    _feed(d, [_iv(30 * k) for k in range(40)])  # learn 20 min
    ev = _feed(d, [_iv(30 * k, rtt_us=20_000) for k in range(40, 70)])  # 15 min: spans 2 windows
    ev += _feed(d, [_iv(30 * k) for k in range(70, 90)])
    pair_mean = [e for e in ev if e["scope"] == "pair" and e["metric"] == "rtt_p50"]
    assert [e["event"] for e in pair_mean] == ["opened", "updated", "updated", "resolved"]
    assert [e["seq"] for e in pair_mean] == [0, 1, 2, 3]
    assert len({e["alert_id"] for e in pair_mean}) == 1
    opened, escalated, updated, resolved = pair_mean
    assert opened["first_seen"] == 1200 and opened["observed"] > 20 * opened["expected"]
    # critical only once it has lasted a second interval: announced at once, not a window later
    assert (opened["severity"], escalated["severity"], escalated["at"]) == ("warning", "critical", 1230)
    assert updated["at"] == 1800  # first flagged interval of the next window
    assert resolved["reason"] == "normal" and resolved["at"] == 2100 + 30 * (DEFAULTS["resolve_after"] - 1)


def test_surge_and_new_key_do_not_alarm():
    d = Detection()
    ev = _feed(d, [_iv(30 * k) for k in range(40)])
    # ten times the volume, same loss per segment and RTT
    ev += _feed(d, [_iv(30 * k, sent=150_000_000, retrans=10) for k in range(40, 60)])
    # a host that was never seen joins with its own (slightly different) RTT
    ev += _feed(d, [_iv(30 * k, rtt_us=900, hosts=("h0", "h1", "h9")) for k in range(60, 80)])
    assert ev == []


def test_silent_key_resolves():
    d = Detection()
    _feed(d, [_iv(30 * k) for k in range(40)])
    opened = _feed(d, [_iv(1200, rtt_us=20_000)])
    assert {e["event"] for e in opened} == {"opened"}
    # h0/h1 stop reporting; another pair keeps the partition's clock going
    other = lambda t: GridInterval(t, DST, SRC,
                                   {"x": [[1000, 0, 0, 0, 1, 1, 1, 800], {}, [0, 0], [None, None, None], None, {}]})
    ev = _feed(d, [other(1200 + 30 * k) for k in range(1, 30)])
    resolved = [e for e in ev if e["event"] == "resolved"]
    assert {e["reason"] for e in resolved} == {"silent"}
    assert sorted(e["alert_id"] for e in resolved) == sorted(e["alert_id"] for e in opened)
    assert min(e["at"] for e in resolved) >= 1200 + 30 * DEFAULTS["silent_after"]


def test_restored_detection_continues_and_skips_replayed_intervals():
    a = Detection()
    _feed(a, [_iv(30 * k) for k in range(40)])
    opened = _feed(a, [_iv(1200, rtt_us=20_000)])
    state = {k: orjson.loads(orjson.dumps(v)) for k, v in a.take_dirty().items()}
    b = Detection()
    for k, v in state.items():
        b.load(k, v)
    assert _feed(b, [_iv(1200, rtt_us=20_000)]) == []  # a replay of a scored interval: nothing twice
    slow = [_iv(1230, rtt_us=20_000), _iv(1260, rtt_us=20_000)]
    nxt_a = _feed(a, slow + [_iv(1290 + 30 * k) for k in range(10)])
    nxt_b = _feed(b, slow + [_iv(1290 + 30 * k) for k in range(10)])
    assert nxt_a == nxt_b
    # what opens now is only what needed a second interval to be confirmed (each host's own median),
    # dated from the first: the restored key remembered its streak; everything else continues the
    # alerts opened
    late = [e for e in nxt_b if e["event"] == "opened"]
    assert late and {(e["scope"], e["metric"], e["first_seen"], e["at"]) for e in late} == {
        ("instance", "rtt_p50", 1200, 1230)}
    assert {e["alert_id"] for e in nxt_b} <= {e["alert_id"] for e in opened + late}
    assert max(len(orjson.dumps(v)) for v in state.values()) <= 4096  # the bound per key


def test_alertbook_hysteresis():
    book = AlertBook()
    v = lambda f, s: {"rtt_p50": Verdict(f, s, 1.0, 1.0, f, int(f))}
    assert book.step(0, v(True, 9.0), {}, 5.0, 2, 600)[0].event == "opened"
    for t in range(30, 300, 30):  # hovering just under the threshold: not calm, never resolves
        assert book.step(t, v(False, 4.0), {}, 5.0, 2, 600) == []
    assert book.open


def test_observe_metrics():
    h = {160: 2, 176: 1}  # two observations near 1.0 ms, one near 2.0 ms
    o = observe([1448 * 1000, 0, 10, 2, 4, 4, 3, 4096], h, [7, 1])
    assert (o.segments, o.value("retrans_rate"), o.value("timeout_rate")) == (1000.0, 0.01, 0.5)
    assert (o.retrans_max, o.timeouts_max) == (7, 1)
    assert o.value("rtt_p50") == quantile(h, 0.5) and 1000 < o.value("rtt_p50") < 1100  # the median, not the mean
    assert observe([0, 10, 0, 0, 0, 1, 0, 0], {}).value("rtt_p50") is None


def _part(host: str, n: int, rid: int, ws: int = 0) -> dict:
    return {"src": SRC, "dst": DST, "ws": ws, "host": host, "c": [n, 0, 0, 0, 1, 1, 1, 800], "h": {154: 1},
            "x": [0, 0], "top": [None, None, "10.0.1.4"], "ip": f"10.0.0.{n}", "id": rid, "m": {154: 1}}


def _entry(n: int) -> list:
    return [[n, 0, 0, 0, 1, 1, 1, 800], {154: 1}, [0, 0], [None, None, "10.0.1.4"], f"10.0.0.{n}", {154: 1}]


def test_windows_hand_over_complete_intervals_once():
    pw = PartitionWindows(0, 600, 60, 1)  # grid 30 s, scored 15 s after the middle of the interval
    assert pw.apply({"o": [0, 1], "t": 0, "g": 0, "parts": [_part("h0", 5, 1)]}).intervals == []
    assert pw.apply({"o": [0, 2], "t": 0, "g": 0, "parts": [_part("h1", 7, 2)]}).intervals == []
    out = pw.apply({"o": [0, 3], "t": 30, "g": 30, "parts": [_part("h0", 1, 3)]})
    assert out.intervals == [GridInterval(0, SRC, DST, {"h0": _entry(5), "h1": _entry(7)})]
    # a report for interval 0 arriving now is counted in its window, not scored again
    late = pw.apply({"o": [0, 4], "t": 0, "g": 0, "parts": [_part("h2", 9, 4)]})
    assert late.late_for_detection == 1 and late.applied == 1
    assert pw.apply({"o": [0, 3], "t": 30, "g": 30, "parts": [_part("h0", 1, 3)]}).duplicates == 1  # replay
    # state round trip keeps the pending interval 30 and the scoring threshold
    st = pw.take_dirty()
    pw2 = PartitionWindows(0, 600, 60, 1)
    for k, v in st.items():
        if v is not None:
            pw2.load(k, orjson.loads(orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS)))
    out2 = pw2.apply({"mark": [0, 60]})
    assert [iv.t for iv in out2.intervals] == [30]
    assert pw2.apply({"o": [0, 9], "t": 0, "g": 0, "parts": [_part("h3", 1, 9)]}).late_for_detection == 1
    assert pw2.apply({"o": [0, 3], "t": 30, "g": 30, "parts": [_part("h0", 1, 3)]}).duplicates == 1  # still known


def test_grid_interval_meets_across_windows():
    """Agents whose intervals start at their own second meet in one scored grid interval, even when
    their reports fall in two 10-minute windows (a window takes a report by its own start)."""
    pw = PartitionWindows(0, 600, 60, 1)
    # h0 starts at 590 (window 0) and h1 at 605 (window 600): both belong to grid interval 600
    pw.apply({"o": [0, 1], "t": 590, "g": 600, "parts": [_part("h0", 5, 1)]})
    pw.apply({"o": [0, 2], "t": 605, "g": 600, "parts": [_part("h1", 7, 2, ws=600)]})
    out = pw.apply({"mark": [0, 630]})
    assert out.intervals == [GridInterval(600, SRC, DST, {"h0": _entry(5), "h1": _entry(7)})]


# --- robustness: what real hosts do that a fault does not -------------------------------------------
def _host(retrans: int = 1, worst: int | None = None, rtts=(800,) * 6, flows: int = 3, sent: int = 15_000_000,
          timeouts: int = 0) -> list:
    """One host's interval over ``flows`` samples (one flow each, RTT observations dealt round-robin);
    ``worst`` = the largest retransmissions of any one of its samples."""
    from pipeline.wire.rtt import bucket
    import numpy as np

    def hist(values) -> dict[int, int]:
        h: dict[int, int] = {}
        for b in bucket(np.asarray(values, dtype=np.int64)).tolist():
            h[b] = h.get(b, 0) + 1
        return h
    per_sample = [sorted(rtts[i::flows]) for i in range(flows)]
    medians = hist([v[(len(v) - 1) // 2] for v in per_sample if v])
    c = [sent, sent // 100, retrans, timeouts, flows, flows, len(rtts), int(sum(rtts))]
    top = ["10.0.1.9" if retrans else None, "10.0.1.9" if timeouts else None, None]  # the worst sample's remote
    return [c, hist(rtts), [retrans if worst is None else worst, timeouts], top, None, medians]


def _pair(t: int, **hosts) -> GridInterval:
    return GridInterval(t, SRC, DST, dict(hosts))


def _learned(d: Detection, n: int = 40) -> None:
    import random
    rng = random.Random(1)
    for k in range(n):
        r = rng.choice([0, 0, 1, 2])
        _feed(d, [_pair(30 * k, h0=_host(r, rtts=[800 + rng.randrange(80) for _ in range(6)]),
                        h1=_host(1, rtts=[820 + rng.randrange(80) for _ in range(6)]))])


def test_one_connection_burst_is_not_an_alert_two_in_a_row_are():
    d = Detection()
    _learned(d)
    # 200 retransmissions on one connection of h0, in one interval: nothing
    assert _feed(d, [_pair(1200, h0=_host(201, worst=200), h1=_host(1))]) == []
    assert _feed(d, [_pair(1230, h0=_host(1), h1=_host(1))]) == []
    # a burst straddling two agent intervals (its tail in the next one): still nothing
    assert _feed(d, [_pair(1260, h0=_host(201, worst=200), h1=_host(1))]) == []
    assert _feed(d, [_pair(1290, h0=_host(31, worst=30), h1=_host(1))]) == []
    assert _feed(d, [_pair(1320, h0=_host(1), h1=_host(1))]) == []
    # the same connection keeps losing: confirmed at the third interval, dated from the first
    _feed(d, [_pair(1350, h0=_host(201, worst=200), h1=_host(1))])
    _feed(d, [_pair(1380, h0=_host(191, worst=190), h1=_host(1))])
    ev = _feed(d, [_pair(1410, h0=_host(181, worst=180), h1=_host(1))])
    got = {(e["scope"], e["metric"], e["first_seen"], e["at"], e["severity"]) for e in ev}
    assert ("instance", "retrans_rate", 1350, 1410, "critical") in got
    assert ("pair", "retrans_rate", 1350, 1410, "warning") in got  # 0.9 % of the pair's segments


def test_intervals_too_thin_to_score_neither_extend_nor_break_a_streak():
    """Heavy loss on one connection stalls it in retransmission timeouts: every other interval
    carries too few segments to score (measured with 5 % loss in the namespace lab: 2-second
    intervals of 1,508, 30, 874, 392, 543, 451 segments). The hot ones around them still count
    in a row; a scored calm interval still breaks the streak."""
    d = Detection()
    _learned(d)
    stalled = _host(3, worst=3, sent=300_000)  # ~207 segments: h0's retrans_rate is not scored
    assert d.params.min_segments > 300_000 / 1448
    assert _feed(d, [_pair(1200, h0=_host(201, worst=200), h1=_host(1))]) == []
    assert _feed(d, [_pair(1230, h0=stalled, h1=_host(1))]) == []
    assert _feed(d, [_pair(1260, h0=_host(201, worst=200), h1=_host(1))]) == []
    assert _feed(d, [_pair(1290, h0=_host(1), h1=_host(1))]) == []  # scored, calm: the streak ends
    assert _feed(d, [_pair(1320, h0=_host(201, worst=200), h1=_host(1))]) == []
    assert _feed(d, [_pair(1350, h0=stalled, h1=_host(1))]) == []
    assert _feed(d, [_pair(1380, h0=_host(191, worst=190), h1=_host(1))]) == []
    assert _feed(d, [_pair(1410, h0=stalled, h1=_host(1))]) == []
    ev = _feed(d, [_pair(1440, h0=_host(181, worst=180), h1=_host(1))])
    got = {(e["event"], e["scope"], e["instance"], e["metric"], e["first_seen"], e["at"]) for e in ev}
    assert ("opened", "instance", "h0", "retrans_rate", 1320, 1440) in got, got


def test_loss_spread_over_connections_alerts_at_once_but_not_critical_yet():
    d = Detection()
    _learned(d)
    ev = _feed(d, [_pair(1200, h0=_host(150, worst=50), h1=_host(150, worst=50))])
    opened = {(e["scope"], e["metric"]): e for e in ev if e["event"] == "opened"}
    assert set(opened) == {("pair", "retrans_rate")}  # an instance key (one host's evidence) needs a second
    assert {e["severity"] for e in opened.values()} == {"warning"}  # one interval is never critical
    ev = _feed(d, [_pair(1230, h0=_host(150, worst=50), h1=_host(150, worst=50))])
    assert {e["severity"] for e in ev if e["event"] == "updated"} == {"critical"}


def test_a_remote_is_named_only_when_it_explains_the_loss():
    """Attribution reads ``top`` as "this remote explains the key's degradation". A host losing on
    several connections at once (a path's loss, which every remote of the host suffers) names no
    remote for that family: it would pass for a fault of whichever remote lost most. A host whose
    loss one connection explains names it."""
    d = Detection()
    _learned(d)
    d.take_health()
    # h0: 150 retransmissions, 50 at most on one remote (wide); h1: 201, 200 of them on one remote
    h0 = _host(150, worst=50, timeouts=9)
    _feed(d, [_pair(1200, h0=h0, h1=_host(201, worst=200))])
    tops = {h.reporter: h.top for h in d.take_health() if h.t == 1200 and h.reporter}
    assert tops["h0"][0] is None and tops["h1"][0] == "10.0.1.9", tops
    assert tops["h0"][1] == "10.0.1.9", tops  # its timeouts all on one remote: that one is named
    assert h0[3] == ["10.0.1.9", "10.0.1.9", None]  # the window's host entry is left as it was


def test_a_pair_key_one_host_explains_is_weak_evidence_for_attribution():
    """A pair key's loss that one reporter explains (it does not stay hot with that host set aside) is
    marked weak in its health, however long it lasts and although its alert stands: pair keys alone
    (``FLOWMON_DETECT_INSTANCES=false``, or attribution's pair fallback) must not blame a path for one
    host's trouble. The same loss on both hosts is strong."""
    d = Detection(instances=False)
    _learned(d)
    d.take_health()
    events = _feed(d, [_pair(1200 + 30 * k, h0=_host(150, worst=50), h1=_host(1)) for k in range(3)])
    assert {(e["scope"], e["metric"]) for e in events if e["event"] == "opened"} == {("pair", "retrans_rate")}
    pair = [h for h in d.take_health() if h.reporter is None]
    assert [(h.retrans, h.weak) for h in pair] == [(1, ("retrans",))] * 3
    d = Detection(instances=False)
    _learned(d)
    d.take_health()
    _feed(d, [_pair(1200, h0=_host(150, worst=50), h1=_host(150, worst=50))])
    assert [(h.retrans, h.weak) for h in d.take_health() if h.reporter is None] == [(1, ())]


def test_a_key_forgotten_and_back_in_one_batch_keeps_its_new_state():
    """A key silent for ``key_ttl_s`` is forgotten (a tombstone); one that reports again before the batch's
    state is written is written with its new state, not the tombstone (which would drop it on restore)."""
    d = Detection(key_ttl_s=3600)
    _feed(d, [_pair(0, h0=_host(1), h1=_host(1))])
    d.take_dirty()
    _feed(d, [_pair(4000, h1=_host(1))])  # h0 silent for more than an hour: forgotten
    assert ("instance", "h0", DST[0]) not in d.keys and d.expired_total == 1
    _feed(d, [_pair(4030, h0=_host(1), h1=_host(1))])  # and back, in the same batch
    dirty = d.take_dirty()
    assert dirty[("instance", "h0", DST[0])] == d.keys[("instance", "h0", DST[0])].state()
    _feed(d, [_pair(8000, h1=_host(1))])  # forgotten again, and not back: the tombstone goes out
    assert d.take_dirty()[("instance", "h0", DST[0])] is None


def test_one_flow_rtt_spike_is_not_an_alert():
    d = Detection()
    _learned(d)
    # one of six flows of h0 at 40 ms: the median does not move (and the tail, p90, is not alerted on)
    spike = [800, 810, 820, 830, 840, 40_000]
    assert _feed(d, [_pair(1200, h0=_host(0, rtts=spike), h1=_host(0))]) == []
    assert _feed(d, [_pair(1230, h0=_host(0), h1=_host(0))]) == []
    # a key with a single flow: its spike is the whole key; one interval of it is not confirmed
    single = _host(0, rtts=[40_000, 41_000], flows=1)
    assert [e for e in _feed(d, [_pair(1260, h0=single, h1=_host(0))]) if e["scope"] == "instance"] == []
    # a real delay on every flow of both hosts: the median moves, at once
    slow = [25_800 + i for i in range(6)]
    ev = _feed(d, [_pair(1290, h0=_host(0, rtts=slow), h1=_host(0, rtts=slow))])
    assert ("pair", "rtt_p50") in {(e["scope"], e["metric"]) for e in ev if e["event"] == "opened"}


def test_overdispersed_background_is_learned_not_alarmed():
    """Real background retransmissions are overdispersed (clustered), not Poisson: a 3-4x normal
    interval spread over a key's connections is not an alarm — with the Poisson score (the default:
    the absolute floors and the confirmation are what hold it), and with the learned dispersion
    (``learn_dispersion=1``), which does learn the spread."""
    import numpy as np
    for learn in (0, 1):
        rng = np.random.default_rng(3)
        d = Detection(params={"learn_dispersion": learn})
        events = []
        for k in range(400):
            # gamma-Poisson with mean 4 per host-interval, shape 0.7: variance ~ 27
            r = [int(rng.poisson(rng.gamma(0.7, 4 / 0.7))) for _ in range(2)]
            events += _feed(d, [_pair(30 * k, h0=_host(r[0], worst=-(-r[0] // 3)),
                                      h1=_host(r[1], worst=-(-r[1] // 3)))])
        assert [e for e in events if e["metric"] == "retrans_rate"] == [], learn
        dispersion = d.keys[("pair", "s1", "s2")].model._dispersion("retrans_rate")
        assert dispersion > 2.0 if learn else dispersion == 1.0


def test_a_model_learned_by_an_older_version_is_learned_again():
    """Detector state from before the median and the confirmation (no streaks, other metrics) is not
    trusted: the key starts learning again instead of failing on every interval."""
    from pipeline.detect.detection import Baseline, BaselineParams, dump_model
    old = Baseline(BaselineParams())
    del old.streak
    old.seen = {"retrans_rate": 40, "timeout_rate": 40, "rtt_mean": 40, "rtt_p90": 40}
    d = Detection()
    _feed(d, [_iv(0)])
    state = {k: orjson.loads(orjson.dumps(v)) for k, v in d.take_dirty().items()}
    key = ("pair", "s1", "s2")
    state[key]["model"] = dump_model(old)
    b = Detection()
    for k, v in state.items():
        b.load(k, v)
    assert b.keys[key].model.seen == dict.fromkeys(b.keys[key].model.seen, 0)
    assert _feed(b, [_iv(30 * k) for k in range(1, 40)]) == []


def test_the_rtt_tail_is_observed_only_for_models_that_read_it():
    """The default model reads no RTT p90, so detection skips that quantile (NaN). A key restored with
    parameters of its own that score the tail (a worker restarted with other settings) turns it back
    on: its p90 statistics must never learn a NaN."""
    import math

    lean = Detection()
    _feed(lean, [_iv(30 * k) for k in range(3)])
    assert not lean._p90
    tail = Detection(params={"score_p90": 1})
    _feed(tail, [_iv(30 * k) for k in range(40)])
    assert tail._p90
    state = {k: orjson.loads(orjson.dumps(v)) for k, v in tail.take_dirty().items()}
    restored = Detection()  # the defaults: no p90 of its own
    for k, v in state.items():
        restored.load(k, v)
    assert restored._p90
    more = [_iv(30 * k) for k in range(40, 45)] + [_iv(30 * 45, rtt_us=20_000)]
    assert _feed(restored, more) == _feed(tail, more)  # as if it had never restarted
    model = restored.keys[("pair", "s1", "s2")].model
    assert model.seen["rtt_p90"] == 45 and all(math.isfinite(x) for x in model.statistics()["rtt_p90"].values())
    assert model.__getstate__() == tail.keys[("pair", "s1", "s2")].model.__getstate__()


def test_keys_of_one_pair_share_their_placements_scored_or_restored():
    """A pair key and its reporters' keys name the same two placements: one list each (a copy per key was
    ~160 B of a key's ~1.5 KB), never the interval's own lists, and the same after a restore."""
    d = Detection()
    iv = _iv(0, hosts=("h0", "h1", "h2"))
    _feed(d, [iv, _iv(30, hosts=("h0", "h1", "h2"))])
    keys = list(d.keys.values())
    assert len(keys) == 4
    assert len({id(k.src) for k in keys}) == len({id(k.dst) for k in keys}) == 1
    assert keys[0].src == SRC and keys[0].dst == DST and keys[0].src is not iv.src and keys[0].src is not SRC
    again = Detection()
    for k, val in d.take_dirty().items():
        again.load(k, orjson.loads(orjson.dumps(val)))
    restored = list(again.keys.values())
    assert len({id(k.src) for k in restored}) == len({id(k.dst) for k in restored}) == 1
    assert [(k.src, k.dst) for k in restored] == [(SRC, DST)] * 4
