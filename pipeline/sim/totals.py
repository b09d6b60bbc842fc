"""The test oracle: exact totals per (reporter subnet, remote subnet, window) straight from the reports."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.ingest.topology import Topology

__all__ = ["TOTAL_FIELDS", "TotalsAccumulator", "expected_totals"]

# ------------------------------------------------------------------------------------
# test oracle
# ------------------------------------------------------------------------------------
def expected_totals(
    reports: Iterable[Mapping[str, Any]], window_s: int, topology: Topology | None = None
) -> dict[tuple[str, str, int], dict[str, int]]:
    """Exact totals per (reporter subnet, remote subnet, window start) — the test oracle.

    Straight sums over the report dicts (report or flat form): a sample belongs to the
    window containing its report's ``start``; a missing subnet is resolved with
    ``topology.locate`` (``external`` without a topology). Values: ``bytes_sent``,
    ``bytes_received``, ``retransmissions``, ``timeouts``, ``flows``, ``samples``,
    ``hosts`` (distinct reporting instances), plus ``rtt_count`` and ``rtt_sum_us``
    (window mean RTT = rtt_sum_us / rtt_count).
    """
    acc = TotalsAccumulator(window_s, topology)
    for r in reports:
        acc.add(r)
    return acc.result()


TOTAL_FIELDS = ("bytes_sent", "bytes_received", "retransmissions", "timeouts", "flows", "samples",
                 "hosts", "rtt_count", "rtt_sum_us")


class TotalsAccumulator:
    """:func:`expected_totals`, one report at a time (``add``), for long streams; ``result()`` at any point."""

    def __init__(self, window_s: int, topology: Topology | None = None) -> None:
        self.window_s = window_s
        self.topology = topology
        self.acc: dict[tuple[str, str, int], dict[str, int]] = {}
        self.hosts: dict[tuple[str, str, int], set[str]] = {}

    def _subnet(self, ep: Mapping[str, Any]) -> str:
        s = ep.get("subnet")
        if s:
            return str(s)
        return self.topology.locate(ep["ip"]).subnet if self.topology is not None else "external"

    def add(self, r: Mapping[str, Any]) -> None:
        acc, hosts = self.acc, self.hosts
        src = self._subnet(r["local"])
        w = int(r["start"]) // self.window_s * self.window_s
        for s in r["samples"] if "samples" in r else (r,):
            key = (src, self._subnet(s["remote"]), w)
            t = acc.get(key)
            if t is None:
                t = acc[key] = dict.fromkeys(TOTAL_FIELDS, 0)
                hosts[key] = set()
            t["bytes_sent"] += s["bytes_sent"]
            t["bytes_received"] += s["bytes_received"]
            t["retransmissions"] += s["retransmissions"]
            t["timeouts"] += s["timeouts"]
            t["flows"] += s["flows"]
            t["samples"] += 1
            t["rtt_count"] += len(s["rtt_us"])
            t["rtt_sum_us"] += sum(s["rtt_us"])
            hosts[key].add(r["instance"])

    def result(self) -> dict[tuple[str, str, int], dict[str, int]]:
        for key, t in self.acc.items():
            t["hosts"] = len(self.hosts[key])
        return self.acc
