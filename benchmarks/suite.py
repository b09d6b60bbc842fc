"""The README's suite tables: every shipped scenario, smooth and realistic, in one run.

    python -m benchmarks.suite [--realism smooth,realistic] [--jobs 2] [--json]

Runs ``tests/scenarios/*.yaml`` through ``flowmon eval``'s harness once per realism and
prints, per variant, a Markdown table (per scenario: faults detected, delay per fault,
alerts, precision, false alarms per fault-free pair-windows, cause truth → given, NHI
delay and false-degraded minutes, windows exact, re-sent reports, late samples) and the
pooled line, which is what each of the issue's goals is checked against.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pipeline.sim.evaluate import evaluate, suite_summary

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "tests" / "scenarios").glob("*.yaml"))


def _one(args: tuple[str, str]):
    path, realism = args
    r = evaluate(path, realism=realism)
    r.events = []  # keep the pickle back to the parent small
    return realism, r


def _fmt(x, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


def table(results: list, realism: str) -> str:
    rows = ["| scenario | faults detected | delay per fault (intervals) | alerts | precision | false alarms / "
            "fault-free pair-windows (per 1,000) | cause: truth → given | NHI after detection (intervals) | "
            "NHI false-degraded min | windows exact | re-sent reports | late samples |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: r.name):
        d, a, t = r.detection(), r.attribution(), r.totals
        delays = ", ".join(str(f["delay_intervals"]) for f in r.faults if f["detected"]) or "–"
        causes = "; ".join(f"{f['cause_truth']} → {f['cause_given']}" for f in r.faults) or "–"
        nhi = ", ".join("–" if f["nhi_delay_intervals"] is None else str(f["nhi_delay_intervals"])
                        for f in r.faults) or "–"
        fa = d["false_alarms_per_1000_pair_windows"]
        rows.append(f"| `{r.name}` | {d['detected']}/{d['faults']} | {delays} | {d['alerts']} | "
                    f"{_fmt(d['precision'])} | {d['false_alarms']} / {d['fault_free_pair_windows']:,} ({fa:.2f}) | "
                    f"{causes} | {nhi} | {a['nhi_false_degraded_minutes']:g} | {t.get('exact', 0)}/{t.get('windows', 0)} | "
                    f"{t.get('duplicate_reports', 0)} | {t.get('late_samples', 0)} |")
    s = suite_summary(results)
    t = s.get("totals", {})
    rows.append(f"| **suite ({s['scenarios']})** | **{s['detected']}/{s['faults']}** | median "
                f"**{s['median_delay_intervals']}** | {s['alerts']:,} | **{_fmt(s['precision'])}** | "
                f"{s['false_alarms']} / {s['fault_free_pair_windows']:,} "
                f"(**{s['false_alarms_per_1000_pair_windows']:.2f}**) | accuracy **{_fmt(s['attribution_accuracy'])}** | "
                f"| **{s['nhi_false_degraded_minutes']:g}** | {t.get('exact', 0):,}/{t.get('windows', 0):,} | "
                f"{t.get('duplicate_reports', 0):,} | {t.get('late_samples', 0)} |")
    return f"{realism}:\n\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__.splitlines()[0])
    ap.add_argument("--realism", default="smooth,realistic")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    variants = [v for v in a.realism.split(",") if v]
    results: dict[str, list] = {v: [] for v in variants}
    with ProcessPoolExecutor(a.jobs) as ex:
        for realism, r in ex.map(_one, [(str(p), v) for v in variants for p in SCENARIOS]):
            results[realism].append(r)
            print(f"  {realism:10s} {r.name:28s} {r.seconds:6.1f} s", file=sys.stderr)
    if a.json:
        print(json.dumps({v: {"scenarios": [r.as_json() for r in rs], "suite": suite_summary(rs)}
                          for v, rs in results.items()}, indent=2, default=str))
        return 0
    for v in variants:
        print(table(results[v], v))
        s = suite_summary(results[v])
        print(f"\nconfusion (detected faults, truth → given): {s['confusion']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
