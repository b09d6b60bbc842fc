"""Shared pieces of the benchmarks: brokers, worker subprocesses, /proc readings, metrics scraping.

Nothing here is imported by the pipeline; it drives the pipeline the way
``tests/integration/harness.py`` does (workers as subprocesses on a real broker, one
topic prefix and app id per run).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from pipeline.runtime.brokers import BrokerLauncher, free_port
from tests.support.helpers import log_time, unique_name
from tests.support.kafka import start_broker

__all__ = [
    "REPO",
    "CpuMeter",
    "Worker",
    "GroupOffsets",
    "proc_cpu_s",
    "proc_status_kb",
    "scrape_metrics",
    "start_broker",
    "unique_name",
]

REPO = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")


# --- /proc ------------------------------------------------------------------------------------
def proc_cpu_s(pid: int, task: int | None = None) -> float:
    """utime+stime of a process (all its threads), or of one thread ``task``, in seconds."""
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    try:
        with open(path) as fh:
            data = fh.read()
    except OSError:
        return float("nan")
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def proc_status_kb(pid: int) -> dict[str, int]:
    """The ``Vm*``/``Rss*`` lines of /proc/PID/status, in kB."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("Vm", "Rss")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def _busy_s() -> float:
    with open("/proc/stat") as fh:
        f = fh.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


class CpuMeter:
    """CPU used on the whole machine over an interval, and how much of it was not ours.

    ``ours`` are pids whose CPU we account for (worker, broker, raw consumer); this
    process's own CPU is counted as ours too. ``other_cores`` = CPU of everything else
    (other sessions' tests, ...) divided by wall time: the contention the figures saw.
    """

    def __init__(self, *pids: int) -> None:
        self.pids = [p for p in pids if p]
        self.t0 = time.perf_counter()
        self.busy0 = _busy_s()
        self.ours0 = self._ours()

    def _ours(self) -> float:
        own = sum(os.times()[:4])
        return own + sum(x for x in (proc_cpu_s(p) for p in self.pids) if x == x)

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        busy = _busy_s() - self.busy0
        ours = self._ours() - self.ours0
        return {"wall_s": wall, "busy_cores": busy / wall if wall else 0.0,
                "other_cores": max(busy - ours, 0.0) / wall if wall else 0.0}


# --- metrics ------------------------------------------------------------------------------------
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def _metrics_text(port: int, timeout: float) -> str | None:
    """The Prometheus text at 127.0.0.1:port/metrics; None if down."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            return r.read().decode()
    except OSError:
        return None


def scrape_metrics(port: int, timeout: float = 1.0) -> dict[str, float] | None:
    """Prometheus text from 127.0.0.1:port/metrics -> {name: value summed over labels}; None if down."""
    if (text := _metrics_text(port, timeout)) is None:
        return None
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def scrape_histogram(port: int, name: str, timeout: float = 1.0) -> dict[float, float] | None:
    """A Prometheus histogram's cumulative buckets from 127.0.0.1:port/metrics: ``{le: count}`` (``inf`` last).

    >>> scrape_histogram(1, "x", timeout=0.1) is None   # nothing listens there
    True
    """
    if (text := _metrics_text(port, timeout)) is None:
        return None
    out: dict[float, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and m.group(1) == f"{name}_bucket" and (le := re.search(r'le="([^"]+)"', m.group(2) or "")):
            out[float(le.group(1))] = out.get(float(le.group(1)), 0.0) + float(m.group(3))
    return dict(sorted(out.items()))


def late_wakes(buckets: dict[float, float], over_s: float) -> tuple[int, float]:
    """From cumulative ``{le: count}``: how many observations exceeded ``over_s`` (a bucket bound), and the
    upper bound of the highest bucket holding one (``0.0``: none observed).

    >>> late_wakes({0.1: 5, 0.5: 7, 1.0: 7, 2.0: 8, float("inf"): 8}, 0.5)
    (1, 2.0)
    """
    total = max(buckets.values(), default=0.0)
    worst, prev = 0.0, 0.0
    for le, n in buckets.items():
        if n > prev:
            worst = le
        prev = n
    return int(total - buckets.get(over_s, total)), worst


# --- Kafka offsets -------------------------------------------------------------------------------
class GroupOffsets:
    """Committed offsets of a consumer group, read by a consumer of that group that never joins it.

    (Not ``AIOKafkaAdminClient.list_consumer_group_offsets``: against Tansu 0.6 its
    OffsetFetch answer does not decode in aiokafka 0.14, "unpack requires a buffer of 4 bytes".)
    """

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]

    async def __aenter__(self) -> GroupOffsets:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def committed(self) -> dict[int, int]:
        """Partition -> committed offset (partitions with nothing committed are left out)."""
        out = {}
        for tp in self.tps:
            off = await self.consumer.committed(tp)
            if off is not None and off >= 0:
                out[tp.partition] = off
        return out


# --- worker subprocess ------------------------------------------------------------------------------


class Worker:
    """One ``flowmon worker`` subprocess (optionally under pyinstrument), logging to ``log_path``."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str = "worker",
                 profile_to: Path | None = None, cwd: Path = REPO, memray_to: Path | None = None) -> None:
        self.log_path = workdir / f"{name}.log"
        self.profile_to = profile_to
        cmd = [sys.executable]
        if profile_to is not None:
            cmd += ["-m", "pyinstrument", "-r", "pyisession", "-o", str(profile_to)]
        elif memray_to is not None:  # every allocation and its stack (benchmarks.rss --memray)
            cmd += ["-m", "memray", "run", "-f", "-o", str(memray_to)]
        cmd += ["-m", "pipeline.cli", "worker", "--loglevel", "info"]  # a module before the restructure, a package since
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - the worker writes it until it exits
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.started = time.time()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def main_thread_cpu_s(self) -> float:
        return proc_cpu_s(self.pid, self.pid)

    def log_time(self, needle: str) -> float | None:
        """Unix time of the first log record whose line holds ``needle`` (its asctime, local clock)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return None
        found = log_time(text, needle)
        return found[0].timestamp() if found else None

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait (a profiled worker writes its profile on the way out), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def worker_env(bootstrap: str, prefix: str, workdir: Path, *, roles: str, partitions: int,
               topology: Path | None, metrics_port: int | None = None, **extra: str) -> dict[str, str]:
    """Environment of one benchmark worker: harness.py's settings, with fast group joins."""
    env = dict(os.environ, FLOWMON_BROKER=bootstrap, FLOWMON_TOPIC_PREFIX=prefix, FLOWMON_APP_ID=prefix,
               FLOWMON_PARTITIONS=str(partitions), FLOWMON_WINDOW_S="600", FLOWMON_DATA_DIR=str(workdir),
               FLOWMON_CLICKHOUSE_DSN=f"chdb://{workdir / 'chdb'}", FLOWMON_ROLES=roles,
               FLOWMON_SESSION_TIMEOUT_S="4", FLOWMON_REBALANCE_TIMEOUT_S="4", FLOWMON_HEARTBEAT_S="1",
               FLOWMON_SOURCE_IDLE_S="2", FLOWMON_METRICS_PORT=str(metrics_port or free_port()))
    if topology is not None:
        env["FLOWMON_TOPOLOGY"] = str(topology)
    env.update(extra)
    return env


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def broker(kind: str, workdir: Path) -> BrokerLauncher:
    """Start a Tansu or Apache Kafka broker under ``workdir`` (tests.support.kafka)."""
    return start_broker(kind, workdir)
