"""``flowmon config``: show or check the configuration."""

from __future__ import annotations

import typer

from pipeline.cli.options import console

__all__ = ["config_cli", "config_dump", "config_check"]

config_cli = typer.Typer(help="Show or check the configuration.", no_args_is_help=True)


@config_cli.command("dump")
def config_dump() -> None:
    """Print the effective configuration (defaults + FLOWMON_* environment) as JSON."""
    from pipeline.cli.errors import warn
    from pipeline.cli.options import make_settings
    from pipeline.config import unknown_env
    if unknown_env():
        warn(f"unknown variables ignored (typos?): {', '.join(unknown_env())}")
    print(make_settings().model_dump_json(indent=2))


@config_cli.command("check")
def config_check() -> None:
    """Validate the FLOWMON_* environment (values, FLOWMON_BROKER's host:port syntax, unknown names);
    exit 2 with the reason if it is wrong."""
    from pipeline.cli.options import make_settings
    from pipeline.config import unknown_env
    from pipeline.errors import ConfigError
    make_settings()  # a bad value: ConfigError naming the variable
    if unknown_env():
        raise ConfigError(f"unknown variables (typos?): {', '.join(unknown_env())}",
                          hint="rename or unset them ('flowmon config dump' lists the settings)")
    console.print("[green]configuration ok[/]")
