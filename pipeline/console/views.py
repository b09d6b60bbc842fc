"""Page models: the named queries' rows turned into what a page shows.  *core*

No I/O here: the AZ matrix, the path of a pair with its blamed element, the NHI bar under
a series, and the plotly.js chart specifications (plain dicts; plotly.js draws them).

Examples
--------
>>> m = az_matrix([{"src_az": "a1", "dst_az": "a2", "bytes": 10, "retransmissions": 0, "timeouts": 0,
...                 "rtt_mean_us": 900.0, "pairs": 1, "health": "degraded", "blamed": ["az_pair:a1|a2"],
...                 "alerts_infrastructure": 1, "alerts_workload": 0, "alerts_other": 0}])
>>> m.azs, m.cell("a1", "a2").status, m.cell("a2", "a1").status
(['a1', 'a2'], 'degraded', 'none')
>>> [ (n.kind, n.ident, n.blamed) for n in path_nodes(
...     {"src_subnet": "s1", "src_az": "a1", "dst_subnet": "s2", "dst_az": "a2"},
...     [{"cause": "infrastructure", "element_kind": "az_pair", "element": "a1|a2", "instance": "",
...       "degraded_reporters": []}]) ]  # doctest: +NORMALIZE_WHITESPACE
[('instance', 'instances in s1', False), ('subnet', 's1', False), ('az', 'a1', True), ('az', 'a2', True),
 ('subnet', 's2', False), ('instance', 'instances in s2', False)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["Cell", "Matrix", "az_matrix", "PathNode", "path_nodes", "series_figure", "bars_figure",
           "human_bytes", "ms", "as_utc", "CATEGORIES", "METRICS"]

CATEGORIES = ("all", "intra-az", "inter-az", "inter-vpc", "unclassified")
METRICS = ("bytes", "retransmissions", "timeouts", "rtt")

HEALTHY, DEGRADED, ALERTS, NONE = "healthy", "degraded", "alerts", "none"
_COLOURS = {"healthy": "#2e7d32", "degraded": "#c62828"}


def as_utc(t: Any) -> datetime:
    """A result timestamp as an aware UTC datetime (the console runs its engine in UTC; a naive value is UTC)."""
    if isinstance(t, (int, float)):
        return datetime.fromtimestamp(t, tz=timezone.utc)
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def human_bytes(n: float | None) -> str:
    """Decimal units, as the reference's 10 MB / 20 MB windows.

    >>> human_bytes(20_000_800), human_bytes(999), human_bytes(0)
    ('20.0 MB', '999 B', '0 B')
    """
    n = float(n or 0)
    for unit, f in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= f:
            return f"{n / f:.1f} {unit}"
    return f"{n:.0f} B"


def ms(us: float | None) -> str:
    """>>> ms(1190.0), ms(0), ms(None)
    ('1.19 ms', '–', '–')
    """
    if not us:
        return "–"
    v = us / 1000
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"


@dataclass(frozen=True)
class Cell:
    src_az: str
    dst_az: str
    row: Mapping[str, Any] | None

    @property
    def status(self) -> str:
        if self.row is None:
            return NONE
        if self.row.get("health") == DEGRADED:
            return DEGRADED
        if self.row.get("alerts_workload") or self.row.get("alerts_other"):
            return ALERTS
        return HEALTHY

    @property
    def alerts(self) -> int:
        r = self.row or {}
        return int(r.get("alerts_infrastructure", 0) + r.get("alerts_workload", 0) + r.get("alerts_other", 0))


@dataclass
class Matrix:
    azs: list[str]
    cells: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)

    def cell(self, src: str, dst: str) -> Cell:
        return Cell(src, dst, self.cells.get((src, dst)))

    def az_status(self, az: str) -> str:
        """The AZ's own Network Health Indicator (degraded when an element in it or touching it was blamed)."""
        for (a, b), r in self.cells.items():
            if (a == az and r.get("src_az_health") == DEGRADED) or (b == az and r.get("dst_az_health") == DEGRADED):
                return DEGRADED
        return HEALTHY if any(az in k for k in self.cells) else NONE


def az_matrix(rows: Iterable[Mapping[str, Any]]) -> Matrix:
    cells = {(r["src_az"], r["dst_az"]): r for r in rows}
    azs = sorted({a for k in cells for a in k})
    return Matrix(azs, cells)


@dataclass(frozen=True)
class PathNode:
    kind: str  # instance | subnet | az
    ident: str
    side: str  # src | dst
    blamed: bool = False
    why: str = ""
    members: tuple[str, ...] = ()


def path_nodes(pair: Mapping[str, Any], alerts: Sequence[Mapping[str, Any]]) -> list[PathNode]:
    """instance → subnet → AZ → AZ → subnet → instance for a pair; an element blamed by an
    infrastructure verdict (or the instance of a workload verdict) is marked."""
    blamed: dict[tuple[str, str], str] = {}
    src_instances: list[str] = []
    for a in alerts:
        kind, el = a.get("element_kind") or "", a.get("element") or ""
        why = f"{a.get('cause')} ({a.get('metric', '')}, alert {a.get('alert_id', '')})".replace(", alert )", ")")
        if a.get("instance"):
            src_instances.append(a["instance"])
        if kind == "az_pair":
            for az in el.split("|"):
                blamed.setdefault(("az", az), why)
        elif kind in ("az", "subnet", "instance") and el:
            blamed.setdefault((kind, el), why)
            if kind == "instance":
                src_instances.append(el)
    src_instances = sorted(set(src_instances))
    src, dst = pair["src_subnet"], pair["dst_subnet"]

    def node(kind: str, ident: str, side: str) -> PathNode:
        w = blamed.get((kind, ident), "")
        return PathNode(kind, ident, side, bool(w), w)

    hit = [blamed[("instance", i)] for i in src_instances if ("instance", i) in blamed]
    if src_instances:
        first = PathNode("instance", f"{len(src_instances)} reporting instance{'s' if len(src_instances) > 1 else ''}",
                         "src", bool(hit), hit[0] if hit else "", tuple(src_instances))
    else:
        first = PathNode("instance", f"instances in {src}", "src")
    out = [first, node("subnet", src, "src"), node("az", pair["src_az"], "src")]
    if pair["dst_az"] != pair["src_az"]:
        out.append(node("az", pair["dst_az"], "dst"))
    out += [node("subnet", dst, "dst"), PathNode("instance", f"instances in {dst}", "dst")]
    return out


# --- charts: plotly.js specifications ---------------------------------------------------------------------

def _axis(title: str, domain: tuple[float, float], **kw: Any) -> dict[str, Any]:
    return {"title": {"text": title, "font": {"size": 11}}, "domain": list(domain), "rangemode": "tozero",
            "zeroline": True, "automargin": True, **kw}


def series_figure(rows: Sequence[Mapping[str, Any]], window_s: int = 600,
                  nhi: Sequence[str] | None = None, title: str = "") -> dict[str, Any]:
    """Panels sharing the time axis: data per window (MB), retransmissions, timeouts (its own axis, so a
    few timeouts are not flattened under thousands of retransmissions), RTT (mean and percentiles, ms),
    and, when ``nhi`` is given (one 'healthy'/'degraded' per row), the health bar under them."""
    t = [as_utc(r["time"] if "time" in r else r["window_start"]).strftime("%Y-%m-%dT%H:%M:%SZ") for r in rows]
    has_nhi = nhi is not None
    panels = 5 if has_nhi else 4
    gap = 0.03
    heights = [0.27, 0.2, 0.16, 0.27] + ([0.06] if has_nhi else [])
    total = sum(heights) + gap * (panels - 1)
    domains, top = [], 1.0
    for h in heights:
        h = h / total
        domains.append((max(top - h, 0.0), top))
        top -= h + gap / total
    data: list[dict[str, Any]] = [
        {"type": "bar", "x": t, "y": [r["bytes"] / 1e6 for r in rows], "name": "data (MB)", "yaxis": "y",
         "marker": {"color": "#1565c0"}, "hovertemplate": "%{y:.2f} MB<extra></extra>"},
        {"type": "scatter", "mode": "lines+markers", "x": t, "y": [r["retransmissions"] for r in rows],
         "name": "retransmissions", "yaxis": "y2", "line": {"color": "#ef6c00"}},
        {"type": "scatter", "mode": "lines+markers", "x": t, "y": [r["timeouts"] for r in rows],
         "name": "timeouts", "yaxis": "y3", "line": {"color": "#6a1b9a"}},
    ]
    for key, name, dash, colour in (("rtt_mean_us", "RTT mean", "solid", "#00695c"),
                                    ("rtt_p50_us", "RTT p50", "dot", "#26a69a"),
                                    ("rtt_p90_us", "RTT p90", "dash", "#80cbc4"),
                                    ("rtt_p99_us", "RTT p99", "dashdot", "#004d40")):
        if rows and key in rows[0]:
            data.append({"type": "scatter", "mode": "lines", "x": t, "y": [(r[key] or 0) / 1000 for r in rows],
                         "name": name, "yaxis": "y4", "line": {"dash": dash, "color": colour}})
    layout: dict[str, Any] = {
        "title": {"text": title, "font": {"size": 14}} if title else None,
        "height": 620 if has_nhi else 580, "margin": {"l": 70, "r": 20, "t": 40 if title else 20, "b": 40},
        "legend": {"orientation": "h", "y": 1.06, "x": 0},
        "xaxis": {"type": "date", "anchor": "y5" if has_nhi else "y4", "title": {"text": "window start (UTC)"}},
        "yaxis": _axis("MB / window", domains[0]),
        "yaxis2": _axis("retransmissions", domains[1]),
        "yaxis3": _axis("timeouts", domains[2]),
        "yaxis4": _axis("RTT (ms)", domains[3]),
        "bargap": 0.2, "hovermode": "x unified",
    }
    if has_nhi:
        data.append({"type": "bar", "x": t, "y": [1] * len(rows), "yaxis": "y5", "name": "network health",
                     "marker": {"color": [_COLOURS.get(s, "#9e9e9e") for s in nhi]},
                     "customdata": list(nhi), "hovertemplate": "%{customdata}<extra>NHI</extra>",
                     "showlegend": False})
        layout["yaxis5"] = {"domain": list(domains[4]), "showticklabels": False, "range": [0, 1], "fixedrange": True,
                            "title": {"text": "health", "font": {"size": 11}}}
        layout["bargap"] = 0.05
    return {"data": data, "layout": layout}


def bars_figure(labels: Sequence[str], values: Sequence[float], unit: str, colour: str = "#1565c0") -> dict[str, Any]:
    """A horizontal bar chart (largest on top)."""
    return {"data": [{"type": "bar", "orientation": "h", "y": list(labels)[::-1], "x": list(values)[::-1],
                      "marker": {"color": colour}, "hovertemplate": f"%{{x}} {unit}<extra></extra>"}],
            "layout": {"height": max(160, 28 * len(labels) + 60), "margin": {"l": 220, "r": 20, "t": 10, "b": 40},
                       "xaxis": {"title": {"text": unit}, "rangemode": "tozero"}}}
