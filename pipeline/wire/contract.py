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

from pipeline.config import SCHEMAS_DIR

__all__ = [
    "WIRE_VERSION",
    "SAMPLE_COUNTERS",
    "LIMITS",
    "REASONS",
    "schema",
    "topic_name",
    "pair_partition",
    "sample_table",
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
    out["report_id_max_len"] = hdr["report_id"]["maxLength"]
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


@lru_cache(maxsize=1 << 16)
def pair_partition(src_subnet: str, dst_subnet: str, partitions: int) -> int:
    """Stable partition of a directional subnet pair (crc32, same in every process; cached: ingest asks
    once per partial).

    >>> pair_partition("subnet-1a", "subnet-1c", 8) == pair_partition("subnet-1a", "subnet-1c", 8)
    True
    """
    return zlib.crc32(f"{src_subnet}\x00{dst_subnet}".encode()) % partitions


def sample_table() -> str:
    """The report fields as a Markdown table, from the schema (the README embeds it; a test keeps it in sync)."""
    defs = schema("flow_report")["$defs"]
    rows = ["| field | type | meaning and unit |", "|---|---|---|"]

    def add(prefix: str, props: dict, required: list[str]) -> None:
        for name, p in props.items():
            if "$ref" in p:
                sub = defs[p["$ref"].rsplit("/", 1)[1]]
                rows.append(f"| `{prefix}{name}` | object | {p.get('description', '')} |")
                add(f"{prefix}{name}.", sub["properties"], sub.get("required", []))
                continue
            typ = p.get("type", "integer" if isinstance(p.get("const"), int) else "")
            if isinstance(typ, list):
                typ = " or ".join(typ)
            if typ == "array":
                typ = f"array of {p['items'].get('type', 'object') if 'items' in p else ''}"
            opt = "" if name in required else " (optional)"
            rows.append(f"| `{prefix}{name}` | {typ}{opt} | {p.get('description', '')} |")

    add("", defs["header"]["properties"], defs["header"]["required"])
    rows.append(f"| `samples` | array | {defs['report']['properties']['samples']['description']} |")
    add("samples[].", defs["sample_fields"]["properties"], defs["sample_fields"]["required"])
    return "\n".join(rows)
