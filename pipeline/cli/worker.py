"""``flowmon worker``: the Faust agents (validate, pre-aggregate, windows, detection) and/or the ClickHouse sink."""

from __future__ import annotations

import atexit
import logging
from typing import Annotated, Any, Optional

import typer

from pipeline.cli.options import BrokerOpt, console, make_settings
from pipeline.config import Settings

__all__ = ["worker", "run_worker"]


def worker(broker: BrokerOpt = None,
           roles: Annotated[Optional[str], typer.Option(help="pipeline,sink | pipeline | sink")] = None,
           loglevel: Annotated[str, typer.Option(help="Log level.")] = "warning") -> None:
    """Run a pipeline worker: Faust agents (validate, pre-aggregate, windows) and/or the ClickHouse sink."""
    s = make_settings(broker=broker, roles=roles)
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
    from pipeline.runtime.kafka import connection
    from pipeline.runtime.topics import setup_topics

    conn = connection(s, bootstrap)
    setup_topics(s, conn)
    flow = create_app(s, conn)
    if "pipeline" in s.role_set:
        from pipeline.runtime.agents import install
        from pipeline.ingest.topology import load_topology
        install(flow, load_topology(s.topology) if s.topology else None)
    if "sink" in s.role_set:
        _install_sink(flow)
    if s.metrics_port:
        flow.metrics.serve(s.metrics_port)
    faust.Worker(flow.app, loglevel=loglevel.upper(), quiet=True).execute_from_commandline()


def _install_sink(flow: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.clickhouse.client import connect, is_chdb
    from pipeline.runtime.land import Lander
    from pipeline.clickhouse.migrations import migrate, pending_steps
    from pipeline.clickhouse.writer import WindowSink

    s = flow.settings
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
    client = executor.submit(connect, s.clickhouse_url()).result()
    if s.migrate:
        applied = executor.submit(migrate, client).result()
        if applied:
            console.print(f"ClickHouse schema: applied {', '.join(applied)}")
    elif pending := executor.submit(pending_steps, client).result():
        raise SystemExit(f"ClickHouse schema not up to date (missing {', '.join(pending)}) and FLOWMON_MIGRATE "
                         "is false: run 'flowmon migrate' first")
    sink = WindowSink(client)
    server = None
    if is_chdb(s.clickhouse_dsn):
        from pipeline.clickhouse.sqlserve import SqlServer  # imports chdb: only for a chdb DSN
        server = SqlServer(client, port=s.serve_port)
        server.start()
        addr = s.data_dir / "sql-endpoint.json"
        server.write_address_file(addr)
        atexit.register(server.stop)  # stop serving and remove the address file on a clean exit
        console.print(f"SQL endpoint for the embedded ClickHouse: [bold]http://127.0.0.1:{server.port}/[/] "
                      f"(address in {addr}; try: flowmon sql \"SELECT count() FROM flow_windows FINAL\")")

    @flow.app.task
    async def land() -> None:
        await Lander(s, flow.conn, sink, executor, flow.metrics).run()
