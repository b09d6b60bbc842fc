"""Latency of a live worker: how long after a window ends it lands in ClickHouse, and how long after
a fault's first interval its alert is on the anomalies topic.

    python -m benchmarks.latency [--broker tansu|kafka] [--quick] [--subnets 8] [--reporters 4]

A fleet of ``--subnets`` subnets with ``--reporters`` reporting instances and 3 servers each;
every reporting instance talks to the servers of the next three subnets (9 connections). At
each wall-clock interval boundary ``t`` every instance sends its report for ``[t - interval, t)``,
as an agent does, with retransmissions at a steady 0.01 % of its segments. After 22 intervals
(the detectors need 20 scored ones per key) the instances of the first subnet start
retransmitting 3 % of their segments towards the second one, on every connection: a fault on
the path, spread over reporters and remote endpoints, that the pair key flags on its first
interval (evidence from one remote endpoint would wait for ``confirm_after`` intervals).

Measured, against the wall clock:

* **window**: for each window that closed during the run, the time its last subnet pair became
  visible in ``flow_windows FINAL`` (polled every 0.25 s through the sink's SQL endpoint) less
  the window's end. A window closes when the watermark (the largest report start) passes its end
  plus ``allowed_lateness_s``, that is when the reports of the interval after that arrive: the
  table shows the lateness, and the part beyond it.
* **alert**: the time the pair key's ``opened`` event for ``retrans_rate`` was read from the
  anomalies topic less the time the fault's first interval was sent (its end). A grid interval
  is scored once the watermark passes its middle by ``interval_lateness_s``.

Production settings by default (30 s intervals, 10-minute windows, 120 s lateness, 15 s interval
lateness): a run takes about 25 minutes. ``--quick`` scales them down (5 s, 60 s, 10 s, 2 s):
about 4 minutes. One worker, roles ``pipeline,sink``, on a broker this command starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import yaml
from rich.console import Console
from rich.table import Table

from pipeline.config import Settings
from pipeline.detect.observe import MSS
from pipeline.ingest.topology import load_topology
from pipeline.runtime import kafka
from pipeline.runtime.produce import produce_reports
from pipeline.runtime.topics import Topics, ensure_topics

from ._common import Worker, broker, unique_name, worker_env

console = Console(width=None if sys.stdout.isatty() else 160)

PRODUCTION = {"interval": 30, "window": 600, "lateness": 120, "interval_lateness": 15}
QUICK = {"interval": 5, "window": 60, "lateness": 10, "interval_lateness": 2}
WARMUP = 22  # intervals before the fault: the detectors need 20 learned ones per key, and 2 to spare
SERVERS = 3  # per subnet: the remote endpoints every reporter of the subnets before it talks to
FAULT_RATE = 0.03
BASE_RATE = 0.0001


def topology(subnets: int, reporters: int) -> dict:
    azs = ["az-a", "az-b", "az-c"]
    return {"region": "lat", "vpcs": [{"id": "vpc-lat", "azs": [
        {"id": az, "subnets": [{"id": f"sn-{i:02d}", "cidr": f"10.1.{i}.0/24", "instances": reporters + SERVERS}
                               for i in range(subnets) if i % len(azs) == k]}
        for k, az in enumerate(azs)]}]}


class Fleet:
    """The reports of one interval for every reporting instance (the fault from ``fault_from`` on)."""

    def __init__(self, topo_dict: dict, subnets: int, reporters: int, interval_s: int, seed: int = 3) -> None:
        self.topo = load_topology(topo_dict)
        self.names = [f"sn-{i:02d}" for i in range(subnets)]
        self.reporters = reporters
        self.interval_s = interval_s
        self.rng = random.Random(seed)
        self.pairs = {(a, self.names[(i + k) % subnets]) for i, a in enumerate(self.names) for k in (1, 2, 3)}

    def reports(self, start: int, fault: bool) -> list[dict]:
        out = []
        for i, sa in enumerate(self.names):
            for r in range(self.reporters):
                me = self.topo.instances[f"{sa}/{r}"]
                samples = []
                for k, server in ((k, j) for k in (1, 2, 3) for j in range(SERVERS)):
                    sb = self.names[(i + k) % len(self.names)]
                    peer = self.topo.instances[f"{sb}/{self.reporters + server}"]
                    sent = int(self.rng.uniform(8e6, 12e6))
                    rate = FAULT_RATE if fault and i == 0 and k == 1 else BASE_RATE
                    retrans = _poisson(self.rng, sent / MSS * rate)
                    samples.append({"remote": {"ip": peer.ip}, "bytes_sent": sent, "bytes_received": sent // 10,
                                    "retransmissions": retrans, "timeouts": 0, "flows": 4,
                                    "rtt_us": [int(self.rng.uniform(700, 900)) for _ in range(4)]})
                out.append({"version": 1, "instance": me.instance, "start": start, "interval_s": self.interval_s,
                            "local": {"ip": me.ip, "subnet": me.subnet, "az": me.az, "vpc": me.vpc},
                            "samples": samples})
        return out


def _poisson(rng: random.Random, mu: float) -> int:
    """A Poisson draw (normal approximation above 30)."""
    if mu > 30:
        return max(0, round(rng.gauss(mu, math.sqrt(mu))))
    k, p, limit = 0, rng.random(), math.exp(-mu)
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class LandedWindows(threading.Thread):
    """Polls ``flow_windows FINAL`` through the sink's SQL endpoint: when each window had all its pairs."""

    def __init__(self, endpoint_file: Path, pairs: int, every_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.endpoint_file, self.pairs, self.every_s = endpoint_file, pairs, every_s
        self.complete: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        from pipeline.clickhouse.sqlserve import endpoint_client

        client = None
        while not self.stop.wait(self.every_s):
            try:
                if client is None:
                    if not self.endpoint_file.exists():
                        continue
                    client = endpoint_client(json.loads(self.endpoint_file.read_text()))
                rows = client.query("SELECT toUnixTimestamp(window_start), count() FROM flow_windows FINAL "
                                    "GROUP BY window_start")
                now = time.time()
                for ws, n in rows.result_rows:
                    if n >= self.pairs and int(ws) not in self.complete:
                        self.complete[int(ws)] = now
            except Exception:  # the endpoint is starting, or a poll raced an insert: try again
                client = None


async def _alerts(bootstrap: str, topic: str, seen: list[tuple[float, dict]], stop: asyncio.Event) -> None:
    c = kafka.consumer(bootstrap, topic, auto_offset_reset="earliest")
    await c.start()
    try:
        while not stop.is_set():
            for msgs in (await c.getmany(timeout_ms=200)).values():
                now = time.time()
                seen += [(now, orjson.loads(m.value)) for m in msgs]
    finally:
        await c.stop()


async def _drive(bootstrap: str, topics: Topics, fleet: Fleet, p: dict, warmup: int, after_s: float,
                 windows: LandedWindows, seen: list, deadline: float) -> dict[int, float]:
    """Send every interval's reports at its end until the fault's alert and two windows after it landed
    (or the deadline: the result then says what is missing)."""
    stop = asyncio.Event()
    listener = asyncio.create_task(_alerts(bootstrap, topics.anomalies, seen, stop))
    sent_at: dict[int, float] = {}
    interval = p["interval"]
    k = 0
    first_end: float | None = None
    try:
        while True:
            t = (int(time.time()) // interval + 1) * interval
            await asyncio.sleep(max(0.0, t - time.time()))
            start = t - interval
            fault = k >= warmup
            await produce_reports(bootstrap, topics.reports, fleet.reports(start, fault))
            sent_at[start] = time.time()
            if k % max(1, 60 // interval) == 0:
                console.log(f"interval {k}: sent {start} ({'fault' if fault else 'normal'}); "
                            f"{len(windows.complete)} windows landed, {len(seen)} anomaly events")
            k += 1
            if first_end is None and fault and _opened(seen, fleet):
                first_end = time.time()
            if first_end is not None and len(windows.complete) >= 2 and time.time() > first_end + after_s:
                return sent_at
            if time.time() > deadline:
                console.log("[red]deadline reached[/]")
                return sent_at
    finally:
        stop.set()
        await listener


def _opened(seen: list[tuple[float, dict]], fleet: Fleet) -> tuple[float, dict] | None:
    a, b = fleet.names[0], fleet.names[1]
    return next(((at, e) for at, e in seen if e["event"] == "opened" and e["scope"] == "pair"
                 and e["metric"] == "retrans_rate" and e["src_subnet"] == a and e["dst_subnet"] == b), None)


def measure(kind: str, workroot: Path, p: dict, subnets: int, reporters: int, partitions: int,
            timeout_s: float) -> dict:
    b = broker(kind, workroot / kind)
    prefix = unique_name("lat")
    workdir = workroot / prefix
    workdir.mkdir(parents=True)
    try:
        topo = topology(subnets, reporters)
        topo_path = workdir / "topology.yaml"
        topo_path.write_text(yaml.safe_dump(topo, sort_keys=False))
        fleet = Fleet(topo, subnets, reporters, p["interval"])
        topics = Topics.from_settings(Settings(topic_prefix=prefix, app_id=prefix, partitions=partitions))
        asyncio.run(ensure_topics(b.bootstrap, topics))
        defaults = Settings()
        env = worker_env(b.bootstrap, prefix, workdir, roles="pipeline,sink", partitions=partitions,
                         topology=topo_path, FLOWMON_INTERVAL_S=str(p["interval"]), FLOWMON_WINDOW_S=str(p["window"]),
                         FLOWMON_ALLOWED_LATENESS_S=str(p["lateness"]),
                         FLOWMON_INTERVAL_LATENESS_S=str(p["interval_lateness"]),
                         FLOWMON_SOURCE_IDLE_S=str(defaults.source_idle_s))  # worker_env's is the benchmarks' 2 s
        w = Worker(env, workdir)
        windows = LandedWindows(workdir / "sql-endpoint.json", len(fleet.pairs))
        windows.start()
        seen: list[tuple[float, dict]] = []
        try:
            deadline = time.time() + 120
            while w.log_time("assigned reports") is None:
                if not w.alive() or time.time() > deadline:
                    raise RuntimeError(f"worker did not join:\n{w.tail()}")
                time.sleep(0.2)
            sent_at = asyncio.run(_drive(b.bootstrap, topics, fleet, p, WARMUP, p["window"] + p["lateness"] + 30,
                                         windows, seen, time.time() + timeout_s))
        finally:
            windows.stop.set()
            w.stop()
    finally:
        b.stop()
    starts = sorted(sent_at)
    fault_start = starts[WARMUP] if len(starts) > WARMUP else None
    opened = _opened(seen, fleet)
    closed = windows.complete  # every window that landed during the run (the first one began before it)
    return {"broker": kind, "settings": p, "pairs": len(fleet.pairs), "reports_per_interval": subnets * reporters,
            "window_after_end_s": sorted(at - (ws + p["window"]) for ws, at in closed.items()),
            "alert_after_interval_end_s": None if opened is None or fault_start is None else
            opened[0] - sent_at[fault_start],
            "alert_first_seen": None if opened is None else opened[1]["first_seen"], "fault_start": fault_start}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.splitlines()[0])
    ap.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    ap.add_argument("--quick", action="store_true", help="5 s intervals, 60 s windows (about 4 minutes)")
    ap.add_argument("--subnets", type=int, default=8)
    ap.add_argument("--reporters", type=int, default=4)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--timeout", type=float, help="give up after this many seconds (default: 600 with --quick, "
                    "2,400 without)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    a = ap.parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    p = QUICK if a.quick else PRODUCTION
    workroot = Path(tempfile.mkdtemp(prefix="flowmon-latency-"))
    try:
        r = measure(a.broker, workroot, p, a.subnets, a.reporters, a.partitions,
                    a.timeout or (600 if a.quick else 2400))
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    if a.json:
        a.json.write_text(json.dumps(r, indent=1))
    t = Table(title=f"live latency, one worker on {r['broker']} ({r['pairs']} subnet pairs, "
              f"{r['reports_per_interval']} reports per interval)", title_justify="left")
    for c in ("interval", "window", "allowed lateness", "interval lateness", "windows", "window landed after its end, s",
              "of which lateness", "pipeline's own, s", "alert after the interval's end, s"):
        t.add_column(c, justify="right")
    lat = r["window_after_end_s"]
    own = [x - p["lateness"] for x in lat]
    t.add_row(f"{p['interval']} s", f"{p['window']} s", f"{p['lateness']} s", f"{p['interval_lateness']} s",
              str(len(lat)), ", ".join(f"{x:.1f}" for x in lat) or "-", f"{p['lateness']}",
              f"median {statistics.median(own):.1f}, max {max(own):.1f}" if own else "-",
              "-" if r["alert_after_interval_end_s"] is None else f"{r['alert_after_interval_end_s']:.1f}")
    console.print(t)
    ok = r["alert_after_interval_end_s"] is not None and r["alert_first_seen"] == r["fault_start"] and bool(lat)
    if not ok:
        console.print(f"[red]incomplete:[/] alert {r['alert_after_interval_end_s']} (first_seen "
                      f"{r['alert_first_seen']}, fault from {r['fault_start']}), {len(lat)} windows landed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
