"""An interval's connection deltas turned into wire reports (``flow_report.v1``): one sample per
remote endpoint, the top ``top_k`` by volume, the rest rolled up per remote subnet.

Pure. The rules:

* A sample sums the connections to one remote IP that were *active* in the interval
  (moved data or retransmitted): ``flows`` is their number, ``rtt_us`` one smoothed RTT
  per flow and poll (the kernel's ``tcpi_rtt`` when it last read it, or at its close).
* The ``top_k`` remotes by bytes (sent + received) keep their own sample; every other
  remote is summed into one sample per remote *subnet* (its ``ip`` is one address of
  that subnet, as the wire schema allows), so that the bytes of every subnet pair stay
  exact however many remotes a host talks to. Remotes outside the topology are one
  rolled-up ``external`` sample (their placement left empty: the pipeline places them).
* The samples are split into as many messages as keep each under ``max_bytes``; each
  message has its own ``report_id`` (``<agent id>-<seq>.<part>``), the same on every
  re-send, so the pipeline counts a re-sent report once.

>>> from pipeline.agent.ledger import Delta
>>> me = Identity("subnet-1c/0", "10.0.1.4", "subnet-1c", "az-1c", "vpc-a")
>>> deltas = [Delta("10.0.0.4", 80, "10.0.1.4", 5000, bytes_sent=100, bytes_received=10_000_000, rtt_us=[900]),
...           Delta("10.0.0.4", 80, "10.0.1.4", 5001, bytes_sent=100, bytes_received=5_000_000, retrans=1,
...                 rtt_us=[1100]),
...           Delta("10.0.0.5", 22, "10.0.1.4", 5002, bytes_sent=50, bytes_received=60)]
>>> [r] = build_reports(me, per_remote(deltas), start=1764000000, interval_s=30, report_id="a1-7", top_k=1)
>>> [(s["remote"]["ip"], s["flows"], s["bytes_received"], s["retransmissions"], s["rtt_us"]) for s in r["samples"]]
[('10.0.0.4', 2, 15000000, 1, [900, 1100]), ('10.0.0.5', 1, 60, 0, [])]
>>> r["report_id"], r["local"]["subnet"], r["start"]
('a1-7.0', 'subnet-1c', 1764000000)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from pipeline.agent.ledger import Delta
from pipeline.wire.contract import WIRE_VERSION

__all__ = ["Identity", "RemoteTotals", "per_remote", "build_reports", "MAX_RTT_PER_SAMPLE"]

#: the wire schema's bound on ``rtt_us`` items per sample (evenly thinned beyond it)
MAX_RTT_PER_SAMPLE = 10_000


class Identity(NamedTuple):
    """The reporting host: instance id and placement."""

    instance: str
    ip: str
    subnet: str | None = None
    az: str | None = None
    vpc: str | None = None

    def endpoint(self) -> dict[str, Any]:
        return _endpoint(self.ip, self.subnet, self.az, self.vpc)


def _endpoint(ip: str, subnet: str | None, az: str | None, vpc: str | None) -> dict[str, Any]:
    ep: dict[str, Any] = {"ip": ip}
    if subnet is not None:
        ep.update(subnet=subnet, az=az, vpc=vpc)
    return ep


@dataclass(slots=True)
class RemoteTotals:
    """The active connections to one remote IP over an interval, summed."""

    ip: str
    flows: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    retrans: int = 0
    timeouts: int = 0
    segs_out: int = 0
    rtt_us: list[int] = field(default_factory=list)
    rttvar_us: list[int] = field(default_factory=list)

    @property
    def volume(self) -> int:
        return self.bytes_sent + self.bytes_received

    def add(self, d: Delta | RemoteTotals) -> None:
        self.flows += 1 if isinstance(d, Delta) else d.flows
        self.bytes_sent += d.bytes_sent
        self.bytes_received += d.bytes_received
        self.retrans += d.retrans
        self.timeouts += d.timeouts
        self.segs_out += d.segs_out
        self.rtt_us.extend(d.rtt_us)
        if isinstance(d, Delta):
            if d.rttvar_us:
                self.rttvar_us.append(d.rttvar_us)
        else:
            self.rttvar_us.extend(d.rttvar_us)


def per_remote(deltas: Iterable[Delta]) -> dict[str, RemoteTotals]:
    """The deltas of active connections, summed per remote IP."""
    out: dict[str, RemoteTotals] = {}
    for d in deltas:
        if not d.active:
            continue
        t = out.get(d.remote)
        if t is None:
            t = out[d.remote] = RemoteTotals(d.remote)
        t.add(d)
    return out


class Place(NamedTuple):
    subnet: str | None
    az: str | None
    vpc: str | None


def _thin(values: list[int], limit: int) -> list[int]:
    if len(values) <= limit:
        return values
    step = len(values) / limit
    return [values[int(i * step)] for i in range(limit)]


def _sample(t: RemoteTotals, place: Place) -> dict[str, Any]:
    return {
        "remote": _endpoint(t.ip, *place),
        "bytes_sent": t.bytes_sent,
        "bytes_received": t.bytes_received,
        "retransmissions": t.retrans,
        "timeouts": t.timeouts,
        "flows": max(1, t.flows),
        "rtt_us": _thin(t.rtt_us, MAX_RTT_PER_SAMPLE),
    }


def samples(totals: dict[str, RemoteTotals], locate: Callable[[str], Place] | None = None,
            top_k: int = 100) -> list[dict[str, Any]]:
    """Wire samples: the ``top_k`` remotes by volume, then one rolled-up sample per remote subnet."""
    where = locate or (lambda ip: Place(None, None, None))
    ranked = sorted(totals.values(), key=lambda t: (-t.volume, t.ip))
    out = [_sample(t, where(t.ip)) for t in ranked[:top_k]]
    rolled: dict[Place, RemoteTotals] = {}
    for t in ranked[top_k:]:
        place = where(t.ip)
        r = rolled.get(place)
        if r is None:
            r = rolled[place] = RemoteTotals(t.ip)  # the subnet's representative: its biggest remote
        r.add(t)
    out.extend(_sample(r, place) for place, r in rolled.items())
    return out


def build_reports(me: Identity, totals: dict[str, RemoteTotals], *, start: int, interval_s: int, report_id: str,
                  locate: Callable[[str], Place] | None = None, top_k: int = 100,
                  max_bytes: int = 900_000) -> list[dict[str, Any]]:
    """The interval's report(s): none when no connection was active, several when one would be
    larger than ``max_bytes`` encoded."""
    body = samples(totals, locate, top_k)
    if not body:
        return []
    header = {"version": WIRE_VERSION, "instance": me.instance, "local": me.endpoint(),
              "start": int(start), "interval_s": max(1, int(interval_s))}
    parts = _split(header, body, max_bytes)
    return [{**header, "report_id": f"{report_id}.{i}", "samples": part} for i, part in enumerate(parts)]


def _split(header: dict[str, Any], body: list[dict[str, Any]], max_bytes: int) -> list[list[dict[str, Any]]]:
    if len(body) <= 1 or len(orjson.dumps({**header, "samples": body})) <= max_bytes - 64:
        return [body]
    mid = len(body) // 2
    return _split(header, body[:mid], max_bytes) + _split(header, body[mid:], max_bytes)
