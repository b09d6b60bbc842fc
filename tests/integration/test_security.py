"""Kafka security end to end, on Apache Kafka with a SASL_SSL listener and ACLs (``SecureKafka``).

One broker for the module; its certificates (CA, broker, client) are made by the test. Users:
``flowmon`` (SCRAM; ALL on topics and groups: the pipeline), ``agent`` (SCRAM; WRITE on one reports
topic only), ``plainagent`` (PLAIN; WRITE on that topic). Every client goes through the
``FLOWMON_KAFKA_*`` settings: the workers (Faust app, sink, restore), ``flowmon produce``,
``flowmon alerts``, and the test's own clients (``runtime.kafka``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import orjson
import pytest
from aiokafka.errors import TopicAuthorizationFailedError
from tests.support.harness import REPO, Deployment, compare
from tests.support.helpers import unique_name
from tests.support.kafka import SecureKafka

from pipeline.config import Settings
from pipeline.runtime import kafka
from pipeline.runtime.brokers import BrokerError
from pipeline.runtime.produce import produce_reports
from pipeline.runtime.topics import Topics, ensure_topics
from pipeline.sim.scenario import DEMO_SCENARIO
from pipeline.sim.simulator import Simulator

pytestmark = pytest.mark.kafka

PW = {"flowmon": uuid.uuid4().hex, "agent": uuid.uuid4().hex, "plainagent": uuid.uuid4().hex}
#: the topics the writer-only principals may write (their reports topic) and must not read
AGENT_PREFIX = unique_name("sec")
AGENT_TOPICS = Topics.from_settings(Settings(topic_prefix=AGENT_PREFIX))


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    broker = SecureKafka(tmp_path_factory.mktemp("kafka-sasl"), plain_users={"plainagent": PW["plainagent"]})
    try:
        broker.start()
        broker.authorize(
            users={"flowmon": PW["flowmon"], "agent": PW["agent"]},
            acls=[("flowmon", "topic", "*", "all"), ("flowmon", "group", "*", "all"),
                  ("agent", "topic", AGENT_TOPICS.reports, "write"),
                  ("plainagent", "topic", AGENT_TOPICS.reports, "write")])
    except (BrokerError, OSError) as e:
        broker.stop()
        pytest.fail(f"could not start the SASL_SSL Kafka broker: {e}", pytrace=False)
    asyncio.run(ensure_topics(broker.connection("flowmon", PW["flowmon"]), AGENT_TOPICS))
    yield broker
    broker.stop()


def flowmon(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMON_")}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=clean | env, cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=180)


def count_messages(conn: kafka.Connection, topic: str, expected: int) -> int:
    async def go() -> int:
        c = kafka.consumer(conn, topic, auto_offset_reset="earliest")
        await c.start()
        n = 0
        try:
            for _ in range(40):
                for msgs in (await c.getmany(timeout_ms=500)).values():
                    n += len(msgs)
                if n >= expected:
                    break
        finally:
            await c.stop()
        return n
    return asyncio.run(go())


def test_pipeline_over_sasl_ssl_exact_totals(secure, tmp_path):
    """Workers (Faust app, restore, sink), the test's producer and `flowmon alerts` all log in with
    SCRAM-SHA-512 over TLS with a client certificate: every window's totals land exactly."""
    sim = Simulator.from_scenario(DEMO_SCENARIO, seed=1)
    reports = list(sim.reports(3600))
    expected = sim.expected_totals(reports, 600)
    conn = secure.connection("flowmon", PW["flowmon"], "SCRAM-SHA-512")
    d = Deployment(secure.bootstrap, tmp_path / "d", topology=DEMO_SCENARIO, conn=conn,
                   **secure.env("flowmon", PW["flowmon"], "SCRAM-SHA-512"))
    try:
        d.start()
        d.produce(reports)
        assert d.wait_windows(len(expected)) == len(expected), d.logs()
        assert compare(expected, d.landed()) == []
        assert d.deadletters() == []
        out = flowmon("alerts", "--no-follow", "--json", env={k: v for k, v in d.env.items() if k.startswith("FLOWMON_")})
        assert out.returncode == 0, out.stderr
    finally:
        d.close()


@pytest.mark.parametrize("user,mechanism", [("agent", "SCRAM-SHA-256"), ("plainagent", "PLAIN")])
def test_writer_only_principal_writes_reports_but_cannot_read_anomalies(secure, tmp_path, user, mechanism):
    reports = [{"instance": f"i-{k}", "samples": []} for k in range(5)]
    path = tmp_path / "reports.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in reports))
    before = count_messages(secure.connection("flowmon", PW["flowmon"]), AGENT_TOPICS.reports, 0)
    env = secure.env(user, PW[user], mechanism) | {"FLOWMON_TOPIC_PREFIX": AGENT_PREFIX}
    out = flowmon("produce", str(path), env=env)
    assert out.returncode == 0, out.stderr
    assert "produced 5 reports" in out.stderr
    assert count_messages(secure.connection("flowmon", PW["flowmon"]), AGENT_TOPICS.reports,
                          before + 5) == before + 5

    agent = secure.connection(user, PW[user], mechanism)

    async def read_anomalies() -> None:
        c = kafka.consumer(agent, AGENT_TOPICS.anomalies, auto_offset_reset="earliest")
        try:
            await c.start()
            await c.getmany(timeout_ms=2000)
        finally:
            await c.stop()

    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(read_anomalies())
    # the same through the command: one line, exit 3 (the broker refused), naming the missing ACL
    out = flowmon("alerts", "--no-follow", "--source", "kafka", env=env)
    assert out.returncode == 3, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "not authorized" in lines[0] and "Traceback" not in out.stderr, out.stderr


def test_wrong_password_is_one_clear_line(secure, tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_bytes(orjson.dumps({"instance": "i-1", "samples": []}) + b"\n")
    env = secure.env("agent", "not-the-password", "SCRAM-SHA-512") | {"FLOWMON_TOPIC_PREFIX": AGENT_PREFIX}
    out = flowmon("produce", str(path), env=env)
    assert out.returncode == 3
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "authentication failed as 'agent' (SCRAM-SHA-512)" in lines[0] and "invalid credentials" in lines[0]
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_tls_needs_the_client_certificate_and_the_ca(secure, tmp_path):
    """The listener requires a client certificate signed by the test CA, and clients check the broker's."""
    good = secure.settings("flowmon", PW["flowmon"])
    assert asyncio.run(kafka.probe(kafka.connection(Settings(**good)))) is None
    no_cert = {k: v for k, v in good.items() if k not in ("kafka_ssl_certfile", "kafka_ssl_keyfile")}
    assert asyncio.run(kafka.probe(kafka.connection(Settings(**no_cert)))) is not None
    no_ca = {k: v for k, v in good.items() if k != "kafka_ssl_cafile"}  # the system CAs do not know the test CA
    err = asyncio.run(kafka.probe(kafka.connection(Settings(**no_ca))))
    assert err is not None and "TLS handshake failed" in kafka.reason(err), repr(err)
    # and the producer API works with PLAIN over the same listener
    stats = asyncio.run(produce_reports(secure.connection("plainagent", PW["plainagent"], "PLAIN"),
                                        AGENT_TOPICS.reports, [{"instance": "i-9", "samples": []}]))
    assert stats.reports == 1

