"""Validation: every bad-input class gets its reason; the code agrees with the JSON schema."""

from __future__ import annotations

import copy
import os
import json
import time
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.ingest.topology import load_topology
from pipeline.ingest.validate import Validator
from pipeline.wire.contract import REASONS, schema
from tests.support.strategies import SUBNETS, arbitrary_bytes, base_start, near_valid, reports

NOW = time.time()
TOPO = load_topology(Path(__file__).parents[1] / "data" / "bad_input_topology.yaml")
assert [(s.id, s.az, s.vpc) for s in TOPO.subnets.values()] == SUBNETS
REPORT_SCHEMA = jsonschema.Draft202012Validator(schema("flow_report"), format_checker=jsonschema.FormatChecker())


def good() -> dict:
    return {"version": 1, "instance": "s-1a/0", "local": {"ip": "10.0.0.4", "subnet": "s-1a", "az": "az-1a",
                                                          "vpc": "vpc-a"},
            "start": base_start(NOW), "interval_s": 30,
            "samples": [{"remote": {"ip": "10.0.1.4"}, "bytes_sent": 100, "bytes_received": 200,
                         "retransmissions": 1, "timeouts": 0, "flows": 2, "rtt_us": [900, 1100]},
                        {"remote": {"ip": "10.0.2.9", "subnet": "s-1d", "az": "az-1d", "vpc": "vpc-a"},
                         "bytes_sent": 5, "bytes_received": 0, "retransmissions": 0, "timeouts": 0, "flows": 1,
                         "rtt_us": []}]}


def check(msg, **kw):
    raw = msg if isinstance(msg, bytes) else json.dumps(msg).encode()  # json: integers beyond 64 bits too
    return Validator(TOPO, **kw).check(raw, now=NOW)


def mutate(f):
    m = good()
    f(m)
    return m


CASES = {
    "malformed_json": (b'{"version": 1, "samples": [', None),
    "not_an_object": (b"[1, 2, 3]", None),
    "unsupported_version": (mutate(lambda m: m.update(version=2)), "version"),
    "missing_field": (mutate(lambda m: m.pop("instance")), "instance"),
    "wrong_type": (mutate(lambda m: m.update(start="yesterday")), "start"),
    "out_of_range": (mutate(lambda m: m.update(interval_s=0)), "interval_s"),
    "future_timestamp": (mutate(lambda m: m.update(start=int(NOW) + 3600)), "start"),
    "unknown_local": (mutate(lambda m: m.update(local={"ip": "192.168.9.9"})), "local"),
}


@pytest.mark.parametrize("reason", list(CASES))
def test_whole_message_refusals(reason):
    msg, field = CASES[reason]
    rep, rejected = check(msg)
    assert rep is None
    assert [(r.reason, r.field) for r in rejected] == [(reason, field)]
    assert rejected[0].detail
    if isinstance(msg, dict):
        assert rejected[0].samples == 2 and rejected[0].payload == msg  # kept verbatim, counted
    elif reason == "malformed_json":
        assert rejected[0].raw == msg
    else:
        assert rejected[0].payload == orjson.loads(msg)


def test_oversize_message_and_sample_count():
    big = good()
    big["samples"] = big["samples"] * 600
    assert check(big, max_samples=1000)[1][0].reason == "oversize"
    assert check(big, max_message_bytes=1024)[1][0].reason == "oversize"


@pytest.mark.parametrize("field,value,reason", [
    ("bytes_sent", -5, "out_of_range"),
    ("retransmissions", 10**12, "out_of_range"),  # absurd counter
    ("flows", 0, "out_of_range"),
    ("timeouts", 1.5, "wrong_type"),
    ("bytes_received", True, "wrong_type"),  # a boolean is not a count
    ("rtt_us", [1000, "fast"], "wrong_type"),
    ("rtt_us", [0], "out_of_range"),
    ("remote", {"ip": "not-an-ip"}, "wrong_type"),
    # placement lengths, as the schema says (minLength 1, maxLength 64): the fast path once let these through
    ("remote", {"ip": "10.0.2.9", "subnet": ""}, "out_of_range"),
    ("remote", {"ip": "10.0.2.9", "subnet": "s-1d", "az": "a" * 65}, "out_of_range"),
    ("remote", {"ip": "10.0.2.9", "vpc": ""}, "out_of_range"),
])
def test_one_bad_sample_refused_alone(field, value, reason):
    m = good()
    m["samples"][1][field] = value
    rep, rejected = check(m)
    assert [(r.reason, r.sample_index, r.samples) for r in rejected] == [(reason, 1, 1)]
    assert rejected[0].field.startswith("samples[1].")
    assert rep.n == 1 and rep.index.tolist() == [0] and rep.counters[0].tolist() == [100]


def test_flat_single_sample_is_a_report_of_one():
    m = good()
    flat = {k: v for k, v in m.items() if k != "samples"} | m["samples"][0]
    rep, rejected = check(flat)
    assert rejected == [] and rep.n == 1 and rep.rtt.tolist() == [900, 1100]


def test_named_and_resolved_remote_share_a_placement():
    """Regression: a remote subnet named in one sample and resolved from the topology in another
    must give one destination (they were once two partials, and the second was taken for a replay)."""
    m = good()
    m["samples"].append(copy.deepcopy(m["samples"][0]))
    m["samples"][2]["remote"] = {"ip": "10.0.1.7", "subnet": "s-1c", "az": "az-1c", "vpc": "vpc-a"}
    v = Validator(TOPO)
    rep, _ = v.check(orjson.dumps(m), now=NOW)
    assert rep.dst[0] == rep.dst[2] and v.places[rep.dst[0]] == ("s-1c", "az-1c", "vpc-a")


def test_unknown_remote_is_external():
    m = good()
    m["samples"][0]["remote"] = {"ip": "8.8.8.8"}
    v = Validator(TOPO)
    rep, _ = v.check(orjson.dumps(m), now=NOW)
    assert v.places[rep.dst[0]] == ("external", "external", "external")


@settings(max_examples=300, deadline=None)
@given(arbitrary_bytes)
def test_arbitrary_bytes_never_raise(raw):
    rep, rejected = check(raw)
    assert rep is not None or rejected
    assert all(r.reason in REASONS for r in rejected)


@settings(max_examples=int(os.environ.get("FLOWMON_HYPOTHESIS_EXAMPLES", 400)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(near_valid())
def test_near_valid_agrees_with_the_schema(msg):
    """Per sample: accepted by the validator <=> valid under schemas/wire/flow_report.v1.json."""
    rep, rejected = check(msg)
    header = {k: v for k, v in msg.items() if k != "samples"}
    header_ok = REPORT_SCHEMA.is_valid(header | {"samples": [good()["samples"][0]]})
    # what the schema cannot say: not from the future (relative to the worker clock)
    header_ok = header_ok and msg["start"] <= NOW + 300
    if not header_ok or not isinstance(msg.get("samples"), list) or not msg["samples"]:
        assert rep is None and len(rejected) == 1 and rejected[0].sample_index is None
        return
    accepted = set(rep.index.tolist()) if rep is not None else set()
    refused = {r.sample_index for r in rejected}
    assert accepted.isdisjoint(refused) and accepted | refused == set(range(len(msg["samples"])))
    for i, s in enumerate(msg["samples"]):
        assert (i in accepted) == REPORT_SCHEMA.is_valid(header | {"samples": [s]}), (i, s)


@settings(max_examples=200, deadline=None)
@given(reports())
def test_valid_reports_accepted_whole(msg):
    assert REPORT_SCHEMA.is_valid(msg)
    rep, rejected = check(msg)
    assert rejected == [] and rep.n == len(msg["samples"])
    assert rep.counters[0].sum() == sum(s["bytes_sent"] for s in msg["samples"])
    assert rep.rtt.size == sum(len(s["rtt_us"]) for s in msg["samples"])


def test_every_reason_is_in_the_deadletter_schema():
    tested = set(CASES) | {"oversize", "late", "internal_error"}
    assert tested == set(REASONS)
    assert st  # strategies module is shared with the worker tests


@pytest.mark.parametrize("value,reason", [(None, "wrong_type"), (7, "wrong_type"), ("", "out_of_range"),
                                          ("x" * 129, "out_of_range"), ("r-17", None)])
def test_report_id_checked_like_the_schema(value, reason):
    """``report_id`` is optional; when present it is a 1..128-character string, as the schema says."""
    msg = mutate(lambda m: m.update(report_id=value))
    rep, rejected = check(msg)
    assert [(r.reason, r.field) for r in rejected] == ([] if reason is None else [(reason, "report_id")])
    assert (reason is None) == REPORT_SCHEMA.is_valid(msg)


def test_report_identity_ignores_serialisation_not_content():
    """A re-send with other key order, spacing or 1.0 for 1 is the same report; other content, or
    another report_id, is another one; with a report_id the content does not matter."""
    a = good()
    b = json.loads(json.dumps(a))
    b["samples"][0] = dict(reversed(list(b["samples"][0].items())))
    b["samples"][0]["flows"] = 2.0
    raw_b = json.dumps(b, indent=2).encode()
    rid = lambda m: check(m)[0].rid
    assert rid(a) == rid(raw_b)
    assert rid(a) != rid(mutate(lambda m: m["samples"][0].update(bytes_sent=101)))
    assert rid(a | {"report_id": "x"}) != rid(a | {"report_id": "y"})
    assert rid(a | {"report_id": "x"}) == rid(mutate(lambda m: m.update(report_id="x", interval_s=60)))


def test_report_identity_is_stable_across_releases():
    """Windows drop a re-sent report by its identity, also when an older worker read the first copy:
    the digest of given content must never change (values the first implementation computed)."""
    from pipeline.ingest.validate import report_identity

    assert report_identity("h1", 1764000000, 30, None, (b"x", b"", b"yz" * 10)) == 6419937426865414867
    assert report_identity("h1", 1764000000, 30, "r7") == 7549281045284276665
    rep, _ = check(good())
    assert rep.rid == Validator(TOPO).check_many([json.dumps(good()).encode()], now=NOW)[0][0].rids[0]
