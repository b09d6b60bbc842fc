"""How fast the console's pages answer over 30 days of 10-minute windows for 1,000 subnet pairs.

    python -m benchmarks.console [--days 30] [--pairs 1000] [--runs 7] [--batches 30]
                                 [--ranges 1h,24h,7d,30d] [--no-http] [--json FILE]

Fills an embedded chdb (a temporary directory) with ``--days`` x ``--pairs`` x 10-minute
flow_windows (4.32 M rows by default: 48 subnets in 3 VPCs x 3 AZs, 2 % of the pairs towards
'external', rtt_hist maps of 10 buckets), ~3 alerts a day per 100 pairs (flow_anomalies events
opened/updated/resolved, flow_attributions) and NHI periods. The windows are inserted in
``--batches`` blocks (one part each, like a live system's unmerged parts) and the last hour is
inserted a second time with a later ``closed_at`` (a worker re-emitting after a crash), so FINAL
has duplicates to collapse.

Then, for each phase, every console page (GET through ``fastapi.testclient.TestClient`` on
``create_app``: the whole request, server side) is timed ``--runs`` times for each range, and
each named query on its own (``pipeline.views.queries.run``), median and p95 (nearest rank):

- ``before/unmerged``: schema steps up to 005 only, the parts as inserted;
- ``after/unmerged``: ``migrate()`` applies the remaining steps (006 onwards) on top of the data;
- ``after/live``: a running system between two sink batches: the partitions before the newest merged
  into one part each (what ``min_age_to_force_merge_seconds`` does once a day's parts are an hour old),
  the newest ones (today's windows and hours, this month's days) as background merges left them once
  none ran for 3 s;
- ``after/merged``: after ``OPTIMIZE TABLE ... FINAL`` of every table.

Each phase also runs through the worker's SQL endpoint (``SqlServer`` on the same chdb, a
clickhouse_connect HTTP client), the embedded default's real path, unless ``--no-http``.
The goal (issue 13): every page < 300 ms. Figures from a shared machine are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WINDOW_S = 600
SUBNETS = 48
GOAL_MS = 300.0


def subnet_sql(s: str) -> dict[str, str]:
    """SQL expressions of a subnet's name, VPC and AZ from its number (an SQL expression)."""
    return {
        "subnet": f"concat('subnet-', toString({s}))",
        "vpc": f"concat('vpc-', toString({s} % 3))",
        "az": f"concat('use1-az', toString(intDiv({s}, 3) % 3 + 1))",
    }


def pair_sql(p: str) -> dict[str, str]:
    """Pair p (0..pairs-1): src subnet intDiv(p, 25) % 48, dst (3*src + p % 25 + 1) % 48, or 'external'."""
    src, dst = f"(intDiv({p}, 25) % {SUBNETS})", f"((3 * intDiv({p}, 25) + {p} % 25 + 1) % {SUBNETS})"
    ext = f"({p} % 50 = 7)"
    s, d = subnet_sql(src), subnet_sql(dst)
    return {
        "src_subnet": s["subnet"], "src_vpc": s["vpc"], "src_az": s["az"],
        "dst_subnet": f"if({ext}, 'external', {d['subnet']})",
        "dst_vpc": f"if({ext}, 'external', {d['vpc']})",
        "dst_az": f"if({ext}, '', {d['az']})",
    }


def windows_insert(first_window: int, n_windows: int, pairs: int, t0: int, closed_delay_ms: int = 5000) -> str:
    """One INSERT ... SELECT of n_windows x pairs flow_windows rows (windows first_window..)."""
    p = f"(number % {pairs})"
    w = f"({first_window} + intDiv(number, {pairs}))"
    c = pair_sql(p)
    h = f"cityHash64({p}, {w})"
    return f"""
INSERT INTO flow_windows
SELECT
    1 AS version,
    {c['src_subnet']} AS src_subnet, {c['src_az']} AS src_az, {c['src_vpc']} AS src_vpc,
    {c['dst_subnet']} AS dst_subnet, {c['dst_az']} AS dst_az, {c['dst_vpc']} AS dst_vpc,
    toDateTime({t0} + {WINDOW_S} * {w}, 'UTC') AS window_start,
    {WINDOW_S} AS window_s,
    (1000 + {p} * 37) * (40 + {h} % 20) AS bytes_sent,
    (1000 + {p} * 29) * (40 + intDiv({h}, 7) % 20) AS bytes_received,
    bytes_sent + bytes_received AS bytes,
    if({h} % 97 = 0, 50 + {h} % 200, {h} % 5) AS retransmissions,
    if({h} % 389 = 0, 1 + {h} % 7, 0) AS timeouts,
    20 + {h} % 80 AS flows,
    40 + {h} % 160 AS samples,
    1 + {h} % 12 AS hosts,
    samples AS rtt_count,
    rtt_count * (300 + {p} % 50 * 40) AS rtt_sum_us,
    rtt_sum_us / rtt_count AS rtt_mean_us,
    rtt_mean_us * 0.9 AS rtt_p50_us, rtt_mean_us * 1.6 AS rtt_p90_us, rtt_mean_us * 2.5 AS rtt_p99_us,
    mapFromArrays(arrayMap(i -> toUInt16(130 + {p} % 50 + 3 * i), range(10)),
                  arrayMap(i -> toUInt64(1 + (bitShiftRight({h}, i * 4) % 16)), range(10))) AS rtt_hist,
    toDateTime64({t0} + {WINDOW_S} * ({w} + 1), 3, 'UTC') + toIntervalMillisecond({closed_delay_ms}) AS closed_at
FROM numbers({n_windows * pairs})"""


def alerts_inserts(n_alerts: int, pairs: int, t0: int, span_s: int) -> list[str]:
    """flow_anomalies (opened, updated, resolved for most), flow_attributions, nhi periods."""
    p = f"(cityHash64(a, 'pair') % {pairs})"
    c = pair_sql(p)
    first = f"toDateTime({t0} + intDiv(cityHash64(a, 't') % {span_s}, {WINDOW_S}) * {WINDOW_S}, 'UTC')"
    aid = "lower(hex(cityHash64(a, 'id')))"
    open_ = "(cityHash64(a, 'o') % 20 = 0 OR first_seen > now() - 3600)"
    events = f"""
INSERT INTO flow_anomalies
SELECT 1, {aid} AS alert_id,
    ['opened', 'updated', 'resolved'][seq + 1] AS event, seq,
    if(cityHash64(a, 's') % 4 = 0, 'instance', 'pair') AS scope,
    if(scope = 'instance', concat('i-', lower(hex(cityHash64(a, 'i') % 100000))), NULL) AS instance,
    {c['src_subnet']}, {c['src_az']}, {c['src_vpc']}, {c['dst_subnet']}, {c['dst_az']}, {c['dst_vpc']},
    ['retrans_rate', 'timeout_rate', 'rtt_p50', 'rtt_p90'][cityHash64(a, 'm') % 4 + 1] AS metric,
    0.05 + (cityHash64(a, seq) % 100) / 1000 AS observed, 0.01 AS expected, 4 + (cityHash64(a, seq) % 50) / 10 AS score,
    if(cityHash64(a, 'v') % 3 = 0, 'critical', 'warning') AS severity,
    {first} AS first_seen, first_seen + {WINDOW_S} * (seq + 1) AS last_seen, last_seen AS at, 30,
    first_seen AS window_start, if(seq = 2, 'normal', NULL) AS reason,
    toDateTime64(at, 3, 'UTC') + toIntervalSecond(5) AS emitted_at
FROM (SELECT number AS a FROM numbers({n_alerts})) ARRAY JOIN [0, 1, 2] AS seq
WHERE NOT (seq = 2 AND {open_.replace('first_seen', first)})"""
    attrs = f"""
INSERT INTO flow_attributions
SELECT 1, {aid}, {first}, if(cityHash64(a, 's') % 4 = 0, 'instance', 'pair'), NULL,
    {c['src_subnet']}, {c['dst_subnet']}, 'retrans_rate', 'retrans',
    ['infrastructure', 'workload', 'undetermined'][cityHash64(a, 'c') % 3 + 1] AS cause,
    if(cause = 'undetermined', NULL, ['az_pair', 'subnet', 'instance'][cityHash64(a, 'k') % 3 + 1]) AS element_kind,
    if(cause = 'undetermined', NULL, concat(element_kind, ':x', toString(cityHash64(a) % 30))),
    0.8, 0.9, 12, 5, ['i-1', 'i-2', 'i-3'], 20, 6, 2, ['i-9'], 6, 'instance',
    toDateTime64({first}, 3, 'UTC') + toIntervalSecond(40)
FROM (SELECT number AS a FROM numbers({n_alerts}))
WHERE cityHash64(a, 'pending') % 50 != 0"""
    nhi = f"""
INSERT INTO nhi
SELECT 1, kind, scope, 'degraded', start, if(number % 10 = 0, NULL, start + 1800 + number % 7 * 600), concat('az_pair:', scope),
    toDateTime64(start, 3, 'UTC') + toIntervalSecond(60)
FROM (SELECT number, if(number % 2 = 0, 'az', 'az_pair') AS kind,
             if(kind = 'az', concat('use1-az', toString(number % 3 + 1)),
                concat('use1-az', toString(number % 3 + 1), '|use1-az', toString((number + 1) % 3 + 1))) AS scope,
             toDateTime({t0} + cityHash64(number) % {span_s}, 'UTC') AS start
      FROM numbers({max(10, n_alerts // 10)}))"""
    return [events, attrs, nhi]


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]


def fill(client: Any, days: int, pairs: int, batches: int, end: int) -> dict[str, Any]:
    """Windows of all days but the last in ``batches`` blocks, the last day one insert per window (as a
    sink lands them), the last hour again (a crash re-emit), then alerts, attributions and NHI periods."""
    n_windows = days * 86400 // WINDOW_S
    t0 = end - n_windows * WINDOW_S
    started = time.perf_counter()
    old = n_windows - 144
    per = -(-old // batches)
    for first in range(0, old, per):
        client.command(windows_insert(first, min(per, old - first), pairs, t0))
    for w in range(old, n_windows):
        client.command(windows_insert(w, 1, pairs, t0))
    # the last hour emitted again (crash re-emit): same rows, later closed_at
    client.command(windows_insert(n_windows - 6, 6, pairs, t0, closed_delay_ms=90_000))
    n_alerts = max(10, days * pairs * 3 // 100)
    for sql in alerts_inserts(n_alerts, pairs, t0, days * 86400):
        client.command(sql)
    return {"seconds": time.perf_counter() - started, "t0": t0, "alerts": n_alerts}


def parts(client: Any) -> str:
    rows = client.query("SELECT table, count(), sum(rows) FROM system.parts WHERE active AND database = currentDatabase() "
                        "AND table IN ('flow_windows', 'pair_hours', 'pair_days', 'flow_anomalies', 'flow_attributions', 'nhi') "
                        "GROUP BY table "
                        "ORDER BY table").result_rows
    return ", ".join(f"{t}: {n} parts/{r:,} rows" for t, n, r in rows)


def merged_tables(client: Any) -> list[str]:
    """The tables whose parts the phases control: the filled ones and the rollups (009, 010) that exist."""
    tables = ["flow_windows", "flow_anomalies", "flow_attributions", "nhi"]
    return tables + [t for t in ("pair_hours", "pair_days") if client.command(f"EXISTS TABLE {t}")]


def force_merge_old_partitions(client: Any, table: str) -> None:
    """What min_age_to_force_merge_seconds does to a live system's partitions older than its newest one (days
    of flow_windows and pair_hours all an hour old): one part each. The newest partition is left to the
    background merges (and pair_days' month partition, which min_age_to_force_merge also merges in part)."""
    ids = [r[0] for r in client.query("SELECT DISTINCT partition_id FROM system.parts WHERE active AND "
                                      "database = currentDatabase() AND table = {t:String} ORDER BY partition_id",
                                      parameters={"t": table}).result_rows]
    for pid in ids[:-1]:
        client.command(f"OPTIMIZE TABLE {table} PARTITION ID '{pid}' FINAL")


def settle(clients: list[Any], quiet_s: float = 3.0, limit_s: float = 300.0) -> bool:
    """Wait until no background merge has run for ``quiet_s`` (a live system between two bursts of inserts)."""
    deadline, quiet_since = time.monotonic() + limit_s, None
    while time.monotonic() < deadline:
        busy = sum(c.command("SELECT count() FROM system.merges WHERE database = currentDatabase()") for c in clients)
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return True
        time.sleep(0.2)
    return False


def pages(client: Any, ranges: list[str]) -> list[tuple[str, str, str]]:
    """(page label, range, URL) of every page to time."""
    alert_id = client.command("SELECT alert_id FROM flow_anomalies ORDER BY first_seen DESC, alert_id LIMIT 1")
    src, dst = client.query("SELECT src_subnet, dst_subnet FROM flow_anomalies WHERE alert_id = {a:String} LIMIT 1",
                            parameters={"a": alert_id}).result_rows[0]
    out = []
    for r in ranges:
        out += [("/", r, f"/?range={r}"),
                ("/insights bytes all", r, f"/insights?range={r}&metric=bytes&category=all"),
                ("/insights rtt inter-az", r, f"/insights?range={r}&metric=rtt&category=inter-az"),
                ("/alerts", r, f"/alerts?range={r}"),
                ("/alerts/<id>", r, f"/alerts/{alert_id}?range={r}"),
                ("/path", r, f"/path?range={r}&src={src}&dst={dst}")]
    return out


def query_calls(client: Any, ranges: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(named query, range, parameters) of every query the pages above run."""
    from pipeline.console.timerange import parse_range
    from datetime import datetime, timezone

    latest = client.query("SELECT toUnixTimestamp(max(window_start)) + 600 FROM flow_windows").result_rows[0][0]
    alert_id = client.command("SELECT alert_id FROM flow_anomalies ORDER BY first_seen DESC, alert_id LIMIT 1")
    src, dst = client.query("SELECT src_subnet, dst_subnet FROM flow_anomalies WHERE alert_id = {a:String} LIMIT 1",
                            parameters={"a": alert_id}).result_rows[0]
    out: list[tuple[str, str, dict[str, Any]]] = [("latest_window", "-", {}), ("alert_events", "-", {"alert_id": alert_id}),
                                                  ("alert_evidence", "-", {"alert_id": alert_id})]
    for r in ranges:
        p = parse_range(r, None, None, latest=datetime.fromtimestamp(latest, tz=timezone.utc)).params()
        out += [("az_matrix", r, p), ("traffic_by_category", r, p), ("fleet_series", r, p), ("alerts", r, p),
                ("top_pairs bytes all", r, dict(p, category="all", metric="bytes", n=10)),
                ("top_pairs rtt inter-az", r, dict(p, category="inter-az", metric="rtt", n=10)),
                ("pair_path", r, dict(p, src=src, dst=dst)), ("pair_alerts", r, dict(p, src=src, dst=dst)),
                ("pair_series", r, dict(p, src=src, dst=dst))]
    return out


def time_phase(client: Any, ranges: list[str], runs: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from pipeline.console.app import create_app
    from pipeline.views import queries

    res: dict[str, Any] = {"pages": {}, "queries": {}}
    with TestClient(create_app(lambda: client)) as http:
        for label, r, url in pages(client, ranges):
            ts = []
            for k in range(runs + 1):  # the first is a warm-up
                t = time.perf_counter()
                resp = http.get(url)
                dt = (time.perf_counter() - t) * 1000
                if resp.status_code != 200:
                    raise SystemExit(f"GET {url}: {resp.status_code} {resp.text[:300]}")
                if k:
                    ts.append(dt)
            res["pages"][f"{label}|{r}"] = ts
    for name, r, params in query_calls(client, ranges):
        qname = name.split()[0]
        ts = []
        for k in range(runs + 1):
            t = time.perf_counter()
            queries.run(client, qname, **params)
            if k:
                ts.append((time.perf_counter() - t) * 1000)
        res["queries"][f"{name}|{r}"] = ts
    return res


def table(title: str, data: dict[str, list[float]], ranges: list[str], goal: float | None = GOAL_MS) -> str:
    rows: dict[str, dict[str, str]] = {}
    for key, ts in data.items():
        label, r = key.split("|")
        mark = " !" if goal is not None and pct(ts, 0.95) >= goal else ""
        rows.setdefault(label, {})[r] = f"{statistics.median(ts):,.0f} / {pct(ts, 0.95):,.0f}{mark}"
    cols = ranges if any(r in ranges for v in rows.values() for r in v) else []
    has_dash = any("-" in v for v in rows.values())
    cols = (["-"] if has_dash else []) + cols
    out = [f"\n{title} (ms, median / p95{'; ! = p95 >= %d ms' % goal if goal else ''})",
           "| " + " | ".join(["page"] + cols) + " |", "| " + " | ".join(["---"] * (len(cols) + 1)) + " |"]
    for label, v in rows.items():
        out.append("| " + " | ".join([label] + [v.get(c, "") for c in cols]) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.console", description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--batches", type=int, default=30, help="insert blocks of flow_windows (parts before merges)")
    ap.add_argument("--ranges", default="1h,24h,7d,30d")
    ap.add_argument("--phases", default="after,live,merged",
                    help="after: every schema step, unmerged (merges stopped); live: merges started and settled, as a "
                    "running system between inserts; merged: after OPTIMIZE FINAL; before: steps up to 005 "
                    "(only with the named queries of a checkout before step 009: today's read pair_hours)")
    ap.add_argument("--no-http", action="store_true", help="do not time through the SQL endpoint")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    ranges = a.ranges.split(",")
    phases = a.phases.split(",")

    import clickhouse_connect

    from pipeline.clickhouse.client import connect
    from pipeline.clickhouse.migrations import load_steps, migrate

    if "before" in phases and any(step.name >= "009" for step in load_steps()):
        ap.error("--phases before needs a checkout before schema step 009 (its named queries read pair_hours)")
    from pipeline.clickhouse.sqlserve import SqlServer

    tmp = Path(tempfile.mkdtemp(prefix="flowmon-console-bench-"))
    results: dict[str, Any] = {"args": vars(a) | {"json": str(a.json) if a.json else None}}
    try:
        base = tmp / "steps"
        base.mkdir()
        for step in load_steps():
            if step.name < "006":
                shutil.copy(step.path, base / step.path.name)
        # two databases with the same rows: 'before' has schema steps up to 005, 'after' every step
        layouts = {"before": base, "after": None}
        layouts = {k: v for k, v in layouts.items() if k in phases or (k == "after" and {"live", "merged"} & set(phases))}
        clients = {k: connect(f"chdb://{tmp / 'chdb'}", database=k) for k in layouts}
        end = int(time.time()) // WINDOW_S * WINDOW_S
        for k, c in clients.items():
            print(f"{k}: schema steps {migrate(c, layouts[k])}")
            for tb in merged_tables(c):
                c.command(f"SYSTEM STOP MERGES {tb}")  # parts stay as inserted until 'merged'
            info = fill(c, a.days, a.pairs, a.batches, end)
            print(f"{k}: filled in {info['seconds']:.1f} s: {parts(c)}; {info['alerts']:,} alerts")
        server = None if a.no_http else SqlServer(clients[next(iter(clients))]).start()

        def phase(name: str, client: Any) -> None:
            print(f"\n## {name}: {parts(client)}", flush=True)
            t = time.perf_counter()
            results[name] = {"chdb": time_phase(client, ranges, a.runs)}
            print(table(f"{name}, pages, chdb in-process", results[name]["chdb"]["pages"], ranges))
            print(table(f"{name}, named queries, chdb in-process", results[name]["chdb"]["queries"], ranges))
            if server is not None:
                remote = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, password=server.token,
                                                       database=client.database)
                results[name]["http"] = time_phase(remote, ranges, a.runs)
                remote.close()
                print(table(f"{name}, pages, through the SQL endpoint", results[name]["http"]["pages"], ranges))
                print(table(f"{name}, named queries, through the SQL endpoint", results[name]["http"]["queries"], ranges))
            print(f"({name}: {time.perf_counter() - t:.0f} s)", flush=True)

        for k in ("before", "after"):
            if k in phases:
                phase(f"{k}/unmerged", clients[k])
        if "live" in phases:
            t = time.perf_counter()
            for k, c in clients.items():
                for tb in merged_tables(c):
                    c.command(f"SYSTEM START MERGES {tb}")
                    force_merge_old_partitions(c, tb)
            quiet = settle(list(clients.values()))
            print(f"\nbackground merges {'settled' if quiet else 'still running'} after {time.perf_counter() - t:.1f} s")
            for k, c in clients.items():
                phase(f"{k}/live", c)
        if "merged" in phases:
            t = time.perf_counter()
            for k, c in clients.items():
                for tb in merged_tables(c):
                    c.command(f"SYSTEM START MERGES {tb}")
                    c.command(f"OPTIMIZE TABLE {tb} FINAL")
            print(f"\nOPTIMIZE ... FINAL in {time.perf_counter() - t:.1f} s")
            for k, c in clients.items():
                phase(f"{k}/merged", c)
        if "before" in clients:
            t = time.perf_counter()
            applied = migrate(clients["before"])
            print(f"\nmigrate() of 'before' (its data in place) applied {applied} in {time.perf_counter() - t:.1f} s: "
                  f"{parts(clients['before'])}")
        if server is not None:
            server.stop()
        for c in clients.values():
            c.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    print(f"\nloadavg {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
