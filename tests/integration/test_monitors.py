"""Monitors evaluated live, on the embedded broker (Tansu) with a real worker and chdb.

While the worker runs: ``flowmon monitor create`` a monitor, send a known scenario, and the
monitor's series (named query ``monitor_series``) equals, exactly, the sums over the matching
pairs' ``flow_windows``; change the monitor (a remote added) and the later windows follow it,
the earlier ones keep what they had; delete it, and no window closed afterwards lands for it.
NHI: no fault scenario runs here (tests/monitors/ tests which scopes touch a monitor); two NHI
periods are published on the NHI topic as the attribution stage would, and the one whose scope
touches the monitor marks its window degraded.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson
from tests.support.harness import REPO, Deployment
from tests.support.strategies import base_start

from pipeline.runtime import kafka
from pipeline.sim.scenario import DEMO_SCENARIO
from pipeline.views.queries import run
from pipeline.wire.rtt import quantile

IPS = {"subnet-1a/0": "10.0.0.4", "subnet-1a/1": "10.0.0.5", "subnet-1c/0": "10.0.1.4", "subnet-1d/0": "10.0.2.4"}
#: who talks to whom in every window: 6 subnet pairs (one of them to the outside world)
TALKS = [("subnet-1a/0", ["10.0.1.4", "10.0.2.4", "10.0.0.5", "8.8.8.8"]), ("subnet-1c/0", ["10.0.0.4"]),
         ("subnet-1d/0", ["10.0.0.4"])]
# the monitor's versions, as SQL on flow_windows (the oracle)
V1 = "src_subnet = 'subnet-1a' AND (dst_az = 'az-1c' OR dst_subnet = 'external')"
V2 = "src_subnet = 'subnet-1a' AND (dst_az IN ('az-1c', 'az-1d') OR dst_subnet = 'external')"


def reports(ws: int, rng: random.Random) -> list[dict]:
    out = []
    for instance, remotes in TALKS:
        for k in range(4):  # four 30-s intervals in the window
            out.append({"version": 1, "instance": instance, "local": {"ip": IPS[instance]}, "start": ws + 30 * k,
                        "interval_s": 30, "samples": [
                            {"remote": {"ip": ip}, "bytes_sent": rng.randint(0, 10**7),
                             "bytes_received": rng.randint(0, 10**7), "retransmissions": rng.randint(0, 20),
                             "timeouts": rng.randint(0, 2), "flows": rng.randint(1, 5),
                             "rtt_us": [rng.randint(200, 90_000) for _ in range(rng.randint(0, 5))]}
                            for ip in remotes]})
    return out


def monitor_cmd(d: Deployment, *args: str) -> str:
    env = dict(d.env, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "monitor", *args], env=env, cwd=d.workdir,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout + r.stderr


def wait_log(d: Deployment, text: str, timeout: float = 30) -> None:
    end = time.time() + timeout
    while time.time() < end:
        d.check_alive()
        if text in d.logs(tail=None):
            return
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} in the worker log\n" + d.logs())


def until(what, check, timeout: float = 90):
    end = time.time() + timeout
    while time.time() < end:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def series(d: Deployment, monitor: str) -> dict[int, dict]:
    rows = run(d.client, "monitor_series", monitor=monitor, **{"from": datetime(2000, 1, 1, tzinfo=timezone.utc),
                                                              "to": datetime(2100, 1, 1, tzinfo=timezone.utc)})
    return {int(r["time"].timestamp()): r for r in rows}


def oracle(d: Deployment, where: str, ws: int) -> dict:
    """The monitor's window computed from flow_windows FINAL: sums, pairs, percentiles of the merged histogram."""
    (row,) = d.client.query(
        f"SELECT sum(bytes), sum(retransmissions), sum(timeouts), count(), sum(rtt_sum_us), sum(rtt_count), "
        f"sumMap(rtt_hist) FROM flow_windows FINAL WHERE window_start = {ws} AND {where}").result_rows
    hist = {int(b): int(c) for b, c in row[6].items()}
    return {"bytes": row[0], "retransmissions": row[1], "timeouts": row[2], "pairs": row[3],
            "rtt_mean_us": row[4] / row[5] if row[5] else 0.0,
            **{f"rtt_p{q}_us": quantile(hist, q / 100) for q in (50, 90, 99)}}


def assert_window(d: Deployment, got: dict, where: str, ws: int) -> None:
    want = oracle(d, where, ws)
    assert want["pairs"] >= 2 and want["bytes"] > 0
    for k in ("bytes", "retransmissions", "timeouts", "pairs"):
        assert got[k] == want[k], (ws, k, got[k], want[k])
    for k in ("rtt_mean_us", "rtt_p50_us", "rtt_p90_us", "rtt_p99_us"):
        assert abs(got[k] - want[k]) <= 1e-9 * max(1.0, want[k]), (ws, k, got[k], want[k])


async def send(d: Deployment, topic: str, records: list[dict]) -> None:
    p = kafka.producer(d.conn)
    await p.start()
    try:
        for r in records:
            await p.send_and_wait(topic, orjson.dumps(r), key=f"{r['scope_kind']}|{r['scope']}".encode())
    finally:
        await p.stop()


def landed_pairs(d: Deployment, ws: int) -> int:
    return d.client.command(f"SELECT count() FROM flow_windows FINAL WHERE window_start = {ws}")


def test_monitor_created_changed_deleted_while_the_worker_runs(tansu_broker, tmp_path: Path) -> None:
    rng = random.Random(13)
    t0 = base_start()
    ws = [t0, t0 + 600, t0 + 1200]
    d = Deployment(tansu_broker.bootstrap, tmp_path / "d", topology=DEMO_SCENARIO, partitions=2)
    try:
        d.start()
        wait_log(d, "monitors: 0 live")  # the worker follows the (empty) monitors topic
        out = monitor_cmd(d, "create", "m1", "--local", "subnet:subnet-1a", "--remote", "az:az-1c",
                          "--remote", "subnet:external", "--description", "1a to 1c and out")
        assert "monitor m1 created: subnet:subnet-1a -> az:az-1c, subnet:external" in out
        wait_log(d, "monitors: m1 created")

        # window 0, under the first definition
        d.produce(reports(ws[0], rng))
        until("window 0 in flow_windows", lambda: landed_pairs(d, ws[0]) == 6)
        until("window 0 of m1", lambda: series(d, "m1").get(ws[0], {}).get("pairs") == 2)
        assert_window(d, series(d, "m1")[ws[0]], V1, ws[0])

        # change it (a remote added), no restart: window 1 follows the new definition
        out = monitor_cmd(d, "create", "m1", "--replace", "--local", "subnet:subnet-1a", "--remote", "az:az-1c",
                          "--remote", "subnet:external", "--remote", "az:az-1d")
        assert "monitor m1 replaced" in out
        wait_log(d, "monitors: m1 changed")
        d.produce(reports(ws[1], rng))
        until("window 1 in flow_windows", lambda: landed_pairs(d, ws[1]) == 6)
        until("window 1 of m1", lambda: series(d, "m1").get(ws[1], {}).get("pairs") == 3)
        got = series(d, "m1")
        assert_window(d, got[ws[1]], V2, ws[1])
        assert_window(d, got[ws[0]], V1, ws[0])  # closed before the change: unchanged

        # delete it; a second monitor (the whole region, any remote) shows when window 2 was evaluated
        monitor_cmd(d, "delete", "m1")
        monitor_cmd(d, "create", "m2", "--local", "region:ap-northeast-1", "--remote", "any")
        wait_log(d, "monitors: m1 deleted")
        wait_log(d, "monitors: m2 created")
        d.produce(reports(ws[2], rng))
        until("window 2 in flow_windows", lambda: landed_pairs(d, ws[2]) == 6)
        until("window 2 of m2", lambda: series(d, "m2").get(ws[2], {}).get("pairs") == 6)
        assert_window(d, series(d, "m2")[ws[2]], "1", ws[2])
        assert sorted(series(d, "m1")) == ws[:2]  # nothing for m1 after its deletion
        assert series(d, "m2").keys() == {ws[2]}  # m2 did not exist before

        # NHI: periods as the attribution stage publishes them (flow_nhi.v1), one on a scope of m2, one elsewhere
        assert series(d, "m2")[ws[2]]["nhi"] == "healthy"
        periods = [{"version": 1, "scope_kind": "az", "scope": "az-1c", "status": "degraded", "start": ws[2] + 60,
                    "end": ws[2] + 180, "element": "subnet:subnet-1c", "updated": time.time()},
                   {"version": 1, "scope_kind": "subnet", "scope": "subnet-elsewhere", "status": "degraded",
                    "start": ws[2], "end": None, "element": "subnet:subnet-elsewhere", "updated": time.time()}]
        asyncio.run(send(d, d.topics.nhi, periods))
        until("m2 degraded in window 2", lambda: series(d, "m2")[ws[2]]["nhi"] == "degraded")
        nhi = run(d.client, "monitor_nhi", monitor="m2", **{"from": datetime.fromtimestamp(ws[2], timezone.utc),
                                                             "to": datetime.fromtimestamp(ws[2] + 600, timezone.utc)})
        assert [(r["scope_kind"], r["scope"], r["element"]) for r in nhi] == [("az", "az-1c", "subnet:subnet-1c")]
        assert d.client.command("SELECT count() FROM monitor_nhi FINAL WHERE monitor != 'm2'") == 0

        # the definitions landed too, and the CLI reads both sides
        until("the monitors table", lambda: [r["name"] for r in run(d.client, "monitors")] == ["m2"])
        listed = monitor_cmd(d, "list", "--json")
        assert [line.split('"name":"')[1].split('"')[0] for line in listed.splitlines() if line.startswith("{")] == ["m2"]
        shown = monitor_cmd(d, "show", "m2")
        assert "remote:      any" in shown and "last 1 window(s)" in shown and "degraded" in shown, shown
        d.check_alive()
    finally:
        d.close()
