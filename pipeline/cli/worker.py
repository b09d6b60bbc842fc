"""``flowmon worker``: the Faust agents (validate, pre-aggregate, windows, detection) and/or the ClickHouse sink."""

from __future__ import annotations

import atexit
import logging
import os
from typing import Annotated, Any, Optional

import typer

from pipeline.cli.options import BrokerOpt, check_broker, console, live_embedded, make_settings
from pipeline.config import Settings

__all__ = ["worker", "run_worker", "status_line"]


def worker(broker: BrokerOpt = None,
           roles: Annotated[Optional[str], typer.Option(help="pipeline,sink | pipeline | sink")] = None,
           loglevel: Annotated[str, typer.Option(help="Log level.")] = "warning",
           status_every: Annotated[float, typer.Option(
               min=0.0, help="Print a status line (reports read, windows closed and landed) every this many seconds; "
               "0: never.")] = 30.0) -> None:
    """Run a pipeline worker: Faust agents (validate, pre-aggregate, windows) and/or the ClickHouse sink.

    With the default broker ('embedded') it joins the embedded broker another worker or demo runs on the
    same data directory, else starts one. The sink role stays with the process that owns the data
    directory's chdb: a second worker without --roles runs the pipeline only, with --roles sink it refuses.
    """
    s = _sink_owner_check(make_settings(broker=broker, roles=roles),
                          explicit=roles is not None or "FLOWMON_ROLES" in os.environ)
    if not isinstance(logging.getLevelName(loglevel.upper()), int):
        raise typer.BadParameter(f"{loglevel!r}: expected debug, info, warning, error or critical",
                                 param_hint="--loglevel")
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pipeline.cli.demo import start_embedded
    launched = None
    if s.broker != "embedded":
        check_broker(s.broker)
        bootstrap = s.broker
    elif (joined := live_embedded(s.data_dir)) is not None:
        bootstrap = str(joined["bootstrap"])
        console.print(f"joining the embedded broker on [bold]{bootstrap}[/] (started by process {joined['pid']} "
                      f"for {s.data_dir}; it stops with that process)")
    else:
        launched = start_embedded(s.data_dir, console)
        bootstrap = launched.bootstrap
    try:
        run_worker(s, bootstrap, loglevel, status_every)
    finally:
        if launched:
            launched.stop()
            (s.data_dir / "broker.json").unlink(missing_ok=True)


def _sink_owner_check(s: Settings, explicit: bool) -> Settings:
    """The settings this worker runs with: without the sink role when another live process owns the
    data directory's chdb (its SQL endpoint answers) and the roles were not asked for; asked for, an
    :class:`~pipeline.errors.InUse` error."""
    from pipeline.clickhouse.client import is_chdb

    if "sink" not in s.role_set or not is_chdb(s.clickhouse_dsn):
        return s
    from pipeline.clickhouse.sqlserve import read_address_file  # imports chdb (~230 MiB): a chdb sink only
    from pipeline.errors import InUse

    owner = read_address_file(s.data_dir / "sql-endpoint.json")
    if owner is None or int(owner.get("pid", -1)) == os.getpid():
        return s
    where = f"process {owner.get('pid')} (SQL endpoint {owner.get('url', '?')})"
    if explicit or s.role_set == {"sink"}:
        raise InUse(f"a sink already runs for {s.data_dir} in {where}: its chdb admits one process",
                    hint="run this worker with --roles pipeline (or FLOWMON_ROLES=pipeline), or give it its own "
                    "FLOWMON_DATA_DIR and FLOWMON_CLICKHOUSE_DSN")
    console.print(f"a sink already runs for {s.data_dir} in {where}: this worker runs the pipeline role only "
                  "(--roles pipeline)", highlight=False, soft_wrap=True)
    return s.model_copy(update={"roles": "pipeline"})


def run_worker(s: Settings, bootstrap: str, loglevel: str = "warning", status_every: float = 0) -> None:
    from pipeline.runtime import collector
    from pipeline.runtime.app import create_app
    from pipeline.runtime.kafka import connection
    from pipeline.runtime.topics import setup_topics

    s.data_dir.mkdir(parents=True, exist_ok=True)  # Faust makes its own directory in it, not the parents
    conn = connection(s, bootstrap)
    setup_topics(s, conn)
    flow = create_app(s, conn)
    ctx = None
    if "pipeline" in s.role_set:
        from pipeline.runtime.agents import install
        from pipeline.ingest.topology import load_topology
        ctx = install(flow, load_topology(s.topology) if s.topology else None)
    if "sink" in s.role_set:
        _install_sink(flow)
    if s.metrics_port:
        _install_health(flow, ctx)
    _install_loop_watch(flow)
    _announce(flow, status_every)
    collector.tune(s.gc_young_threshold)
    if s.gc_young_threshold:
        collector.settle()  # the imports and the app live as long as the process
    # redirect_stdouts=False: the status lines stay plain lines, not log records
    _worker_class()(flow.app, loglevel=loglevel.upper(), quiet=True, redirect_stdouts=False,
                    grace_s=s.shutdown_grace_s).execute_from_commandline()


def _worker_class() -> type:
    """``faust.Worker`` whose stop on a signal has a deadline (``runtime.process.exit_after``)."""
    import asyncio

    import faust

    from pipeline.runtime.process import exit_after

    class Worker(faust.Worker):  # type: ignore[misc]
        def __init__(self, *args: Any, grace_s: float, **kw: Any) -> None:
            super().__init__(*args, **kw)
            self.grace_s = grace_s

        def _schedule_shutdown(self, signal: Any) -> None:  # mode's hook for SIGTERM and SIGINT
            if not self._signal_stop_time:  # the first signal starts the clock
                exit_after(self.grace_s, f"worker {os.getpid()}")
            super()._schedule_shutdown(signal)

        async def _sentinel_task(self) -> None:
            """mode's last wait before it closes the loop, once every task is done: a fixed second at every
            stop. A tenth still lets the callbacks of the connections just closed run."""
            await asyncio.sleep(0.1)

    return Worker


def _install_loop_watch(flow: Any) -> None:
    """``flowmon_loop_lag_seconds``, and a warning when the loop answers half a session timeout late."""
    from pipeline.runtime.loopwatch import LoopWatch

    watch = LoopWatch(flow.metrics.loop_lag, warn_s=flow.settings.session_timeout_s / 2)

    @flow.app.task
    async def loop_watch() -> None:
        await watch.run()


def _install_health(flow: Any, ctx: Any) -> None:
    """``/metrics`` and ``/healthz`` on the metrics port, and the task that reads the consumer groups' lag."""
    from pipeline.runtime.agents.ingest import ingest_group
    from pipeline.runtime.health import LagMonitor, serve

    s, t = flow.settings, flow.topics
    # the whole pipeline's groups, whatever this worker's roles: a stalled stage is what a health check must see
    groups = {ingest_group(s.app_id): [t.reports],
              s.app_id: [t.pairs, t.health, t.windows, t.nhi],  # windows, nhi: the monitor agents
              f"{s.app_id}-sink": [t.windows, t.deadletter, t.anomalies, t.attributions, t.nhi, t.monitors,
                                   t.monitor_windows, t.monitor_nhi]}

    def watermark() -> float | None:
        marks = [ps.windows.watermark for ps in (ctx.stores.values() if ctx else ()) if ps.windows.watermark is not None]
        return min(marks) if marks else None

    def sink_failing() -> bool:
        return "sink" in s.role_set and flow.metrics.value("flowmon_sink_healthy") == 0

    monitor = LagMonitor(flow.conn, groups, flow.metrics, interval_s=s.health_interval_s,
                         stuck_after_s=s.health_stuck_s, watermark=watermark, sink_failing=sink_failing)
    serve(s.metrics_port, monitor, flow.metrics.with_process().registry)

    @flow.app.task
    async def health() -> None:
        await monitor.run()


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
    # the writes on a client of their own that gives up on a server after sink_timeout_s (the migrations above,
    # and the repair below, keep clickhouse_connect's 5 minutes: a backfill may take that long)
    writer = client if is_chdb(s.clickhouse_dsn) else executor.submit(
        connect, s.clickhouse_url(), timeout_s=s.sink_timeout_s).result()
    sink = WindowSink(writer)
    server = None
    if is_chdb(s.clickhouse_dsn):
        from pipeline.clickhouse.sqlserve import SqlServer  # imports chdb: only for a chdb DSN
        server = SqlServer(client, port=s.serve_port)
        server.start()
        addr = s.data_dir / "sql-endpoint.json"
        server.write_address_file(addr)
        atexit.register(server.stop)  # stop serving and remove the address file on a clean exit
        console.print(f"SQL endpoint for the embedded ClickHouse: [bold]http://127.0.0.1:{server.port}/[/] "
                      f"(read-only; address and token in {addr}; try: flowmon sql \"SELECT count() FROM flow_windows FINAL\")")

    @flow.app.early_task  # its group joins beside Faust's (``runtime.app.App``)
    async def land() -> None:
        await Lander(s, flow.conn, sink, executor, flow.metrics, repair=lambda: migrate(client)).run()



def _announce(flow: Any, status_every: float) -> None:
    """Say what this worker runs, on which broker and topics; then, every ``status_every`` seconds, a status line."""
    import time

    s, t, m = flow.settings, flow.topics, flow.metrics
    parts = []
    if "pipeline" in s.role_set:
        parts.append(f"pipeline (reads {t.reports}; writes {t.windows}, {t.anomalies}, {t.deadletter})")
    if "sink" in s.role_set:
        parts.append(f"sink ({t.windows}, {t.deadletter} -> {s.clickhouse_dsn})")
    every = f"; status every {status_every:g} s" if status_every > 0 else ""
    console.print(f"worker {os.getpid()} running: {' and '.join(parts)} on broker {flow.bootstrap}, group "
                  f"{s.app_id}{every}; Ctrl-C stops", highlight=False, soft_wrap=True)
    if status_every <= 0:
        return
    t0 = time.monotonic()

    @flow.app.timer(status_every)
    async def status() -> None:
        console.print(status_line(m, time.monotonic() - t0, s.role_set), highlight=False, soft_wrap=True)


def status_line(m: Any, seconds: float, roles: frozenset[str]) -> str:
    """One status line from the worker's counters (:class:`~pipeline.runtime.metrics.Metrics`).

    >>> from pipeline.runtime.metrics import Metrics
    >>> m = Metrics(); m.reports.inc(120); m.windows.inc(3); m.deadletters.labels(reason="late").inc(2)
    >>> status_line(m, 61, frozenset({"pipeline", "sink"}))
    'status after 1 min: 120 reports read, 2 samples dead-lettered, 3 windows closed, 0 alert events; 0 windows landed'
    """
    dead = sum(s.value for metric in m.deadletters.collect() for s in metric.samples if s.name.endswith("_total"))
    alerts = sum(s.value for metric in m.anomalies.collect() for s in metric.samples if s.name.endswith("_total"))
    age = f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
    parts = []
    if "pipeline" in roles:
        parts.append(f"{m.value('flowmon_reports_total'):,.0f} reports read, {dead:,.0f} samples dead-lettered, "
                     f"{m.value('flowmon_windows_emitted_total'):,.0f} windows closed, {alerts:,.0f} alert events")
    if "sink" in roles:
        parts.append(f"{m.value('flowmon_windows_landed_total'):,.0f} windows landed")
    return f"status after {age}: " + "; ".join(parts)
