"""Deterministic fleet simulator: wire-v1 flow reports in simulated time.

Pure generator (no Kafka). Given a :class:`~pipeline.ingest.topology.Topology` and a traffic
description it yields one report per instance per agent interval (``interval_s``,
default 30 s), each with one sample per remote endpoint the instance exchanged data
with in that interval, in event-time order and much faster than real time.
Same seed → byte-identical reports.

Traffic (YAML list under ``traffic:``; a scenario file may also hold ``topology:``,
``seed:``, ``duration:``, ``interval:``, ``omit_remote_placement:``,
``rtt_defaults_ms:``; other top-level keys are left to other tools):

* ``background`` (the default kind)::

      {from: vpc-a, to: az1, clients_per_instance: 3, bytes_per_interval: 5MB,
       rtt_ms: 0.8, retrans_per_mb: 0.05, diurnal: 0.3, noise: 0.2, start: 1h, duration: 2h}

  A scope is an instance, subnet, AZ or VPC id. Each instance in ``from`` picks
  ``clients_per_instance`` distinct peers (seeded) in ``to`` (never itself) and, per
  interval, sends each peer ~``bytes_per_interval`` (per pair): × a 24 h diurnal sinusoid
  of amplitude ``diurnal`` (peak 12:00 UTC) × mean-1 lognormal noise of sigma ``noise``.
  The peer sends back ``reverse_ratio`` (default 0.01) of that. Retransmissions ~
  Poisson(``retrans_per_mb`` × MB sent), counted by the data sender; timeouts ~
  Binomial(retransmissions, ``timeouts_per_retrans``, default 0.02). ``flows`` (default 1)
  connections per pair. ``start``/``duration`` (offsets from the simulation start)
  restrict the entry to intervals starting in [start, start+duration).
* ``transfer`` (an HTTP download)::

      {kind: transfer, server: subnet-1a/0, clients: [subnet-1a/1, subnet-1c/0],
       bytes: 10MB, every: 10m, offset: 1m}

  Each client (scopes allowed) fetches ``bytes`` from the server at simulation-start +
  offset + k·every; the download lasts a few seconds and is reported in the interval
  containing its start. The client's request is ``request_bytes`` (default 400) the other
  way. ``retrans_per_mb`` defaults to 0.003 (≈ one retransmission per 330 MB, as in
  the reference: "a single retransmission appeared once, by chance").

Both ends report every flow: the data sender reports ``bytes_sent`` (and the
retransmissions), the receiver ``bytes_received``; each side has its own RTT observation
(one per flow). RTT: the entry's ``rtt_ms``, else :data:`DEFAULT_RTT_MS` by category
(intra-AZ 0.2 ms, inter-AZ 1.0 ms, inter-VPC 1.3 ms), × a fixed per-pair path factor
(lognormal sigma 0.1) × a per-observation factor (lognormal sigma ``rtt_jitter``, 0.25).
A fraction ``omit_remote_placement`` (default 0.5) of samples carry only the remote
``ip``, so the pipeline must resolve subnet/az/vpc from the topology; ``local`` always
has its placement.

Faults (YAML list under ``faults:``; the ground truth ``flowmon eval`` scores against)::

    {kind: loss, target: {az_pair: [az1, az2]}, start: 2h, duration: 20m, magnitude: 0.02,
     cause: infrastructure, ramp: 1h, name: my-fault}

``target`` is one of ``instance``, ``subnet``, ``az``, ``az_pair`` (two AZ ids; flows between
them, either direction) or ``vpc``; a flow is affected when one of its ends is in the
target (for ``az_pair``: one end in each zone). The fault is active on intervals starting in
``[start, start + duration)``; with ``ramp`` its magnitude grows linearly from 0 to
``magnitude`` over that time (gradual degradation). Kinds:

* ``loss``: packet-loss fraction ``magnitude`` on affected flows: the data sender reports
  ~Poisson(magnitude × segments) more retransmissions (segment = 1448 bytes), 3 % of them
  timeouts;
* ``delay``: ``magnitude`` (e.g. ``25ms``) added to every RTT observation of affected flows;
* ``stall``: an endpoint slow to read: RTT + ``magnitude`` (default 200ms) and ~1 timeout per
  flow per interval on the data sender (each timeout retransmits one segment: little loss).

``cause`` (``infrastructure`` or ``workload``; ``undetermined`` for a fault the evidence cannot
place, e.g. on a path with one reporter) is not used by the simulator: it is what
attribution is scored against.

Realism (``realism:`` in a scenario, ``Simulator(..., realism=...)``, ``flowmon eval --realism``).
``smooth`` (the default) is the model above: Poisson retransmissions, one RTT observation
per flow, every agent on the fleet's 30-s grid, every report delivered once, in order, at
``start + interval_s``. ``realistic`` adds the effects below; a mapping
``{preset: realistic, <param>: value, ...}`` overrides single parameters (unknown keys are
refused). Every draw is seeded by ``seed`` with generators of its own, so the smooth
traffic underneath (bytes, base RTTs, faults and their ground truth ``Fault.touched``)
is the same in both modes. Sources, and where the numbers are extrapolated:

* [Pingmesh] Guo et al., *Pingmesh: A Large-Scale System for Data Center Network Latency
  Measurement and Analysis*, SIGCOMM 2015: typical intra-DC packet-drop rates of the order
  of 1e-4 to 1e-5, differing between data centres and between intra- and inter-rack paths;
  a latency distribution with a sub-millisecond median and a long tail (P99.9 and beyond
  in the milliseconds to tens of milliseconds; our reading of its CDFs, approximate).
* [Microbursts] Zhang et al., *High-Resolution Measurement of Data Center Microbursts*,
  IMC 2017: more than 70 % of bursts last at most tens of microseconds; coarser
  measurements see congestion events that are collections of such bursts.
* [Benson] Benson et al., *Network Traffic Characteristics of Data Centers in the Wild*,
  IMC 2010: ON/OFF traffic with heavy-tailed (lognormal/Weibull) periods; losses come
  mainly from momentary spikes, not sustained high utilisation.
* [Roy] Roy et al., *Inside the Social Network's (Datacenter) Network*, SIGCOMM 2015:
  stable aggregate demand with rapidly changing, internally bursty heavy hitters.
* [007] Arzani et al., *007: Democratically Finding the Cause of Packet Drops*, NSDI 2018,
  and [NetBouncer] Tan et al., NSDI 2019: per-connection retransmissions are the signal
  for lossy links; background drops on healthy paths are rare and uneven across
  connections (which is why they vote over many flows).

Per connection (flow) and interval:

* ``retrans_shape`` = 0.5: background retransmissions ~ gamma–Poisson (negative binomial)
  with the smooth mean and gamma shape k, i.e. variance = mean + mean²/k (0 = Poisson, as
  smooth). Drop rates that vary by an order of magnitude across paths and time [Pingmesh]
  and loss concentrated in spikes [Benson] give a coefficient of variation of the rate
  above 1: k = 0.5 (CV ≈ 1.4) is our choice, not a measured value. The default
  ``retrans_per_mb`` 0.05 is ≈ 7e-5 per segment: inside [Pingmesh]'s range.
* ``microburst_prob`` = 0.001, ``microburst_min`` = 20, ``microburst_alpha`` = 1.2,
  ``microburst_max`` = 1000, ``microburst_timeout_frac`` = 0.02: with that probability a
  connection adds, in that interval only, Pareto(min, alpha) retransmissions (capped; median
  ≈ 36, mean ≈ 65), of which 1 + Binomial(size - 1, timeout_frac) are timeouts. Bursts are
  far shorter than an interval [Microbursts], so at 30-s resolution one is a one-interval
  event on one connection [Roy]; the rate and size law are extrapolated: at these values
  bursts add ≈ 0.065 retransmissions per connection-interval, ≈ 2e-5 per segment at
  5 MB per interval, which keeps the total within [Pingmesh]'s drop rates.
* ``rtt_spike_prob`` = 0.002, ``rtt_spike_min`` = 3, ``rtt_spike_max`` = 50: with that
  probability one side of a flow sees all its RTT observations of the interval × a
  log-uniform factor in [min, max] — the P99.9-and-beyond tail over the median in
  [Pingmesh] (factors extrapolated from its CDFs).
* ``rtt_obs_max`` = 4, ``rtt_obs_jitter`` = 0.1: each flow contributes 1..rtt_obs_max
  (uniform) RTT observations (the agent reads tcpi_rtt several times per interval; a
  short flow is seen once), each = the flow's value × a mean-1 lognormal of sigma
  rtt_obs_jitter: correlated within the flow (an agent design assumption, not a measurement).

Per agent (fixed for the run):

* ``phase_s`` = 15: the agent's intervals start at its own second, ``phase`` uniform in
  [-phase_s, phase_s) around the fleet grid (agents start when their host boots).
* ``clock_offset_s`` = 2.0: clock offset uniform in ±clock_offset_s. ``start`` is the
  agent's own clock (an integer); the report leaves when that clock says the interval
  ended (pessimistic for NTP-synchronised hosts, which usually do far better: extrapolated).
* ``slow_agent_frac`` = 0.05: agents configured with ``interval_s: 60``: one report covers
  two simulated intervals (counters summed, ``flows`` the larger of the two, RTT lists
  concatenated).
* ``gap_agent_frac`` = 0.05, ``gap_intervals`` = 3: agents that miss that many consecutive
  intervals once (a restart): those reports are never sent.
* ``churn_frac`` = 0.05: agents that join late or leave early (half each, at a uniform time
  in the middle 80 % of the run): no reports outside their lifetime. Only the agent is
  absent; its host's peers still report their flows with it.

Per report (delivery; :meth:`Simulator.deliveries`):

* ``publish_jitter_s`` = 2.0: arrival = interval end on the agent's clock, in true time,
  + an exponential publish delay of that mean.
* ``late_frac`` = 0.02, ``late_min_s`` = 10, ``late_max_s`` = 60: that fraction arrives
  later by a uniform delay in [min, max] (a slow producer, a broker fail-over).
* ``duplicate_frac`` = 0.01, ``duplicate_delay_s`` = 30: that fraction is sent twice, the
  copy 1..duplicate_delay_s later; half of the copies are re-serialised with another key
  order (same content, different bytes), half are byte-identical.
* Every realistic report carries ``report_id`` = ``"<instance>:<start>"``; a re-sent copy
  carries the same one.

The fractions (late, duplicated, missing, churn, 60-s agents) are operational assumptions
for an at-least-once pipeline, not taken from the papers above.

Sizes use decimal units: ``MB`` = 1,000,000 bytes (``MiB`` = 2**20), so the reference's
"10 MB file" gives exactly 20 MB per 10-minute window on the 1a→1a monitor.

Examples
--------
>>> sim = Simulator('''
... region: r1
... vpcs:
...   - id: vpc-a
...     azs:
...       - id: az1
...         subnets: [{id: subnet-1a, cidr: 10.0.0.0/24, instances: 2}]
... ''', [{"kind": "transfer", "server": "subnet-1a/0", "clients": ["subnet-1a/1"],
...        "bytes": "10MB", "every": "10m", "offset": "1m"}], seed=1, start=1764000000)
>>> reports = list(sim.reports(600))
>>> [(r["instance"], r["start"], r["samples"][0]["bytes_sent"]) for r in reports]
[('subnet-1a/0', 1764000060, 10000000), ('subnet-1a/1', 1764000060, 400)]
>>> t = expected_totals(reports, 600, sim.topology)[("subnet-1a", "subnet-1a", 1764000000)]
>>> t["bytes_sent"] + t["bytes_received"], t["hosts"], t["flows"]
(20000800, 2, 2)
"""

from __future__ import annotations

import heapq
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from pipeline.ingest.topology import category, load_topology, read_yaml_source
from pipeline.sim.realism import parse_realism
from pipeline.sim.scenario import Scenario, load_scenario, parse_duration, parse_size
from pipeline.sim.totals import expected_totals
from pipeline.wire.contract import WIRE_VERSION

__all__ = ["DEFAULT_RTT_MS", "Fault", "Simulator"]

DEFAULT_RTT_MS: dict[str, float] = {"intra-az": 0.2, "inter-az": 1.0, "inter-vpc": 1.3, "external": 20.0}
"""Mean RTT by traffic category when a traffic entry gives no ``rtt_ms``."""

# ------------------------------------------------------------------------------------
# traffic entries
# ------------------------------------------------------------------------------------
_BG_KEYS = {"kind", "name", "from", "to", "clients_per_instance", "bytes_per_interval", "rtt_ms",
            "retrans_per_mb", "timeouts_per_retrans", "diurnal", "noise", "reverse_ratio", "flows",
            "rtt_jitter", "start", "duration"}
_TR_KEYS = {"kind", "name", "server", "clients", "bytes", "every", "offset", "request_bytes", "rtt_ms",
            "retrans_per_mb", "timeouts_per_retrans", "rtt_jitter", "start", "duration"}

_Rows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass
class _Entry:
    """A compiled traffic entry: data flows sender → receiver over fixed pairs."""

    kind: str
    snd: np.ndarray  # sender instance index per pair (× flows)
    rcv: np.ndarray  # receiver instance index
    rtt_snd: np.ndarray  # base RTT (µs) per pair as seen by each side
    rtt_rcv: np.ndarray
    size: float  # bytes per pair per interval (background) or per fetch (transfer)
    back: float  # reverse_ratio (background) or request bytes (transfer)
    retrans_per_mb: float
    timeouts_per_retrans: float
    rtt_jitter: float
    start: int
    end: int  # active for event times in [start, end) (offsets from simulation start)
    diurnal: float = 0.0
    noise: float = 0.0
    every: int = 0
    offset: int = 0


_FAULT_KEYS = {"kind", "target", "start", "duration", "magnitude", "cause", "ramp", "name", "description"}

#: Bytes per TCP segment the simulator assumes when turning loss into retransmissions.
MSS = 1448


def _parse_ms(value: Any) -> float:
    """Milliseconds from ``'25ms'``, ``'0.5s'`` or a number (ms)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|us|µs)?\s*", str(value))
    if not m:
        raise ValueError(f"not a delay: {value!r} (use e.g. 25ms)")
    return float(m.group(1)) * {"ms": 1.0, None: 1.0, "s": 1000.0, "us": 0.001, "µs": 0.001}[m.group(2)]


@dataclass
class Fault:
    """A compiled fault (ground truth for ``flowmon eval``). ``start``/``end``: offsets (s) from the simulation start."""

    name: str
    kind: str
    target_kind: str
    target: Any
    start: int
    end: int
    magnitude: float  # loss fraction, or ms
    ramp: int
    cause: str | None
    index: int
    touched: set[tuple[int, int]] = field(default_factory=set)  # (data sender, receiver) instance indexes affected


def _entry_kind(e: Any, where: str) -> str:
    """The entry's kind, after checking its fields are known and the required ones present."""
    if not isinstance(e, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(e).__name__}")
    kind = e.get("kind", "background")
    if kind not in ("background", "transfer"):
        raise ValueError(f"{where}.kind: unknown kind {kind!r} (background or transfer)")
    keys = _BG_KEYS if kind == "background" else _TR_KEYS
    unknown = sorted(set(map(str, e)) - keys)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown} for kind {kind}; allowed: {sorted(keys)}")
    for req in ("from", "to") if kind == "background" else ("server", "clients", "bytes", "every"):
        if e.get(req) is None:
            raise ValueError(f"{where}.{req}: missing required field")
    return kind


class _Fields:
    """A traffic entry's fields, converted and range-checked; errors name the field (``traffic[2].rtt_ms``)."""

    def __init__(self, entry: Mapping[str, Any], where: str, sim: Simulator) -> None:
        self.entry, self.where, self._sim = entry, where, sim

    def get(self, key: str, f: Any, default: Any, lo: float | None = 0.0, hi: float | None = None) -> Any:
        v = self.entry.get(key)
        if v is None:
            return default
        try:
            x = f(v)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{self.where}.{key}: {err}") from None
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            raise ValueError(f"{self.where}.{key}: {v!r} out of range [{lo}, {hi}]")
        return x

    def scope(self, key: str, v: Any = None) -> list[int]:
        """Instance indexes of the scope (instance, subnet, AZ or VPC id) named by ``key`` (or ``v``)."""
        v = self.entry[key] if v is None else v
        try:
            return [self._sim._index[m] for m in self._sim.topology.members(str(v))]
        except KeyError:
            raise ValueError(f"{self.where}.{key}: unknown scope {v!r} (not an instance, subnet, AZ or VPC id)") from None


class Simulator:
    """Seeded fleet simulator producing wire-v1 report dicts.

    ``topology``: anything :func:`load_topology` accepts. ``traffic``: a list of entries,
    or a scenario (path/YAML/dict) whose ``traffic:`` is used. ``start``: simulated Unix
    time of the first interval, a multiple of 3600; None = the latest hour boundary at
    least ``duration_s`` before now (fixed at the first :meth:`reports` call).
    ``interval_s`` must divide 3600.
    """

    def __init__(
        self,
        topology: Any,
        traffic: Sequence[Mapping[str, Any]] | str | Path | Mapping[str, Any],
        seed: int = 0,
        interval_s: int | str = 30,
        start: int | None = None,
        *,
        omit_remote_placement: float = 0.5,
        rtt_defaults_ms: Mapping[str, float] | None = None,
        faults: Sequence[Mapping[str, Any]] = (),
        realism: Any = None,
    ) -> None:
        self.realism, self.realism_label = parse_realism(realism)
        self.topology = load_topology(topology)
        if not isinstance(traffic, Sequence) or isinstance(traffic, str):
            data, label, _ = read_yaml_source(traffic, "traffic")
            traffic = data.get("traffic", []) if isinstance(data, Mapping) else data
            if not isinstance(traffic, list):
                raise ValueError(f"traffic {label}: expected a list of entries")
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        self.interval_s = parse_duration(interval_s)
        if not 1 <= self.interval_s <= 3600 or 3600 % self.interval_s:
            raise ValueError(f"interval_s must divide 3600, got {self.interval_s}")
        if start is not None and int(start) % 3600:
            raise ValueError(f"start must be a multiple of 3600 (an hour boundary), got {start}")
        self.start: int | None = None if start is None else int(start)
        if not 0.0 <= omit_remote_placement <= 1.0:
            raise ValueError("omit_remote_placement must be in [0, 1]")
        self.omit_remote_placement = float(omit_remote_placement)
        self.rtt_defaults_ms = {**DEFAULT_RTT_MS, **(rtt_defaults_ms or {})}
        self.traffic = [dict(e) for e in traffic]

        t = self.topology
        self._ids = list(t.instances)
        self._index = {iid: i for i, iid in enumerate(self._ids)}
        pl = list(t.instances.values())
        self._ips = [p.ip for p in pl]
        self._ip_index = {ip: i for i, ip in enumerate(self._ips)}
        self._rrng: np.random.Generator | None = None  # the current interval's realism generator
        self._local = [{"ip": p.ip, "subnet": p.subnet, "az": p.az, "vpc": p.vpc} for p in pl]
        self._az = [p.az for p in pl]
        self._vpc = [p.vpc for p in pl]
        self._subnet_of = np.array([p.subnet for p in pl], dtype=object)
        self._az_of = np.array(self._az, dtype=object)
        self._vpc_of = np.array(self._vpc, dtype=object)
        rng = np.random.default_rng([self.seed, 0])
        self._entries = [self._compile(e, i, rng) for i, e in enumerate(self.traffic)]
        self.faults = [self._compile_fault(f, i) for i, f in enumerate(faults)]
        self._masks: dict[tuple[int, int], np.ndarray] = {}

    @classmethod
    def from_scenario(cls, source: str | Path | Mapping[str, Any] | Scenario, *, realism: Any = None,
                      **overrides: Any) -> Simulator:
        """Build from a scenario file; keyword arguments override its seed/interval_s/start/…

        ``realism``: None = the scenario's own ``realism:`` (default smooth); else as :class:`Simulator`.
        """
        sc = source if isinstance(source, Scenario) else load_scenario(source)
        kw: dict[str, Any] = dict(seed=sc.seed, interval_s=sc.interval_s, omit_remote_placement=sc.omit_remote_placement,
                                  rtt_defaults_ms=sc.rtt_defaults_ms, faults=sc.faults,
                                  realism=sc.realism if realism is None else realism)
        kw.update(overrides)
        sim = cls(sc.topology, sc.traffic, **kw)
        sim.scenario = sc  # type: ignore[attr-defined]
        return sim

    # --- compilation ----------------------------------------------------------------
    @property
    def instance_ids(self) -> list[str]:
        """Instance ids in the simulator's own order (faults' ``touched`` pairs index into it)."""
        return list(self._ids)

    def _compile(self, e: Mapping[str, Any], i: int, rng: np.random.Generator) -> _Entry:
        """One ``traffic:`` entry -> its sender/receiver arrays and parameters (errors name the field)."""
        where = f"traffic[{i}]"
        kind = _entry_kind(e, where)
        fx = _Fields(e, where, self)
        start = fx.get("start", parse_duration, 0)
        dur = fx.get("duration", parse_duration, None)
        end = 2**62 if dur is None else start + dur
        rtt_ms = fx.get("rtt_ms", float, None, 1e-3)
        jitter = fx.get("rtt_jitter", float, 0.25)
        tpr = fx.get("timeouts_per_retrans", float, 0.02, 0.0, 1.0)
        if kind == "background":
            snd, rcv, size, back, rpm = self._background_pairs(fx, rng)
        else:
            snd, rcv, size, back, rpm = self._transfer_pairs(fx)
        base = np.array(
            [rtt_ms if rtt_ms is not None else
             self.rtt_defaults_ms[category(self._az[a], self._vpc[a], self._az[b], self._vpc[b])]
             for a, b in zip(snd.tolist(), rcv.tolist())], dtype=np.float64,
        ) * 1000.0
        path = np.exp(rng.normal(0.0, 0.1, size=len(snd)))  # fixed per-pair path factor
        entry = _Entry(kind, snd, rcv, base * path, base * path, size, back, rpm, tpr, jitter, start, end)
        if kind == "background":
            entry.diurnal = fx.get("diurnal", float, 0.3, 0.0, 1.0)
            entry.noise = fx.get("noise", float, 0.2)
        else:
            entry.every = fx.get("every", parse_duration, None, 1)
            entry.offset = fx.get("offset", parse_duration, 0)
        return entry

    def _background_pairs(self, fx: _Fields, rng: np.random.Generator
                          ) -> tuple[np.ndarray, np.ndarray, float, float, float]:
        """Each ``from`` instance picks ``clients_per_instance`` peers in ``to`` (seeded; never itself)."""
        src, dst = fx.scope("from"), fx.scope("to")
        k = fx.get("clients_per_instance", int, 3, 1)
        flows = fx.get("flows", int, 1, 1)
        snd_l: list[int] = []
        rcv_l: list[int] = []
        dst_arr = np.asarray(dst, dtype=np.int64)
        for s in src:
            cand = dst_arr[dst_arr != s]
            if len(cand) == 0:
                continue
            pick = cand[np.sort(rng.choice(len(cand), size=min(k, len(cand)), replace=False))]
            snd_l.extend([s] * len(pick))
            rcv_l.extend(pick.tolist())
        snd = np.repeat(np.asarray(snd_l, dtype=np.int64), flows)
        rcv = np.repeat(np.asarray(rcv_l, dtype=np.int64), flows)
        size = fx.get("bytes_per_interval", parse_size, 5_000_000) / flows
        return snd, rcv, size, fx.get("reverse_ratio", float, 0.01), fx.get("retrans_per_mb", float, 0.05)

    def _transfer_pairs(self, fx: _Fields) -> tuple[np.ndarray, np.ndarray, float, float, float]:
        """One server sends ``bytes`` to every client (the client sends ``request_bytes``)."""
        e = fx.entry
        srv = fx.scope("server")
        if len(srv) != 1:
            raise ValueError(f"{fx.where}.server: must name one instance, {e['server']!r} has {len(srv)}")
        clients_v = e["clients"] if isinstance(e["clients"], list) else [e["clients"]]
        cl = [c for j, v in enumerate(clients_v) for c in fx.scope(f"clients[{j}]", v) if c != srv[0]]
        snd = np.full(len(cl), srv[0], dtype=np.int64)
        rcv = np.asarray(cl, dtype=np.int64)
        size = float(fx.get("bytes", parse_size, None))
        back = float(fx.get("request_bytes", parse_size, 400))
        return snd, rcv, size, back, fx.get("retrans_per_mb", float, 0.003)

    def _compile_fault(self, f: Mapping[str, Any], i: int) -> Fault:
        where = f"faults[{i}]"
        if not isinstance(f, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(f).__name__}")
        unknown = sorted(set(map(str, f)) - _FAULT_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(_FAULT_KEYS)}")
        kind = f.get("kind")
        if kind not in ("loss", "delay", "stall"):
            raise ValueError(f"{where}.kind: {kind!r}: one of loss, delay, stall")
        target = f.get("target")
        if not isinstance(target, Mapping) or len(target) != 1:
            raise ValueError(f"{where}.target: one of {{instance|subnet|az|az_pair|vpc: ...}}")
        (tkind, tval), = target.items()
        t = self.topology
        if tkind == "az_pair":
            if not isinstance(tval, list) or len(tval) != 2 or any(a not in t.azs for a in tval):
                raise ValueError(f"{where}.target.az_pair: two known AZ ids, got {tval!r}")
            tval = [str(a) for a in tval]
        elif tkind in ("instance", "subnet", "az", "vpc"):
            known = {"instance": t.instances, "subnet": t.subnets, "az": t.azs, "vpc": t.vpcs}[tkind]
            if str(tval) not in known:
                raise ValueError(f"{where}.target.{tkind}: unknown {tkind} {tval!r}")
            tval = str(tval)
        else:
            raise ValueError(f"{where}.target: unknown target kind {tkind!r} (instance, subnet, az, az_pair, vpc)")
        try:
            start = parse_duration(f.get("start", 0))
            dur = parse_duration(f["duration"]) if f.get("duration") is not None else None
            ramp = parse_duration(f.get("ramp", 0))
            if kind == "loss":
                mag = float(f["magnitude"])
                if not 0.0 < mag <= 1.0:
                    raise ValueError(f"loss magnitude must be a fraction in (0, 1], got {mag}")
            else:
                raw = f.get("magnitude", "200ms" if kind == "stall" else None)
                if raw is None:
                    raise ValueError("magnitude: missing (e.g. 25ms)")
                mag = _parse_ms(raw)
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"{where}: {e}") from None
        cause = f.get("cause")
        if cause not in ("infrastructure", "workload", "undetermined", None):
            raise ValueError(f"{where}.cause: infrastructure, workload or undetermined, got {cause!r}")
        name = str(f.get("name") or f"{kind}-{tkind}-{i}")
        return Fault(name, kind, tkind, tval, start, 2**62 if dur is None else start + dur, mag, ramp, cause, i)

    def _mask(self, e_i: int, e: _Entry, f: Fault) -> np.ndarray:
        """Which pairs of entry ``e`` the fault touches (cached)."""
        m = self._masks.get((e_i, f.index))
        if m is None:
            a, b = e.snd, e.rcv
            if f.target_kind == "instance":
                x = self._index[f.target]
                m = (a == x) | (b == x)
            elif f.target_kind == "az_pair":
                za, zb = self._az_of[a], self._az_of[b]
                p, q = f.target
                m = ((za == p) & (zb == q)) | ((za == q) & (zb == p))
            else:
                of = {"subnet": self._subnet_of, "az": self._az_of, "vpc": self._vpc_of}[f.target_kind]
                m = (of[a] == f.target) | (of[b] == f.target)
            m = self._masks[(e_i, f.index)] = np.asarray(m, dtype=bool)
        return m

    # --- generation -----------------------------------------------------------------
    def _rows(self, e: _Entry, k: int, t0: int, rng: np.random.Generator, e_i: int = -1) -> _Rows | None:
        """Rows (reporter, remote, sent, received, retrans, timeouts, rtt) of one entry, one interval."""
        rel = k * self.interval_s  # interval start, relative to the simulation start
        n = len(e.snd)
        if n == 0:
            return None
        if e.kind == "background":
            if not e.start <= rel < e.end:
                return None
            tod = (t0 + self.interval_s / 2) % 86400
            level = e.size * (1.0 + e.diurnal * math.sin(2 * math.pi * (tod - 21600) / 86400))
            sig = e.noise
            data = np.rint(level * np.exp(rng.normal(-sig * sig / 2, sig, size=n))).astype(np.int64)
            back = np.rint(data * e.back).astype(np.int64)
            snd, rcv, fetches = e.snd, e.rcv, 1
        else:
            # fetch times offset + j*every that start in this interval and in [start, end)
            lo, hi = max(rel, e.start), min(rel + self.interval_s, e.end)
            j0 = max(0, -(-(lo - e.offset) // e.every))
            fetches = 0 if hi <= lo else max(0, -(-(hi - e.offset) // e.every) - j0)
            if fetches == 0:
                return None
            snd, rcv = np.repeat(e.snd, fetches), np.repeat(e.rcv, fetches)
            n *= fetches
            data = np.full(n, int(e.size), dtype=np.int64)
            back = np.full(n, int(e.back), dtype=np.int64)
        retr = rng.poisson(e.retrans_per_mb * data / 1e6)
        tmo = rng.binomial(retr, e.timeouts_per_retrans) if e.timeouts_per_retrans > 0 else np.zeros(n, np.int64)
        if self.realism is not None:  # own generator: the smooth draws above stay as they are
            retr, tmo = self._realistic_retrans(e, data, retr, tmo)
        j = e.rtt_jitter
        bs = np.repeat(e.rtt_snd, fetches) if fetches > 1 else e.rtt_snd
        br = np.repeat(e.rtt_rcv, fetches) if fetches > 1 else e.rtt_rcv
        rtt_s = bs * np.exp(rng.normal(-j * j / 2, j, size=n))
        rtt_r = br * np.exp(rng.normal(-j * j / 2, j, size=n))
        zero = np.zeros(n, dtype=np.int64)
        active = [f for f in self.faults if f.start <= rel < f.end]
        if active:
            frng = np.random.default_rng([self.seed, 2, k, e_i])
            for f in active:
                m = self._mask(e_i, e, f)
                if fetches > 1:
                    m = np.repeat(m, fetches)
                if not m.any():
                    continue
                level = f.magnitude * (min(1.0, (rel - f.start + self.interval_s) / f.ramp) if f.ramp else 1.0)
                idx = np.flatnonzero(m)
                f.touched.update(zip(snd[idx].tolist(), rcv[idx].tolist()))
                if f.kind == "loss":
                    extra = frng.poisson(level * data[idx] / MSS)
                    retr = retr.copy()
                    tmo = tmo.copy()
                    retr[idx] += extra
                    tmo[idx] += frng.binomial(extra, 0.03)
                else:
                    rtt_s = rtt_s.copy()
                    rtt_r = rtt_r.copy()
                    rtt_s[idx] += level * 1000.0
                    rtt_r[idx] += level * 1000.0
                    if f.kind == "stall":
                        stalls = frng.poisson(1.0, size=len(idx))
                        tmo = tmo.copy()
                        retr = retr.copy()
                        tmo[idx] += stalls
                        retr[idx] += stalls
        cat = np.concatenate
        return (cat([snd, rcv]), cat([rcv, snd]), cat([data, back]), cat([back, data]),
                cat([retr, zero]), cat([tmo, zero]), cat([rtt_s, rtt_r]))

    def _realistic_retrans(self, e: _Entry, data: np.ndarray, retr: np.ndarray,
                           tmo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gamma–Poisson background retransmissions (same mean) plus rare microbursts, per connection."""
        R, rr = self.realism, self._rrng
        assert R is not None and rr is not None
        n = len(data)
        if R.retrans_shape > 0:
            mean = e.retrans_per_mb * data / 1e6
            retr = rr.poisson(rr.gamma(R.retrans_shape, 1.0, size=n) * (mean / R.retrans_shape))
            tmo = (rr.binomial(retr, e.timeouts_per_retrans) if e.timeouts_per_retrans > 0
                   else np.zeros(n, np.int64))
        hit = np.flatnonzero(rr.random(n) < R.microburst_prob)
        if len(hit):
            # Pareto(microburst_min, microburst_alpha) segments, capped; a few of them timeouts (at least one)
            size = np.minimum(R.microburst_max, np.floor(
                R.microburst_min * (1.0 - rr.random(len(hit))) ** (-1.0 / R.microburst_alpha))).astype(np.int64)
            retr = retr.copy()
            tmo = tmo.copy()
            retr[hit] += size
            tmo[hit] += 1 + rr.binomial(size - 1, R.microburst_timeout_frac)
        return retr, tmo

    def _resolve_start(self, duration_s: int) -> int:
        """Without a given start: on the hour, so that the run ends 10 to 70 minutes before now. Ending a little in
        the past matters: the last windows of a finished stream close by the wall clock (less
        ``source_idle_lag_s``, after ``allowed_lateness_s``), so a run ending *now* waited up to 4 minutes for them
        (a test starting in the first minutes of an hour timed out)."""
        if self.start is None:
            self.start = int((time.time() - duration_s - 600) // 3600 * 3600)
        return self.start

    def reports(self, duration_s: int | str) -> Iterator[dict[str, Any]]:
        """Reports for every interval starting in [start, start + duration_s), in event-time order.

        Within an interval reports are ordered by instance (topology order), samples by
        remote instance. Each interval draws from its own generator seeded by
        ``(seed, interval index)``, so a prefix of a longer run equals a shorter run.

        With realism (not smooth): the reports the agents sent, each once (duplicates and
        missing reports aside), in arrival order: :meth:`deliveries` without the re-sends.
        """
        if self.realism is not None:
            for _, r, dup in self._realistic(duration_s):
                if not dup:
                    yield r
            return
        dur = parse_duration(duration_s)
        start = self._resolve_start(dur)
        n_iv = -(-dur // self.interval_s)
        for k in range(n_iv):
            yield from self._interval(k, start + k * self.interval_s)

    def deliveries(self, duration_s: int | str) -> Iterator[tuple[float, dict[str, Any]]]:
        """``(arrival time, report)`` in arrival order, as one reports partition would carry them.

        Smooth: :meth:`reports` in their order, each arriving at ``start + interval_s``.
        Realistic: every report the agents sent, re-sent duplicates included (after their
        original), missing reports excluded; arrival = the end of the agent's interval on its
        own clock, corrected to true time, + publish jitter (+ a delay for late ones).
        """
        if self.realism is None:
            for r in self.reports(duration_s):
                yield float(r["start"] + r["interval_s"]), r
            return
        for t, r, _ in self._realistic(duration_s):
            yield t, r

    def _realistic(self, duration_s: int | str) -> Iterator[tuple[float, dict[str, Any], bool]]:
        """(arrival, report, is_duplicate) in arrival order: agents' phase, clocks, 60-s agents, delivery."""
        R = self.realism
        assert R is not None
        dur = parse_duration(duration_s)
        start = self._resolve_start(dur)
        iv = self.interval_s
        n_iv = -(-dur // iv)
        n = len(self._ids)
        # per-agent properties: one generator, a fixed number of draws per agent
        arng = np.random.default_rng([self.seed, 4])
        phase = arng.integers(-R.phase_s, R.phase_s, size=n) if R.phase_s else np.zeros(n, np.int64)
        offset = arng.uniform(-R.clock_offset_s, R.clock_offset_s, size=n)
        slow = arng.random(n) < R.slow_agent_frac
        gap = arng.random(n) < R.gap_agent_frac
        gap_at = arng.integers(0, max(1, n_iv), size=n)
        churn = arng.random(n) < R.churn_frac
        joins = arng.random(n) < 0.5
        when = start + arng.uniform(0.1, 0.9, size=n) * dur
        life_lo = np.where(churn & joins, when, -np.inf)
        life_hi = np.where(churn & ~joins, when, np.inf)
        ids, local = self._ids, self._local
        off_max = R.clock_offset_s
        heap: list[tuple[float, int, dict[str, Any], bool]] = []
        seq = 0

        def emit(i: int, k_first: int, samples: list[dict[str, Any]], rep_iv: int,
                 drng: np.random.Generator) -> None:
            nonlocal seq
            u = drng.random(5)
            jitter = drng.exponential(R.publish_jitter_s) if R.publish_jitter_s > 0 else 0.0
            late = R.late_min_s + (R.late_max_s - R.late_min_s) * u[1]
            dup_delay = 1.0 + (R.duplicate_delay_s - 1.0) * u[3]
            s = int(start + k_first * iv + phase[i])
            if not life_lo[i] <= s < life_hi[i]:
                return  # the agent is not running
            if gap[i] and gap_at[i] <= k_first < gap_at[i] + R.gap_intervals:
                return  # never sent (agent restart, lost)
            r = {"version": WIRE_VERSION, "instance": ids[i], "local": dict(local[i]), "start": s, "interval_s": rep_iv,
                 "report_id": f"{ids[i]}:{s}", "samples": samples}
            t = s + rep_iv - float(offset[i]) + jitter + (late if u[0] < R.late_frac else 0.0)
            heapq.heappush(heap, (t, seq, r, False))
            seq += 1
            if u[2] < R.duplicate_frac:
                if u[4] < 0.5:  # the same bytes again
                    d = orjson.loads(orjson.dumps(r))
                else:  # the same content, re-serialised with another key order
                    d = {k: v for k, v in reversed(list(r.items()))}
                    d["samples"] = [{k: v for k, v in reversed(list(x.items()))} for x in r["samples"]]
                    d["local"] = dict(reversed(list(r["local"].items())))
                heapq.heappush(heap, (t + dup_delay, seq, d, True))
                seq += 1

        hold: dict[int, dict[str, Any]] = {}  # 60-s agents: the first half of their current report
        for k in range(n_iv):
            drng = np.random.default_rng([self.seed, 6, k])
            cur = {self._index[r["instance"]]: r for r in self._interval(k, start + k * iv)}
            for i in sorted(cur.keys() | (hold.keys() if k % 2 else set())):
                if not slow[i]:
                    emit(i, k, cur[i]["samples"], iv, drng)
                elif k % 2 == 0:
                    hold[i] = cur[i]
                else:
                    a, b = hold.pop(i, None), cur.get(i)
                    emit(i, k - 1, self._merge([x["samples"] for x in (a, b) if x is not None]), 2 * iv, drng)
            bound = start + (k + 2) * iv - R.phase_s - off_max - 1
            while heap and heap[0][0] < bound:
                t, _, r, dup = heapq.heappop(heap)
                yield t, r, dup
        drng = np.random.default_rng([self.seed, 6, n_iv])
        for i in sorted(hold):
            emit(i, n_iv - 1, hold[i]["samples"], 2 * iv, drng)
        while heap:
            t, _, r, dup = heapq.heappop(heap)
            yield t, r, dup

    def _merge(self, halves: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Samples of two consecutive intervals as one 60-s report: counters summed, RTT lists concatenated."""
        if len(halves) == 1:
            return halves[0]
        by: dict[str, dict[str, Any]] = {}
        for samples in halves:
            for x in samples:
                ip = x["remote"]["ip"]
                m = by.get(ip)
                if m is None:
                    by[ip] = dict(x, rtt_us=list(x["rtt_us"]))
                    continue
                for f in ("bytes_sent", "bytes_received", "retransmissions", "timeouts"):
                    m[f] += x[f]
                m["flows"] = max(m["flows"], x["flows"])  # long-lived connections: the same ones in both halves
                m["rtt_us"].extend(x["rtt_us"])
        return [by[ip] for ip in sorted(by, key=self._ip_index.__getitem__)]

    def _interval(self, k: int, t0: int) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng([self.seed, 1, k])
        R = self.realism
        if R is not None:
            self._rrng = np.random.default_rng([self.seed, 3, k])
        parts = [r for i, e in enumerate(self._entries) if (r := self._rows(e, k, t0, rng, i)) is not None]
        if not parts:
            return
        rep, rem, sent, recv, retr, tmo, rtt = (np.concatenate(c) for c in zip(*parts))
        nobs = None
        if R is not None:
            rr = self._rrng
            assert rr is not None
            m = len(rtt)
            spike = np.flatnonzero(rr.random(m) < R.rtt_spike_prob)
            if len(spike):  # one flow's RTT observations × a large factor (log-uniform) for this interval
                rtt = rtt.copy()
                rtt[spike] *= np.exp(rr.uniform(math.log(R.rtt_spike_min), math.log(R.rtt_spike_max), size=len(spike)))
            nobs = rr.integers(1, R.rtt_obs_max + 1, size=m)
        n_inst = len(self._ids)
        key = rep * n_inst + rem
        order = np.argsort(key, kind="stable")
        key = key[order]
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        g_rep = (key[first] // n_inst).tolist()
        g_rem = (key[first] % n_inst).tolist()
        add = np.add.reduceat
        g_sent = add(sent[order], first).tolist()
        g_recv = add(recv[order], first).tolist()
        g_retr = add(retr[order], first).tolist()
        g_tmo = add(tmo[order], first).tolist()
        bounds = np.r_[first, len(key)].tolist()
        rb = bounds  # RTT observations of group g: rtt_l[rb[g]:rb[g + 1]]
        if nobs is None:
            rtt_l = np.maximum(np.rint(rtt[order]), 1).astype(np.int64).tolist()
        else:  # 1..rtt_obs_max polls of each flow's tcpi_rtt: the flow's value × a small per-poll jitter
            cnt = nobs[order]
            j = R.rtt_obs_jitter
            obs = np.repeat(rtt[order], cnt) * np.exp(self._rrng.normal(-j * j / 2, j, size=int(cnt.sum())))
            rtt_l = np.clip(np.rint(obs), 1, 60_000_000).astype(np.int64).tolist()
            rb = np.r_[0, np.cumsum(cnt)][bounds].tolist()
        keep = (rng.random(len(first)) >= self.omit_remote_placement).tolist()

        ids, ips, local, interval = self._ids, self._ips, self._local, self.interval_s
        cur = -1
        samples: list[dict[str, Any]] = []
        for g in range(len(first)):
            r = g_rep[g]
            if r != cur:
                if cur >= 0:
                    yield {"version": WIRE_VERSION, "instance": ids[cur], "local": dict(local[cur]), "start": t0,
                           "interval_s": interval, "samples": samples}
                cur, samples = r, []
            m = g_rem[g]
            a, b = bounds[g], bounds[g + 1]
            samples.append({
                "remote": dict(local[m]) if keep[g] else {"ip": ips[m]},
                "bytes_sent": g_sent[g],
                "bytes_received": g_recv[g],
                "retransmissions": g_retr[g],
                "timeouts": g_tmo[g],
                "flows": b - a,
                "rtt_us": rtt_l[rb[g]:rb[g + 1]],
            })
        yield {"version": WIRE_VERSION, "instance": ids[cur], "local": dict(local[cur]), "start": t0,
               "interval_s": interval, "samples": samples}

    def expected_totals(self, reports: Iterable[Mapping[str, Any]], window_s: int) -> dict[tuple[str, str, int], dict[str, int]]:
        """:func:`expected_totals` with this simulator's topology."""
        return expected_totals(reports, window_s, self.topology)
