"""``python -m pipeline.cli``: the flowmon command."""

from pipeline.cli import main

__all__: list[str] = []

main()
