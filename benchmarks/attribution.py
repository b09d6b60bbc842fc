"""The attribution stage at fleet scale: time per interval and memory with N reporters.

    python -m benchmarks.attribution [--reporters 10000] [--remotes 5] [--intervals 20] [--partitions 8]

Builds a fleet of N reporters in subnets of 50 (3 AZs), each with keys towards
``--remotes`` other subnets, and feeds ``AttributionStage`` the health of every key for
``--intervals`` intervals, as the pairs partitions would (one message per partition and
interval). During a quarter of the intervals one AZ pair loses packets (a third of the
keys degrade) and one instance stalls. Prints, as JSON: seconds per interval (the
latency attribution adds once the last partition has passed an interval), the peak
traced memory while an interval is pending, and what stays in the stage between
intervals (it must not grow with time).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import tracemalloc

from pipeline.attribute.correlate import AttributionStage
from pipeline.wire.events import AnomalyEvent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.attribution", description=__doc__.splitlines()[0])
    ap.add_argument("--reporters", type=int, default=10_000)
    ap.add_argument("--remotes", type=int, default=5)
    ap.add_argument("--intervals", type=int, default=20)
    ap.add_argument("--partitions", type=int, default=8)
    a = ap.parse_args(argv)
    rnd = random.Random(1)
    n_sub = max(2, a.reporters // 50)
    subnets = [(f"s{i}", f"az{i % 3}") for i in range(n_sub)]
    keys = []
    for r in range(a.reporters):
        s, az = subnets[r // 50 % n_sub]
        for d, daz in rnd.sample(subnets, a.remotes):
            keys.append((f"{s}/{r}", s, az, d, daz))
    stage = AttributionStage(a.partitions, 30)
    times, pending_peak, held = [], 0, []
    tracemalloc.start()
    for k in range(a.intervals):
        t = 30 * k
        fault = a.intervals // 2 <= k < a.intervals // 2 + max(1, a.intervals // 4)
        parts: list[list[dict]] = [[] for _ in range(a.partitions)]
        for i, (r, s, az, d, daz) in enumerate(keys):
            bad = fault and ({az, daz} == {"az0", "az1"} or r == keys[0][0])
            parts[i % a.partitions].append({"t": t, "r": r, "src": [s, az, "v"], "dst": [d, daz, "v"],
                                            "retrans": int(bad), "timeouts": 0, "lat": int(bad and r == keys[0][0])})
        opened = [AnomalyEvent(f"{k:016x}", "opened", 0, "instance", keys[0][0], (keys[0][1], keys[0][2], "v"),
                               (keys[0][3], keys[0][4], "v"), "retrans_rate", 0.05, 0.0001, 9.0, "warning", t, t, t,
                               30, t // 600 * 600).to_wire()] if fault else []
        for p in range(a.partitions - 1):
            stage.apply({"p": p, "upto": t, "health": parts[p], "opened": []})
        pending_peak = max(pending_peak, tracemalloc.get_traced_memory()[0])
        t0 = time.perf_counter()
        recs, nhi = stage.apply({"p": a.partitions - 1, "upto": t, "health": parts[-1], "opened": opened})
        times.append(time.perf_counter() - t0)
        held.append(tracemalloc.get_traced_memory()[0])
        del parts
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out = {
        "reporters": a.reporters, "keys_per_interval": len(keys), "intervals": a.intervals,
        "attribute_s_per_interval": {"median": sorted(times)[len(times) // 2], "max": max(times)},
        "traced_peak_mib": round(peak / 2**20, 1),
        "held_between_intervals_mib": {"first": round(held[0] / 2**20, 1), "last": round(held[-1] / 2**20, 1)},
        "pending_intervals_after_run": len(stage.pending), "nhi_scopes_open": len(stage.nhi.degraded),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
