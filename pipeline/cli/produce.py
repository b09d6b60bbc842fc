"""``flowmon produce`` and ``flowmon simulate``: reports onto the reports topic (your own, or a simulated fleet's)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from pipeline.cli.options import BrokerOpt, check_scenario, console, make_settings, resolve_bootstrap

__all__ = ["produce", "simulate"]


def produce(file: Annotated[Path, typer.Argument(help="JSON lines: reports or flat samples ('-' = stdin)")],
            broker: BrokerOpt = None,
            strict: Annotated[bool, typer.Option(help="Send nothing unless every line is UTF-8 JSON (default: send "
                                                      "every line; the pipeline dead-letters bad ones)")] = False,
            ) -> None:
    """Send your own samples (JSON lines) to the reports topic. Every line is sent; the pipeline validates them,
    and a line it refuses becomes a dead letter with its reason (see `flowmon sql` on the deadletter table)."""
    from pipeline.errors import InputError
    from pipeline.runtime.produce import LineCounts, read_lines
    if str(file) != "-":
        file.open("rb").close()  # a missing or unreadable file is said before any broker is contacted
    counts = LineCounts()
    if strict:
        lines = list(read_lines(str(file), counts))
        bad = [line for line in lines if line.kind != "json"]
        if bad:
            raise InputError(f"{file}:{bad[0].number}: {bad[0].problem}; nothing was sent ({len(bad):,} bad of "
                             f"{len(lines):,} lines)", hint="fix the file, or drop --strict to send every line "
                             "(bad ones become dead letters)")
        messages: Iterable[Any] = [line.value for line in lines]
    else:
        messages = (line.message() for line in read_lines(str(file), counts))
    _send(broker, messages)
    console.print(f"lines: {counts}", highlight=False, soft_wrap=True)


def simulate(scenario: Annotated[Path, typer.Argument(help="Scenario YAML (topology + traffic)")],
             duration: Annotated[str, typer.Option(help="Simulated time, e.g. 30m, 6h")] = "1h",
             seed: Annotated[int, typer.Option(help="Seed (same seed, same samples)")] = 7,
             out: Annotated[Optional[Path], typer.Option(help="Write JSON lines here instead of producing")] = None,
             broker: BrokerOpt = None) -> None:
    """Simulate a fleet in simulated time (faster than real time) and produce its reports."""
    import orjson

    from pipeline.sim.scenario import parse_duration
    from pipeline.sim.simulator import Simulator
    check_scenario(scenario, duration)
    if out is None:
        resolve_bootstrap(make_settings(broker=broker))  # no broker: said before the simulation runs
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
        from pipeline.cli.options import broker_hint
        from pipeline.errors import BrokerUnavailable
        why = asyncio.run(kafka.explain(conn, exc))
        raise BrokerUnavailable(f"Kafka broker {conn.bootstrap}: {why}", hint=broker_hint(why)) from exc
    console.print(f"produced {stats}")
