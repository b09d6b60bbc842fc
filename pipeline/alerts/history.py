"""Alert history from ClickHouse: what ``flowmon alerts --no-follow`` shows.  *adapter*

The anomaly topic of an embedded broker lives in memory and is gone with it; everything
it carried has landed in ClickHouse (``flow_anomalies``, ``flow_attributions``). This
module reads it back as the records of the wire schemas (the sink writes every field of
a record into the column of the same name; times come back as the wire's Unix seconds),
in time order — by the interval that caused each event, then alert and sequence — each
``opened`` event followed by its alert's attribution.

Examples
--------
The SELECT list is derived from the table definitions:

>>> select_list("flow_anomalies").split(", ")[-3:]
['toUnixTimestamp(window_start) AS window_start', 'reason', 'toUnixTimestamp64Milli(emitted_at) / 1000 AS emitted_at']
>>> events = [{"alert_id": "b", "seq": 0, "at": 60, "event": "opened"}, {"alert_id": "a", "seq": 1, "at": 30,
...            "event": "resolved"}, {"alert_id": "a", "seq": 0, "at": 0, "event": "opened"}]
>>> [(e.get("event"), e["alert_id"]) for e in in_time_order(events, {"a": {"alert_id": "a", "cause": "workload"}})]
[('opened', 'a'), (None, 'a'), ('resolved', 'a'), ('opened', 'b')]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pipeline.clickhouse.columns import tables

__all__ = ["select_list", "read_events", "read_attributions", "in_time_order", "history"]


def _expression(name: str, type_name: str) -> str:
    base = type_name[len("Nullable("):-1] if type_name.startswith("Nullable(") else type_name
    if base.startswith("DateTime64("):
        scale = int(base[len("DateTime64("):].split(",")[0].rstrip(")"))
        return f"toUnixTimestamp64Milli({name}) / 1000 AS {name}" if scale == 3 else \
            f"toFloat64({name}) AS {name}"
    if base.startswith("DateTime"):
        return f"toUnixTimestamp({name}) AS {name}"
    return name


def select_list(table: str) -> str:
    """The columns of ``table`` as wire values (DateTime → Unix seconds), in table order."""
    t = tables()[table]
    return ", ".join(_expression(n, ty) for n, ty in zip(t.insertable, t.types(t.insertable)))


def _records(client: Any, table: str, where: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    result = client.query(f"SELECT {select_list(table)} FROM {table} FINAL {where}", parameters=parameters)
    names = result.column_names
    return [dict(zip(names, row)) for row in result.result_rows]


def read_events(client: Any, since: int | None = None) -> list[dict[str, Any]]:
    """flow_anomaly.v1 records in ClickHouse (events of intervals from ``since``, Unix seconds, if given)."""
    where, params = ("WHERE at >= {since:UInt32}", {"since": since}) if since else ("", {})
    return _records(client, "flow_anomalies", where, params)


def read_attributions(client: Any) -> dict[str, dict[str, Any]]:
    """flow_attribution.v1 records in ClickHouse, by alert id."""
    return {r["alert_id"]: r for r in _records(client, "flow_attributions", "", {})}


def in_time_order(events: list[Mapping[str, Any]], attributions: Mapping[str, Mapping[str, Any]],
                  ) -> Iterator[Mapping[str, Any]]:
    """Events by (interval, alert, seq); each ``opened`` event followed by its attribution, if any
    (an attribution has ``cause`` and no ``event``)."""
    for e in sorted(events, key=lambda e: (e["at"], e["alert_id"], e["seq"])):
        yield e
        if e.get("event") == "opened" and e["alert_id"] in attributions:
            yield attributions[e["alert_id"]]


def history(client: Any, since: int | None = None, attribution: bool = True) -> Iterator[Mapping[str, Any]]:
    """Every alert event in ClickHouse, in time order, with attributions (see :func:`in_time_order`)."""
    return in_time_order(read_events(client, since), read_attributions(client) if attribution else {})
