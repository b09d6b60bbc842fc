"""The records that leave detection and attribution: their wire form is what the schemas define and
what the topics always carried; decoding gives the record back."""

from __future__ import annotations

import orjson
import pytest
from jsonschema import Draft202012Validator

from pipeline.attribute.correlate import AttributionStage
from pipeline.detect.detection import Detection
from pipeline.wire.contract import schema
from pipeline.wire.events import (FAMILIES, FAMILY_OF, METRICS, AnomalyEvent, Attribution, HealthBatch, KeyHealth,
                                  NhiPeriod, family_of)
from pipeline.wire.records import GridInterval, HealthUpdate, encode_health

SUBNETS = {"a1": "az1", "a2": "az1", "b1": "az2", "c1": "az3"}


def _iv(t: int, src: str, dst: str, *, retrans: int = 1) -> dict:
    """Four reporters of ``src`` towards ``dst``; each host's loss spread over its three remotes."""
    hosts = {}
    for i in range(4):
        c = [15_000_000, 150_000, retrans, 0, 3, 3, 12, 12 * (800 + 10 * ((t // 30 + i) % 4))]
        hosts[f"{src}/{i}"] = [c, {150: 12}, [-(-retrans // 3), 0], [f"10.9.{i}.1", None, None], f"10.0.{i}.4",
                               {150: 3}]
    return GridInterval(t, [src, SUBNETS[src], "v"], [dst, SUBNETS[dst], "v"], hosts)


@pytest.fixture(scope="module")
def run() -> dict:
    """A small fleet: every subnet talks to every other; b1 loses packets from interval 40 on."""
    det = Detection()
    stage, typed, rows = AttributionStage(1), AttributionStage(1), AttributionStage(1)
    out: dict = {"events": [], "health": [], "attributions": [], "nhi": [], "typed": ([], []), "rows": ([], []),
                 "messages": 0, "mismatches": 0}
    for k in range(60):
        t = 30 * k
        new = []
        for s in SUBNETS:
            for d in SUBNETS:
                if s != d:
                    new += det.interval(_iv(t, s, d, retrans=400 if k >= 40 and "b1" in (s, d) else 1))
        records = det.take_health()
        health = [h.to_wire() for h in records]  # the object form earlier versions sent
        msg = orjson.loads(orjson.dumps({"p": 0, "upto": t, "health": health,
                                         "opened": [e for e in new if e["event"] == "opened"]}))
        # what the worker sends now: arrays, in messages of at most 2 KB here (~20 keys each)
        opened = [AnomalyEvent.from_wire(e) for e in new if e["event"] == "opened"]
        for m in encode_health(HealthUpdate(0, t, records, opened), 2048):
            batch = HealthBatch.decode(m)  # as the worker reads it (msgspec)
            out["mismatches"] += batch != HealthBatch.from_wire(orjson.loads(m))
            r, n = rows.apply(batch)
            out["rows"][0].extend(r)
            out["rows"][1].extend(n)
            out["messages"] += 1
        out["mismatches"] += HealthBatch.decode(orjson.dumps(msg)) != HealthBatch.from_wire(msg)  # objects, too
        recs, nhi = stage.apply(msg)
        trecs, tnhi = typed.apply_batch(HealthBatch.from_wire(msg))
        out["typed"][0].extend(trecs)
        out["typed"][1].extend(tnhi)
        out["events"] += new
        out["health"] += health
        out["attributions"] += recs
        out["nhi"] += nhi
    recs, nhi = stage.finish()
    trecs, tnhi = typed.finish_records()
    r, n = rows.finish()
    out["rows"][0].extend(r)
    out["rows"][1].extend(n)
    out["attributions"] += recs
    out["nhi"] += nhi
    out["typed"][0].extend(trecs)
    out["typed"][1].extend(tnhi)
    return out


@pytest.mark.parametrize("name, kind, cls", [("flow_anomaly", "events", AnomalyEvent),
                                             ("flow_attribution", "attributions", Attribution),
                                             ("flow_nhi", "nhi", NhiPeriod)])
def test_wire_dicts_follow_the_schema_in_its_order_and_decode(run, name, kind, cls):
    validator = Draft202012Validator(schema(name))
    recs = run[kind]
    assert recs, kind  # the run does produce them
    order = list(schema(name)["properties"])
    for r in recs:
        validator.validate(orjson.loads(orjson.dumps(r)))
        assert list(r) == order  # keys in schema order: the bytes on the topic are what they were
        assert cls.from_wire(r).to_wire() == r


def test_typed_stage_equals_wire_stage(run):
    recs, nhi = run["typed"]
    assert [r.to_wire() for r in recs] == run["attributions"]
    assert [n.to_wire() for n in nhi] == run["nhi"]
    assert {r["cause"] for r in run["attributions"]} >= {"infrastructure"}


def test_health_as_arrays_in_chunks_attributes_as_the_object_form(run):
    """The health topic's array form, split across messages, gives the stage exactly what the object form
    earlier versions sent does: the same attributions and NHI periods, record for record."""
    assert run["messages"] > 2 * 60  # every interval's health took several messages
    assert run["rows"] == (run["attributions"], run["nhi"])
    assert run["mismatches"] == 0  # msgspec's decoding equals the general path's, arrays and objects alike


def test_health_values_msgspec_does_not_expect_decode_the_general_way():
    """A health value whose types msgspec does not expect (a float ``upto``) or that mixes entry forms decodes
    as the general path does; one that is not JSON is refused (the attribute agent logs and counts it)."""
    h = KeyHealth(30, ("s1", "a1", "v"), ("s2", "a2", "v"), "s1/0", 1, 0, None, ("lat",), ("10.9.0.1", None, None), "10.0.0.4")
    for d in ({"p": 1, "upto": 30.0, "health": [list(h)], "opened": []},
              {"p": 1, "upto": 30, "health": [list(h), h.to_wire()]},
              {"p": 1, "health": []}):
        assert HealthBatch.decode(orjson.dumps(d)) == HealthBatch.from_wire(d)
    assert HealthBatch.decode(orjson.dumps({"p": 1, "upto": 30, "health": [list(h), h.to_wire()]})).health == (h, h)
    with pytest.raises(ValueError):
        HealthBatch.decode(b'{"p": 1, "health": [')


def test_health_entries_are_the_bytes_orjson_writes_for_their_fields():
    """msgspec writes each entry as orjson writes the tuple of its fields (names with escapes and
    non-ASCII, big and negative numbers, None, empty and full ``weak``): readers of earlier versions
    read the same bytes."""
    import random

    rnd = random.Random(11)
    names = ["s1", 'q"uote', "back\\slash", "tab\tnl\n", "ünï-cødé", "\u2028", "ctl\x01", ""]
    health = [KeyHealth(rnd.choice([0, 30, 2**40, -30]), (rnd.choice(names), "az1", "v"), ("s2", rnd.choice(names), "v"),
                        rnd.choice([None, "i-1", rnd.choice(names)]), rnd.choice([0, 1, None]), rnd.choice([0, 1, None]),
                        rnd.choice([0, 1, None]), rnd.choice([(), ("lat",), ("retrans", "timeouts")]),
                        rnd.choice([None, ("10.0.0.1", None, "10.0.0.2"), (None, None, None)]),
                        rnd.choice([None, "10.1.0.1", rnd.choice(names)])) for _ in range(3_000)]
    for limit in (10_000_000, 4096):
        msgs = encode_health(HealthUpdate(1, 60, health, []), limit)
        bodies = [m[m.index(b'"health":') + 9:m.rindex(b',"opened":')] for m in msgs]
        got = [row for b in bodies for row in orjson.loads(b)]
        assert [orjson.dumps(row) for row in got] == [orjson.dumps(tuple(h)) for h in health]
        if limit == 10_000_000:
            assert bodies == [orjson.dumps([tuple(h) for h in health])]


def test_a_large_update_whose_first_rows_are_small_is_still_cut_under_its_limit():
    """A large update is cut by the size of its first rows; when later rows are much larger, the parts
    that come out too large are halved until they fit, in order."""
    small = [KeyHealth(30, ("s1", "az1", "v"), ("s2", "az2", "v"), None) for _ in range(400)]
    large = [KeyHealth(60, ("s1", "az1", "v"), ("s2", "az2", "v"), "i" * 300, 1, 0, 0, (), ("10.0.0.1", None, None),
                       "10.1.0.1") for _ in range(400)]
    limit = 8_000
    msgs = [orjson.loads(m) for m in encode_health(HealthUpdate(0, 60, small + large, []), limit)]
    assert [KeyHealth.from_wire(h) for m in msgs for h in m["health"]] == small + large
    assert all(len(orjson.dumps(m["health"])) <= limit for m in msgs)
    assert len(msgs) >= (400 * 360) // limit  # the large rows alone need this many


def test_a_large_update_is_encoded_once_per_row(monkeypatch):
    """An update that does not fit is cut by the size of its first rows: each row is encoded once, plus the
    probe of the first ones (not whole first, then again in parts)."""
    from pipeline.wire import records

    encoded = []
    real = records._HEALTH_ENCODE
    monkeypatch.setattr(records, "_HEALTH_ENCODE", lambda rows: encoded.append(len(rows)) or real(rows))
    rows = [KeyHealth(30, ("s1", "az1", "v"), ("s2", "az2", "v"), f"i-{i:05d}", 0, 0, 0, (), ("10.0.0.1", None, None),
                      "10.1.0.1") for i in range(20_000)]
    msgs = encode_health(HealthUpdate(0, 30, rows, []), 100_000)
    assert len(msgs) > 15 and sum(encoded) == len(rows) + records._HEALTH_PROBE
    assert [KeyHealth.from_wire(h) for m in msgs for h in orjson.loads(m)["health"]] == rows


def test_health_messages_stay_under_their_limit_and_keep_order():
    """Each message holds at most ``limit`` bytes of entries (one larger entry goes alone); read back in
    order they are the update's entries; ``upto`` and the opened alerts ride on the last message only."""
    import random

    rnd = random.Random(7)
    health = [KeyHealth(30 * (i // 50), ("s1", "az1", "v"), ("s2", "az2", "v"), None if i % 7 == 0 else "x" * rnd.randint(1, 400),
                        rnd.choice([0, 1, None]), 0, None, ("lat",) if i % 5 == 0 else (),
                        None if i % 7 == 0 else ("10.0.0.1", None, "10.0.0.2"), "10.1.0.1") for i in range(2_000)]
    for limit in (300, 4096, 100_000, 10_000_000):
        msgs = [orjson.loads(m) for m in encode_health(HealthUpdate(3, 990, health, []), limit)]
        got = [KeyHealth.from_wire(h) for m in msgs for h in m["health"]]
        assert got == health, limit
        for m in msgs:
            assert m["p"] == 3 and (len(m["health"]) == 1 or len(orjson.dumps(m["health"])) <= limit)
        assert [m["upto"] for m in msgs] == [None] * (len(msgs) - 1) + [990]
        assert (len(msgs) == 1) == (limit == 10_000_000)
    assert [orjson.loads(m) for m in encode_health(HealthUpdate(3, None, [], []), 100)] == [
        {"p": 3, "upto": None, "health": [], "opened": []}]


def test_health_round_trips_and_keeps_its_wire_form(run):
    pairs = [h for h in run["health"] if h.get("pair")]
    instances = [h for h in run["health"] if not h.get("pair")]
    assert pairs and instances
    for h in run["health"]:
        k = KeyHealth.from_wire(h)
        assert k.to_wire() == h
        assert k.pair == bool(h.get("pair")) and k.key == h["r"]
    # pair keys: r = "src>dst", "pair": true, no top/ip; instance keys: top per family, ip
    assert all(h["r"] == f"{h['src'][0]}>{h['dst'][0]}" and "top" not in h for h in pairs)
    assert all(list(h)[-2:] == ["top", "ip"] and list(h["top"]) == list(FAMILIES) for h in instances)
    assert all(h["weak"] for h in run["health"] if "weak" in h)  # "weak" only when not empty


def test_vocabulary_is_defined_once():
    assert METRICS == ("retrans_rate", "timeout_rate", "rtt_p50", "rtt_p90")
    assert set(FAMILY_OF.values()) == set(FAMILIES)
    anomaly_metrics = schema("flow_anomaly")["properties"]["metric"]["enum"]
    assert set(anomaly_metrics) == set(FAMILY_OF) and set(schema("flow_attribution")["properties"]["family"]["enum"]) \
        == set(FAMILIES)
    assert [family_of(m) for m in METRICS] == ["retrans", "timeouts", "lat", "lat"]
