"""Apache Kafka for the tests and benchmarks: one KRaft node on loopback, from jars fetched with Maven.

:class:`ApacheKafka` runs one KRaft node (broker+controller) of Apache Kafka
:data:`KAFKA_VERSION` from jars that :func:`fetch_kafka_jars` copies from Maven Central with
``mvn`` into a cache (``$FLOWMON_CACHE_DIR`` or ``~/.cache/flowmon``). Needs Java 17+. It is a
:class:`pipeline.runtime.brokers.BrokerLauncher`, like the embedded Tansu broker.

Command line (from the repository root)::

    python -m tests.support.kafka fetch-kafka      # warm the jar cache (CI does this)
    python -m tests.support.kafka tansu|kafka      # run one, print its bootstrap, Ctrl-C stops it
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from pipeline.runtime.brokers import BrokerError, BrokerLauncher, EmbeddedTansu, free_port

__all__ = [
    "KAFKA_VERSION",
    "LOG4J_VERSION",
    "ApacheKafka",
    "fetch_kafka_jars",
    "kafka_cache_dir",
    "start_broker",
    "main",
]

#: Apache Kafka release that :class:`ApacheKafka` runs: the newest 4.1 patch. Kafka 4 removed
#: old protocol versions (KIP-896), but aiokafka 0.14 and faust-streaming 0.15.3 only use newer
#: ones (Metadata v5, Produce v7, Fetch v11, JoinGroup v5, OffsetCommit/Fetch v3,
#: CreateTopics v3, FindCoordinator v1, ...): the integration tests pass on it unchanged.
KAFKA_VERSION = "4.1.2"
#: log4j2 backend for it (Kafka 4 logs through slf4j; log4j2 is its own choice of backend).
LOG4J_VERSION = "2.25.3"
#: slf4j API pinned next to ``log4j-slf4j2-impl`` (Kafka itself pulls 1.7.x, which cannot
#: find an slf4j 2 provider and would silently log nothing).
SLF4J_VERSION = "2.0.17"

_MARKER = ".complete"


# --- Apache Kafka -------------------------------------------------------------------------------

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>flowmon</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>{slf4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

# Console only (the launcher sends it to kafka.log): warnings, plus the start/stop lines.
_LOG4J2 = """status = warn
shutdownHook = disable
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
"""


def kafka_cache_dir(version: str = KAFKA_VERSION) -> Path:
    """``$FLOWMON_CACHE_DIR/kafka-<version>``, default ``~/.cache/flowmon/kafka-<version>``."""
    root = os.environ.get("FLOWMON_CACHE_DIR") or Path.home() / ".cache" / "flowmon"
    return Path(root).expanduser() / f"kafka-{version}"


def fetch_kafka_jars(version: str = KAFKA_VERSION, cache_dir: Path | None = None) -> Path:
    """Copy the Kafka broker's runtime jars from Maven Central into ``cache_dir/lib``; return it.

    Skips ``mvn`` when a marker from an earlier complete run is there. Needs ``mvn`` on PATH.
    Safe to call from several processes at once (a lock file serialises them).
    """
    cache = Path(cache_dir) if cache_dir else kafka_cache_dir(version)
    lib = cache / "lib"
    marker = cache / _MARKER

    def complete() -> bool:
        return marker.is_file() and (lib / f"kafka_2.13-{version}.jar").is_file()

    if complete():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("mvn not found on PATH: it is needed once to fetch the Kafka jars")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not complete():
            _run_mvn(mvn, cache, version)
    return lib


def _run_mvn(mvn: str, cache: Path, version: str) -> None:
    lib = cache / "lib"
    (cache / "pom.xml").write_text(_POM.format(kafka=version, log4j=LOG4J_VERSION, slf4j=SLF4J_VERSION))
    tmp = cache / "lib.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [mvn, "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={tmp.name}"]
    r = subprocess.run(cmd, cwd=cache, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if r.returncode != 0:
        raise BrokerError(f"mvn failed ({r.returncode}) in {cache}:\n{(r.stdout + r.stderr)[-4000:]}")
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    (cache / _MARKER).write_text("".join(f"{p.name}\n" for p in sorted(lib.glob("*.jar"))))


def _cluster_id() -> str:
    """A Kafka cluster id: URL-safe base64 of a random UUID, as ``kafka-storage random-uuid`` makes."""
    while True:
        s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not s.startswith("-"):
            return s


class ApacheKafka(BrokerLauncher):
    """One Apache Kafka KRaft node (``process.roles=broker,controller``) on loopback.

    ``workdir`` keeps ``server.properties``, ``log4j2.properties``, the data (``data/``,
    formatted once, so topics survive a restart of the same workdir) and ``kafka.log``.
    Listeners: PLAINTEXT on ``port`` (0 = free port) and CONTROLLER on another free port,
    both chosen again at each start (static quorum voters, so ports may change).
    Internal topics have replication factor 1, ``group.initial.rebalance.delay.ms=0``,
    ``group.min.session.timeout.ms=1000`` (short sessions allowed), topics are auto-created
    with 1 partition. ``extra_properties`` override or add ``server.properties`` entries.
    """

    kind = "kafka"
    start_timeout = 90.0
    stop_timeout = 30.0

    def __init__(
        self,
        workdir: Path,
        port: int = 0,
        version: str = KAFKA_VERSION,
        cache_dir: Path | None = None,
        heap: str = "768m",
        java: str | None = None,
        extra_properties: dict[str, str] | None = None,
    ) -> None:
        super().__init__(workdir, port)
        self.version = version
        self.cache_dir = cache_dir
        self.heap = heap
        java_home = os.environ.get("JAVA_HOME")
        self.java = java or (str(Path(java_home) / "bin" / "java") if java_home else "java")
        self.extra_properties = dict(extra_properties or {})
        self.lib: Path | None = None

    def _properties(self, port: int, cport: int) -> dict[str, str]:
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{cport}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",  # tests use short sessions (default min 6 s)
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "min.insync.replicas": "1",
            **self.extra_properties,
        }

    def _prepare(self) -> None:
        if shutil.which(self.java) is None:
            raise BrokerError(f"no Java runtime at {self.java!r} (Kafka {self.version} needs Java 17+)")
        self.lib = fetch_kafka_jars(self.version, self.cache_dir)
        props = self._properties(self._port_in_use, free_port())
        conf = self.workdir / "server.properties"
        conf.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.workdir / "log4j2.properties").write_text(_LOG4J2)
        meta = self.workdir / "data" / "meta.properties"
        if not meta.is_file():
            cmd = self._java_cmd("kafka.tools.StorageTool") + [
                "format", "-t", _cluster_id(), "-c", str(conf), "--ignore-formatted",
            ]  # fmt: skip
            r = subprocess.run(cmd, cwd=self.workdir, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
            if r.returncode != 0:
                raise BrokerError(f"kafka storage format failed ({r.returncode}):\n{(r.stdout + r.stderr)[-4000:]}")
        props = dict(line.split("=", 1) for line in meta.read_text().splitlines() if "=" in line)
        self.cluster_id = props.get("cluster.id")

    def _java_cmd(self, main: str) -> list[str]:
        assert self.lib is not None
        return [
            self.java,
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp",
            f"{self.lib}/*",
            main,
        ]

    def _command(self) -> list[str]:
        return self._java_cmd("kafka.Kafka") + [str(self.workdir / "server.properties")]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        for k in ("KAFKA_OPTS", "KAFKA_HEAP_OPTS", "JAVA_TOOL_OPTIONS", "CLASSPATH"):
            env.pop(k, None)
        return env


# --- factory & CLI ---------------------------------------------------------------------------------


def start_broker(kind: str, workdir: Path) -> BrokerLauncher:
    """Start a broker of ``kind`` ("tansu" or "kafka") with its files under ``workdir``; return it started."""
    launchers: dict[str, type[BrokerLauncher]] = {"tansu": EmbeddedTansu, "kafka": ApacheKafka}
    try:
        cls = launchers[kind]
    except KeyError:
        raise ValueError(f"unknown broker kind {kind!r}; expected one of {sorted(launchers)}") from None
    return cls(Path(workdir)).start()


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.support.kafka {fetch-kafka,tansu,kafka}``."""
    ap = argparse.ArgumentParser(prog="python -m tests.support.kafka", description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["fetch-kafka", "tansu", "kafka"])
    ap.add_argument("--workdir", type=Path, help="broker files and log (default: a new temp dir)")
    ap.add_argument("--port", type=int, default=0, help="listener port (default: a free one)")
    ap.add_argument("--version", default=KAFKA_VERSION, help="Kafka version for fetch-kafka/kafka")
    a = ap.parse_args(argv)
    if a.what == "fetch-kafka":
        print(fetch_kafka_jars(a.version))
        return 0
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix=f"flowmon-{a.what}-"))
    b: BrokerLauncher = EmbeddedTansu(workdir, a.port) if a.what == "tansu" else ApacheKafka(workdir, a.port, a.version)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the broker on SIGTERM too
    with b:
        print(b.bootstrap, flush=True)
        print(f"# {a.what} ready in {b.startup_s:.2f}s, log {b.log_path}; Ctrl-C stops it", file=sys.stderr, flush=True)
        try:
            while b.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
    print(f"# {a.what} exited on its own; log {b.log_path}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
