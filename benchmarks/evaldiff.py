"""Diff two ``flowmon eval --json`` outputs with the timings removed (same figures before and after a change).

    flowmon eval tests/scenarios/*.yaml --json > after.json   # and before.json from the old checkout
    python -m benchmarks.evaldiff before.json after.json

Prints ``identical (N lines, timings removed)`` and exits 0, or a unified diff and exits 1.
Removed: every ``seconds`` field (wall time); everything else (detection, attribution, NHI,
totals, detector state bytes) is compared.
"""

from __future__ import annotations

import difflib
import json
import sys
from typing import Any


def _strip(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _strip(v) for k, v in o.items() if k != "seconds"}
    if isinstance(o, list):
        return [_strip(v) for v in o]
    return o


def lines(path: str) -> list[str]:
    with open(path) as f:
        return json.dumps(_strip(json.load(f)), indent=1, sort_keys=True).splitlines()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m benchmarks.evaldiff BEFORE.json AFTER.json", file=sys.stderr)
        return 2
    a, b = lines(args[0]), lines(args[1])
    d = list(difflib.unified_diff(a, b, "before", "after", lineterm=""))
    print("\n".join(d) if d else f"identical ({len(a)} lines, timings removed)")
    return 1 if d else 0


if __name__ == "__main__":
    sys.exit(main())
