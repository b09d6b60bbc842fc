"""An independent flow-report generator, built per TCP connection, to judge detection and attribution.

Why
---
Detection and attribution were tuned on the project's own simulator. This module was
written without reading it (nor importing it): it models what a fleet of real hosts'
agents would send, connection by connection, so the scores it gives say how the pipeline
does on data it was never shaped by. It uses only the wire schema, the topology loader
(to place IPs) and, for scoring, the evaluator.

How it is built (per connection, not per aggregate)
---------------------------------------------------
Time runs in 10-s *ticks* (the agent's ``tcpi_rtt`` poll period); each connection gets a
value per tick, and every agent then sums ticks into its own 30-s (or 60-s) intervals.

* **Fleet and services.** A topology (same YAML as ``tests/scenarios/*.yaml`` ``topology:``);
  subnets carry tiers (``web``, ``data``, ``batch``: the id before the first ``-``). A few
  *popular* servers (a database, a cache) have 20–35 clients each, drawn across the fleet
  (same AZ twice as likely); every other instance is a client of 2–6 servers, picked by tier
  affinity and locality (same AZ ×3, same VPC ×1, other VPC ×0.3). A relation is a
  connection *pool* (1–3 long-lived connections), *fetches* only (short connections that
  open and close within a tick, Poisson per tick), or both. 80 % are request/response
  (the server sends the bulk), 20 % push (the client does, e.g. log shipping).
* **Bytes: heavy-tailed ON/OFF** per long connection (Benson, Akella, Maltz, "Network
  traffic characteristics of data centers in the wild", IMC 2010: traffic at the edge is
  ON/OFF with heavy-tailed, lognormal-like ON, OFF and inter-arrival times; most flows are
  small and short). ON and OFF sojourns are lognormal (median 3 and 2 ticks, σ 1.0 and
  1.2); each connection's ON rate is lognormal across connections (median 250 KB per tick,
  σ 1.5: mice and a few elephants), times a per-tick lognormal(σ 0.7) burst factor and a
  mild diurnal load (±35 %, peak 15:00 UTC). OFF ticks carry nothing or a heartbeat
  (60–600 B). Fetches: lognormal response (median 20 KB, σ 1.5), request ~600 B.
  ``segments = ceil(bytes / 1448)``.
* **Loss: Gilbert–Elliott bursts, not a Poisson rate.** (i) a small per-connection
  background loss, lognormal with median 1e-5 per packet (Pingmesh, Guo et al., SIGCOMM
  2015: typical data-centre drop rates of 1e-5 to 1e-4); (ii) *microburst episodes* at
  the receiving host's switch port, Poisson per host and tick (rate 0.004 × (1 + fan-in /
  10) × load): Zhang et al., "High-resolution measurement of data center microbursts",
  IMC 2017, find bursts of tens of µs, highly concentrated on a few ports, well below
  anything a 30-s counter resolves: at our resolution an episode is one burst of drops.
  Each ON connection into that port is hit with probability 0.4 and loses a GE burst:
  the Bad state lasts a geometric number of packets (mean 1.5 × its flight size, 4–400)
  and drops each with probability 0.5, so most intervals have 0 retransmissions and a few
  have tens to hundreds on one connection, several of one host's connections at once.
  Retransmissions are counted on the sender (``tcpi_total_retrans``), plus ~2 % spurious.
* **Timeouts (RTOs)** come from the loss, through the connection's flight size W
  (lognormal, median 20 packets for the bulk direction, 3 for requests): a burst that
  takes the whole flight (no dup-ACKs for fast retransmit) always times out (twice when it
  is over 2 W), otherwise with probability clip(3/W); a random loss times out with
  clip(1.5/W) (tail loss); a lost packet of a short fetch with 0.5.
* **RTT: several ``tcpi_rtt`` polls per interval** (one per connection per 10-s tick, so 3
  per 30-s interval, 6 per 60-s). Base path RTT per host pair by category: intra-AZ
  lognormal median 180 µs (σ 0.25, i.e. ~0.1–0.3 ms); inter-AZ a per-AZ-pair distance of
  0.5–1.6 ms plus the intra-AZ part (measured cross-AZ RTTs in AWS regions are 0.5–2 ms:
  FlashGrid, "Latencies between AWS availability zones", 2023; bitsand.cloud
  "cross-AZ latencies"); inter-VPC +0.05–0.3 ms (a peering/transit hop). Per poll ×
  lognormal(σ 0.06) jitter; queueing spikes on single connections (probability 1 % ×
  load per poll, 2 % on popular servers' ports; exponential, mean 0.5 ms: a shallow
  ToR buffer drains in ~1 ms), scaled by a persistence factor U(1/8, 1) because ``tcpi_rtt``
  is srtt, an EWMA (gain 1/8) of per-ACK samples: one delayed ACK moves it by 1/8 of the
  excess, a queue sustained over ~16 ACKs by all of it; and rare host hiccups (a VM
  descheduled 2–20 ms, probability 0.05 % per host and tick, every connection of that host,
  diluted 1/8 the same way). A quarter of
  request/response client sides add a delayed-ACK/service component (the request's ACK
  rides on the response), lognormal median 150 µs. ``tcpi_rtt`` is the *smoothed* RTT
  of the last ACKs, so an idle connection keeps reporting its last value: polls in OFF
  ticks repeat the last ON value (a spike, or a fault's delay, can linger; ``-p
  stale_srtt=0`` turns that off). A fetch is seen by a poll with probability 0.25.
* **Agents.** One per host: its own clock offset (uniform ±4 s), its own phase (intervals
  start at its own second of the minute; ``-p aligned=1``: on multiples of the interval of
  its own, offset, clock instead), 15 % use 60-s intervals (``-p p_60s=0``: none). A report per agent and
  interval, one sample per remote IP; 50 % of agents add remote subnet/az/vpc, the
  others send the IP only; 70 % give their own placement. ``flows`` = connections alive in
  the interval (pools + fetches), ``rtt_us`` = every poll. A header field ``report_id``
  (stable across re-sends) is in every report.
* **Delivery.** Published 0.2 s + lognormal(median 1 s) after the interval ends; 2 % are
  10–60 s late; 1 % are sent twice (a retry: the same report, same ``report_id``,
  2–40 s later); 0.3 % of intervals are never sent; each agent has Poisson(0.4)
  outages of 1–4 intervals (its connections carry on, its peers still report them);
  3 % of hosts join late, 3 % leave early (their connections start/stop with them).
* **Faults** (ground truth per fault: name, kind, target, start, end, cause, keys):
  ``loss`` / ``delay`` on an ``az_pair`` or ``subnet`` (infrastructure: every connection
  crossing it, both directions; ``fraction`` < 1 hits only that share of connections,
  as a bad ECMP member hits the flows hashed onto it); ``stall`` of an instance (workload:
  a host that stops reading — GC, CPU starvation — peers' RTT +magnitude, peers' RTOs ~2
  per active connection and tick, its own RTT +half, throughput ×0.3); ``nic_drop`` of an
  instance (workload: its own interface drops both ways); ``slow_server`` (workload: an
  overloaded popular server: RTT +magnitude from delayed ACKs, 0.3 % backlog drops of what
  clients send it, throughput ×0.8). ``keys`` holds, for every connection a→b the fault
  actually altered (it had traffic or an RTT update in the fault's ticks), the detection
  keys ``("pair", subnet(a), subnet(b))``, ``("pair", subnet(b), subnet(a))``,
  ``("instance", a, subnet(b))``, ``("instance", b, subnet(a))``.

Parameters not taken from a cited measurement (service fan-out, pool sizes, fetch rates,
GE burst lengths, delivery delays, agent mix) are this module's own guesses, chosen to be
plausible for a cloud fleet, and are all in :data:`PARAMS`.

API and CLI
-----------
``generate(name_or_scenario, seed=0) -> Generated`` (``.deliveries`` = list of
``(arrival_unix_float, report_dict)`` in arrival order, ``.faults``, ``.topology``,
``.topology_data``, ``.start``, ``.duration_s``, ``.interval_s``); ``SCENARIOS`` lists the
shipped scenarios. ``python -m benchmarks.independent [--scenario NAME ...] [--seed N]
[--json] [--write DIR]``: evaluates each scenario with ``pipeline.sim.evaluate.evaluate_stream``
(when it exists) and prints a table per scenario and a pooled line; ``--write DIR`` writes
``DIR/NAME/deliveries.jsonl`` (``{"arrival": t, "report": {...}}`` per line),
``DIR/NAME/reports.jsonl`` (bare reports in arrival order, for ``flowmon produce``),
``DIR/NAME/truth.json`` and ``DIR/NAME/topology.yaml``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.ingest.topology import Topology, load_topology

__all__ = ["EPOCH", "PARAMS", "SCENARIOS", "FaultSpec", "Scenario", "Generated", "generate", "main"]

#: Simulated start of every scenario: 2025-12-01 00:00 UTC (no wall clock anywhere).
EPOCH = 1764547200
TICK_S = 10
MSS = 1448

PARAMS: dict[str, float] = {
    # fleet
    "popular_clients_min": 20, "popular_clients_max": 35,
    "peers_base": 2, "peers_extra_mean": 1.0, "peers_max": 6,
    "p_pool": 0.45, "p_fetch_only": 0.25,          # else both
    "p_push": 0.2,
    # ON/OFF (ticks)
    "on_median_ticks": 3.0, "on_sigma": 1.0, "off_median_ticks": 2.0, "off_sigma": 1.2,
    "rate_median_bytes": 250e3, "rate_sigma": 1.5, "popular_rate_median_bytes": 80e3,
    "burst_sigma": 0.7, "small_ratio_median": 0.04, "small_ratio_sigma": 0.8,
    "heartbeat_p": 0.4, "diurnal": 0.35,
    "fetch_rate_median": 0.3, "fetch_rate_sigma": 0.8, "fetch_bytes_median": 20e3, "fetch_bytes_sigma": 1.5,
    # loss
    "bg_loss_median": 1e-5, "bg_loss_sigma": 1.0,
    "episode_rate": 0.004, "episode_hit_p": 0.4, "ge_bad_loss": 0.5, "spurious_frac": 0.02,
    "flight_big_median": 20, "flight_small_median": 3, "fetch_rto_p": 0.5,
    # RTT (µs)
    "intra_az_rtt_us": 180.0, "intra_az_sigma": 0.25, "inter_az_min_us": 500.0, "inter_az_max_us": 1600.0,
    "inter_vpc_min_us": 50.0, "inter_vpc_max_us": 300.0, "poll_jitter_sigma": 0.06,
    "spike_p": 0.01, "spike_mean_us": 500.0, "hiccup_p": 0.0005,
    "ack_component_p": 0.25, "ack_component_us": 150.0, "fetch_seen_p": 0.25, "stale_srtt": 1,
    # agents and delivery
    "clock_offset_s": 4.0, "aligned": 0, "p_60s": 0.15, "p_remote_placement": 0.5, "p_local_placement": 0.7,
    "p_drop": 0.003, "outages_mean": 0.4, "p_late": 0.02, "p_dup": 0.01, "p_join": 0.03, "p_leave": 0.03,
}


# ------------------------------------------------------------------------------------------
# scenarios
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FaultSpec:
    """One injected fault. ``target``: ``{"az_pair": [a, b]}``, ``{"subnet": s}`` or ``{"instance": i}``;
    ``start_s``/``duration_s`` from the scenario start (multiples of 10 s); ``magnitude``: loss
    fraction per packet, or extra RTT in µs."""

    name: str
    kind: str  # loss | delay | stall | nic_drop | slow_server
    target: Mapping[str, Any]
    start_s: int
    duration_s: int
    magnitude: float
    cause: str  # infrastructure | workload
    fraction: float = 1.0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    duration_s: int
    topology: Mapping[str, Any]
    popular: tuple[str, ...]
    faults: tuple[FaultSpec, ...] = ()


def _fleet_topology() -> dict[str, Any]:
    """88 instances: a shop VPC over three AZs (web + data tiers), an analytics VPC over two."""
    def sn(sid: str, cidr: str, n: int) -> dict[str, Any]:
        return {"id": sid, "cidr": cidr, "instances": n}
    return {
        "region": "eu-central-1",
        "vpcs": [
            {"id": "vpc-shop", "azs": [
                {"id": "euc1-az1", "subnets": [sn("web-1", "10.20.0.0/24", 14), sn("data-1", "10.20.10.0/24", 10)]},
                {"id": "euc1-az2", "subnets": [sn("web-2", "10.20.1.0/24", 14), sn("data-2", "10.20.11.0/24", 10)]},
                {"id": "euc1-az3", "subnets": [sn("web-3", "10.20.2.0/24", 12), sn("data-3", "10.20.12.0/24", 8)]},
            ]},
            {"id": "vpc-analytics", "azs": [
                {"id": "euc1-az1", "subnets": [sn("batch-1", "10.30.0.0/24", 10)]},
                {"id": "euc1-az2", "subnets": [sn("batch-2", "10.30.1.0/24", 10)]},
            ]},
        ],
    }


#: tier of a client -> probability of each server tier
TIER_AFFINITY = {"web": {"data": 0.6, "web": 0.3, "batch": 0.1},
                 "data": {"data": 0.7, "batch": 0.3},
                 "batch": {"batch": 0.5, "data": 0.5}}

H, M = 3600, 60
_POP = ("data-1/0", "data-2/0", "data-3/0")


def _sc(name: str, desc: str, duration_s: int, *faults: FaultSpec) -> Scenario:
    return Scenario(name, desc, duration_s, _fleet_topology(), _POP, tuple(faults))


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    _sc("indep-quiet", "6 h, no fault: heavy-tailed ON/OFF traffic, microburst losses, RTT spikes, late/duplicate/"
        "missing reports, hosts joining and leaving.", 6 * H),
    _sc("indep-az-pair-loss", "1 % loss between euc1-az1 and euc1-az2 for 20 min, on half the connections "
        "(a bad ECMP member).", 3 * H,
        FaultSpec("az1-az2-loss", "loss", {"az_pair": ["euc1-az1", "euc1-az2"]}, 90 * M, 20 * M, 0.01,
                  "infrastructure", fraction=0.5)),
    _sc("indep-subnet-loss", "0.5 % loss on everything in and out of subnet web-2 for 15 min (a ToR).", 3 * H,
        FaultSpec("web-2-loss", "loss", {"subnet": "web-2"}, 90 * M, 15 * M, 0.005, "infrastructure")),
    _sc("indep-subnet-delay", "+2 ms RTT on subnet data-3 for 20 min.", 3 * H,
        FaultSpec("data-3-delay", "delay", {"subnet": "data-3"}, 90 * M, 20 * M, 2000.0, "infrastructure")),
    _sc("indep-az-pair-delay", "+1 ms RTT between euc1-az1 and euc1-az3 for 20 min.", 3 * H,
        FaultSpec("az1-az3-delay", "delay", {"az_pair": ["euc1-az1", "euc1-az3"]}, 90 * M, 20 * M, 1000.0,
                  "infrastructure")),
    _sc("indep-instance-stall", "web-1/3 stalls for 10 min: peers' RTT +150 ms and RTOs on all its connections.",
        3 * H, FaultSpec("web-1/3-stall", "stall", {"instance": "web-1/3"}, 90 * M, 10 * M, 150_000.0, "workload")),
    _sc("indep-nic-drop", "batch-2/4's own NIC drops 3 % of packets both ways for 15 min.", 3 * H,
        FaultSpec("batch-2/4-nic", "nic_drop", {"instance": "batch-2/4"}, 90 * M, 15 * M, 0.03, "workload")),
    _sc("indep-popular-slow", "the popular server data-1/0 is overloaded for 15 min: RTT +8 ms, 0.3 % backlog "
        "drops.", 3 * H,
        FaultSpec("data-1/0-slow", "slow_server", {"instance": "data-1/0"}, 90 * M, 15 * M, 8000.0, "workload")),
    _sc("indep-overlap", "1 % loss on subnet data-2 for 20 min and, from 5 min in, web-3/2 stalling for 10 min.",
        3 * H,
        FaultSpec("data-2-loss", "loss", {"subnet": "data-2"}, 90 * M, 20 * M, 0.01, "infrastructure"),
        FaultSpec("web-3/2-stall", "stall", {"instance": "web-3/2"}, 95 * M, 10 * M, 150_000.0, "workload")),
]}


# ------------------------------------------------------------------------------------------
# output
# ------------------------------------------------------------------------------------------
@dataclass
class Generated:
    name: str
    seed: int
    description: str
    topology: Topology
    topology_data: dict[str, Any]
    start: int
    duration_s: int
    interval_s: int
    deliveries: list[tuple[float, dict[str, Any]]]
    faults: list[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)

    def truth_json(self) -> dict[str, Any]:
        return {"scenario": self.name, "seed": self.seed, "description": self.description, "start": self.start,
                "duration_s": self.duration_s, "interval_s": self.interval_s, "topology": self.topology_data,
                "faults": [{**f, "keys": sorted(list(k) for k in f["keys"])} for f in self.faults],
                "stats": self.stats}

    def write(self, directory: str | Path) -> Path:
        d = Path(directory) / self.name
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "deliveries.jsonl", "w") as fh:
            for t, r in self.deliveries:
                fh.write(json.dumps({"arrival": round(t, 3), "report": r}, separators=(",", ":")) + "\n")
        with open(d / "reports.jsonl", "w") as fh:
            for _, r in self.deliveries:
                fh.write(json.dumps(r, separators=(",", ":")) + "\n")
        (d / "truth.json").write_text(json.dumps(self.truth_json(), indent=1) + "\n")
        (d / "topology.yaml").write_text(yaml.safe_dump(self.topology_data, sort_keys=False))
        return d


# ------------------------------------------------------------------------------------------
# generation
# ------------------------------------------------------------------------------------------
def _lognormal(rng: np.random.Generator, median: float, sigma: float, size: Any = None) -> np.ndarray:
    return median * np.exp(sigma * rng.standard_normal(size))


def _ffill(values: np.ndarray, update: np.ndarray) -> np.ndarray:
    """Along axis 1: where ``update`` is False, repeat the last updated value (first column always updates)."""
    n, t = values.shape
    idx = np.where(update, np.arange(t)[None, :], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    return values[np.arange(n)[:, None], idx]


def _onoff(rng: np.random.Generator, n: int, t: int, p: Mapping[str, float]) -> np.ndarray:
    """(n, t) bool ON/OFF states with lognormal sojourns, random initial state and phase."""
    k = int(t / 1.5) + 8  # sojourns per row: more than enough (sojourns are >= 1 tick)
    on = np.maximum(1, np.rint(_lognormal(rng, p["on_median_ticks"], p["on_sigma"], (n, k)))).astype(np.int64)
    off = np.maximum(1, np.rint(_lognormal(rng, p["off_median_ticks"], p["off_sigma"], (n, k)))).astype(np.int64)
    lengths = np.empty((n, 2 * k), dtype=np.int64)
    lengths[:, 0::2], lengths[:, 1::2] = on, off
    first_on = rng.random(n) < 0.6
    lengths[~first_on] = np.roll(lengths[~first_on], -1, axis=1)
    # random phase: start partway into the first sojourn
    lengths[:, 0] = np.maximum(1, (lengths[:, 0] * rng.random(n)).astype(np.int64) + 1)
    ends = np.cumsum(lengths, axis=1)  # tick where sojourn i ends
    ticks = np.arange(t)
    # number of sojourn ends <= tick -> index of current sojourn; even index = first state
    span = int(ends[:, -1].max()) + 1
    flat_ends = (ends + np.arange(n)[:, None] * span).ravel()
    flat_ticks = (ticks[None, :] + np.arange(n)[:, None] * span).ravel()
    idx = np.searchsorted(flat_ends, flat_ticks, side="right").reshape(n, t) - np.arange(n)[:, None] * (2 * k)
    even = (idx % 2) == 0
    return np.where(first_on[:, None], even, ~even)


def _seed_of(name: str, seed: int) -> int:
    return (zlib.crc32(name.encode()) << 20) ^ (seed & 0xFFFFF)


def generate(scenario: str | Scenario, seed: int = 0, params: Mapping[str, float] | None = None) -> Generated:
    """Generate one scenario: see the module docstring. Deterministic in (scenario, seed, params).

    ``params`` overrides entries of :data:`PARAMS` (unknown names are an error)."""
    sc = SCENARIOS[scenario] if isinstance(scenario, str) else scenario
    unknown = sorted(set(params or ()) - set(PARAMS))
    if unknown:
        raise ValueError(f"unknown generator parameter(s) {unknown}; known: {sorted(PARAMS)}")
    p = {**PARAMS, **(params or {})}
    rng = np.random.default_rng(_seed_of(sc.name, seed))
    topo_data = copy.deepcopy(dict(sc.topology))
    topo = load_topology(topo_data)
    ids = list(topo.instances)
    N = len(ids)
    pos = {iid: i for i, iid in enumerate(ids)}
    pl = [topo.instances[i] for i in ids]
    sub_names = sorted({x.subnet for x in pl})
    az_names = sorted({x.az for x in pl})
    vpc_names = sorted({x.vpc for x in pl})
    sub = np.array([sub_names.index(x.subnet) for x in pl])
    az = np.array([az_names.index(x.az) for x in pl])
    vpc = np.array([vpc_names.index(x.vpc) for x in pl])
    tier = np.array([x.subnet.split("-")[0] for x in pl])
    T = sc.duration_s // TICK_S
    tick_t = EPOCH + TICK_S * np.arange(T)
    hour = (tick_t - EPOCH) / 3600.0 % 24
    load = 1.0 + p["diurnal"] * np.sin(2 * np.pi * (hour - 9.0) / 24.0)  # peak 15:00 UTC

    # --- hosts: join/leave --------------------------------------------------------------
    join = np.zeros(N, dtype=np.int64)
    leave = np.full(N, T, dtype=np.int64)
    fault_hosts = {pos[f.target["instance"]] for f in sc.faults if "instance" in f.target}
    popular = [pos[x] for x in sc.popular if x in pos]
    protected = fault_hosts | set(popular)
    for i in range(N):
        if i in protected:
            continue
        if rng.random() < p["p_join"]:
            join[i] = rng.integers(T // 10, T // 2)
        if rng.random() < p["p_leave"]:
            leave[i] = rng.integers(T // 2, T - T // 10)
    alive = (np.arange(T)[None, :] >= join[:, None]) & (np.arange(T)[None, :] < leave[:, None])

    # --- relations (client, server) ------------------------------------------------------
    rels: dict[tuple[int, int], dict[str, Any]] = {}

    def add_rel(c: int, s: int, popular_rel: bool) -> None:
        if c == s or (c, s) in rels:
            return
        u = rng.random()
        kind = "pool" if u < p["p_pool"] else ("fetch" if u < p["p_pool"] + p["p_fetch_only"] else "both")
        if popular_rel:
            kind = "both"
        n_long = 0 if kind == "fetch" else int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
        lam = 0.0 if kind == "pool" else float(_lognormal(rng, p["fetch_rate_median"], p["fetch_rate_sigma"]))
        push = (not popular_rel) and rng.random() < p["p_push"]
        rels[(c, s)] = {"n_long": n_long, "lam": lam, "push": push, "popular": popular_rel}

    for s in popular:
        w = np.where(az == az[s], 2.0, 1.0)
        w[s] = 0.0
        n = int(rng.integers(p["popular_clients_min"], p["popular_clients_max"] + 1))
        for c in rng.choice(N, size=min(n, N - 1), replace=False, p=w / w.sum()):
            add_rel(int(c), s, True)
    for c in range(N):
        k = min(int(p["peers_base"] + rng.poisson(p["peers_extra_mean"])), int(p["peers_max"]))
        aff = TIER_AFFINITY.get(str(tier[c]), {str(tier[c]): 1.0})
        for _ in range(k):
            want = rng.choice(list(aff), p=np.array(list(aff.values())) / sum(aff.values()))
            w = np.where(tier == want, 1.0, 0.0) * np.where(az == az[c], 3.0, 1.0) * np.where(vpc == vpc[c], 1.0, 0.3)
            w[c] = 0.0
            if w.sum() == 0:
                continue
            add_rel(c, int(rng.choice(N, p=w / w.sum())), False)
    rel_keys = list(rels)
    R = len(rel_keys)
    rc = np.array([k[0] for k in rel_keys])
    rs = np.array([k[1] for k in rel_keys])
    r_push = np.array([rels[k]["push"] for k in rel_keys])
    r_pop = np.array([rels[k]["popular"] for k in rel_keys])
    r_lam = np.array([rels[k]["lam"] for k in rel_keys])
    r_nlong = np.array([rels[k]["n_long"] for k in rel_keys])
    rel_alive = alive[rc] & alive[rs]

    # --- path RTT per host pair (symmetric) -------------------------------------------
    n_az = len(az_names)
    az_d = np.triu(rng.uniform(p["inter_az_min_us"], p["inter_az_max_us"], (n_az, n_az)), 1)
    az_d = az_d + az_d.T
    n_vpc = len(vpc_names)
    vpc_d = np.triu(rng.uniform(p["inter_vpc_min_us"], p["inter_vpc_max_us"], (n_vpc, n_vpc)), 1)
    vpc_d = vpc_d + vpc_d.T
    pair_base: dict[tuple[int, int], float] = {}

    def base_rtt(a: int, b: int) -> float:
        key = (min(a, b), max(a, b))
        if key not in pair_base:
            pair_base[key] = float(_lognormal(rng, p["intra_az_rtt_us"], p["intra_az_sigma"])
                                   + az_d[az[a], az[b]] + vpc_d[vpc[a], vpc[b]])
        return pair_base[key]

    r_base = np.array([base_rtt(int(a), int(b)) for a, b in zip(rc, rs)]) if R else np.zeros(0)

    # --- long connections and their direction rows --------------------------------------
    conn_rel = np.repeat(np.arange(R), r_nlong)
    C = len(conn_rel)
    # direction rows: d < C client->server, d >= C server->client
    d_rel = np.concatenate([conn_rel, conn_rel])
    d_snd = np.concatenate([rc[conn_rel], rs[conn_rel]])
    d_rcv = np.concatenate([rs[conn_rel], rc[conn_rel]])
    d_c2s = np.concatenate([np.ones(C, bool), np.zeros(C, bool)])
    d_big = np.where(r_push[d_rel], d_c2s, ~d_c2s)  # the direction carrying the bulk
    D = 2 * C
    c_alive = rel_alive[conn_rel]
    d_alive = np.concatenate([c_alive, c_alive])
    on = _onoff(rng, C, T, p) & c_alive
    rate = np.where(r_pop[conn_rel], _lognormal(rng, p["popular_rate_median_bytes"], 1.2, C),
                    _lognormal(rng, p["rate_median_bytes"], p["rate_sigma"], C))
    rate = np.clip(rate, 2e3, 2e9)
    ratio = np.clip(_lognormal(rng, p["small_ratio_median"], p["small_ratio_sigma"], C), 1e-3, 1.0)
    burst = _lognormal(rng, 1.0, p["burst_sigma"], (C, T)) * load[None, :]
    big_bytes = np.where(on, rate[:, None] * burst, 0.0)
    small_bytes = np.where(on, big_bytes * ratio[:, None] * _lognormal(rng, 1.0, 0.3, (C, T)), 0.0)
    both_on = np.concatenate([on, on])
    byt = np.where(d_big[:, None], np.concatenate([big_bytes, big_bytes]), np.concatenate([small_bytes, small_bytes]))
    # heartbeats while OFF
    hb = (~both_on) & d_alive & (rng.random((D, T)) < p["heartbeat_p"])
    byt = np.where(hb, rng.integers(60, 600, (D, T)), byt)
    byt = np.rint(byt)
    seg = np.ceil(byt / MSS)
    W = np.clip(np.where(d_big, _lognormal(rng, p["flight_big_median"], 0.7, D),
                         _lognormal(rng, p["flight_small_median"], 0.5, D)), 1, 300)

    # background loss
    p_bg = _lognormal(rng, p["bg_loss_median"], p["bg_loss_sigma"], D)
    lost_bg = rng.binomial(seg.astype(np.int64), np.minimum(p_bg, 0.5)[:, None])
    retr = lost_bg.astype(np.float64)
    tout = rng.binomial(lost_bg, np.clip(1.5 / W, 0.01, 0.6)[:, None]).astype(np.float64)
    # microburst episodes at the receiver's port (Gilbert-Elliott bursts)
    fan_in = np.bincount(rs[conn_rel], minlength=N) if C else np.zeros(N)
    ep = rng.poisson(p["episode_rate"] * (1 + fan_in / 10.0)[:, None] * load[None, :], (N, T))
    e_r = ep[d_rcv]
    active = byt > 0
    hit = active & (e_r > 0) & (rng.random((D, T)) < 1 - (1 - p["episode_hit_p"]) ** e_r)
    if hit.any():
        hi, ht = np.nonzero(hit)
        mean_l = np.clip(1.5 * W[hi], 4, 400)
        L = rng.geometric(1.0 / mean_l)
        lost = np.minimum(rng.binomial(L, p["ge_bad_loss"]), seg[hi, ht].astype(np.int64))
        whole = lost >= np.maximum(W[hi] - 2, 1)
        rto = np.where(whole, 1 + (lost > 2 * W[hi]), rng.random(len(hi)) < np.clip(3.0 / W[hi], 0.02, 1.0))
        retr[hi, ht] += lost
        tout[hi, ht] += rto * (lost > 0)
    retr += rng.binomial(retr.astype(np.int64), p["spurious_frac"])

    # RTT per direction row (the sender's tcpi_rtt)
    ack = np.where(~d_big & (rng.random(D) < p["ack_component_p"]),
                   _lognormal(rng, p["ack_component_us"], 1.0, D), 0.0)
    pop_port = np.isin(d_rcv, popular) | np.isin(d_snd, popular)
    raw = (r_base[d_rel][:, None] * _lognormal(rng, 1.0, p["poll_jitter_sigma"], (D, T)) + ack[:, None])
    spike_p = p["spike_p"] * np.where(pop_port, 2.0, 1.0)[:, None] * load[None, :]
    # tcpi_rtt is srtt = EWMA(1/8) of per-ACK samples: a queueing excess q moves it by q/8 (one delayed
    # ACK) up to q (sustained over ~16 ACKs); we draw that persistence uniformly.
    persist = rng.uniform(0.125, 1.0, (D, T))
    raw += np.where(rng.random((D, T)) < spike_p, rng.exponential(p["spike_mean_us"], (D, T)) * persist, 0.0)
    # host hiccups (VM descheduled 2-20 ms): every connection of that host, both ends, one poll, diluted 1/8
    hic = rng.random((N, T)) < p["hiccup_p"]
    hic_us = np.where(hic, rng.uniform(2000, 20000, (N, T)) / 8.0, 0.0)
    raw += np.maximum(hic_us[d_snd], hic_us[d_rcv])

    # --- fetches (short connections) per relation and direction -------------------------
    n_f = rng.poisson(r_lam[:, None] * load[None, :], (R, T)) * rel_alive
    fr, ft = np.nonzero(n_f)
    cnt = n_f[fr, ft]
    rep_r, rep_t = np.repeat(fr, cnt), np.repeat(ft, cnt)
    f_big = np.rint(_lognormal(rng, p["fetch_bytes_median"], p["fetch_bytes_sigma"], len(rep_r)))
    f_small = rng.integers(200, 1200, len(rep_r)).astype(np.float64)
    f_c2s = np.where(r_push[rep_r], f_big, f_small)
    f_s2c = np.where(r_push[rep_r], f_small, f_big)
    # per (rel, tick, direction): bytes, segments
    fb = np.zeros((2, R, T))
    fs = np.zeros((2, R, T))
    np.add.at(fb[0], (rep_r, rep_t), f_c2s)
    np.add.at(fb[1], (rep_r, rep_t), f_s2c)
    np.add.at(fs[0], (rep_r, rep_t), np.ceil(f_c2s / MSS))
    np.add.at(fs[1], (rep_r, rep_t), np.ceil(f_s2c / MSS))
    fp_bg = _lognormal(rng, p["bg_loss_median"], p["bg_loss_sigma"], (2, R, 1))
    f_retr = rng.binomial(fs.astype(np.int64), np.minimum(fp_bg, 0.5)).astype(np.float64)
    f_tout = rng.binomial(f_retr.astype(np.int64), p["fetch_rto_p"]).astype(np.float64)
    # fetch RTT observations (each fetch seen by a poll with some probability, by either end)
    f_obs = []  # (direction 0/1, rel, tick, value)
    for dirn in (0, 1):
        seen = rng.random(len(rep_r)) < p["fetch_seen_p"]
        v = r_base[rep_r[seen]] * _lognormal(rng, 1.0, 0.1, int(seen.sum()))
        f_obs.append([np.full(int(seen.sum()), dirn), rep_r[seen], rep_t[seen], v])
    fo_dir, fo_rel, fo_t, fo_v = (np.concatenate(x) for x in zip(*f_obs)) if len(rep_r) else (np.zeros(0, int),) * 4

    # --- faults ----------------------------------------------------------------------------
    fault_out: list[dict[str, Any]] = []
    for f in sc.faults:
        t0, t1 = f.start_s // TICK_S, min((f.start_s + f.duration_s) // TICK_S, T)
        tw = slice(t0, t1)
        tgt_kind, tgt = next(iter(f.target.items()))

        def sel_rows(snd: np.ndarray, rcv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """(rows affected, rows 'towards the target') for sender/receiver host arrays."""
            if tgt_kind == "az_pair":
                a, b = az_names.index(tgt[0]), az_names.index(tgt[1])
                m = ((az[snd] == a) & (az[rcv] == b)) | ((az[snd] == b) & (az[rcv] == a))
                return m, m
            if tgt_kind == "subnet":
                s = sub_names.index(tgt)
                return (sub[snd] == s) | (sub[rcv] == s), sub[rcv] == s
            i = pos[tgt]
            return (snd == i) | (rcv == i), rcv == i

        touched_rows = np.zeros(D, bool)
        touched_frel = np.zeros((2, R), bool)
        m_long, to_long = sel_rows(d_snd, d_rcv)
        # ECMP share: a per-connection hash decides whether a flow crosses the bad element
        if f.fraction < 1.0:
            conn_hit = rng.random(C) < f.fraction
            m_long &= np.concatenate([conn_hit, conn_hit])
        fsnd = np.stack([rc, rs])
        frcv = np.stack([rs, rc])
        m_f, to_f = sel_rows(fsnd, frcv)
        rows = np.nonzero(m_long)[0]
        act = active[rows, tw]
        if f.kind in ("loss", "nic_drop", "slow_server"):
            pl_ = f.magnitude if f.kind != "slow_server" else 0.003
            lrows = rows if f.kind != "slow_server" else np.nonzero(m_long & to_long)[0]
            lact = active[lrows, tw]
            extra = rng.binomial(seg[lrows, tw].astype(np.int64), pl_)
            retr[lrows, tw] += extra
            tout[lrows, tw] += rng.binomial(extra, np.clip(2.0 / W[lrows], 0.02, 0.5)[:, None])
            touched_rows[lrows[lact.any(axis=1)]] = True
            fm = m_f if f.kind != "slow_server" else (m_f & to_f)
            segs_aff = fs[:, :, tw] * fm[:, :, None]
            if f.fraction < 1.0:
                segs_aff = rng.binomial(segs_aff.astype(np.int64), f.fraction).astype(np.float64)
            fx = rng.binomial(segs_aff.astype(np.int64), pl_)
            f_retr[:, :, tw] += fx
            f_tout[:, :, tw] += rng.binomial(fx, p["fetch_rto_p"])
            touched_frel |= (segs_aff > 0).any(axis=2)
        if f.kind in ("delay", "stall", "slow_server"):
            if f.kind == "delay":
                add = np.full(len(rows), f.magnitude)
            elif f.kind == "stall":  # peers wait for the stalled host's ACKs; it sees half of it itself
                add = np.where(to_long[rows], 1.0, 0.5) * f.magnitude
            else:
                add = np.where(to_long[rows], 1.0, 0.15) * f.magnitude
            jit = _lognormal(rng, 1.0, 0.3 if f.kind != "delay" else 0.05, act.shape)
            raw[rows, tw] += np.where(act, add[:, None] * jit, 0.0)
            touched_rows[rows[act.any(axis=1)]] = True
            fsel = np.isin(fo_t, np.arange(t0, t1)) & m_f[fo_dir, fo_rel]
            fadd = f.magnitude * (1.0 if f.kind == "delay" else np.where(to_f[fo_dir[fsel], fo_rel[fsel]], 1.0, 0.5))
            fo_v[fsel] += fadd
            touched_frel[fo_dir[fsel], fo_rel[fsel]] = True
        if f.kind in ("stall", "slow_server"):
            factor = 0.3 if f.kind == "stall" else 0.8
            byt[rows, tw] = np.rint(byt[rows, tw] * factor)
            seg[rows, tw] = np.ceil(byt[rows, tw] / MSS)
            fb[:, :, tw] = np.where(m_f[:, :, None], np.rint(fb[:, :, tw] * factor), fb[:, :, tw])
        if f.kind == "stall":
            towards = rows[to_long[rows]]
            a_t = active[towards, tw]
            n_rto = rng.poisson(2.0, a_t.shape) * a_t
            tout[towards, tw] += n_rto
            retr[towards, tw] += n_rto * rng.integers(1, 4, a_t.shape)
            own = rows[~to_long[rows]]
            a_o = active[own, tw]
            k = rng.poisson(0.5, a_o.shape) * a_o
            tout[own, tw] += k
            retr[own, tw] += k
        # keys of every connection the fault altered
        hosts: set[tuple[int, int]] = set()
        for d in np.nonzero(touched_rows)[0]:
            hosts.add((int(d_snd[d]), int(d_rcv[d])))
        for dirn, r in zip(*np.nonzero(touched_frel)):
            a, b = (rc[r], rs[r]) if dirn == 0 else (rs[r], rc[r])
            hosts.add((int(a), int(b)))
        keys: set[tuple[str, str, str]] = set()
        for a, b in hosts:
            sa, sb = pl[a].subnet, pl[b].subnet
            keys |= {("pair", sa, sb), ("pair", sb, sa), ("instance", ids[a], sb), ("instance", ids[b], sa)}
        fault_out.append({"name": f.name, "kind": f.kind, "target": dict(f.target),
                          "start": EPOCH + t0 * TICK_S, "end": EPOCH + t1 * TICK_S, "cause": f.cause,
                          "magnitude": f.magnitude, "fraction": f.fraction, "keys": keys})

    # smoothed RTT: idle connections keep their last value
    upd = active.copy() if p["stale_srtt"] else np.ones_like(active)
    upd[:, 0] = True
    rtt = np.maximum(1.0, np.rint(_ffill(raw, upd)))
    rtt = np.where(d_alive, rtt, 0.0)

    # --- aggregate to directed host pairs ----------------------------------------------
    pair_index: dict[tuple[int, int], int] = {}
    for a, b in zip(rc, rs):
        for k in ((int(a), int(b)), (int(b), int(a))):
            if k not in pair_index:
                pair_index[k] = len(pair_index)
    P = len(pair_index)
    pr_snd = np.array([k[0] for k in pair_index])
    pr_rcv = np.array([k[1] for k in pair_index])
    rev = np.array([pair_index[(b, a)] for a, b in pair_index])
    d_pair = np.array([pair_index[(int(a), int(b))] for a, b in zip(d_snd, d_rcv)], dtype=np.int64)
    f_pair = np.stack([np.array([pair_index[(int(a), int(b))] for a, b in zip(rc, rs)], dtype=np.int64),
                       np.array([pair_index[(int(b), int(a))] for a, b in zip(rc, rs)], dtype=np.int64)]) \
        if R else np.zeros((2, 0), np.int64)
    SENT = np.zeros((P, T))
    RETR = np.zeros((P, T))
    TOUT = np.zeros((P, T))
    FLOWS = np.zeros((P, T))
    np.add.at(SENT, d_pair, byt)
    np.add.at(RETR, d_pair, retr)
    np.add.at(TOUT, d_pair, tout)
    np.add.at(FLOWS, d_pair, d_alive.astype(np.float64))
    for dirn in (0, 1):
        np.add.at(SENT, f_pair[dirn], fb[dirn])
        np.add.at(RETR, f_pair[dirn], f_retr[dirn])
        np.add.at(TOUT, f_pair[dirn], f_tout[dirn])
        np.add.at(FLOWS, f_pair[dirn], n_f.astype(np.float64))  # each fetch is a flow at both ends
    RECV = SENT[rev]
    fetch_rtt: dict[tuple[int, int], list[int]] = {}
    if len(fo_v):
        fo_pair = f_pair[fo_dir, fo_rel]
        for pp, tt, vv in zip(fo_pair.tolist(), fo_t.tolist(), np.maximum(1, np.rint(fo_v)).astype(int).tolist()):
            fetch_rtt.setdefault((pp, tt), []).append(vv)

    # --- agents -------------------------------------------------------------------------------
    def endpoint(i: int, full: bool) -> dict[str, Any]:
        x = pl[i]
        return {"ip": x.ip, "subnet": x.subnet, "az": x.az, "vpc": x.vpc} if full else {"ip": x.ip}

    deliveries: list[tuple[float, dict[str, Any]]] = []
    n_reports = n_samples = n_dup = n_late = n_missing = 0
    order = np.argsort(d_pair, kind="stable")
    d_sorted_pair = d_pair[order]
    cum = {name: np.concatenate([np.zeros((P, 1)), np.cumsum(a, axis=1)], axis=1)
           for name, a in (("sent", SENT), ("recv", RECV), ("retr", RETR), ("tout", TOUT), ("flows", FLOWS))}
    for x in range(N):
        iv = 60 if rng.random() < p["p_60s"] else 30
        L = iv // TICK_S
        phase = int(rng.integers(0, iv))
        offset = float(rng.uniform(-p["clock_offset_s"], p["clock_offset_s"]))
        if p["aligned"]:  # intervals start on multiples of iv of the agent's own (offset) clock
            offset = round(offset)
            phase = (-offset) % iv
        remote_full = rng.random() < p["p_remote_placement"]
        local = endpoint(x, rng.random() < p["p_local_placement"])
        pairs = np.nonzero(pr_snd == x)[0]
        if len(pairs) == 0:
            continue
        K = (T * TICK_S - phase) // iv
        k_all = np.arange(K)
        j0 = (phase + k_all * iv + TICK_S // 2) // TICK_S
        j0 = np.minimum(j0, T - L)
        j1 = j0 + L
        ok = alive[x, j0] & alive[x, j1 - 1]
        drop = rng.random(K) < p["p_drop"]
        for _ in range(rng.poisson(p["outages_mean"])):
            s0 = int(rng.integers(0, K))
            drop[s0:s0 + int(rng.integers(1, 5))] = True
        sums = {name: (c[pairs][:, j1] - c[pairs][:, j0]) for name, c in cum.items()}
        flows_k = np.ceil(sums["flows"] / L - 1e-9)
        # long-connection RTT rows of this agent, grouped by pair
        lo, hi = np.searchsorted(d_sorted_pair, pairs), np.searchsorted(d_sorted_pair, pairs, side="right")
        rows_by_pair = [order[a:b] for a, b in zip(lo, hi)]
        remotes = [endpoint(int(pr_rcv[pp]), remote_full) for pp in pairs]
        inst = ids[x]
        for k in range(K):
            true_start = EPOCH + phase + int(k) * iv
            start = math.floor(true_start + offset)
            if p["aligned"]:
                assert start % iv == 0
            if not ok[k] or start < EPOCH:
                continue
            if drop[k]:
                n_missing += 1
                continue
            a, b = int(j0[k]), int(j1[k])
            samples = []
            for gi, pp in enumerate(pairs):
                fl = int(flows_k[gi, k])
                if fl <= 0:
                    continue
                rr = rows_by_pair[gi]
                obs = rtt[rr, a:b].ravel() if len(rr) else np.zeros(0)
                obs = obs[obs > 0].astype(np.int64).tolist()
                for tt in range(a, b):
                    obs.extend(fetch_rtt.get((int(pp), tt), ()))
                samples.append({"remote": remotes[gi], "bytes_sent": int(sums["sent"][gi, k]),
                                "bytes_received": int(sums["recv"][gi, k]),
                                "retransmissions": int(sums["retr"][gi, k]), "timeouts": int(sums["tout"][gi, k]),
                                "flows": fl, "rtt_us": obs})
            if not samples:
                continue
            rid = hashlib.blake2b(f"{sc.name}:{seed}:{inst}:{start}".encode(), digest_size=12).hexdigest()
            report = {"version": 1, "report_id": rid, "instance": inst, "local": local, "start": int(start),
                      "interval_s": iv, "samples": samples}
            end_true = true_start + iv
            arrival = end_true + 0.2 + float(_lognormal(rng, 1.0, 0.7))
            if rng.random() < p["p_late"]:
                arrival += float(rng.uniform(10, 60))
                n_late += 1
            deliveries.append((arrival, report))
            n_reports += 1
            n_samples += len(samples)
            if rng.random() < p["p_dup"]:
                deliveries.append((arrival + float(rng.uniform(2, 40)), copy.deepcopy(report)))
                n_dup += 1
    deliveries.sort(key=lambda d: (d[0], d[1]["instance"]))
    stats = {"instances": N, "relations": R, "long_connections": C, "fetches": int(n_f.sum()),
             "directed_host_pairs": P, "reports": n_reports, "samples": n_samples, "duplicates": n_dup,
             "late": n_late, "missing": n_missing, "joined_late": int((join > 0).sum()),
             "left_early": int((leave < T).sum())}
    return Generated(sc.name, seed, sc.description, topo, topo_data, EPOCH, sc.duration_s, 30, deliveries,
                     fault_out, stats)


# ------------------------------------------------------------------------------------------
# runner
# ------------------------------------------------------------------------------------------
def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _totals_line(totals: Any) -> str:
    if totals is None:
        return "– (evaluate_stream gives no totals yet)"
    if isinstance(totals, Mapping):
        if "exact" in totals:
            rest = {k: v for k, v in totals.items() if k != "exact"}
            return f"exact={totals['exact']} {json.dumps(rest, default=str)[:200]}"
        return json.dumps(totals, default=str)[:240]
    return str(totals)


def _print_result(g: Generated, js: Mapping[str, Any]) -> None:
    det, att = js["detection"], js["attribution"]
    print(f"\n== {g.name} (seed {g.seed}): {g.description}")
    st = g.stats
    print(f"   fleet {st['instances']} instances, {st['relations']} relations, {st['long_connections']} long "
          f"connections, {st['fetches']} fetches; {st['reports']} reports ({st['duplicates']} re-sent, "
          f"{st['late']} late, {st['missing']} missing), {st['samples']} samples, {g.duration_s // 3600} h")
    print(f"   recall {_fmt(det['recall'])} ({det['detected']}/{det['faults']})  precision {_fmt(det['precision'])} "
          f"({det['alerts']} alerts)  false alarms/1000 pair-windows "
          f"{_fmt(det['false_alarms_per_1000_pair_windows'], 2)} ({det['false_alarms']}/"
          f"{det['fault_free_pair_windows']})  median delay {_fmt(det['median_delay_intervals'])} intervals")
    print(f"   attribution accuracy {_fmt(att['accuracy'])}  confusion {json.dumps(att['confusion'])}  "
          f"NHI false-degraded min {_fmt(float(att['nhi_false_degraded_minutes']), 1)}")
    for f in js["faults"]:
        print(f"     {f['name']:<16} {f['cause_truth']:<15} detected={f['detected']!s:<5} "
              f"delay={_fmt(f['delay_intervals'])} alerts={f['alerts']} given={f['cause_given']} "
              f"metrics={','.join(f['metrics'])}")
    print(f"   totals: {_totals_line(js.get('totals'))}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.independent", description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    ap.add_argument("--write", metavar="DIR", help="also write deliveries.jsonl, reports.jsonl, truth.json per scenario")
    ap.add_argument("--no-eval", action="store_true", help="only generate (and --write)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                    help="override a generator parameter (see PARAMS), e.g. -p aligned=1 -p p_60s=0")
    ap.add_argument("-d", "--detect", action="append", default=[], metavar="NAME=VALUE",
                    help="override a detection parameter (pipeline.detect.detection.DEFAULTS), e.g. -d confirm_after=1")
    args = ap.parse_args(argv)
    from pipeline.detect.detection import DEFAULTS

    def pairs(items: list[str], flag: str, known: Mapping[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        for kv in items:
            k, _, v = kv.partition("=")
            if k not in known or not v:
                ap.error(f"bad {flag} {kv!r}: NAME=VALUE with NAME one of {sorted(known)}")
            out[k] = float(v)
        return out
    detect_params = pairs(args.detect, "-d", DEFAULTS)
    overrides = pairs(args.param, "-p", PARAMS)
    names = args.scenario or list(SCENARIOS)
    evaluate_stream = None
    if not args.no_eval:
        try:
            from pipeline.sim.evaluate import evaluate_stream  # type: ignore[attr-defined,no-redef]
        except ImportError:
            if not args.write:
                print("pipeline.sim.evaluate.evaluate_stream is not available in this checkout: use --write DIR "
                      "(then feed DIR/NAME/reports.jsonl to a worker with `flowmon produce`) or --no-eval",
                      file=sys.stderr)
                return 3
            print("note: pipeline.sim.evaluate.evaluate_stream is not available: writing files only", file=sys.stderr)
    results, out = [], []
    for name in names:
        t0 = time.perf_counter()
        g = generate(name, args.seed, overrides)
        gen_s = time.perf_counter() - t0
        if args.write:
            d = g.write(args.write)
            if not args.json:
                print(f"{name}: wrote {d} ({len(g.deliveries)} deliveries, generated in {gen_s:.1f} s)")
        if evaluate_stream is None:
            out.append({"scenario": name, "generate_s": round(gen_s, 2), "stats": g.stats})
            continue
        res = evaluate_stream(g.topology, g.deliveries, g.faults, name=g.name, source=f"benchmarks.independent:{name}",
                              interval_s=g.interval_s, start=g.start, duration_s=g.duration_s, params=detect_params)
        results.append(res)
        js = res.as_json()
        js["generator"] = {"seed": g.seed, "generate_s": round(gen_s, 2), **g.stats}
        out.append(js)
        if not args.json:
            _print_result(g, js)
            print(f"   generated in {gen_s:.1f} s, evaluated in {js['run']['seconds']} s")
    suite = None
    if results:
        from pipeline.sim.evaluate import suite_summary
        suite = suite_summary(results)
        totals = [r.as_json().get("totals") for r in results]
        if any(t is not None for t in totals):
            suite["totals_exact"] = all(isinstance(t, Mapping) and t.get("wrong") == 0 for t in totals)
        if not args.json:
            print(f"\n== pooled ({suite['scenarios']} scenarios): recall {_fmt(suite['recall'])} "
                  f"({suite['detected']}/{suite['faults']})  precision {_fmt(suite['precision'])} "
                  f"({suite['alerts']} alerts)  false alarms/1000 {_fmt(suite['false_alarms_per_1000_pair_windows'], 2)}"
                  f" ({suite['false_alarms']}/{suite['fault_free_pair_windows']})  median delay "
                  f"{_fmt(suite['median_delay_intervals'])}  attribution {_fmt(suite['attribution_accuracy'])} "
                  f"{json.dumps(suite['confusion'])}  NHI false-degraded min "
                  f"{_fmt(float(suite['nhi_false_degraded_minutes']), 1)}  totals exact "
                  f"{suite.get('totals_exact', '–')}")
    if args.json:
        print(json.dumps({"scenarios": out, "suite": suite}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
