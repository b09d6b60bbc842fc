"""Detection on the Kafka path, on both brokers: the alerts equal the in-process eval's, and a
SIGKILLed worker's replacement continues open alerts instead of opening them again."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.harness import Deployment

from pipeline.sim.evaluate import EPOCH, evaluate
from pipeline.sim.scenario import load_scenario
from pipeline.sim.simulator import Simulator
from pipeline.sim.totals import expected_totals

SCENARIO = Path(__file__).resolve().parents[1] / "data" / "detect_small.yaml"


def _strip(events):
    """Events as comparable tuples: emitted_at is wall-clock and differs by design."""
    return sorted(tuple(sorted((k, v) for k, v in e.items() if k != "emitted_at")) for e in events)


def _dedup(events):
    """One event per (alert_id, seq); a replayed copy must be identical to the first."""
    seen: dict[tuple[str, int], dict] = {}
    for e in events:
        k = (e["alert_id"], e["seq"])
        if k in seen:
            assert _strip([seen[k]]) == _strip([e]), f"replayed event differs: {seen[k]} vs {e}"
        else:
            seen[k] = e
    return list(seen.values())


def _wait_events(d: Deployment, want: int, timeout: float = 240, until=None) -> list[dict]:
    """The anomaly events so far, once ``want`` distinct ones are there, or, with ``until``, once
    ``until(events)`` holds (then reading up to ``want`` events each time)."""
    end = time.time() + timeout
    got: list[dict] = []
    while time.time() < end:
        got = d.read_topic(d.topics.anomalies, want, timeout=5)
        if until(got) if until is not None else len(_dedup(got)) >= want:
            return got
    return got


def test_kafka_path_gives_the_eval_alerts(deploy):
    """The same scenario in-process (flowmon eval) and through a worker: identical alert events."""
    ref = evaluate(SCENARIO)
    assert ref.detection()["recall"] == 1.0 and ref.alerts >= 5  # the scenario does alarm
    sim = Simulator.from_scenario(load_scenario(SCENARIO), start=EPOCH)
    reports = list(sim.reports(sim.scenario.duration_s))
    from pipeline.runtime.brokers import free_port
    metrics_port = free_port()
    d = deploy(topology=SCENARIO, FLOWMON_METRICS_PORT=str(metrics_port))
    d.start()
    d.produce(reports)
    n_windows = len(expected_totals(reports, 600, sim.topology))
    assert d.wait_windows(n_windows) == n_windows, d.logs()
    got = _wait_events(d, len(ref.events))
    assert _strip(_dedup(got)) == _strip(ref.events), d.logs()
    # landed in ClickHouse too, one row per (alert_id, seq)
    rows = d.client.command("SELECT count() FROM flow_anomalies FINAL")
    end = time.time() + 60
    while rows < len(ref.events) and time.time() < end:
        time.sleep(0.5)
        rows = d.client.command("SELECT count() FROM flow_anomalies FINAL")
    assert rows == len(ref.events)
    opened = d.client.command("SELECT count() FROM alerts WHERE state = 'resolved'")
    assert opened == ref.alerts  # every alert of the scenario opened once and was resolved
    # attribution through the Kafka path: the same verdict per alert as in process, landed too
    got_attr = d.read_topic(d.topics.attributions, len(ref.attributions), timeout=60)
    strip_attr = lambda rs: sorted(tuple(sorted((k, str(v)) for k, v in r.items() if k != "attributed_at"))
                                   for r in {x["alert_id"]: x for x in rs}.values())
    assert strip_attr(got_attr) == strip_attr(ref.attributions), d.logs()
    # latency: each verdict follows its alert's publication by well under one agent interval
    emitted = {e["alert_id"]: e["emitted_at"] for e in got if e["event"] == "opened"}
    lag = max(a["attributed_at"] - emitted[a["alert_id"]] for a in got_attr)
    assert 0 <= lag < 30, lag
    causes = dict(d.client.query("SELECT cause, count() FROM flow_attributions FINAL GROUP BY cause").result_rows)
    want = {}
    for a in ref.attributions:
        want[a["cause"]] = want.get(a["cause"], 0) + 1
    assert causes == want and set(want) >= {"infrastructure", "workload"}
    nhi = d.client.query("SELECT scope_kind, scope, toUnixTimestamp(start), toUnixTimestamp(end) FROM nhi FINAL "
                         "ORDER BY 1, 2, 3").result_rows
    assert [tuple(r) for r in nhi] == [tuple(p) for p in ref.nhi]  # the infrastructure fault, not the workload one
    # flowmon alerts shows each opened alert with its verdict under it
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "alerts", "--no-follow"],
                         env=d.env, capture_output=True, timeout=120)
    text = out.stdout.decode()
    assert out.returncode == 0, out.stderr.decode()
    assert "↳ infrastructure: az_pair az1|az2" in text and "↳ workload: instance subnet-3a/2" in text, text
    assert text.count("↳ ") == ref.alerts
    # the worker reports its detector memory
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    values = {line.split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("flowmon_") and "{" not in line.split(" ")[0]}
    assert values["flowmon_detector_keys"] == ref.state["keys"]
    assert 0 < values["flowmon_detector_state_bytes_max"] <= 4096
    opened_metric = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                        if line.startswith('flowmon_anomaly_events_total{event="opened"'))
    assert opened_metric == ref.alerts


def test_restart_does_not_reopen_open_alerts(deploy):
    """SIGKILL the worker while alerts are open; its replacement continues them (same ids, next seq)."""
    ref = evaluate(SCENARIO)
    sim = Simulator.from_scenario(load_scenario(SCENARIO), start=EPOCH)
    reports = list(sim.reports(sim.scenario.duration_s))
    cut = EPOCH + 45 * 60  # five minutes into the first fault
    first = [r for r in reports if r["start"] < cut]
    rest = [r for r in reports if r["start"] >= cut]
    opened_before = {e["alert_id"] for e in ref.events if e["event"] == "opened" and e["first_seen"] < cut - 60}
    assert opened_before, "the cut must fall inside a fault"
    # between the two halves every source goes idle: the idle clock (wall clock less the lag) must
    # not close the simulated past, or the second half would be late
    d = deploy(topology=SCENARIO, FLOWMON_SOURCE_IDLE_LAG_S=str(int(time.time()) - EPOCH))
    d.start(roles="sink")
    w = d.start(roles="pipeline")
    d.produce(first)
    # wait for the opened events themselves: counting events of any kind let an alert's 'updated' events
    # stand in for another alert's 'opened' one not read yet (seen once in CI on Apache Kafka)
    opened = lambda es: {e["alert_id"] for e in es if e["event"] == "opened"}
    events = _wait_events(d, len(ref.events), timeout=240, until=lambda es: opened_before <= opened(es))
    assert opened_before <= opened(events), d.logs()
    d.kill(w)
    d.start(roles="pipeline")
    d.produce(rest)
    got = _dedup(_wait_events(d, len(ref.events), timeout=300))
    # never opened twice: one 'opened' per alert id, and the whole history equals the uninterrupted run
    opens = [e["alert_id"] for e in got if e["event"] == "opened"]
    assert len(opens) == len(set(opens))
    assert _strip(got) == _strip(ref.events), d.logs()
    # every opened alert is attributed, exactly as without the crash (a replayed copy is identical)
    # the replacement may attribute again what its predecessor did not record as done: read until every
    # alert has its attribution, not until as many messages have come
    attr = d.read_topic(d.topics.attributions, len(ref.attributions), timeout=60, key="alert_id")
    by_id: dict[str, dict] = {}
    for a in attr:
        a = {k: v for k, v in a.items() if k != "attributed_at"}
        assert by_id.setdefault(a["alert_id"], a) == a
    assert by_id == {a["alert_id"]: {k: v for k, v in a.items() if k != "attributed_at"} for a in ref.attributions}


def test_kafka_path_realistic_reports(deploy):
    """Realistic telemetry — bursts, single-flow spikes, agents on their own phase and clock, 60-s
    agents, late, re-sent and missing reports — produced in arrival order to one reports partition:
    the worker publishes exactly what flowmon eval computes (alerts, attributions, NHI), and every
    window in ClickHouse is exact with each re-sent report counted once (and counted as duplicate)."""
    import urllib.request

    import orjson

    from pipeline.runtime.brokers import free_port
    from pipeline.sim.totals import TotalsAccumulator

    ref = evaluate(SCENARIO, realism="realistic")
    assert ref.totals["duplicate_reports"] > 0 and ref.totals["wrong"] == 0 and ref.alerts > 5
    assert ref.totals["late_samples"] == 0  # reports tens of seconds late, within the windows' lateness
    sim = Simulator.from_scenario(load_scenario(SCENARIO), start=EPOCH, realism="realistic")
    deliveries = list(sim.deliveries(sim.scenario.duration_s))
    starts = [r["start"] for _, r in deliveries]
    assert any(s % 30 for s in starts) and starts != sorted(starts)  # unaligned agents, late reports
    metrics_port = free_port()
    d = deploy(topology=SCENARIO, partitions=1, FLOWMON_METRICS_PORT=str(metrics_port))
    d.start()
    d.produce_raw([orjson.dumps(r) for _, r in deliveries])  # in order, partition 0: what eval saw
    want = TotalsAccumulator(600, sim.topology)
    seen = set()
    for _, r in deliveries:
        ident = r.get("report_id"), r["instance"]
        if ident not in seen:
            seen.add(ident)
            want.add(r)
    want_totals = want.result()
    assert d.wait_windows(len(want_totals)) == len(want_totals), d.logs()
    got_totals = d.landed()
    for key, t in want_totals.items():
        assert {k: got_totals[key][k] for k in ("bytes_sent", "bytes_received", "retransmissions", "timeouts",
                                                "flows", "samples", "hosts")} == \
            {k: t[k] for k in ("bytes_sent", "bytes_received", "retransmissions", "timeouts", "flows", "samples",
                               "hosts")}, key
    got = _wait_events(d, len(ref.events))
    assert _strip(_dedup(got)) == _strip(ref.events), d.logs()
    attr = d.read_topic(d.topics.attributions, len(ref.attributions), timeout=60)
    strip_attr = lambda rs: sorted(tuple(sorted((k, str(v)) for k, v in r.items() if k != "attributed_at"))
                                   for r in {x["alert_id"]: x for x in rs}.values())
    assert strip_attr(attr) == strip_attr(ref.attributions), d.logs()
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    dup = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("flowmon_partials_duplicate_total"))
    assert dup >= ref.totals["duplicate_reports"]  # each re-sent report: one partial per pair it touched
    assert d.deadletters() == []  # nothing re-sent or late was dead-lettered
