"""Shell: the ``flowmon`` command (typer). Every option also reads ``FLOWMON_*`` (see ``config``)."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import orjson
import typer
from rich.console import Console

from pipeline.config import Settings

__all__ = ["main", "cli"]

cli = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="flowmon: TCP flow health per subnet pair, from agents through Kafka to ClickHouse.")
config_cli = typer.Typer(help="Show or check the configuration.", no_args_is_help=True)
cli.add_typer(config_cli, name="config")
console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

BrokerOpt = Annotated[Optional[str], typer.Option("--broker", "-b", help="Bootstrap 'host:port' or 'embedded'.")]


def _settings(**overrides) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _bootstrap(s: Settings) -> str:
    """The broker to talk to: FLOWMON_BROKER, or the live embedded broker a demo/worker started."""
    if s.broker != "embedded":
        return s.broker
    rec = s.data_dir / "broker.json"
    if rec.exists():
        info = json.loads(rec.read_text())
        try:
            os.kill(info["pid"], 0)
            return info["bootstrap"]
        except OSError:
            pass
    console.print("[red]no broker:[/] set --broker host:port (or FLOWMON_BROKER), or start one with "
                  "'flowmon demo --follow' / 'flowmon worker' (embedded)")
    raise typer.Exit(2)


# --- worker -----------------------------------------------------------------------------------
@cli.command()
def worker(broker: BrokerOpt = None,
           roles: Annotated[Optional[str], typer.Option(help="pipeline,sink | pipeline | sink")] = None,
           loglevel: Annotated[str, typer.Option(help="Log level.")] = "warning") -> None:
    """Run a pipeline worker: Faust agents (validate, pre-aggregate, windows) and/or the ClickHouse sink."""
    s = _settings(broker=broker, roles=roles)
    from pipeline.config import unknown_env
    if unknown_env():
        console.print(f"[yellow]warning: unknown variables ignored (typos?):[/] {', '.join(unknown_env())}")
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pipeline.cli.demo import start_embedded
    launched = start_embedded(s.data_dir, console) if s.broker == "embedded" else None
    bootstrap = launched.bootstrap if launched else s.broker
    try:
        run_worker(s, bootstrap, loglevel)
    finally:
        if launched:
            launched.stop()
            (s.data_dir / "broker.json").unlink(missing_ok=True)


def run_worker(s: Settings, bootstrap: str, loglevel: str = "warning") -> None:
    import faust

    from pipeline.runtime.app import create_app
    from pipeline.runtime.topics import Topics, ensure_topics

    asyncio.run(ensure_topics(bootstrap, Topics.from_settings(s)))
    flow = create_app(s, bootstrap)
    if "pipeline" in s.role_set:
        from pipeline.runtime.agents import install
        from pipeline.ingest.topology import load_topology
        install(flow, load_topology(s.topology) if s.topology else None)
    if "sink" in s.role_set:
        _install_sink(flow)
    if s.metrics_port:
        flow.metrics.serve(s.metrics_port)
    faust.Worker(flow.app, loglevel=loglevel.upper(), quiet=True).execute_from_commandline()


def _install_sink(flow) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.clickhouse.client import connect, is_chdb
    from pipeline.runtime.land import Lander
    from pipeline.clickhouse.migrations import migrate
    from pipeline.clickhouse.writer import WindowSink
    from pipeline.clickhouse.sqlserve import SqlServer

    s = flow.settings
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
    client = executor.submit(connect, s.clickhouse_dsn).result()
    applied = executor.submit(migrate, client).result()
    if applied:
        console.print(f"ClickHouse schema: applied {', '.join(applied)}")
    sink = WindowSink(client)
    server = None
    if is_chdb(s.clickhouse_dsn):
        server = SqlServer(client, port=s.serve_port)
        server.start()
        addr = s.data_dir / "sql-endpoint.json"
        server.write_address_file(addr)
        atexit.register(server.stop)  # stop serving and remove the address file on a clean exit
        console.print(f"SQL endpoint for the embedded ClickHouse: [bold]http://127.0.0.1:{server.port}/[/] "
                      f"(address in {addr}; try: flowmon sql \"SELECT count() FROM flow_windows FINAL\")")

    @flow.app.task
    async def land() -> None:
        await Lander(s, flow.bootstrap, sink, executor, flow.metrics).run()


@cli.command()
def demo(scenario: Annotated[Optional[Path], typer.Option(help="Scenario/topology+traffic YAML")] = None,
         duration: Annotated[str, typer.Option(help="Simulated time to run, e.g. 1h")] = "1h",
         seed: Annotated[int, typer.Option(help="Simulator seed")] = 7,
         follow: Annotated[bool, typer.Option(help="Keep broker and worker running afterwards")] = False) -> None:
    """Run the whole pipeline on the embedded default: broker, worker, sink, simulator; print what landed."""
    from pipeline.cli.demo import DEFAULT_SCENARIO, run_demo
    raise typer.Exit(run_demo(_settings(), scenario or DEFAULT_SCENARIO, duration, seed, follow, console))


@cli.command()
def produce(file: Annotated[Path, typer.Argument(help="JSON lines: reports or flat samples ('-' = stdin)")],
            broker: BrokerOpt = None) -> None:
    """Send your own samples (JSON lines) to the reports topic. The pipeline validates them."""
    from pipeline.runtime.produce import load_jsonl_samples, produce_reports
    from pipeline.runtime.topics import Topics, ensure_topics
    s = _settings(broker=broker)
    bootstrap = _bootstrap(s)
    topics = Topics.from_settings(s)
    asyncio.run(ensure_topics(bootstrap, topics))
    stats = asyncio.run(produce_reports(bootstrap, topics.reports, load_jsonl_samples(str(file))))
    console.print(f"produced {stats}")


@cli.command()
def simulate(scenario: Annotated[Path, typer.Argument(help="Scenario YAML (topology + traffic)")],
             duration: Annotated[str, typer.Option(help="Simulated time, e.g. 30m, 6h")] = "1h",
             seed: Annotated[int, typer.Option(help="Seed (same seed, same samples)")] = 7,
             out: Annotated[Optional[Path], typer.Option(help="Write JSON lines here instead of producing")] = None,
             broker: BrokerOpt = None) -> None:
    """Simulate a fleet in simulated time (faster than real time) and produce its reports."""
    import orjson

    from pipeline.sim.simulator import Simulator, parse_duration
    sim = Simulator.from_scenario(scenario, seed=seed)
    reports = sim.reports(parse_duration(duration))
    if out is not None:
        with (sys.stdout.buffer if str(out) == "-" else open(out, "wb")) as fh:
            for r in reports:
                fh.write(orjson.dumps(r) + b"\n")
        return
    from pipeline.runtime.produce import produce_reports
    from pipeline.runtime.topics import Topics, ensure_topics
    s = _settings(broker=broker)
    bootstrap = _bootstrap(s)
    topics = Topics.from_settings(s)
    asyncio.run(ensure_topics(bootstrap, topics))
    stats = asyncio.run(produce_reports(bootstrap, topics.reports, reports))
    console.print(f"produced {stats}")


def _client(s: Settings):
    """A ClickHouse client: the live worker's SQL endpoint if one answers, else the DSN directly."""
    import clickhouse_connect

    from pipeline.clickhouse.sqlserve import read_address_file
    info = read_address_file(s.data_dir / "sql-endpoint.json")
    if info is not None:
        return clickhouse_connect.get_client(host=info.get("host", "127.0.0.1"), port=info["port"])
    from pipeline.clickhouse.client import connect
    return connect(s.clickhouse_dsn)


@cli.command()
def sql(query: Annotated[str, typer.Argument(help="SQL to run")],
        fmt: Annotated[str, typer.Option("--format", "-f", help="ClickHouse output format")] = "PrettyCompact") -> None:
    """Run SQL against flowmon's ClickHouse: the live worker's endpoint if one runs, else the DSN directly."""
    from clickhouse_connect.driver.exceptions import ClickHouseError
    try:
        sys.stdout.write(_client(_settings()).raw_query(query, fmt=fmt).decode())
    except ClickHouseError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1)


@cli.command()
def plot(out: Annotated[Path, typer.Option(help="PNG to write")] = Path("flowmon-windows.png"),
         top: Annotated[int, typer.Option(help="How many subnet pairs (largest by bytes)")] = 8) -> None:
    """Plot data, retransmissions and RTT per subnet pair over time (PNG)."""
    from pipeline.views.plot import plot_windows
    console.print(f"wrote {plot_windows(_client(_settings()), out, top)}")


# --- alerts -------------------------------------------------------------------------------------
from pipeline.alerts.notify import alerts_command  # noqa: E402

cli.command(name="alerts")(alerts_command)


# --- evaluation ---------------------------------------------------------------------------------
@cli.command(name="eval")
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
          = None) -> None:
    """Run scenarios through the detection code in simulated time; print detection and false-alarm scores.

    Exit status 0 when every run completed, whatever the scores; 2 on a bad scenario file.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from pipeline.detect.contract import params_dict, params_from
    from pipeline.detect.detection import DEFAULTS, MODELS
    from pipeline.sim.evaluate import evaluate, suite_summary

    known = params_dict(MODELS[detector].Params()) if detector in MODELS else DEFAULTS  # what this model reads
    params: dict[str, float] = {}
    for item in param or []:
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
    if realism is not None and realism not in ("smooth", "realistic"):
        console.print(f"[red]--realism {realism!r}:[/] expected smooth or realistic")
        raise typer.Exit(2)
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("intervals"),
                  TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal) as bar:
        for path in scenarios:
            task = bar.add_task(path.stem, total=None)
            try:
                r = evaluate(path, detector=detector, params=params, realism=realism,
                             progress=lambda done, total, task=task: bar.update(task, completed=done, total=total))
            except (OSError, ValueError) as exc:
                console.print(f"[red]{path}:[/] {exc}")
                raise typer.Exit(2)
            bar.remove_task(task)
            results.append(r)
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

    def num(x, fmt="{:.3f}"):
        return "–" if x is None else fmt.format(x)

    for r in results:
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
    if len(results) > 1:
        su = suite_summary(results)
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


# --- config -------------------------------------------------------------------------------------
@config_cli.command("dump")
def config_dump() -> None:
    """Print the effective configuration (defaults + FLOWMON_* environment) as JSON."""
    print(Settings().model_dump_json(indent=2))


@config_cli.command("check")
def config_check() -> None:
    """Validate the FLOWMON_* environment; exit 1 with the reason if it is wrong."""
    from pipeline.config import unknown_env
    try:
        Settings()
    except Exception as exc:  # pydantic ValidationError: print it readably
        console.print(f"[red]invalid configuration:[/] {exc}")
        raise typer.Exit(1)
    if unknown_env():
        console.print(f"[red]unknown variables (typos?):[/] {', '.join(unknown_env())}")
        raise typer.Exit(1)
    console.print("[green]configuration ok[/]")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
