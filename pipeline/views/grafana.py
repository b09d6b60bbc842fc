"""The Grafana dashboard of flowmon's data, generated from the named queries (``schemas/queries``).

Every ClickHouse query of ``deploy/grafana/dashboards/flowmon-flows.json`` is a named
query in Grafana's form (:func:`pipeline.views.queries.grafana_sql`): the dashboard and the
console run the same SQL and cannot disagree. Regenerate the file after changing a
query or the layout below (a test fails while it is stale)::

    python -m pipeline.views.grafana > deploy/grafana/dashboards/flowmon-flows.json

Template variables stand for the queries' String/UInt parameters: ``category``,
``metric`` and ``n`` are fixed lists, ``src``/``dst`` the subnets with windows in the
range, ``alert_id`` the newest alerts, ``monitor`` the live monitors.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pipeline.views.queries import NamedQuery, grafana_sql, load

__all__ = ["dashboard", "LAYOUT", "VARIABLES"]

DS = {"type": "grafana-clickhouse-datasource", "uid": "flowmon-clickhouse"}
PLUGIN_VERSION = "4.14.1"

#: (named query, panel title, width, height) — the dashboard's panels in reading order
LAYOUT: list[tuple[str, str, int, int]] = [
    ("az_matrix", "Network health between AZs", 14, 9),
    ("traffic_by_category", "Traffic by category", 10, 9),
    ("fleet_series", "Fleet per window", 24, 7),
    ("top_pairs", "Top subnet pairs ($metric, $category)", 12, 10),
    ("top_instances", "Top instances ($metric, $category)", 12, 10),
    ("top_pairs_series", "Top subnet pairs over time ($metric, $category)", 24, 9),
    ("pair_series", "Subnet pair $src → $dst", 24, 7),
    ("monitor_series", "Monitor $monitor", 24, 7),
    ("monitor_nhi", "Monitor $monitor: degraded periods", 12, 7),
    ("monitors", "Monitors", 12, 7),
    ("alerts", "Alerts and their attribution", 24, 9),
    ("nhi_periods", "Network Health Indicator: degraded periods", 24, 7),
    ("deadletters_by_reason", "Dead letters by reason", 10, 7),
    ("deadletters_latest", "Latest dead letters", 14, 7),
]

_UNITS = {"bytes": "decbytes", "rtt_mean_us": "µs", "rtt_p50_us": "µs", "rtt_p90_us": "µs", "rtt_p99_us": "µs"}

_CUSTOM = {
    "category": ("Category", ["all", "intra-az", "inter-az", "inter-vpc", "unclassified"]),
    "metric": ("Top by", ["bytes", "retransmissions", "timeouts", "rtt"]),
    "n": ("How many", ["10", "20", "50"]),
}
_QUERY_VARS = {
    "src": ("Source subnet", "SELECT DISTINCT src_subnet FROM flow_windows FINAL "
                             "WHERE $__timeFilter(window_start) ORDER BY src_subnet"),
    "dst": ("Destination subnet", "SELECT DISTINCT dst_subnet FROM flow_windows FINAL "
                                  "WHERE $__timeFilter(window_start) ORDER BY dst_subnet"),
    "monitor": ("Monitor", "SELECT name FROM monitors FINAL WHERE deleted = 0 ORDER BY name"),
    "alert_id": ("Alert", "SELECT alert_id FROM alerts ORDER BY first_seen DESC LIMIT 200"),
}
#: the variables, in the order the dashboard shows them
VARIABLES = ("category", "metric", "n", "src", "dst", "monitor")


def _variable(name: str) -> dict[str, Any]:
    if name in _CUSTOM:
        label, values = _CUSTOM[name]
        return {"name": name, "label": label, "type": "custom", "query": ",".join(values),
                "current": {"selected": True, "text": values[0], "value": values[0]},
                "options": [{"selected": i == 0, "text": v, "value": v} for i, v in enumerate(values)],
                "multi": False, "includeAll": False}
    label, sql = _QUERY_VARS[name]
    return {"name": name, "label": label, "type": "query", "datasource": DS, "query": sql, "definition": sql,
            "refresh": 2, "multi": False, "includeAll": False, "sort": 1, "options": []}


def _target(q: NamedQuery, fmt: int) -> dict[str, Any]:
    return {"refId": "A", "datasource": DS, "editorType": "sql", "pluginVersion": PLUGIN_VERSION,
            "queryType": "timeseries" if fmt == 0 else "table", "format": fmt, "rawSql": grafana_sql(q.sql)}


def _panels(q: NamedQuery, title: str, w: int, h: int, next_id: int) -> list[dict[str, Any]]:
    base = {"datasource": DS, "description": q.description or q.title}
    if q.grafana == "table":
        return [{**base, "id": next_id, "type": "table", "title": title, "gridPos": {"w": w, "h": h},
                 "targets": [_target(q, 1)], "options": {"showHeader": True},
                 "fieldConfig": {"defaults": {}, "overrides": [
                     {"matcher": {"id": "byName", "options": c}, "properties": [{"id": "unit", "value": u}]}
                     for c, u in _UNITS.items()]}}]
    groups = q.panels or ((),)
    out = []
    for i, group in enumerate(groups):
        sub = f"{title}: {', '.join(group)}" if group else title
        panel: dict[str, Any] = {
            **base, "id": next_id + i, "type": "timeseries", "title": sub,
            "gridPos": {"w": w if not group else max(6, w // len(groups)), "h": h},
            "targets": [_target(q, 0)],
            "fieldConfig": {"defaults": {"unit": _UNITS.get(group[0], "short") if group else "short",
                                         "min": 0, "custom": {"drawStyle": "line", "showPoints": "auto",
                                                              "spanNulls": False}},
                            "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}
        if group:  # the same query, one group of its columns per panel (no shared axis for bytes and counts)
            panel["transformations"] = [{"id": "filterFieldsByName",
                                         "options": {"include": {"names": ["time", *group]}}}]
        out.append(panel)
    return out


def dashboard() -> dict[str, Any]:
    """The dashboard JSON: the LAYOUT's named queries that exist, laid out on Grafana's 24-column grid."""
    queries = load()
    panels: list[dict[str, Any]] = []
    used: set[str] = set()
    x = y = row_h = 0
    for name, title, w, h in LAYOUT:
        q = queries.get(name)
        if q is None or q.grafana == "none":
            continue
        for p in _panels(q, title, w, h, len(panels) + 1):
            pw = p["gridPos"]["w"]
            if x + pw > 24:
                x, y, row_h = 0, y + row_h, 0
            p["gridPos"].update(x=x, y=y)
            x += pw
            row_h = max(row_h, p["gridPos"]["h"])
            panels.append(p)
        used.update(q.params)
    variables = [_variable(v) for v in VARIABLES if v in used]
    return {
        "uid": "flowmon-flows", "title": "flowmon - flows", "tags": ["flowmon"], "timezone": "utc",
        "editable": False, "schemaVersion": 41, "version": 1, "refresh": "1m", "graphTooltip": 1,
        "time": {"from": "now-6h", "to": "now"},
        "description": "The console's panels: every query is a named query of flowmon's schemas/queries "
                       "(generated by python -m pipeline.views.grafana; FINAL reads, exact).",
        "annotations": {"list": []}, "links": [{"title": "Pipeline", "type": "link", "url": "/d/flowmon-pipeline"}],
        "templating": {"list": variables}, "panels": panels,
    }


def main() -> None:
    sys.stdout.write(json.dumps(dashboard(), indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
