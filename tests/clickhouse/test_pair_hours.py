"""Migrations 009 and 010 (pair_hours and pair_days, the exact hourly and daily rollups): the named queries that
read them answer exactly what the same computation over ``flow_windows FINAL`` answers, with windows landed
twice, re-sent batches, ranges that are not hour- or day-aligned, a subnet that moved within an hour and within
a day, windows that share a 10-minute slot, and a backfill that ran twice.

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


def dirty_pair_days(client) -> int:
    return client.command("SELECT count() FROM pair_days FINAL "
                          "WHERE NOT (rows = bitCount(slots) AND placement_min = placement_max)")


def test_the_rollup_answers_exactly_with_duplicates_and_unaligned_ranges(client):
    windows = land(client)
    assert_exact(client)
    assert dirty_pair_hours(client) == 0 and dirty_pair_days(client) == 0

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
    assert dirty_pair_hours(client) >= 2 and dirty_pair_days(client) >= 2
    assert_exact(client)

    # the same after every merge (flow_windows collapses its copies; the rollups keep them counted, still dirty)
    for table in ("flow_windows", "pair_hours", "pair_days"):
        client.command(f"OPTIMIZE TABLE {table} FINAL")
    assert client.command("SELECT count() FROM flow_windows") == client.command("SELECT count() FROM flow_windows FINAL")
    assert dirty_pair_hours(client) >= 2 and dirty_pair_days(client) >= 2
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


def test_a_day_that_is_not_clean_is_read_from_its_clean_hours(client):
    """Day 3: subnet-2 moves to another AZ at 01:00 (each hour keeps one placement, the day has two) and one pair
    has a window starting at 02:05 beside the one at 02:00 (two windows in one 10-minute slot, distinct minutes).
    Both make the pair-day dirty while every pair-hour stays clean: the answer comes from pair_hours, exactly."""
    land(client)
    sink = WindowSink(client)
    day3 = T0 + 3 * DAY
    for k in range(18):  # 00:00 .. 02:50
        ws = make_windows(20, seed=200 + k, window_start=day3 + k * 600)
        sink.write_windows([dict(w, src_az="az-moved") if w["src_subnet"] == "subnet-2" and k >= 6 else w
                            for w in ws])
    sink.write_windows(make_windows(20, seed=300, window_start=day3 + 2 * HOUR + 300)[:1])
    assert dirty_pair_hours(client) == 0
    assert dirty_pair_days(client) >= 2
    assert_exact(client, [(T0, T0 + 4 * DAY), (T0 - DAY, T0 + 5 * DAY), (day3, day3 + DAY), (day3 + 600, day3 + 3 * HOUR)])
    rows = queries.run(client, "top_pairs", **{"from": day3, "to": day3 + DAY}, category="all", metric="bytes", n=500)
    assert {r["src_az"] for r in rows if r["src_subnet"] == "subnet-2"} >= {"az-moved"}
    assert len({(r["src_subnet"], r["dst_subnet"]) for r in rows}) < len(rows), "a moved pair: one row per placement"


@pytest.mark.parametrize("level", ["pair_days", "pair_hours"])
def test_the_queries_read_the_rollups_for_their_clean_full_periods(client, level):
    """Not only exact, also read from the rollup: a clean row written into the rollup by hand (and into no other
    table) shows in every rolled-up query whose range covers its period fully, and in none that does not."""
    land(client)
    period, start = (DAY, T0 + DAY) if level == "pair_days" else (HOUR, T0 + DAY + 5 * HOUR)
    mask = "slots" if level == "pair_days" else "windows"
    key = "day" if level == "pair_days" else "hour"
    client.command(f"INSERT INTO {level} ({key}, src_subnet, dst_subnet, src_az, dst_az, src_vpc, dst_vpc, "
                   f"placement_min, placement_max, bytes, retransmissions, rows, {mask}) "
                   f"VALUES ({start}, 'subnet-x', 'subnet-y', 'az-0', 'az-1', 'vpc-1', 'vpc-1', 1, 1, 123456789, 7, 1, 1)")
    if level == "pair_hours":  # an hour outside the full days of the range below (10:00 .. 16:00 of day 1)
        rng = {"from": T0 + DAY + 4 * HOUR + 600, "to": T0 + DAY + 16 * HOUR}
    else:
        rng = {"from": T0 + DAY - 600, "to": T0 + 2 * DAY + 600}
    pairs = queries.run(client, "top_pairs", **rng, category="all", metric="bytes", n=500)
    assert [r["bytes"] for r in pairs if r["src_subnet"] == "subnet-x"] == [123456789]
    cats = {r["category"]: r for r in queries.run(client, "traffic_by_category", **rng)}
    ref = {r["category"]: r for r in reference(client, "traffic_by_category", **rng)}
    assert cats["inter-az"]["bytes"] == ref["inter-az"]["bytes"] + 123456789
    matrix = {(r["src_az"], r["dst_az"]): r for r in queries.run(client, "az_matrix", **rng)}
    assert matrix[("az-0", "az-1")]["retransmissions"] == {
        (r["src_az"], r["dst_az"]): r for r in reference(client, "az_matrix", **rng)}[("az-0", "az-1")]["retransmissions"] + 7
    # a range that covers the period only in part reads its windows instead
    part = {"from": start + 600, "to": start + period}
    assert not [r for r in queries.run(client, "top_pairs", **part, category="all", metric="bytes", n=500)
                if r["src_subnet"] == "subnet-x"]


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


def test_009_and_010_backfill_a_database_with_data_and_rerun_safely(before_009):
    c = before_009
    before = {(n, str(v)): reference(c, n, **v) for s, e in RANGES for n, v in calls(s, e)}
    assert migrate(c) == ["009_pair_hours", "010_pair_days"]
    for table in ("pair_hours", "pair_days"):
        assert c.command(f"SELECT sum(rows) FROM {table}") == c.command("SELECT count() FROM flow_windows")
    after = {(n, str(v)): queries.run(c, n, **v) for s, e in RANGES for n, v in calls(s, e)}
    assert after == before
    assert migrate(c) == [], "a second run applies nothing"

    # the backfills run again (by hand, or a step replayed after its objects were dropped): every pair-hour and
    # pair-day is counted twice, so every one is dirty, and the answers stay exact
    for step, table in (("009_pair_hours", "pair_hours"), ("010_pair_days", "pair_days")):
        backfill = next(s for s in load_steps() if s.name == step).statements[-1]
        assert backfill.startswith(f"INSERT INTO {table}")
        c.command(backfill)
    assert dirty_pair_hours(c) == c.command("SELECT count() FROM pair_hours FINAL")
    assert dirty_pair_days(c) == c.command("SELECT count() FROM pair_days FINAL")
    assert {(n, str(v)): queries.run(c, n, **v) for s, e in RANGES for n, v in calls(s, e)} == before

    # and the sink keeps the rollup up to date
    WindowSink(c).write_windows(make_windows(20, seed=7, window_start=T0 + 3 * DAY))
    assert_exact(c, [(T0, T0 + 4 * DAY), (T0 + 3 * DAY, T0 + 3 * DAY + HOUR)])


def test_every_rolled_up_query_has_its_reference():
    assert set(ROLLED) <= set(REFERENCE)
    for name in ROLLED:
        assert "pair_hours" in queries.get(name).sql
        assert ("pair_days" in queries.get(name).sql) == (name != "fleet_series")
        assert queries.get(name).params == REFERENCE[name].params


@pytest.mark.parametrize("table", ["pair_hours", "pair_days"])
def test_a_retried_batch_writes_the_rollup_block_that_failed_the_first_time(client, table):
    """A batch whose flow_windows block landed while the view's rollup block did not (here: the view detached
    during the first insert), sent again with the same token: the source block is deduplicated, the view's block
    is written once (deduplicate_blocks_in_dependent_materialized_views), so the rollup is neither missing nor
    doubled. (Without that setting chdb pushed every retry to the view: the hour was doubled, hence dirty, and read
    from flow_windows instead: exact, but not from the rollup.)"""
    sink = WindowSink(client)
    ws = make_windows(20, seed=3, window_start=T0)
    client.command(f"DETACH TABLE {table}_mv")
    try:
        sink.write_windows(ws)
    finally:
        client.command(f"ATTACH TABLE {table}_mv")
    assert client.command(f"SELECT count() FROM {table}") == 0
    sink.write_windows(ws)  # the sink's retry: the same batch, the same token
    sink.write_windows(ws)  # and once more: nothing more lands anywhere
    assert client.command("SELECT count() FROM flow_windows") == len(ws)
    for t in ("pair_hours", "pair_days"):
        assert client.command(f"SELECT sum(rows) FROM {t} FINAL") == len(ws)
        assert client.command(f"SELECT sum(bytes) FROM {t} FINAL") == sum(w["bytes"] for w in ws)
    assert dirty_pair_hours(client) == 0 and dirty_pair_days(client) == 0
