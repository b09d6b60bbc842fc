"""The pipeline's pure core alone, no Kafka, no Faust: the ceiling of a worker's own Python work.

    python -m benchmarks.core WORKLOAD SAMPLES [--partitions 8] [--detect] [--batch 1000]

Generates the workload as ``benchmarks.bench`` does, serialises every report, then
times, in one process: ``Ingest.process_batch`` (orjson decode, validation, placement,
pre-aggregation, one pairs message per report and destination partition) for every 500
reports, as the worker's ingest reader calls it, and
``PartitionWindows.apply`` (orjson decode of each pairs message, window update) for
every pairs message, then one progress mark per source that closes every window and
builds its record. Prints one JSON line: samples, reports, pairs messages, seconds
of each stage. Run as its own process so the generator's objects are gone (and
garbage-collected) before the clock starts.

``--detect`` runs each pairs partition through the worker's ``aggregate.step.PartitionStep``
with detection on (``detect.Detection``, the worker's defaults) instead of the windows
alone, and after every ``--batch`` pairs messages of a partition does what the aggregate
agent does after each batch: takes the health for attribution and encodes the changed
state (windows and detector keys) as the state topic carries it. ``aggregate_s`` then
includes detection and the state; ``intervals`` counts the pair-intervals scored, ``keys``
the detector keys, ``state_writes`` the state records encoded, ``state_bytes_windows`` and
``state_bytes_detectors`` their values' bytes (``report_bytes``: the reports' own, as produced). A batch
here is ``--batch`` per-report pairs messages (a worker's batch of 1,000 pairs-topic messages holds the reports
of one ingest batch each: far more reports, so fewer state writes per report than here).
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from pipeline.config import Settings
from pipeline.ingest.step import Ingest
from pipeline.ingest.topology import load_topology
from pipeline.ingest.validate import Validator
from pipeline.aggregate.step import StepOutput
from pipeline.aggregate.windows import PartitionWindows
from pipeline.detect.detection import Detection
from pipeline.runtime import collector
from pipeline.runtime.restore import PartitionState
from pipeline.wire.records import decode_pairs


def main(argv: list[str] | None = None) -> int:
    from .bench import WORKLOADS, make_workload

    ap = argparse.ArgumentParser(prog="python -m benchmarks.core", description=__doc__.splitlines()[0])
    ap.add_argument("workload", choices=sorted(WORKLOADS))
    ap.add_argument("samples", type=int)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--detect", action="store_true", help="detection on, and the state encoded after every batch")
    ap.add_argument("--batch", type=int, default=1000, help="pairs messages per batch (--detect; the worker's is 1000)")
    a = ap.parse_args(argv)

    wl = make_workload(a.workload, a.samples)
    raws = [orjson.dumps(r) for r in wl.reports]
    report_bytes = sum(map(len, raws))
    samples, reports = wl.samples, len(wl.reports)
    scenario = wl.scenario
    del wl
    collector.tune(Settings().gc_young_threshold)  # the worker's collector settings (runtime.collector)
    collector.settle()

    parts = a.partitions
    core = Ingest(Validator(load_topology(scenario)), 600, parts)
    now = time.time()
    t0 = time.perf_counter()
    out: list[list[bytes]] = [[] for _ in range(parts)]
    accepted = 0
    last_start = 0
    records = [(raw, i % parts, i // parts) for i, raw in enumerate(raws)]
    for i in range(0, len(records), 500):  # as the worker's ingest reader (ReportsReader.CORE_BATCH)
        res = core.process_batch(records[i:i + 500], "reports", now)
        accepted += res.accepted
        last_start = max([last_start, *(s for s in res.starts if s is not None)])
        for p, payloads in res.messages.items():
            out[p].extend(payloads)
    t1 = time.perf_counter()
    if a.detect:
        return _with_detection(a, out, parts, samples, accepted, reports, report_bytes, last_start, t0, t1)
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


def _with_detection(a: argparse.Namespace, out: list[list[bytes]], parts: int, samples: int, accepted: int,
                    reports: int, report_bytes: int, last_start: int, t0: float, t1: float) -> int:
    """The aggregate stage as the worker runs it: windows, detection, health and state per batch."""
    states = [PartitionState(PartitionWindows(p, 600, 60, parts, grid_s=30), Detection(interval_s=30, window_s=600))
              for p in range(parts)]
    so = StepOutput()
    writes = 0
    state_bytes = {"windows": 0, "detectors": 0}  # values written to the state topic, by kind

    def batch_end(ps: PartitionState) -> int:
        ps.step.take_health()
        dirty = ps.take_dirty()  # encodes every changed key, as the state topic carries it
        for w in dirty:
            if w.value is not None:
                state_bytes["windows" if w.key.detector_key is None else "detectors"] += len(w.value)
        return len(dirty)

    for p, msgs in enumerate(out):
        ps = states[p]
        for k, m in enumerate(msgs, 1):
            for msg in decode_pairs(m):
                ps.step.apply(msg, so)
            if k % a.batch == 0:
                writes += batch_end(ps)
        writes += batch_end(ps)
    t2 = time.perf_counter()
    for ps in states:
        for src in range(parts):
            ps.step.apply({"mark": [src, last_start + 3600]}, so)
        writes += batch_end(ps)
    t3 = time.perf_counter()
    n_msgs = sum(len(m) for m in out)
    print(orjson.dumps({"samples": samples, "accepted": accepted, "reports": reports, "pairs_messages": n_msgs,
                        "partials": so.applied, "windows": len(so.closed), "keys": sum(
                            len(ps.detection.keys) for ps in states), "intervals": so.intervals,
                        "state_writes": writes, "state_bytes_windows": state_bytes["windows"],
                        "state_bytes_detectors": state_bytes["detectors"], "report_bytes": report_bytes,
                        "ingest_s": t1 - t0, "aggregate_s": t2 - t1, "close_s": t3 - t2,
                        "total_s": t3 - t0}).decode())
    return 0 if accepted == samples else 1


if __name__ == "__main__":
    sys.exit(main())
