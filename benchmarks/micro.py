"""Small figures the test suite used to assert with a clock (a busy CI machine made them flaky).

    python -m benchmarks.micro

Prints: the simulator's rate (fleet_1000, 20 min of reports; goal >= 200,000 samples/s), the
topology's cached ``locate`` cost (goal < 2 us), the sink writing 10,000 windows to chdb
(goal < 1 s per call) and ``flowmon eval`` of ``fleet-200`` (6 h, 200 instances; goal < 180 s).
Each is the best of a few runs; figures from a loaded machine are lower bounds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLEET = REPO / "tests" / "data" / "fleet_1000.yaml"
T0 = 1_764_000_000


def simulator_rate() -> float:
    from pipeline.sim.simulator import Simulator

    best = 0.0
    for _ in range(2):
        sim = Simulator.from_scenario(FLEET, start=T0)
        t0 = time.perf_counter()
        n = sum(len(r["samples"]) for r in sim.reports("20m"))
        best = max(best, n / (time.perf_counter() - t0))
    return best


def locate_ns() -> float:
    from pipeline.ingest.topology import load_topology

    t = load_topology(FLEET)
    ips = [p.ip for p in t.instances.values()] * 50
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter_ns()
        for ip in ips:
            t.locate(ip)
        best = min(best, (time.perf_counter_ns() - t0) / len(ips))
    return best


def sink_seconds() -> list[float]:
    from pipeline.clickhouse.client import connect
    from pipeline.clickhouse.migrations import migrate
    from pipeline.clickhouse.writer import WindowSink
    from tests.support.records import make_windows

    with tempfile.TemporaryDirectory() as d:
        c = connect(f"chdb://{d}/ch")
        migrate(c)
        sink, out = WindowSink(c), []
        for k in range(3):
            ws = make_windows(10_000, seed=10 + k, window_start=1_700_000_400 + 600 * k)
            t0 = time.perf_counter()
            sink.write_windows(ws)
            out.append(time.perf_counter() - t0)
        c.close()
    return out


def eval_fleet_200() -> float:
    from pipeline.sim.evaluate import evaluate

    return evaluate(REPO / "tests" / "scenarios" / "fleet-200.yaml").seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.micro", description=__doc__.splitlines()[0])
    ap.add_argument("--skip-eval", action="store_true", help="leave out fleet-200 (about a minute or two)")
    a = ap.parse_args(argv)
    print(f"simulator        {simulator_rate():>12,.0f} samples/s   (goal >= 200,000)")
    print(f"topology.locate  {locate_ns():>12,.0f} ns per lookup (goal < 2,000)")
    print(f"sink 10k windows {', '.join(f'{s * 1e3:,.0f} ms' for s in sink_seconds()):>12}  (goal < 1,000 ms each)")
    if not a.skip_eval:
        print(f"eval fleet-200   {eval_fleet_200():>12,.1f} s (goal < 180)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
