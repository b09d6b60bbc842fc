"""Alert history read back from ClickHouse (real chdb): the records the sink wrote, in time order."""

from __future__ import annotations


import jsonschema

from pipeline.alerts.history import history
from pipeline.clickhouse.writer import WindowSink
from pipeline.wire.contract import schema
from tests.support.events import example_event




def _attribution(alert_id: str, at: int, cause: str) -> dict:
    return {"version": 1, "alert_id": alert_id, "at": at, "scope": "pair", "instance": None,
            "src_subnet": "subnet-a", "dst_subnet": "subnet-b", "metric": "retrans_rate", "family": "retrans",
            "cause": cause, "element_kind": "az_pair" if cause == "infrastructure" else None,
            "element": "az-1|az-2" if cause == "infrastructure" else None, "confidence": 0.9, "purity": 1.0,
            "reporters_crossing": 4, "reporters_degraded": 4, "degraded": ["h1", "h2"], "keys_scored": 8,
            "keys_degraded": 4, "exonerating": 0, "exonerating_reporters": [], "keys_attributed": 4,
            "evidence_level": "instance", "attributed_at": at + 31.25}


def test_history_is_what_landed_in_time_order_with_attributions(client):
    a_open = example_event(alert_id="a" * 16, at=1_700_000_060, first_seen=1_700_000_060, last_seen=1_700_000_060)
    a_done = dict(a_open, event="resolved", seq=1, at=1_700_000_600, last_seen=1_700_000_570, reason="normal",
                  emitted_at=1_700_000_631.5)
    b_open = example_event(alert_id="b" * 16, at=1_700_000_030, first_seen=1_700_000_030, last_seen=1_700_000_030,
                           scope="instance", instance="web-1", metric="rtt_p90", severity="warning")
    att_a, att_b = _attribution("a" * 16, 1_700_000_060, "infrastructure"), _attribution("b" * 16, 1_700_000_030,
                                                                                           "workload")
    sink = WindowSink(client)
    sink.write_anomalies([a_done, b_open])  # landed out of order, in two batches
    sink.write_anomalies([a_open, dict(a_open, emitted_at=a_open["emitted_at"] + 9)])  # and re-emitted
    sink.write_attributions([att_a, att_b])

    got = list(history(client))
    assert [(r.get("event", "attribution"), r["alert_id"][0]) for r in got] == [
        ("opened", "b"), ("attribution", "b"), ("opened", "a"), ("attribution", "a"), ("resolved", "a")]
    assert got[1] == att_b and got[3] == att_a  # every field as the wire has it
    assert got[0] == b_open and got[4] == a_done
    assert got[2] == dict(a_open, emitted_at=a_open["emitted_at"] + 9)  # the latest copy of a re-emitted event
    for r in got:
        jsonschema.validate(r, schema("flow_anomaly" if "event" in r else "flow_attribution"))
    assert [r["alert_id"][0] for r in history(client, since=1_700_000_060, attribution=False)] == ["a", "a"]
