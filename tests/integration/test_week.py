"""A week in compressed time through one worker, hosts joining and leaving: memory, window state and detector
keys stay bounded, and the keys of departed hosts expire."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request

from pipeline.runtime.agents.ingest import ingest_group
from pipeline.runtime.brokers import free_port
from tests.support.helpers import metric

HOUR = 3600
INTERVAL = 300           # the agents' report interval (and the detection grid)
LIFE = 10 * HOUR         # each host lives 10 h; a new one is born every hour: ~10 alive at any time
TTL = 6 * HOUR           # FLOWMON_DETECTOR_KEY_TTL_S for this test
SUBNETS = [("s0", "az-a"), ("s1", "az-a"), ("s2", "az-b"), ("s3", "az-b")]
T0 = 1_790_000_000 // 600 * 600


def _reports(t_from: int, t_to: int) -> list[dict]:
    out = []
    for t in range(t_from, t_to, INTERVAL):
        for birth in range(T0 - LIFE + HOUR, t + 1, HOUR):
            if not birth <= t < birth + LIFE:
                continue
            h = (birth - T0) // HOUR
            subnet, az = SUBNETS[h % 4]
            samples = []
            for k in (1, 2):  # each host talks to two other subnets
                rs, raz = SUBNETS[(h + k) % 4]
                samples.append({"remote": {"ip": f"10.9.{(h + k) % 4}.{k}", "subnet": rs, "az": raz, "vpc": "v"},
                                "bytes_sent": 1000 + h % 7, "bytes_received": 50, "retransmissions": h % 3,
                                "timeouts": 0, "flows": 2, "rtt_us": [800 + 10 * k]})
            out.append({"version": 1, "instance": f"host-{h}", "start": t, "interval_s": INTERVAL,
                        "local": {"ip": f"10.8.{h % 250}.{h // 250 + 1}", "subnet": subnet, "az": az, "vpc": "v"},
                        "samples": samples})
    return out


def _metric(port: int, name: str) -> float:
    value = metric(port, name)
    assert value is not None, f"{name} is not on /metrics"
    return value


def _lag(port: int, d) -> int:
    """Messages the pipeline's groups have not committed on the reports and pairs topics (/healthz)."""
    import json
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).read()
    except urllib.error.HTTPError as e:
        body = e.read()
    lag = json.loads(body)["consumer_lag"]
    return lag[ingest_group(d.settings.app_id)][d.topics.reports] + lag[d.settings.app_id][d.topics.pairs]


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_week_of_churning_hosts_stays_bounded(tansu_broker, tmp_path):
    from tests.support.harness import Deployment

    port = free_port()
    d = Deployment(str(tansu_broker.bootstrap), tmp_path / "d", partitions=2, FLOWMON_METRICS_PORT=str(port),
                   FLOWMON_INTERVAL_S=str(INTERVAL), FLOWMON_DETECTOR_KEY_TTL_S=os.environ.get("WEEK_TTL", str(TTL)),
                   FLOWMON_SOURCE_IDLE_S="3600",  # a backfill: the watermark follows event time only
                   FLOWMON_HEALTH_INTERVAL_S="1")
    try:
        w = d.start(roles="pipeline")
        sent = 0

        def run(days_from: int, days_to: int) -> dict[str, float]:
            nonlocal sent
            reports = _reports(T0 + days_from * 24 * HOUR, T0 + days_to * 24 * HOUR)
            d.produce(reports)
            sent += len(reports)
            end = time.time() + 400
            while time.time() < end:  # until every stage has committed everything it was sent
                d.check_alive()
                try:  # (not up yet: no page, or no lag read yet)
                    if (metric(port, "flowmon_reports_total") or 0) >= sent and _lag(port, d) == 0:
                        break
                except (OSError, KeyError):
                    pass
                time.sleep(0.25)
            assert _metric(port, "flowmon_reports_total") == sent, d.logs()
            assert _lag(port, d) == 0, d.logs()
            return {"keys": _metric(port, "flowmon_detector_keys"), "open": _metric(port, "flowmon_open_windows"),
                    "rss_kb": _rss_kb(w.pid), "rss_metric_kb": _metric(port, "process_resident_memory_bytes") / 1024,
                    "young_gcs": _metric(port, 'python_gc_collections_total{generation="0"}')}

        days = [run(day, day + 1) for day in range(7)]  # a day at a time: the same load each time
        day2, week = days[1], days[6]
    finally:
        d.close()
    print("\n".join(f"after day {i + 1}: {x}" for i, x in enumerate(days)), f"\n{sent:,} reports")
    hosts_seen = (7 * 24 * HOUR) // HOUR + LIFE // HOUR
    never_expiring = hosts_seen * 2 + 16  # two instance keys per host ever seen, plus the subnet pairs
    # alive within the TTL (and the check's window of slack): about (LIFE + TTL) / HOUR hosts, two keys each
    bound = ((LIFE + TTL) // HOUR + 2) * 2 + 16
    assert week["keys"] <= bound < never_expiring / 3, (week, bound, never_expiring)
    assert week["keys"] <= day2["keys"] * 1.2, (day2, week)
    assert week["open"] <= 2 * 16, week  # at most two windows open per pair (this one and the one closing)
    assert week["rss_kb"] <= day2["rss_kb"] * 1.15 + 20_000, days
    assert abs(week["rss_metric_kb"] - week["rss_kb"]) < 0.05 * week["rss_kb"], week  # /metrics tells the truth
    # the worker's collector tuning is in force (runtime.collector): a week of reports allocates millions of
    # objects, which Python's default thresholds (a young collection per 700 new objects) collect ~1,500 times
    assert week["young_gcs"] - days[0]["young_gcs"] < 100, days
