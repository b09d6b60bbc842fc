"""The independent generator (benchmarks/independent.py): valid reports, delivery properties, ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from benchmarks.independent import EPOCH, SCENARIOS, FaultSpec, Scenario, _fleet_topology, generate

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas/wire/flow_report.v1.json").read_text())

# A short scenario with one fault of every kind, so the test stays fast (< 10 s in all).
SMALL = Scenario(
    "test-small", "1 h, every fault kind", 3600, _fleet_topology(), ("data-1/0", "data-2/0"),
    (
        FaultSpec("azp-loss", "loss", {"az_pair": ["euc1-az1", "euc1-az2"]}, 1200, 300, 0.01, "infrastructure", 0.5),
        FaultSpec("sub-delay", "delay", {"subnet": "data-3"}, 1500, 300, 2000.0, "infrastructure"),
        FaultSpec("stall", "stall", {"instance": "web-1/3"}, 1800, 300, 150_000.0, "workload"),
        FaultSpec("nic", "nic_drop", {"instance": "batch-2/4"}, 2100, 300, 0.03, "workload"),
        FaultSpec("slow", "slow_server", {"instance": "data-1/0"}, 2400, 300, 8000.0, "workload"),
    ),
)


@pytest.fixture(scope="module")
def small():
    return generate(SMALL, seed=7)


def test_reports_validate_against_the_wire_schema(small):
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    for i, (_, r) in enumerate(small.deliveries):
        if i % 25:  # every 25th report (~300, every agent) keeps it fast; each one carries many samples
            continue
        r = dict(r)
        # report_id is a header field the pipeline is adding; drop it if the schema does not list it yet
        if "report_id" not in SCHEMA["$defs"]["header"]["properties"]:
            assert isinstance(r.pop("report_id"), str)
        validator.validate(r)


def test_every_report_has_a_report_id_and_sane_header(small):
    ivs = set()
    for _, r in small.deliveries:
        assert isinstance(r["report_id"], str) and r["report_id"]
        assert r["instance"] in small.topology.instances
        assert r["start"] >= EPOCH and r["start"] < EPOCH + small.duration_s
        ivs.add(r["interval_s"])
        for s in r["samples"]:
            assert s["flows"] >= 1 and s["retransmissions"] >= 0 and all(v >= 1 for v in s["rtt_us"])
    assert ivs == {30, 60}


def test_arrivals_sorted_and_after_the_interval(small):
    arr = [t for t, _ in small.deliveries]
    assert arr == sorted(arr)
    for t, r in small.deliveries:
        assert t >= r["start"] + r["interval_s"] - 5  # agent clocks are off by a few seconds at most


def test_duplicates_share_report_id_and_content(small):
    by_id: dict[str, list[dict]] = {}
    for _, r in small.deliveries:
        by_id.setdefault(r["report_id"], []).append(r)
    dups = [v for v in by_id.values() if len(v) > 1]
    assert dups, "expected some re-sent reports"
    assert all(len(v) == 2 and v[0] == v[1] for v in dups)
    assert small.stats["duplicates"] == len(dups)
    # one report per agent and interval otherwise
    assert len(by_id) == len({(r["instance"], r["start"]) for _, r in small.deliveries})


def test_fault_keys_non_empty_and_consistent_with_topology(small):
    t = small.topology
    assert [f["name"] for f in small.faults] == [f.name for f in SMALL.faults]
    for f in small.faults:
        assert f["keys"], f["name"]
        assert f["cause"] in ("infrastructure", "workload")
        assert EPOCH <= f["start"] < f["end"] <= EPOCH + small.duration_s
        for kind, a, b in f["keys"]:
            assert b in t.subnets
            assert (a in t.subnets) if kind == "pair" else (a in t.instances)
        pair = {(a, b) for k, a, b in f["keys"] if k == "pair"}
        assert all((b, a) in pair for a, b in pair)  # both directions of every touched connection
        tgt_kind, tgt = next(iter(f["target"].items()))
        inst = {(a, b) for k, a, b in f["keys"] if k == "instance"}
        if tgt_kind == "instance":  # every touched connection has the target at one end
            sub = t.instances[tgt].subnet
            assert all(a == tgt or b == sub for a, b in inst)
        elif tgt_kind == "subnet":
            assert all(a == tgt or b == tgt for a, b in pair)
        else:
            azs = set(tgt)
            for a, b in pair:
                assert {t.subnets[a].az, t.subnets[b].az} == azs


TINY = Scenario("test-tiny", "20 min, one fault", 1200, _fleet_topology(), ("data-1/0",),
                (FaultSpec("nic", "nic_drop", {"instance": "batch-2/4"}, 600, 300, 0.03, "workload"),))


def test_same_seed_same_output():
    one, again = generate(TINY, seed=3), generate(TINY, seed=3)
    assert one.deliveries == again.deliveries
    assert one.faults == again.faults and one.faults[0]["keys"]
    assert generate(TINY, seed=4).deliveries != one.deliveries


def test_shipped_scenarios_are_well_formed():
    assert "indep-quiet" in SCENARIOS and not SCENARIOS["indep-quiet"].faults
    assert SCENARIOS["indep-quiet"].duration_s >= 4 * 3600
    causes = {f.cause for s in SCENARIOS.values() for f in s.faults}
    assert causes == {"infrastructure", "workload"}
    overlap = SCENARIOS["indep-overlap"].faults
    assert {f.cause for f in overlap} == {"infrastructure", "workload"}
    a, b = overlap
    assert a.start_s < b.start_s + b.duration_s and b.start_s < a.start_s + a.duration_s


def test_write(tmp_path, small):
    d = small.write(tmp_path)
    lines = (d / "deliveries.jsonl").read_text().splitlines()
    assert len(lines) == len(small.deliveries)
    first = json.loads(lines[0])
    assert set(first) == {"arrival", "report"} and first["report"] == small.deliveries[0][1]
    truth = json.loads((d / "truth.json").read_text())
    assert [f["name"] for f in truth["faults"]] == [f["name"] for f in small.faults]
    assert all(f["keys"] for f in truth["faults"])
