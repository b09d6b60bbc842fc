"""Which anomaly events ``flowmon alerts`` shows: subnet pairs, minimum severity, scope, metric.

Severity filter. ``severity`` is a minimum and applies to each event's own ``severity``
field: ``"warning"`` passes everything, ``"critical"`` only events whose severity is
critical. Every event carries its alert's severity, ``resolved`` included, so the
resolution of a critical alert passes a critical filter like its opening did.

Examples
--------
>>> ev = {"src_subnet": "subnet-a", "dst_subnet": "subnet-b", "severity": "warning", "scope": "pair",
...       "metric": "rtt_p90"}
>>> matches(ev, pairs=["subnet-a->subnet-b"], severity="warning", metric="rtt_p90")
True
>>> matches(ev, pairs=["subnet-b"]), matches(ev, pairs=["subnet-b->subnet-a"]), matches(ev, severity="critical")
(True, False, False)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.alerts.events import METRICS, SCOPES, SEVERITIES

__all__ = ["parse_pair", "check_filters", "matches"]


def parse_pair(spec: str) -> tuple[str, str] | str:
    """A pair filter: ``"SRC->DST"`` gives ``(src, dst)`` (``*`` = any subnet); a bare name is
    returned as is and matches either side.

    >>> parse_pair("subnet-a -> subnet-b"), parse_pair("subnet-a->*"), parse_pair(" subnet-c ")
    (('subnet-a', 'subnet-b'), ('subnet-a', '*'), 'subnet-c')
    >>> parse_pair("a->b->c")
    Traceback (most recent call last):
    ...
    ValueError: bad pair 'a->b->c': expected SRC_SUBNET->DST_SUBNET or one subnet name
    """
    parts = [p.strip() for p in spec.split("->")]
    if not all(parts) or len(parts) > 2:
        raise ValueError(f"bad pair {spec!r}: expected SRC_SUBNET->DST_SUBNET or one subnet name")
    return (parts[0], parts[1]) if len(parts) == 2 else parts[0]


def _severity(severity: str) -> int:
    """Rank of a minimum severity (``ValueError`` if the schema does not know it)."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity}: expected one of {', '.join(SEVERITIES)}")
    return SEVERITIES.index(severity)


def _one_of(value: str | Iterable[str] | None, allowed: tuple[str, ...], what: str) -> frozenset[str] | None:
    if value is None:
        return None
    values = frozenset([value] if isinstance(value, str) else value)
    if not values:
        return None
    bad = sorted(values - set(allowed))
    if bad:
        raise ValueError(f"unknown {what} {', '.join(bad)}: expected one of {', '.join(allowed)}")
    return values


def check_filters(pairs: Iterable[str] | None = None, severity: str | None = None,
                  scope: str | Iterable[str] | None = None, metric: str | Iterable[str] | None = None) -> None:
    """Raise the ``ValueError`` :func:`matches` would for these filters: an unknown severity, scope
    or metric (checked against the schema's enums), or a malformed pair. Nothing else happens.

    >>> check_filters(["a->b", "c"], "critical", "pair", ["rtt_mean"])
    >>> check_filters(scope="host")
    Traceback (most recent call last):
    ...
    ValueError: unknown scope host: expected one of pair, instance
    """
    if severity is not None:
        _severity(severity)
    _one_of(scope, SCOPES, "scope")
    _one_of(metric, METRICS, "metric")
    for spec in pairs or ():
        parse_pair(spec)


def matches(event: Mapping[str, Any], pairs: Iterable[str] | None = None, severity: str | None = None,
            scope: str | Iterable[str] | None = None, metric: str | Iterable[str] | None = None) -> bool:
    """Does ``event`` pass every given filter? (``None``/empty = no filter.)

    * ``pairs``: any of them matches; ``"SRC->DST"`` is one direction (``*`` = any
      subnet), a bare subnet name matches the event's source or destination subnet;
    * ``severity``: the minimum, compared with the event's own ``severity``
      (``"warning"`` passes all, ``"critical"`` only critical ones; a ``resolved``
      event carries its alert's severity, so it passes when the alert did);
    * ``scope``: ``"pair"`` or ``"instance"``; ``metric``: one metric or several.

    An unknown severity, scope or metric, or a malformed pair, raises ``ValueError``.

    >>> ev = {"src_subnet": "web", "dst_subnet": "db", "severity": "critical", "scope": "pair",
    ...       "metric": "timeout_rate"}
    >>> [matches(ev, pairs=[p]) for p in ("web->db", "db->web", "db", "*->db", "web->*", "cache")]
    [True, False, True, True, True, False]
    >>> matches(ev, pairs=["cache", "db->web", "web"])   # any of them
    True
    >>> matches(ev, severity="warning"), matches(dict(ev, severity="warning"), severity="critical")
    (True, False)
    >>> matches(ev, scope="pair"), matches(ev, scope="instance"), matches(ev, metric=["rtt_mean", "timeout_rate"])
    (True, False, True)
    >>> matches(ev, severity="high")
    Traceback (most recent call last):
    ...
    ValueError: unknown severity high: expected one of warning, critical
    """
    if severity is not None:
        minimum = _severity(severity)
        if SEVERITIES.index(event["severity"]) < minimum:
            return False
    scopes = _one_of(scope, SCOPES, "scope")
    if scopes is not None and event["scope"] not in scopes:
        return False
    metrics = _one_of(metric, METRICS, "metric")
    if metrics is not None and event["metric"] not in metrics:
        return False
    if pairs:
        src, dst = event["src_subnet"], event["dst_subnet"]
        for spec in pairs:
            p = parse_pair(spec)
            if isinstance(p, str):
                if p in (src, dst):
                    return True
            elif p[0] in ("*", src) and p[1] in ("*", dst):
                return True
        return False
    return True
