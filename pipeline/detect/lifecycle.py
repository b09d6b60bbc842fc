"""Alert lifecycle of one key: per metric, verdicts in, ``opened``/``updated``/``resolved`` out.

Pure state machine (no Kafka), fed once per scored interval by ``detect.Detection``:

* ``opened`` the first interval a metric is flagged (with observed value, expected
  baseline, score, severity and first seen);
* ``updated`` while it stays flagged: at once when its severity rises, else at most once
  per reporting window (the first flagged interval of each later window), carrying the
  largest score and severity so far;
* ``resolved`` after ``resolve_after`` *calm* intervals in a row (not flagged and a
  score under 60 % of the threshold: hysteresis, so a metric hovering at the threshold
  does not flap), or ``silent`` when the key stops reporting.

The book is part of the key's persisted state, so a restarted worker continues an open
alert (same ``alert_id``, next ``seq``) instead of opening it again.

Examples
--------
>>> book = AlertBook()
>>> v = lambda f, s: {"rtt_p50": Verdict(f, s, 9000.0 if f else 800.0, 800.0, f, 2 if f else 0)}
>>> [e.event for e in book.step(0, v(True, 40.0), {}, 5.0, 2, 600)]
['opened']
>>> book.step(30, v(True, 50.0), {}, 5.0, 2, 600)     # same window: no update
[]
>>> [(e.event, e.score) for e in book.step(600, v(True, 45.0), {}, 5.0, 2, 600)]
[('updated', 50.0)]
>>> book.step(630, v(False, 0.1), {}, 5.0, 2, 600)
[]
>>> [(e.event, e.reason, e.seq) for e in book.step(660, v(False, 0.2), {}, 5.0, 2, 600)]
[('resolved', 'normal', 2)]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.detect.contract import Verdict

__all__ = ["AlertBook", "AlertChange", "CALM_FRACTION", "severity"]

#: A non-flagged interval counts towards resolution only if its score is under this fraction of the threshold.
CALM_FRACTION = 0.6

_SEV = {"warning": 0, "critical": 1}


def severity(metric: str, v: Verdict) -> str:
    """'critical' when the deviation hurts any application *and* has lasted two intervals or more,
    so a one-interval burst never is.

    >>> severity("retrans_rate", Verdict(True, 9.0, 0.05, 0.0001, True, 1))
    'warning'
    >>> severity("retrans_rate", Verdict(True, 9.0, 0.05, 0.0001, True, 2))
    'critical'
    >>> severity("rtt_p50", Verdict(True, 9.0, 5000.0, 1000.0, True, 3))
    'critical'
    """
    if v.streak < 2:
        return "warning"
    x, e = v.observed, v.expected
    if metric == "retrans_rate":
        return "critical" if x - e >= 0.01 else "warning"
    if metric == "timeout_rate":
        return "critical" if x - e >= 0.5 else "warning"
    return "critical" if e > 0 and x >= 3 * e else "warning"


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One step of one metric's alert (``Detection`` adds the key's identity: a ``wire.events.AnomalyEvent``)."""

    event: str  # opened | updated | resolved
    metric: str
    seq: int
    observed: float
    expected: float
    score: float
    severity: str
    first_seen: int
    last_seen: int
    at: int
    reason: str | None = None  # for 'resolved': normal | silent


class AlertBook:
    """Open alerts of one key, by metric (each a dict: it is the key's persisted state as it is)."""

    __slots__ = ("alerts",)

    def __init__(self, alerts: dict[str, dict[str, Any]] | None = None) -> None:
        self.alerts: dict[str, dict[str, Any]] = alerts or {}

    @property
    def open(self) -> bool:
        return bool(self.alerts)

    def step(self, t: int, verdicts: Mapping[str, Verdict], since: Mapping[str, int], z: float,
             resolve_after: int, window_s: int) -> list[AlertChange]:
        """One interval's verdicts. ``since[metric]``: the first interval of the deviation flagged now (it
        may have had to last a few intervals before it counted: the alert's ``first_seen``; default ``t``)."""
        out: list[AlertChange] = []
        for metric, v in verdicts.items():
            a = self.alerts.get(metric)
            if a is None:
                if v.flagged:
                    a = self.alerts[metric] = {"first_seen": min(since.get(metric, t), t), "last_seen": t, "seq": 0,
                                               "score": v.score, "severity": severity(metric, v), "calm": 0,
                                               "win": t // window_s, "observed": v.observed, "expected": v.expected}
                    out.append(self._change(metric, a, "opened", t))
                continue
            if v.flagged:
                a["last_seen"] = t
                a["calm"] = 0
                a["observed"], a["expected"] = v.observed, v.expected
                a["score"] = max(a["score"], v.score)
                sev = severity(metric, v)
                rises = _SEV[sev] > _SEV[a["severity"]]
                if rises:
                    a["severity"] = sev
                if t // window_s > a["win"] or rises:
                    a["win"] = t // window_s
                    a["seq"] += 1
                    out.append(self._change(metric, a, "updated", t))
            else:
                a["observed"], a["expected"] = v.observed, v.expected
                if v.score < CALM_FRACTION * z:
                    a["calm"] += 1
                if a["calm"] >= resolve_after:
                    a["seq"] += 1
                    out.append(self._change(metric, a, "resolved", t, "normal"))
                    del self.alerts[metric]
        return out

    def silence(self, t: int) -> list[AlertChange]:
        """Resolve every open alert because the key stopped reporting."""
        out = []
        for metric, a in sorted(self.alerts.items()):
            a["seq"] += 1
            out.append(self._change(metric, a, "resolved", t, "silent"))
        self.alerts.clear()
        return out

    @staticmethod
    def _change(metric: str, a: Mapping[str, Any], event: str, t: int, reason: str | None = None) -> AlertChange:
        return AlertChange(event, metric, a["seq"], a["observed"], a["expected"], a["score"], a["severity"],
                           a["first_seen"], a["last_seen"], t, reason)

    def state(self) -> dict[str, dict[str, Any]]:
        return self.alerts

    @classmethod
    def from_state(cls, s: Mapping[str, Mapping[str, Any]]) -> AlertBook:
        return cls({m: dict(a) for m, a in s.items()})
