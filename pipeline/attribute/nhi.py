"""Network Health Indicator: healthy / degraded status over time per AZ, AZ pair and subnet.

Pure, no Kafka. Driven **only** by ``infrastructure`` verdicts of ``attribute.Attributor``:
a workload or undetermined verdict never changes it. An element blamed at interval ``t``
marks degraded the scopes it affects:

* ``subnet`` N → subnet N and its AZ;
* ``az_pair`` {A, B} → the AZ pair and both AZs ({A, A}: the pair A|A and AZ A);
* ``az`` A → AZ A; ``vpc`` V → VPC V.

A degraded scope turns healthy again after ``recover_after`` intervals (default 4) with no
infrastructure verdict on it. Every change is a ``wire.events.NhiPeriod`` (``flow_nhi.v1``:
``scope_kind``, ``scope``, ``status``, ``start``, ``end``, ``element``, ``updated``): a degraded
period is emitted when it starts (``end`` None) and again when it ends, with the same
``(scope_kind, scope, start)`` (the ClickHouse table keeps the latest).

Examples
--------
>>> n = NetworkHealth(interval_s=30, subnet_az={"s1": "az1"})
>>> [(r.scope_kind, r.scope, r.end) for r in n.update(600, [("subnet", "s1")])]
[('az', 'az1', None), ('subnet', 's1', None)]
>>> n.update(630, [("subnet", "s1")])
[]
>>> [(r.scope, r.start, r.end) for r in n.update(780, [])]
[('az1', 600, 660), ('s1', 600, 660)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.wire.events import NhiPeriod

__all__ = ["NetworkHealth", "scopes_of"]


def scopes_of(element: tuple[str, str], subnet_az: Mapping[str, str]) -> list[tuple[str, str]]:
    """NHI scopes an infrastructure element affects.

    >>> scopes_of(("az_pair", "az1|az2"), {})
    [('az', 'az1'), ('az', 'az2'), ('az_pair', 'az1|az2')]
    """
    kind, ident = element
    if kind == "subnet":
        az = subnet_az.get(ident)
        return sorted({("subnet", ident)} | ({("az", az)} if az else set()))
    if kind == "az_pair":
        return sorted({("az_pair", ident)} | {("az", a) for a in ident.split("|")})
    return [(kind, ident)]


class NetworkHealth:
    """Degraded periods per scope, from the infrastructure elements blamed each interval."""

    def __init__(self, interval_s: int = 30, recover_after: int = 4, subnet_az: Mapping[str, str] | None = None):
        self.interval_s = interval_s
        self.recover_after = recover_after
        self.subnet_az = dict(subnet_az or {})
        self.degraded: dict[tuple[str, str], dict[str, Any]] = {}  # scope -> {start, last, element}

    def update(self, t: int, blamed: Iterable[tuple[str, str]], subnet_az: Mapping[str, str] | None = None,
               now: float = 0.0) -> list[NhiPeriod]:
        """Interval ``t`` is attributed; ``blamed``: infrastructure elements blamed in it."""
        if subnet_az:
            self.subnet_az.update(subnet_az)
        out: list[NhiPeriod] = []
        hit: dict[tuple[str, str], str] = {}
        for el in sorted(set(blamed)):
            for sc in scopes_of(el, self.subnet_az):
                hit.setdefault(sc, f"{el[0]}:{el[1]}")
        for sc, el in sorted(hit.items()):
            d = self.degraded.get(sc)
            if d is None:
                d = self.degraded[sc] = {"start": t, "last": t, "element": el}
                out.append(self._record(sc, d, None, now))
            else:
                d["last"] = max(d["last"], t)
        for sc in sorted(self.degraded):
            d = self.degraded[sc]
            if sc not in hit and t - d["last"] >= self.recover_after * self.interval_s:
                out.append(self._record(sc, d, d["last"] + self.interval_s, now))
                del self.degraded[sc]
        return out

    def close_all(self, now: float = 0.0) -> list[NhiPeriod]:
        """End every open degraded period at its last degraded interval (end of a finite run)."""
        out = [self._record(sc, d, d["last"] + self.interval_s, now) for sc, d in sorted(self.degraded.items())]
        self.degraded.clear()
        return out

    @staticmethod
    def _record(sc: tuple[str, str], d: Mapping[str, Any], end: int | None, now: float) -> NhiPeriod:
        return NhiPeriod(sc[0], sc[1], d["start"], end, d["element"], now)

    def state(self) -> dict[str, Any]:
        return {"degraded": [[k, s, d] for (k, s), d in self.degraded.items()], "subnet_az": self.subnet_az}

    def load(self, s: Mapping[str, Any]) -> None:
        self.degraded = {(k, sc): dict(d) for k, sc, d in s["degraded"]}
        self.subnet_az = dict(s["subnet_az"])
