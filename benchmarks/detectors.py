"""Compare detection models on the scenario suite (the measurement behind the choice of ``baseline``).

    python -m benchmarks.detectors [--models baseline,gaussian,hst,page_hinkley] [--realism realistic] [--jobs 2]
    python -m benchmarks.detectors --realism realistic --models baseline,baseline:confirm_after=1,...

Runs every ``tests/scenarios/*.yaml`` through ``flowmon eval``'s harness once per model
and prints, per model, the pooled recall, precision, median delay, false alarms per 1,000
fault-free pair-windows, attribution accuracy, the largest detector state per key and the
time taken (all models on the same machine in one run). A model may carry parameter
overrides, ``NAME:P=V,P=V`` (``detect.DEFAULTS``): the ablations of the chosen model.
``--realism`` runs the scenarios smooth or realistic (``flowmon eval --realism``).
``--json`` prints the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pipeline.detect.detection import MODELS
from pipeline.sim.evaluate import evaluate, suite_summary

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "tests" / "scenarios").glob("*.yaml"))


#: The chosen model and what each of its defences against real traffic is worth (ablations).
ABLATIONS = ["baseline", "baseline:confirm_after=1", "baseline:trim_largest=0", "baseline:score_p90=1",
             "baseline:learn_dispersion=1", "baseline:confirm_after=1,trim_largest=0"]


def _parse(model: str) -> tuple[str, dict[str, float]]:
    name, _, rest = model.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        params[k] = float(v)
    return name, params


def _one(args: tuple[str, str, str | None]):
    path, model, realism = args
    name, params = _parse(model)
    r = evaluate(path, detector=name, params=params, realism=realism)
    r.events = []  # not needed here; keep the pickle back to the parent small
    return model, r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.detectors", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS),
                    help="comma-separated; 'ablations' = the chosen model and its ablations")
    ap.add_argument("--realism", default=None, help="smooth | realistic (default: each scenario's own)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    models = ABLATIONS if a.models == "ablations" else [m for m in a.models.split(";" if ":" in a.models else ",") if m]
    todo = [(str(p), m, a.realism) for m in models for p in SCENARIOS]
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
                                                      "false_alarms_per_1000_pair_windows", "attribution_accuracy",
                                                      "max_state_bytes_per_key", "seconds")}})
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{len(SCENARIOS)} scenarios ({a.realism or 'as each scenario says'}); recall / precision pooled")
    print("| model | recall | precision | alerts | median delay (intervals) | false alarms / 1,000 pair-windows "
          "| attribution accuracy | max state / key | eval time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        prec = "–" if r["precision"] is None else f"{r['precision']:.3f}"
        print(f"| {r['model']} | {r['recall']:.3f} | {prec} | {r['alerts']:,} | "
              f"{r['median_delay_intervals']} | {r['false_alarms_per_1000_pair_windows']:.2f} | "
              f"{r['attribution_accuracy']:.3f} | {r['max_state_bytes_per_key']:,} B | {r['seconds']:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
