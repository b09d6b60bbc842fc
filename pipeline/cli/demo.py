"""``flowmon demo``: the whole pipeline on the embedded default, in one command.

Starts the bundled Tansu broker, a worker process (Faust agents + ClickHouse sink on
chdb, with its SQL endpoint), runs the fleet simulator in simulated time, shows live
progress, waits until every window has landed, checks the landed totals against the
simulator's own, and prints what landed.

A run never mixes with another: it refuses to start while a flowmon process runs in
its data directory, or when its ClickHouse database already holds data (an earlier
run, or real data); ``--fresh`` first moves the earlier data aside
(``<data_dir>/previous/<time>/``), never deletes it. The worker's log is rotated
(``worker.log``, ``worker.log.1`` ... ``.5``), and a worker that dies is reported with
its status and the end of its log.
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
from pipeline.cli.options import check_scenario, make_settings
from pipeline.config import Settings
from pipeline.errors import FlowmonError, InUse

__all__ = ["demo", "run_demo", "summary_tables", "alerts_table", "start_embedded", "rotate", "DemoRefused"]

#: Exit status of a demo that refuses to run (the data directory is in use or holds data): ``InUse``'s.
REFUSED = InUse.exit_code
#: Exit status of a demo whose worker died, or whose windows did not all land with exact totals.
FAILED = FlowmonError.exit_code


class DemoRefused(InUse):
    """The demo will not run here; the message says why and what to do."""


class WorkerDied(FlowmonError):
    """The demo's worker process exited; the message holds its status and the end of its log."""


def rotate(path: Path, keep: int = 5) -> None:
    """Shift ``path`` to ``path.1`` (``.1`` to ``.2`` ...), keeping ``keep`` old copies: a new run never
    overwrites the log of the previous one.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); log = d / "worker.log"
    >>> for run in "abc":
    ...     rotate(log, keep=2); _ = log.write_text(run)
    >>> sorted(p.name for p in d.iterdir()), log.read_text(), (d / "worker.log.2").read_text()
    (['worker.log', 'worker.log.1', 'worker.log.2'], 'c', 'a')
    """
    for i in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{i + 1}"))
    if path.exists():
        path.replace(path.with_name(f"{path.name}.1"))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _live_owner(data: Path) -> str | None:
    """What flowmon process runs in ``data`` (its embedded broker or SQL endpoint), or None."""
    from pipeline.clickhouse.sqlserve import read_address_file

    for name, what in (("broker.json", "embedded broker"), ("sql-endpoint.json", "ClickHouse owner")):
        try:
            info = json.loads((data / name).read_text())
            os.kill(int(info["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if name == "broker.json" or read_address_file(data / name) is not None:
            return f"a flowmon process (pid {info['pid']}, {what})"
    return None


def _set_aside(settings: Settings, data: Path) -> Path | None:
    """``--fresh``: move the earlier run's ClickHouse data to ``<data>/previous/<UTC time>/``; its path."""
    import shutil

    from pipeline.clickhouse.client import is_chdb, parse_chdb_dsn

    if not is_chdb(settings.clickhouse_dsn):
        raise DemoRefused(f"--fresh moves only in-process (chdb) data; {settings.clickhouse_dsn} is a ClickHouse "
                          "server: point FLOWMON_CLICKHOUSE_DSN at an empty database instead")
    path, _ = parse_chdb_dsn(settings.clickhouse_dsn)
    chdb_dir = Path(path)
    if path == ":memory:" or not chdb_dir.exists():
        return None
    target = data / "previous" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target.mkdir(parents=True, exist_ok=False)
    shutil.move(str(chdb_dir), str(target / chdb_dir.name))
    for name in ("demo-windows.png",):
        if (data / name).exists():
            (data / name).replace(target / name)
    return target


def _rows_held(client: Any) -> dict[str, int]:
    """Rows already in the tables a run writes ({} for an empty database)."""
    held = {}
    for table in ("flow_windows", "deadletter", "flow_anomalies"):
        n = int(client.command(f"SELECT count() FROM {table}"))
        if n:
            held[table] = n
    return held


def start_embedded(data: Path, console: Console):
    """Start the bundled Tansu broker; record its address (``broker.json``) so other flowmon commands find it."""
    from pipeline.runtime.brokers import EmbeddedTansu

    broker = EmbeddedTansu(data / "tansu").start()
    data.mkdir(parents=True, exist_ok=True)
    (data / "broker.json").write_text(json.dumps({"bootstrap": broker.bootstrap, "pid": os.getpid(),
                                                  "broker_pid": broker.pid}))
    console.print(f"embedded Tansu broker on [bold]{broker.bootstrap}[/] (in memory: its topics vanish when it stops)")
    return broker


def _wait_file(path: Path, proc: subprocess.Popen, timeout: float, log_path: Path) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise WorkerDied(_death(proc, log_path))
        if path.exists():
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass
        time.sleep(0.1)
    raise WorkerDied(f"the worker did not publish {path} within {timeout:.0f} s; see {log_path}")


def demo(scenario: Annotated[Optional[Path], typer.Option(help="Scenario/topology+traffic YAML")] = None,
         duration: Annotated[str, typer.Option(help="Simulated time to run, e.g. 1h")] = "1h",
         seed: Annotated[int, typer.Option(help="Simulator seed")] = 7,
         follow: Annotated[bool, typer.Option(help="Keep broker and worker running afterwards")] = False,
         fresh: Annotated[bool, typer.Option(help="Move an earlier run's data aside (to DATA_DIR/previous/) first")]
         = False) -> None:
    """Run the whole pipeline on the embedded default: broker, worker, sink, simulator; print what landed."""
    from pipeline.sim.scenario import DEMO_SCENARIO
    check_scenario(scenario or DEMO_SCENARIO, duration)
    raise typer.Exit(run_demo(make_settings(), scenario or DEMO_SCENARIO, duration, seed, follow, stderr_console,
                              fresh=fresh))


@dataclass
class _Run:
    """The simulated reports, the pair-windows the simulator's oracle expects of them, and their time span."""

    reports: list[Any]
    expected: dict[Any, Any]
    lo: int  # first and last window start expected
    hi: int


def run_demo(settings: Settings, scenario: Path, duration: str, seed: int, follow: bool, console: Console,
             fresh: bool = False) -> int:
    """The demo; returns its exit status (0: every window landed with the simulator's exact totals)."""
    try:
        return _run_demo(settings, scenario, duration, seed, follow, console, fresh)
    except DemoRefused as exc:
        console.print(f"[red]error:[/] {exc.line()}", highlight=False, soft_wrap=True)
        return REFUSED
    except WorkerDied as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)  # with the log's tail: several lines
        return FAILED


def _run_demo(settings: Settings, scenario: Path, duration: str, seed: int, follow: bool, console: Console,
              fresh: bool) -> int:
    from pipeline.clickhouse.client import connect, is_chdb
    from pipeline.clickhouse.sqlserve import endpoint_client
    from pipeline.runtime.topics import setup_topics

    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    owner = _live_owner(data)
    if owner:
        raise DemoRefused(f"{owner} is running in {data}; stop it first, or run the demo in another directory "
                          "(FLOWMON_DATA_DIR=DIR and FLOWMON_CLICKHOUSE_DSN=chdb://DIR/chdb)")
    if fresh:
        moved = _set_aside(settings, data)
        if moved:
            console.print(f"--fresh: the earlier data is now in {moved}")
    endpoint = data / "sql-endpoint.json"
    endpoint.unlink(missing_ok=True)
    run = _simulate(scenario, duration, seed, settings.window_s, console)
    broker = start_embedded(data, console)
    log_path = data / "worker.log"
    rotate(log_path)
    worker = _start_worker(settings, broker.bootstrap, data, scenario, log_path)
    try:
        topics = setup_topics(settings, broker.bootstrap)
        if is_chdb(settings.clickhouse_dsn):
            info = _wait_file(endpoint, worker, 120, log_path)
            client = endpoint_client(info)
            where = (f"{settings.clickhouse_dsn} (in-process chdb; read-only SQL endpoint http://127.0.0.1:{info['port']}/, "
                     f"its token in {endpoint})")
        else:
            client = connect(settings.clickhouse_dsn)
            where = settings.clickhouse_dsn
        _wait_schema(client, worker, log_path)
        held = _rows_held(client)
        if held:
            rows = ", ".join(f"{n:,} rows in {t}" for t, n in held.items())
            raise DemoRefused(f"the demo's ClickHouse already holds data ({rows}): runs would mix. Add --fresh to "
                              f"move it aside (to {data / 'previous'}/), or run in another directory "
                              "(FLOWMON_DATA_DIR=DIR and FLOWMON_CLICKHOUSE_DSN=chdb://DIR/chdb)")
        landed = _produce_and_land(client, worker, log_path, broker.bootstrap, topics.reports, run, console)
        diffs = _compare(run.expected, _landed_totals(client, run))
        _show_results(client, run, data / "demo-windows.png", scenario, console)
        exact = "totals exact" if not diffs else f"[red]{len(diffs)} pair-windows differ from the simulator[/]"
        console.print(f"\n[bold]{landed}/{len(run.expected)}[/] pair-windows landed, {exact}. ClickHouse data: "
                      f"[bold]{where}[/]; worker log: {log_path}")
        for d in diffs[:5]:
            console.print(f"  {d}", highlight=False)
        if follow:
            web = _start_console(settings, data)
            url = _console_url(web, data, console)
            console.print(f"\n[green]following[/]: broker {broker.bootstrap}{f'; console [bold]{url}[/]' if url else ''}"
                          " — in another terminal: flowmon produce FILE, flowmon sql \"SELECT ...\", flowmon alerts; "
                          "Ctrl-C stops.")
            try:
                status = worker.wait()
            except KeyboardInterrupt:
                status = None
            finally:
                web.terminate()
                web.wait(10)
            if status is not None:
                raise WorkerDied(_death(worker, log_path))
        else:
            console.print(f"see it in a browser: [bold]flowmon console[/] (then http://{settings.console_host}:"
                          f"{settings.console_port or 'PORT'}/), or run the demo with --follow, which serves it")
        return 0 if landed == len(run.expected) and not diffs else FAILED
    finally:
        _stop_worker(worker)
        broker.stop()
        (data / "broker.json").unlink(missing_ok=True)


def _death(worker: subprocess.Popen, log_path: Path) -> str:
    """One line on the worker's exit, then the end of its log."""
    return (f"the worker exited with status {worker.returncode} at {time.strftime('%H:%M:%S')}; "
            f"the end of {log_path}:\n{_tail(log_path)}")


def _wait_schema(client: Any, worker: subprocess.Popen, log_path: Path, timeout: float = 60) -> None:
    """Until the worker's migrations have made the tables the run reads."""
    end = time.time() + timeout
    while time.time() < end:
        if worker.poll() is not None:
            raise WorkerDied(_death(worker, log_path))
        names = {r[0] for r in client.query("SHOW TABLES").result_rows}
        if {"flow_windows", "deadletter", "flow_anomalies"} <= names:
            return
        time.sleep(0.2)
    raise WorkerDied(f"the worker did not create the ClickHouse tables within {timeout:.0f} s; see {log_path}")


def _landed_totals(client: Any, run: _Run) -> dict[tuple[str, str, int], dict[str, int]]:
    from pipeline.sim.totals import TOTAL_FIELDS as COUNTERS

    rows = client.query(
        f"SELECT src_subnet, dst_subnet, toUnixTimestamp(window_start), {', '.join(COUNTERS)} FROM flow_windows FINAL "
        "WHERE window_start BETWEEN toDateTime({lo:UInt32}, 'UTC') AND toDateTime({hi:UInt32}, 'UTC')",
        parameters={"lo": run.lo, "hi": run.hi}).result_rows
    return {(r[0], r[1], int(r[2])): dict(zip(COUNTERS, map(int, r[3:]))) for r in rows}


def _compare(expected: dict, landed: dict) -> list[str]:
    """Pair-windows whose landed totals differ from the simulator's (missing ones are counted by the caller)."""
    out = []
    for key in sorted(set(expected) & set(landed)):
        bad = {c: (expected[key][c], landed[key][c]) for c in expected[key] if landed[key].get(c) != expected[key][c]}
        if bad:
            out.append(f"{key}: {bad} (expected, landed)")
    out += [f"{key}: landed, not expected" for key in sorted(set(landed) - set(expected))]
    return out


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
    from pipeline.runtime.process import die_with_parent
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker", "--loglevel", "info"], env=env,
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, preexec_fn=die_with_parent())


def _start_console(settings: Settings, data: Path) -> subprocess.Popen:
    """``flowmon console`` in a subprocess (it reads the worker's SQL endpoint), logging to ``console.log``."""
    env = dict(os.environ, FLOWMON_DATA_DIR=str(data), FLOWMON_CLICKHOUSE_DSN=settings.clickhouse_dsn,
               FLOWMON_CONSOLE_HOST=settings.console_host, FLOWMON_CONSOLE_PORT=str(settings.console_port))
    from pipeline.runtime.process import die_with_parent
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "console"], env=env,
                            stdout=open(data / "console.log", "wb"), stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent())


def _console_url(web: subprocess.Popen, data: Path, console: Console, timeout: float = 30) -> str | None:
    """The console's address once it answers (read from its first line), or None with one warning line."""
    import re
    import urllib.request

    log = data / "console.log"
    end = time.time() + timeout
    while time.time() < end and web.poll() is None:
        m = re.search(r"on (http://\S+/)", log.read_text(errors="replace"))
        if m:
            try:
                urllib.request.urlopen(m.group(1) + "ping", timeout=2).read()
                return m.group(1)
            except OSError:
                pass
        time.sleep(0.2)
    last = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
    console.print(f"[yellow]the console did not start[/] ({last}); the worker keeps running")
    return None


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
                raise WorkerDied(_death(worker, log_path))
            landed = len(set(_landed_totals(client, run)) & set(run.expected))  # this run's own pair-windows
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
        from datetime import datetime, timezone

        from pipeline.views.plot import plot_windows
        png = plot_windows(client, png, title=f"flowmon demo: {scenario.name}",
                           start=datetime.fromtimestamp(run.lo, tz=timezone.utc))  # the whole run (this run only)
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
