"""Attribution core and NHI: the method's cases, the stage's bookkeeping, restart."""

from __future__ import annotations

import orjson

from pipeline.attribute import AttributionStage, Attributor
from pipeline.nhi import NetworkHealth


def key(r, sr, ar, sd, ad, lat=0, retrans=None):
    return {"t": 0, "r": r, "src": [sr, ar, "v"], "dst": [sd, ad, "v"], "retrans": retrans, "timeouts": None,
            "lat": lat}


def fleet(sick=lambda r, sd: False):
    """Subnets a1, a2 (az1), b1 (az2), c1 (az3); 4 reporters each, every one talking to every other subnet."""
    subnets = {"a1": "az1", "a2": "az1", "b1": "az2", "c1": "az3"}
    out = []
    for s, az in subnets.items():
        for i in range(4):
            r = f"{s}/{i}"
            for d, daz in subnets.items():
                out.append(key(r, s, az, d, daz, lat=int(sick(r, d))))
    return out


def causes(verdicts):
    return {(v.cause, v.element) for v in verdicts.values()}


def test_subnet_fault_blames_the_subnet():
    v = Attributor().attribute(0, fleet(lambda r, d: r.startswith("b1/") or d == "b1"))
    assert causes(v) == {("infrastructure", ("subnet", "b1"))}


def test_az_pair_fault_blames_the_path_not_its_subnets():
    v = Attributor().attribute(0, fleet(lambda r, d: (r[:2] in ("a1", "a2") and d == "b1")
                                        or (r.startswith("b1/") and d in ("a1", "a2"))))
    assert causes(v) == {("infrastructure", ("az_pair", "az1|az2"))}


def test_one_sick_host_is_workload_even_with_many_peers():
    # a1/0 degrades towards everyone; the others see it only on their keys towards a1
    v = Attributor().attribute(0, fleet(lambda r, d: r == "a1/0" or (d == "a1" and not r.startswith("a1/"))))
    assert causes(v) == {("workload", ("instance", "a1/0"))}
    ev = next(iter(v.values())).evidence
    assert ev["exonerating"] == 3 and ev["keys_degraded"] == ev["keys_scored"] == 4


def test_one_reporter_on_a_path_is_undetermined():
    health = fleet() + [key("x/0", "x", "az8", "y", "az9", lat=1)]
    v = Attributor().attribute(0, health)
    assert causes(v) == {("undetermined", None)}


def test_no_evidence_is_not_health():
    """Keys without a score for a family neither accuse nor exonerate."""
    health = [key(f"a1/{i}", "a1", "az1", "b1", "az2", lat=None, retrans=1) for i in range(3)]
    health += [key(f"a1/{i}", "a1", "az1", "c1", "az3", lat=0, retrans=None) for i in range(3)]
    health += [key(f"c1/{i}", "c1", "az3", "b1", "az2", lat=0, retrans=0) for i in range(3)]
    health += [key(f"c1/{i}", "c1", "az3", "a1", "az1", lat=0, retrans=0) for i in range(3)]
    v = Attributor().attribute(0, health)
    assert {k[0] for k in v} == {"retrans"}
    assert causes(v) == {("infrastructure", ("az_pair", "az1|az2"))}


def _msg(p, upto, health=(), opened=()):
    return {"p": p, "upto": upto, "health": list(health), "opened": list(opened)}


def _opened(alert_id, r, sr, sd, t=0):
    return {"alert_id": alert_id, "at": t, "scope": "instance", "instance": r, "src_subnet": sr, "dst_subnet": sd,
            "metric": "rtt_mean"}


def test_stage_waits_for_every_partition_and_counts_replays_once():
    st = AttributionStage(partitions=2)
    h = fleet(lambda r, d: r.startswith("b1/") or d == "b1")
    op = [_opened("00000000000000aa", "b1/0", "b1", "a1")]
    assert st.apply(_msg(0, 0, h[:40], op), offset=0) == ([], [])  # partition 1 has not passed t=0
    assert st.replay_from() == 0
    st.apply(_msg(0, 0, h[:40], op), offset=1)  # a replayed copy
    recs, nhi = st.apply(_msg(1, 0, h[40:]), offset=2)
    assert [(r["alert_id"], r["cause"], r["element"]) for r in recs] == [("00000000000000aa", "infrastructure", "b1")]
    assert recs[0]["reporters_degraded"] == 16 and recs[0]["keys_degraded"] == 28  # b1's own 16 + 3x4 towards b1
    assert {(n["scope_kind"], n["scope"]) for n in nhi} == {("subnet", "b1"), ("az", "az2")}
    assert st.replay_from() is None and st.done_upto == 0
    assert st.apply(_msg(0, 0, h[:40], op), offset=3) == ([], [])  # late copy of a decided interval: ignored


def test_stage_restart_from_state_and_replay_point():
    h = fleet(lambda r, d: r == "a1/0" or (d == "a1" and not r.startswith("a1/")))
    op = [_opened("00000000000000bb", "a1/0", "a1", "b1")]
    msgs = [_msg(0, None, h[:30]), _msg(0, 0, h[30:], op), _msg(1, 0)]
    ref = AttributionStage(2)
    want = [r for m in msgs for r in ref.apply(m)[0]]
    st = AttributionStage(2)
    st.apply(msgs[0], offset=10)
    state = orjson.loads(orjson.dumps(st.state()))
    again = AttributionStage(2)
    again.load(state)
    got = []
    for off, m in enumerate(msgs, start=st.replay_from()):  # replay from the saved point
        got += again.apply(m, offset=off)[0]
    assert got == want and want[0]["cause"] == "workload"


def test_nhi_ignores_workload_and_recovers():
    n = NetworkHealth(interval_s=30, recover_after=2, subnet_az={"b1": "az2"})
    assert n.update(0, []) == []
    assert {r["scope"] for r in n.update(30, [("az_pair", "az1|az2")])} == {"az1|az2", "az1", "az2"}
    assert n.update(60, []) == []
    ends = n.update(90, [])
    assert {(r["scope"], r["start"], r["end"]) for r in ends} == {("az1|az2", 30, 60), ("az1", 30, 60), ("az2", 30, 60)}
    assert n.degraded == {}
