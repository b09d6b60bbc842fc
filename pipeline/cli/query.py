"""``flowmon sql`` and ``flowmon plot``: read what landed in ClickHouse."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli.options import console, make_settings
from pipeline.config import Settings

__all__ = ["sql", "plot"]


def _client(s: Settings) -> Any:
    """A ClickHouse client: for a chdb DSN the live worker's SQL endpoint if one answers, else the DSN directly."""
    from pipeline.clickhouse.client import connect, is_chdb, parse_chdb_dsn
    if is_chdb(s.clickhouse_dsn):  # a server DSN never needs the endpoint file (nor chdb imported)
        from pipeline.clickhouse.sqlserve import endpoint_client, read_address_file
        info = read_address_file(s.data_dir / "sql-endpoint.json")
        if info is not None:
            return endpoint_client(info)
        path = parse_chdb_dsn(s.clickhouse_dsn)[0]
        if path != ":memory:" and not Path(path).exists():
            from pipeline.errors import NoData
            from pipeline.views.plot import NO_DATA_HINT
            raise NoData(f"no flowmon data here: {s.clickhouse_dsn} does not exist (cwd {Path.cwd()})",
                         hint=f"run where the worker ran (or set FLOWMON_CLICKHOUSE_DSN / FLOWMON_DATA_DIR); "
                         f"{NO_DATA_HINT}")
    return connect(s.clickhouse_url())


def sql(query: Annotated[str, typer.Argument(help="SQL to run")],
        fmt: Annotated[str, typer.Option("--format", "-f", help="ClickHouse output format")] = "PrettyCompact") -> None:
    """Run SQL against flowmon's ClickHouse: the live worker's endpoint if one runs, else the DSN directly."""
    sys.stdout.write(_client(make_settings()).raw_query(query, fmt=fmt).decode())  # errors: pipeline.cli.errors


def plot(out: Annotated[Path, typer.Option(help="PNG to write")] = Path("flowmon-windows.png"),
         top: Annotated[int, typer.Option(help="How many subnet pairs (largest by bytes)")] = 8) -> None:
    """Plot data, retransmissions and RTT per subnet pair over time (PNG)."""
    from pipeline.views.plot import plot_windows
    console.print(f"wrote {plot_windows(_client(make_settings()), out, top)}")
