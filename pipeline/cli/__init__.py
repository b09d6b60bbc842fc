"""The ``flowmon`` command."""

from pipeline.cli.app import cli, main

__all__ = ["cli", "main"]
