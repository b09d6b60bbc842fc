"""What falls in a monitor (pair windows), what touches it (NHI scopes), and the records the evaluation gives.

``touches`` is checked against a brute force written from the definition: enumerate every
known subnet pair (a in local, b in remote) and ask whether it crosses the scope.
"""

from __future__ import annotations

import itertools
import random

import pytest
from jsonschema import Draft202012Validator

from pipeline.attribute.nhi import NetworkHealth
from pipeline.monitors.definition import MonitorError, Resource, parse_monitor
from pipeline.monitors.evaluate import MonitorSet, monitor_row, nhi_records, window_records
from pipeline.monitors.scope import EXTERNAL_SIDE, Placements, Side, side_matches, touches, window_in
from pipeline.wire.contract import schema

# two VPCs; az1 spans both
SUBNETS = {s.subnet: s for s in (Side("s1", "az1", "v1"), Side("s2", "az1", "v1"), Side("s3", "az2", "v1"),
                                 Side("s4", "az1", "v2"), Side("s5", "az3", "v2"))}
PLACE = Placements(SUBNETS, region="r1")
RESOURCES = [Resource("subnet", s) for s in SUBNETS] + [Resource("az", a) for a in ("az1", "az2", "az3")] + [
    Resource("vpc", v) for v in ("v1", "v2")] + [Resource("region", "r1"), Resource("region", "r2"),
                                                   Resource("subnet", "external")]


def window(src: Side, dst: Side, **counters) -> dict:
    base = {"version": 1, "src_subnet": src.subnet, "src_az": src.az, "src_vpc": src.vpc, "dst_subnet": dst.subnet,
            "dst_az": dst.az, "dst_vpc": dst.vpc, "window_start": 1200, "window_s": 600, "bytes_sent": 10,
            "bytes_received": 20, "bytes": 30, "retransmissions": 2, "timeouts": 1, "flows": 3, "samples": 3,
            "hosts": 1, "rtt_count": 2, "rtt_sum_us": 3000, "rtt_mean_us": 1500.0, "rtt_p50_us": 1.0,
            "rtt_p90_us": 1.0, "rtt_p99_us": 1.0, "rtt_hist": {"159": 1, "169": 1}, "closed_at": 1900.25}
    return base | counters


def test_a_window_falls_in_by_its_reporting_side_and_its_remote_side():
    m = parse_monitor({"name": "m", "local": ["az:az1"], "remote": ["vpc:v2"]})
    s1, s4, s5 = SUBNETS["s1"], SUBNETS["s4"], SUBNETS["s5"]
    assert window_in(m, s1, s5) and window_in(m, s4, s5)  # s4 is in az1 too
    assert not window_in(m, s5, s1)  # reported by s5 (az3): not local
    assert not window_in(m, s1, SUBNETS["s3"])
    assert not window_in(m, s1, EXTERNAL_SIDE)
    anything = parse_monitor({"name": "m", "local": ["subnet:s1"], "remote": "any"})
    assert window_in(anything, s1, EXTERNAL_SIDE) and not window_in(anything, s4, s1)
    internet = parse_monitor({"name": "m", "local": ["region:r1"], "remote": ["subnet:external"]})
    assert window_in(internet, s1, EXTERNAL_SIDE, "r1") and not window_in(internet, s1, s4, "r1")
    assert not window_in(internet, s1, EXTERNAL_SIDE, "r2")  # another region's monitor
    assert window_in(internet, s1, EXTERNAL_SIDE, None)  # no topology: the one region


def test_region_never_matches_outside_the_topology():
    assert not side_matches([Resource("region", "r1")], EXTERNAL_SIDE, "r1")
    assert not side_matches([Resource("region", "r1")], Side("s9", "", ""), None)


def _brute_touches(m, kind: str, scope: str) -> bool:
    local = [s for s in SUBNETS.values() if side_matches(m.local, s, "r1")]
    remote = list(SUBNETS.values()) + [EXTERNAL_SIDE] if m.remote == "any" else [
        s for s in [*SUBNETS.values(), EXTERNAL_SIDE] if side_matches(m.remote, s, "r1")]
    for a, b in itertools.product(local, remote):
        if kind == "subnet" and scope in (a.subnet, b.subnet):
            return True
        if kind == "az" and scope in (a.az, b.az):
            return True
        if kind == "vpc" and scope in (a.vpc, b.vpc):
            return True
        if kind == "az_pair" and scope in (f"{a.az}|{b.az}", f"{b.az}|{a.az}"):
            return True
    return False


def test_touches_agrees_with_the_enumeration_of_pairs():
    rng = random.Random(4)
    scopes = [("subnet", s) for s in SUBNETS] + [("az", a) for a in ("az1", "az2", "az3", "az9")] + [
        ("vpc", v) for v in ("v1", "v2")] + [("az_pair", f"{a}|{b}") for a in ("az1", "az2", "az3")
                                              for b in ("az1", "az2", "az3")] + [("subnet", "external")]
    checked = hits = 0
    for _ in range(300):
        local = rng.sample(RESOURCES[:-1], rng.randint(1, 2))
        remote = "any" if rng.random() < 0.2 else [str(r) for r in rng.sample(RESOURCES, rng.randint(1, 2))]
        m = parse_monitor({"name": "m", "local": [str(r) for r in local], "remote": remote})
        for kind, scope in scopes:
            want = _brute_touches(m, kind, scope)
            assert touches(m, kind, scope, PLACE) == want, (m, kind, scope)
            checked += 1
            hits += want
    assert 0.2 * checked < hits < 0.8 * checked  # the cases are mixed, not all one answer


def test_nhi_scopes_of_a_blamed_subnet_touch_the_monitors_around_it():
    health = NetworkHealth(interval_s=30, subnet_az={s: p.az for s, p in SUBNETS.items()})
    periods = [p.to_wire() for p in health.update(600, [("subnet", "s3")], now=5.0)]
    assert {(p["scope_kind"], p["scope"]) for p in periods} == {("subnet", "s3"), ("az", "az2")}
    to_s3 = parse_monitor({"name": "to-s3", "local": ["subnet:s1"], "remote": ["subnet:s3"]})
    v2_only = parse_monitor({"name": "v2-only", "local": ["vpc:v2"], "remote": ["vpc:v2"]})
    v1_out = parse_monitor({"name": "az1-v1", "local": ["subnet:s2"], "remote": ["az:az1"]})
    out = [r for p in periods for r in nhi_records(p, [to_s3, v2_only, v1_out], PLACE)]
    assert sorted((r["monitor"], r["scope_kind"], r["scope"]) for r in out) == [
        ("to-s3", "az", "az2"), ("to-s3", "subnet", "s3")]
    v = Draft202012Validator(schema("flow_monitor_nhi"))
    assert all(not list(v.iter_errors(r)) for r in out)
    assert all(r["start"] == 600 and r["end"] is None and r["element"] == "subnet:s3" for r in out)


def test_window_records_carry_the_pair_window_under_each_monitor():
    a = parse_monitor({"name": "a", "local": ["subnet:s1"], "remote": "any"})
    b = parse_monitor({"name": "b", "local": ["vpc:v1"], "remote": ["az:az3"]})
    c = parse_monitor({"name": "c", "local": ["subnet:s2"], "remote": "any"})
    w = window(SUBNETS["s1"], SUBNETS["s5"])
    recs = window_records(w, [a, b, c], "r1")
    assert [r["monitor"] for r in recs] == ["a", "b"]
    v = Draft202012Validator(schema("flow_monitor_window"))
    for r in recs:
        assert list(v.iter_errors(r)) == []
        assert {k: r[k] for k in w if k in r} == {k: w[k] for k in r if k in w}  # the window's values, untouched
    assert window_records(w, [a, b, c], "r1") == recs  # stateless: the same window, the same records


def test_the_monitor_set_follows_the_topic_messages():
    ms = MonitorSet()
    d = parse_monitor({"name": "m", "local": "subnet:s1", "remote": "any"})
    assert ms.apply(b"m", d.to_json()) == "created"
    assert ms.apply(b"m", d.to_json()) is None
    d2 = parse_monitor({"name": "m", "local": "subnet:s1", "remote": "az:az2"})
    assert ms.apply(b"m", d2.to_json()) == "changed" and ms.monitors["m"] == d2
    with pytest.raises(MonitorError, match="published under the key 'other'"):
        ms.apply(b"other", d.to_json())
    with pytest.raises(MonitorError, match="not JSON"):
        ms.apply(b"m", b"{")
    assert ms.monitors == {"m": d2}  # a bad message changes nothing
    assert ms.apply(b"m", None) == "deleted" and ms.apply(b"m", None) is None


def test_monitor_rows_for_the_table():
    d = parse_monitor({"name": "m", "local": "subnet:s1", "remote": ["az:az2", "subnet:external"]})
    row = monitor_row(b"m", d.to_json(), 1_700_000_000_123)
    assert row["local"] == ["subnet:s1"] and row["remote"] == ["az:az2", "subnet:external"]
    assert row["deleted"] == 0 and row["updated"] == pytest.approx(1_700_000_000.123)
    assert monitor_row(b"m", None, 5)["deleted"] == 1
