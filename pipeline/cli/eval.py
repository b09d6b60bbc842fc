"""``flowmon eval``: scenarios through the detection code in simulated time; detection and false-alarm scores."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import orjson
import typer
from rich.console import Console

from pipeline.cli.options import console

__all__ = ["eval_"]


def eval_(scenarios: Annotated[list[Path], typer.Argument(help="Scenario YAML file(s) (topology, traffic, faults)")],
          as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (several files: "
                                                "{'scenarios': [...], 'suite': {...}})")] = False,
          detector: Annotated[str, typer.Option(help="Detection model: baseline | gaussian | hst | page_hinkley")]
          = "baseline",
          param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="Detection parameter override "
                                                             "NAME=VALUE (see detect.BaselineParams); "
                                                             "repeatable")] = None,
          events: Annotated[Optional[Path], typer.Option(help="Also write every alert event (JSON lines) here")]
          = None,
          realism: Annotated[Optional[str], typer.Option(help="smooth | realistic: overrides every scenario's own "
                                                         "'realism:' (default: the scenario's, smooth if none)")]
          = None,
          jobs: Annotated[int, typer.Option("--jobs", "-j", help="Scenarios run at once, each in a process of its "
                                            "own (0: one per CPU); the results are the same")] = 0,
          instances: Annotated[bool, typer.Option("--instances/--pairs-only", help="Also detect per reporting "
                                                  "instance (the default), or pair keys only, as a worker with "
                                                  "FLOWMON_DETECT_INSTANCES=false")] = True) -> None:
    """Run scenarios through the detection code in simulated time; print detection and false-alarm scores.

    Exit status 0 when every run completed, whatever the scores; 2 on a bad scenario file.
    """
    from pipeline.sim.evaluate import suite_summary

    params = _params(detector, param or [])
    if realism is not None and realism not in ("smooth", "realistic"):
        console.print(f"[red]--realism {realism!r}:[/] expected smooth or realistic")
        raise typer.Exit(2)
    if jobs < 0:
        console.print(f"[red]--jobs {jobs}:[/] expected 0 (one per CPU) or more")
        raise typer.Exit(2)
    results = _evaluate_all(scenarios, detector, params, realism, jobs or os.cpu_count() or 1, instances)
    if events:
        with open(events, "wb") as fh:
            for r in results:
                for e in r.events:
                    fh.write(orjson.dumps(e) + b"\n")
    if as_json:
        doc = results[0].as_json() if len(results) == 1 else {
            "scenarios": [r.as_json() for r in results], "suite": suite_summary(results)}
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    out = Console(width=None if sys.stdout.isatty() else 160)
    for r in results:
        _print_result(out, r)
    if len(results) > 1:
        _print_suite(out, suite_summary(results))


def _params(detector: str, items: list[str]) -> dict[str, float]:
    """``--param NAME=VALUE`` items -> overrides, checked against what the chosen model reads (exit 2 if not)."""
    from pipeline.detect.contract import params_dict, params_from
    from pipeline.detect.detection import DEFAULTS, MODELS

    known = params_dict(MODELS[detector].Params()) if detector in MODELS else DEFAULTS  # what this model reads
    params: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in known or not value:
            console.print(f"[red]--param {item!r}:[/] expected NAME=VALUE with NAME one of {', '.join(known)}")
            raise typer.Exit(2)
        params[name] = float(value)
    if detector in MODELS:
        try:
            params_from(MODELS[detector].Params, params)
        except ValueError as exc:
            console.print(f"[red]--param:[/] {exc}")
            raise typer.Exit(2)
    return params


def _evaluate_all(scenarios: list[Path], detector: str, params: dict[str, float], realism: str | None,
                  jobs: int, instances: bool = True) -> list[Any]:
    """Evaluate the scenarios (``jobs`` at once), with a progress bar on a terminal; exit 2 on a bad scenario file."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipeline.sim.evaluate import evaluate, evaluate_many

    options = {"detector": detector, "params": params, "realism": realism, "instances": instances}
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
                  TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal) as bar:
        if jobs > 1 and len(scenarios) > 1:  # one bar for the whole set: the runs are in other processes
            task = bar.add_task(f"{len(scenarios)} scenarios, {min(jobs, len(scenarios))} at once",
                                total=len(scenarios), unit="scenarios")
            try:
                return evaluate_many(list(scenarios), jobs=jobs, done=lambda r: bar.advance(task), **options)
            except (OSError, ValueError) as exc:
                console.print(f"[red]{(getattr(exc, '__notes__', None) or ['scenario'])[0]}:[/] {exc}")
                raise typer.Exit(2)
        for path in scenarios:  # one at a time, in this process: a bar per scenario, by interval
            task = bar.add_task(path.stem, total=None, unit="intervals")
            try:
                results.append(evaluate(path, **options, progress=lambda done, total, task=task: bar.update(
                    task, completed=done, total=total)))
            except (OSError, ValueError) as exc:
                console.print(f"[red]{path}:[/] {exc}")
                raise typer.Exit(2)
            bar.remove_task(task)
    return results


def _num(x: float | None, fmt: str = "{:.3f}") -> str:
    """
    >>> _num(None), _num(0.5), _num(3, "{}")
    ('–', '0.500', '3')
    """
    return "–" if x is None else fmt.format(x)


def _print_result(out: Console, r: Any) -> None:
    """One scenario: its faults (detected? delay, cause given) and its scores."""
    from rich.table import Table

    num = _num
    d = r.detection()
    rl = r.realism if isinstance(r.realism, str) else orjson.dumps(r.realism).decode()
    t = Table(title=f"{r.name} ({rl}): {r.intervals} intervals, {r.reports:,} reports, {r.seconds:.1f} s",
              title_justify="left")
    for col in ("fault", "kind", "target", "start", "detected", "delay (intervals)", "alerts", "metrics",
                "cause: truth", "given", "NHI (intervals)"):
        t.add_column(col)
    for f in r.faults:
        (tk, tv), = f["target"].items()
        t.add_row(f["name"], f["kind"], f"{tk}={tv}", f"{f['start_s'] // 60} min", "yes" if f["detected"] else "[red]no[/]",
                  num(f["delay_intervals"], "{}"), str(f["alerts"]), ",".join(f["metrics"]), str(f["cause_truth"]),
                  ("" if f["cause_given"] == f["cause_truth"] else "[red]") + str(f["cause_given"]),
                  num(f["nhi_delay_intervals"], "{}"))
    if r.faults:
        out.print(t)
    else:
        out.print(f"[bold]{t.title}[/] (no faults)")
    out.print(f"  recall {num(d['recall'])}  precision {num(d['precision'])} ({d['alerts']} alerts)  "
              f"median delay {num(d['median_delay_intervals'], '{}')} intervals  false alarms {d['false_alarms']} "
              f"= {d['false_alarms_per_1000_pair_windows']:.2f} per 1,000 of {d['fault_free_pair_windows']} "
              f"fault-free pair-windows  state ≤ {r.state.get('max', 0):,} B/key")
    tot = r.totals
    out.print(f"  windows exact {tot['exact']}/{tot['windows']} (wrong {tot['wrong']})  late samples "
              f"{tot['late_samples']}  duplicate reports {tot['duplicate_reports']} of {r.reports:,}")
    at = r.attribution()
    if at["detected_faults"]:
        out.print(f"  attribution {at['right']}/{at['detected_faults']} right  NHI degraded periods "
                  f"{at['nhi_degraded_periods']}, false-degraded {at['nhi_false_degraded_minutes']:.0f} min")


def _print_suite(out: Console, su: dict[str, Any]) -> None:
    """Several scenarios: the suite's scores and the attribution confusion matrix."""
    from rich.table import Table

    num = _num
    out.print(f"[bold]suite ({su['scenarios']} scenarios):[/] faults detected {su['detected']}/{su['faults']} "
              f"recall {num(su['recall'])}  precision {num(su['precision'])} ({su['alerts']} alerts)  median delay "
              f"{num(su['median_delay_intervals'], '{}')}  false alarms {su['false_alarms']} = "
              f"{su['false_alarms_per_1000_pair_windows']:.2f} per 1,000 pair-windows  "
              f"max state {su['max_state_bytes_per_key']:,} B/key  {su['seconds']} s")
    out.print(f"[bold]attribution:[/] accuracy {su['attribution_accuracy']:.3f}  NHI false-degraded "
              f"{su['nhi_false_degraded_minutes']:.0f} min (workload-only scenarios: "
              f"{su['nhi_false_degraded_minutes_workload_only']:.0f})")
    tot = su["totals"]
    out.print(f"[bold]windows:[/] exact {tot['exact']}/{tot['windows']} (wrong {tot['wrong']})  late samples "
              f"{tot['late_samples']}  duplicate reports {tot['duplicate_reports']}  realism {', '.join(su['realism'])}")
    cm = Table(title="confusion (detected faults): truth → given", title_justify="left")
    given = sorted({g for row in su["confusion"].values() for g in row})
    cm.add_column("truth")
    for g in given:
        cm.add_column(g)
    for truth, row in sorted(su["confusion"].items()):
        cm.add_row(truth, *[str(row.get(g, 0)) for g in given])
    out.print(cm)
