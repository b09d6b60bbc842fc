"""``flowmon demo``: the whole pipeline on the embedded default, in one command.

Starts the bundled Tansu broker, a worker process (Faust agents + ClickHouse sink on
chdb, with its SQL endpoint), runs the fleet simulator in simulated time, shows live
progress, waits until every window has landed, and prints what landed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:  # rich.table and rich.progress load when the demo runs, not with every flowmon command
    from rich.table import Table

from pipeline.cli.options import console as stderr_console
from pipeline.cli.options import make_settings
from pipeline.config import Settings

__all__ = ["demo", "run_demo", "summary_tables", "alerts_table", "start_embedded"]


def start_embedded(data: Path, console: Console):
    """Start the bundled Tansu broker; record its address (``broker.json``) so other flowmon commands find it."""
    from pipeline.runtime.brokers import EmbeddedTansu

    broker = EmbeddedTansu(data / "tansu").start()
    data.mkdir(parents=True, exist_ok=True)
    (data / "broker.json").write_text(json.dumps({"bootstrap": broker.bootstrap, "pid": os.getpid()}))
    console.print(f"embedded Tansu broker on [bold]{broker.bootstrap}[/] (in memory: its topics vanish when it stops)")
    return broker


def _wait_file(path: Path, proc: subprocess.Popen, timeout: float) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}; see its log")
        if path.exists():
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass
        time.sleep(0.1)
    raise TimeoutError(f"worker did not publish {path} within {timeout:.0f} s")


def demo(scenario: Annotated[Optional[Path], typer.Option(help="Scenario/topology+traffic YAML")] = None,
         duration: Annotated[str, typer.Option(help="Simulated time to run, e.g. 1h")] = "1h",
         seed: Annotated[int, typer.Option(help="Simulator seed")] = 7,
         follow: Annotated[bool, typer.Option(help="Keep broker and worker running afterwards")] = False) -> None:
    """Run the whole pipeline on the embedded default: broker, worker, sink, simulator; print what landed."""
    from pipeline.sim.scenario import DEMO_SCENARIO
    raise typer.Exit(run_demo(make_settings(), scenario or DEMO_SCENARIO, duration, seed, follow, stderr_console))


@dataclass
class _Run:
    """The simulated reports, the pair-windows the simulator's oracle expects of them, and their time span."""

    reports: list[Any]
    expected: dict[Any, Any]
    lo: int  # first and last window start expected
    hi: int


def run_demo(settings: Settings, scenario: Path, duration: str, seed: int, follow: bool, console: Console) -> int:
    from pipeline.clickhouse.sqlserve import endpoint_client
    from pipeline.runtime.topics import setup_topics

    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    endpoint = data / "sql-endpoint.json"
    endpoint.unlink(missing_ok=True)
    run = _simulate(scenario, duration, seed, settings.window_s, console)
    broker = start_embedded(data, console)
    log_path = data / "worker.log"
    worker = _start_worker(settings, broker.bootstrap, data, scenario, log_path)
    try:
        topics = setup_topics(settings, broker.bootstrap)
        info = _wait_file(endpoint, worker, 120)
        client = endpoint_client(info)
        landed = _produce_and_land(client, worker, log_path, broker.bootstrap, topics.reports, run, console)
        _show_results(client, run, data / "demo-windows.png", scenario, console)
        console.print(f"\n[bold]{landed}/{len(run.expected)}[/] pair-windows landed. ClickHouse data: "
                      f"[bold]{settings.clickhouse_dsn}[/] (in-process chdb); worker log: {log_path}")
        if follow:
            console.print(f"\n[green]following[/]: broker {broker.bootstrap}, SQL http://127.0.0.1:{info['port']}/ "
                          f"(read-only; its token is in {endpoint}) — "
                          "in another terminal: flowmon produce FILE, flowmon sql \"SELECT ...\"; Ctrl-C stops.")
            try:
                worker.wait()
            except KeyboardInterrupt:
                pass
        return 0 if landed == len(run.expected) else 1
    finally:
        _stop_worker(worker)
        broker.stop()
        (data / "broker.json").unlink(missing_ok=True)


def _simulate(scenario: Path, duration: str, seed: int, window_s: int, console: Console) -> _Run:
    """Run the fleet simulator for ``duration`` of simulated time; say what it made."""
    from pipeline.sim.scenario import parse_duration
    from pipeline.sim.simulator import Simulator

    sim = Simulator.from_scenario(scenario, seed=seed)
    reports = list(sim.reports(parse_duration(duration)))
    expected = sim.expected_totals(reports, window_s)
    lo, hi = min(k[2] for k in expected), max(k[2] for k in expected)
    n_samples = sum(len(r["samples"]) for r in reports)
    console.print(f"simulated [bold]{len(sim.topology.instances)}[/] hosts for {duration} from {scenario}: "
                  f"{len(reports):,} reports, {n_samples:,} samples, {len(expected):,} pair-windows expected")
    return _Run(reports, expected, lo, hi)


def _start_worker(settings: Settings, bootstrap: str, data: Path, scenario: Path, log_path: Path) -> subprocess.Popen:
    """``flowmon worker`` (pipeline and sink) in a subprocess on the embedded broker, logging to ``log_path``."""
    env = dict(os.environ, FLOWMON_BROKER=bootstrap, FLOWMON_DATA_DIR=str(data),
               FLOWMON_TOPOLOGY=str(scenario), FLOWMON_ROLES="pipeline,sink",
               FLOWMON_CLICKHOUSE_DSN=settings.clickhouse_dsn, FLOWMON_WINDOW_S=str(settings.window_s),
               FLOWMON_PARTITIONS=str(settings.partitions))
    for k, v in (("FLOWMON_SESSION_TIMEOUT_S", "4"), ("FLOWMON_REBALANCE_TIMEOUT_S", "4"),
                 ("FLOWMON_SOURCE_IDLE_S", "2")):
        env.setdefault(k, v)
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker", "--loglevel", "info"], env=env,
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)


def _produce_and_land(client: Any, worker: subprocess.Popen, log_path: Path, bootstrap: str, topic: str, run: _Run,
                      console: Console) -> int:
    """Produce the reports, then wait (at most 180 s) until every expected window landed; live progress of
    both. Returns how many landed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipeline.runtime.produce import produce_reports

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console)
    with progress:
        t_prod = progress.add_task("produce reports", total=len(run.reports))
        t_land = progress.add_task("windows landed", total=len(run.expected))
        asyncio.run(produce_reports(
            bootstrap, topic, run.reports, progress_every=200,
            progress=lambda st: progress.update(t_prod, completed=st.reports)))
        progress.update(t_prod, completed=len(run.reports))
        deadline = time.time() + 180
        landed = 0
        while landed < len(run.expected) and time.time() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.returncode}; see {log_path}")
            landed = client.command(
                "SELECT count() FROM flow_windows FINAL WHERE window_start BETWEEN "
                "toDateTime({lo:UInt32}, 'UTC') AND toDateTime({hi:UInt32}, 'UTC')",
                parameters={"lo": run.lo, "hi": run.hi})
            progress.update(t_land, completed=landed)
            time.sleep(0.5)
    return landed


def _show_results(client: Any, run: _Run, png: Path, scenario: Path, console: Console) -> None:
    """What landed: the summary tables, dead letters, the alerts opened, a plot."""
    for table in summary_tables(client, run.lo, run.hi):
        console.print(table)
    dead = client.query("SELECT reason, sum(samples) FROM deadletter FINAL GROUP BY reason").result_rows
    console.print(f"dead letters: {dict(dead) if dead else 'none'}")
    console.print(alerts_table(client, run.lo, run.hi))
    try:
        from pipeline.views.plot import plot_windows
        png = plot_windows(client, png, title=f"flowmon demo: {scenario.name}")
        console.print(f"plot: {png}")
    except Exception as exc:  # a plot is a convenience; never fail the demo on it
        console.print(f"[yellow]no plot: {exc}[/]")


def _stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


def alerts_table(client: Any, lo: int, hi: int) -> Table | str:
    """Alerts opened in the run, with their attribution (or a line saying there were none)."""
    from rich.table import Table

    rows = client.query(
        "SELECT first_seen, scope, concat(src_subnet, ' -> ', dst_subnet, if(instance IS NULL, '', concat(' [', "
        "instance, ']'))), metric, severity, cause, ifNull(element, '') FROM alerts_attributed "
        "WHERE first_seen BETWEEN toDateTime({lo:UInt32}, 'UTC') AND toDateTime({hi:UInt32} + 600, 'UTC') "
        "ORDER BY first_seen, scope, 3, metric", parameters={"lo": lo, "hi": hi}).result_rows
    if not rows:
        return "alerts: none (no fault in this scenario; try --scenario tests/scenarios/attr-az-pair-loss.yaml --duration 2h)"
    t = Table(title=f"{len(rows)} alerts opened (flowmon alerts follows them live)")
    for col in ("first seen (UTC)", "scope", "key", "metric", "severity", "cause", "blamed"):
        t.add_column(col)
    shown = rows if len(rows) <= 12 else rows[:6] + [("…",) * 7] + rows[-5:]
    for r in shown:  # escaped: '[instance]' would read as rich markup
        t.add_row(*[x.strftime("%H:%M") if hasattr(x, "strftime") else escape(str(x or "")) for x in r])
    return t


def summary_tables(client: Any, lo: int, hi: int) -> list[Table]:
    """Per-pair and per-AZ views of the windows in [lo, hi] (what a dashboard would show)."""
    from rich.table import Table

    rows = client.query(
        """SELECT src_subnet, dst_subnet, src_az = dst_az AS same_az, count() AS windows,
                  sum(bytes) / count() AS bytes_per_window, sum(retransmissions), sum(timeouts),
                  sum(rtt_sum_us) / nullIf(sum(rtt_count), 0) AS rtt_mean, max(rtt_p99_us)
           FROM flow_windows FINAL
           WHERE window_start BETWEEN toDateTime({lo:UInt32}, 'UTC') AND toDateTime({hi:UInt32}, 'UTC')
           GROUP BY src_subnet, dst_subnet, same_az ORDER BY src_subnet, dst_subnet LIMIT 40""",
        parameters={"lo": lo, "hi": hi}).result_rows
    t = Table(title="subnet pairs (reporter's subnet -> remote subnet), 10-minute windows")
    for col in ("src -> dst", "windows", "MB / window", "retrans", "RTOs", "RTT mean ms", "RTT p99 ms (max)"):
        t.add_column(col, justify="right" if col != "src -> dst" else "left")
    for src, dst, same, n, bpw, rt, to, rtt, p99 in rows:
        t.add_row(f"{src} -> {dst}{'' if same else '  (inter-AZ)'}", str(n), f"{bpw / 1e6:,.2f}", str(rt), str(to),
                  f"{(rtt or 0) / 1000:.3f}", f"{p99 / 1000:.3f}")
    az = client.query(
        """SELECT src_az, sum(bytes) / uniqExact(window_start) FROM flow_windows FINAL
           WHERE window_start BETWEEN toDateTime({lo:UInt32}, 'UTC') AND toDateTime({hi:UInt32}, 'UTC')
             AND src_az != dst_az
           GROUP BY src_az ORDER BY src_az""", parameters={"lo": lo, "hi": hi}).result_rows
    t2 = Table(title="inter-AZ traffic by AZ (as reported by its hosts)")
    t2.add_column("AZ")
    t2.add_column("MB / window", justify="right")
    for a, b in az:
        t2.add_row(a, f"{b / 1e6:,.2f}")
    return [t, t2]
