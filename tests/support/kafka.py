"""Apache Kafka for the tests and benchmarks: one KRaft node on loopback, from jars fetched with Maven.

:class:`ApacheKafka` runs one KRaft node (broker+controller) of Apache Kafka
:data:`KAFKA_VERSION` from jars that :func:`fetch_kafka_jars` copies from Maven Central with
``mvn`` into a cache (``$FLOWMON_CACHE_DIR`` or ``~/.cache/flowmon``). Needs Java 17+. It is a
:class:`pipeline.runtime.brokers.BrokerLauncher`, like the embedded Tansu broker.

Command line (from the repository root)::

    python -m tests.support.kafka fetch-kafka      # warm the jar cache (CI does this)
    python -m tests.support.kafka tansu|kafka      # run one, print its bootstrap, Ctrl-C stops it

:class:`SecureKafka` is the same node with one client listener, SASL_SSL (PLAIN, SCRAM-SHA-256,
SCRAM-SHA-512; TLS client certificates required), the StandardAuthorizer (ACLs; ``admin`` is
the only super user) and certificates made for it by :func:`make_certs` (``openssl``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.runtime.brokers import BrokerError, BrokerLauncher, EmbeddedTansu, free_port

__all__ = [
    "KAFKA_VERSION",
    "LOG4J_VERSION",
    "ApacheKafka",
    "SecureKafka",
    "Certs",
    "make_certs",
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


# --- SASL_SSL + ACLs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    """PEM files :func:`make_certs` wrote: the CA, the broker's key+chain (its PEM keystore; names
    127.0.0.1 and localhost), a client certificate and its key (both signed by the CA), and the
    client's key+chain in one file (the Java admin tool's PEM keystore)."""

    ca: Path
    broker_keystore: Path
    client_cert: Path
    client_key: Path
    client_keystore: Path


def make_certs(directory: Path) -> Certs:
    """A throw-away CA, a broker certificate for 127.0.0.1/localhost and a client certificate, made
    with ``openssl`` in ``directory`` (kept if already there). Keys are unencrypted PKCS#8, as a Kafka
    PEM keystore without ``ssl.key.password`` takes them."""
    d = Path(directory)
    certs = Certs(d / "ca.pem", d / "broker-keystore.pem", d / "client.pem", d / "client.key",
                  d / "client-keystore.pem")
    if all(p.is_file() for p in (certs.ca, certs.broker_keystore, certs.client_cert, certs.client_key,
                                 certs.client_keystore)):
        return certs
    d.mkdir(parents=True, exist_ok=True)
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BrokerError("openssl not found on PATH: it makes the test certificates")

    def run(*args: str) -> None:
        r = subprocess.run([openssl, *args], cwd=d, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise BrokerError(f"openssl {' '.join(args[:2])} failed:\n{r.stderr[-2000:]}")

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "3",
        "-subj", "/CN=flowmon test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, cn, san in (("broker", "127.0.0.1", "IP:127.0.0.1,DNS:localhost"), ("client", "flowmon-client", None)):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        ext = d / f"{name}.ext"
        ext.write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"
                       + (f"subjectAltName={san}\n" if san else ""))
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "3", "-extfile", ext.name)
    ca = certs.ca.read_text()
    certs.broker_keystore.write_text((d / "broker.key").read_text() + (d / "broker.pem").read_text() + ca)
    certs.client_keystore.write_text(certs.client_key.read_text() + certs.client_cert.read_text() + ca)
    return certs


# Kafka's own Admin client (users, ACLs), run as a single-file Java program from the broker's jars:
# the jars have no kafka-acls tool, and aiokafka has no ACL or SCRAM-user API.
_ADMIN_JAVA = """
import java.nio.file.*;
import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.acl.*;
import org.apache.kafka.common.resource.*;

public class FlowmonKafkaAdmin {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (var r = Files.newBufferedReader(Path.of(args[0]))) { props.load(r); }
        List<UserScramCredentialAlteration> users = new ArrayList<>();
        List<AclBinding> acls = new ArrayList<>();
        for (String line : Files.readAllLines(Path.of(args[1]))) {
            String[] f = line.trim().split("\\\\s+");
            if (f[0].equals("scram")) {  // scram MECHANISM USER PASSWORD
                users.add(new UserScramCredentialUpsertion(f[2],
                    new ScramCredentialInfo(ScramMechanism.fromMechanismName(f[1]), 4096), f[3]));
            } else if (f[0].equals("acl")) {  // acl PRINCIPAL RESOURCE_TYPE PATTERN_TYPE NAME OPERATION
                acls.add(new AclBinding(
                    new ResourcePattern(ResourceType.fromString(f[2]), f[4], PatternType.fromString(f[3])),
                    new AccessControlEntry(f[1], "*", AclOperation.fromString(f[5]), AclPermissionType.ALLOW)));
            }
        }
        try (Admin admin = Admin.create(props)) {
            for (var u : users) admin.alterUserScramCredentials(List.of(u)).all().get();  // one per request
            if (!acls.isEmpty()) admin.createAcls(acls).all().get();
        }
    }
}
"""


class SecureKafka(ApacheKafka):
    """One Apache Kafka KRaft node whose only client listener is SASL_SSL, with ACLs.

    * TLS: certificates from :func:`make_certs` (``workdir/certs``), PEM key- and truststores;
      clients must present a certificate signed by the test CA (``ssl.client.auth=required``).
    * SASL: PLAIN (users ``admin`` and ``plain_users``, from the JAAS config) and SCRAM-SHA-256/512
      (users added with :meth:`add_scram_users` once it runs).
    * ACLs: ``StandardAuthorizer``, ``super.users=User:admin`` (also the broker's own principal on
      its SASL_SSL and CONTROLLER listeners), nothing allowed without an ACL (:meth:`grant`).

    :meth:`settings` gives the ``Settings`` fields a flowmon client needs to log in as a user,
    :meth:`env` the same as ``FLOWMON_*`` variables.
    """

    kind = "kafka-sasl"
    ADMIN = "admin"

    def __init__(self, workdir: Path, port: int = 0, plain_users: dict[str, str] | None = None, **kw) -> None:
        super().__init__(workdir, port, **kw)
        self.admin_password = uuid.uuid4().hex
        self.plain_users = dict(plain_users or {})
        self.certs: Certs | None = None
        self._admin_jaas = ""

    def _properties(self, port: int, cport: int) -> dict[str, str]:
        assert self.certs is not None
        plain = "org.apache.kafka.common.security.plain.PlainLoginModule required"
        users = " ".join(f'user_{u}="{p}"' for u, p in {self.ADMIN: self.admin_password, **self.plain_users}.items())
        me = f'username="{self.ADMIN}" password="{self.admin_password}"'
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        props = super()._properties(port, cport)
        props.update({
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": f"{plain} {me} {users};",
            "listener.name.sasl_ssl.plain.sasl.jaas.config": f"{plain} {me} {users};",
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.certs.broker_keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.certs.ca),
            "listener.name.sasl_ssl.ssl.client.auth": "required",  # (the broker-wide key skips SASL_SSL)
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{self.ADMIN}",
            "allow.everyone.if.no.acl.found": "false",
            "auto.create.topics.enable": "false",
            **self.extra_properties,
        })
        return props

    def _prepare(self) -> None:
        self.certs = make_certs(self.workdir / "certs")
        super()._prepare()

    def _wait_ready(self, port: int, deadline: float) -> None:
        """Ready once the admin user gets this cluster's id over SASL_SSL (a plaintext probe cannot)."""
        from aiokafka.errors import KafkaError

        from pipeline.runtime import kafka

        async def cluster_id() -> str | None:
            admin = kafka.admin(self.connection(self.ADMIN, self.admin_password, "PLAIN"), timeout_s=5)
            await admin.start()
            try:
                return (await admin.describe_cluster())["cluster_id"]
            finally:
                await admin.close()

        last: BaseException | None = None
        aiokafka_log = logging.getLogger("aiokafka")
        level = aiokafka_log.level
        aiokafka_log.setLevel(logging.CRITICAL)  # "Unable connect to" until the JVM listens
        try:
            while time.monotonic() < deadline:
                if self._proc is None or self._proc.poll() is not None:
                    raise BrokerError(f"{self.kind} exited before it was ready; log {self.log_path}:\n"
                                      f"{self.log_path.read_text(errors='replace')[-3000:]}")
                try:
                    got = asyncio.run(cluster_id())
                    if got != self.cluster_id:
                        raise BrokerError(f"{self.bootstrap} answers as cluster {got!r}, not ours ({self.cluster_id!r})")
                    return
                except (OSError, KafkaError, asyncio.TimeoutError) as e:
                    last = e
                time.sleep(0.3)
        finally:
            aiokafka_log.setLevel(level)
        raise BrokerError(f"{self.kind} not ready on {self.bootstrap} after {self.start_timeout:.0f}s ({last!r}); "
                          f"log {self.log_path}")

    # --- clients ------------------------------------------------------------------------------
    def settings(self, user: str, password: str, mechanism: str = "SCRAM-SHA-512") -> dict[str, object]:
        """``Settings`` fields for a flowmon client logging in as ``user`` (TLS with the client certificate)."""
        assert self.certs is not None
        return {"broker": self.bootstrap, "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": mechanism,
                "kafka_sasl_username": user, "kafka_sasl_password": password,
                "kafka_ssl_cafile": self.certs.ca, "kafka_ssl_certfile": self.certs.client_cert,
                "kafka_ssl_keyfile": self.certs.client_key}

    def env(self, user: str, password: str, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        """:meth:`settings` as ``FLOWMON_*`` environment variables."""
        return {f"FLOWMON_{k.upper()}": str(v) for k, v in self.settings(user, password, mechanism).items()}

    def connection(self, user: str, password: str, mechanism: str = "SCRAM-SHA-512"):
        """A :class:`pipeline.runtime.kafka.Connection` logged in as ``user``."""
        from pipeline.config import Settings
        from pipeline.runtime import kafka

        return kafka.connection(Settings(**self.settings(user, password, mechanism)))  # type: ignore[arg-type]

    # --- users and ACLs (Kafka's Admin client, as the super user) --------------------------------
    def authorize(self, users: dict[str, str] | None = None, acls: list[tuple[str, str, str, str]] | None = None,
                  mechanisms: tuple[str, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-512")) -> None:
        """In one run of Kafka's Admin client: SCRAM credentials (``mechanisms``) for each ``{user: password}``
        (passwords without blanks), then ALLOW ACLs ``(user, resource_type, name, operation)``, e.g.
        ``("agent", "topic", "t-reports-v1", "write")``; a name ending in ``*`` (not just ``*``) is a
        PREFIXED pattern."""
        spec = [f"scram {m} {u} {p}" for u, p in (users or {}).items() for m in mechanisms]
        for user, rtype, name, op in acls or []:
            prefixed = name.endswith("*") and name != "*"
            spec.append(f"acl User:{user} {rtype.upper()} {'PREFIXED' if prefixed else 'LITERAL'} "
                        f"{name[:-1] if prefixed else name} {op.upper()}")
        self._admin(spec)
        time.sleep(0.5)  # credentials and ACLs reach the broker through the metadata log

    def _admin(self, spec: list[str]) -> None:
        assert self.certs is not None and self.lib is not None
        tool = self.workdir / "FlowmonKafkaAdmin.java"
        tool.write_text(_ADMIN_JAVA)
        props = self.workdir / "admin-client.properties"
        props.write_text("\n".join([
            f"bootstrap.servers={self.bootstrap}",
            "security.protocol=SASL_SSL",
            "sasl.mechanism=PLAIN",
            "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{self.ADMIN}" password="{self.admin_password}";',
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.certs.ca}",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.certs.client_keystore}",
        ]) + "\n")
        spec_file = self.workdir / f"admin-{uuid.uuid4().hex[:8]}.txt"
        spec_file.write_text("\n".join(spec) + "\n")
        cmd = [self.java, "-Xmx256m", f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
               "-cp", f"{self.lib}/*", str(tool), str(props), str(spec_file)]
        r = subprocess.run(cmd, cwd=self.workdir, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           env=self._env(), check=False, timeout=120)
        spec_file.unlink(missing_ok=True)
        if r.returncode != 0:
            raise BrokerError(f"Kafka admin tool failed ({r.returncode}):\n{(r.stdout + r.stderr)[-4000:]}")


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
