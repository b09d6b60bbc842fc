"""A flowmon deployment for one test: real worker processes on a real broker, chdb behind the sink.

Each ``Deployment`` gets its own topic prefix, Faust app id (consumer groups) and data
directory, so tests never see each other's data. The sink process owns the chdb
directory; the test reads ClickHouse through that process's SQL endpoint (the same way
``flowmon sql`` does), so the test process never opens chdb itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from tests.support.helpers import log_time, unique_name
from pipeline.clickhouse.sqlserve import endpoint_client
from pipeline.config import Settings
from pipeline.runtime import kafka
from pipeline.runtime.produce import produce_reports
from pipeline.runtime.topics import Topics, ensure_topics

REPO = Path(__file__).resolve().parents[2]
COUNTERS = ("bytes_sent", "bytes_received", "retransmissions", "timeouts", "flows", "samples", "hosts")


class Deployment:
    """``conn``: how the test itself reaches the broker (a :class:`pipeline.runtime.kafka.Connection`,
    e.g. SASL_SSL; default: PLAINTEXT to ``bootstrap``); the workers get their security settings
    through ``env`` (``FLOWMON_KAFKA_*``)."""

    def __init__(self, bootstrap: str, workdir: Path, topology: Path | None = None, partitions: int = 4,
                 window_s: int = 600, conn: kafka.Connection | None = None, replication_factor: int = 1,
                 **env: str) -> None:
        self.bootstrap = bootstrap
        self.conn = conn or kafka.Connection(bootstrap)
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.prefix = unique_name("t")
        self.settings = Settings(topic_prefix=self.prefix, app_id=self.prefix, partitions=partitions,
                                 window_s=window_s, data_dir=workdir, replication_factor=replication_factor)
        self.topics = Topics.from_settings(self.settings)
        self.env = dict(os.environ, FLOWMON_BROKER=bootstrap, FLOWMON_TOPIC_PREFIX=self.prefix,
                        FLOWMON_APP_ID=self.prefix, FLOWMON_PARTITIONS=str(partitions),
                        FLOWMON_WINDOW_S=str(window_s), FLOWMON_DATA_DIR=str(workdir),
                        FLOWMON_REPLICATION_FACTOR=str(replication_factor),
                        FLOWMON_CLICKHOUSE_DSN=f"chdb://{workdir / 'chdb'}",
                        FLOWMON_SESSION_TIMEOUT_S="6", FLOWMON_REBALANCE_TIMEOUT_S="6",
                        FLOWMON_HEARTBEAT_S="1", FLOWMON_SOURCE_IDLE_S="2", FLOWMON_COMMIT_INTERVAL_S="0.5",
                        # a worker stuck in its stop (a paused one rejoining as the others leave) exits by then
                        FLOWMON_SHUTDOWN_GRACE_S="10")
        if topology is not None:
            self.env["FLOWMON_TOPOLOGY"] = str(topology)
        self.env.update(env)
        self.procs: list[subprocess.Popen] = []
        self._client = None
        self._killed: set[int] = set()
        asyncio.run(ensure_topics(self.conn, self.topics))

    # --- processes ------------------------------------------------------------------------
    def start(self, roles: str = "pipeline,sink", **env: str) -> subprocess.Popen:
        """Start a worker with these roles (``env``: more variables for this one)."""
        n = len(self.procs)
        log = open(self.workdir / f"worker-{n}.log", "wb")
        env = dict(self.env, FLOWMON_ROLES=roles, **env)
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.app", "worker", "--loglevel", "info"],
                                env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        self._killed.add(self.procs.index(proc))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def wait_exit(self, proc: subprocess.Popen, timeout: float) -> int | None:
        """Wait up to ``timeout`` for a worker this test expects to exit by itself: its status (None: still
        running). An exit seen here is not unexpected (:meth:`check_alive`)."""
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._killed.add(self.procs.index(proc))
        return rc

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs if p.returncode is None)

    def logs(self, tail: int | None = 4000) -> str:
        """The workers' logs, each cut to its last ``tail`` characters (for a failure message);
        ``tail=None`` for the whole text, to search in."""
        out = []
        for f in sorted(self.workdir.glob("worker-*.log")):
            text = f.read_text(errors="replace")
            out.append(f"--- {f.name}\n" + (text if tail is None else text[-tail:]))
        return "\n".join(out)

    #: What :meth:`timeline` keeps of a worker's log: group membership, partition hand-overs, restores, fencing.
    TIMELINE = re.compile(r"Joined group|assigned pairs|assigned reports|restored|ignored|no longer in the group|"
                          r"answered .* late|Revoking|OffsetCommit failed|wake|Heartbeat failed|skipped|late")

    def timeline(self, width: int = 220) -> str:
        """The workers' membership and hand-over events, merged in time order, one short line each: the
        story of a rebalance that a log tail cuts off (for a failure message)."""
        lines = []
        for f in sorted(self.workdir.glob("worker-*.log")):
            for ln in f.read_text(errors="replace").splitlines():
                m = re.match(r"\[\d{4}-\d\d-\d\d (\S+)\] \[\d+\] \[(\w+)\] (.*)", ln)
                if m and self.TIMELINE.search(m[3]) and "Timer " not in m[3]:
                    text = re.sub(r"with member_id \S+", "", m[3]).strip()
                    lines.append(f"{m[1]} w{f.stem[7:]} {m[2][0]} {text}"[:width])
        lines.sort()
        if len(lines) > 300:
            lines[50:-250] = [f"... {len(lines) - 300} lines ..."]
        return "\n".join(lines)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()

    # --- ClickHouse through the sink's SQL endpoint -----------------------------------------
    @property
    def client(self):
        if self._client is None:
            path = self.workdir / "sql-endpoint.json"
            end = time.time() + 90
            while not path.exists():
                if time.time() > end:
                    raise TimeoutError("the sink never published its SQL endpoint\n" + self.logs())
                time.sleep(0.2)
            info = json.loads(path.read_text())
            self._client = endpoint_client(info)
        return self._client

    def wait_windows(self, n: int, timeout: float = 240) -> int:
        """Wait until ``n`` distinct pair-windows have landed; returns the count seen."""
        end = time.time() + timeout
        got = 0
        while time.time() < end:
            self.check_alive()
            got = self.client.command("SELECT count() FROM flow_windows FINAL")
            if got >= n:
                return got
            time.sleep(0.5)
        return got

    def check_alive(self) -> None:
        """Fail with the worker logs if a worker this test did not kill has exited."""
        dead = [(i, p.returncode) for i, p in enumerate(self.procs)
                if p.poll() is not None and i not in self._killed]
        if dead:
            raise AssertionError(f"worker(s) exited unexpectedly (index, status): {dead}\n" + self.logs())

    def landed(self) -> dict[tuple[str, str, int], dict[str, int]]:
        rows = self.client.query(
            f"SELECT src_subnet, dst_subnet, toUnixTimestamp(window_start), {', '.join(COUNTERS)} "
            "FROM flow_windows FINAL").result_rows
        return {(r[0], r[1], int(r[2])): dict(zip(COUNTERS, map(int, r[3:]))) for r in rows}

    def deadletters(self) -> list[dict[str, Any]]:
        cols = ("reason", "field", "stage", "source_offset", "sample_index", "samples")
        rows = self.client.query(f"SELECT {', '.join(cols)} FROM deadletter FINAL").result_rows
        return [dict(zip(cols, r)) for r in rows]

    # --- Kafka --------------------------------------------------------------------------------
    def produce(self, reports: Iterable[Any], **options: Any):
        """Send ``reports`` with ``produce_reports`` (``options``: its keyword arguments, e.g. ``acks``)."""
        return asyncio.run(produce_reports(self.conn, self.topics.reports, reports, **options))

    def produce_raw(self, values: list[bytes]) -> None:
        """Send raw messages, in order, to partition 0 of the reports topic."""
        async def go():
            p = kafka.producer(self.conn, max_request_size=16 << 20)
            await p.start()
            try:
                for v in values:
                    await p.send_and_wait(self.topics.reports, v, partition=0)  # offsets = list indices
            finally:
                await p.stop()
        asyncio.run(go())

    def read_topic(self, topic: str, n: int, timeout: float = 60, key: str | None = None) -> list[dict]:
        """The first ``n`` JSON messages of ``topic`` (fewer after ``timeout``); with ``key``, read until
        ``n`` distinct values of that field have come (at-least-once: a replay repeats messages)."""
        def done(out: list[dict]) -> bool:
            return (len(out) if key is None else len({m.get(key) for m in out})) >= n

        async def go():
            c = kafka.consumer(self.conn, topic, auto_offset_reset="earliest")
            await c.start()
            out: list[dict] = []
            end = time.time() + timeout
            try:
                while not done(out) and time.time() < end:
                    for msgs in (await c.getmany(timeout_ms=500)).values():
                        out.extend(orjson.loads(m.value) for m in msgs)
            finally:
                await c.stop()
            return out
        return asyncio.run(go())


def log_gap(log: str, first: str, then: str) -> float:
    """Seconds from the first record of a worker's log that holds ``first`` to the next one after it that holds
    ``then`` (:func:`~tests.support.helpers.log_time`).

    >>> text = "[2026-12-04 23:35:04,606] [1] [INFO] a\\nx\\n[2026-12-04 23:35:05,616] [1] [INFO] b\\n"
    >>> log_gap(text, "] a", "] b")
    1.01
    """
    a = log_time(log, first)
    b = log_time(log, then, a[1]) if a else None
    assert a and b, f"no record holds {first!r}, or none after it holds {then!r}"
    return (b[0] - a[0]).total_seconds()


def compare(expected: dict, landed: dict) -> list[str]:
    """Human-readable differences between expected and landed totals (empty = exact)."""
    diffs = []
    for key in sorted(set(expected) | set(landed)):
        e, g = expected.get(key), landed.get(key)
        if e is None or g is None:
            diffs.append(f"{key}: expected {e}, landed {g}")
            continue
        bad = {c: (e[c], g[c]) for c in COUNTERS if e[c] != g[c]}
        if bad:
            diffs.append(f"{key}: {bad}")
    return diffs
