"""What travels on the topics: versions, topic names, and the JSON schemas that define them.

The schemas live once, in ``schemas/wire/``; this module loads them so code can be
checked against them (limits are read from the schema, not restated here).

Examples
--------
>>> WIRE_VERSION
1
>>> topic_name("flow", "reports")
'flow-reports-v1'
>>> LIMITS["bytes_sent"]
4500000000000
"""

from __future__ import annotations

import json
import zlib
from functools import lru_cache
from typing import Any

from .config import SCHEMAS_DIR

__all__ = [
    "WIRE_VERSION",
    "SAMPLE_COUNTERS",
    "LIMITS",
    "REASONS",
    "schema",
    "topic_name",
    "pair_partition",
]

#: Major wire version. An incompatible change to a report bumps it: new topic names.
WIRE_VERSION = 1

#: Integer counters every sample carries, in column order.
SAMPLE_COUNTERS = ("bytes_sent", "bytes_received", "retransmissions", "timeouts", "flows")


@lru_cache(maxsize=None)
def schema(name: str) -> dict[str, Any]:
    """Load ``schemas/wire/<name>.v<WIRE_VERSION>.json`` (e.g. ``flow_report``)."""
    path = SCHEMAS_DIR / "wire" / f"{name}.v{WIRE_VERSION}.json"
    with open(path, "rb") as fh:
        return json.load(fh)


def _limits() -> dict[str, int]:
    defs = schema("flow_report")["$defs"]
    props = defs["sample_fields"]["properties"]
    out = {k: props[k]["maximum"] for k in SAMPLE_COUNTERS}
    out["flows_min"] = props["flows"]["minimum"]
    out["rtt_us"] = props["rtt_us"]["items"]["maximum"]
    out["rtt_us_min"] = props["rtt_us"]["items"]["minimum"]
    out["rtt_items"] = props["rtt_us"]["maxItems"]
    hdr = defs["header"]["properties"]
    out["start_min"] = hdr["start"]["minimum"]
    out["interval_min"] = hdr["interval_s"]["minimum"]
    out["interval_max"] = hdr["interval_s"]["maximum"]
    out["id_max_len"] = hdr["instance"]["maxLength"]
    ep = defs["endpoint"]["properties"]
    out["ip_min_len"], out["ip_max_len"] = ep["ip"]["minLength"], ep["ip"]["maxLength"]
    out["place_max_len"] = ep["subnet"]["maxLength"]
    out["samples_max"] = defs["report"]["properties"]["samples"]["maxItems"]
    return out


#: Range limits of every numeric field, read from the report schema.
LIMITS: dict[str, int] = _limits()

#: Dead-letter reasons, read from the dead-letter schema.
REASONS: tuple[str, ...] = tuple(schema("deadletter")["properties"]["reason"]["enum"])


def topic_name(prefix: str, name: str) -> str:
    """Topic names carry the wire version: ``<prefix>-<name>-v<WIRE_VERSION>``."""
    return f"{prefix}-{name}-v{WIRE_VERSION}"


def pair_partition(src_subnet: str, dst_subnet: str, partitions: int) -> int:
    """Stable partition of a directional subnet pair (crc32, same in every process).

    >>> pair_partition("subnet-1a", "subnet-1c", 8) == pair_partition("subnet-1a", "subnet-1c", 8)
    True
    """
    return zlib.crc32(f"{src_subnet}\x00{dst_subnet}".encode()) % partitions
