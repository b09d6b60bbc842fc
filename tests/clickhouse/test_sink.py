"""pipeline.clickhouse.writer (and pipeline.clickhouse.client.connect) against real chdb: exact totals, idempotency, speed."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.clickhouse.client import ChdbPathConflict, connect, parse_chdb_dsn
from pipeline.clickhouse.writer import WINDOW_COLUMNS, WindowSink
from tests.support.records import example_window, make_windows

SUMMED = ("bytes_sent", "bytes_received", "bytes", "retransmissions", "timeouts", "flows", "samples", "rtt_count", "rtt_sum_us")




def totals(client, table: str = "flow_windows FINAL") -> dict[str, int]:
    row = client.query(f"SELECT count(), {', '.join(f'sum({c})' for c in SUMMED)} FROM {table}").result_rows[0]
    return dict(zip(("rows", *SUMMED), row))


def expected_totals(windows: list[dict]) -> dict[str, int]:
    return {"rows": len(windows), **{c: sum(w[c] for w in windows) for c in SUMMED}}


def raw_rows(client) -> int:
    return client.command("SELECT count() FROM flow_windows")


def test_exact_totals(client):
    windows = make_windows(500, seed=1)
    assert WindowSink(client).write_windows(windows) == 500
    assert totals(client) == expected_totals(windows)
    assert totals(client, "flow_windows_final") == expected_totals(windows)
    # merged histograms: the sum over all windows of every bucket
    merged = client.command("SELECT toJSONString(sumMap(rtt_hist)) FROM flow_windows FINAL")
    want: dict[str, int] = {}
    for w in windows:
        for b, c in w["rtt_hist"].items():
            want[b] = want.get(b, 0) + c
    assert json.loads(merged) == want


def test_every_field_round_trips(client):
    w = make_windows(1, seed=2)[0]
    WindowSink(client).write_windows([w])
    row = client.query(
        f"SELECT {', '.join(c for c in WINDOW_COLUMNS if c not in ('window_start', 'closed_at'))}, "
        "toUnixTimestamp(window_start), toUnixTimestamp64Milli(closed_at) FROM flow_windows"
    ).named_results()
    got = next(iter(row))
    for c in WINDOW_COLUMNS:
        if c == "window_start":
            assert got["toUnixTimestamp(window_start)"] == w[c]
        elif c == "closed_at":
            assert got["toUnixTimestamp64Milli(closed_at)"] == round(w[c] * 1000)
        elif c == "rtt_hist":
            assert got[c] == {int(b): n for b, n in w[c].items()}
        elif isinstance(w[c], float):
            assert got[c] == pytest.approx(w[c])
        else:
            assert got[c] == w[c], c


def test_same_batch_three_times_lands_once(client):
    windows = make_windows(200, seed=3)
    sink = WindowSink(client)
    for _ in range(3):
        sink.write_windows(windows)
    sink.write_windows(list(reversed(windows)))  # same content, other order: same token
    assert raw_rows(client) == 200  # dropped at insert time, not merely at merge
    assert totals(client) == expected_totals(windows)


def test_a_deduplicated_insert_never_leaves_other_rows(client):
    """Content A, then B over the same keys, then A again emitted later: the table shows A (the latest)."""
    a = make_windows(20, seed=6)
    b = [dict(w, bytes=w["bytes"] + 1, closed_at=w["closed_at"] + 100) for w in a]
    again = [dict(w, closed_at=w["closed_at"] + 200) for w in a]  # A's content, emitted after B
    sink = WindowSink(client)
    for batch in (a, b, again):
        sink.write_windows(batch)
    assert totals(client) == expected_totals(again)
    sink.write_windows(b)  # B's very batch retried: dropped, or collapsed under A's later version
    assert totals(client) == expected_totals(again)


def test_reemitted_window_counts_once(client):
    windows = make_windows(50, seed=4)
    sink = WindowSink(client)
    copy = dict(windows[7], closed_at=windows[7]["closed_at"] + 30)  # re-emitted after a crash
    assert sink.write_windows([*windows, copy]) == 50  # collapsed inside the batch
    assert sink.write_windows([copy, *make_windows(5, seed=5, window_start=1_700_001_000)]) == 6  # another batch
    assert raw_rows(client) == 56  # the duplicate is stored until a merge...
    assert totals(client) == expected_totals(windows + make_windows(5, seed=5, window_start=1_700_001_000))  # ...FINAL counts it once
    client.command("OPTIMIZE TABLE flow_windows FINAL")
    assert raw_rows(client) == 55


def test_az_traffic_categories(client):
    base = {"window_start": 1_700_000_400, "bytes_sent": 0, "bytes_received": 10, "bytes": 10}
    windows = [
        example_window(src_subnet="a1", dst_subnet="a1b", src_az="1a", dst_az="1a", **base),
        example_window(src_subnet="c1", dst_subnet="a1", src_az="1c", dst_az="1a", **base),
        example_window(src_subnet="a1", dst_subnet="o1", src_az="1a", dst_az="2a", dst_vpc="vpc-2", **base),
        example_window(src_subnet="a1", dst_subnet="external", src_az="1a", dst_az="", dst_vpc="", **base),
    ]
    WindowSink(client).write_windows(windows)
    rows = client.query("SELECT category, sum(bytes) FROM az_traffic GROUP BY category ORDER BY category").result_rows
    assert rows == [("external", 10), ("inter-az", 10), ("inter-vpc", 10), ("intra-az", 10)]


def test_deadletters_collapse_and_keep_payloads(client):
    def dl(offset, sample_index=None, **kw):
        return {
            "version": 1, "reason": "wrong_type", "field": "samples[0].flows" if sample_index is not None else None,
            "detail": "flows must be an integer", "stage": "ingest",
            "source": {"topic": "flow-reports-v1", "partition": 3, "offset": offset},
            "sample_index": sample_index, "samples": 1, "at": 1_700_000_000.5, **kw,
        }  # fmt: skip

    records = [
        dl(10, None, payload={"version": 2}),
        dl(11, 0, payload={"remote": {"ip": "10.0.0.1"}}),
        dl(11, 1, payload={"remote": {"ip": "10.0.0.2"}}),
        dl(12, None, payload_b64="AAEC", reason="malformed_json", samples=0),
    ]
    sink = WindowSink(client)
    assert sink.write_deadletters(records) == 4
    sink.write_deadletters(records)  # the same batch again: dropped
    sink.write_deadletters([dict(records[1], at=1_700_000_099.0)])  # redelivered later
    rows = client.query(
        "SELECT source_offset, sample_index, field, payload, payload_encoding FROM deadletter_final ORDER BY source_offset, sample_index"
    ).result_rows
    assert rows == [
        (10, None, None, '{"version":2}', "json"),
        (11, 0, "samples[0].flows", '{"remote":{"ip":"10.0.0.1"}}', "json"),
        (11, 1, "samples[0].flows", '{"remote":{"ip":"10.0.0.2"}}', "json"),
        (12, None, None, "AAEC", "base64"),
    ]
    assert client.command("SELECT count() FROM deadletter") == 5


def test_empty_batches(client):
    sink = WindowSink(client)
    assert sink.write_windows([]) == 0
    assert sink.write_deadletters([]) == 0
    assert sink.batches_written == 0


def test_ten_thousand_windows_per_call(client):
    """Three calls of 10,000 windows each all land (their speed: ``python -m benchmarks.micro``)."""
    sink = WindowSink(client)
    for k in range(3):
        windows = make_windows(10_000, seed=10 + k, window_start=1_700_000_400 + 600 * k)
        assert sink.write_windows(windows) == 10_000
    assert client.command("SELECT count() FROM flow_windows") == 30_000


def test_connect_resolves_relative_paths(chdb_dsn, monkeypatch):
    path, _ = parse_chdb_dsn(chdb_dsn)
    monkeypatch.chdir(os.path.dirname(path))
    c = connect(f"chdb://./{os.path.basename(path)}?database=default")
    try:
        assert c.path == path
        assert c.command("SELECT currentDatabase()") == "default"
    finally:
        c.close()


def test_one_chdb_directory_per_process(chdb_dsn, tmp_path):
    with pytest.raises(ChdbPathConflict, match="one chdb data directory at a time"):
        connect(f"chdb://{tmp_path / 'another'}")
