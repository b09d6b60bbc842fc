"""/healthz and the lag gauges: healthy while the work gets done, 503 while nobody does it."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from pipeline.runtime.agents.ingest import ingest_group
from pipeline.runtime.brokers import free_port
from tests.integration.test_pipeline import FLEET, fleet


def _health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait(port: int, pred, timeout: float, d) -> dict:
    end = time.time() + timeout
    last = None
    while time.time() < end:
        d.check_alive()
        try:
            last = _health(port)
        except OSError:  # not serving yet
            time.sleep(0.5)
            continue
        if pred(*last):
            return last[1]
        time.sleep(0.5)
    raise AssertionError(f"/healthz never got there; last: {last}\n{d.logs()}")


def test_healthz_turns_unhealthy_while_the_pipeline_is_stuck(deploy, request):
    sim, reports, expected = fleet(minutes=10, seed=11)
    port = free_port()
    d = deploy(topology=FLEET, FLOWMON_METRICS_PORT=str(port), FLOWMON_HEALTH_INTERVAL_S="1",
               FLOWMON_HEALTH_STUCK_S="8")
    d.start(roles="sink")  # the sink alone: nobody runs the pipeline stages
    body = _wait(port, lambda code, b: code == 200 and b["lag_read_at"], 90, d)
    assert body["status"] == "ok" and body["watermark_age_s"] is None  # it owns no pairs partition
    d.produce(reports)
    body = _wait(port, lambda code, b: code == 503, 60, d)
    app = ingest_group(d.settings.app_id)  # the group that reads the reports
    assert any(f"consumer group {app}: " in r and "no offset committed" in r for r in body["reasons"]), body
    waiting = body["consumer_lag"][app][d.topics.reports]
    if request.node.callspec.params["broker"] == "kafka":
        assert waiting == len(reports)  # every report waits
    else:  # Tansu's ListOffsets answers the base offset of a partition's last batch + 1: a little short
        assert 0.9 * len(reports) <= waiting <= len(reports)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert f'flowmon_consumer_lag{{group="{app}",topic="{d.topics.reports}"}} {float(waiting)}' in metrics
    assert "flowmon_healthy 0.0" in metrics

    d.start(roles="pipeline", FLOWMON_METRICS_PORT="0")  # now somebody does the work: healthy again, and the lag drains
    body = _wait(port, lambda code, b: code == 200 and b["consumer_lag"][app][d.topics.reports] == 0, 180, d)
    assert body["reasons"] == []
    assert d.wait_windows(1) >= 1  # and the work is really done: windows land
