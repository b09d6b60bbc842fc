"""Every named query runs on the embedded ClickHouse, and the numbers are the scenario's: the console and the
Grafana dashboards show these rows (pipeline.views.queries)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from pipeline.views import queries
from pipeline.wire.rtt import merge_into, quantile

ALL = sorted(queries.load())


def _params(q: queries.NamedQuery, res, **given):
    start = res.start
    values = {"from": start - 3600, "to": start + 86400, "category": "all", "metric": "bytes", "n": 10,
              "src": "subnet-1a", "dst": "subnet-2a", "alert_id": res.events[0]["alert_id"] if res.events else "x",
              "monitor": "none"}
    values.update(given)
    return {k: values[k] for k in q.params}


def _category(w) -> str:
    if "external" in (w.src_subnet, w.dst_subnet) or {w.src_vpc, w.dst_vpc} & {"", "external"}:
        return "unclassified"
    if w.src_vpc != w.dst_vpc:
        return "inter-vpc"
    return "intra-az" if w.src_az == w.dst_az else "inter-az"


@pytest.mark.parametrize("name", ALL)
def test_every_named_query_runs(fault_db, name):
    client, res = fault_db
    q = queries.get(name)
    rows = queries.run(client, name, **_params(q, res))
    if name not in ("deadletters_by_reason", "deadletters_latest", "monitors", "monitor_series", "monitor_nhi"):
        assert rows, f"{name}: no rows on the fault scenario"


def test_parameters_are_checked():
    with pytest.raises(queries.QueryError, match="missing parameters"):
        queries.get("top_pairs").bind(**{"from": 0, "to": 1})
    with pytest.raises(queries.QueryError, match="no named query"):
        queries.get("nope")
    with pytest.raises(queries.QueryError, match="params"):
        queries.NamedQuery.parse("x", "-- title: X\n-- params: a String\nSELECT {b:String}")


def test_categories_and_totals_are_the_windows(reference_db, fault_db):
    for client, res in (reference_db, fault_db):
        want: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for w in res.closed.values():
            t = want[_category(w)]
            t[0] += w.bytes
            t[1] += w.retransmissions
            t[2] += w.timeouts
        got = {r["category"]: [r["bytes"], r["retransmissions"], r["timeouts"]]
               for r in queries.run(client, "traffic_by_category", **{"from": res.start, "to": res.start + 86400})}
        assert got == dict(want)


def test_reference_pairs_carry_20_and_10_mb_per_window(reference_db):
    client, res = reference_db
    for src, dst, mb in (("subnet-1a", "subnet-1a", 20), ("subnet-1c", "subnet-1a", 10), ("subnet-1a", "subnet-1c", 10)):
        rows = queries.run(client, "pair_series", src=src, dst=dst, **{"from": res.start, "to": res.start + 7200})
        assert len(rows) == 12
        assert all(round(r["bytes"] / 1e6) == mb for r in rows), (src, dst, [r["bytes"] for r in rows])


@pytest.mark.parametrize("metric", ["bytes", "retransmissions", "timeouts", "rtt"])
@pytest.mark.parametrize("category", ["all", "inter-az", "intra-az"])
def test_top_pairs_order_and_merged_percentiles(fault_db, metric, category):
    client, res = fault_db
    agg: dict[tuple[str, str], dict] = {}
    for w in res.closed.values():
        if category != "all" and _category(w) != category:
            continue
        a = agg.setdefault((w.src_subnet, w.dst_subnet), {"bytes": 0, "retransmissions": 0, "timeouts": 0,
                                                          "rtt_count": 0, "rtt_sum_us": 0, "hist": {}})
        for k in ("bytes", "retransmissions", "timeouts", "rtt_count", "rtt_sum_us"):
            a[k] += getattr(w, k)
        merge_into(a["hist"], {int(b): c for b, c in w.rtt_hist.items()})

    def key(item):
        a = item[1]
        v = a["rtt_sum_us"] / a["rtt_count"] if metric == "rtt" else a[metric]
        return (-v, item[0])

    want = [p for p, _ in sorted(agg.items(), key=key)][:5]
    rows = queries.run(client, "top_pairs", category=category, metric=metric, n=5,
                       **{"from": res.start, "to": res.start + 86400})
    assert [(r["src_subnet"], r["dst_subnet"]) for r in rows] == want
    for r in rows:
        a = agg[(r["src_subnet"], r["dst_subnet"])]
        assert r["bytes"] == a["bytes"] and r["timeouts"] == a["timeouts"]
        assert r["rtt_p99_us"] == pytest.approx(quantile(a["hist"], 0.99), rel=1e-9)


def test_alerts_carry_their_attribution(fault_db):
    client, res = fault_db
    rows = queries.run(client, "alerts", **{"from": res.start, "to": res.start + 86400})
    opened = {e["alert_id"] for e in res.events if e["event"] == "opened"}
    assert {r["alert_id"] for r in rows} == opened
    causes = {a["alert_id"]: (a["cause"], a["element"] or "") for a in res.attributions}
    for r in rows:
        assert (r["cause"], r["element"]) == causes.get(r["alert_id"], ("pending", ""))
    assert any(r["cause"] == "infrastructure" and r["element"] == "az1|az2" for r in rows)


def test_az_matrix_marks_the_degraded_pair_only(fault_db):
    client, res = fault_db
    rows = {(r["src_az"], r["dst_az"]): r for r in queries.run(client, "az_matrix",
                                                                **{"from": res.start, "to": res.start + 86400})}
    degraded = {k for k, r in rows.items() if r["health"] == "degraded"}
    assert degraded == {("az1", "az2"), ("az2", "az1")}
    assert rows[("az1", "az3")]["src_az_health"] == "degraded" and rows[("az1", "az3")]["dst_az_health"] == "healthy"
    # before the fault: every cell healthy
    fault_start = min(n["start"] for n in res.nhi_records)
    early = queries.run(client, "az_matrix", **{"from": res.start, "to": fault_start - 1200})
    assert early and all(r["health"] == "healthy" for r in early)
