"""The anomaly and attribution events as ``flowmon alerts`` reads them: the schema's enums, and decoding.

Anomaly events travel on ``<prefix>-anomalies-v1`` (``schemas/wire/flow_anomaly.v1.json``),
keyed by ``alert_id``. An alert has a lifecycle, ``opened`` (seq 0) → ``updated`` (seq 1, 2, ...)
→ ``resolved``, and ``(alert_id, seq)`` identifies one event. Attributions (one verdict per
opened alert) travel on ``<prefix>-attributions-v1`` (``flow_attribution.v1.json``).

:func:`decode_event` and :func:`decode_attribution` check a message against its schema; a bad
one raises :class:`MalformedEvent` (the follower skips it with a warning, it never stops).

Examples
--------
>>> SEVERITIES, SCOPES
(('warning', 'critical'), ('pair', 'instance'))
>>> "rtt_p90" in METRICS
True
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.wire.contract import schema

__all__ = [
    "SEVERITIES",
    "SCOPES",
    "METRICS",
    "MalformedEvent",
    "decode_event",
    "decode_attribution",
]

_PROPS = schema("flow_anomaly")["properties"]
#: Severities, lowest first (from the schema).
SEVERITIES: tuple[str, ...] = tuple(_PROPS["severity"]["enum"])
#: Alert scopes (from the schema).
SCOPES: tuple[str, ...] = tuple(_PROPS["scope"]["enum"])
#: Metrics an alert can be about (from the schema).
METRICS: tuple[str, ...] = tuple(_PROPS["metric"]["enum"])


class MalformedEvent(ValueError):
    """A message on the anomalies topic that is not a valid ``flow_anomaly`` v1 event."""


def decode_event(value: bytes | str | None) -> dict[str, Any]:
    """Parse and check one message value against ``flow_anomaly.v1.json``.

    >>> event = {"version": 1, "alert_id": "00c0ffee00c0ffee", "event": "opened", "seq": 0, "scope": "pair",
    ...     "instance": None, "src_subnet": "subnet-a", "src_az": "az-1", "src_vpc": "vpc-1",
    ...     "dst_subnet": "subnet-b", "dst_az": "az-2", "dst_vpc": "vpc-1", "metric": "retrans_rate",
    ...     "observed": 0.042, "expected": 0.003, "score": 9.1, "severity": "critical",
    ...     "first_seen": 1700000000, "last_seen": 1700000000, "at": 1700000000, "interval_s": 30,
    ...     "window_start": 1699999800, "reason": None, "emitted_at": 1700000031.5}
    >>> decode_event(orjson.dumps(event))["event"]
    'opened'
    >>> decode_event(b'{"version": 1')
    Traceback (most recent call last):
    ...
    pipeline.alerts.events.MalformedEvent: not JSON: ...
    >>> decode_event(orjson.dumps(dict(event, severity="meh")))
    Traceback (most recent call last):
    ...
    pipeline.alerts.events.MalformedEvent: at severity: 'meh' is not one of ['warning', 'critical']
    """
    return _decode(value, "flow_anomaly")


def decode_attribution(value: bytes | str | None) -> dict[str, Any]:
    """Parse and check one ``flow_attribution.v1.json`` record (raises :class:`MalformedEvent`)."""
    return _decode(value, "flow_attribution")


_validators: dict[str, Any] = {}


def _decode(value: bytes | str | None, schema_name: str) -> dict[str, Any]:
    """JSON-decode ``value`` and check it against ``schemas/wire/<schema_name>.v1.json``."""
    if value is None:
        raise MalformedEvent("empty message (tombstone)")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"not JSON: {exc}") from None
    import jsonschema
    validator = _validators.get(schema_name)
    if validator is None:
        validator = _validators[schema_name] = jsonschema.Draft202012Validator(schema(schema_name))
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise MalformedEvent(f"at {where}: {error.message}")
    return doc
