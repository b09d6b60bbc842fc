"""Scenario files: topology, traffic, faults and run parameters; sizes and durations as people write them.

A scenario is YAML (or a dict) with ``topology:`` and ``traffic:``, and optionally ``seed:``,
``duration:``, ``interval:``, ``faults:``, ``realism:`` (see :mod:`pipeline.sim.simulator` for
the traffic and fault entries, :mod:`pipeline.sim.realism` for ``realism:``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.ingest.topology import Topology, load_topology, read_yaml_source
from pipeline.sim.realism import parse_realism

__all__ = ["DEMO_SCENARIO", "Scenario", "load_scenario", "parse_duration", "parse_size"]

#: The demo's scenario (package data: an installed wheel carries it).
DEMO_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "http_experiment.yaml"


_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtTpP][iI]?)?[bB]?\s*$")
_SIZE_MULT = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15,
              "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40, "pi": 2**50}
_DUR_RE = re.compile(r"([0-9]*\.?[0-9]+)\s*(ms|s|sec|m|min|h|d|w)?", re.IGNORECASE)
_DUR_MULT = {"ms": 0.001, "s": 1, "sec": 1, "": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(value: str | int | float) -> int:
    """Bytes from ``'10MB'``, ``'5 MiB'``, ``'1.5GB'``, ``'400B'``, ``'2k'`` or a number.

    Decimal SI units (``KB``/``MB``/``GB`` = 10**3/10**6/10**9), binary with ``i``
    (``KiB``/``MiB``/``GiB``); case-insensitive, the trailing ``B`` optional; always bytes.

    Examples
    --------
    >>> parse_size("10MB"), parse_size("5 MiB"), parse_size("1.5GB"), parse_size(400)
    (10000000, 5242880, 1500000000, 400)
    """
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int | float):
        n = float(value)
    else:
        m = _SIZE_RE.match(str(value))
        if not m:
            raise ValueError(f"not a size: {value!r} (use e.g. 10MB, 5MiB, 400B)")
        n = float(m.group(1)) * _SIZE_MULT[(m.group(2) or "").lower()]
    if not math.isfinite(n) or n < 0:
        raise ValueError(f"not a size: {value!r}")
    return int(round(n))


def parse_duration(value: str | int | float) -> int:
    """Whole seconds from ``'30s'``, ``'10m'``, ``'6h'``, ``'1d'``, ``'1h30m'`` or a number of seconds.

    Examples
    --------
    >>> parse_duration("10m"), parse_duration("6h"), parse_duration("30s"), parse_duration("1h30m"), parse_duration(20)
    (600, 21600, 30, 5400, 20)
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        total = float(value)
    else:
        s = str(value).strip()
        pos, total = 0, 0.0
        for m in _DUR_RE.finditer(s):
            if m.start() != pos and s[pos : m.start()].strip():
                break
            total += float(m.group(1)) * _DUR_MULT[(m.group(2) or "").lower()]
            pos = m.end()
        if not s or s[pos:].strip():
            raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 10m, 6h, 1d)")
    if not math.isfinite(total) or total < 0 or abs(total - round(total)) > 1e-9:
        raise ValueError(f"not a duration in whole non-negative seconds: {value!r}")
    return int(round(total))


# ------------------------------------------------------------------------------------
# scenario files
# ------------------------------------------------------------------------------------
@dataclass
class Scenario:
    """A parsed scenario file: topology, traffic and run parameters (``raw`` keeps all keys)."""

    topology: Topology
    traffic: list[dict[str, Any]]
    seed: int = 0
    duration_s: int | None = None
    interval_s: int = 30
    omit_remote_placement: float = 0.5
    rtt_defaults_ms: dict[str, float] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    source: str = "<dict>"
    realism: Any = "smooth"  # the ``realism:`` value: "smooth", "realistic" or a mapping (see parse_realism)


def load_scenario(source: str | Path | Mapping[str, Any]) -> Scenario:
    """Load a scenario (path, YAML string or dict) with ``topology:`` and ``traffic:``.

    Examples
    --------
    >>> sc = load_scenario(DEMO_SCENARIO)
    >>> sc.seed, sc.duration_s, sc.interval_s, len(sc.topology.instances)
    (7, 7200, 30, 4)
    """
    data, label, path = read_yaml_source(source, "scenario")
    if not isinstance(data, Mapping) or "topology" not in data:
        raise ValueError(f"scenario {label}: expected a mapping with a 'topology:' key")
    topo = load_topology(path if path is not None else data)
    traffic = data.get("traffic") or []
    if not isinstance(traffic, list):
        raise ValueError(f"scenario {label}: traffic: expected a list of entries")
    faults = data.get("faults") or []
    if not isinstance(faults, list):
        raise ValueError(f"scenario {label}: faults: expected a list of entries")

    def get(key: str, conv: Any, default: Any) -> Any:
        if data.get(key) is None:
            return default
        try:
            return conv(data[key])
        except (TypeError, ValueError) as e:
            raise ValueError(f"scenario {label}: {key}: {e}") from None

    return Scenario(
        topology=topo,
        traffic=list(traffic),
        seed=get("seed", int, 0),
        duration_s=get("duration", parse_duration, None),
        interval_s=get("interval", parse_duration, 30),
        omit_remote_placement=get("omit_remote_placement", float, 0.5),
        rtt_defaults_ms=get("rtt_defaults_ms", lambda d: {str(k): float(v) for k, v in d.items()}, {}),
        faults=list(faults),
        raw=dict(data),
        source=label,
        realism=get("realism", lambda v: parse_realism(v)[1], "smooth"),
    )
