"""Shell: the ``flowmon`` command (typer). Every option also reads ``FLOWMON_*`` (see ``config``).

The root registers the commands (each group lives in its own module: ``worker``, ``demo``,
``produce`` (produce, simulate), ``query`` (sql, plot), ``alerts``, ``eval``, ``migrate``, ``config``, ``monitor``), holds
the global options (``--debug``, ``--version``), warns about unknown ``FLOWMON_*`` variables, and is
the one place where a failure becomes one line and an exit status (:class:`FlowmonRoot`,
``pipeline.cli.errors``; the statuses are ``pipeline.errors.EXIT_STATUSES``).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from pipeline.cli.agent import agent_command
from pipeline.cli.alerts import alerts_command
from pipeline.cli.config import config_cli
from pipeline.cli.console import console_command
from pipeline.cli.demo import demo
from pipeline.cli.eval import eval_
from pipeline.cli.migrate import migrate_command
from pipeline.cli.monitor import monitor_cli
from pipeline.cli.produce import produce, simulate
from pipeline.cli.query import plot, sql
from pipeline.cli.worker import worker

__all__ = ["main", "cli", "FlowmonRoot"]


class FlowmonRoot(TyperGroup):
    """The root command group: runs the command line (non-standalone, so that every failure comes back
    here) and turns a failure into one ``error:`` line and its exit status."""

    #: set by the ``--debug`` option (or FLOWMON_DEBUG) of the running command line
    debug = False

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        from pipeline.cli.errors import click_errors, report
        FlowmonRoot.debug = False
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except click_errors("NoArgsIsHelpError"):  # the help was printed
            code = 2
        except BaseException as exc:  # noqa: BLE001 - the one place every failure is reported
            if isinstance(exc, SystemExit):
                raise
            code = report(exc, FlowmonRoot.debug)
        if not standalone_mode:
            return code
        sys.exit(code)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from pipeline import __version__
        try:
            v = version("flowmon")
        except PackageNotFoundError:  # run from a checkout without installing it
            v = __version__
        typer.echo(f"flowmon {v}")
        raise typer.Exit()


cli = typer.Typer(cls=FlowmonRoot, add_completion=False, no_args_is_help=True,
                  help="flowmon: TCP flow health per subnet pair, from agents through Kafka to ClickHouse.")


@cli.callback()
def root(ctx: typer.Context,
         debug: Annotated[bool, typer.Option("--debug", envvar="FLOWMON_DEBUG",
                                             help="On failure, also print the traceback.")] = False,
         version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_version,
                                               help="Print flowmon's version and exit.")] = False) -> None:
    """flowmon: TCP flow health per subnet pair, from agents through Kafka to ClickHouse."""
    FlowmonRoot.debug = debug
    if ctx.invoked_subcommand != "config":  # 'config check' refuses them, 'config dump' warns itself
        from pipeline.cli.errors import warn
        from pipeline.config import unknown_env
        if unknown_env():
            warn(f"unknown variables ignored (typos?): {', '.join(unknown_env())}; "
                 "'flowmon config dump' lists the settings")


cli.add_typer(config_cli, name="config")
cli.add_typer(monitor_cli, name="monitor")
for command in (worker, demo, produce, simulate, sql, plot):
    cli.command()(command)
cli.command(name="alerts")(alerts_command)
cli.command(name="agent")(agent_command)
cli.command(name="console")(console_command)
cli.command(name="eval")(eval_)
cli.command(name="migrate")(migrate_command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
