"""Draw what landed in ClickHouse: data, retransmissions, timeouts and RTT per subnet pair over time, with the
alerts and the Network Health Indicator's degraded periods on the same time axis.

Two parts. :func:`draw` is pure: rows (lists of dicts, as :func:`read` returns them) in, a matplotlib
``Figure`` out; nothing is queried or written. :func:`read` is the thin part that asks ClickHouse (through
the client it is given, every value a bound parameter), and :func:`plot_windows` reads, draws and writes
the file (PNG, SVG or PDF, chosen by the suffix of the path asked for).

How the figure reads
--------------------
* One panel per metric, sharing the time axis: data per window (kB/MB/GB/TB, the unit chosen from the
  data), retransmissions, timeouts (its own panel: a few timeouts stay visible beside thousands of
  retransmissions), RTT mean and RTT p99 (ms, one scale for both). Every y axis starts at 0.
* Each pair keeps one colour, marker and line style across the panels (the legend, outside the data,
  right). Values are drawn as they are; pairs whose values are exactly equal in a panel are said so in
  that panel's heading ("4 pairs identical: ..."), and their hollow markers, drawn in decreasing sizes,
  show as concentric rings.
* A point is one window, drawn at the window's centre.
* Top strip: alerts (grouped by metric and attribution, from ``alerts`` and ``flow_attributions``), open from
  ``first_seen`` until resolved (or ``last_seen`` while still open), and NHI degraded periods (``nhi``), as
  bars; the alerts are shaded across every panel.
* Time labels: matplotlib's ``ConciseDateFormatter`` in UTC; the date is written once.

Examples
--------
``flowmon plot --out flows.png`` (after ``flowmon demo``, or while a worker runs);
``flowmon plot --from -2h --pair subnet-1a:subnet-2b --out plots/loss.svg``.

>>> from datetime import datetime, timezone
>>> now = datetime(2026, 12, 1, 4, 0, tzinfo=timezone.utc)
>>> parse_when("-2h", now, "--from").isoformat(), parse_when("2026-12-01T03:00", now, "--to").isoformat()
('2026-12-01T02:00:00+00:00', '2026-12-01T03:00:00+00:00')
>>> human_bytes_unit(25_000_000)
(1000000.0, 'MB')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

__all__ = ["draw", "read", "plot_windows", "parse_when", "parse_pair", "output_format", "human_bytes_unit",
           "NO_DATA_HINT", "FORMATS", "DEFAULT_SPAN"]

NO_DATA_HINT = ("run a worker with the sink ('flowmon worker') and send it reports ('flowmon produce FILE', "
                "'flowmon simulate SCENARIO'), or try 'flowmon demo'")

#: file suffix -> what matplotlib writes
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
#: without --from, the plot shows this much time up to the newest window (or --to)
DEFAULT_SPAN = timedelta(hours=24)

UTC = timezone.utc
_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p"]
_STYLES = ["-", "--", "-.", ":"]
_SEVERITY = {"critical": "#d62728", "warning": "#ff9f1c"}
_NHI_COLOUR = "#7b3294"
_MAX_EVENT_ROWS = 8


# --- parsing what the user asked ----------------------------------------------------------------------
def parse_when(text: str, now: datetime, option: str) -> datetime:
    """A time from ``--from``/``--to``: ISO 8601 (no zone: UTC), ``now``, or relative to now (``-2h``, ``-30m``,
    ``-1d``). :class:`~pipeline.errors.InputError` otherwise.

    >>> now = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
    >>> parse_when("now", now, "--to") == now, parse_when("2026-12-01 03:00+01:00", now, "--to").hour
    (True, 2)
    >>> parse_when("yesterday", now, "--from")
    Traceback (most recent call last):
    ...
    pipeline.errors.InputError: --from 'yesterday': not a time
    """
    from pipeline.errors import InputError
    from pipeline.sim.scenario import parse_duration

    s = text.strip()
    if s.lower() == "now":
        return now
    if s.startswith("-"):
        try:
            return now - timedelta(seconds=parse_duration(s[1:]))
        except ValueError:
            pass
    else:
        try:
            t = datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
        except ValueError:
            pass
        else:
            return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    raise InputError(f"{option} {text!r}: not a time",
                     hint="use ISO 8601 (2026-12-01T03:00, UTC unless a zone is given), 'now', or a time "
                     "relative to now such as -2h, -30m, -1d")


def parse_pair(text: str) -> tuple[str, str]:
    """``SRC:DST`` (subnet names) as a tuple; :class:`~pipeline.errors.InputError` otherwise.

    >>> parse_pair("subnet-1a:subnet-2b")
    ('subnet-1a', 'subnet-2b')
    """
    from pipeline.errors import InputError

    src, sep, dst = text.partition(":")
    if not sep or not src.strip() or not dst.strip() or ":" in dst:
        raise InputError(f"--pair {text!r}: not SRC:DST", hint="name a subnet pair as e.g. subnet-1a:subnet-2b")
    return src.strip(), dst.strip()


def output_format(out: Path) -> str:
    """The format to write ``out`` in, from its suffix; :class:`~pipeline.errors.InputError` for a directory or
    another suffix.

    >>> output_format(Path("a/flows.SVG"))
    'svg'
    """
    from pipeline.errors import InputError

    out = Path(out)
    if out.is_dir():
        raise InputError(f"--out {out}: is a directory", hint=f"name a file, e.g. {out / 'flowmon-windows.png'}")
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise InputError(f"--out {out}: cannot tell the format from {out.suffix or 'a name without a suffix'}",
                         hint="end the file name in .png, .svg or .pdf")
    return fmt


def human_bytes_unit(largest: float) -> tuple[float, str]:
    """The decimal unit (divisor, name) that shows ``largest`` bytes as a number below 1000.

    >>> human_bytes_unit(0), human_bytes_unit(999), human_bytes_unit(4.2e9)
    ((1.0, 'B'), (1.0, 'B'), (1000000000.0, 'GB'))
    """
    for div, name in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if largest >= div:
            return div, name
    return 1.0, "B"


# --- the pure part: rows -> Figure --------------------------------------------------------------------
def _utc(t: int | float) -> datetime:
    return datetime.fromtimestamp(float(t), tz=UTC)


def _short(subnet: str) -> str:
    return subnet


def _pair_name(src: str, dst: str) -> str:
    return f"{_short(src)} → {_short(dst)}"


def _style(i: int, n: int) -> dict[str, Any]:
    """Pair ``i`` of ``n``: its colour, marker and line style (unique for up to 10×11 pairs), hollow markers in
    decreasing sizes so that equal values show as concentric marks."""
    return {"color": _COLOURS[i % len(_COLOURS)], "marker": _MARKERS[(i + i // len(_COLOURS)) % len(_MARKERS)],
            "ls": _STYLES[i % len(_STYLES)], "ms": 4 + 7 * (n - 1 - i) / max(n - 1, 1), "mfc": "none", "mew": 1.4,
            "lw": 1.4, "zorder": 3 + i}


def _identical(series: Mapping[str, Sequence[tuple[float, float | None]]]) -> list[list[str]]:
    """Groups (of two or more) of series names whose points are exactly equal."""
    groups: dict[tuple, list[str]] = {}
    for name, pts in series.items():
        if pts:
            groups.setdefault(tuple(pts), []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def _identical_note(groups: list[list[str]], values: Mapping[str, Sequence[tuple[float, float | None]]],
                    everything: int, width: int = 120) -> str:
    """What a panel's heading says of its identical series (wrapped to ``width`` characters).

    >>> pts = {"a": [(0, 1.0)], "b": [(0, 1.0)], "c": [(0, 2.0)]}
    >>> _identical_note([["a", "b"]], pts, 3)
    'identical values: a = b (all 1)'
    """
    import textwrap

    notes = []
    for g in groups:
        ys = {y for _, y in values[g[0]]}
        const = f" (all {next(iter(ys)):,.4g})" if len(ys) == 1 and None not in ys else ""
        who = "all pairs" if len(g) == everything else " = ".join(g) if len(g) <= 3 else f"{len(g)} pairs: {', '.join(g)}"
        notes.append(who + const)
    return textwrap.fill("identical values: " + "; ".join(notes), width) if notes else ""


def _event_rows(alerts: Iterable[Mapping[str, Any]], nhi: Iterable[Mapping[str, Any]],
                end: datetime) -> list[tuple[str, str, list[tuple[datetime, datetime]], bool]]:
    """Rows of the event strip: (label, colour, spans, any still open). Alerts with the same metric, severity
    and attribution share a row (their spans merged); NHI periods one row per scope."""
    groups: dict[tuple, dict[str, Any]] = {}
    for a in alerts:
        cause = a.get("cause") or ""
        elem = " ".join(x for x in (a.get("element_kind") or "", a.get("element") or "") if x)
        key = (a["metric"], a.get("severity") or "", cause, elem)
        g = groups.setdefault(key, {"spans": [], "n": 0, "scopes": {}, "open": False, "pairs": set()})
        g["n"] += 1
        g["scopes"][a.get("scope") or "?"] = g["scopes"].get(a.get("scope") or "?", 0) + 1
        g["pairs"].add((a.get("src_subnet"), a.get("dst_subnet")))
        is_open = a.get("state") != "resolved"
        g["open"] |= is_open
        stop = _utc(a["last_seen"]) if is_open or not a.get("resolved_at") else _utc(a["resolved_at"])
        g["spans"].append((_utc(a["first_seen"]), end if is_open else max(stop, _utc(a["last_seen"]))))
    rows = []
    for (metric, severity, cause, elem), g in sorted(groups.items(), key=lambda kv: (min(s for s, _ in
                                                                                          kv[1]["spans"]), kv[0])):
        scopes = ", ".join(f"{n} {s}" for s, n in sorted(g["scopes"].items()))
        n_pairs = len(g["pairs"])
        what = (f"{g['n']} {severity} {metric} alert{'s' if g['n'] != 1 else ''} on {n_pairs} "
                f"pair{'s' if n_pairs != 1 else ''} ({scopes} scope)")
        why = f"cause {cause}: {elem}" if cause and elem else (f"cause {cause}" if cause else "not attributed")
        label = f"{what} — {why}" + (" — still open" if g["open"] else "")
        rows.append((label, _SEVERITY.get(severity, _SEVERITY["warning"]), _merge(g["spans"]), g["open"]))
    for p in sorted(nhi, key=lambda p: (p["start"], p["scope_kind"], p["scope"])):
        stop = end if p.get("end") is None else _utc(p["end"])
        label = f"NHI {p['scope_kind']} {p['scope']} degraded" + (f" — blamed {p['element']}" if p.get("element") else "")
        label += " — still degraded" if p.get("end") is None else ""
        rows.append((label, _NHI_COLOUR, [(_utc(p["start"]), stop)], p.get("end") is None))
    return rows


def _merge(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[list[datetime]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def draw(windows: Sequence[Mapping[str, Any]], alerts: Sequence[Mapping[str, Any]] = (),
         nhi: Sequence[Mapping[str, Any]] = (), *, title: str = "flowmon: windows per subnet pair",
         start: datetime | None = None, end: datetime | None = None) -> Any:
    """The figure for ``windows`` (dicts with ``src_subnet, dst_subnet, t`` (window start, Unix seconds),
    ``window_s, bytes, retransmissions, timeouts, rtt_mean_us`` (None without RTT samples), ``rtt_p99_us``),
    ``alerts`` (``metric, severity, scope, state, src_subnet, dst_subnet, first_seen, last_seen, resolved_at``
    (Unix seconds; 0 or None while open) and, when attributed, ``cause, element_kind, element``) and ``nhi``
    (``scope_kind, scope, start, end`` (None while degraded), ``element``). Pairs are drawn in the order they
    first appear in ``windows``; the time axis spans ``start``..``end`` (default: the windows').
    Pure: returns a ``matplotlib.figure.Figure`` (no pyplot state, nothing written)."""
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    pairs: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for w in windows:
        pairs.setdefault((w["src_subnet"], w["dst_subnet"]), []).append(w)
    for rows in pairs.values():
        rows.sort(key=lambda w: w["t"])
    pairs = dict(sorted(pairs.items(), key=lambda kv: (-sum(w["bytes"] for w in kv[1]), kv[0])))  # largest first
    names = {p: _pair_name(*p) for p in pairs}
    window_s = sorted({int(w["window_s"]) for w in windows}) or [0]
    lo = min((_utc(w["t"]) for w in windows), default=start or datetime.now(UTC))
    hi = max((_utc(w["t"] + w["window_s"]) for w in windows), default=end or lo + timedelta(hours=1))
    start, end = start or lo, end or hi

    div, unit = human_bytes_unit(max((w["bytes"] for w in windows), default=0))
    panels = [  # (heading, y label, value of a window, integer counts)
        (f"Data per window ({unit})", unit, lambda w: w["bytes"] / div, False),
        ("Retransmissions per window", "segments", lambda w: w["retransmissions"], True),
        ("Timeouts per window (RTO expiries)", "timeouts", lambda w: w["timeouts"], True),
        ("RTT mean (ms)", "ms", lambda w: None if w.get("rtt_mean_us") is None else w["rtt_mean_us"] / 1000, False),
        ("RTT p99 (ms)", "ms", lambda w: None if w.get("rtt_mean_us") is None else w["rtt_p99_us"] / 1000, False),
    ]
    events = _event_rows(alerts, nhi, end)
    strip = max(len(events), 1) if len(events) <= _MAX_EVENT_ROWS else _MAX_EVENT_ROWS + 1
    fig = Figure(figsize=(13, 3 + 2.1 * len(panels) + 0.28 * strip), layout="constrained")
    axes = fig.subplots(len(panels) + 1, 1, sharex=True,
                        gridspec_kw={"height_ratios": [0.35 + 0.22 * strip] + [2.0] * len(panels)})
    ev_ax, data_axes = axes[0], axes[1:]
    rtt_axes = data_axes[3:]
    rtt_top = 0.0
    for ax, (heading, ylabel, value, counts) in zip(data_axes, panels):
        series: dict[str, list[tuple[float, float | None]]] = {}
        for i, (p, rows) in enumerate(pairs.items()):
            xs = [_utc(w["t"] + w["window_s"] / 2) for w in rows]
            ys = [value(w) for w in rows]
            series[names[p]] = [(w["t"], y) for w, y in zip(rows, ys)]
            ax.plot(xs, [float("nan") if y is None else y for y in ys], label=names[p], **_style(i, len(pairs)))
        top = max((y for pts in series.values() for _, y in pts if y is not None), default=0.0)
        if ax in rtt_axes:
            rtt_top = max(rtt_top, top)
        else:
            ax.set_ylim(0, top * 1.12 if top > 0 else 1)
        if counts:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_title(heading, loc="left", fontsize=10, fontweight="bold")
        note = _identical_note(_identical(series), series, len(series))
        if not top and series:
            note = "none in this range" if counts else "no samples in this range"
        if note:
            ax.set_title(note, loc="right", fontsize=7.5, color="#444444")
        ax.set_ylabel(ylabel)
        ax.grid(True, color="#e6e6e6", lw=0.8)
        ax.set_axisbelow(True)
    for ax in rtt_axes:
        ax.set_ylim(0, rtt_top * 1.12 if rtt_top > 0 else 1)

    # events: one row each, bars over time; alerts shaded across the data panels
    ev_ax.set_title("Alerts (by metric and attribution) and NHI degraded periods", loc="left", fontsize=10,
                    fontweight="bold")
    ev_ax.set_yticks([])
    ev_ax.set_ylim(strip, 0)
    for spine in ("left", "right", "top"):
        ev_ax.spines[spine].set_visible(False)
    if not events:
        ev_ax.text(0.5, 0.5, "no alerts and no NHI degraded periods in this range", transform=ev_ax.transAxes,
                   ha="center", va="center", fontsize=9, color="#444444")
    shown = events[:_MAX_EVENT_ROWS] if len(events) > _MAX_EVENT_ROWS else events
    for row, (label, colour, spans, _open) in enumerate(shown):
        for s, e in spans:
            s, e = max(s, start), min(e, end)
            if e <= s:
                continue
            ev_ax.barh(row + 0.5, e - s, left=s, height=0.7, color=colour, alpha=0.35, edgecolor=colour, lw=1)
        # the label where it fits: from the first bar's start, else ending at the last bar's end, else from the left
        first, last_end = max(spans[0][0], start), min(spans[-1][1], end)
        width = (len(label) + 2) * 0.0055  # in axes fractions, at 8 pt on this figure's width
        frac = ((first - start) / (end - start), (last_end - start) / (end - start))
        x, ha = (first, "left") if frac[0] + width <= 1 else (last_end, "right") if frac[1] >= width else (start, "left")
        ev_ax.text(x, row + 0.5, f" {label} ", ha=ha, va="center", fontsize=8, clip_on=True)
    # every alert (shown in the strip or not) shaded once across the data panels: the union of its severity's spans
    for colour in (_SEVERITY["warning"], _SEVERITY["critical"]):
        for s, e in _merge([span for _, c, spans, _ in events if c == colour for span in spans]):
            s, e = max(s, start), min(e, end)
            if e > s:
                for ax in data_axes:
                    ax.axvspan(s, e, color=colour, alpha=0.08, lw=0, zorder=0)
    if len(events) > _MAX_EVENT_ROWS:
        ev_ax.text(start, _MAX_EVENT_ROWS + 0.5, f" … {len(events) - _MAX_EVENT_ROWS} more rows "
                   "('flowmon alerts --no-follow' lists every alert)", ha="left", va="center", fontsize=8,
                   color="#444444")

    locator = mdates.AutoDateLocator(tz=UTC, minticks=5, maxticks=12)
    fmt = mdates.ConciseDateFormatter(locator, tz=UTC, show_offset=True)
    last = data_axes[-1]
    last.xaxis.set_major_locator(locator)
    last.xaxis.set_major_formatter(fmt)
    last.set_xlim(start, end)
    widths = ", ".join(f"{w // 60} min" if w % 60 == 0 else f"{w} s" for w in window_s)
    last.set_xlabel(f"time (UTC) — one point per window ({widths}), at the window's centre")

    handles = [Line2D([], [], label=names[p], **{k: v for k, v in _style(i, len(pairs)).items() if k != "zorder"})
               for i, p in enumerate(pairs)]
    handles += [Line2D([], [], color=_SEVERITY["critical"], lw=8, alpha=0.3, label="alert open (critical)"),
                Line2D([], [], color=_SEVERITY["warning"], lw=8, alpha=0.3, label="alert open (warning)"),
                Line2D([], [], color=_NHI_COLOUR, lw=8, alpha=0.35, label="NHI degraded")]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="subnet pair (src → dst),\nlargest first",
               title_fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=12)
    return fig


# --- the shell: ClickHouse -> rows -> file ------------------------------------------------------------
_WINDOWS = """
SELECT src_subnet, dst_subnet, toUnixTimestamp(window_start) AS t, window_s, bytes, retransmissions, timeouts,
       if(rtt_count = 0, NULL, rtt_sum_us / rtt_count) AS rtt_mean_us, rtt_p99_us
FROM flow_windows FINAL
WHERE window_start >= toDateTime({lo:UInt32}, 'UTC') AND window_start < toDateTime({hi:UInt32}, 'UTC')
  AND (src_subnet, dst_subnet) IN (
      SELECT src_subnet, dst_subnet FROM flow_windows FINAL
      WHERE window_start >= toDateTime({lo:UInt32}, 'UTC') AND window_start < toDateTime({hi:UInt32}, 'UTC')
        AND (length({pairs:Array(Tuple(String, String))}) = 0
             OR (src_subnet, dst_subnet) IN {pairs:Array(Tuple(String, String))})
      GROUP BY src_subnet, dst_subnet ORDER BY sum(bytes) DESC, src_subnet, dst_subnet LIMIT {top:UInt32})
ORDER BY t
"""

_ALERTS = """
SELECT a.alert_id AS alert_id, a.scope AS scope, a.src_subnet AS src_subnet, a.dst_subnet AS dst_subnet,
       a.metric AS metric, a.severity AS severity, a.state AS state,
       toUnixTimestamp(a.first_seen) AS first_seen, toUnixTimestamp(a.last_seen) AS last_seen,
       toUnixTimestamp(a.resolved_at) AS resolved_at, {attribution}
FROM alerts AS a {join}
WHERE a.first_seen < toDateTime({{hi:UInt32}}, 'UTC')
  AND greatest(a.last_seen, a.resolved_at) >= toDateTime({{lo:UInt32}}, 'UTC')
  AND (length({{pairs:Array(Tuple(String, String))}}) = 0
       OR (a.src_subnet, a.dst_subnet) IN {{pairs:Array(Tuple(String, String))}})
ORDER BY first_seen, alert_id
"""

_NHI = """
SELECT scope_kind, scope, toUnixTimestamp(start) AS start, toUnixTimestamp(end) AS end, element
FROM nhi FINAL
WHERE start < toDateTime({hi:UInt32}, 'UTC') AND (end IS NULL OR end >= toDateTime({lo:UInt32}, 'UTC'))
ORDER BY start, scope_kind, scope
"""


def _dicts(result: Any) -> list[dict[str, Any]]:
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


def read(client: Any, top: int = 8, pairs: Sequence[tuple[str, str]] = (), start: datetime | None = None,
         end: datetime | None = None) -> tuple[list[dict], list[dict], list[dict], datetime, datetime]:
    """What :func:`draw` needs, from ClickHouse: (windows, alerts, nhi, start, end). Without ``start``/``end``
    the range is :data:`DEFAULT_SPAN` up to the end of the newest window. The ``top`` pairs by bytes in the
    range (among ``pairs`` when given). :class:`~pipeline.errors.NoData` when no window is there."""
    from pipeline.errors import NoData

    tables = {r[0] for r in client.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
              .result_rows}
    if "flow_windows" not in tables:
        raise NoData("no windows in ClickHouse yet", hint=NO_DATA_HINT)
    held = client.query("SELECT count(), toUnixTimestamp(min(window_start)), "
                        "toUnixTimestamp(max(window_start + window_s)) FROM flow_windows").result_rows[0]
    if not held[0]:
        raise NoData("no windows in ClickHouse yet", hint=NO_DATA_HINT)
    held_lo, held_hi = _utc(held[1]), _utc(held[2])
    held_text = f"windows held span {held_lo:%Y-%m-%d %H:%M} to {held_hi:%Y-%m-%d %H:%M} UTC"
    if start is not None and end is not None and start >= end:
        from pipeline.errors import InputError
        raise InputError(f"--from {start:%Y-%m-%d %H:%M} is not before --to {end:%Y-%m-%d %H:%M} (UTC)",
                         hint="swap them, or leave one out")
    if end is None:
        end = held_hi if start is None or start < held_hi else start + DEFAULT_SPAN
    if start is None:
        start = end - DEFAULT_SPAN
    if held_lo < end:
        start = max(start, held_lo)  # nothing was ever before the first window: no empty years on the axis
    params = {"lo": int(start.timestamp()), "hi": int(end.timestamp()), "top": top,
              "pairs": [tuple(p) for p in pairs]}
    windows = _dicts(client.query(_WINDOWS, parameters=params))
    if not windows:
        which = f" for {', '.join(f'{s}:{d}' for s, d in pairs)}" if pairs else ""
        if pairs:
            biggest = client.query("SELECT src_subnet, dst_subnet FROM flow_windows FINAL GROUP BY 1, 2 "
                                   "ORDER BY sum(bytes) DESC LIMIT 3").result_rows
            held_text += "; pairs with the most bytes: " + ", ".join(f"{s}:{d}" for s, d in biggest)
        raise NoData(f"no windows{which} between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC",
                     hint=f"{held_text}; widen --from/--to" + (" or check --pair (SRC:DST subnet names)" if pairs else ""))
    alerts: list[dict] = []
    if "alerts" in tables:
        attributed = "flow_attributions" in tables
        sql = _ALERTS.format(
            attribution="t.cause AS cause, t.element_kind AS element_kind, t.element AS element" if attributed
            else "'' AS cause, NULL AS element_kind, NULL AS element",
            join="LEFT JOIN (SELECT alert_id, cause, element_kind, element FROM flow_attributions FINAL) AS t "
                 "ON t.alert_id = a.alert_id" if attributed else "")
        alerts = _dicts(client.query(sql, parameters=params))
    nhi = _dicts(client.query(_NHI, parameters=params)) if "nhi" in tables else []
    return windows, alerts, nhi, start, end


def plot_windows(client: Any, out: Path, top: int = 8, title: str = "flowmon: windows per subnet pair",
                 pairs: Sequence[tuple[str, str]] = (), start: datetime | None = None,
                 end: datetime | None = None) -> Path:
    """Read, draw and write the figure to ``out`` exactly (its parent directories created; PNG, SVG or PDF by
    the suffix); returns the path. :class:`~pipeline.errors.NoData` when no window is in the range,
    :class:`~pipeline.errors.InputError` for an ``out`` that is a directory or has another suffix."""
    out = Path(out)
    fmt = output_format(out)  # before any query: a bad path costs nothing
    windows, alerts, nhi, start, end = read(client, top, pairs, start, end)
    fig = draw(windows, alerts, nhi, title=title, start=start, end=end)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format=fmt, dpi=110)
    return out
