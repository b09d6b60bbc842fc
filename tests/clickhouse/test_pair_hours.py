"""Migration 009 (pair_hours, the exact hourly rollup): the named queries that read it answer exactly what the
same computation over ``flow_windows FINAL`` answers, with windows landed twice, re-sent batches, ranges that
are not hour-aligned, a subnet that moved, and a backfill that ran twice.

Real chdb. The reference is the queries' text before the rollup (tests/clickhouse/reference_queries/), run on
the same database: both are compared row by row.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.clickhouse.migrations import applied_steps, load_steps, migrate
from pipeline.clickhouse.writer import WindowSink
from pipeline.views import queries
from tests.support.chstate import migrated_before
from tests.support.records import make_windows

HERE = Path(__file__).parent
REFERENCE = {p.stem: queries.NamedQuery.parse(p.stem, p.read_text()) for p in (HERE / "reference_queries").glob("*.sql")}
HOUR, DAY = 3600, 86400
T0 = 1_706_659_200  # 2024-01-31 00:00 UTC
# windows every 10 minutes over three days, but not all of them (so hours hold 1 to 6 windows)
STARTS = [T0 + k * 600 for k in range(3 * 144) if k % 7 != 3]
ROLLED = ("traffic_by_category", "az_matrix", "top_pairs", "fleet_series")
# [from, to): hour-aligned or not (multiples of 600 s), shorter than an hour, longer than 48 hours
RANGES = [(T0, T0 + 3 * DAY), (T0 + 1200, T0 + DAY + 2400), (T0 + 600, T0 + 1800), (T0 + 3000, T0 + 4200),
          (T0 + 2 * HOUR, T0 + 5 * HOUR), (T0 + 1800, T0 + 3 * DAY - 600), (T0 + DAY - 600, T0 + 2 * DAY + 600),
          (T0 - DAY, T0 + 4 * DAY)]


def reference(client, name: str, **values) -> list[dict]:
    """What the named query must answer: the pre-rollup text over flow_windows FINAL."""
    if name == "fleet_series" and values["to"] - values["from"] > 2 * DAY:
        name = "fleet_series_hourly"
    q = REFERENCE[name]
    result = client.query(q.sql, parameters=values)
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


def calls(start: int, end: int) -> list[tuple[str, dict]]:
    r = {"from": start, "to": end}
    out = [(n, r) for n in ("traffic_by_category", "az_matrix", "fleet_series")]
    out += [("top_pairs", dict(r, category=c, metric=m, n=500))
            for c, m in (("all", "bytes"), ("inter-az", "rtt"), ("intra-az", "retransmissions"), ("all", "timeouts"))]
    return out


def assert_exact(client, ranges=RANGES) -> None:
    checked = 0
    for start, end in ranges:
        for name, values in calls(start, end):
            want = reference(client, name, **values)
            got = queries.run(client, name, **values)
            assert got == want, (name, start - T0, end - T0)
            checked += bool(want)
    assert checked >= 5 * len(ranges), "the ranges hold windows"


def land(client) -> list[dict]:
    """Windows of 20 pairs over three days, one sink batch per window start."""
    sink = WindowSink(client)
    out = []
    for k, start in enumerate(STARTS):
        ws = make_windows(20, seed=k, window_start=start)
        sink.write_windows(ws)
        out += ws
    return out


def dirty_pair_hours(client) -> int:
    return client.command("SELECT count() FROM pair_hours FINAL "
                          "WHERE NOT (rows = bitCount(windows) AND placement_min = placement_max)")


def test_the_rollup_answers_exactly_with_duplicates_and_unaligned_ranges(client):
    windows = land(client)
    assert_exact(client)
    assert dirty_pair_hours(client) == 0

    sink = WindowSink(client)
    # a window re-emitted after a crash, in another insert, with a later closed_at and other counters (the
    # copy ReplacingMergeTree keeps): its pair-hour is dirty, read from flow_windows FINAL
    w = windows[25]
    sink.write_windows([dict(w, closed_at=w["closed_at"] + 90, bytes=w["bytes"] + 7, retransmissions=99)])
    # a whole batch re-sent as it was: insert deduplication drops it (the sink's token) in flow_windows
    batch = [x for x in windows if x["window_start"] == STARTS[40]]
    sink.write_windows(batch)
    # windows at the edges of unaligned ranges landed twice
    for x in windows:
        if x["window_start"] in (T0 + 1200, T0 + DAY + 1800) and x["src_subnet"] == "subnet-1":
            sink.write_windows([dict(x, closed_at=x["closed_at"] + 30, timeouts=x["timeouts"] + 1)])
    assert client.command("SELECT count() FROM flow_windows") > client.command("SELECT count() FROM flow_windows FINAL")
    assert dirty_pair_hours(client) >= 2
    assert_exact(client)

    # the same after every merge (flow_windows collapses its copies; pair_hours keeps them counted, still dirty)
    client.command("OPTIMIZE TABLE flow_windows FINAL")
    client.command("OPTIMIZE TABLE pair_hours FINAL")
    assert client.command("SELECT count() FROM flow_windows") == client.command("SELECT count() FROM flow_windows FINAL")
    assert dirty_pair_hours(client) >= 2
    assert_exact(client)


def test_a_subnet_that_moved_within_an_hour_keeps_one_row_per_placement(client):
    land(client)
    sink = WindowSink(client)
    # subnet-2 moves to another AZ: in hour 0 a window not landed before (T0 + 30 min is not in STARTS) with the
    # new placement; in hour 1 one landed again with it (a re-emit after a topology change: the copy replaces
    # the old row in flow_windows FINAL)
    assert T0 + 1800 not in STARTS and T0 + HOUR + 1200 in STARTS
    for start in (T0 + 1800, T0 + HOUR + 1200):
        moved = [dict(w, src_az="az-moved", closed_at=w["closed_at"] + 60)
                 for w in make_windows(20, seed=99, window_start=start) if w["src_subnet"] == "subnet-2"]
        assert moved
        sink.write_windows(moved)
    assert dirty_pair_hours(client) >= 2 * len(moved)
    assert_exact(client)
    rows = queries.run(client, "top_pairs", **{"from": T0, "to": T0 + DAY}, category="all", metric="bytes", n=500)
    assert any(r["src_az"] == "az-moved" for r in rows)


def test_fleet_series_is_hourly_beyond_48_hours(client):
    land(client)
    short = queries.run(client, "fleet_series", **{"from": T0, "to": T0 + 2 * DAY})
    long = queries.run(client, "fleet_series", **{"from": T0, "to": T0 + 2 * DAY + 600})
    assert len(short) == len([s for s in STARTS if s < T0 + 2 * DAY])
    assert [r["time"].timestamp() for r in long] == [T0 + h * HOUR for h in range(49)]
    assert sum(r["bytes"] for r in long) == sum(r["bytes"] for r in short) + sum(
        r["bytes"] for r in queries.run(client, "fleet_series", **{"from": T0 + 2 * DAY, "to": T0 + 2 * DAY + 600}))


@pytest.fixture
def before_009(chdb_dsn, tmp_path):
    """A database at steps 001..008 holding windows, some landed twice."""
    c, name = migrated_before(chdb_dsn, "009", tmp_path)
    assert "009_pair_hours" not in applied_steps(c)
    windows = land(c)
    WindowSink(c).write_windows([dict(w, closed_at=w["closed_at"] + 90, bytes=1) for w in windows[300:310]])
    yield c
    c.command(f"DROP DATABASE IF EXISTS {name}", use_database=False)
    c.close()


def test_009_backfills_a_database_with_data_and_reruns_safely(before_009):
    c = before_009
    before = {(n, str(v)): reference(c, n, **v) for s, e in RANGES for n, v in calls(s, e)}
    assert migrate(c) == ["009_pair_hours"]
    assert c.command("SELECT sum(rows) FROM pair_hours") == c.command("SELECT count() FROM flow_windows")
    after = {(n, str(v)): queries.run(c, n, **v) for s, e in RANGES for n, v in calls(s, e)}
    assert after == before
    assert migrate(c) == [], "a second run applies nothing"

    # the backfill run again (by hand, or a step replayed after its objects were dropped): every pair-hour is
    # counted twice, so every one is dirty, and the answers stay exact
    backfill = next(s for s in load_steps() if s.name == "009_pair_hours").statements[-1]
    assert backfill.startswith("INSERT INTO pair_hours")
    c.command(backfill)
    assert dirty_pair_hours(c) == c.command("SELECT count() FROM pair_hours FINAL")
    assert {(n, str(v)): queries.run(c, n, **v) for s, e in RANGES for n, v in calls(s, e)} == before

    # and the sink keeps the rollup up to date
    WindowSink(c).write_windows(make_windows(20, seed=7, window_start=T0 + 3 * DAY))
    assert_exact(c, [(T0, T0 + 4 * DAY), (T0 + 3 * DAY, T0 + 3 * DAY + HOUR)])


def test_every_rolled_up_query_has_its_reference():
    assert set(ROLLED) <= set(REFERENCE)
    for name in ROLLED:
        assert "pair_hours" in queries.get(name).sql
        assert queries.get(name).params == REFERENCE[name].params


def test_a_retried_batch_writes_the_rollup_block_that_failed_the_first_time(client):
    """A batch whose flow_windows block landed while the view's pair_hours block did not (here: the view detached
    during the first insert), sent again with the same token: the source block is deduplicated, the view's block
    is written once (deduplicate_blocks_in_dependent_materialized_views), so the rollup is neither missing nor
    doubled. (Without that setting chdb pushed every retry to the view: the hour was doubled, hence dirty, and read
    from flow_windows instead: exact, but not from the rollup.)"""
    sink = WindowSink(client)
    ws = make_windows(20, seed=3, window_start=T0)
    client.command("DETACH TABLE pair_hours_mv")
    try:
        sink.write_windows(ws)
    finally:
        client.command("ATTACH TABLE pair_hours_mv")
    assert client.command("SELECT count() FROM pair_hours") == 0
    sink.write_windows(ws)  # the sink's retry: the same batch, the same token
    sink.write_windows(ws)  # and once more: nothing more lands anywhere
    assert client.command("SELECT count() FROM flow_windows") == len(ws)
    assert client.command("SELECT sum(rows) FROM pair_hours FINAL") == len(ws)
    assert dirty_pair_hours(client) == 0
    assert client.command("SELECT sum(bytes) FROM pair_hours FINAL") == sum(w["bytes"] for w in ws)
