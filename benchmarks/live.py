"""What one worker costs on a live stream: reports produced at a steady rate while it runs, not a backlog.

    python -m benchmarks.live [--broker tansu|kafka] [--rates 1000,4000] [--seconds 40] [--compare SRC]

``benchmarks.bench`` measures how fast one worker drains a backlog: its batches are as large as they get
(``getmany`` returns 2,000 reports, the aggregate agent takes 1,000 pairs messages at once). A live
fleet sends its reports as they are made, and the worker's batches are as small as the rate makes them:
every batch that touches a window writes the window's whole state, and every key it scored, to the state
topic. Here one worker (``roles=pipeline,sink``) is started and joined first; then the ``fleet`` workload
(``benchmarks.bench``: ~5 samples per report) is produced at each ``--rates`` value (reports per second,
paced every 50 ms) for ``--seconds``; the worker's CPU is read from ``/proc`` when the first report is
produced and when the last one has been applied to its window (``flowmon_partials_applied_total``).

Printed per run: the rate produced, the worker's CPU per sample (µs), the cores it used while the
reports came, and the *tail*: seconds from the last report produced until every partial was applied (a
worker that keeps up has a tail of about its batching delay; one that does not builds a backlog, and
the tail is how long it needs to drain it). ``--compare SRC`` alternates this tree's worker with SRC's
(a checkout, e.g. ``git worktree add /tmp/before HEAD~1``) at each rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks._common import REPO, Worker, broker, proc_cpu_s, scrape_metrics, unique_name, worker_env
from benchmarks.bench import _core, _delete_run_topics, _free_port, check_tree, make_workload
from pipeline.config import Settings
from pipeline.runtime.produce import produce_reports
from pipeline.runtime.topics import Topics, ensure_topics

console = Console(stderr=True)

#: Pacing step: each step sends rate × STEP_S reports, then waits for the next step's time.
STEP_S = 0.05


async def _paced(reports: list[dict], rate: float, marks: dict[str, float]):
    """``reports`` at ``rate`` per second (as an async iterable ``produce_reports`` takes)."""
    per_step = max(1, round(rate * STEP_S))
    t0 = marks["first"] = time.time()
    for k, i in enumerate(range(0, len(reports), per_step)):
        for r in reports[i:i + per_step]:
            yield r
        delay = t0 + (k + 1) * STEP_S - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
    marks["last"] = time.time()


def _wait_metric(port: int, name: str, at_least: float, timeout_s: float, w: Worker) -> float:
    """Wait until the worker's metric ``name`` reaches ``at_least``; returns the time it did."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if not w.alive():
            raise RuntimeError(f"worker exited with {w.proc.returncode}:\n{w.tail()}")
        m = scrape_metrics(port)
        if m is not None and m.get(name, 0) >= at_least:
            return time.time()
        time.sleep(0.05)
    raise TimeoutError(f"{name} did not reach {at_least:,.0f} in {timeout_s:.0f} s:\n{w.tail(15)}")


def run_one(bootstrap: str, reports: list[dict], samples: int, partials: int, scenario: Path, rate: float,
            partitions: int, workroot: Path, src: Path, tree: str) -> dict:
    prefix = unique_name("live")
    workdir = workroot / prefix
    workdir.mkdir(parents=True)
    topics = Topics.from_settings(Settings(topic_prefix=prefix, app_id=prefix, partitions=partitions))
    asyncio.run(ensure_topics(bootstrap, topics))
    port = _free_port()
    env = worker_env(bootstrap, prefix, workdir, roles="pipeline,sink", partitions=partitions, topology=scenario,
                     metrics_port=port)
    env["PYTHONPATH"] = str(src)
    check_tree(env, src)
    w = Worker(env, workdir, cwd=src)
    try:
        deadline = time.time() + 120
        while w.log_time("ingest: assigned reports") is None:  # joined: reading from now on
            if time.time() > deadline or not w.alive():
                raise RuntimeError(f"the worker did not join:\n{w.tail(15)}")
            time.sleep(0.1)
        time.sleep(2.0)  # the pairs agent's group too
        marks: dict[str, float] = {}
        cpu0 = proc_cpu_s(w.pid)
        asyncio.run(produce_reports(bootstrap, topics.reports, _paced(reports, rate, marks), linger_ms=5))
        t_applied = _wait_metric(port, "flowmon_partials_applied_total", partials, 600, w)
        cpu = proc_cpu_s(w.pid) - cpu0
        span = marks["last"] - marks["first"]
        return {"tree": tree, "rate": rate, "produced_rate": len(reports) / span, "samples": samples,
                "cpu_s": cpu, "us_per_sample": cpu / samples * 1e6, "cores": cpu / (t_applied - marks["first"]),
                "tail_s": t_applied - marks["last"], "span_s": span}
    finally:
        w.stop()
        _delete_run_topics(bootstrap, topics, prefix)
        shutil.rmtree(workdir / "chdb", ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.live", description=__doc__.splitlines()[0])
    ap.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    ap.add_argument("--rates", default="1000,4000", help="reports per second, comma-separated")
    ap.add_argument("--seconds", type=float, default=40.0, help="seconds of reports at each rate")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--compare", type=Path, help="also run the worker from this tree, alternating")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args(argv)
    rates = [float(x) for x in a.rates.split(",")]
    trees = [("after" if a.compare else "this tree", REPO)] + ([("before", a.compare.resolve())] if a.compare else [])
    results = []
    with tempfile.TemporaryDirectory(prefix="flowmon-live-") as tmp:
        root = Path(tmp)
        b = broker(a.broker, root / a.broker)
        try:
            for rate in rates:
                target = int(rate * a.seconds * 4.8)  # samples (the fleet's reports hold ~4.8)
                wl = make_workload("fleet", target)
                reports, samples = wl.reports, wl.samples
                partials = int(_core("fleet", target, a.partitions)["partials"])  # the same reports' partials
                for name, src in trees:
                    console.log(f"{a.broker} · {rate:,.0f} reports/s · {name}: {len(reports):,} reports, "
                                f"{samples:,} samples")
                    r = run_one(b.bootstrap, reports, samples, partials, wl.scenario, rate, a.partitions, root, src,
                                name)
                    console.log(f"  produced {r['produced_rate']:,.0f} reports/s; worker {r['us_per_sample']:.1f} "
                                f"CPU µs/sample, {r['cores']:.2f} cores, tail {r['tail_s']:.1f} s")
                    results.append(r)
        finally:
            b.stop()
    table = Table(title=f"one worker on a live stream ({a.broker}, fleet workload, {a.partitions} partitions)")
    for col in ("tree", "reports/s asked", "produced", "samples", "worker CPU s", "µs/sample", "cores", "tail s"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(r["tree"], f"{r['rate']:,.0f}", f"{r['produced_rate']:,.0f}", f"{r['samples']:,}",
                      f"{r['cpu_s']:.1f}", f"{r['us_per_sample']:.1f}", f"{r['cores']:.2f}", f"{r['tail_s']:.1f}")
    Console(width=130).print(table)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
