"""Alert lifecycle of one key: per metric, flags in, ``opened``/``updated``/``resolved`` out.

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
>>> v = lambda f, s: {"rtt_p50": (f, s, 9000.0 if f else 800.0, 800.0, "critical" if f else "warning", 0)}
>>> [e["event"] for e in book.step(0, v(True, 40.0), 5.0, 2, 600)]
['opened']
>>> book.step(30, v(True, 50.0), 5.0, 2, 600)     # same window: no update
[]
>>> [(e["event"], e["score"]) for e in book.step(600, v(True, 45.0), 5.0, 2, 600)]
[('updated', 50.0)]
>>> book.step(630, v(False, 0.1), 5.0, 2, 600)
[]
>>> [(e["event"], e["reason"], e["seq"]) for e in book.step(660, v(False, 0.2), 5.0, 2, 600)]
[('resolved', 'normal', 2)]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["AlertBook", "CALM_FRACTION"]

#: A non-flagged interval counts towards resolution only if its score is under this fraction of the threshold.
CALM_FRACTION = 0.6

_SEV = {"warning": 0, "critical": 1}


class AlertBook:
    """Open alerts of one key, by metric."""

    __slots__ = ("alerts",)

    def __init__(self, alerts: dict[str, dict[str, Any]] | None = None) -> None:
        self.alerts: dict[str, dict[str, Any]] = alerts or {}

    @property
    def open(self) -> bool:
        return bool(self.alerts)

    def step(self, t: int, verdicts: Mapping[str, tuple[bool, float, float, float, str, int]], z: float,
             resolve_after: int, window_s: int) -> list[dict[str, Any]]:
        """One interval: ``verdicts[metric] = (flagged, score, observed, expected, severity, since)``;
        ``since``: the first interval of the deviation that is flagged now (it may have had to
        last a few intervals before it counted: the alert's ``first_seen``)."""
        out: list[dict[str, Any]] = []
        for metric, (flagged, score, observed, expected, severity, since) in verdicts.items():
            a = self.alerts.get(metric)
            if a is None:
                if flagged:
                    a = self.alerts[metric] = {"first_seen": min(since, t), "last_seen": t, "seq": 0, "score": score,
                                               "severity": severity, "calm": 0, "win": t // window_s,
                                               "observed": observed, "expected": expected}
                    out.append(self._event(metric, a, "opened", t))
                continue
            if flagged:
                a["last_seen"] = t
                a["calm"] = 0
                a["observed"], a["expected"] = observed, expected
                a["score"] = max(a["score"], score)
                rises = _SEV[severity] > _SEV[a["severity"]]
                if rises:
                    a["severity"] = severity
                if t // window_s > a["win"] or rises:
                    a["win"] = t // window_s
                    a["seq"] += 1
                    out.append(self._event(metric, a, "updated", t))
            else:
                a["observed"], a["expected"] = observed, expected
                if score < CALM_FRACTION * z:
                    a["calm"] += 1
                if a["calm"] >= resolve_after:
                    a["seq"] += 1
                    out.append(self._event(metric, a, "resolved", t, "normal"))
                    del self.alerts[metric]
        return out

    def silence(self, t: int) -> list[dict[str, Any]]:
        """Resolve every open alert because the key stopped reporting."""
        out = []
        for metric, a in sorted(self.alerts.items()):
            a["seq"] += 1
            out.append(self._event(metric, a, "resolved", t, "silent"))
        self.alerts.clear()
        return out

    @staticmethod
    def _event(metric: str, a: Mapping[str, Any], event: str, t: int, reason: str | None = None) -> dict[str, Any]:
        return {"event": event, "metric": metric, "seq": a["seq"], "observed": a["observed"],
                "expected": a["expected"], "score": a["score"], "severity": a["severity"],
                "first_seen": a["first_seen"], "last_seen": a["last_seen"], "at": t, "reason": reason}

    def state(self) -> dict[str, dict[str, Any]]:
        return self.alerts

    @classmethod
    def from_state(cls, s: Mapping[str, Mapping[str, Any]]) -> AlertBook:
        return cls({m: dict(a) for m, a in s.items()})
