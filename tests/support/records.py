"""Example records of the wire schemas, for tests: ``from tests.support.records import example_window``."""

from __future__ import annotations

from typing import Any

__all__ = ["example_window"]


def example_window(**overrides: Any) -> dict[str, Any]:
    """A valid flow_window.v1 record, with *overrides* applied.

    >>> example_window(bytes=7)["bytes"]
    7
    >>> import jsonschema
    >>> from pipeline.wire.contract import schema
    >>> jsonschema.validate(example_window(), schema("flow_window"))
    """
    w: dict[str, Any] = {
        "version": 1, "src_subnet": "subnet-1a", "src_az": "use1-az1", "src_vpc": "vpc-1",
        "dst_subnet": "subnet-1c", "dst_az": "use1-az2", "dst_vpc": "vpc-1",
        "window_start": 1_700_000_400, "window_s": 600,
        "bytes_sent": 420, "bytes_received": 10_485_760, "bytes": 10_486_180,
        "retransmissions": 1, "timeouts": 0, "flows": 4, "samples": 4, "hosts": 2,
        "rtt_count": 4, "rtt_sum_us": 4800, "rtt_mean_us": 1200.0,
        "rtt_p50_us": 1150.0, "rtt_p90_us": 1400.0, "rtt_p99_us": 1400.0,
        "rtt_hist": {"64": 3, "80": 1}, "closed_at": 1_700_001_060.25,
    }  # fmt: skip
    w.update(overrides)
    return w
