"""Migration 006 (flow_windows partitioned by day): applied on top of a database with data, every named query
over the windows answers what it answered before, and totals stay exact with a window landed twice.

Real chdb. The database is first built with the steps up to 005 only (the layout before 006), filled through
the sink with windows over two days and two months, one of them landed a second time in another insert (a
worker re-emitting it after a crash: the copy that ReplacingMergeTree must collapse); then ``migrate()`` applies
006 with the rows in place.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.clickhouse.migrations import applied_steps, migrate
from pipeline.clickhouse.writer import WindowSink
from pipeline.views import queries
from tests.support.chstate import migrated_before
from tests.support.records import make_windows

DAY = 86400
T0 = 1_706_659_200  # 2024-01-31 00:00 UTC: the windows span January and February
RANGE = {"from": T0, "to": T0 + 3 * DAY}
PAIR = {"src": "subnet-0", "dst": "subnet-0"}


def window_queries() -> dict[str, dict]:
    """Every named query that reads flow_windows, with its parameters (the pair ones on PAIR)."""
    calls = {"az_matrix": RANGE, "traffic_by_category": RANGE, "fleet_series": RANGE, "latest_window": {},
             "top_pairs": dict(RANGE, category="all", metric="bytes", n=50),
             "pair_path": dict(RANGE, **PAIR), "pair_series": dict(RANGE, **PAIR)}
    names = {n for n, q in queries.load().items() if "flow_windows" in q.sql}
    assert set(calls) <= names
    return {n: calls[n] for n in sorted(calls)}


@pytest.fixture
def before_006(chdb_dsn, tmp_path):
    """A database at steps 001..005 holding windows, one of them twice (two inserts)."""
    c, name = migrated_before(chdb_dsn, "006", tmp_path)
    assert "006_flow_windows_by_day" not in applied_steps(c)
    sink = WindowSink(c)
    windows = [w for k, start in enumerate((T0, T0 + 600, T0 + DAY + 1200, T0 + 2 * DAY + 600))
               for w in make_windows(20, seed=k, window_start=start)]
    sink.write_windows(windows)
    again = dict(windows[0], closed_at=windows[0]["closed_at"] + 90)  # the same window, re-emitted later
    sink.write_windows([again])
    yield c, windows
    c.command(f"DROP DATABASE IF EXISTS {name}", use_database=False)
    c.close()


REFERENCE = Path(__file__).parent / "reference_queries"


def run_before(c, name: str, **values) -> list[dict]:
    """A named query on a database without pair_hours (before 009): the rolled-up ones as they were before the
    rollup (tests/clickhouse/reference_queries/, the same computation over flow_windows FINAL)."""
    hourly = name == "fleet_series" and values["to"] - values["from"] > 2 * DAY  # one row per hour beyond 48 h
    path = REFERENCE / f"{name}{'_hourly' if hourly else ''}.sql"
    if not path.exists():
        return queries.run(c, name, **values)
    result = c.query(queries.NamedQuery.parse(name, path.read_text()).sql, parameters=values)
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


def exact_totals(windows: list[dict]) -> dict[str, int]:
    return {"rows": len(windows), "bytes": sum(w["bytes"] for w in windows),
            "retransmissions": sum(w["retransmissions"] for w in windows)}


def totals(c) -> dict[str, int]:
    r = c.query("SELECT count(), sum(bytes), sum(retransmissions) FROM flow_windows FINAL").result_rows[0]
    return {"rows": r[0], "bytes": r[1], "retransmissions": r[2]}


def test_006_applies_on_data_and_every_window_query_answers_the_same(before_006):
    c, windows = before_006
    assert c.command("SELECT count() FROM flow_windows") == len(windows) + 1, "the copy is there, unmerged"
    before = {n: run_before(c, n, **p) for n, p in window_queries().items()}
    assert totals(c) == exact_totals(windows)
    assert sum(r["bytes"] for r in before["traffic_by_category"]) == exact_totals(windows)["bytes"]

    assert migrate(c)[0] == "006_flow_windows_by_day"  # and the later steps (009 backfills pair_hours)

    assert c.command("SELECT partition_key FROM system.tables WHERE database = currentDatabase() "
                     "AND name = 'flow_windows'") == "toDate(window_start)"
    assert not c.command("EXISTS TABLE flow_windows_by_day"), "the old table is dropped after the exchange"
    parts = c.query("SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() "
                    "AND table = 'flow_windows' AND active ORDER BY partition").result_rows
    assert [p[0] for p in parts] == ["2024-01-31", "2024-02-01", "2024-02-02"]
    after = {n: queries.run(c, n, **p) for n, p in window_queries().items()}
    assert after == before
    assert totals(c) == exact_totals(windows)
    assert migrate(c) == [], "a second run applies nothing (the dropped copy is not a missing object)"

    # and the sink keeps landing exact totals on the new layout: the same window again, in its own insert
    WindowSink(c).write_windows([dict(windows[5], closed_at=windows[5]["closed_at"] + 300)])
    assert c.command("SELECT count() FROM flow_windows") > len(windows)
    assert totals(c) == exact_totals(windows)
    assert {n: queries.run(c, n, **p) for n, p in window_queries().items()} == before


def test_the_sink_lands_a_batch_spanning_more_than_100_days(client):
    """One partition per day: a replayed backlog's batch may hold windows of more days than ClickHouse's default
    max_partitions_per_insert_block (100); the sink lifts the limit for its inserts."""
    windows = [w for d in range(120) for w in make_windows(2, seed=d, window_start=T0 + d * DAY)]
    assert WindowSink(client).write_windows(windows) == len(windows)
    assert client.command("SELECT uniqExact(_partition_id) FROM flow_windows") == 120
    assert totals(client) == exact_totals(windows)
