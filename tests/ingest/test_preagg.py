"""Pre-aggregation equals a plain per-sample loop, exactly (int64 sums, histogram counts)."""

from __future__ import annotations

import time

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest.step import Ingest
from pipeline.ingest.preagg import PARTIAL_COUNTERS, partials
from pipeline.wire.records import RTT_COUNT, RTT_SUM_US, SAMPLES, decode_pairs
from pipeline.wire.rtt import bucket
from pipeline.ingest.validate import Validator
from pipeline.wire.contract import pair_partition
from tests.support.strategies import reports
from tests.ingest.test_validate import TOPO

import numpy as np


def naive(msg: dict, v: Validator) -> dict:
    out: dict = {}
    for s in msg["samples"]:
        r = s["remote"]
        dst = v.places[v._code((r["ip"], r.get("subnet"), r.get("az"), r.get("vpc")))][0]
        c = out.setdefault(dst, [0] * len(PARTIAL_COUNTERS) + [{}])
        for i, k in enumerate(("bytes_sent", "bytes_received", "retransmissions", "timeouts", "flows")):
            c[i] += s[k]
        c[SAMPLES] += 1
        c[RTT_COUNT] += len(s["rtt_us"])
        c[RTT_SUM_US] += sum(s["rtt_us"])
        for b in bucket(np.array(s["rtt_us"], dtype=np.int64)).tolist():
            c[-1][b] = c[-1].get(b, 0) + 1
    return out


@settings(max_examples=200, deadline=None)
@given(reports(max_samples=40))
def test_partials_equal_naive_loop(msg):
    v = Validator(TOPO)
    rep, rejected = v.check(orjson.dumps(msg), now=time.time())
    assert not rejected
    got = {p.dst[0]: p.counters + [p.rtt_hist] for p in partials(rep, v.places, 600)}
    assert got == naive(msg, v)
    assert {p.window_start for p in partials(rep, v.places, 600)} == {msg["start"] - msg["start"] % 600}


@settings(max_examples=100, deadline=None)
@given(reports(max_samples=40), st.integers(1, 16))
def test_ingest_routes_each_pair_to_its_partition_once(msg, partitions):
    ing = Ingest(Validator(TOPO), window_s=600, partitions=partitions)
    res = ing.process(orjson.dumps(msg), "r", 0, 9, now=time.time())
    seen = set()
    for p, raw in res.messages.items():
        (m,) = decode_pairs(raw)
        assert m.origin == (0, 9) and m.start == msg["start"]
        assert orjson.loads(raw)["o"] == [0, 9]  # on the wire, as always
        for part in m.parts:
            key = (part.src[0], part.dst[0])
            assert pair_partition(*key, partitions) == p and key not in seen
            seen.add(key)
    assert res.accepted == sum(part.counters[SAMPLES] for raw in res.messages.values()
                               for part in decode_pairs(raw)[0].parts)


@settings(max_examples=100, deadline=None)
@given(reports(max_samples=40))
def test_small_and_numpy_paths_agree(msg):
    import pipeline.ingest.preagg as preagg

    v = Validator(TOPO)
    rep, _ = v.check(orjson.dumps(msg), now=time.time())
    small = preagg._partials_small(rep, v.places, msg["start"] - msg["start"] % 600)
    old = preagg.SMALL
    try:
        preagg.SMALL = 0
        big = partials(rep, v.places, 600)
    finally:
        preagg.SMALL = old
    assert small == big


def test_detection_extras_one_sample_maxima_remotes_and_fresh_medians():
    """What detection reads besides the sums: the largest one-sample retransmissions / timeouts and
    whose they were, the highest-RTT remote, and the histogram of the samples' own median RTTs — from
    samples that moved data (an idle connection's smoothed RTT is stale), whatever the path taken."""
    import pipeline.ingest.preagg as preagg

    def sample(ip, sent, retr, tmo, rtts):
        return {"remote": {"ip": ip, "subnet": "s2", "az": "a2", "vpc": "v"}, "bytes_sent": sent,
                "bytes_received": 0, "retransmissions": retr, "timeouts": tmo, "flows": 1, "rtt_us": rtts}
    msg = {"version": 1, "instance": "h1", "local": {"ip": "10.0.0.4", "subnet": "s1", "az": "a1", "vpc": "v"},
           "start": 1764000000, "interval_s": 30,
           "samples": [sample("10.0.1.4", 5000, 3, 0, [800, 900, 1000]),
                       sample("10.0.1.5", 9000, 40, 2, [700, 700]),
                       sample("10.0.1.6", 0, 0, 0, [90_000])]}  # idle: its RTT is its last spike
    v = Validator(TOPO)
    rep, _ = v.check(orjson.dumps(msg), now=time.time())
    old = preagg.SMALL
    try:
        for small in (16, 0):  # the plain loop and the numpy path
            preagg.SMALL = small
            (p,) = partials(rep, v.places, 600)
            assert p.maxima == [40, 2] and p.top == ["10.0.1.5", "10.0.1.5", "10.0.1.6"], small
            assert p.medians == {int(bucket(np.array([900]))[0]): 1, int(bucket(np.array([700]))[0]): 1}, small
            assert p.counters[RTT_COUNT] == 6  # the window still counts every observation
    finally:
        preagg.SMALL = old
