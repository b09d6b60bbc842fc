"""Test data for the alerts: a valid anomaly event. Import with ``from tests.support.events import example_event``."""

from __future__ import annotations

from typing import Any

__all__ = ["example_event", "valid_event"]


def example_event(**overrides: Any) -> dict[str, Any]:
    """A valid anomaly event (``flow_anomaly.v1.json``); ``overrides`` replace fields. An ``updated``
    event comes later, with a lower score and severity, unless overridden too.

    >>> import jsonschema
    >>> from pipeline.wire.contract import schema
    >>> jsonschema.validate(example_event(), schema("flow_anomaly"))
    >>> jsonschema.validate(example_event(event="updated", seq=2), schema("flow_anomaly"))
    """
    ev: dict[str, Any] = {
        "version": 1, "alert_id": "00c0ffee00c0ffee", "event": "opened", "seq": 0, "scope": "pair",
        "instance": None, "src_subnet": "subnet-a", "src_az": "az-1", "src_vpc": "vpc-1",
        "dst_subnet": "subnet-b", "dst_az": "az-2", "dst_vpc": "vpc-1", "metric": "retrans_rate",
        "observed": 0.042, "expected": 0.003, "score": 9.1, "severity": "critical",
        "first_seen": 1700000000, "last_seen": 1700000000, "at": 1700000000, "interval_s": 30,
        "window_start": 1699999800, "reason": None, "emitted_at": 1700000031.5,
    }
    if overrides.get("event") == "updated":
        ev.update(at=1700000400, last_seen=1700000400, score=5.2, severity="warning")
    ev.update(overrides)
    return ev


def valid_event(**overrides: Any) -> dict[str, Any]:
    """:func:`example_event`, checked against the schema (so test data cannot drift from it).

    >>> valid_event(severity="warning")["severity"]
    'warning'
    >>> valid_event(severity="meh")
    Traceback (most recent call last):
    ...
    jsonschema.exceptions.ValidationError: 'meh' is not one of ['warning', 'critical']...
    """
    e = example_event(**overrides)
    _validator().validate(e)
    return e


_validators: list[Any] = []


def _validator() -> Any:
    if not _validators:
        import jsonschema

        from pipeline.wire.contract import schema
        _validators.append(jsonschema.Draft202012Validator(schema("flow_anomaly")))
    return _validators[0]
