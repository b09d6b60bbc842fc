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

import typer
from rich.console import Console

from .config import Settings

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
    from .config import unknown_env
    if unknown_env():
        console.print(f"[yellow]warning: unknown variables ignored (typos?):[/] {', '.join(unknown_env())}")
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .demo import start_embedded
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

    from .app import create_app
    from .topics import Topics, ensure_topics

    asyncio.run(ensure_topics(bootstrap, Topics.from_settings(s)))
    flow = create_app(s, bootstrap)
    if "pipeline" in s.role_set:
        from .agents import install
        from .topology import load_topology
        install(flow, load_topology(s.topology) if s.topology else None)
    if "sink" in s.role_set:
        _install_sink(flow)
    if s.metrics_port:
        flow.metrics.serve(s.metrics_port)
    faust.Worker(flow.app, loglevel=loglevel.upper(), quiet=True).execute_from_commandline()


def _install_sink(flow) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from .clickhouse import connect, is_chdb
    from .land import Lander
    from .migrate import migrate
    from .sink import WindowSink
    from .sqlserve import SqlServer

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
    from .demo import DEFAULT_SCENARIO, run_demo
    raise typer.Exit(run_demo(_settings(), scenario or DEFAULT_SCENARIO, duration, seed, follow, console))


@cli.command()
def produce(file: Annotated[Path, typer.Argument(help="JSON lines: reports or flat samples ('-' = stdin)")],
            broker: BrokerOpt = None) -> None:
    """Send your own samples (JSON lines) to the reports topic. The pipeline validates them."""
    from .produce import load_jsonl_samples, produce_reports
    from .topics import Topics, ensure_topics
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

    from .simulate import Simulator, parse_duration
    sim = Simulator.from_scenario(scenario, seed=seed)
    reports = sim.reports(parse_duration(duration))
    if out is not None:
        with (sys.stdout.buffer if str(out) == "-" else open(out, "wb")) as fh:
            for r in reports:
                fh.write(orjson.dumps(r) + b"\n")
        return
    from .produce import produce_reports
    from .topics import Topics, ensure_topics
    s = _settings(broker=broker)
    bootstrap = _bootstrap(s)
    topics = Topics.from_settings(s)
    asyncio.run(ensure_topics(bootstrap, topics))
    stats = asyncio.run(produce_reports(bootstrap, topics.reports, reports))
    console.print(f"produced {stats}")


def _client(s: Settings):
    """A ClickHouse client: the live worker's SQL endpoint if one answers, else the DSN directly."""
    import clickhouse_connect

    from .sqlserve import read_address_file
    info = read_address_file(s.data_dir / "sql-endpoint.json")
    if info is not None:
        return clickhouse_connect.get_client(host=info.get("host", "127.0.0.1"), port=info["port"])
    from .clickhouse import connect
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
    from .plot import plot_windows
    console.print(f"wrote {plot_windows(_client(_settings()), out, top)}")


# --- config -------------------------------------------------------------------------------------
@config_cli.command("dump")
def config_dump() -> None:
    """Print the effective configuration (defaults + FLOWMON_* environment) as JSON."""
    print(Settings().model_dump_json(indent=2))


@config_cli.command("check")
def config_check() -> None:
    """Validate the FLOWMON_* environment; exit 1 with the reason if it is wrong."""
    from .config import unknown_env
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
