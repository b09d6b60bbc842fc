"""``flowmon config``: show or check the configuration."""

from __future__ import annotations

import typer

from pipeline.cli.options import console
from pipeline.config import Settings

__all__ = ["config_cli", "config_dump", "config_check"]

config_cli = typer.Typer(help="Show or check the configuration.", no_args_is_help=True)


@config_cli.command("dump")
def config_dump() -> None:
    """Print the effective configuration (defaults + FLOWMON_* environment) as JSON."""
    print(Settings().model_dump_json(indent=2))


@config_cli.command("check")
def config_check() -> None:
    """Validate the FLOWMON_* environment; exit 1 with the reason if it is wrong."""
    from pipeline.config import unknown_env
    try:
        Settings()
    except Exception as exc:  # pydantic ValidationError: print it readably
        console.print(f"[red]invalid configuration:[/] {exc}")
        raise typer.Exit(1)
    if unknown_env():
        console.print(f"[red]unknown variables (typos?):[/] {', '.join(unknown_env())}")
        raise typer.Exit(1)
    console.print("[green]configuration ok[/]")
