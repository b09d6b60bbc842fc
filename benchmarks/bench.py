"""Throughput of one flowmon worker against the raw consume+decode rate, on the same broker, side by side.

    python -m benchmarks.bench [--broker tansu|kafka|both] [--samples N] [--workload fleet|big|both]
                               [--repeat K] [--profile] [--json FILE] [--src DIR] [--compare SRC]
                               [--workers 1,2]

For each broker and workload (``fleet``: tests/data/fleet_1000.yaml, ~5 samples per
report; ``big``: benchmarks/scenarios/big_reports.yaml, 500 samples per report), one run:

1. generate the reports with the simulator (event time in the past) and produce them all
   to a fresh reports topic (unique topic prefix and app id per run);
2. **raw**: a separate process with a plain AIOKafkaConsumer reads every report and
   orjson-decodes it (``benchmarks.rawconsume``), then again pulling two numpy columns;
3. **worker**: one ``flowmon worker`` process (roles pipeline,sink; chdb) starts on the
   full backlog. The clock starts at the first report it processes (its
   ``flowmon_reports_total`` metric, polled every 0.1 s) and stops when ``count()`` of
   ``flow_windows FINAL`` (polled through the worker's SQL endpoint) reaches the number
   of windows the oracle expects. Ingest-only: until the reports topic's committed
   offsets (the ingest group, ``<app id>-ingest``, read by a non-joining member) reach the reports produced;
4. the ratio worker end-to-end / raw decode. The issue's goal: >= 0.5 and >= 100,000
   samples/s per worker process.

Also recorded: the worker's CPU seconds over the measured span (all threads, and the
main thread alone), and the CPU that processes other than ours used on the machine
meanwhile (other tests on the 2 cores): figures from a busy machine are lower bounds.
``--profile`` runs the worker under pyinstrument and prints where its main thread's time
went. Landed totals are checked: sum(samples) in ClickHouse must equal what was produced.

``--workers 1,2`` runs each measurement with one worker process and then with two in one
consumer group (the first also runs the sink; metrics and CPU are summed over both), and a
last table gives the scale-out ratio two/one per run, with the median.

``--compare SRC`` measures two source trees in one run: for each workload, on the same
broker, the worker from SRC ("before") and from this tree, or ``--src`` ("after"),
alternate (before, after, before, after, ... with ``--repeat``), and a last table gives
each pair's end-to-end rates and the ratio after/before (with the median over pairs).
Each worker runs with ``PYTHONPATH`` and working directory set to its tree, and a check
before it starts makes sure ``import pipeline`` there resolves inside that tree (not in
the virtualenv's editable install).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from pipeline.config import Settings
from pipeline.runtime.produce import produce_reports
from pipeline.sim.scenario import load_scenario
from pipeline.sim.simulator import Simulator
from pipeline.sim.totals import expected_totals
from pipeline.runtime.topics import Topics, ensure_topics

from ._common import REPO, CpuMeter, Worker, broker, GroupOffsets, late_wakes, proc_cpu_s, scrape_histogram, \
    scrape_metrics, unique_name, worker_env

HERE = Path(__file__).resolve().parent
WORKLOADS = {
    "fleet": REPO / "tests" / "data" / "fleet_1000.yaml",
    "big": HERE / "scenarios" / "big_reports.yaml",
}
GOAL_RATE = 100_000
GOAL_RATIO = 0.5

console = Console(stderr=False, width=None if sys.stdout.isatty() else 200)


# --- workloads ------------------------------------------------------------------------------------
@dataclass
class Workload:
    name: str
    scenario: Path
    reports: list[dict] = field(repr=False)
    samples: int
    expected_windows: int
    event_span_s: int
    gen_s: float
    core: dict = field(default_factory=dict)  # benchmarks.core result: the pure core's time, pairs messages

    @property
    def core_rate(self) -> float:
        return self.samples / self.core["total_s"] if self.core.get("total_s") else 0.0

    @property
    def partials(self) -> int:
        return int(self.core.get("partials", 0))

    @property
    def per_report(self) -> float:
        return self.samples / max(len(self.reports), 1)


def _chunks(report: dict, n: int) -> Iterator[dict]:
    s = report["samples"]
    if len(s) <= n:
        yield report
        return
    for i in range(0, len(s), n):
        yield dict(report, samples=s[i:i + n])


def make_workload(name: str, samples: int, seed: int | None = None) -> Workload:
    """Simulate whole intervals until ``samples`` samples; event time starts 48 h ago (an hour boundary).

    A scenario may say ``agents: SCOPE`` (only those instances' reports are kept) and
    ``max_report_samples: N`` (bigger reports are cut in pieces, as an agent does).
    """
    t0 = time.perf_counter()
    path = WORKLOADS[name]
    sc = load_scenario(path)
    start = (int(time.time()) // 3600 - 48) * 3600
    kw: dict[str, Any] = {"start": start}
    if seed is not None:
        kw["seed"] = seed
    sim = Simulator.from_scenario(sc, **kw)
    agents = set(sim.topology.members(str(sc.raw["agents"]))) if sc.raw.get("agents") else None
    cut = int(sc.raw.get("max_report_samples") or 10_000)
    reports: list[dict] = []
    n = 0
    last_start = None
    for r in sim.reports(48 * 3600):
        if n >= samples and r["start"] != last_start:
            break
        last_start = r["start"]
        if agents is not None and r["instance"] not in agents:
            continue
        for piece in _chunks(r, cut):
            reports.append(piece)
            n += len(piece["samples"])
    expected = expected_totals(reports, 600, sim.topology)
    span = reports[-1]["start"] + sim.interval_s - reports[0]["start"] if reports else 0
    return Workload(name, path, reports, n, len(expected), span, time.perf_counter() - t0)


# --- one run ---------------------------------------------------------------------------------------
@dataclass
class Result:
    broker: str
    workload: str
    run: int
    reports: int
    samples: int
    windows: int
    produce_rate: float = 0.0
    raw_rate: float = 0.0
    raw_cpu_rate: float = 0.0
    raw_numpy_rate: float = 0.0
    core_rate: float = 0.0  # the pure core in one process, no Kafka (benchmarks.core)
    startup_s: float = 0.0  # worker spawn -> first report processed
    ingest_s: float = 0.0  # first report -> reports lag 0 (committed offsets)
    ingest_metric_s: float = 0.0  # first report -> last report processed (metrics)
    aggregate_s: float = 0.0  # first report -> last partial applied to a window (metrics)
    emitted_s: float = 0.0  # first report -> last window emitted to the windows topic (metrics)
    e2e_s: float = 0.0  # first report -> all windows in ClickHouse
    ingest_rate: float = 0.0
    e2e_rate: float = 0.0
    worker_cpu_s: float = 0.0
    worker_main_cpu_s: float = 0.0
    worker_cpu_each: list[float] = field(default_factory=list)  # --workers: each process's CPU s, first (sink) first
    other_cores: float = 0.0
    broker_cores: float = float("nan")  # the broker's CPU over the end-to-end span, in cores (what the workers could not use)
    exact: bool | None = None
    deadletters: int = 0
    loop_late_1s: list[int] = field(default_factory=list)  # per worker: wakes of its loop's 0.1-s timer > 1 s late
    loop_worst_s: list[float] = field(default_factory=list)  # per worker: bound of the worst loop-lag bucket hit
    profiled: bool = False
    tree: str = ""  # --compare: "before" (SRC) or "after" (this tree / --src)
    workers: int = 1  # worker processes in the group (--workers): the first also runs the sink
    error: str | None = None
    profile_text: str | None = field(default=None, repr=False)

    @property
    def ratio(self) -> float:
        return self.e2e_rate / self.raw_rate if self.raw_rate else 0.0

    @property
    def tail_s(self) -> float:
        return self.e2e_s - self.ingest_metric_s

    @property
    def goal(self) -> bool:
        return self.ratio >= GOAL_RATIO and self.e2e_rate >= GOAL_RATE


class Status:
    """What the live display shows; updated from the measuring code."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.title = ""
        self.phase = ""
        self.done = 0.0
        self.total = 1.0
        self.lines: dict[str, str] = {}
        self.results: list[Result] = []

    def set(self, phase: str, done: float = 0.0, total: float = 1.0, **lines: str) -> None:
        with self.lock:
            self.phase, self.done, self.total = phase, done, max(total, 1.0)
            self.lines = lines

    def __rich__(self) -> Group:
        with self.lock:
            head = Table.grid(padding=(0, 1))
            head.add_row(Text(self.title, style="bold cyan"), Text(self.phase, style="yellow"))
            head.add_row(ProgressBar(total=self.total, completed=min(self.done, self.total), width=40),
                         Text(f"{self.done:,.0f} / {self.total:,.0f}"))
            for k, v in self.lines.items():
                head.add_row(Text(k, style="dim"), Text(v))
            parts: list[Any] = [head]
            if self.results:
                parts.append(results_table(self.results))
            return Group(*parts)


def _raw(bootstrap: str, topic: str, reports: int, numpy: bool, status: Status, label: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.rawconsume", bootstrap, topic, str(reports)]
    if numpy:
        cmd.append("--numpy")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    meter = CpuMeter(proc.pid)
    last: dict = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        msg = json.loads(line)
        if "progress" in msg:
            status.set(label, msg["progress"], reports)
        else:
            last = msg
    proc.wait()
    if proc.returncode != 0 or not last:
        raise RuntimeError(f"raw consumer failed ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
    last["other_cores"] = meter.stop()["other_cores"]
    return last


def _sum_metrics(ms: list[dict | None]) -> dict | None:
    """Several workers' metrics, summed by name (None until every worker answers).

    >>> _sum_metrics([{"a": 1.0}, {"a": 2.0, "b": 1.0}]), _sum_metrics([{"a": 1.0}, None])
    ({'a': 3.0, 'b': 1.0}, None)
    """
    if any(m is None for m in ms):
        return None
    out: dict = {}
    for m in ms:
        for k, v in m.items():
            out[k] = out.get(k, 0) + v
    return out


async def _watch_worker(workers: list[Worker], bootstrap: str, topics: Topics, app_id: str, metrics_ports: list[int],
                        wl: Workload, res: Result, status: Status, timeout_s: float, broker_pid: int | None) -> None:
    """Poll the workers' metrics (summed), the group's committed offsets and ClickHouse until all windows
    landed. The first worker runs the sink (its SQL endpoint answers); CPU is summed over all of them."""
    w = workers[0]
    from pipeline.clickhouse.sqlserve import endpoint_client

    n_reports = len(wl.reports)
    # the group that reads the reports: <app id>-ingest, or <app id> in a tree from before the ingest reader
    groups = [GroupOffsets(bootstrap, g, topics.reports, topics.partitions) for g in (f"{app_id}-ingest", app_id)]
    for offsets in groups:
        await offsets.__aenter__()
    client = None
    endpoint = Path(w.log_path.parent) / "sql-endpoint.json"
    t_spawn = w.started
    t_first = t_ingested = t_lag0 = t_landed = t_aggregated = t_emitted = None
    main_first = 0.0
    broker_first = float("nan")
    cpu_each: list[float] = []
    meter: CpuMeter | None = None
    got = landed = committed = 0
    next_lag = next_ch = 0.0
    deadline = time.time() + timeout_s
    loop = asyncio.get_running_loop()
    try:
        while True:
            now = time.time()
            if now > deadline:
                raise TimeoutError(f"not done after {timeout_s:.0f} s: {got:,}/{n_reports:,} reports processed, "
                                   f"committed {committed:,}, {landed}/{wl.expected_windows} windows landed")
            for x in workers:
                if not x.alive():
                    raise RuntimeError(f"worker {x.log_path.name} exited with {x.proc.returncode}:\n{x.tail()}")
            m = _sum_metrics([await loop.run_in_executor(None, scrape_metrics, port) for port in metrics_ports])
            stamp = time.time()
            if m is not None:
                got = int(m.get("flowmon_reports_total", 0))
                if got and t_first is None:
                    t_first = stamp
                    cpu_each = [x.cpu_s() for x in workers]
                    main_first = sum(x.main_thread_cpu_s() for x in workers)
                    meter = CpuMeter(w.pid, broker_pid or 0, *[x.pid for x in workers[1:]])
                    broker_first = proc_cpu_s(broker_pid) if broker_pid else float("nan")
                if got >= n_reports and t_ingested is None:
                    t_ingested = stamp
                if wl.partials and t_aggregated is None and m.get("flowmon_partials_applied_total", 0) >= wl.partials:
                    t_aggregated = stamp
                if t_emitted is None and m.get("flowmon_windows_emitted_total", 0) >= wl.expected_windows:
                    t_emitted = stamp
            if t_first is not None and t_lag0 is None and stamp >= next_lag:
                next_lag = stamp + 0.2
                try:
                    committed = max([sum((await offsets.committed()).values()) for offsets in groups])
                except Exception:  # coordinator moving, group not there yet: next time
                    pass
                if committed >= n_reports:
                    t_lag0 = time.time()
            if client is None and endpoint.exists():
                try:
                    client = endpoint_client(json.loads(endpoint.read_text()))
                except (ValueError, KeyError, OSError):
                    client = None
            if client is not None and t_ingested is not None and stamp >= next_ch:
                next_ch = stamp + 0.25
                landed = int(await loop.run_in_executor(
                    None, client.command, "SELECT count() FROM flow_windows FINAL"))
                if landed >= wl.expected_windows:
                    t_landed = time.time()
            lines = {"reports processed": f"{got:,} / {n_reports:,}",
                     "reports committed": f"{committed:,}",
                     "windows landed": f"{landed:,} / {wl.expected_windows:,}",
                     "elapsed": f"{(stamp - (t_first or t_spawn)):.1f} s "
                                f"({'since first report' if t_first else 'starting up'})"}
            status.set("worker", got if t_ingested is None else n_reports + landed,
                       n_reports + wl.expected_windows, **lines)
            # the emitted counter moves once the batch's deliveries are all confirmed, and the sink may land the
            # windows before that: wait for it too, or its column reads nan
            if t_landed is not None and t_lag0 is not None and t_emitted is not None:
                break
            await asyncio.sleep(0.1)
        assert t_first is not None and t_ingested is not None and meter is not None
        res.startup_s = t_first - t_spawn
        res.ingest_metric_s = t_ingested - t_first
        res.ingest_s = t_lag0 - t_first
        res.aggregate_s = (t_aggregated - t_first) if t_aggregated else float("nan")
        res.emitted_s = (t_emitted - t_first) if t_emitted else float("nan")
        res.e2e_s = t_landed - t_first
        res.ingest_rate = wl.samples / res.ingest_s if res.ingest_s > 0 else 0.0
        res.e2e_rate = wl.samples / res.e2e_s if res.e2e_s > 0 else 0.0
        res.worker_cpu_each = [x.cpu_s() - c0 for x, c0 in zip(workers, cpu_each)]
        res.worker_cpu_s = sum(res.worker_cpu_each)
        res.worker_main_cpu_s = sum(x.main_thread_cpu_s() for x in workers) - main_first
        res.other_cores = meter.stop()["other_cores"]
        if broker_pid:
            res.broker_cores = (proc_cpu_s(broker_pid) - broker_first) / res.e2e_s if res.e2e_s > 0 else float("nan")
        # how late the event loop woke its 0.1-s timer (runtime.loopwatch), per worker: the stalls that risk a session
        for port in metrics_ports:
            h = await loop.run_in_executor(None, scrape_histogram, port, "flowmon_loop_lag_seconds")
            if h:
                late, worst = late_wakes(h, 1.0)
                res.loop_late_1s.append(late)
                res.loop_worst_s.append(worst)
        assert client is not None
        total = client.command("SELECT sum(samples) FROM flow_windows FINAL")
        res.exact = int(total) == wl.samples
        res.deadletters = int(client.command("SELECT count() FROM deadletter FINAL"))
    finally:
        for offsets in groups:
            await offsets.__aexit__()


_CHECKED_TREES: dict[Path, str] = {}


def check_tree(env: dict[str, str], src: Path) -> str:
    """Where ``pipeline`` is imported from by a process started like the worker (env, cwd = *src*).

    Raises unless it is inside *src*: the virtualenv's editable install points at one
    checkout, and a worker silently running that one would compare a tree with itself.
    """
    if src not in _CHECKED_TREES:
        code = "import pipeline, pipeline.cli; print(pipeline.__file__, pipeline.cli.__file__)"
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=src, capture_output=True, text=True,
                             check=False)
        paths = out.stdout.split()
        if out.returncode != 0 or len(paths) != 2 or not all(Path(p).resolve().is_relative_to(src) for p in paths):
            raise RuntimeError(f"a worker started in {src} would not import its code: {out.stdout or out.stderr}")
        _CHECKED_TREES[src] = paths[1]
        console.log(f"worker from {src}: imports {paths[1]}")
    return _CHECKED_TREES[src]


def run_one(kind: str, bootstrap: str, broker_pid: int | None, wl: Workload, run: int, partitions: int,
            profile: bool, status: Status, workroot: Path, timeout_s: float, src: Path = REPO,
            tree: str = "", workers: int = 1) -> Result:
    res = Result(kind, wl.name, run, len(wl.reports), wl.samples, wl.expected_windows, profiled=profile,
                 core_rate=wl.core_rate, tree=tree, workers=workers)
    prefix = unique_name("bench")
    workdir = workroot / prefix
    workdir.mkdir(parents=True)
    topics = Topics.from_settings(Settings(topic_prefix=prefix, app_id=prefix, partitions=partitions))
    asyncio.run(ensure_topics(bootstrap, topics))
    status.title = (f"{kind} · {wl.name} ({wl.per_report:.0f} samples/report) · run {run}" + (f" · {tree}" if tree else "")
                    + (f" · {workers} workers" if workers > 1 else ""))

    # 1. produce everything first
    status.set("produce", 0, len(wl.reports))
    stats = asyncio.run(produce_reports(bootstrap, topics.reports, wl.reports,
                                        progress=lambda s: status.set("produce", s.reports, len(wl.reports)),
                                        progress_every=2000))
    res.produce_rate = stats.samples_per_s
    # (no end_offsets() check here: Tansu 0.6's ListOffsets answers base offset of the last batch + 1,
    # not the log end; the lag below is measured against the number of reports produced instead)
    console.log(f"{status.title}: produced {stats}")

    # 2. raw consume + decode (a fresh process each)
    raw = _raw(bootstrap, topics.reports, len(wl.reports), False, status, "raw consume + orjson")
    res.raw_rate = raw["samples"] / raw["seconds"]
    res.raw_cpu_rate = raw["samples"] / raw["cpu_s"] if raw["cpu_s"] else 0.0
    rawn = _raw(bootstrap, topics.reports, len(wl.reports), True, status, "raw consume + orjson + numpy")
    res.raw_numpy_rate = rawn["samples"] / rawn["seconds"]
    console.log(f"{status.title}: raw {res.raw_rate:,.0f} samples/s ({raw['seconds']:.2f} s, "
                f"{raw['cpu_s']:.2f} CPU s, other load {raw['other_cores']:.2f} cores), "
                f"with numpy {res.raw_numpy_rate:,.0f} samples/s")

    # 3. one worker (or --workers N in one group) on the backlog; the first also runs the sink
    ports = [_free_port() for _ in range(workers)]
    profile_to = workdir / "worker.pyisession" if profile else None
    status.set("worker", 0, len(wl.reports) + wl.expected_windows, state="starting")
    procs: list[Worker] = []
    for i, port in enumerate(ports):
        wdir = workdir if i == 0 else workdir / f"w{i}"
        wdir.mkdir(exist_ok=True)
        env = worker_env(bootstrap, prefix, wdir, roles="pipeline,sink" if i == 0 else "pipeline",
                         partitions=partitions, topology=wl.scenario, metrics_port=port)
        env["PYTHONPATH"] = str(src)  # this tree's pipeline, not the parent's PYTHONPATH or the editable install
        check_tree(env, src)
        procs.append(Worker(env, wdir, profile_to=profile_to if i == 0 else None, cwd=src))
    w = procs[0]
    try:
        asyncio.run(_watch_worker(procs, bootstrap, topics, prefix, ports, wl, res, status, timeout_s,
                                  broker_pid))
    except Exception as exc:  # keep going with the other runs; say what happened
        res.error = f"{type(exc).__name__}: {exc}"
        console.log(f"[red]{status.title}: {res.error}[/]\n{w.tail(30)}")
    finally:
        status.set("stopping worker", 0, 1)
        for x in procs:
            t_stop = time.perf_counter()
            code = x.stop()
            if time.perf_counter() - t_stop > 10 or code not in (0, -15, 143):
                console.log(f"{status.title}: {x.log_path.name} stop took {time.perf_counter() - t_stop:.0f} s, "
                            f"exit code {code}")
    if not res.error:
        console.log(f"{status.title}: worker ingest {res.ingest_rate:,.0f} samples/s ({res.ingest_s:.2f} s to lag 0), "
                    f"end to end {res.e2e_rate:,.0f} samples/s ({res.e2e_s:.2f} s, tail {res.tail_s:.2f} s), "
                    f"ratio {res.ratio:.2f}; worker CPU {res.worker_cpu_s:.2f} s (main thread "
                    f"{res.worker_main_cpu_s:.2f} s); broker {res.broker_cores:.2f} cores; other load {res.other_cores:.2f} cores; "
                    f"startup {res.startup_s:.1f} s; exact={res.exact}, dead letters {res.deadletters}; loop woke "
                    f">1 s late {res.loop_late_1s} times, worst ≤ {res.loop_worst_s} s")
    if profile_to is not None and profile_to.exists():
        res.profile_text = profile_summary(profile_to)
    _delete_run_topics(bootstrap, topics, prefix)
    shutil.rmtree(workdir / "chdb", ignore_errors=True)
    return res


def _free_port() -> int:
    from pipeline.runtime.brokers import free_port
    return free_port()


async def _delete_topics(bootstrap: str, names: list[str]) -> None:
    """Free the broker's memory/disk between runs (best effort)."""
    from aiokafka.admin import AIOKafkaAdminClient
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        await admin.delete_topics(names)
    except Exception:
        pass
    finally:
        await admin.close()


def _delete_run_topics(bootstrap: str, topics: Topics, app_id: str) -> None:
    """Delete one run's topics: the pipeline's and the Faust app's leader-assignor topic (best effort)."""
    asyncio.run(_delete_topics(bootstrap, topics.all() + [f"{app_id}-__assignor-__leader"]))


# --- profile ---------------------------------------------------------------------------------------
def _group(path: str) -> str:
    if not path:
        return "?"
    p = path.replace("\\", "/")
    if "/site-packages/" in p:
        return p.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/pipeline/" in p:
        return "pipeline/" + p.rsplit("/", 1)[1]
    if "/lib/python3" in p:
        return "stdlib:" + p.split("/lib/python3", 1)[1].split("/", 2)[-1].split("/", 1)[0].removesuffix(".py")
    return p.rsplit("/", 1)[-1]


def profile_summary(path: Path, top: int = 25) -> str:
    """Where the worker's main thread spent its wall time: by package, top functions (self and inclusive)."""
    from pyinstrument.session import Session

    session = Session.load(path)
    root = session.root_frame()
    if root is None:
        return "(empty profile)"
    by_group: dict[str, float] = {}
    by_self: dict[tuple[str, str, int], float] = {}
    by_incl: dict[tuple[str, str, int], float] = {}
    wall = root.time

    def walk(f: Any, open_keys: frozenset) -> None:
        if f.is_synthetic:
            return
        key = (f.class_name + "." + f.function if getattr(f, "class_name", None) else f.function,
               _group(f.file_path or ""), f.line_no or 0)
        own = f.total_self_time
        if own > 0:
            idle = f.function in ("select", "poll") or "epoll" in f.function
            g = "(idle: event loop waiting in epoll)" if idle else _group(f.file_path or "")
            by_group[g] = by_group.get(g, 0.0) + own
            by_self[key] = by_self.get(key, 0.0) + own
        if key not in open_keys:  # count a recursive/re-entered function once per stack
            by_incl[key] = by_incl.get(key, 0.0) + f.time
            open_keys = open_keys | {key}
        for c in f.children:
            walk(c, open_keys)

    walk(root, frozenset())
    busy = wall - sum(t for g, t in by_group.items() if g.startswith("(idle"))
    out = [f"profile {path}", f"main thread: {wall:.1f} s wall, {session.cpu_time:.1f} s CPU (process), "
           f"{busy:.1f} s not idle, {session.sample_count} samples", "", "self time by package:"]
    for g, t in sorted(by_group.items(), key=lambda kv: -kv[1])[:16]:
        out.append(f"  {t:8.2f} s  {100 * t / wall:5.1f} %  {g}")
    out += ["", f"top {top} functions by self time:"]
    for (fn, g, line), t in sorted(by_self.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"  {t:8.2f} s  {100 * t / wall:5.1f} %  {fn}  ({g}:{line})")
    out += ["", f"top {top} frames by inclusive time (below the event loop; wrappers above 90 % left out):"]
    shown = 0
    for (fn, g, line), t in sorted(by_incl.items(), key=lambda kv: -kv[1]):
        if t > 0.9 * wall or fn.endswith(("_run", "run", "Context.run")) and g.startswith("stdlib"):
            continue
        out.append(f"  {t:8.2f} s  {100 * t / wall:5.1f} %  {fn}  ({g}:{line})")
        shown += 1
        if shown >= top:
            break
    return "\n".join(out)


# --- output ---------------------------------------------------------------------------------------
def _k(x: float) -> str:
    return f"{x / 1000:,.0f}k" if x else "-"


def results_table(results: list[Result]) -> Table:
    t = Table(title="flowmon: one worker process vs raw consume+decode, samples/s (k = 1,000)", title_justify="left")
    cols = (("broker", "left"), ("workload", "left"), ("run", "right"), ("samples", "right"),
            ("smp/rep", "right"), ("raw decode", "right"), ("raw+numpy", "right"), ("core only", "right"),
            ("ingest (lag 0)", "right"), ("end to end", "right"), ("e2e/raw", "right"),
            ("s: ingested/aggr/emitted/landed", "right"), ("worker CPU s", "right"), ("other load", "right"),
            ("exact", "center"), ("goal", "center"))
    for col, just in cols:
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in results:
        head = [r.broker, r.workload + (" (prof)" if r.profiled else "") + (f" {r.tree}" if r.tree else "")
                + (f" ×{r.workers}" if r.workers > 1 else ""),
                str(r.run), f"{r.samples:,}",
                f"{r.samples / r.reports:.0f}", _k(r.raw_rate), _k(r.raw_numpy_rate), _k(r.core_rate)]
        if r.error:
            t.add_row(*head, "[red]error[/]", *[""] * (len(cols) - len(head) - 1))
            continue
        t.add_row(*head, _k(r.ingest_rate), _k(r.e2e_rate), f"{r.ratio:.2f}",
                  f"{r.ingest_metric_s:.1f}/{r.aggregate_s:.1f}/{r.emitted_s:.1f}/{r.e2e_s:.1f}",
                  f"{r.worker_cpu_s:.1f} ({r.worker_main_cpu_s:.1f})", f"{r.other_cores:.2f}",
                  "[green]yes[/]" if r.exact else "[red]NO[/]", "[green]met[/]" if r.goal else "[red]not met[/]")
    return t


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return (xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2) if n else float("nan")


def compare_table(results: list[Result], before: Path, after: Path) -> Table:
    """--compare: each before/after pair's end-to-end rate and the ratio after/before, per broker and workload.

    >>> runs = [Result("tansu", "fleet", n, 1, 100, 1, e2e_rate=rate, tree=tree)
    ...         for n, (b, a) in enumerate([(50e3, 60e3), (40e3, 44e3)], 1) for tree, rate in (("before", b), ("after", a))]
    >>> import io
    >>> out = Console(width=100, record=True, file=io.StringIO())
    >>> out.print(compare_table(runs, Path("/b"), Path("/a")))
    >>> [line.split()[-2] for line in out.export_text().splitlines() if "tansu" in line]
    ['1.20', '1.10', '1.15']
    """
    t = Table(title=f"end to end, samples/s: before = {before}, after = {after}", title_justify="left")
    for col in ("broker", "workload", "run", "before", "after", "after/before"):
        t.add_column(col, justify="left" if col in ("broker", "workload") else "right")
    groups: dict[tuple[str, str], dict[int, dict[str, Result]]] = {}
    for r in results:
        if r.tree:
            groups.setdefault((r.broker, r.workload), {}).setdefault(r.run, {})[r.tree] = r
    for (kind, workload), runs in groups.items():
        ratios, rates = [], {"before": [], "after": []}
        for run, pair in sorted(runs.items()):
            cells = []
            for tree in ("before", "after"):
                r = pair.get(tree)
                ok = r is not None and not r.error and r.e2e_rate > 0
                cells.append(f"{r.e2e_rate:,.0f}" if ok else "[red]error[/]")
                if ok:
                    rates[tree].append(r.e2e_rate)
            b, a = pair.get("before"), pair.get("after")
            ratio = a.e2e_rate / b.e2e_rate if a and b and not a.error and not b.error and b.e2e_rate else None
            if ratio is not None:
                ratios.append(ratio)
            t.add_row(kind, workload, str(run), *cells, f"{ratio:.2f}" if ratio is not None else "-")
        if len(runs) > 1:
            med = _median(ratios)
            t.add_row(kind, workload, "median", f"{_median(rates['before']):,.0f}", f"{_median(rates['after']):,.0f}",
                      f"[bold]{med:.2f}[/]" if ratios else "-", end_section=True)
    return t


def scaling_table(results: list[Result]) -> Table:
    """--workers 1,2: each run's end-to-end rate per worker count, and the ratio to one worker (median last).

    >>> runs = [Result("tansu", "fleet", n, 1, 100, 1, e2e_rate=r, workers=k, worker_cpu_each=[9.5 + k, 9.0][:k])
    ...         for n, (one, two) in enumerate([(10e3, 16e3), (10e3, 18e3)], 1) for k, r in ((1, one), (2, two))]
    >>> import io
    >>> out = Console(width=100, record=True, file=io.StringIO())
    >>> out.print(scaling_table(runs))
    >>> rows = [line.split("│") for line in out.export_text().splitlines() if "tansu" in line]
    >>> [(r[-3].strip(), r[-2].strip()) for r in rows]    # the ratio, and each process's CPU with two workers
    [('1.60', '11.5 / 9.0'), ('1.80', '11.5 / 9.0'), ('1.70', '')]
    """
    counts = sorted({r.workers for r in results})
    t = Table(title="scale-out: end to end, samples/s, by worker processes in one group", title_justify="left")
    for col in ("broker", "workload", "run", *[f"{n} worker{'s' if n > 1 else ''}" for n in counts],
                *[f"{n}/1" for n in counts if n > 1], f"CPU s per process ({counts[-1]})"):
        t.add_column(col, justify="left" if col in ("broker", "workload") else "right")
    groups: dict[tuple[str, str, str], dict[int, dict[int, Result]]] = {}
    for r in results:
        groups.setdefault((r.broker, r.workload, r.tree), {}).setdefault(r.run, {})[r.workers] = r
    for (kind, workload, tree), runs in groups.items():
        ratios: dict[int, list[float]] = {n: [] for n in counts if n > 1}
        for run, by_n in sorted(runs.items()):
            ok = {n: r.e2e_rate for n, r in by_n.items() if not r.error and r.e2e_rate > 0}
            cells = [f"{ok[n]:,.0f}" if n in ok else "[red]error[/]" for n in counts]
            for n in ratios:
                if n in ok and 1 in ok:
                    ratios[n].append(ok[n] / ok[1])
            most = by_n.get(counts[-1])
            t.add_row(kind, workload + (f" {tree}" if tree else ""), str(run), *cells,
                      *[f"{ok[n] / ok[1]:.2f}" if n in ok and 1 in ok else "-" for n in ratios],
                      " / ".join(f"{c:.1f}" for c in most.worker_cpu_each) if most else "-")
        if len(runs) > 1:
            t.add_row(kind, workload, "median", *[""] * len(counts),
                      *[f"[bold]{_median(v):.2f}[/]" if v else "-" for v in ratios.values()], end_section=True)
    return t


LEGEND = """\
raw decode: a plain AIOKafkaConsumer reading every report + orjson.loads (best of 3 passes); raw+numpy: also two
  int64 numpy columns per report. core only: the pipeline's pure code (Ingest.process + PartitionWindows.apply,
  benchmarks/core.py) in one process without Kafka or Faust: the ceiling of the worker's own Python work.
ingest (lag 0): samples / (first report processed -> consumer group's committed offsets reach every report).
end to end: samples / (first report processed -> every expected window counted in ClickHouse (FINAL)).
s: seconds from the first report processed until the last report was processed (metrics), the last partial
  was applied to a window, the last window was emitted, and all windows landed in ClickHouse.
worker CPU s: all threads (main thread) over the end-to-end span. other load: CPU, in cores, used by processes
  other than the worker, the broker and the benchmark during that span (other tests on this machine).
exact: sum(samples) landed == samples produced, no dead letters."""


def _core(name: str, samples: int, partitions: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.core", name, str(samples), "--partitions", str(partitions)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"benchmarks.core failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


#: Samples per run by workload when ``--samples`` is not given. A big run of 500,000 samples is 1,000 reports a
#: worker handles in ~2 s: the last windows' close (the sources' idle timeout) would weigh as much as the work.
DEFAULT_SAMPLES = {"fleet": 500_000, "big": 5_000_000}


def _workloads(names: list[str], samples: int | None, partitions: int) -> list[Workload]:
    """Simulate each workload and time the pure core on it (logged)."""
    workloads = []
    for n in names:
        wl = make_workload(n, samples or DEFAULT_SAMPLES[n])
        wl.core = _core(n, samples or DEFAULT_SAMPLES[n], partitions)
        workloads.append(wl)
        console.log(f"workload {n}: {len(wl.reports):,} reports, {wl.samples:,} samples ({wl.per_report:.1f} per "
                    f"report), {wl.expected_windows} windows over {wl.event_span_s / 60:.0f} min of event time "
                    f"({wl.gen_s:.1f} s to simulate); core only: {wl.core_rate:,.0f} samples/s "
                    f"(ingest {wl.core['ingest_s']:.2f} s, aggregate {wl.core['aggregate_s']:.2f} s; "
                    f"{wl.core['pairs_messages']:,} pairs messages, {wl.partials:,} partials)")
    return workloads


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--broker", choices=["tansu", "kafka", "both"], default="tansu")
    ap.add_argument("--workload", choices=["fleet", "big", "both"], default="both",
                    help="fleet: ~5 samples per report; big: 500 samples per report")
    ap.add_argument("--samples", type=int, default=None, help="samples per run (whole intervals: a few more); "
                    "default 500,000 for fleet, 5,000,000 for big")
    ap.add_argument("--repeat", type=int, default=1, help="runs per broker and workload")
    ap.add_argument("--partitions", type=int, default=8, help="partitions of the reports and pairs topics")
    ap.add_argument("--profile", action="store_true", help="run the worker under pyinstrument; print its profile")
    ap.add_argument("--src", type=Path, default=REPO,
                    help="run the worker from this source tree (a private copy with a change to try; "
                         "default: this repository)")
    ap.add_argument("--compare", type=Path, metavar="SRC",
                    help="also run the worker from SRC (e.g. a checkout of the previous release), alternating with "
                         "this tree's (or --src's) on the same broker; print the ratio after/before")
    ap.add_argument("--workers", default="1", metavar="N[,N...]",
                    help="worker processes in one group (the first also runs the sink); a list, e.g. 1,2, "
                         "alternates them in each run and prints the scaling N workers / 1")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds one worker run may take")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (worker logs, profiles)")
    a = ap.parse_args(argv)
    try:
        counts = [int(x) for x in a.workers.split(",")]
        if not counts or min(counts) < 1:
            raise ValueError
    except ValueError:
        ap.error(f"--workers {a.workers!r}: worker counts of at least 1, comma-separated (e.g. 1,2)")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # e.g. NotLeaderForPartition retries on a new topic

    kinds = ["tansu", "kafka"] if a.broker == "both" else [a.broker]
    names = ["fleet", "big"] if a.workload == "both" else [a.workload]
    load0 = os.getloadavg()
    console.log(f"{os.cpu_count()} cores, load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} "
                "(other sessions' tests may share these cores: see 'other load' per run)")
    after = a.src.resolve()
    trees: list[tuple[str, Path]] = [("", after)]
    if a.compare is not None:
        trees = [("before", a.compare.resolve()), ("after", after)]
        console.log(f"[yellow]comparing: before = {trees[0][1]}, after = {after}[/]")
    elif after != REPO:
        console.log(f"[yellow]worker runs from {after}[/]")
    workloads = _workloads(names, a.samples, a.partitions)
    workroot = Path(tempfile.mkdtemp(prefix="flowmon-bench-"))
    status = Status()
    results: list[Result] = []
    try:
        with Live(status, console=console, refresh_per_second=4, transient=True):
            for kind in kinds:
                status.title, status.phase = kind, "starting broker"
                b = broker(kind, workroot / kind)
                console.log(f"{kind} broker on {b.bootstrap} (ready in {b.startup_s:.1f} s)")
                try:
                    for wl in workloads:
                        for run in range(1, a.repeat + 1):
                            for label, tree in trees:  # --compare: before, after, before, after, ...
                                for n in counts:  # --workers 1,2: one, two, one, two, ...
                                    r = run_one(kind, b.bootstrap, b.pid, wl, run, a.partitions, a.profile, status,
                                                workroot, a.timeout, tree, label, n)
                                    results.append(r)
                                    status.results = results
                finally:
                    b.stop()
    finally:
        if not a.keep:
            shutil.rmtree(workroot, ignore_errors=True)
        else:
            console.log(f"work directory kept: {workroot}")
    console.print(results_table(results))
    if a.compare is not None:
        console.print(compare_table(results, trees[0][1], after))
    if len(counts) > 1:
        console.print(scaling_table(results))
    load1 = os.getloadavg()
    console.print(LEGEND, markup=False, highlight=False)
    console.print(f"machine: {os.cpu_count()} cores; load average before {load0[0]:.2f}, after {load1[0]:.2f}. "
                  f"goal: end to end >= {GOAL_RATIO} x raw decode and >= {GOAL_RATE:,} samples/s per worker process.")
    for r in results:
        if r.profile_text:
            console.rule(f"profile: {r.broker} · {r.workload} · run {r.run}")
            console.print(r.profile_text, markup=False, highlight=False)
    if a.json:
        a.json.write_bytes(orjson.dumps([dict(asdict(r), ratio=r.ratio, tail_s=r.tail_s, goal=r.goal)
                                         for r in results], option=orjson.OPT_INDENT_2))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
