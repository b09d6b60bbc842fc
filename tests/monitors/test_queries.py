"""The monitor tables and named queries on chdb: what the sink writes, read back by monitors, monitor_series and
monitor_nhi (sums exact, duplicates collapsed, percentiles from the merged histogram as pipeline/wire/rtt.py computes
them, NHI per window)."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from pipeline.clickhouse.writer import WindowSink
from pipeline.monitors.definition import parse_monitor
from pipeline.monitors.evaluate import monitor_row
from pipeline.views.queries import run
from pipeline.wire.rtt import merge_into, quantile

T0 = 1_700_000_400 // 600 * 600


def ts(t: int) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def rec(monitor: str, src: str, dst: str, ws: int, rng: random.Random, closed_at: float = 1.0) -> dict:
    hist = {str(rng.randint(150, 230)): rng.randint(1, 40) for _ in range(rng.randint(0, 6))}
    n = sum(hist.values())
    return {"version": 1, "monitor": monitor, "src_subnet": src, "src_az": "a1", "src_vpc": "v", "dst_subnet": dst,
            "dst_az": "a2", "dst_vpc": "v", "window_start": ws, "window_s": 600,
            "bytes": rng.randint(0, 10**9), "bytes_sent": 1, "bytes_received": 2,
            "retransmissions": rng.randint(0, 50), "timeouts": rng.randint(0, 5), "flows": 4, "rtt_count": n,
            "rtt_sum_us": n * rng.randint(500, 5000), "rtt_hist": hist, "closed_at": ws + 700 + closed_at}


def nhi(monitor: str, start: int, end: int | None, updated: float, scope: str = "a2") -> dict:
    return {"version": 1, "monitor": monitor, "scope_kind": "az", "scope": scope, "status": "degraded",
            "start": start, "end": end, "element": f"az:{scope}", "updated": updated}


def test_monitor_series_is_exact(client):
    rng = random.Random(11)
    sink = WindowSink(client)
    recs = [rec("m", f"s{i}", f"d{j}", T0 + 600 * k, rng) for k in range(4) for i in range(3) for j in range(2)]
    other = [rec("other", "s0", "d0", T0, rng)]
    sink.write_monitor_windows(recs[:10] + other)
    sink.write_monitor_windows(recs[5:])  # overlapping batch: the same records again, in another insert
    sink.write_monitor_windows([dict(r, closed_at=r["closed_at"] + 9) for r in recs[:3]])  # a re-emission
    # NHI: a closed period over window 1, an open one from window 3 on
    sink.write_monitor_nhi([nhi("m", T0 + 600 + 30, T0 + 600 + 90, 1.0), nhi("m", T0 + 1800 + 570, None, 2.0),
                            nhi("other", T0, None, 1.0)])
    rows = run(client, "monitor_series", monitor="m", **{"from": ts(T0), "to": ts(T0 + 2400)})
    assert [int(r["time"].timestamp()) for r in rows] == [T0 + 600 * k for k in range(4)]
    for k, row in enumerate(rows):
        mine = [r for r in recs if r["window_start"] == T0 + 600 * k]
        hist: dict[int, int] = {}
        for r in mine:
            merge_into(hist, {int(b): c for b, c in r["rtt_hist"].items()})
        assert row["bytes"] == sum(r["bytes"] for r in mine)
        assert row["retransmissions"] == sum(r["retransmissions"] for r in mine)
        assert row["timeouts"] == sum(r["timeouts"] for r in mine)
        assert row["pairs"] == 6
        n = sum(r["rtt_count"] for r in mine)
        assert row["rtt_mean_us"] == pytest.approx(sum(r["rtt_sum_us"] for r in mine) / n)
        for q in (50, 90, 99):
            assert row[f"rtt_p{q}_us"] == pytest.approx(quantile(hist, q / 100), rel=1e-12), (k, q)
    assert [r["nhi"] for r in rows] == ["healthy", "degraded", "healthy", "degraded"]
    # a range: only its windows
    assert len(run(client, "monitor_series", monitor="m", **{"from": ts(T0 + 600), "to": ts(T0 + 1200)})) == 1
    assert run(client, "monitor_series", monitor="none", **{"from": ts(T0), "to": ts(T0 + 2400)}) == []


def test_no_rtt_gives_zero_percentiles(client):
    r = rec("m", "s", "d", T0, random.Random(1)) | {"rtt_hist": {}, "rtt_count": 0, "rtt_sum_us": 0}
    WindowSink(client).write_monitor_windows([r])
    (row,) = run(client, "monitor_series", monitor="m", **{"from": ts(T0), "to": ts(T0 + 600)})
    assert (row["rtt_mean_us"], row["rtt_p50_us"], row["rtt_p99_us"], row["nhi"]) == (0, 0, 0, "healthy")


def test_monitor_nhi_lists_the_periods_overlapping_the_range(client):
    sink = WindowSink(client)
    sink.write_monitor_nhi([nhi("m", T0, None, 1.0), nhi("m", T0 + 3000, None, 1.0, "a9"),
                            nhi("m", T0 - 5000, T0 - 4000, 1.0, "a3")])
    sink.write_monitor_nhi([nhi("m", T0, T0 + 120, 2.0)])  # the period ended: the later record wins
    rows = run(client, "monitor_nhi", monitor="m", **{"from": ts(T0), "to": ts(T0 + 3600)})
    assert [(r["scope"], int(r["start"].timestamp()), r["end"] and int(r["end"].timestamp()), r["element"])
            for r in rows] == [("a2", T0, T0 + 120, "az:a2"), ("a9", T0 + 3000, None, "az:a9")]


def test_monitors_lists_the_live_definitions(client):
    sink = WindowSink(client)
    a = parse_monitor({"name": "a", "local": "subnet:s1", "remote": "any", "description": "first"})
    a2 = parse_monitor({"name": "a", "local": "subnet:s1", "remote": ["az:a2"]})
    b = parse_monitor({"name": "b", "local": "az:a1", "remote": "any"})
    sink.write_monitors([monitor_row(b"a", a.to_json(), 1000), monitor_row(b"b", b.to_json(), 1000)])
    sink.write_monitors([monitor_row(b"a", a2.to_json(), 2000), monitor_row(b"b", None, 3000)])
    sink.write_monitors([monitor_row(b"a", a.to_json(), 1000)])  # an old message read again: it loses
    rows = run(client, "monitors")
    assert [(r["name"], r["local"], r["remote"], r["description"]) for r in rows] == [
        ("a", ["subnet:s1"], ["az:a2"], "")]
    assert parse_monitor(__import__("orjson").loads(rows[0]["definition"])) == a2
