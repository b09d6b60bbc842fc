"""``flowmon produce`` and ``flowmon simulate``: reports onto the reports topic (your own, or a simulated fleet's)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from pipeline.cli.options import BrokerOpt, console, make_settings, resolve_bootstrap

__all__ = ["produce", "simulate"]


def produce(file: Annotated[Path, typer.Argument(help="JSON lines: reports or flat samples ('-' = stdin)")],
            broker: BrokerOpt = None) -> None:
    """Send your own samples (JSON lines) to the reports topic. The pipeline validates them."""
    from pipeline.runtime.produce import load_jsonl_samples
    _send(broker, load_jsonl_samples(str(file)))


def simulate(scenario: Annotated[Path, typer.Argument(help="Scenario YAML (topology + traffic)")],
             duration: Annotated[str, typer.Option(help="Simulated time, e.g. 30m, 6h")] = "1h",
             seed: Annotated[int, typer.Option(help="Seed (same seed, same samples)")] = 7,
             out: Annotated[Optional[Path], typer.Option(help="Write JSON lines here instead of producing")] = None,
             broker: BrokerOpt = None) -> None:
    """Simulate a fleet in simulated time (faster than real time) and produce its reports."""
    import orjson

    from pipeline.sim.scenario import parse_duration
    from pipeline.sim.simulator import Simulator
    sim = Simulator.from_scenario(scenario, seed=seed)
    reports = sim.reports(parse_duration(duration))
    if out is not None:
        with (sys.stdout.buffer if str(out) == "-" else open(out, "wb")) as fh:
            for r in reports:
                fh.write(orjson.dumps(r) + b"\n")
        return
    _send(broker, reports)


def _send(broker: str | None, reports: Iterable[Any]) -> None:
    """Produce ``reports`` to the reports topic of the configured broker (topics created if missing)."""
    import asyncio

    from aiokafka.errors import KafkaError
    from rich.markup import escape

    from pipeline.runtime import kafka
    from pipeline.runtime.produce import produce_reports
    from pipeline.runtime.topics import setup_topics
    s = make_settings(broker=broker)
    conn = kafka.connection(s, resolve_bootstrap(s))
    kafka.quiet_bootstrap_log()  # a failure is said once, below
    try:
        topics = setup_topics(s, conn, only=("reports",))  # all a producer needs (and may be allowed)
        stats = asyncio.run(produce_reports(conn, topics.reports, reports))
    except (KafkaError, OSError) as exc:
        why = asyncio.run(kafka.explain(conn, exc))
        console.print(f"[red]broker {escape(conn.bootstrap)}:[/] {escape(why)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    console.print(f"produced {stats}")
