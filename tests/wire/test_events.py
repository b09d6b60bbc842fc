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
from pipeline.wire.records import GridInterval

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
    stage, typed = AttributionStage(1), AttributionStage(1)
    out: dict = {"events": [], "health": [], "attributions": [], "nhi": [], "typed": ([], [])}
    for k in range(60):
        t = 30 * k
        new = []
        for s in SUBNETS:
            for d in SUBNETS:
                if s != d:
                    new += det.interval(_iv(t, s, d, retrans=400 if k >= 40 and "b1" in (s, d) else 1))
        health = [h.to_wire() for h in det.take_health()]
        msg = orjson.loads(orjson.dumps({"p": 0, "upto": t, "health": health,
                                         "opened": [e for e in new if e["event"] == "opened"]}))
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
