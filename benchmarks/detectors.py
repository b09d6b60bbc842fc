"""Compare detection models on the scenario suite (the measurement behind the choice of ``baseline``).

    python -m benchmarks.detectors [--models baseline,gaussian,hst,page_hinkley] [--jobs 2]

Runs every ``tests/scenarios/*.yaml`` through ``flowmon eval``'s harness once per model
and prints, per model, the pooled recall, precision, median delay, false alarms per 1,000
fault-free pair-windows, the largest detector state per key and the time taken (all
models on the same machine in one run). ``--json`` prints the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pipeline.detect import MODELS
from pipeline.evaluate import evaluate, suite_summary

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "tests" / "scenarios").glob("*.yaml"))


def _one(args: tuple[str, str]):
    path, model = args
    r = evaluate(path, detector=model)
    r.events = []  # not needed here; keep the pickle back to the parent small
    return model, r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.detectors", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    models = [m for m in a.models.split(",") if m]
    todo = [(str(p), m) for m in models for p in SCENARIOS]
    results: dict[str, list] = {m: [] for m in models}
    with ProcessPoolExecutor(a.jobs) as ex:
        for model, r in ex.map(_one, todo):
            results[model].append(r)
            print(f"  {model:13s} {r.name:24s} {r.seconds:6.1f} s", file=sys.stderr)
    rows = []
    for m in models:
        s = suite_summary(results[m])
        rows.append({"model": m, **{k: s[k] for k in ("faults", "detected", "recall", "alerts", "precision",
                                                      "median_delay_intervals", "false_alarms",
                                                      "false_alarms_per_1000_pair_windows",
                                                      "max_state_bytes_per_key", "seconds")}})
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{len(SCENARIOS)} scenarios; recall / precision pooled over the suite")
    print("| model | recall | precision | alerts | median delay (intervals) | false alarms / 1,000 pair-windows "
          "| max state / key | eval time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['recall']:.3f} | {r['precision']:.3f} | {r['alerts']:,} | "
              f"{r['median_delay_intervals']} | {r['false_alarms_per_1000_pair_windows']:.2f} | "
              f"{r['max_state_bytes_per_key']:,} B | {r['seconds']:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
