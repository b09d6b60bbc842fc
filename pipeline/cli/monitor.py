"""``flowmon monitor``: create, list, show and delete monitors (named scopes the pipeline evaluates live).

Definitions live in the compacted monitors topic (key = name, value = definition JSON, a
tombstone deletes): this command writes and reads that topic, on the broker the other
commands use (``--broker``, FLOWMON_BROKER, or the embedded broker a running worker or demo
started). Every running worker follows the topic, so a change applies to the windows closed
from then on, without a restart. With FLOWMON_TOPOLOGY set, every subnet, AZ, VPC and region
named must be in the topology. ``show`` adds the last windows from ClickHouse when it can reach it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from pipeline.cli.options import BrokerOpt, console, make_settings, resolve_bootstrap

__all__ = ["monitor_cli"]

monitor_cli = typer.Typer(help="Monitors: named scopes (local resources -> remote resources) evaluated live: "
                          "each gets its own 10-minute series and NHI in ClickHouse.", no_args_is_help=True)

FILE_HINT = "fix the file (format: a YAML list of {name, local, remote, description}, or monitors: [...])"
DEF_HINT = ("give --local KIND:ID (repeatable) and --remote KIND:ID (repeatable) or --remote any; KIND is subnet, "
            "az, vpc or region")


def _topics_and_conn(broker: str | None) -> tuple[Any, Any, Any]:
    from pipeline.runtime import kafka
    from pipeline.runtime.topics import Topics
    s = make_settings(broker=broker)
    conn = kafka.connection(s, resolve_bootstrap(s))
    kafka.quiet_bootstrap_log()  # a failure is said once (_kafka)
    return s, conn, Topics.from_settings(s)


def _kafka(conn: Any, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro``; a Kafka failure becomes one BrokerUnavailable line."""
    from aiokafka.errors import KafkaError

    from pipeline.runtime import kafka
    try:
        return asyncio.run(coro)
    except (KafkaError, OSError) as exc:
        from pipeline.cli.options import broker_hint
        from pipeline.errors import BrokerUnavailable
        why = asyncio.run(kafka.explain(conn, exc))
        raise BrokerUnavailable(f"Kafka broker {conn.bootstrap}: {why}", hint=broker_hint(why)) from exc


async def _current(conn: Any, topics: Any) -> dict[str, Any]:
    from pipeline.runtime.monitors import read_monitors
    from pipeline.runtime.topics import ensure_topics
    await ensure_topics(conn, topics, names=[topics.monitors])
    return await read_monitors(conn, topics.monitors)


async def _write(conn: Any, topics: Any, items: list[tuple[str, Any]]) -> int:
    from pipeline.runtime.monitors import publish
    from pipeline.runtime.topics import ensure_topics
    await ensure_topics(conn, topics, names=[topics.monitors])
    return await publish(conn, topics.monitors, items)


def _check_topology(s: Any, monitors: list[Any]) -> None:
    """Refuse resources the configured topology (FLOWMON_TOPOLOGY) lacks; nothing to check without one."""
    if s.topology is None:
        return
    from pipeline.errors import InputError
    from pipeline.ingest.topology import load_topology
    from pipeline.monitors.definition import MonitorError, check_topology
    try:
        t = load_topology(s.topology)
    except (OSError, ValueError) as exc:
        raise InputError(str(exc), hint="fix FLOWMON_TOPOLOGY's file, or unset it") from exc
    for m in monitors:
        try:
            check_topology(m, t.subnets, t.azs, t.vpcs, t.region)
        except MonitorError as exc:
            raise InputError(str(exc), hint=f"name what the topology {s.topology} has, or fix the topology") from None


def _from_file(path: Path) -> list[Any]:
    from pipeline.errors import InputError
    from pipeline.ingest.topology import read_yaml_source
    from pipeline.monitors.definition import MonitorError, parse_monitors
    path.open("rb").close()  # missing or unreadable: said by pipeline.cli.errors
    try:
        data, label, _ = read_yaml_source(path, "monitors file")
        return parse_monitors(data, label)
    except (MonitorError, ValueError) as exc:
        raise InputError(str(exc), hint=FILE_HINT) from None


@monitor_cli.command("create")
def create(
    name: Annotated[Optional[str], typer.Argument(help="Monitor name: 1 to 64 of a-z 0-9 - _")] = None,
    local: Annotated[Optional[list[str]], typer.Option(
        "--local", "-l", help="Where the reporting agents are: KIND:ID, KIND subnet, az, vpc or region. Repeatable.")] = None,
    remote: Annotated[Optional[list[str]], typer.Option(
        "--remote", "-r", help="What they talk to: KIND:ID (repeatable), or 'any' (everything, including remotes "
        "outside the topology; subnet:external is just those).")] = None,
    description: Annotated[str, typer.Option(help="Free text, shown by list and show.")] = "",
    file: Annotated[Optional[Path], typer.Option(
        "--file", "-f", help="Create or replace every monitor of this YAML file (a list, or monitors: [...]).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace NAME if it exists (default: refuse).")] = False,
    broker: BrokerOpt = None,
) -> None:
    """Create a monitor (or, with --file, create or replace every monitor of a file). Workers apply it to the
    windows they close from then on."""
    from pipeline.errors import InputError, UsageError
    from pipeline.monitors.definition import MonitorError, parse_monitor
    if file is not None:
        if name is not None or local or remote or description:
            raise UsageError("--file defines the monitors: give no NAME, --local, --remote or --description with it",
                             hint="see 'flowmon monitor create --help'")
        monitors = _from_file(file)
    else:
        if name is None:
            raise UsageError("give a monitor NAME, or --file", hint="see 'flowmon monitor create --help'")
        if not local or not remote:
            raise UsageError(f"monitor {name!r}: {'--local' if not local else '--remote'} is required", hint=DEF_HINT)
        try:
            monitors = [parse_monitor({"name": name, "local": list(local), "remote": list(remote),
                                       "description": description})]
        except MonitorError as exc:
            raise InputError(str(exc), hint=DEF_HINT) from None
    _check_topology(make_settings(broker=broker), monitors)  # before any broker is contacted
    s, conn, topics = _topics_and_conn(broker)
    current = _kafka(conn, _current(conn, topics))
    if file is None and monitors[0].name in current and not replace:
        raise UsageError(f"monitor {monitors[0].name!r} exists ({current[monitors[0].name].describe()})",
                         hint="give --replace to change it, or choose another name")
    _kafka(conn, _write(conn, topics, [(m.name, m) for m in monitors]))
    for m in monitors:
        old = current.get(m.name)
        verb = "created" if old is None else ("unchanged" if old == m else "replaced")
        console.print(f"monitor [bold]{m.name}[/] {verb}: {m.describe()}", highlight=False, soft_wrap=True)


@monitor_cli.command("list")
def list_(broker: BrokerOpt = None,
          json_lines: Annotated[bool, typer.Option("--json", help="One JSON definition per line.")] = False) -> None:
    """List the monitors (as the monitors topic says now)."""
    s, conn, topics = _topics_and_conn(broker)
    current = _kafka(conn, _current(conn, topics))
    if json_lines:
        for name in sorted(current):
            sys.stdout.write(current[name].to_json().decode() + "\n")
        return
    from rich.console import Console
    from rich.table import Table
    table = Table("name", "local", "remote", "description", title=f"{len(current)} monitor(s)")
    for name in sorted(current):
        m = current[name]
        table.add_row(name, ", ".join(map(str, m.local)),
                      "any" if m.remote_any else ", ".join(map(str, m.remote)), m.description)
    Console(width=None if sys.stdout.isatty() else 160).print(table)


@monitor_cli.command("show")
def show(name: Annotated[str, typer.Argument(help="Monitor name")],
         windows: Annotated[int, typer.Option(min=1, help="How many of the last windows to show.")] = 6,
         broker: BrokerOpt = None) -> None:
    """A monitor's definition, and its last windows from ClickHouse (if it can be reached)."""
    s, conn, topics = _topics_and_conn(broker)
    current = _kafka(conn, _current(conn, topics))
    m = _existing(current, name)
    out = sys.stdout
    out.write(f"monitor:     {m.name}\nlocal:       {', '.join(map(str, m.local))}\n"
              f"remote:      {'any' if m.remote_any else ', '.join(map(str, m.remote))}\n")
    if m.description:
        out.write(f"description: {m.description}\n")
    try:
        rows = _last_windows(s, name, windows)
    except Exception as exc:  # noqa: BLE001 - no ClickHouse: the definition is still worth showing
        from pipeline.cli.errors import as_flowmon_error
        out.write(f"windows:     not read ({as_flowmon_error(exc).line()})\n")
        return
    if not rows:
        out.write("windows:     none landed yet\n")
        return
    from rich.console import Console
    from rich.table import Table
    table = Table("window (UTC)", "MB", "retrans", "timeouts", "RTT mean ms", "p50", "p90", "p99", "pairs", "NHI",
                  title=f"last {len(rows)} window(s)")
    for r in rows:
        table.add_row(r["time"].strftime("%Y-%m-%d %H:%M"), f"{r['bytes'] / 1e6:,.2f}",
                      f"{r['retransmissions']:,}", f"{r['timeouts']:,}",
                      *(f"{r[c] / 1000:.2f}" for c in ("rtt_mean_us", "rtt_p50_us", "rtt_p90_us", "rtt_p99_us")),
                      str(r["pairs"]), r["nhi"])
    Console(width=None if out.isatty() else 160).print(table)


def _last_windows(s: Any, name: str, n: int) -> list[dict[str, Any]]:
    from pipeline.cli.query import _client
    from pipeline.views.queries import run
    rows = run(_client(s), "monitor_series", monitor=name,
               **{"from": datetime(1970, 1, 2, tzinfo=timezone.utc), "to": datetime(2100, 1, 1, tzinfo=timezone.utc)})
    return rows[-n:]


def _existing(current: dict[str, Any], name: str) -> Any:
    if name not in current:
        from pipeline.errors import UsageError
        have = ", ".join(sorted(current)[:10]) or "none"
        raise UsageError(f"no monitor {name!r} (monitors: {have})", hint="'flowmon monitor list' shows them")
    return current[name]


@monitor_cli.command("delete")
def delete(name: Annotated[str, typer.Argument(help="Monitor name")], broker: BrokerOpt = None) -> None:
    """Delete a monitor: workers stop evaluating it for the windows they close from then on (its history stays)."""
    s, conn, topics = _topics_and_conn(broker)
    current = _kafka(conn, _current(conn, topics))
    _existing(current, name)
    _kafka(conn, _write(conn, topics, [(name, None)]))
    console.print(f"monitor [bold]{name}[/] deleted", highlight=False, soft_wrap=True)
