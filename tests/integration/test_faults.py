"""Broker faults mid-run, on real Apache Kafka: totals stay exact, nothing is dead-lettered, no window is stuck.

- A three-node KRaft cluster (replication factor 3, ``min.insync.replicas=2``, one cluster for
  the module): a broker that leads some of the deployment's partitions is SIGKILLed after the
  first windows landed, stays down until its leaderships moved, then comes back.
- One Apache Kafka node (its own, not the session's shared broker) restarted mid-run.

Apache Kafka only: the embedded Tansu broker keeps its topics in memory, so a restart of it
is a new, empty broker (nothing to come back to), and it has no replication.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.harness import Deployment, compare
from tests.support.kafka_cluster import KafkaCluster, KafkaNode
from pipeline.runtime.brokers import BrokerError
from pipeline.sim.simulator import Simulator

pytestmark = pytest.mark.kafka

FLEET = Path(__file__).resolve().parents[1] / "data" / "fleet_1000.yaml"


def fleet(minutes: int, seed: int):
    sim = Simulator.from_scenario(FLEET, seed=seed)
    reports = list(sim.reports(minutes * 60))
    return reports, sim.expected_totals(reports, 600)


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three Apache Kafka KRaft nodes, replication factor 3, ``min.insync.replicas=2``."""
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka-cluster"), size=3, min_isr=2)
    try:
        cluster.start()
    except (BrokerError, OSError) as e:
        pytest.fail(f"could not start the 3-node Kafka cluster: {e}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


def _land_everything(d: Deployment, expected: dict, timeout: float = 300) -> None:
    got = d.wait_windows(len(expected), timeout=timeout)
    assert got == len(expected), f"{got} of {len(expected)} windows landed\n" + d.logs()
    assert compare(expected, d.landed()) == []
    assert d.deadletters() == []  # nothing late (no worker stalled past the lateness), nothing refused


def test_cluster_broker_killed_mid_run(kafka_cluster: KafkaCluster, tmp_path: Path):
    """A sink and two pipeline workers on 3 brokers; the broker leading most of the deployment's
    partitions is SIGKILLed mid-run and restarted on its log dir: every window lands, exactly."""
    c = kafka_cluster
    reports, expected = fleet(minutes=40, seed=11)
    d = Deployment(c.bootstrap, tmp_path / "d", topology=FLEET, replication_factor=3)
    try:
        d.start(roles="sink")
        d.start(roles="pipeline")
        d.start(roles="pipeline")
        d.produce(reports, acks="all")
        ours = d.topics.all() + [f"{d.prefix}-__assignor-__leader"]  # Faust's own topic too
        first = d.wait_windows(1, timeout=180)
        layout = c.describe(ours)
        leads = Counter(p["leader"] for p in layout.values())
        victim = c.node_index(leads.most_common(1)[0][0])
        c.kill(victim)
        assert 1 <= first < len(expected), "the kill must happen mid-run"
        # every topic flowmon and Faust made is replicated on all three brokers
        assert {t: len(p["replicas"]) for (t, _), p in layout.items()} == {t: 3 for t in ours}
        # down until the cluster has moved the victim's leaderships (its session expired), and a bit more
        gone = c.nodes[victim].node_id
        deadline = time.monotonic() + 60
        while any(p["leader"] == gone for p in c.describe(ours).values()):
            assert time.monotonic() < deadline, "leaderships never left the killed broker"
            time.sleep(0.5)
        time.sleep(3)
        assert d.wait_windows(0) < len(expected), "the broker must come back mid-run"
        c.start(victim)
        _land_everything(d, expected)
    finally:
        d.close()
    c.wait_in_sync(ours)  # healthy again for whatever runs next on this cluster


def test_single_broker_restart_mid_run(tmp_path: Path):
    """One Kafka node (replication factor 1) restarted mid-run on the same log dir and port: once it
    is back, every window lands, exactly."""
    node = KafkaNode(tmp_path / "kafka")
    try:
        node.start()
    except (BrokerError, OSError) as e:
        pytest.fail(f"could not start the Kafka broker: {e}", pytrace=False)
    reports, expected = fleet(minutes=40, seed=12)
    d = Deployment(node.bootstrap, tmp_path / "d", topology=FLEET)
    try:
        d.start()
        d.produce(reports)
        first = d.wait_windows(1, timeout=180)
        node.stop()
        assert 1 <= first < len(expected), "the restart must happen mid-run"
        time.sleep(3)
        node.start()
        _land_everything(d, expected)
    finally:
        d.close()
        node.stop()
