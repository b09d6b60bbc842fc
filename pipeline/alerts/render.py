"""Readable lines for people: one per anomaly event, one per attribution (UTC times, units per metric).

Examples
--------
>>> ev = {"at": 1700000400, "event": "updated", "severity": "warning", "src_subnet": "subnet-a",
...       "dst_subnet": "subnet-b", "instance": None, "metric": "rtt_p90", "observed": 48_000.0,
...       "expected": 9_500.0, "score": 5.2, "reason": None, "alert_id": "00c0ffee00c0ffee"}
>>> format_event(ev)
'2023-11-14T22:20:00Z updated  warning  subnet-a → subnet-b  rtt_p90 48.0 ms (expected 9.50 ms)  score 5.2  alert 00c0ffee00c0ffee'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["format_event", "format_attribution"]


def _num(x: float) -> str:
    """About three significant digits, never in exponent notation.

    >>> [_num(x) for x in (0, 0.0123, 0.5, 4.2, 12.34, 150.4, 12345.6, 1e-9)]
    ['0', '0.0123', '0.500', '4.20', '12.3', '150', '12346', '0.000000']
    """
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.{min(6, 2 - math.floor(math.log10(a)))}f}"


def _value(metric: str, v: float) -> str:
    """A metric value with its unit: retransmission rate in %, timeouts per flow, RTT (µs) in ms.

    >>> [_value(m, v) for m, v in [("retrans_rate", 0.042), ("timeout_rate", 0.125), ("rtt_mean", 700),
    ...                            ("rtt_p90", 150_400)]]
    ['4.20%', '0.125 per flow', '0.700 ms', '150 ms']
    """
    if metric == "retrans_rate":
        return f"{_num(v * 100)}%"
    if metric == "timeout_rate":
        return f"{_num(v)} per flow"
    if metric.startswith("rtt"):
        return f"{_num(v / 1000)} ms"
    return _num(v)


def format_attribution(rec: Mapping[str, Any]) -> str:
    """One readable line: the cause, the blamed element and the evidence.

    >>> print(format_attribution({"alert_id": "00c0ffee00c0ffee", "cause": "infrastructure", "element_kind": "az_pair",
    ...     "element": "az1|az2", "confidence": 0.8, "reporters_crossing": 12, "reporters_degraded": 10,
    ...     "exonerating": 2, "evidence_level": "instance"}))
    ↳ infrastructure: az_pair az1|az2 (confidence 0.80) — 10 of 12 reporters crossing it degraded  alert 00c0ffee00c0ffee
    >>> print(format_attribution({"alert_id": "00c0ffee00c0ffee", "cause": "workload", "element_kind": "instance",
    ...     "element": "s1/3", "confidence": 0.6, "keys_degraded": 3, "keys_scored": 3, "exonerating": 7,
    ...     "evidence_level": "instance"}))
    ↳ workload: instance s1/3 (confidence 0.60) — 3 of its 3 keys degraded, 7 reporters of its subnet healthy  alert 00c0ffee00c0ffee
    """
    cause = rec["cause"]
    if cause == "undetermined":
        why = "evidence too thin (too few independent reporters to tell a host from its path)"
        return f"↳ undetermined: {why}  alert {rec['alert_id']}"
    head = f"↳ {cause}: {rec['element_kind']} {rec['element']} (confidence {rec['confidence']:.2f})"
    if cause == "workload":
        ev = (f"{rec['keys_degraded']} of its {rec['keys_scored']} keys degraded, "
              f"{rec['exonerating']} reporters of its subnet healthy")
    else:
        ev = f"{rec['reporters_degraded']} of {rec['reporters_crossing']} reporters crossing it degraded"
        if rec.get("evidence_level") == "pair":
            ev += " (pair keys)"
    return f"{head} — {ev}  alert {rec['alert_id']}"


def format_event(event: Mapping[str, Any]) -> str:
    """One readable line: time (the interval that caused the event, UTC), event, severity,
    ``src → dst`` (``[instance]`` for an instance alert), metric observed and expected
    with units, score, why it resolved, alert id.

    >>> ev = {"at": 1700000000, "event": "opened", "severity": "critical", "src_subnet": "subnet-a",
    ...       "dst_subnet": "subnet-b", "instance": None, "metric": "retrans_rate", "observed": 0.042,
    ...       "expected": 0.003, "score": 9.1, "reason": None, "alert_id": "00c0ffee00c0ffee"}
    >>> print(format_event(ev))
    2023-11-14T22:13:20Z opened   critical subnet-a → subnet-b  retrans_rate 4.20% (expected 0.300%)  score 9.1  alert 00c0ffee00c0ffee
    >>> print(format_event(dict(ev, event="resolved", seq=3, scope="instance", instance="web-1",
    ...                         metric="timeout_rate", observed=0.01, expected=0.012, reason="normal")))
    2023-11-14T22:13:20Z resolved critical subnet-a → subnet-b [web-1]  timeout_rate 0.0100 per flow (expected 0.0120 per flow)  score 9.1  normal  alert 00c0ffee00c0ffee
    """
    at = datetime.fromtimestamp(event["at"], tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    key = f"{event['src_subnet']} → {event['dst_subnet']}"
    if event.get("instance"):
        key += f" [{event['instance']}]"
    metric = event["metric"]
    line = (f"{at} {event['event']:<8} {event['severity']:<8} {key}  {metric} {_value(metric, event['observed'])} "
            f"(expected {_value(metric, event['expected'])})  score {event['score']:.1f}")
    if event.get("reason"):
        line += f"  {event['reason']}"
    return f"{line}  alert {event['alert_id']}"
