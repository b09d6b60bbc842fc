"""instance_windows on real chdb: the sink lands each closed window's instances exactly once, in step with
flow_windows, and the named query top_instances ranks them by category and metric."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from pipeline.clickhouse.writer import WindowSink
from pipeline.views.queries import run
from pipeline.wire.records import instance_entries
from tests.support.records import example_window, make_windows

SUMMED = ("bytes_sent", "bytes_received", "bytes", "retransmissions", "timeouts", "flows", "samples", "rtt_count",
          "rtt_sum_us")
KEY = "src_subnet, dst_subnet, window_s, toUnixTimestamp(window_start)"


def split(w: dict, n: int, seed: int) -> dict:
    """``w`` with ``instances``: its counters split among ``n`` instances of its source subnet, exactly."""
    rng = random.Random(seed)
    names = ("bytes_sent", "bytes_received", "retransmissions", "timeouts", "flows", "samples", "rtt_count",
             "rtt_sum_us")
    per: dict[str, list[int]] = {f"{w['src_subnet']}/{i}": [0] * 8 for i in range(n)}
    hosts = sorted(per)
    for j, c in enumerate(names):
        left = w[c]
        for h in hosts[:-1]:
            take = rng.randint(0, left) if c != "samples" else 1
            per[h][j] += take
            left -= take
        per[hosts[-1]][j] += left
    return dict(w, hosts=n, instances=instance_entries(per))


def windows(n: int, seed: int) -> list[dict]:
    return [split(dict(w, samples=max(w["samples"], 20)), 1 + i % 7, seed + i)
            for i, w in enumerate(make_windows(n, seed=seed))]


def per_window(client, table: str) -> dict[tuple, tuple]:
    rows = client.query(f"SELECT {KEY}, {', '.join(f'sum({c})' for c in SUMMED)} FROM {table} FINAL "
                        f"GROUP BY {KEY}").result_rows
    return {tuple(r[:4]): tuple(r[4:]) for r in rows}


def raw_rows(client, table: str = "instance_windows") -> int:
    return client.command(f"SELECT count() FROM {table}")


def test_instances_land_and_add_up_to_their_windows(client):
    ws = windows(200, seed=1)
    sink = WindowSink(client)
    assert sink.write_windows(ws) == 200
    assert sink.write_instance_windows(ws) == sum(len(w["instances"]) for w in ws)
    assert per_window(client, "instance_windows") == per_window(client, "flow_windows")
    assert len(per_window(client, "flow_windows")) == 200
    # every field of one entry, and the window's own fields it carries
    w = ws[3]
    e = w["instances"][0]
    row = client.query("SELECT instance, src_subnet, src_az, src_vpc, dst_subnet, dst_az, dst_vpc, "
                       "toUnixTimestamp(window_start), window_s, toUnixTimestamp64Milli(closed_at), "
                       f"{', '.join(SUMMED)} FROM instance_windows WHERE instance = %(i)s AND dst_subnet = %(d)s",
                       parameters={"i": e["instance"], "d": w["dst_subnet"]}).result_rows
    assert row == [(e["instance"], w["src_subnet"], w["src_az"], w["src_vpc"], w["dst_subnet"], w["dst_az"],
                    w["dst_vpc"], w["window_start"], w["window_s"], round(w["closed_at"] * 1000),
                    *(e[c] for c in SUMMED))]


def test_the_same_batch_again_lands_once(client):
    """A batch read again (offsets not committed) or retried: dropped at insert, in any order."""
    ws = windows(100, seed=2)
    sink = WindowSink(client)
    for batch in (ws, ws, list(reversed(ws))):
        sink.write_windows(batch)
        sink.write_instance_windows(batch)
    n = sum(len(w["instances"]) for w in ws)
    assert raw_rows(client) == n and raw_rows(client, "flow_windows") == 100
    assert per_window(client, "instance_windows") == per_window(client, "flow_windows")


def test_a_reemitted_window_counts_once(client):
    """A window emitted again after a crash (later closed_at), in the same batch and in another one."""
    ws = windows(30, seed=3)
    again = dict(ws[5], closed_at=ws[5]["closed_at"] + 40)
    sink = WindowSink(client)
    for batch in ([*ws, again], [again, ws[9]]):
        sink.write_windows(batch)
        sink.write_instance_windows(batch)
    n = sum(len(w["instances"]) for w in ws)
    assert raw_rows(client) == n + len(ws[5]["instances"]) + len(ws[9]["instances"])  # until a merge...
    assert client.command("SELECT count() FROM instance_windows FINAL") == n  # ...FINAL counts each once
    assert client.command("SELECT count() FROM instance_windows_final") == n
    assert per_window(client, "instance_windows") == per_window(client, "flow_windows")
    client.command("OPTIMIZE TABLE instance_windows FINAL")
    assert raw_rows(client) == n


def test_windows_without_instances_give_no_rows_and_bad_entries_are_refused(client):
    old = example_window()  # a record from before the field
    unknown = example_window(dst_subnet="x", instances=None)
    sink = WindowSink(client)
    assert sink.write_instance_windows([old, unknown]) == 0
    assert raw_rows(client) == 0
    good = split(example_window(dst_subnet="y"), 2, seed=0)
    bad = dict(good, dst_subnet="z", instances=[{k: v for k, v in good["instances"][0].items() if k != "bytes"}])
    # an entry missing a counter is refused, never filled from the window's own counter of the same name
    assert WindowSink.unwritable("instance_windows", [good, bad]) == {1: "KeyError: 'bytes'"}


# ---- the named query ---------------------------------------------------------------------------

T0 = 1_700_000_400
FROM, TO = datetime.fromtimestamp(T0, timezone.utc), datetime.fromtimestamp(T0 + 3600, timezone.utc)
TOPO = {  # subnet -> (az, vpc)
    "a1": ("az1", "vpc-1"), "a2": ("az1", "vpc-1"), "b1": ("az2", "vpc-1"), "o1": ("az1", "vpc-2"),
    "external": ("", ""),
}


def iw(instance: str, src: str, dst: str, *, bytes_: int = 0, retrans: int = 0, timeouts: int = 0,
       rtt: tuple[int, int] = (0, 0), ws: int = T0) -> tuple[tuple[str, str, int], dict]:
    """One instance's entry in the window of (src -> dst, ws)."""
    return (src, dst, ws), {"instance": instance, "bytes_sent": bytes_, "bytes_received": 0, "bytes": bytes_,
                            "retransmissions": retrans, "timeouts": timeouts, "flows": 1, "samples": 1,
                            "rtt_count": rtt[0], "rtt_sum_us": rtt[1]}


def pair_windows(entries: list[tuple[tuple[str, str, int], dict]]) -> list[dict]:
    """The closed windows holding ``entries``: each window's counters are the sums of its instances'."""
    by_key: dict[tuple[str, str, int], list[dict]] = {}
    for key, e in entries:
        by_key.setdefault(key, []).append(e)
    out = []
    for (src, dst, ws), es in by_key.items():
        (saz, svpc), (daz, dvpc) = TOPO[src], TOPO[dst]
        sums = {c: sum(e[c] for e in es) for c in SUMMED}
        out.append(example_window(src_subnet=src, src_az=saz, src_vpc=svpc, dst_subnet=dst, dst_az=daz, dst_vpc=dvpc,
                                  window_start=ws, hosts=len(es), **sums, instances=sorted(es, key=lambda e: e["instance"]),
                                  rtt_mean_us=sums["rtt_sum_us"] / sums["rtt_count"] if sums["rtt_count"] else 0.0))
    return out


@pytest.fixture
def ranked(client):
    ws = pair_windows([
        # intra-az (a1 -> a2, same VPC and AZ)
        iw("a1/0", "a1", "a2", bytes_=500, retrans=1, rtt=(10, 10_000)),
        iw("a1/0", "a1", "a1", bytes_=100, rtt=(10, 50_000), ws=T0 + 600),  # a second window and remote subnet
        iw("a1/1", "a1", "a2", bytes_=900, timeouts=4, rtt=(5, 10_000)),
        # inter-az (a1 -> b1)
        iw("a1/0", "a1", "b1", bytes_=50, retrans=30, timeouts=1, rtt=(2, 10_000)),
        iw("b1/0", "b1", "a1", bytes_=70, retrans=5, timeouts=9),  # no RTT samples
        # inter-vpc (a1 -> o1)
        iw("a2/0", "a2", "o1", bytes_=5000, retrans=2, rtt=(1, 50_000)),
        # unclassified: the remote is outside the topology
        iw("b1/1", "b1", "external", bytes_=8000, retrans=3, rtt=(4, 4_000)),
        # outside [from, to): never counted
        iw("a1/1", "a1", "a2", bytes_=10**9, retrans=10**6, timeouts=10**6, rtt=(1, 10**9), ws=T0 + 3600),
    ])
    sink = WindowSink(client)
    sink.write_windows(ws)
    sink.write_instance_windows(ws)
    sink.write_instance_windows(ws)  # a re-sent batch changes nothing
    return client


def top(client, category: str, metric: str, n: int = 10) -> list[tuple]:
    rows = run(client, "top_instances", **{"from": FROM, "to": TO}, category=category, metric=metric, n=n)
    return [(r["instance"], r["bytes"], r["retransmissions"], r["timeouts"], r["rtt_mean_us"], r["pairs"])
            for r in rows]


def test_top_instances_all_categories_by_each_metric(ranked):
    by_bytes = top(ranked, "all", "bytes")
    assert by_bytes == [
        ("b1/1", 8000, 3, 0, 1000.0, 1),
        ("a2/0", 5000, 2, 0, 50_000.0, 1),
        ("a1/1", 900, 0, 4, 2000.0, 1),
        ("a1/0", 650, 31, 1, 70_000 / 22, 3),
        ("b1/0", 70, 5, 9, 0.0, 1),
    ]
    assert [r[0] for r in top(ranked, "all", "retransmissions")] == ["a1/0", "b1/0", "b1/1", "a2/0", "a1/1"]
    assert [r[0] for r in top(ranked, "all", "timeouts")] == ["b1/0", "a1/1", "a1/0", "a2/0", "b1/1"]  # ties: by name
    # rtt: the mean, only instances with samples
    assert [(r[0], r[4]) for r in top(ranked, "all", "rtt")] == [
        ("a2/0", 50_000.0), ("a1/0", 70_000 / 22), ("a1/1", 2000.0), ("b1/1", 1000.0)]
    assert [r[0] for r in top(ranked, "all", "bytes", n=2)] == ["b1/1", "a2/0"]


def test_top_instances_by_category(ranked):
    assert top(ranked, "intra-az", "bytes") == [("a1/1", 900, 0, 4, 2000.0, 1), ("a1/0", 600, 1, 0, 3000.0, 2)]
    assert top(ranked, "intra-az", "rtt") == [("a1/0", 600, 1, 0, 3000.0, 2), ("a1/1", 900, 0, 4, 2000.0, 1)]
    assert top(ranked, "inter-az", "timeouts") == [("b1/0", 70, 5, 9, 0.0, 1), ("a1/0", 50, 30, 1, 5000.0, 1)]
    assert top(ranked, "inter-az", "rtt") == [("a1/0", 50, 30, 1, 5000.0, 1)]
    assert top(ranked, "inter-vpc", "retransmissions") == [("a2/0", 5000, 2, 0, 50_000.0, 1)]
    assert top(ranked, "unclassified", "bytes") == [("b1/1", 8000, 3, 0, 1000.0, 1)]
    rows = run(ranked, "top_instances", **{"from": FROM, "to": TO}, category="inter-az", metric="bytes", n=1)
    assert rows == [{"instance": "b1/0", "src_subnet": "b1", "src_az": "az2", "category": "inter-az", "bytes": 70,
                     "retransmissions": 5, "timeouts": 9, "rtt_mean_us": 0.0, "pairs": 1}]


def test_top_instances_agree_with_view_az_traffic(ranked):
    """The same category rule as az_traffic ('external' there is 'unclassified' here): per category, the
    instances' bytes add up to the view's."""
    view = dict(ranked.query("SELECT category, sum(bytes) FROM az_traffic WHERE window_start >= %(f)s "
                             "AND window_start < %(t)s GROUP BY category", parameters={"f": FROM, "t": TO}).result_rows)
    for cat, name in (("intra-az", "intra-az"), ("inter-az", "inter-az"), ("inter-vpc", "inter-vpc"),
                      ("external", "unclassified")):
        assert sum(r[1] for r in top(ranked, name, "bytes")) == view[cat], cat


@pytest.mark.parametrize("category, metric, said", [
    ("external", "bytes", "category must be one of"),
    ("all", "rtt_p99", "metric must be one of"),
])
def test_top_instances_refuses_an_unknown_category_or_metric(client, category, metric, said):
    """Also when no window is in the range (an empty table would look like an answer)."""
    with pytest.raises(Exception, match=said):
        top(client, category, metric)
