"""Evaluate monitors: closed pair windows and NHI periods -> monitor records.  *pure*

* :func:`window_records`: one closed pair window (``flow_window.v1``) -> one
  ``flow_monitor_window.v1`` record per monitor it falls in: the pair window's counters
  under the monitor's name. A monitor's series is the sum of its records per window
  (ClickHouse ``monitor_windows``); the RTT histogram is merged the same way, so its
  percentiles are exact to the bucket. Stateless: a window evaluated twice gives the
  same records (same key), which collapse in ClickHouse.
* :func:`nhi_records`: one NHI period (``flow_nhi.v1``) -> one ``flow_monitor_nhi.v1``
  record per monitor the scope touches (``scope.touches``).
* :class:`MonitorSet`: the current monitors, as the compacted monitors topic says
  (key = name, value = definition JSON, no value = deleted).

Examples
--------
>>> from pipeline.monitors.definition import parse_monitor
>>> ms = MonitorSet()
>>> ms.apply(b"m", parse_monitor({"name": "m", "local": "subnet:s1", "remote": "any"}).to_json())
'created'
>>> w = {"src_subnet": "s1", "src_az": "a1", "src_vpc": "v", "dst_subnet": "external", "dst_az": "external",
...      "dst_vpc": "external", "window_start": 600, "window_s": 600, "bytes_sent": 1, "bytes_received": 2,
...      "bytes": 3, "retransmissions": 0, "timeouts": 0, "flows": 1, "rtt_count": 1, "rtt_sum_us": 900,
...      "rtt_hist": {"157": 1}, "closed_at": 1300.5}
>>> [(r["monitor"], r["dst_subnet"], r["bytes"]) for r in window_records(w, ms.monitors.values())]
[('m', 'external', 3)]
>>> ms.apply(b"m", None), ms.monitors
('deleted', {})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.monitors.definition import Monitor, MonitorError
from pipeline.monitors.scope import Placements, Side, touches, window_in
from pipeline.wire.contract import WIRE_VERSION

__all__ = ["window_records", "nhi_records", "sides", "MonitorSet", "WINDOW_FIELDS", "monitor_row"]

#: The pair window's fields a monitor record carries (after ``version`` and ``monitor``).
WINDOW_FIELDS = ("src_subnet", "src_az", "src_vpc", "dst_subnet", "dst_az", "dst_vpc", "window_start", "window_s",
                 "bytes", "bytes_sent", "bytes_received", "retransmissions", "timeouts", "flows", "rtt_count",
                 "rtt_sum_us", "rtt_hist", "closed_at")
_NHI_FIELDS = ("scope_kind", "scope", "status", "start", "end", "element", "updated")


def sides(window: Mapping[str, Any]) -> tuple[Side, Side]:
    """The reporting and remote sides of a pair window."""
    return (Side(window["src_subnet"], window["src_az"], window["src_vpc"]),
            Side(window["dst_subnet"], window["dst_az"], window["dst_vpc"]))


def window_records(window: Mapping[str, Any], monitors: Iterable[Monitor], region: str | None = None,
                   ) -> list[dict[str, Any]]:
    """The ``flow_monitor_window.v1`` records of one closed pair window, one per monitor it falls in."""
    src, dst = sides(window)
    out = []
    for m in monitors:
        if window_in(m, src, dst, region):
            rec: dict[str, Any] = {"version": WIRE_VERSION, "monitor": m.name}
            rec.update((f, window[f]) for f in WINDOW_FIELDS)
            out.append(rec)
    return out


def nhi_records(period: Mapping[str, Any], monitors: Iterable[Monitor], placements: Placements,
                ) -> list[dict[str, Any]]:
    """The ``flow_monitor_nhi.v1`` records of one NHI period, one per monitor its scope touches.

    >>> from pipeline.monitors.definition import parse_monitor
    >>> m = parse_monitor({"name": "m", "local": "subnet:s1", "remote": "az:a2"})
    >>> p = Placements({"s1": Side("s1", "a1", "v"), "s2": Side("s2", "a2", "v")})
    >>> nhi = {"version": 1, "scope_kind": "az_pair", "scope": "a1|a2", "status": "degraded", "start": 600,
    ...        "end": None, "element": "az_pair:a1|a2", "updated": 5.0}
    >>> [(r["monitor"], r["scope"]) for r in nhi_records(nhi, [m], p)]
    [('m', 'a1|a2')]
    >>> nhi_records(dict(nhi, scope_kind="az", scope="a3"), [m], p)
    []

    An AZ marked degraded only because a problem *between* two AZs was blamed (element
    ``az_pair:...``) does not make every monitor touching that AZ degraded: the az_pair
    period itself reaches the monitors it crosses (the console's AZ matrix reads it the same way).

    >>> m3 = parse_monitor({"name": "m3", "local": "subnet:s1", "remote": "subnet:s1"})
    >>> nhi_records(dict(nhi, scope_kind="az", scope="a1"), [m3], p)
    []
    >>> [r["monitor"] for r in nhi_records(dict(nhi, scope_kind="az", scope="a1", element="subnet:s1"), [m3], p)]
    ['m3']
    """
    if period["scope_kind"] == "az" and str(period.get("element", "")).startswith("az_pair:"):
        return []
    out = []
    for m in monitors:
        if touches(m, period["scope_kind"], period["scope"], placements):
            rec: dict[str, Any] = {"version": WIRE_VERSION, "monitor": m.name}
            rec.update((f, period[f]) for f in _NHI_FIELDS)
            out.append(rec)
    return out


class MonitorSet:
    """The current monitors by name, kept from the monitors topic's messages in order."""

    def __init__(self) -> None:
        self.monitors: dict[str, Monitor] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> str | None:
        """Apply one message: ``'created'``, ``'changed'``, ``'deleted'`` or None (no change).

        A value that is not a valid definition, or whose name is not its key, raises
        :class:`MonitorError` and changes nothing.
        """
        name = (key or b"").decode("utf-8", "replace")
        if value is None:
            return "deleted" if self.monitors.pop(name, None) is not None else None
        m = Monitor.from_json(value)
        if m.name != name:
            raise MonitorError(f"monitor {m.name!r}: published under the key {name!r}")
        old = self.monitors.get(name)
        self.monitors[name] = m
        return "created" if old is None else ("changed" if old != m else None)


def monitor_row(key: bytes | None, value: bytes | None, timestamp_ms: int) -> dict[str, Any]:
    """The ``monitors`` table's row for one monitors-topic message (a tombstone: ``deleted`` 1).

    ``updated`` is the message's timestamp: the same message always gives the same row.

    >>> monitor_row(b"m", None, 1500)
    {'version': 1, 'name': 'm', 'definition': '', 'local': [], 'remote': [], 'description': '', 'deleted': 1, 'updated': 1.5}
    >>> from pipeline.monitors.definition import parse_monitor
    >>> monitor_row(b"m", parse_monitor({"name": "m", "local": "az:z", "remote": "any"}).to_json(), 2000)["remote"]
    ['any']
    """
    name = (key or b"").decode()
    if value is None:
        return {"version": WIRE_VERSION, "name": name, "definition": "", "local": [], "remote": [], "description": "",
                "deleted": 1, "updated": timestamp_ms / 1000}
    m = Monitor.from_json(value)
    if m.name != name:
        raise MonitorError(f"monitor {m.name!r}: published under the key {name!r}")
    w = m.to_wire()
    remote = w["remote"]
    return {"version": WIRE_VERSION, "name": name, "definition": value.decode(), "local": w["local"],
            "remote": [remote] if isinstance(remote, str) else remote, "description": m.description,
            "deleted": 0, "updated": timestamp_ms / 1000}
