"""What every ``flowmon`` command shares: the console (stderr), the ``--broker`` option, the settings
with the command line's overrides, and the broker to talk to."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from pipeline.config import Settings

__all__ = ["console", "BrokerOpt", "make_settings", "resolve_bootstrap"]

console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

BrokerOpt = Annotated[Optional[str], typer.Option("--broker", "-b", help="Bootstrap 'host:port' or 'embedded'.")]


def make_settings(**overrides: Any) -> Settings:
    """The configuration (``FLOWMON_*`` and defaults) with the options given on the command line (``None``: not given).

    >>> make_settings(broker="127.0.0.1:9092", roles=None).broker
    '127.0.0.1:9092'
    """
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def resolve_bootstrap(s: Settings) -> str:
    """The broker to talk to: FLOWMON_BROKER, or the live embedded broker a demo/worker started."""
    if s.broker != "embedded":
        return s.broker
    rec = s.data_dir / "broker.json"
    if rec.exists():
        info = json.loads(rec.read_text())
        try:
            os.kill(info["pid"], 0)
            return info["bootstrap"]
        except OSError:
            pass
    console.print("[red]no broker:[/] set --broker host:port (or FLOWMON_BROKER), or start one with "
                  "'flowmon demo --follow' / 'flowmon worker' (embedded)")
    raise typer.Exit(2)
