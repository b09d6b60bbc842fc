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

from pipeline.simulate import (
    DEFAULT_RTT_MS,
    Simulator,
    expected_totals,
    load_scenario,
    parse_duration,
    parse_size,
)
from pipeline.topology import load_topology

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
HTTP = DATA / "http_experiment.yaml"
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

    best = 0.0
    for _ in range(2):
        sim = Simulator.from_scenario(FLEET, start=T0)
        t0 = time.perf_counter()
        n = sum(len(r["samples"]) for r in sim.reports("20m"))
        best = max(best, n / (time.perf_counter() - t0))
    print(f"simulator: {best:,.0f} samples/s")
    assert best >= 200_000


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
