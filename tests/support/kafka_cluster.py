"""Apache Kafka for fault tests: nodes that keep their ports across restarts, and a three-node cluster.

:class:`KafkaNode` is an :class:`~tests.support.kafka.ApacheKafka` KRaft node (broker+controller)
whose client and controller ports are fixed at construction, so :meth:`KafkaNode.restart`
(SIGTERM, then start again on the same log dir and ports) and :meth:`KafkaNode.kill`
(SIGKILL) followed by ``start()`` bring back the same broker at the same address.

:class:`KafkaCluster` runs ``size`` such nodes (default 3) as one cluster: a static
controller quorum (``controller.quorum.voters``) on loopback ports, replication factor
``size`` for new topics and the internal (offsets, transaction) topics, and
``min.insync.replicas=2``. ``kill(i)`` / ``start(i)`` stop and bring back one node.

Command line (from the repository root)::

    python -m tests.support.kafka_cluster      # run a 3-node cluster, print its bootstrap, Ctrl-C stops it
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

from tests.support.kafka import _LOG4J2, KAFKA_VERSION, ApacheKafka, _cluster_id, fetch_kafka_jars

from aiokafka.errors import KafkaError

from pipeline.runtime.brokers import BrokerError, free_port, probe_metadata

__all__ = ["KafkaNode", "KafkaCluster", "main"]


class KafkaNode(ApacheKafka):
    """One KRaft node (broker+controller) with fixed ports: it can be killed and restarted in place.

    ``port`` and ``controller_port`` (0 = a free port, chosen once here) stay the same across
    restarts. ``node_id``, ``voters`` (``controller.quorum.voters``, default: this node alone)
    and ``cluster_id`` (default: a new one) let several nodes form one cluster; the data
    directory is formatted with ``cluster_id`` on the first start only, so a restart finds
    its topics, offsets and metadata log again. Other arguments as :class:`ApacheKafka`.
    """

    def __init__(self, workdir: Path, port: int = 0, *, controller_port: int = 0, node_id: int = 1,
                 voters: str | None = None, cluster_id: str | None = None, **kw: Any) -> None:
        super().__init__(workdir, port or free_port(), **kw)
        self.node_id = node_id
        self.controller_port = controller_port or free_port()
        self.voters = voters or f"{node_id}@127.0.0.1:{self.controller_port}"
        self.format_cluster_id = cluster_id or _cluster_id()

    def _properties(self, port: int, cport: int) -> dict[str, str]:
        props = super()._properties(port, self.controller_port)
        props.update({
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{self.controller_port}",
        })
        return props

    def _prepare(self) -> None:
        if not (self.workdir / "data" / "meta.properties").is_file():
            # format with our cluster id first (ApacheKafka would pick a new one): it then finds it formatted
            self.lib = fetch_kafka_jars(self.version, self.cache_dir)
            conf = self.workdir / "server.properties"
            conf.write_text("".join(f"{k}={v}\n" for k, v in self._properties(self._port_in_use, 0).items()))
            (self.workdir / "log4j2.properties").write_text(_LOG4J2)
            cmd = self._java_cmd("kafka.tools.StorageTool") + [
                "format", "-t", self.format_cluster_id, "-c", str(conf), "--ignore-formatted"]
            r = subprocess.run(cmd, cwd=self.workdir, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                               check=False)
            if r.returncode != 0:
                raise BrokerError(f"kafka storage format failed ({r.returncode}):\n{(r.stdout + r.stderr)[-4000:]}")
        super()._prepare()

    def start(self, wait: bool = True) -> Self:
        """Start the broker; with ``wait=False`` return once its process runs (then call :meth:`wait_ready`):
        a cluster's nodes are ready only once a quorum of them runs."""
        self._defer_ready = not wait
        try:
            return super().start()
        finally:
            self._defer_ready = False

    def _wait_ready(self, port: int, deadline: float) -> None:
        if not getattr(self, "_defer_ready", False):
            super()._wait_ready(port, deadline)

    def wait_ready(self) -> None:
        """Wait until the broker answers Metadata listing itself (see ``start(wait=False)``); on failure
        stop it and raise :class:`BrokerError`."""
        try:
            super()._wait_ready(self._port_in_use, time.monotonic() + self.start_timeout)
        except BaseException:
            self.stop()
            raise

    def kill(self) -> None:
        """SIGKILL the broker (no clean shutdown) and release its files; ``start()`` brings it back."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        self.stop()

    def restart(self) -> Self:
        """Stop the broker cleanly (SIGTERM), then start it again on the same log dir and port."""
        self.stop()
        return self.start()


class KafkaCluster:
    """``size`` Apache Kafka KRaft nodes (each broker+controller) forming one cluster on loopback.

    Node ``i`` keeps its files in ``workdir/node-<i>`` and has node id ``i + 1``. Every node
    is a voter of the static controller quorum. Topics are created with replication factor
    ``size`` by default (``default.replication.factor``), the offsets and transaction state
    topics too, and ``min.insync.replicas=min_isr``: with 3 nodes and ``min_isr=2`` a write
    with ``acks=all`` survives the loss of any one node. ``extra_properties`` go to every node.
    """

    start_timeout = 180.0

    def __init__(self, workdir: Path, size: int = 3, min_isr: int = 2, heap: str = "512m",
                 version: str = KAFKA_VERSION, extra_properties: dict[str, str] | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.size = size
        ports = [(free_port(), free_port()) for _ in range(size)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{cport}" for i, (_, cport) in enumerate(ports))
        cluster_id = _cluster_id()
        rf, isr = str(size), str(min(min_isr, size))
        props = {
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            # a restarted node takes its leaderships back soon (the default checks every 300 s)
            "leader.imbalance.check.interval.seconds": "10",
            **(extra_properties or {}),
        }
        self.nodes = [KafkaNode(self.workdir / f"node-{i}", port, controller_port=cport, node_id=i + 1,
                                voters=voters, cluster_id=cluster_id, heap=heap, version=version,
                                extra_properties=props)
                      for i, (port, cport) in enumerate(ports)]
        for n in self.nodes:
            n.start_timeout = self.start_timeout
        self.cluster_id = cluster_id

    @property
    def bootstrap(self) -> str:
        """Every node's address, comma-separated (clients find the live ones)."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node_index(self, node_id: int) -> int:
        """The index in :attr:`nodes` of the broker with Kafka node id ``node_id``."""
        return next(i for i, n in enumerate(self.nodes) if n.node_id == node_id)

    def start(self, i: int | None = None) -> Self:
        """Start every node (together: a node is ready only once the quorum is), or node ``i`` alone.
        Returns once the started nodes answer Metadata and every running node sees them all."""
        todo = self.nodes if i is None else [self.nodes[i]]
        # the processes start from this thread (they die with the thread that started them: see
        # pipeline.runtime.process), then the nodes are waited for together
        try:
            for n in todo:
                n.start(wait=False)
            with ThreadPoolExecutor(len(todo)) as pool:
                for f in [pool.submit(n.wait_ready) for n in todo]:
                    f.result()
        except BaseException:
            for n in todo:
                n.stop()
            raise
        self.wait_brokers(sum(n.running for n in self.nodes))
        return self

    def kill(self, i: int) -> None:
        """SIGKILL node ``i``."""
        self.nodes[i].kill()

    def stop(self) -> None:
        """Stop every node."""
        with ThreadPoolExecutor(self.size) as pool:
            list(pool.map(lambda n: n.stop(), self.nodes))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_brokers(self, n: int, timeout: float = 120.0) -> None:
        """Wait until every running node lists ``n`` live brokers in its Metadata answers."""
        deadline = time.monotonic() + timeout
        seen: dict[int, int] = {}
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.running:
                    try:
                        seen[node.node_id] = len(probe_metadata("127.0.0.1", node.port).brokers)
                    except OSError:
                        seen[node.node_id] = -1
            if all(seen.get(node.node_id) == n for node in self.nodes if node.running):
                return
            time.sleep(0.2)
        raise BrokerError(f"brokers never agreed on {n} live brokers (node id: brokers seen {seen}); "
                          f"logs under {self.workdir}")

    def describe(self, topics: list[str]) -> dict[tuple[str, int], dict[str, Any]]:
        """``{(topic, partition): {"leader": node id, "replicas": [...], "isr": [...]}}`` as the cluster says."""
        from pipeline.runtime import kafka

        async def go() -> list[Any]:
            # the admin client asks any broker its metadata lists, a dead one too (until the cluster
            # fences it): ask again, a few times
            for attempt in range(20):
                a = kafka.admin(self.live_bootstrap(), 5)
                try:
                    await a.start()
                    return await a.describe_topics(topics)
                except KafkaError:
                    if attempt == 19:
                        raise
                finally:
                    await a.close()
                await asyncio.sleep(0.5)
            raise AssertionError("unreachable")

        out = {}
        for t in asyncio.run(go()):
            for p in t["partitions"]:
                out[(t["topic"], p["partition"])] = {"leader": p["leader"], "replicas": list(p["replicas"]),
                                                     "isr": list(p["isr"])}
        return out

    def coordinator(self, group: str) -> int:
        """The node id of the broker coordinating consumer group ``group``."""
        from pipeline.runtime import kafka

        async def go() -> int:
            a = kafka.admin(self.live_bootstrap(), 15)
            await a.start()
            try:
                return await a.find_coordinator(group)
            finally:
                await a.close()

        return asyncio.run(go())

    def live_bootstrap(self) -> str:
        """The addresses of the running nodes only."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes if n.running)

    def wait_in_sync(self, topics: list[str], timeout: float = 120.0) -> None:
        """Wait until every partition of ``topics`` has all its replicas in sync again."""
        deadline = time.monotonic() + timeout
        lagging: list[Any] = []
        while time.monotonic() < deadline:
            lagging = [(tp, d["isr"]) for tp, d in self.describe(topics).items() if set(d["isr"]) != set(d["replicas"])]
            if not lagging:
                return
            time.sleep(0.5)
        raise BrokerError(f"replicas not back in sync after {timeout:.0f}s: {lagging[:5]}")


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.support.kafka_cluster [--size N]``."""
    ap = argparse.ArgumentParser(prog="python -m tests.support.kafka_cluster", description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, help="node files and logs (default: a new temp dir)")
    ap.add_argument("--size", type=int, default=3, help="number of nodes (default 3)")
    a = ap.parse_args(argv)
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="flowmon-kafka-cluster-"))
    c = KafkaCluster(workdir, a.size)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with c:
        print(c.bootstrap, flush=True)
        print(f"# {a.size} nodes ready, logs under {workdir}; Ctrl-C stops them", file=sys.stderr, flush=True)
        try:
            while all(n.running for n in c.nodes):
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
    print(f"# a node exited on its own; logs under {workdir}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
