"""``flowmon alerts`` on a real broker: anomaly events in, exact output out.

Each test writes a handful of events (two alerts, a replayed duplicate, malformed messages)
to a fresh anomalies topic and runs the command on it. Every event is checked against
``flow_anomaly.v1.json`` before it is produced.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from tests.support.events import valid_event as valid
from tests.support.helpers import unique_name
from pipeline.alerts.render import format_event
from pipeline.config import Settings
from pipeline.runtime.follow import subscribe
from pipeline.runtime.topics import Topics, ensure_topics

PARTITIONS = 4
A, B = "a1a1a1a1a1a1a1a1", "b2b2b2b2b2b2b2b2"


# alert A: subnet pair web -> db, retransmissions, critical; opened, updated, resolved
A0 = valid(alert_id=A, event="opened", seq=0, src_subnet="subnet-web", dst_subnet="subnet-db", metric="retrans_rate",
           observed=0.042, expected=0.003, score=9.1, severity="critical", at=1700000000, emitted_at=1700000031.5)
A1 = valid(**dict(A0, event="updated", seq=1, observed=0.08, score=15.0, at=1700000600, last_seen=1700000600,
                  window_start=1700000400, emitted_at=1700000631.25))
A2 = valid(**dict(A1, event="resolved", seq=2, observed=0.002, at=1700001200, window_start=1700001000,
                  reason="normal", emitted_at=1700001231.0))
# alert B: one instance of subnet-cache towards subnet-db, RTT p90, warning; opened, updated
B0 = valid(alert_id=B, event="opened", seq=0, scope="instance", instance="cache-1", src_subnet="subnet-cache",
           dst_subnet="subnet-db", metric="rtt_p90", observed=48_000.0, expected=9_500.0, score=5.2,
           severity="warning", at=1700000300, first_seen=1700000300, last_seen=1700000300, emitted_at=1700000330.0)
B1 = valid(**dict(B0, event="updated", seq=1, observed=52_000.0, score=6.0, at=1700000330, last_seen=1700000330,
                  emitted_at=1700000361.0))
A1_REPLAY = valid(**dict(A1, emitted_at=1700009999.0))  # a replay: same (alert_id, seq), later emitted_at
EVENTS = [A0, A1, A2, B0, B1]


def by_alert(events: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in events:
        out.setdefault(e["alert_id"], []).append(e)
    return out


def produce(bootstrap: str, topic: str, values: list[tuple[str | None, bytes]]) -> None:
    async def go():
        # linger: messages of one partition share a record batch (the last batch holds several records,
        # which is where Tansu's ListOffsets differs from the log end)
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=100)
        await p.start()
        try:
            futures = [await p.send(topic, v, key=k.encode() if k else None) for k, v in values]
            await asyncio.gather(*futures)
        finally:
            await p.stop()
    asyncio.run(go())


@pytest.fixture
def anomalies(broker):
    """A fresh prefix whose anomalies topic holds A0, B0, A1, B1, a replay of A1, two malformed messages, A2."""
    prefix = unique_name("alerts")
    topics = Topics.from_settings(Settings(topic_prefix=prefix, partitions=PARTITIONS))
    asyncio.run(ensure_topics(broker, topics))
    produce(broker, topics.anomalies, [
        (A, orjson.dumps(A0)), (B, orjson.dumps(B0)), (A, orjson.dumps(A1)), (B, orjson.dumps(B1)),
        (A, orjson.dumps(A1_REPLAY)),
        (A, b'{"version": 1, "alert_id": "a1a1'),  # not JSON
        (None, orjson.dumps(dict(B1, severity="fatal"))),  # JSON, not the schema
        (A, orjson.dumps(A2)),
    ])
    return broker, prefix, topics


def run_alerts(bootstrap: str, prefix: str, *args: str, timeout: float = 120) -> tuple[int, str, str]:
    """``flowmon alerts --broker BOOTSTRAP ARGS`` with FLOWMON_TOPIC_PREFIX=prefix: (exit code, stdout, stderr)."""
    env = {"FLOWMON_TOPIC_PREFIX": prefix, "FLOWMON_PARTITIONS": str(PARTITIONS),
           # short group timings, as in harness.Deployment (Tansu answers a join after half the session timeout)
           "FLOWMON_SESSION_TIMEOUT_S": "6", "FLOWMON_REBALANCE_TIMEOUT_S": "6", "FLOWMON_HEARTBEAT_S": "1"}
    argv = ["alerts", "--broker", bootstrap, *args, *(["--source", "kafka"] if "--no-follow" in args else [])]
    p = subprocess.run([sys.executable, "-m", "pipeline.cli", *argv], env=dict(os.environ, **env),
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_no_follow_json_is_exact(anomalies):
    bootstrap, prefix, _ = anomalies
    code, out, err = run_alerts(bootstrap, prefix, "--no-follow", "--json")
    assert code == 0, err
    got = json_lines(out)
    assert by_alert(got) == {A: [A0, A1, A2], B: [B0, B1]}, out  # per alert in order; the replay dropped
    assert len(got) == 5
    assert err.count("skipped malformed message") == 2, err
    assert "5 events shown (0 filtered out, 1 duplicate dropped, 2 malformed skipped)" in err, err


@pytest.mark.parametrize("args, expected", [
    (("--severity", "critical"), [A0, A1, A2]),  # A's resolution passes: it carries A's severity
    (("--severity", "warning"), EVENTS),
    (("--pair", "subnet-cache->subnet-db"), [B0, B1]),
    (("--pair", "subnet-db->subnet-cache"), []),
    (("--pair", "subnet-db"), EVENTS),
    (("--pair", "subnet-web", "--pair", "subnet-cache->*"), EVENTS),
    (("--scope", "instance"), [B0, B1]),
    (("--metric", "retrans_rate"), [A0, A1, A2]),
    (("--metric", "rtt_p90", "--severity", "critical"), []),
])
def test_filters(anomalies, args, expected):
    bootstrap, prefix, _ = anomalies
    code, out, err = run_alerts(bootstrap, prefix, "--no-follow", "--json", *args)
    assert code == 0, err
    assert by_alert(json_lines(out)) == by_alert(expected), out
    duplicates = int(A1 in expected)  # the replay of A1 passes the filters if A1 does
    filtered = len(EVENTS) + 1 - len(expected) - duplicates
    shown = f"{len(expected)} event{'s' * (len(expected) != 1)} shown"
    assert f"{shown} ({filtered} filtered out, {duplicates} duplicate" in err, err


def test_readable_lines(anomalies):
    bootstrap, prefix, _ = anomalies
    code, out, err = run_alerts(bootstrap, prefix, "--no-follow")
    assert code == 0, err
    lines = out.splitlines()
    assert sorted(lines) == sorted(format_event(e) for e in EVENTS), out
    assert [ln for ln in lines if A in ln] == [format_event(e) for e in (A0, A1, A2)]  # in order
    assert ("2023-11-14T22:13:20Z opened   critical subnet-web → subnet-db  retrans_rate 4.20% (expected 0.300%)  "
            f"score 9.1  alert {A}") in lines
    assert ("2023-11-14T22:18:20Z opened   warning  subnet-cache → subnet-db [cache-1]  rtt_p90 48.0 ms "
            f"(expected 9.50 ms)  score 5.2  alert {B}") in lines
    assert "\x1b[" not in out  # no colour codes when stdout is not a terminal


class ThreadedReceiver:
    """A real webhook receiver (aiohttp) on a thread of its own; the first ``fail_first`` requests get 503."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests = 0
        self.accepted: list[dict] = []
        self.keys: list[str] = []
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        if self.requests <= self.fail_first:
            return web.Response(status=503)
        self.accepted.append(orjson.loads(body))
        self.keys.append(request.headers["Idempotency-Key"])
        return web.Response(status=204)

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_post("/alerts", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}/alerts"

    def __enter__(self) -> str:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def test_webhook_gets_each_event_once(anomalies):
    bootstrap, prefix, _ = anomalies
    rx = ThreadedReceiver(fail_first=2)
    with rx as url:
        code, out, err = run_alerts(bootstrap, prefix, "--no-follow", "--json", "--webhook", url,
                                    "--webhook-backoff", "0.01", "--webhook-retries", "3")
    assert code == 0, err
    assert by_alert(rx.accepted) == {A: [A0, A1, A2], B: [B0, B1]}
    assert rx.accepted == json_lines(out)  # same events, same order as printed
    assert Counter(rx.keys) == Counter(f"{e['alert_id']}-{e['seq']}" for e in EVENTS)
    assert rx.requests == 7
    assert "webhook: 5 delivered, 0 failed, 2 retries" in err, err
    assert "HTTP 503 Service Unavailable; retry 1/3" in err and "retry 2/3" in err and "retry 3/3" not in err, err


def test_webhook_down_exits_1_after_printing_everything(anomalies):
    from pipeline.runtime.brokers import free_port
    bootstrap, prefix, _ = anomalies
    code, out, err = run_alerts(bootstrap, prefix, "--no-follow", "--json", "--severity", "critical", "--webhook",
                                f"http://127.0.0.1:{free_port()}/x", "--webhook-backoff", "0.01",
                                "--webhook-retries", "1")
    assert code == 1, err
    assert by_alert(json_lines(out)) == {A: [A0, A1, A2]}
    assert "webhook: 0 delivered, 3 failed, 3 retries" in err, err
    assert err.count("not delivered after 2 attempts") == 3, err


def test_from_latest_no_follow_shows_nothing(anomalies):
    bootstrap, prefix, _ = anomalies
    t0 = time.monotonic()
    code, out, err = run_alerts(bootstrap, prefix, "--no-follow", "--from-latest", "--json")
    assert code == 0, err
    assert out == ""
    assert "0 events shown" in err
    assert time.monotonic() - t0 < 60


def test_follow_from_latest_sees_only_new_events(anomalies):
    """Following (the default start: latest): none of the old events, then the new one as it comes."""
    bootstrap, _, topics = anomalies
    new = [valid(**dict(B1, event="resolved", seq=2 + i, reason="silent", emitted_at=1700002000.0 + i))
           for i in range(60)]

    async def go() -> list[dict]:
        got: list[dict] = []

        async def consume() -> None:
            async for e in subscribe(bootstrap, topics.anomalies, from_beginning=False, follow=True):
                got.append(e)

        task = asyncio.create_task(consume())
        p = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await p.start()
        try:  # the consumer's start position is only known once it has joined: send until one arrives
            for e in new:
                await p.send_and_wait(topics.anomalies, orjson.dumps(e), key=B.encode())
                await asyncio.sleep(0.5)
                if got:
                    break
            await asyncio.sleep(1.0)
        finally:
            await p.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return got

    got = asyncio.run(go())
    assert got, "following: no new event arrived"
    assert all(e in new for e in got), got  # nothing of what was there before
    first = new.index(got[0])
    assert got == new[first:first + len(got)]  # then every later one, in order


def test_group_resumes_where_it_left_off(anomalies):
    bootstrap, prefix, topics = anomalies
    group = unique_name("alerts-group")
    code, out, err = run_alerts(bootstrap, prefix, "--no-follow", "--json", "--group", group)
    assert code == 0, err
    assert by_alert(json_lines(out)) == {A: [A0, A1, A2], B: [B0, B1]}
    later = valid(**dict(B1, event="resolved", seq=2, reason="normal", emitted_at=1700002000.0))
    produce(bootstrap, topics.anomalies, [(B, orjson.dumps(later))])
    code, out, err = run_alerts(bootstrap, prefix, "--no-follow", "--json", "--group", group)
    assert code == 0, err
    assert json_lines(out) == [later]  # only what came after the group's committed offsets


def test_group_from_latest_then_resumes(anomalies):
    """A new group starting at the end sees nothing old; next time it resumes from its offsets, not the end."""
    bootstrap, prefix, topics = anomalies
    group = unique_name("alerts-group")
    code, out, err = run_alerts(bootstrap, prefix, "--no-follow", "--json", "--group", group, "--from-latest")
    assert code == 0, err
    assert out == ""
    later = valid(**dict(A2, event="updated", seq=3, emitted_at=1700003000.0))
    produce(bootstrap, topics.anomalies, [(A, orjson.dumps(later))])
    code, out, err = run_alerts(bootstrap, prefix, "--no-follow", "--json", "--group", group, "--from-latest")
    assert code == 0, err
    assert json_lines(out) == [later]
