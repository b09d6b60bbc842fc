"""Bad input at a running worker: every class is dead-lettered with its reason, nothing else is hurt."""

from __future__ import annotations

import base64
import copy
import json
import sys
import time
from pathlib import Path

import jsonschema
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.harness import Deployment
from pipeline.ingest.validate import Validator
from pipeline.wire.contract import schema

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.strategies import arbitrary_bytes, base_start, near_valid, reports  # noqa: E402
from tests.ingest.test_validate import TOPO  # noqa: E402

TOPO_FILE = Path(__file__).resolve().parents[1] / "data" / "bad_input_topology.yaml"
DLQ_SCHEMA = jsonschema.Draft202012Validator(schema("deadletter"))


def _topology_file() -> Path:
    if not TOPO_FILE.exists():  # same topology the unit tests use, as a file for the worker
        raise AssertionError(f"missing {TOPO_FILE}")
    return TOPO_FILE


def _valid(start: int) -> dict:
    return {"version": 1, "instance": "s-1a/0",
            "local": {"ip": "10.0.0.4", "subnet": "s-1a", "az": "az-1a", "vpc": "vpc-a"},
            "start": start, "interval_s": 30,
            "samples": [{"remote": {"ip": "10.0.1.4"}, "bytes_sent": 1000, "bytes_received": 10,
                         "retransmissions": 2, "timeouts": 1, "flows": 1, "rtt_us": [700]},
                        {"remote": {"ip": "10.0.2.4"}, "bytes_sent": 500, "bytes_received": 0,
                         "retransmissions": 0, "timeouts": 0, "flows": 1, "rtt_us": [900]}]}


def _run(d: Deployment, values: list[bytes], expected_windows: int) -> list[dict]:
    d.start()
    d.produce_raw(values)
    assert d.wait_windows(expected_windows, timeout=120) >= expected_windows, d.logs()
    assert d.alive(), d.logs()
    return d.read_topic(d.topics.deadletter, 10**9, timeout=8)


def test_each_bad_class_dead_lettered(broker, tmp_path):
    t0 = base_start()
    good = _valid(t0)
    bad_sample = copy.deepcopy(good)
    bad_sample["samples"][1]["bytes_sent"] = -7
    cases: dict[str, bytes] = {
        "malformed_json": b'{"version": 1, "samples": [',
        "not_an_object": b'"just a string"',
        "unsupported_version": orjson.dumps(good | {"version": 2}),
        "missing_field": orjson.dumps({k: v for k, v in good.items() if k != "instance"}),
        "wrong_type": orjson.dumps(good | {"interval_s": "30s"}),
        "out_of_range": orjson.dumps(good | {"interval_s": 7200}),
        "future_timestamp": orjson.dumps(good | {"start": int(time.time()) + 86400}),
        "oversize": orjson.dumps(good | {"samples": good["samples"] * 1500}),  # ~400 KB > the 256 KiB limit
        "unknown_local": orjson.dumps(good | {"local": {"ip": "172.31.9.9"}}),
    }
    values = [orjson.dumps(good)]
    offset_of: dict[str, int] = {}
    for reason, v in cases.items():
        offset_of[reason] = len(values)
        values += [v, orjson.dumps(_valid(t0 + 30) | {"report_id": f"r-{reason}"})]  # 9 different reports
    values.append(orjson.dumps(bad_sample))
    values.append(orjson.dumps(good))  # re-sent by its agent: counted once, and not dead-lettered
    from pipeline.runtime.brokers import free_port
    metrics_port = free_port()
    d = Deployment(broker, tmp_path / "d", topology=_topology_file(), FLOWMON_MAX_MESSAGE_BYTES=str(256 * 1024),
                   FLOWMON_METRICS_PORT=str(metrics_port))
    try:
        dead = _run(d, values, expected_windows=2)
        for rec in dead:
            DLQ_SCHEMA.validate(rec)
        by_reason = {r["reason"]: r for r in dead if r["sample_index"] is None}
        assert set(by_reason) == set(cases), sorted(by_reason)
        assert len(dead) == len(cases) + 1
        for reason, raw in cases.items():
            rec = by_reason[reason]
            assert rec["source"]["offset"] == offset_of[reason] and rec["stage"] == "ingest", reason
            if "payload_b64" in rec:
                assert raw.startswith(base64.b64decode(rec["payload_b64"]))
            else:
                assert rec["payload"] == json.loads(raw)
        (one,) = [r for r in dead if r["sample_index"] is not None]
        assert (one["reason"], one["field"], one["sample_index"]) == ("out_of_range", "samples[1].bytes_sent", 1)
        # valid samples around the bad ones are all counted: 1 + 9 valid reports + 1 good sample of bad_sample
        rows = dict(((r[0], r[1]), r[2:]) for r in d.client.query(
            "SELECT src_subnet, dst_subnet, sum(samples), sum(bytes_sent) FROM flow_windows FINAL GROUP BY 1, 2"
        ).result_rows)
        assert rows[("s-1a", "s-1c")] == (11, 11 * 1000)
        assert rows[("s-1a", "s-1d")] == (10, 10 * 500)
        landed = {r["reason"] for r in d.deadletters()}
        assert landed == set(cases)
        # the worker counts dead letters per reason (samples they stood for; 1 for unparseable messages)
        import urllib.request
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        counts = {line.split('reason="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                  for line in text.splitlines() if line.startswith("flowmon_deadletter_samples_total{")}
        assert counts["malformed_json"] == 1 and counts["unsupported_version"] == 2
        assert counts["out_of_range"] == 2 + 1  # interval_s (2 samples) + one bad sample
        assert counts["oversize"] == 3000
        dup = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("flowmon_partials_duplicate_total ")]
        assert dup == [2.0]  # the re-sent report: one partial per subnet pair it touched
    finally:
        d.close()


@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_hypothesis_messages_at_a_running_worker(broker, tmp_path_factory, data):
    """Arbitrary bytes and near-valid reports: every refusal predicted by the validator is in the
    dead-letter topic with the same reason, every accepted sample is in ClickHouse, the worker lives."""
    t0 = base_start()
    msgs = data.draw(st.lists(st.one_of(arbitrary_bytes, near_valid().map(json.dumps).map(str.encode),
                                        reports(start=t0).map(orjson.dumps)), min_size=30, max_size=80))
    msgs.append(orjson.dumps(_valid(t0)))  # at least one window must close
    v = Validator(TOPO)
    now = time.time()
    want_dead, want_samples, ids = set(), 0, set()
    for off, raw in enumerate(msgs):
        rep, rejected = v.check(raw, now)
        want_dead |= {(off, r.sample_index, r.reason) for r in rejected}
        if rep is not None and rep.rid not in ids:  # a report sent twice counts once
            ids.add(rep.rid)
            want_samples += rep.n
    d = Deployment(broker, tmp_path_factory.mktemp("hyp"), topology=_topology_file())
    try:
        d.start()
        d.produce_raw(msgs)
        end = time.time() + 120
        got = 0
        while time.time() < end:
            got = d.client.command("SELECT sum(samples) FROM flow_windows FINAL") or 0
            if got >= want_samples:
                break
            time.sleep(0.5)
        # one more than expected: reads until the timeout, so a spurious dead letter (or one too many) shows
        dead = d.read_topic(d.topics.deadletter, len(want_dead) + 1, timeout=8)
        assert d.alive(), d.logs()
        assert got == want_samples
        assert {(r["source"]["offset"], r["sample_index"], r["reason"]) for r in dead} == want_dead
    finally:
        d.close()
