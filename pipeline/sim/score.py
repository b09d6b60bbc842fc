"""Scoring a scenario run against its ground truth (the rules are in ``sim.evaluate``'s docstring).

Pure functions over the run's output: which fault each alert is credited to (``match``),
fault-free pair-windows and false alarms, each fault's outcome (detection delay, causes
given, NHI delay), NHI time degraded outside infrastructure faults, and the closed
windows' totals against the expected ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.sim.totals import TOTAL_FIELDS
from pipeline.wire.records import FlowWindow

__all__ = ["match", "credit", "fault_free_windows", "false_alarms", "fault_outcomes", "nhi_periods",
           "nhi_false_degraded_minutes", "window_totals", "majority_cause", "confusion"]


def _key(e: Mapping[str, Any]) -> tuple[str, str, str]:
    if e["scope"] == "pair":
        return ("pair", e["src_subnet"], e["dst_subnet"])
    return ("instance", e["instance"], e["dst_subnet"])


def match(alerts: list[Mapping[str, Any]], faults: list[dict[str, Any]], interval_s: int) -> dict[str, int | None]:
    """``alert_id -> index of the credited fault (or None)``; ``faults`` items need start/end (Unix s) and keys.

    >>> f = [{"start": 100, "end": 200, "keys": {("pair", "a", "b")}},
    ...      {"start": 150, "end": 300, "keys": {("pair", "a", "b"), ("pair", "c", "d")}}]
    >>> al = [{"alert_id": "x", "scope": "pair", "src_subnet": "a", "dst_subnet": "b", "first_seen": 160},
    ...       {"alert_id": "y", "scope": "pair", "src_subnet": "c", "dst_subnet": "d", "first_seen": 110},
    ...       {"alert_id": "z", "scope": "pair", "src_subnet": "e", "dst_subnet": "f", "first_seen": 160}]
    >>> match(al, f, 30)
    {'x': 1, 'y': None, 'z': None}
    """
    out: dict[str, int | None] = {}
    for a in alerts:
        k, t = _key(a), a["first_seen"]
        best = None
        for i, f in enumerate(faults):
            if k in f["keys"] and f["start"] - interval_s <= t < f["end"] + 2 * interval_s:
                if best is None or f["start"] > faults[best]["start"]:
                    best = i
        out[a["alert_id"]] = best
    return out


def credit(opened: list[dict[str, Any]], faults: list[dict[str, Any]],
           interval_s: int) -> tuple[dict[str, int | None], list[list[dict[str, Any]]]]:
    """(``match`` of the opened alerts, the alerts credited to each fault)."""
    credited = match(opened, faults, interval_s)
    per_fault: list[list[dict[str, Any]]] = [[] for _ in faults]
    for a in opened:
        i = credited[a["alert_id"]]
        if i is not None:
            per_fault[i].append(a)
    return credited, per_fault


def _busy(faults: list[dict[str, Any]], interval_s: int) -> list[tuple[int, int]]:
    return [(f["start"] - interval_s, f["end"] + 2 * interval_s) for f in faults]


def _fault_free(ws: int, window_s: int, busy: list[tuple[int, int]]) -> bool:
    return all(ws + window_s <= s or ws >= e for s, e in busy)


def fault_free_windows(pair_windows: Iterable[tuple[str, str, int]], faults: list[dict[str, Any]],
                       interval_s: int, window_s: int) -> int:
    """How many (src, dst, window start) pair-windows overlap no fault's ``[start - 1 interval, end + 2 intervals)``."""
    busy = _busy(faults, interval_s)
    return sum(1 for (_, _, ws) in pair_windows if _fault_free(ws, window_s, busy))


def false_alarms(opened: list[dict[str, Any]], credited: Mapping[str, int | None], faults: list[dict[str, Any]],
                 interval_s: int, window_s: int) -> int:
    """Uncredited alerts opened in a fault-free window."""
    busy = _busy(faults, interval_s)
    return sum(1 for a in opened if credited[a["alert_id"]] is None
               and _fault_free(a["first_seen"] // window_s * window_s, window_s, busy))


def fault_outcomes(faults: list[dict[str, Any]], per_fault: list[list[dict[str, Any]]],
                   attributions: list[dict[str, Any]], periods: list[tuple[str, str, int, int]],
                   interval_s: int, start: int) -> list[dict[str, Any]]:
    """Per fault: detected, delay, the alerts credited, the cause given against the truth, NHI delay."""
    cause_of = {a["alert_id"]: a for a in attributions}
    out = []
    for f, credited in zip(faults, per_fault):
        first = min((a["at"] for a in credited), default=None)  # when it was flagged (first_seen may be earlier)
        causes = [cause_of[a["alert_id"]]["cause"] for a in credited if a["alert_id"] in cause_of]
        given = majority_cause(causes) if credited else None
        nhi_first = min((s0 for _, _, s0, e0 in periods if f["start"] <= s0 < f["end"] + 2 * interval_s),
                        default=None)
        out.append({
            "name": f["name"], "kind": f["kind"], "target": f["target"], "start_s": f["start"] - start,
            "end_s": f["end"] - start, "detected": bool(credited),
            "delay_intervals": None if first is None else max(1, (first - f["start"]) // interval_s + 1),
            "alerts": len(credited), "metrics": sorted({a["metric"] for a in credited}),
            "cause_truth": f["cause"], "cause_given": given,
            "causes_of_alerts": {c: causes.count(c) for c in sorted(set(causes))},
            "nhi_delay_intervals": None if nhi_first is None or first is None else (nhi_first - first) // interval_s,
        })
    return out


def nhi_false_degraded_minutes(periods: list[tuple[str, str, int, int]], faults: list[dict[str, Any]],
                               interval_s: int) -> float:
    """Minutes of degraded NHI periods outside every infrastructure fault (and its tail)."""
    infra = [(f["start"], f["end"] + 2 * interval_s + 4 * interval_s) for f in faults
             if f["cause"] == "infrastructure"]
    return sum(_outside(s0, e0, infra) for _, _, s0, e0 in periods) / 60.0


def window_totals(want: Mapping[tuple[str, str, int], Mapping[str, int]],
                  closed: Mapping[tuple[str, str, int], FlowWindow]) -> dict[str, int]:
    """Closed windows against the expected totals: windows, exact, wrong, missing, unexpected."""
    keys = want.keys() | closed.keys()
    exact = sum(1 for k in keys if k in want and k in closed
                and all(getattr(closed[k], f) == want[k][f] for f in TOTAL_FIELDS))
    return {"windows": len(keys), "exact": exact, "wrong": len(keys) - exact,
            "missing": len(want.keys() - closed.keys()), "unexpected": len(closed.keys() - want.keys())}


def majority_cause(causes: list[str]) -> str:
    """The cause most credited alerts got, undetermined ones aside unless they are all there is.

    >>> majority_cause(["undetermined", "workload", "infrastructure"]), majority_cause(["undetermined"])
    ('infrastructure', 'undetermined')
    """
    determined = [c for c in causes if c != "undetermined"] or causes
    if not determined:
        return "undetermined"
    order = {"infrastructure": 0, "workload": 1, "undetermined": 2}
    return min(set(determined), key=lambda c: (-determined.count(c), order[c]))


def nhi_periods(records: list[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    """Final (scope_kind, scope, start, end) of every degraded period (the latest record of each wins)."""
    last: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in records:
        last[(r["scope_kind"], r["scope"], r["start"])] = r
    return sorted((k, s, st, r["end"] if r["end"] is not None else st) for (k, s, st), r in last.items())


def _outside(start: int, end: int, spans: list[tuple[int, int]]) -> int:
    """Seconds of [start, end) not covered by any span.

    >>> _outside(0, 100, [(10, 20), (15, 30), (90, 200)])
    70
    """
    cuts = sorted((max(a, start), min(b, end)) for a, b in spans if b > start and a < end)
    covered, cur = 0, start
    for a, b in cuts:
        if b > cur:
            covered += b - max(a, cur)
            cur = b
    return (end - start) - covered


def confusion(faults: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """truth -> given -> count, over detected faults."""
    out: dict[str, dict[str, int]] = {}
    for f in faults:
        row = out.setdefault(str(f["cause_truth"]), {})
        row[str(f["cause_given"])] = row.get(str(f["cause_given"]), 0) + 1
    return out
