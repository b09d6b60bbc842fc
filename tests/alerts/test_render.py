"""pipeline.alerts.render: one readable line per event, units per metric."""

from __future__ import annotations

import pytest

from pipeline.alerts.events import METRICS
from pipeline.alerts.render import format_event
from pipeline.wire.contract import schema
from tests.support.events import valid_event as ev


# --- formatting ---------------------------------------------------------------------------------
@pytest.mark.parametrize("metric, observed, expected, text", [
    ("retrans_rate", 0.0523, 0.0011, "retrans_rate 5.23% (expected 0.110%)"),
    ("retrans_rate", 0.25, 0.0, "retrans_rate 25.0% (expected 0%)"),
    ("timeout_rate", 0.5, 0.02, "timeout_rate 0.500 per flow (expected 0.0200 per flow)"),
    ("timeout_rate", 3.0, 0.125, "timeout_rate 3.00 per flow (expected 0.125 per flow)"),
    ("rtt_mean", 1834.0, 412.0, "rtt_mean 1.83 ms (expected 0.412 ms)"),
    ("rtt_p90", 250_000.0, 48_000.0, "rtt_p90 250 ms (expected 48.0 ms)"),
])
def test_format_each_metric_with_units(metric, observed, expected, text):
    line = format_event(ev(metric=metric, observed=observed, expected=expected))
    assert line == (f"2023-11-14T22:13:20Z opened   critical subnet-a → subnet-b  {text}  score 9.1  "
                    "alert 00c0ffee00c0ffee")


def test_format_instance_resolved_and_time_in_utc():
    e = ev(event="resolved", seq=7, scope="instance", instance="db-3", src_subnet="s-db", dst_subnet="s-web",
           severity="warning", metric="rtt_p90", observed=900.0, expected=1000.0, score=12.345, reason="silent",
           at=0, alert_id="abcdef0123456789")
    assert format_event(e) == ("1970-01-01T00:00:00Z resolved warning  s-db → s-web [db-3]  rtt_p90 0.900 ms "
                               "(expected 1.00 ms)  score 12.3  silent  alert abcdef0123456789")


def test_metrics_cover_the_schema():
    assert set(METRICS) == set(schema("flow_anomaly")["properties"]["metric"]["enum"])
    for m in METRICS:  # every metric formats with a unit
        line = format_event(ev(metric=m, observed=1.0, expected=0.5))
        assert any(u in line for u in ("%", "per flow", " ms"))
