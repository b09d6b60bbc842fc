"""Shell: the ``flowmon`` command (typer). Every option also reads ``FLOWMON_*`` (see ``config``).

The root only registers the commands; each group lives in its own module: ``worker``,
``demo``, ``produce`` (produce, simulate), ``query`` (sql, plot), ``alerts``, ``eval``, ``migrate``, ``config``.
"""

from __future__ import annotations

import typer

from pipeline.cli.alerts import alerts_command
from pipeline.cli.config import config_cli
from pipeline.cli.demo import demo
from pipeline.cli.eval import eval_
from pipeline.cli.migrate import migrate_command
from pipeline.cli.produce import produce, simulate
from pipeline.cli.query import plot, sql
from pipeline.cli.worker import worker

__all__ = ["main", "cli"]

cli = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="flowmon: TCP flow health per subnet pair, from agents through Kafka to ClickHouse.")
cli.add_typer(config_cli, name="config")
for command in (worker, demo, produce, simulate, sql, plot):
    cli.command()(command)
cli.command(name="alerts")(alerts_command)
cli.command(name="eval")(eval_)
cli.command(name="migrate")(migrate_command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
