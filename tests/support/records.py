"""Example records of the wire schemas, for tests: ``from tests.support.records import example_window``."""

from __future__ import annotations

import random

from typing import Any

__all__ = ["example_window", "make_windows", "one_pair_reports"]


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


def make_windows(n: int, seed: int = 0, window_start: int = 1_700_000_400) -> list[dict]:
    """n distinct windows (subnet pairs) with random counters."""
    rng = random.Random(seed)
    subnets = [f"subnet-{i}" for i in range(max(2, int(n**0.5) + 1))]
    out = []
    for i in range(n):
        sent, received = rng.randrange(10**9), rng.randrange(10**9)
        hist = {str(b): rng.randrange(1, 50) for b in rng.sample(range(100, 300), 12)}
        count = sum(hist.values())
        rtt_sum = rng.randrange(count, count * 100_000)
        src, dst = subnets[i % len(subnets)], subnets[i // len(subnets)]
        out.append(
            example_window(
                src_subnet=src, dst_subnet=dst, src_az=f"az-{i % 3}", dst_az=f"az-{(i // 7) % 3}",
                window_start=window_start, bytes_sent=sent, bytes_received=received, bytes=sent + received,
                retransmissions=rng.randrange(100), timeouts=rng.randrange(5), flows=rng.randrange(1, 1000),
                samples=rng.randrange(1, 1000), hosts=rng.randrange(1, 20), rtt_count=count, rtt_sum_us=rtt_sum,
                rtt_mean_us=rtt_sum / count, rtt_hist=hist, closed_at=window_start + 660 + rng.random(),
            )  # fmt: skip
        )
    return out


def one_pair_reports(hosts: int, start: int = 1796403600) -> list[dict[str, Any]]:
    """One report from each of ``hosts`` instances of subnet ``big-a``, all to one remote in ``big-b``, in one
    interval: a single pair-window that holds every host (its state is ~155 bytes per host: 8,000 hosts make
    ~1.2 MB, above Kafka's default message size).

    >>> r = one_pair_reports(300)
    >>> len(r), len({x["instance"] for x in r}), r[299]["local"]["ip"], r[0]["samples"][0]["remote"]["subnet"]
    (300, 300, '10.9.1.50', 'big-b')
    """
    return [{"version": 1, "instance": f"big-{i}",
             "local": {"ip": f"10.9.{i // 250}.{i % 250 + 1}", "subnet": "big-a", "az": "az-x", "vpc": "v"},
             "start": start, "interval_s": 30,
             "samples": [{"remote": {"ip": "10.8.0.1", "subnet": "big-b", "az": "az-y", "vpc": "v"},
                          "bytes_sent": 1000, "bytes_received": 10, "retransmissions": 0, "timeouts": 0, "flows": 1,
                          "rtt_us": [200]}]} for i in range(hosts)]
