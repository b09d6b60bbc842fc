"""The pipeline's pure core alone, no Kafka, no Faust: the ceiling of a worker's own Python work.

    python -m benchmarks.core WORKLOAD SAMPLES [--partitions 8]

Generates the workload as ``benchmarks.bench`` does, serialises every report, then
times, in one process: ``Ingest.process`` (orjson decode, validation, placement,
pre-aggregation, one pairs message per destination partition) for every report, and
``PartitionWindows.apply`` (orjson decode of each pairs message, window update) for
every pairs message, then one progress mark per source that closes every window and
builds its record. Prints one JSON line: samples, reports, pairs messages, seconds
of each stage. Run as its own process so the generator's objects are gone (and
garbage-collected) before the clock starts.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import orjson

from pipeline.ingest.step import Ingest
from pipeline.ingest.topology import load_topology
from pipeline.ingest.validate import Validator
from pipeline.aggregate.windows import PartitionWindows


def main(argv: list[str] | None = None) -> int:
    from .bench import WORKLOADS, make_workload

    ap = argparse.ArgumentParser(prog="python -m benchmarks.core", description=__doc__.splitlines()[0])
    ap.add_argument("workload", choices=sorted(WORKLOADS))
    ap.add_argument("samples", type=int)
    ap.add_argument("--partitions", type=int, default=8)
    a = ap.parse_args(argv)

    wl = make_workload(a.workload, a.samples)
    raws = [orjson.dumps(r) for r in wl.reports]
    samples, reports = wl.samples, len(wl.reports)
    scenario = wl.scenario
    del wl
    gc.collect()

    parts = a.partitions
    core = Ingest(Validator(load_topology(scenario)), 600, parts)
    now = time.time()
    t0 = time.perf_counter()
    out: list[list[bytes]] = [[] for _ in range(parts)]
    accepted = 0
    last_start = 0
    for i, raw in enumerate(raws):
        res = core.process(raw, "reports", i % parts, i // parts, now)
        accepted += res.accepted
        last_start = max(last_start, res.start or 0)
        for p, payload in res.messages.items():
            out[p].append(payload)
    t1 = time.perf_counter()
    stores = [PartitionWindows(p, 600, 60, parts) for p in range(parts)]
    applied = closed = 0
    for p, msgs in enumerate(out):
        pw = stores[p]
        for m in msgs:
            o = pw.apply(orjson.loads(m))
            applied += o.applied
            closed += len(o.closed)
    t2 = time.perf_counter()
    for pw in stores:
        for src in range(parts):
            closed += len(pw.apply({"mark": [src, last_start + 3600]}).closed)
    t3 = time.perf_counter()
    n_msgs = sum(len(m) for m in out)
    print(orjson.dumps({"samples": samples, "accepted": accepted, "reports": reports, "pairs_messages": n_msgs,
                        "partials": applied, "windows": closed, "ingest_s": t1 - t0, "aggregate_s": t2 - t1,
                        "close_s": t3 - t2, "total_s": t3 - t0}).decode())
    return 0 if accepted == samples else 1


if __name__ == "__main__":
    sys.exit(main())
