"""``flowmon migrate``: bring the ClickHouse schema up to date, once, then exit.

Every sink does this when it starts unless ``FLOWMON_MIGRATE=false``; with a ClickHouse server
and several workers, one migration job (docker-compose's ``migrate`` service) does it instead,
and the workers only check that no step is pending.
"""

from __future__ import annotations

import logging

import typer

from pipeline.cli.options import console, make_settings
from pipeline.errors import MAX_LINE, first_line

__all__ = ["migrate_command"]


def migrate_command() -> None:
    """Apply the pending ClickHouse schema steps to FLOWMON_CLICKHOUSE_DSN, then exit (1 on failure)."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from pipeline.clickhouse.client import connect
    from pipeline.clickhouse.migrations import migrate

    s = make_settings()
    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)  # its failure is said once, below
    try:
        client = connect(s.clickhouse_url())
        try:
            applied = migrate(client)
        finally:
            client.close()
    except (ClickHouseError, OSError, RuntimeError, ValueError) as exc:
        first = first_line(exc, MAX_LINE)
        console.print(f"[red]ClickHouse schema not migrated:[/] {first}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"ClickHouse schema: applied {', '.join(applied)}" if applied else "ClickHouse schema: up to date",
                  highlight=False)
