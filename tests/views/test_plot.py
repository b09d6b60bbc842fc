"""``flowmon plot``: the figure tells pairs apart, gives each metric its own scale, marks alerts and NHI periods,
labels time readably, and is written where (and as what) the user asked.

Rows go into real chdb tables (flow_windows, flow_anomalies, flow_attributions, nhi); the figure is read back
through :func:`pipeline.views.plot.read` and :func:`draw`, and its artists are asserted on.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
import pytest

from pipeline.errors import InputError, NoData
from pipeline.views.plot import draw, plot_windows, read

from tests.cli.test_errors import flowmon, one_error

UTC = timezone.utc
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
W = 600
PANELS = ("data", "retransmissions", "timeouts", "rtt mean", "rtt p99")


def _window(src: str, dst: str, k: int, bytes_: int, retrans: int = 0, timeouts: int = 0,
            rtt_us: float = 1000.0) -> dict[str, Any]:
    return {"version": 1, "src_subnet": src, "dst_subnet": dst, "src_az": "az1", "dst_az": "az2", "src_vpc": "v",
            "dst_vpc": "v", "window_start": T0 + timedelta(seconds=k * W), "window_s": W, "bytes": bytes_,
            "bytes_sent": bytes_, "bytes_received": 0, "retransmissions": retrans, "timeouts": timeouts, "flows": 1,
            "samples": 1, "hosts": 1, "rtt_count": 10, "rtt_sum_us": int(rtt_us * 10), "rtt_mean_us": rtt_us,
            "rtt_p50_us": rtt_us, "rtt_p90_us": rtt_us * 1.5, "rtt_p99_us": rtt_us * 2,
            "closed_at": T0 + timedelta(seconds=(k + 1) * W + 30)}


def _insert(client: Any, table: str, rows: list[dict[str, Any]]) -> None:
    cols = list(rows[0])
    client.insert(table, [[r[c] for c in cols] for r in rows], column_names=cols)


def _http_experiment(client: Any, n: int = 6) -> None:
    """The reference's HTTP experiment: one pair at 20 MB and four at exactly 10 MB per window."""
    rows = []
    for k in range(n):
        rows.append(_window("subnet-1a", "subnet-1a", k, 20_000_000, rtt_us=200))
        for src, dst in (("subnet-1a", "subnet-1c"), ("subnet-1a", "subnet-1d"), ("subnet-1c", "subnet-1a"),
                         ("subnet-1d", "subnet-1a")):
            rows.append(_window(src, dst, k, 10_000_000))
    _insert(client, "flow_windows", rows)


def _figure(client: Any, **kw: Any) -> Any:
    windows, alerts, nhi, start, end = read(client, **kw)
    return draw(windows, alerts, nhi, start=start, end=end)


def _panels(fig: Any) -> dict[str, Any]:
    """The data panels by name (the first axes is the event strip)."""
    return dict(zip(PANELS, fig.axes[1:6]))


def test_identical_pairs_are_told_apart(client: Any) -> None:
    _http_experiment(client)
    fig = _figure(client)
    data = _panels(fig)["data"]
    lines = [ln for ln in data.get_lines() if ln.get_label().startswith("subnet-")]
    assert len(lines) == 5
    looks = {(ln.get_color(), ln.get_marker(), ln.get_linestyle()) for ln in lines}
    assert len(looks) == 5  # each pair its own colour, marker and line style ...
    assert len({ln.get_color() for ln in lines}) == 5 and len({ln.get_marker() for ln in lines}) == 5
    tens = [ln for ln in lines if set(ln.get_ydata()) == {10.0}]
    assert len(tens) == 4  # ... the numbers are true (no offset), in MB ...
    assert len({ln.get_markersize() for ln in tens}) == 4  # ... concentric marks of decreasing size ...
    note = data.get_title(loc="right")
    assert note.startswith("identical values: 4 pairs") and "subnet-1c → subnet-1a" in note  # ... and said so
    assert "(all 10)" in note
    legend = fig.legends[0]
    assert len([t for t in legend.get_texts() if t.get_text().startswith("subnet-")]) == 5
    # the legend lies outside every data panel
    fig.draw_without_rendering()
    box = legend.get_window_extent()
    assert all(box.x0 >= ax.get_window_extent().x1 for ax in fig.axes)


def test_bytes_in_units_chosen_from_the_data_and_y_from_zero(client: Any) -> None:
    _insert(client, "flow_windows", [_window("a", "b", k, 2_500_000_000 + k) for k in range(3)])
    data = _panels(_figure(client))["data"]
    assert "(GB)" in data.get_title(loc="left") and data.get_ylabel() == "GB"
    assert data.get_lines()[0].get_ydata()[0] == pytest.approx(2.5)
    assert all(ax.get_ylim()[0] == 0 for ax in _panels(_figure(client)).values())


def test_timeouts_have_a_scale_of_their_own(client: Any) -> None:
    rows = [_window("a", "b", k, 1_000_000, retrans=8000 if k == 2 else 10, timeouts=3 if k == 2 else 0)
            for k in range(5)]
    _insert(client, "flow_windows", rows)
    p = _panels(_figure(client))
    assert p["retransmissions"].get_ylim()[1] >= 8000
    assert 3 < p["timeouts"].get_ylim()[1] < 10  # the timeouts' own maximum, not the retransmissions'
    assert max(p["timeouts"].get_lines()[0].get_ydata()) == 3


def test_rtt_mean_and_p99_in_ms_on_one_scale(client: Any) -> None:
    _insert(client, "flow_windows", [_window("a", "b", k, 1_000_000, rtt_us=1500) for k in range(3)])
    p = _panels(_figure(client))
    assert list(p["rtt mean"].get_lines()[0].get_ydata()) == [1.5] * 3
    assert list(p["rtt p99"].get_lines()[0].get_ydata()) == [3.0] * 3
    assert p["rtt mean"].get_ylim() == p["rtt p99"].get_ylim() and p["rtt mean"].get_ylim()[0] == 0


def _alert(client: Any, alert_id: str, first: datetime, last: datetime, resolved: datetime | None,
           attributed: bool = True) -> None:
    base = {"version": 1, "alert_id": alert_id, "scope": "pair", "instance": None, "src_subnet": "a",
            "src_az": "az1", "src_vpc": "v", "dst_subnet": "b", "dst_az": "az2", "dst_vpc": "v",
            "metric": "retrans_rate", "observed": 0.05, "expected": 0.001, "score": 9.0, "severity": "critical",
            "first_seen": first, "last_seen": last, "interval_s": 30, "window_start": first, "reason": None}
    events = [dict(base, event="opened", seq=0, at=first, emitted_at=first)]
    if resolved:
        events.append(dict(base, event="resolved", seq=1, at=resolved, reason="normal", emitted_at=resolved))
    _insert(client, "flow_anomalies", events)
    if attributed:
        _insert(client, "flow_attributions", [{
            "version": 1, "alert_id": alert_id, "at": first, "scope": "pair", "instance": None, "src_subnet": "a",
            "dst_subnet": "b", "metric": "retrans_rate", "family": "retrans", "cause": "infrastructure",
            "element_kind": "az_pair", "element": "az1|az2", "confidence": 0.9, "purity": 1.0,
            "reporters_crossing": 4, "reporters_degraded": 4, "degraded": [], "keys_scored": 4, "keys_degraded": 4,
            "exonerating": 0, "exonerating_reporters": [], "keys_attributed": 4, "evidence_level": "pair",
            "attributed_at": first}])


def _spans(ax: Any) -> list[tuple[datetime, datetime]]:
    """The time extent of every patch (shaded span, bar) of ``ax``."""
    out = []
    for patch in ax.patches:
        xs = patch.get_patch_transform().transform(patch.get_path().vertices)[:, 0]
        out.append((mdates.num2date(min(xs), tz=UTC), mdates.num2date(max(xs), tz=UTC)))
    return out


def test_alerts_and_nhi_marked_on_the_time_axis(client: Any) -> None:
    _insert(client, "flow_windows", [_window("a", "b", k, 1_000_000) for k in range(12)])
    first, last, resolved = T0 + timedelta(minutes=60), T0 + timedelta(minutes=79, seconds=30), T0 + timedelta(
        minutes=81, seconds=30)
    _alert(client, "x1", first, last, resolved)
    _alert(client, "x3", first + timedelta(minutes=5), last, resolved, attributed=False)  # overlaps x1 (own row)
    _alert(client, "x2", T0 + timedelta(minutes=100), T0 + timedelta(minutes=101), None, attributed=False)
    _insert(client, "nhi", [{"version": 1, "scope_kind": "az_pair", "scope": "az1|az2", "status": "degraded",
                             "start": first, "end": T0 + timedelta(minutes=80), "element": "az_pair:az1|az2",
                             "updated": T0 + timedelta(minutes=81)}])
    fig = _figure(client)
    strip, data = fig.axes[0], _panels(fig)["data"]
    spans = _spans(data)
    close = [s for s in spans if abs(s[0] - first) < timedelta(seconds=1)]
    assert close and abs(close[0][1] - resolved) < timedelta(seconds=1)  # open from first_seen until resolved
    assert any(abs(s[0] - T0 - timedelta(minutes=100)) < timedelta(seconds=1) for s in spans)  # the open one
    assert len(spans) == 2  # overlapping alerts shade their union, once
    labels = [t.get_text() for t in strip.texts]
    assert any("1 critical retrans_rate alert on" in t and "cause infrastructure: az_pair az1|az2" in t
               for t in labels), labels
    assert any("not attributed" in t and "still open" in t for t in labels), labels
    assert len(labels) == 3  # x1; x3 and x2 (same metric, severity, not attributed) share a row; the NHI period
    assert any(t.strip().startswith("NHI az_pair az1|az2 degraded") for t in labels), labels
    nhi_bars = [s for s in _spans(strip) if abs(s[0] - first) < timedelta(seconds=1)
                and abs(s[1] - T0 - timedelta(minutes=80)) < timedelta(seconds=1)]
    assert nhi_bars


def test_time_labels_concise_in_utc_with_the_date_once(client: Any) -> None:
    _http_experiment(client)
    fig = _figure(client)
    fig.draw_without_rendering()
    last = fig.axes[-1]
    assert isinstance(last.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
    assert "UTC" in last.get_xlabel()
    ticks = [t.get_text() for t in last.get_xticklabels() if t.get_text()]
    assert ticks and all(":" in t and "2026" not in t and "Dec" not in t for t in ticks), ticks
    assert "2026" in last.xaxis.get_offset_text().get_text()  # the date, once


def test_range_pairs_and_top(client: Any) -> None:
    _http_experiment(client, n=12)
    windows, *_ = read(client, start=T0 + timedelta(minutes=30), end=T0 + timedelta(minutes=60))
    assert {w["t"] for w in windows} == {int((T0 + timedelta(minutes=m)).timestamp()) for m in (30, 40, 50)}
    windows, *_ = read(client, top=2)
    assert {(w["src_subnet"], w["dst_subnet"]) for w in windows} >= {("subnet-1a", "subnet-1a")}
    assert len({(w["src_subnet"], w["dst_subnet"]) for w in windows}) == 2
    windows, *_ = read(client, pairs=[("subnet-1d", "subnet-1a")])
    assert {(w["src_subnet"], w["dst_subnet"]) for w in windows} == {("subnet-1d", "subnet-1a")}
    with pytest.raises(NoData, match="no windows for x:y"):
        read(client, pairs=[("x", "y")])
    with pytest.raises(NoData, match="no windows between"):
        read(client, start=T0 + timedelta(days=3))


@pytest.mark.parametrize("name,magic", [("deep/er/flows.png", b"\x89PNG"), ("f.svg", b"<?xml"), ("f.PDF", b"%PDF")])
def test_written_where_asked_in_the_asked_format(client: Any, tmp_path: Path, name: str, magic: bytes) -> None:
    _http_experiment(client)
    out = tmp_path / name
    assert plot_windows(client, out) == out
    assert out.read_bytes().startswith(magic)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [out]  # nothing else written


@pytest.mark.parametrize("name,needle", [(".", "is a directory"), ("f.jpg", "from .jpg"), ("f", "without a suffix")])
def test_bad_out_refused(client: Any, tmp_path: Path, name: str, needle: str) -> None:
    _http_experiment(client)
    with pytest.raises(InputError, match=needle):
        plot_windows(client, tmp_path / name)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args,needles", [
    (("--out", "."), ("--out .: is a directory", ".png")),
    (("--out", "plot.gif"), ("cannot tell the format", ".png, .svg or .pdf")),
    (("--from", "yesterday"), ("--from 'yesterday': not a time", "-2h")),
    (("--to", "2026-13-01"), ("--to '2026-13-01': not a time",)),
    (("--pair", "subnet-1a"), ("--pair 'subnet-1a': not SRC:DST",)),
])
def test_cli_mistakes_are_one_line(tmp_path: Path, args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    one_error(flowmon(tmp_path, "plot", *args), 2, *needles)
    assert not any(tmp_path.iterdir())  # refused before anything was read or created


def test_cli_from_after_to(tmp_path: Path) -> None:
    one_error(flowmon(tmp_path, "plot", "--from", "2026-12-01T03:00", "--to", "2026-12-01T02:00"), 2,
              "is not before --to")

