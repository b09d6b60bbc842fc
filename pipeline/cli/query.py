"""``flowmon sql`` and ``flowmon plot``: read what landed in ClickHouse."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

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


def plot(out: Annotated[Path, typer.Option(
             "--out", "-o", help="File to write, exactly there (parent directories are created); the format from its "
             "suffix: .png, .svg or .pdf")] = Path("flowmon-windows.png"),
         top: Annotated[int, typer.Option(min=1, help="How many subnet pairs (largest by bytes in the range)")] = 8,
         pair: Annotated[Optional[list[str]], typer.Option(
             "--pair", help="Plot this pair, SRC:DST (subnet names; repeat for more; --top still caps)")] = None,
         since: Annotated[Optional[str], typer.Option(
             "--from", help="Start: ISO 8601 (UTC unless a zone is given) or relative to now, e.g. -2h "
             "[default: 24 h before the end]")] = None,
         until: Annotated[Optional[str], typer.Option(
             "--to", help="End: ISO 8601, 'now' or relative, e.g. -30m [default: the end of the newest window]")] = None,
         ) -> None:
    """Plot data, retransmissions, timeouts and RTT per subnet pair over time, with alerts and NHI degraded
    periods (PNG, SVG or PDF)."""
    from datetime import datetime, timezone

    from pipeline.views.plot import output_format, parse_pair, parse_when, plot_windows
    output_format(out)  # a bad --out is refused before anything is read
    now = datetime.now(timezone.utc)
    start = parse_when(since, now, "--from") if since is not None else None
    end = parse_when(until, now, "--to") if until is not None else None
    if start is not None and end is not None and start >= end:
        from pipeline.errors import InputError
        raise InputError(f"--from {since} is not before --to {until}", hint="swap them, or leave one out")
    pairs = [parse_pair(p) for p in pair or ()]
    console.print(f"wrote {plot_windows(_client(make_settings()), out, top, pairs=pairs, start=start, end=end)}")
