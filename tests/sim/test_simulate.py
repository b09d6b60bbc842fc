"""Fleet simulator: determinism, wire-v1 validity, the reference HTTP experiment, scale."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from pipeline.sim.scenario import DEMO_SCENARIO
from pipeline.sim.scenario import load_scenario, parse_duration, parse_size
from pipeline.sim.simulator import DEFAULT_RTT_MS, Simulator
from pipeline.sim.totals import expected_totals
from pipeline.ingest.topology import load_topology

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
HTTP = DEMO_SCENARIO
FLEET = DATA / "fleet_1000.yaml"
T0 = 1_764_000_000  # a multiple of 3600 (and of 600)
MB = 1_000_000
REQ = 400  # default request_bytes of a transfer


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads((ROOT / "schemas" / "wire" / "flow_report.v1.json").read_text())
    return Draft202012Validator(schema)


@pytest.fixture(scope="module")
def http_reports() -> list[dict[str, Any]]:
    return list(Simulator.from_scenario(HTTP, start=T0).reports("2h"))


@pytest.fixture(scope="module")
def fleet_reports() -> list[dict[str, Any]]:
    return list(Simulator.from_scenario(FLEET, start=T0).reports("20m"))


# --- helpers ---------------------------------------------------------------------------
def test_parse_size() -> None:
    assert parse_size("10MB") == 10 * MB
    assert parse_size("10 mb") == 10 * MB
    assert parse_size("5MiB") == 5 * 2**20
    assert parse_size("500KB") == 500_000
    assert parse_size("2.37GB") == 2_370_000_000
    assert parse_size("400B") == parse_size("400") == parse_size(400) == 400
    for bad in ("ten", "-1MB", "5 XB", "", True):
        with pytest.raises(ValueError, match="not a size"):
            parse_size(bad)  # type: ignore[arg-type]


def test_parse_duration() -> None:
    assert [parse_duration(x) for x in ("10m", "6h", "30s", "20m", "1d", "1h30m", "90", 45, "2.5m")] == [
        600, 21600, 30, 1200, 86400, 5400, 90, 45, 150]
    for bad in ("soon", "10x", "", "1.5s", -3, "m"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)  # type: ignore[arg-type]


# --- determinism -----------------------------------------------------------------------
def _dump(reports: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in reports)


def test_same_seed_byte_identical_different_seed_differs() -> None:
    a = _dump(list(Simulator.from_scenario(FLEET, start=T0, seed=3).reports("5m")))
    b = _dump(list(Simulator.from_scenario(FLEET, start=T0, seed=3).reports("5m")))
    c = _dump(list(Simulator.from_scenario(FLEET, start=T0, seed=4).reports("5m")))
    assert a == b
    assert a != c
    h1 = _dump(list(Simulator.from_scenario(HTTP, start=T0).reports("1h")))
    h2 = _dump(list(Simulator.from_scenario(HTTP, start=T0, seed=99).reports("1h")))
    assert h1 != h2  # RTTs differ (bytes are fixed by the transfer)


def test_prefix_of_longer_run(fleet_reports: list[dict[str, Any]]) -> None:
    short = list(Simulator.from_scenario(FLEET, start=T0).reports("5m"))
    assert _dump(short) == _dump(fleet_reports[: len(short)])


# --- wire format -----------------------------------------------------------------------
def test_reports_validate_against_wire_schema(validator: Draft202012Validator, http_reports: list,
                                              fleet_reports: list) -> None:
    subset = http_reports + fleet_reports[::97]
    for r in subset:
        errors = list(validator.iter_errors(r))
        assert not errors, (r["instance"], r["start"], errors[0].message)
    bad = dict(http_reports[0], version=2)
    assert list(validator.iter_errors(bad))  # the validator does bite


def test_report_shape(fleet_reports: list[dict[str, Any]]) -> None:
    topo = load_topology(FLEET)
    seen: set[tuple[str, int]] = set()
    prev_start = 0
    omitted = total = 0
    for r in fleet_reports:
        assert r["start"] >= prev_start  # event-time order
        prev_start = r["start"]
        assert r["start"] % 30 == 0 and r["interval_s"] == 30
        assert (r["instance"], r["start"]) not in seen  # one report per instance per interval
        seen.add((r["instance"], r["start"]))
        p = topo.instances[r["instance"]]
        assert r["local"] == {"ip": p.ip, "subnet": p.subnet, "az": p.az, "vpc": p.vpc}
        remotes = [s["remote"]["ip"] for s in r["samples"]]
        assert len(remotes) == len(set(remotes))  # one sample per remote endpoint
        for s in r["samples"]:
            assert len(s["rtt_us"]) == s["flows"] >= 1
            assert s["timeouts"] <= s["retransmissions"]
            assert s["bytes_sent"] + s["bytes_received"] > 0
            total += 1
            if "subnet" not in s["remote"]:
                omitted += 1
                assert set(s["remote"]) == {"ip"}
            else:
                assert topo.locate(s["remote"]["ip"]) == (s["remote"]["subnet"], s["remote"]["az"], s["remote"]["vpc"])
    assert 0.45 < omitted / total < 0.55  # default omit_remote_placement = 0.5


def test_omission_fraction_configurable() -> None:
    for frac, want in ((0.0, 0), (1.0, None)):
        sim = Simulator.from_scenario(HTTP, start=T0, omit_remote_placement=frac)
        samples = [s for r in sim.reports("1h") for s in r["samples"]]
        n_omitted = sum("subnet" not in s["remote"] for s in samples)
        assert n_omitted == (len(samples) if want is None else want)


def test_both_ends_report(fleet_reports: list[dict[str, Any]]) -> None:
    """Every (A → B) sample has a mirror (B → A) sample in the same interval: sent ↔ received."""
    topo = load_topology(FLEET)
    by_ip = {p.ip: p.instance for p in topo.instances.values()}
    idx = {(r["instance"], by_ip[s["remote"]["ip"]], r["start"]): s for r in fleet_reports for s in r["samples"]}
    for (a, b, t), s in idx.items():
        m = idx[(b, a, t)]
        assert (s["bytes_sent"], s["bytes_received"], s["flows"]) == (m["bytes_received"], m["bytes_sent"], m["flows"])


# --- start time ------------------------------------------------------------------------
def test_default_start_is_past_hour_boundary() -> None:
    sim = Simulator.from_scenario(HTTP)
    reports = list(sim.reports("1h"))
    assert sim.start is not None and sim.start % 3600 == 0
    assert sim.start <= time.time() - 3600 < sim.start + 7200
    assert max(r["start"] for r in reports) <= time.time()


def test_start_and_interval_validation() -> None:
    with pytest.raises(ValueError, match="multiple of 3600"):
        Simulator.from_scenario(HTTP, start=T0 + 30)
    with pytest.raises(ValueError, match="must divide 3600"):
        Simulator.from_scenario(HTTP, interval_s=7)
    sim = Simulator.from_scenario(HTTP, start=T0, interval_s="60s")
    assert {r["interval_s"] for r in sim.reports("1h")} == {60}


# --- the reference HTTP experiment -------------------------------------------------------
def test_http_experiment_totals(http_reports: list[dict[str, Any]]) -> None:
    """Per 10-minute window, data transferred = bytes_sent + bytes_received of the pair's reports.

    1a→1a: the server reports 10 MB sent (+ 400 B request received), the 1a client 10 MB
    received (+ 400 B sent): 20 MB + 800 B. Inter-AZ: only one end is in each directional
    pair: 10 MB + 400 B, data sent on 1a→1c/1a→1d, received on 1c→1a/1d→1a.
    """
    sim = Simulator.from_scenario(HTTP, start=T0)
    tot = sim.expected_totals(http_reports, 600)
    windows = sorted({k[2] for k in tot})
    assert windows == [T0 + 600 * i for i in range(12)]
    for w in windows:
        t = {(s, d): v for (s, d, ww), v in tot.items() if ww == w}
        assert set(t) == {("subnet-1a", "subnet-1a"), ("subnet-1a", "subnet-1c"), ("subnet-1c", "subnet-1a"),
                          ("subnet-1a", "subnet-1d"), ("subnet-1d", "subnet-1a")}
        aa = t["subnet-1a", "subnet-1a"]
        assert (aa["bytes_sent"], aa["bytes_received"]) == (10 * MB + REQ, 10 * MB + REQ)
        assert aa["bytes_sent"] + aa["bytes_received"] == 20 * MB + 2 * REQ
        assert (aa["hosts"], aa["flows"], aa["samples"]) == (2, 2, 2)
        for far in ("subnet-1c", "subnet-1d"):
            out, back = t["subnet-1a", far], t[far, "subnet-1a"]
            assert (out["bytes_sent"], out["bytes_received"]) == (10 * MB, REQ)
            assert (back["bytes_sent"], back["bytes_received"]) == (REQ, 10 * MB)
            assert out["hosts"] == back["hosts"] == 1
        # timeouts/retransmissions only on the data sender's side
        for (s, d), v in t.items():
            if s != "subnet-1a":
                assert v["retransmissions"] == v["timeouts"] == 0

    # AZ level: inter-AZ data with 1a as one end is twice that of 1c or of 1d
    topo = sim.topology
    az_bytes: Counter[str] = Counter()
    for (s, d, _), v in tot.items():
        sa, da = topo.subnets[s].az, topo.subnets[d].az
        if sa != da:
            for az in (sa, da):
                az_bytes[az] += v["bytes_sent"] + v["bytes_received"]
    assert az_bytes["az-1a"] == 2 * az_bytes["az-1c"] == 2 * az_bytes["az-1d"] > 0


def test_http_experiment_reporters(http_reports: list[dict[str, Any]]) -> None:
    """Instances report only in the interval holding a download (1 min past each 10 min)."""
    starts = Counter(r["start"] for r in http_reports)
    assert set(starts) == {T0 + 60 + 600 * i for i in range(12)}
    assert set(starts.values()) == {4}
    server = [r for r in http_reports if r["instance"] == "subnet-1a/0"]
    assert all(len(r["samples"]) == 3 for r in server)
    # retransmissions are rare: ~0.003 per MB → ~1 expected in 360 MB; this seed gives exactly one
    assert sum(s["retransmissions"] for r in http_reports for s in r["samples"]) == 1


def test_http_rtt_inter_az_above_intra_az(http_reports: list[dict[str, Any]]) -> None:
    topo = load_topology(HTTP)
    rtts: dict[str, list[int]] = defaultdict(list)
    for r in http_reports:
        for s in r["samples"]:
            rem = topo.locate(s["remote"]["ip"])
            cat = topo.category(r["local"]["az"], r["local"]["vpc"], rem.az, rem.vpc)
            rtts[cat].extend(s["rtt_us"])
    intra = sum(rtts["intra-az"]) / len(rtts["intra-az"])
    inter = sum(rtts["inter-az"]) / len(rtts["inter-az"])
    assert inter > 2 * intra
    assert 100 < intra < 400 and 500 < inter < 1600  # defaults 0.2 ms and 1.0 ms
    assert DEFAULT_RTT_MS["inter-vpc"] > DEFAULT_RTT_MS["inter-az"] > DEFAULT_RTT_MS["intra-az"]


def test_expected_totals_resolve_omitted_placement(http_reports: list[dict[str, Any]]) -> None:
    topo = load_topology(HTTP)
    full = list(Simulator.from_scenario(HTTP, start=T0, omit_remote_placement=0.0).reports("2h"))
    assert expected_totals(full, 600, topo) == expected_totals(http_reports, 600, topo)
    flat = [{k: v for k, v in r.items() if k != "samples"} | s for r in http_reports for s in r["samples"]]
    assert expected_totals(flat, 600, topo) == expected_totals(http_reports, 600, topo)


# --- scale -----------------------------------------------------------------------------
def test_fleet_1000_scale_and_speed(fleet_reports: list[dict[str, Any]]) -> None:
    sc = load_scenario(FLEET)
    assert len(sc.topology.instances) >= 1000 and sc.duration_s is not None and sc.duration_s <= 40 * 60
    samples = sum(len(r["samples"]) for r in fleet_reports)
    hosts = {r["instance"] for r in fleet_reports}
    assert samples >= 100_000
    assert len(hosts) >= 1000
    assert max(r["start"] for r in fleet_reports) < T0 + 20 * 60
    categories = Counter()
    topo = sc.topology
    for r in fleet_reports[:5000]:
        for s in r["samples"]:
            rem = topo.locate(s["remote"]["ip"])
            categories[topo.category(r["local"]["az"], r["local"]["vpc"], rem.az, rem.vpc)] += 1
    assert {"intra-az", "inter-az", "inter-vpc"} <= set(categories)



def test_fleet_totals_consistent(fleet_reports: list[dict[str, Any]]) -> None:
    tot = expected_totals(fleet_reports, 600, load_topology(FLEET))
    assert sum(v["samples"] for v in tot.values()) == sum(len(r["samples"]) for r in fleet_reports)
    sent = sum(v["bytes_sent"] for v in tot.values())
    assert sent == sum(v["bytes_received"] for v in tot.values())  # both ends report every byte
    assert "external" not in {k[1] for k in tot}


# --- background traffic semantics --------------------------------------------------------
TWO_AZ = {
    "region": "r",
    "vpcs": [{"id": "v", "azs": [
        {"id": "z1", "subnets": [{"id": "s1", "cidr": "10.0.0.0/24", "instances": 10}]},
        {"id": "z2", "subnets": [{"id": "s2", "cidr": "10.0.1.0/24", "instances": 10}]},
    ]}],
}


def test_background_peers_bytes_and_window() -> None:
    traffic = [{"from": "s1", "to": "s2", "clients_per_instance": 3, "bytes_per_interval": "5MB",
                "diurnal": 0, "noise": 0.2, "retrans_per_mb": 0.5, "start": "10m", "duration": "20m"}]
    sim = Simulator(TWO_AZ, traffic, seed=5, start=T0)
    reports = list(sim.reports("1h"))
    starts = sorted({r["start"] for r in reports})
    assert starts[0] == T0 + 600 and starts[-1] == T0 + 1800 - 30 and len(starts) == 40
    senders = [r for r in reports if r["local"]["subnet"] == "s1"]
    assert {len(r["samples"]) for r in senders} == {3}
    assert {tuple(s["remote"]["ip"] for s in r["samples"]) for r in senders if r["instance"] == "s1/0"}.__len__() == 1
    sent = [s["bytes_sent"] for r in senders for s in r["samples"]]
    assert abs(sum(sent) / len(sent) / (5 * MB) - 1) < 0.03
    retr = sum(s["retransmissions"] for r in senders for s in r["samples"])
    assert abs(retr / (sum(sent) / MB * 0.5) - 1) < 0.1
    receivers = [r for r in reports if r["local"]["subnet"] == "s2"]
    assert all(s["retransmissions"] == 0 and s["bytes_sent"] == round(s["bytes_received"] * 0.01)
               for r in receivers for s in r["samples"])
    rtt = [x for r in reports for s in r["samples"] for x in s["rtt_us"]]
    assert 700 < sum(rtt) / len(rtt) < 1300  # inter-AZ default 1.0 ms


def test_background_diurnal_and_overlap_merge() -> None:
    traffic = [{"from": "s1", "to": "s1", "clients_per_instance": 9, "bytes_per_interval": "1MB", "diurnal": 0.5,
                "noise": 0},
               {"from": "s1/0", "to": "s1/1", "clients_per_instance": 1, "bytes_per_interval": "2MB", "diurnal": 0,
                "noise": 0, "rtt_ms": 5}]
    sim = Simulator(TWO_AZ, traffic, seed=1, start=T0 - T0 % 86400)  # midnight UTC
    first = next(sim.reports(30))
    s01 = next(s for s in first["samples"] if s["remote"]["ip"] == "10.0.0.5")
    # s1/0 ↔ s1/1: its own send and its receive in entry 0, its send in entry 1 → one sample, 3 flows
    assert s01["flows"] == 3 and len(s01["rtt_us"]) == 3
    assert max(s01["rtt_us"]) > 2000
    sim_noon = Simulator(TWO_AZ, traffic[:1], seed=1, start=T0 - T0 % 86400 + 43200)
    noon = sum(s["bytes_sent"] for r in sim_noon.reports(30) for s in r["samples"])
    sim_night = Simulator(TWO_AZ, traffic[:1], seed=1, start=T0 - T0 % 86400)
    night = sum(s["bytes_sent"] for r in sim_night.reports(30) for s in r["samples"])
    assert 2.8 < noon / night < 3.2  # (1 + 0.5) / (1 - 0.5)


def test_traffic_errors() -> None:
    cases = [
        ([{"from": "s9", "to": "s1"}], r"traffic\[0\]\.from: unknown scope 's9'"),
        ([{"from": "s1", "to": "s2", "byte_per_interval": 5}], r"traffic\[0\]: unknown field\(s\) \['byte_per_interval'\]"),
        ([{"from": "s1"}], r"traffic\[0\]\.to: missing required field"),
        ([{"kind": "stream", "from": "s1", "to": "s2"}], r"traffic\[0\]\.kind: unknown kind 'stream'"),
        ([{"kind": "transfer", "server": "s1", "clients": ["s2"], "bytes": "1MB", "every": "1m"}],
         r"traffic\[0\]\.server: must name one instance"),
        ([{"from": "s1", "to": "s2", "bytes_per_interval": "lots"}], r"traffic\[0\]\.bytes_per_interval: not a size"),
        ([{}, {"from": "s1", "to": "s2", "diurnal": 2}], r"traffic\[0\]\.from: missing|traffic\[1\]\.diurnal"),
    ]
    for traffic, match in cases:
        with pytest.raises(ValueError, match=match):
            Simulator(TWO_AZ, traffic, start=T0)


def test_transfer_every_shorter_than_interval() -> None:
    traffic = [{"kind": "transfer", "server": "s1/0", "clients": ["s2"], "bytes": "1MB", "every": "10s"}]
    reports = list(Simulator(TWO_AZ, traffic, start=T0).reports("1m"))
    server = [r for r in reports if r["instance"] == "s1/0"]
    assert len(server) == 2 and all(len(r["samples"]) == 10 for r in server)
    assert all(s["flows"] == 3 and s["bytes_sent"] == 3 * MB for r in server for s in r["samples"])


def test_scenario_fields() -> None:
    sc = load_scenario(HTTP)
    assert (sc.seed, sc.duration_s, sc.interval_s) == (7, 7200, 30)
    assert sc.raw["name"] == "http-experiment"
    assert [t["kind"] for t in sc.traffic] == ["transfer"]
    assert list(itertools.islice(Simulator(HTTP, HTTP, seed=7, start=T0).reports("1h"), 1)) == \
        list(itertools.islice(Simulator.from_scenario(HTTP, start=T0).reports("1h"), 1))


# --- faults ---------------------------------------------------------------------------------
_FAULT_TOPO = {"region": "r", "vpcs": [{"id": "v", "azs": [
    {"id": "z1", "subnets": [{"id": "s1", "cidr": "10.0.0.0/24", "instances": 3}]},
    {"id": "z2", "subnets": [{"id": "s2", "cidr": "10.0.1.0/24", "instances": 3}]},
    {"id": "z3", "subnets": [{"id": "s3", "cidr": "10.0.2.0/24", "instances": 3}]}]}]}
_BG = [{"from": "v", "to": "v", "clients_per_instance": 8, "bytes_per_interval": "10MB", "rtt_ms": 1.0,
        "retrans_per_mb": 0.0, "noise": 0.0, "diurnal": 0.0, "rtt_jitter": 0.0}]


def _per_pair(faults, dur="2m"):
    from collections import defaultdict

    sim = Simulator(_FAULT_TOPO, _BG, seed=3, start=1764028800, faults=faults, omit_remote_placement=0.0)
    acc = defaultdict(lambda: [0, 0, 0, 0, 0])
    for r in sim.reports(dur):
        k0 = r["start"] - 1764028800
        for s in r["samples"]:
            a = acc[(r["local"]["az"], s["remote"]["az"], k0)]
            a[0] += s["retransmissions"]
            a[1] += s["timeouts"]
            a[2] += sum(s["rtt_us"])
            a[3] += len(s["rtt_us"])
            a[4] += s["bytes_sent"]
    return sim, acc


def test_loss_fault_hits_only_its_az_pair_and_only_while_active():
    _, acc = _per_pair([{"kind": "loss", "target": {"az_pair": ["z1", "z2"]}, "start": "1m", "duration": "30s",
                         "magnitude": 0.01}])
    for (src, dst, k0), (retr, *_rest, sent) in acc.items():
        hit = {src, dst} == {"z1", "z2"} and k0 == 60
        if hit and sent > 1e6:
            assert retr == pytest.approx(0.01 * sent / 1448, rel=0.15)
        elif not hit:
            assert retr == 0, (src, dst, k0)


def test_delay_and_stall_faults():
    _, acc = _per_pair([{"kind": "delay", "target": {"subnet": "s3"}, "magnitude": "25ms"}], dur="30s")
    for (src, dst, _), (_, tmo, rsum, rcnt, _) in acc.items():
        mean = rsum / rcnt
        assert (mean > 20_000) == ("z3" in (src, dst)) and tmo == 0
    _, acc = _per_pair([{"kind": "stall", "target": {"instance": "s1/0"}}], dur="30s")
    assert sum(v[1] for k, v in acc.items()) > 0  # timeouts appear
    assert all(v[1] == 0 for k, v in acc.items() if "z1" not in k[:2])


def test_ramp_grows_linearly():
    _, acc = _per_pair([{"kind": "delay", "target": {"az": "z2"}, "start": 0, "duration": "2m", "ramp": "2m",
                         "magnitude": "40ms"}], dur="2m")
    means = [acc[("z2", "z2", k)][2] / acc[("z2", "z2", k)][3] for k in (0, 30, 60, 90)]
    assert means == sorted(means) and means[0] == pytest.approx(1000 + 10_000, rel=0.05)
    assert means[3] == pytest.approx(1000 + 40_000, rel=0.05)


@pytest.mark.parametrize("fault, msg", [
    ({"kind": "loss", "target": {"az_pair": ["z1", "nowhere"]}, "magnitude": 0.1}, "az_pair"),
    ({"kind": "loss", "target": {"subnet": "s1"}, "magnitude": 2}, "fraction"),
    ({"kind": "delay", "target": {"rack": "r1"}, "magnitude": "1ms"}, "rack"),
    ({"kind": "delay", "target": {"instance": "s1/9"}, "magnitude": "1ms"}, "s1/9"),
    ({"kind": "stall", "target": {"vpc": "v"}, "cause": "gremlins"}, "cause"),
])
def test_bad_faults_are_refused_readably(fault, msg):
    with pytest.raises(ValueError, match=msg):
        Simulator(_FAULT_TOPO, _BG, faults=[fault])


# --- realism ------------------------------------------------------------------------------------
from pipeline.sim.realism import Realism, parse_realism  # noqa: E402

_ONE_WAY = [{"from": "s1", "to": "s2", "clients_per_instance": 9, "bytes_per_interval": "5MB", "diurnal": 0,
             "noise": 0, "retrans_per_mb": 2.0}]
#: realism without the agent/delivery effects, so each sample is one connection in one 30-s interval
_NO_AGENTS = {"slow_agent_frac": 0, "gap_agent_frac": 0, "churn_frac": 0, "duplicate_frac": 0}


@pytest.fixture(scope="module")
def realistic_fleet() -> list[tuple[float, dict[str, Any]]]:
    return list(Simulator.from_scenario(FLEET, start=T0, realism="realistic").deliveries("10m"))


def _retrans(realism: Any, traffic: list, duration: str = "1h") -> list[int]:
    sim = Simulator(TWO_AZ, traffic, seed=11, start=T0, realism=realism)
    return [s["retransmissions"] for r in sim.reports(duration) if r["local"]["subnet"] == "s1" for s in r["samples"]]


def test_realism_option_parsing() -> None:
    assert parse_realism(None) == (None, "smooth") and parse_realism("smooth") == (None, "smooth")
    assert parse_realism("realistic") == (Realism(), "realistic")
    model, label = parse_realism({"preset": "realistic", "late_frac": 0.1, "rtt_obs_max": 2})
    assert (model.late_frac, model.rtt_obs_max, model.duplicate_frac) == (0.1, 2, Realism().duplicate_frac)
    assert label == {"preset": "realistic", "late_frac": 0.1, "rtt_obs_max": 2}
    for bad, msg in (({"burstiness": 2}, r"unknown key\(s\) \['burstiness'\]; allowed: preset, retrans_shape"),
                     ("bumpy", "one of smooth, realistic"), ({"late_frac": 2}, "late_frac must be a fraction"),
                     ({"preset": "smooth", "late_frac": 0.1}, "preset"), ({"rtt_obs_max": 1.5}, "whole number")):
        with pytest.raises(ValueError, match=msg) as e:
            parse_realism(bad)
        assert "\n" not in str(e.value)
    sc = load_scenario({**load_scenario(HTTP).raw, "realism": {"duplicate_frac": 0.5}})
    assert sc.realism == {"preset": "realistic", "duplicate_frac": 0.5}
    assert Simulator.from_scenario(sc).realism == Realism(duplicate_frac=0.5)
    assert Simulator.from_scenario(sc, realism="smooth").realism is None  # the caller's choice wins
    assert load_scenario(HTTP).realism == "smooth" and Simulator.from_scenario(HTTP).realism is None
    with pytest.raises(ValueError, match=r"scenario .*realism: unknown key"):
        load_scenario({**load_scenario(HTTP).raw, "realism": {"jitter": 1}})


def test_smooth_deliveries_are_the_reports_at_interval_end(http_reports: list) -> None:
    d = list(Simulator.from_scenario(HTTP, start=T0).deliveries("2h"))
    assert [r for _, r in d] == http_reports
    assert [t for t, _ in d] == [r["start"] + r["interval_s"] for r in http_reports]


def test_realistic_is_seeded() -> None:
    def run(seed: int) -> list[tuple[float, dict[str, Any]]]:
        return list(Simulator.from_scenario(HTTP, start=T0, seed=seed, realism="realistic").deliveries("2h"))

    a, b, c = run(7), run(7), run(8)
    assert [t for t, _ in a] == [t for t, _ in b] and _dump([r for _, r in a]) == _dump([r for _, r in b])
    assert _dump([r for _, r in a]) != _dump([r for _, r in c])


def test_realistic_reports_validate_against_wire_schema(validator: Draft202012Validator,
                                                        realistic_fleet: list) -> None:
    for _, r in realistic_fleet[::37]:
        # report_id is an optional header field the schema gains with report de-duplication; drop it here
        r = {k: v for k, v in r.items() if k != "report_id"}
        errors = list(validator.iter_errors(r))
        assert not errors, (r["instance"], r["start"], errors[0].message)


def test_realistic_agents_and_delivery(realistic_fleet: list) -> None:
    R = Realism()
    arrivals = [t for t, _ in realistic_fleet]
    assert arrivals == sorted(arrivals)
    reports = [r for _, r in realistic_fleet]
    assert all(isinstance(r["start"], int) and isinstance(r.get("report_id"), str) for r in reports)
    # phases: agents' intervals start at their own second; some agents report every 60 s
    assert len({r["start"] % 30 for r in reports}) >= 10
    by_agent: dict[str, set[int]] = defaultdict(set)
    for r in reports:
        by_agent[r["instance"]].add(r["interval_s"])
    assert all(len(v) == 1 for v in by_agent.values())  # an agent keeps its interval
    slow = sum(v == {60} for v in by_agent.values()) / len(by_agent)
    assert 0.5 * R.slow_agent_frac < slow < 1.6 * R.slow_agent_frac
    # duplicates: the same report_id and content, arriving later; some with the same bytes, some re-serialised
    first: dict[str, tuple[float, dict]] = {}
    dups = []
    for t, r in realistic_fleet:
        if r["report_id"] in first:
            dups.append((t, r))
        else:
            first[r["report_id"]] = (t, r)
    assert 0.6 * R.duplicate_frac < len(dups) / len(first) < 1.5 * R.duplicate_frac
    same_bytes = 0
    for t, d in dups:
        t0, o = first[d["report_id"]]
        assert d == o and t > t0 and (d["instance"], d["start"]) == (o["instance"], o["start"])
        same_bytes += orjson.dumps(d) == orjson.dumps(o)
    assert 0 < same_bytes < len(dups)
    # missing reports: agents with gaps or a late join / early leave send fewer reports than the others
    n_iv = 20
    fast = {a for a, v in by_agent.items() if v == {30}}
    counts = Counter(r["instance"] for r in first_reports(realistic_fleet) if r["instance"] in fast)
    short = sum(counts[a] < n_iv - 1 for a in fast) / len(fast)
    assert 0.6 * (R.gap_agent_frac + R.churn_frac) < short < 1.4 * (R.gap_agent_frac + R.churn_frac)
    assert len(by_agent) == len(load_topology(FLEET).instances)  # nobody is absent for the whole run


def first_reports(deliveries: list) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for _, r in deliveries:
        if r["report_id"] not in seen:
            seen.add(r["report_id"])
            out.append(r)
    return out


def test_realistic_late_reports() -> None:
    R = Realism()
    sim = Simulator.from_scenario(FLEET, start=T0, realism={"publish_jitter_s": 0.5, "duplicate_frac": 0})
    delays = [t - (r["start"] + r["interval_s"]) for t, r in sim.deliveries("5m")]
    late = sum(d > R.late_min_s - R.clock_offset_s for d in delays) / len(delays)
    assert 0.7 * R.late_frac < late < 1.3 * R.late_frac
    assert min(delays) >= -R.clock_offset_s and max(delays) <= R.late_max_s + R.clock_offset_s + 10


def test_realistic_background_retransmissions_are_overdispersed_same_mean() -> None:
    smooth = _retrans("smooth", _ONE_WAY)
    real = _retrans({**_NO_AGENTS, "microburst_prob": 0}, _ONE_WAY)
    assert len(smooth) == len(real) > 10_000

    def mean_var(x: list[int]) -> tuple[float, float]:
        m = sum(x) / len(x)
        return m, sum((v - m) ** 2 for v in x) / len(x)

    (ms, vs), (mr, vr) = mean_var(smooth), mean_var(real)
    assert ms == pytest.approx(10.0, rel=0.03) and mr == pytest.approx(ms, rel=0.05)
    assert vs / ms < 1.3  # Poisson
    assert vr / mr > 10  # gamma shape 0.5: var/mean = 1 + mean/0.5 = 21


def test_realistic_microbursts() -> None:
    p = 0.01
    traffic = [dict(_ONE_WAY[0], retrans_per_mb=0)]
    sim = Simulator(TWO_AZ, traffic, seed=11, start=T0, realism={**_NO_AGENTS, "microburst_prob": p})
    samples = [s for r in sim.reports("1h") if r["local"]["subnet"] == "s1" for s in r["samples"]]
    bursts = [s for s in samples if s["retransmissions"]]
    assert 0.7 * p < len(bursts) / len(samples) < 1.3 * p
    sizes = [s["retransmissions"] for s in bursts]
    R = Realism()
    assert min(sizes) >= R.microburst_min and max(sizes) <= R.microburst_max and max(sizes) >= 100
    assert all(1 <= s["timeouts"] <= s["retransmissions"] // 2 + 1 for s in bursts)


def test_realistic_rtt_spikes_and_observation_lists() -> None:
    p = 0.01
    traffic = [dict(_ONE_WAY[0], rtt_jitter=0)]
    sim = Simulator(TWO_AZ, traffic, seed=11, start=T0,
                    realism={**_NO_AGENTS, "rtt_spike_prob": p, "rtt_obs_jitter": 0})
    per_pair: dict[tuple[str, str], list[list[int]]] = defaultdict(list)
    lengths = Counter()
    for r in sim.reports("1h"):
        for s in r["samples"]:
            per_pair[(r["instance"], s["remote"]["ip"])].append(s["rtt_us"])
            lengths[len(s["rtt_us"])] += 1
            assert len(set(s["rtt_us"])) == 1  # no per-poll jitter here: one value per flow and interval
    assert set(lengths) == {1, 2, 3, 4}
    ratios = []
    for lists in per_pair.values():
        med = sorted(x[0] for x in lists)[len(lists) // 2]
        ratios.extend(x[0] / med for x in lists)
    spikes = [q for q in ratios if q > 2]
    assert 0.7 * p < len(spikes) / len(ratios) < 1.3 * p
    assert min(spikes) >= 2.9 and max(spikes) <= 50.5
    # with the default per-poll jitter the observations of one flow stay close together
    sim = Simulator(TWO_AZ, _ONE_WAY, seed=11, start=T0, realism=_NO_AGENTS)
    import math
    within, first = [], defaultdict(list)
    for r in sim.reports("30m"):
        for s in r["samples"]:
            logs = [math.log(x) for x in s["rtt_us"]]
            first[(r["instance"], s["remote"]["ip"])].append(logs[0])
            if len(logs) > 1:
                m = sum(logs) / len(logs)
                within.append((sum((v - m) ** 2 for v in logs) / (len(logs) - 1)) ** 0.5)
    between = [(sum((v - sum(x) / len(x)) ** 2 for v in x) / (len(x) - 1)) ** 0.5 for x in first.values()]
    assert sum(within) / len(within) < 0.6 * sum(between) / len(between)


def test_realism_keeps_traffic_and_ground_truth() -> None:
    faults = [{"kind": "loss", "target": {"az_pair": ["z1", "z2"]}, "start": "1m", "duration": "1m", "magnitude": 0.01}]
    a = Simulator(_FAULT_TOPO, _BG, seed=3, start=T0, faults=faults)
    b = Simulator(_FAULT_TOPO, _BG, seed=3, start=T0, faults=faults, realism="realistic")
    ra, rb = list(a.reports("5m")), list(b.reports("5m"))
    assert a.faults[0].touched == b.faults[0].touched and a.faults[0].touched
    assert rb
    # the same traffic: without missing reports, the bytes are those of the smooth run, interval by interval
    c = Simulator(_FAULT_TOPO, _BG, seed=3, start=T0, faults=faults, realism={**_NO_AGENTS, "slow_agent_frac": 0})
    rc = sorted(c.reports("5m"), key=lambda r: (r["start"] - (r["start"] - T0 + 15) % 30 + 15, r["instance"]))
    assert [(r["instance"], [s["bytes_sent"] for s in r["samples"]]) for r in ra] == \
        [(r["instance"], [s["bytes_sent"] for s in r["samples"]]) for r in rc]
