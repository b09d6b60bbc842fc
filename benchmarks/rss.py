"""Peak RSS of one worker (pipeline role, no sink) holding N x N open subnet-pair windows.

    python -m benchmarks.rss [--broker tansu|kafka|both] [--subnets 100] [--reporters 5] [--intervals 4]

A topology of ``--subnets`` subnets (default 100: 10,000 directional pairs, the diagonal
included), each with ``--reporters`` reporting instances plus one target instance. In
every 30 s interval each reporter sends one report with one sample towards the target of
every subnet (its own too), so every directional pair gets traffic; half the samples
name the remote's placement, half leave it to the topology. ``--intervals`` intervals
(default 4) all fall in ONE 10-minute window, and the worker runs with
``FLOWMON_SOURCE_IDLE_LAG_S`` very large, so no window closes: when every report has been
processed and ``flowmon_open_windows`` says N x N, the worker holds them all, and its
``VmHWM`` (peak RSS) and ``VmRSS`` are read from /proc/PID/status. The same figures
just before the reports are produced (worker joined, idle) are the baseline.

``--memray FILE`` runs the worker under memray (``pip install -e '.[bench]'``), which records
every allocation with its stack, and then prints where the memory held at the worker's
high-water mark was allocated: by allocating line, and by the first line of ``pipeline``
on its stack. The worker is slower under it; its RSS figures include memray's own.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from pipeline.runtime.brokers import free_port
from pipeline.config import Settings
from pipeline.runtime.produce import produce_reports
from pipeline.runtime.topics import Topics, ensure_topics
from pipeline.ingest.topology import load_topology

from ._common import Worker, broker, proc_status_kb, scrape_metrics, unique_name, worker_env

console = Console(width=None if sys.stdout.isatty() else 160)


def topology(subnets: int, reporters: int) -> dict:
    azs = ["az-a", "az-b", "az-c", "az-d"]
    return {"region": "rss", "vpcs": [{"id": "vpc-rss", "azs": [
        {"id": az, "subnets": [{"id": f"sn-{i:03d}", "cidr": f"10.{i // 256}.{i % 256}.0/24",
                                "instances": reporters + 1}
                               for i in range(subnets) if i % len(azs) == k]}
        for k, az in enumerate(azs)]}]}


def reports(topo_dict: dict, subnets: int, reporters: int, intervals: int, seed: int = 1) -> list[dict]:
    """Every reporter of every subnet reports one sample towards every subnet's target, per interval."""
    topo = load_topology(topo_dict)
    rng = random.Random(seed)
    start0 = (int(time.time()) // 3600 - 24) * 3600
    names = [f"sn-{i:03d}" for i in range(subnets)]
    target = {n: topo.instances[f"{n}/{reporters}"] for n in names}
    out = []
    for k in range(intervals):
        for a, sa in enumerate(names):
            for r in range(reporters):
                me = topo.instances[f"{sa}/{r}"]
                samples = []
                for b, sb in enumerate(names):
                    t = target[sb]
                    remote = {"ip": t.ip, "subnet": t.subnet, "az": t.az, "vpc": t.vpc} if (a + b + r) % 2 else \
                        {"ip": t.ip}
                    flows = rng.randint(1, 3)
                    samples.append({"remote": remote, "bytes_sent": rng.randint(0, 10**7),
                                    "bytes_received": rng.randint(0, 10**7), "retransmissions": rng.randint(0, 3),
                                    "timeouts": 0, "flows": flows,
                                    "rtt_us": [rng.randint(100, 20_000) for _ in range(flows)]})
                out.append({"version": 1, "instance": me.instance,
                            "local": {"ip": me.ip, "subnet": me.subnet, "az": me.az, "vpc": me.vpc},
                            "start": start0 + 30 * k, "interval_s": 30, "samples": samples})
    return out


def measure(kind: str, bootstrap: str, workroot: Path, subnets: int, reporters: int, intervals: int,
            partitions: int, timeout_s: float, memray_to: Path | None = None) -> dict:
    prefix = unique_name("rss")
    workdir = workroot / prefix
    workdir.mkdir(parents=True)
    topo = topology(subnets, reporters)
    topo_path = workdir / "topology.yaml"
    topo_path.write_text(yaml.safe_dump(topo, sort_keys=False))
    reps = reports(topo, subnets, reporters, intervals)
    n_samples = sum(len(r["samples"]) for r in reps)
    pairs = subnets * subnets
    topics = Topics.from_settings(Settings(topic_prefix=prefix, app_id=prefix, partitions=partitions))
    asyncio.run(ensure_topics(bootstrap, topics))
    port = free_port()
    env = worker_env(bootstrap, prefix, workdir, roles="pipeline", partitions=partitions, topology=topo_path,
                     metrics_port=port, FLOWMON_SOURCE_IDLE_LAG_S="100000000")
    w = Worker(env, workdir, memray_to=memray_to)
    out: dict = {"broker": kind, "subnets": subnets, "pairs": pairs, "reports": len(reps), "samples": n_samples}
    try:
        deadline = time.time() + timeout_s
        while w.log_time("assigned reports") is None:  # the agents.on_assigned log line
            if not w.alive() or time.time() > deadline:
                raise RuntimeError(f"worker did not join:\n{w.tail()}")
            time.sleep(0.2)
        time.sleep(1.0)
        base = proc_status_kb(w.pid)
        out["baseline_rss_kb"], out["baseline_hwm_kb"] = base.get("VmRSS", 0), base.get("VmHWM", 0)
        console.log(f"{kind}: worker {w.pid} joined; RSS {base.get('VmRSS', 0) / 1024:.0f} MiB, "
                    f"peak {base.get('VmHWM', 0) / 1024:.0f} MiB; producing {len(reps):,} reports "
                    f"({n_samples:,} samples, {pairs:,} pairs)")
        asyncio.run(produce_reports(bootstrap, topics.reports, reps))
        partials = len(reps) * subnets
        m: dict = {}
        while True:
            if not w.alive() or time.time() > deadline:
                raise RuntimeError(f"worker not done (metrics {m}):\n{w.tail()}")
            m = scrape_metrics(port) or {}
            if (m.get("flowmon_reports_total", 0) >= len(reps) and m.get("flowmon_partials_applied_total", 0)
                    >= partials and m.get("flowmon_open_windows", 0) >= pairs):
                break
            time.sleep(0.2)
        time.sleep(1.0)  # let the last state writes go out
        st = proc_status_kb(w.pid)
        m = scrape_metrics(port) or m
        out.update(open_windows=int(m.get("flowmon_open_windows", 0)), windows_emitted=int(
            m.get("flowmon_windows_emitted_total", 0)), rss_kb=st.get("VmRSS", 0), hwm_kb=st.get("VmHWM", 0))
    finally:
        w.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.rss", description=__doc__.splitlines()[0])
    ap.add_argument("--broker", choices=["tansu", "kafka", "both"], default="tansu")
    ap.add_argument("--subnets", type=int, default=100, help="N: N x N directional pairs")
    ap.add_argument("--reporters", type=int, default=5, help="reporting instances per subnet")
    ap.add_argument("--intervals", type=int, default=4, help="30 s intervals, all inside one window (max 20)")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=240.0)
    ap.add_argument("--memray", type=Path, metavar="FILE",
                    help="run the worker under memray, write its capture here and print what the peak held")
    a = ap.parse_args(argv)
    if not 1 <= a.intervals <= 20:
        ap.error("--intervals must be 1..20 (one 10-minute window)")
    if a.memray is not None:
        if importlib.util.find_spec("memray") is None:
            ap.error("--memray needs memray: pip install -e '.[bench]'")
        if a.broker == "both" or a.repeat > 1:
            ap.error("--memray records one worker: use it with one --broker and --repeat 1")
        if not a.memray.parent.is_dir():
            ap.error(f"--memray: no directory {a.memray.parent}: create it, or name a file in one that exists")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    kinds = ["tansu", "kafka"] if a.broker == "both" else [a.broker]
    workroot = Path(tempfile.mkdtemp(prefix="flowmon-rss-"))
    results = []
    try:
        for kind in kinds:
            b = broker(kind, workroot / kind)
            try:
                for _ in range(a.repeat):
                    results.append(measure(kind, b.bootstrap, workroot, a.subnets, a.reporters, a.intervals,
                                           a.partitions, a.timeout, a.memray))
            finally:
                b.stop()
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    t = Table(title="peak RSS of one worker (roles=pipeline) holding every pair's window open", title_justify="left")
    for c in ("broker", "pairs", "reports", "samples", "open windows", "emitted", "baseline RSS", "peak RSS (VmHWM)",
              "RSS now", "peak - baseline", "per open window"):
        t.add_column(c, justify="left" if c == "broker" else "right")
    for r in results:
        delta = r["hwm_kb"] - r["baseline_rss_kb"]
        t.add_row(r["broker"], f"{r['pairs']:,}", f"{r['reports']:,}", f"{r['samples']:,}", f"{r['open_windows']:,}",
                  str(r["windows_emitted"]), f"{r['baseline_rss_kb'] / 1024:.0f} MiB", f"{r['hwm_kb'] / 1024:.0f} MiB",
                  f"{r['rss_kb'] / 1024:.0f} MiB", f"{delta / 1024:.0f} MiB",
                  f"{delta * 1024 / max(r['open_windows'], 1) / 1024:.1f} KiB")
    console.print(t)
    console.print("baseline: the worker joined and idle, before any report. peak - baseline / open windows: an upper "
                  "bound of what one open pair-window costs (it includes the ingest buffers and the producer's).")
    if a.memray is not None:
        peak_report(a.memray)
    return 0 if all(r["open_windows"] >= r["pairs"] for r in results) else 1


def peak_report(capture: Path, top: int = 15) -> None:
    """What the worker held at its high-water mark (memray's capture), by allocating line and by the first
    ``pipeline`` line on the stack (``<no pipeline frame>``: the libraries' own, e.g. fetch buffers)."""
    from memray import FileReader

    by_line: Counter[str] = Counter()
    by_pipeline: Counter[str] = Counter()
    for rec in FileReader(capture).get_high_watermark_allocation_records(merge_threads=True):
        stack = rec.stack_trace(max_stacks=40)
        if not stack:
            by_line["<no Python stack>"] += rec.size
            continue
        by_line[_where(stack[0])] += rec.size
        mine = next((f for f in stack if f"{os.sep}pipeline{os.sep}" in f[1]), None)
        by_pipeline[_where(mine) if mine else "<no pipeline frame>"] += rec.size
    total = sum(by_line.values())
    for title, counts in (("allocated at", by_line), ("first pipeline line on the stack", by_pipeline)):
        t = Table(title=f"held at the peak ({total / 2**20:,.0f} MiB): by {title}", title_justify="left")
        t.add_column("MiB", justify="right")
        t.add_column("share", justify="right")
        t.add_column("where")
        for where, size in counts.most_common(top):
            t.add_row(f"{size / 2**20:,.1f}", f"{size / total:.0%}", where)
        console.print(t)


def _where(frame: tuple) -> str:
    func, path, line = frame[0], frame[1], frame[2]
    for cut in ("site-packages" + os.sep, str(Path(__file__).resolve().parents[1]) + os.sep):
        path = path.split(cut)[-1]
    return f"{path}:{line} ({func})"


if __name__ == "__main__":
    sys.exit(main())
