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
import zlib
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


def fleet(seed: int, minutes: int = 90, share: int = 8):
    """The reports of one host in ``share`` of the 1,000-host fleet for ``minutes``, and their totals
    per pair and window. A small fleet over nine windows (~22,500 reports, ~100,000 samples, ~800 pair
    windows): the first windows land after an eighth of the run, the last at its end, so "mid-run" is
    most of the run."""
    sim = Simulator.from_scenario(FLEET, seed=seed)
    reports = [r for r in sim.reports(minutes * 60) if zlib.crc32(r["instance"].encode()) % share == 0]
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
    """A worker on 3 brokers; the broker coordinating its group (and leading some of its partitions) is
    SIGKILLed mid-run, stays down until its leaderships moved, and is restarted on its log dir:
    every window lands, exactly."""
    c = kafka_cluster
    reports, expected = fleet(seed=11)
    d = Deployment(c.bootstrap, tmp_path / "d", topology=FLEET, replication_factor=3)
    t0 = time.monotonic()
    try:
        d.start()
        d.produce(reports, acks="all")
        ours = d.topics.all() + [f"{d.prefix}-__assignor-__leader"]  # Faust's own topic too
        first = d.wait_windows(1, timeout=180)
        layout = c.describe(ours)
        leads = Counter(p["leader"] for p in layout.values())
        # the broker coordinating the workers' group: its failure moves the group too, not only partitions
        gone = c.coordinator(d.prefix)
        victim = c.node_index(gone)
        c.kill(victim)
        t_kill = time.monotonic()
        print(f"{t_kill - t0:.0f}s: {first}/{len(expected)} windows landed; killed node {gone} (group coordinator), "
              f"leader of {leads[gone]}/{len(layout)} partitions")
        assert 1 <= first < len(expected), "the kill must happen mid-run"
        # it leads a reports partition (4 partitions on 3 brokers: each leads one or two), so the
        # watermark, and every window, waits for the failover: the restart below comes mid-run too
        assert any(p["leader"] == gone for (t, _), p in layout.items() if t == d.topics.reports)
        # every topic flowmon and Faust made is replicated on all three brokers
        assert {t: len(p["replicas"]) for (t, _), p in layout.items()} == {t: 3 for t in ours}
        # down until the cluster has moved the victim's leaderships (its session expired)
        deadline = time.monotonic() + 60
        while any(p["leader"] == gone for p in c.describe(ours).values()):
            assert time.monotonic() < deadline, "leaderships never left the killed broker"
            time.sleep(0.5)
        now = d.wait_windows(0)
        print(f"{time.monotonic() - t0:.0f}s: leaderships moved {time.monotonic() - t_kill:.0f}s after the kill; "
              f"{now}/{len(expected)} windows landed; restarting node {gone}")
        assert now < len(expected), "the broker must come back mid-run"
        c.start(victim)
        print(f"{time.monotonic() - t0:.0f}s: node {gone} is back; {d.wait_windows(0)}/{len(expected)} windows landed")
        _land_everything(d, expected)
        print(f"{time.monotonic() - t0:.0f}s: all {len(expected)} windows landed")
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
    reports, expected = fleet(seed=12)
    d = Deployment(node.bootstrap, tmp_path / "d", topology=FLEET)
    t0 = time.monotonic()
    try:
        d.start()
        d.produce(reports)
        first = d.wait_windows(1, timeout=180)
        node.stop()
        print(f"{time.monotonic() - t0:.0f}s: {first}/{len(expected)} windows landed; broker stopped")
        assert 1 <= first < len(expected), "the restart must happen mid-run"
        time.sleep(3)
        node.start()
        print(f"{time.monotonic() - t0:.0f}s: broker back")
        _land_everything(d, expected)
        print(f"{time.monotonic() - t0:.0f}s: all {len(expected)} windows landed")
    finally:
        d.close()
        node.stop()
