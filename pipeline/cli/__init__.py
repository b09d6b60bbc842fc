"""The ``flowmon`` command."""

from pipeline.cli.main import cli, main

__all__ = ["cli", "main"]
