"""The framework floor (issue 14): what consuming and decoding alone costs, per Python stream library.

    python -m benchmarks.floor [--broker tansu|kafka|both] [--workload fleet|big|both] [--passes N]
                               [--fleet-samples N] [--big-samples N] [--consumers LIST] [--json FILE]

For each broker and workload (the workloads of ``benchmarks.bench``: ``fleet`` ~5 samples
per report, ``big`` 500), the reports are simulated and produced once to a fresh reports
topic (``--partitions`` partitions, 8 as the pipeline's default); then, on that one topic,
each consumer below reads every report from the beginning and does nothing but
``orjson.loads`` each value (and count its samples). Each pass is its own process; the
consumers take turns (pass 1 of each, then pass 2 of each, ...) so that a change in the
machine's load hits them alike; the fastest pass of each is reported, with its CPU
seconds (``time.process_time`` of the consumer process, all threads, over the measured span):

- ``aiokafka``: plain ``AIOKafkaConsumer.getmany`` (``benchmarks.rawconsume``, no group);
- ``faust-batch``: a no-op Faust agent, ``stream.take_events(500, within=0.05)``, on the
  pipeline's own app (``create_app``), consumer group = a new app id per pass;
- ``faust-event``: the same agent iterating ``async for value in stream``;
- ``quix``: quixstreams ``Application`` + ``sdf.apply(orjson.loads)``, a new consumer group
  per pass (needs the optional extra: ``pip install -e '.[bench]'``; skipped when missing).

The clock of a pass starts when the first message reaches the consumer's code and stops
after the last report is decoded (``benchmarks.floorconsume``). The per-report cost is
compared with the goal's budget: 100,000 samples/s per worker process end to end, i.e.
10 µs per sample, ~47 µs per fleet report of 4.7 samples (~21,000 reports/s).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.live import Live
from rich.table import Table

from pipeline.config import Settings
from pipeline.runtime.brokers import BrokerError
from pipeline.runtime.produce import produce_reports
from pipeline.runtime.topics import Topics, ensure_topics

from ._common import REPO, CpuMeter, broker, unique_name
from .bench import GOAL_RATE, Status, Workload, _delete_topics, make_workload

#: consumer kind -> what the table calls it
CONSUMERS = {
    "aiokafka": "aiokafka getmany",
    "faust-batch": "faust take_events(500)",
    "faust-event": "faust per event",
    "quix": "quixstreams sdf.apply",
}
#: ~510,000 fleet reports and ~8,000 big ones: a pass of the fastest consumer lasts ~2-3 s, of Faust ~40 s
DEFAULT_SAMPLES = {"fleet": 2_400_000, "big": 4_000_000}
QUIX_MISSING = ("quixstreams is not installed: pip install -e '.[bench]' (or pip install quixstreams); "
                "its row is skipped")

console = Console(stderr=False, width=None if sys.stdout.isatty() else 160)


@dataclass
class Row:
    broker: str
    workload: str
    consumer: str  # a key of CONSUMERS
    reports: int
    samples: int
    seconds: float = 0.0  # the fastest complete pass
    cpu_s: float = 0.0  # that pass's CPU seconds
    passes: list[float] = field(default_factory=list)  # wall seconds of every pass (inf: incomplete)
    cpu_passes: list[float] = field(default_factory=list)
    other_cores: float = 0.0  # CPU of processes not ours during the fastest pass, in cores
    error: str | None = None

    @property
    def report_rate(self) -> float:
        return self.reports / self.seconds if self.seconds else 0.0

    @property
    def sample_rate(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    @property
    def us_per_report(self) -> float:
        return 1e6 * self.seconds / self.reports if self.seconds else 0.0

    @property
    def cpu_us_per_report(self) -> float:
        return 1e6 * self.cpu_s / self.reports if self.seconds else 0.0

    @property
    def budget_us(self) -> float:
        """µs per report the goal (GOAL_RATE samples/s end to end) allows for reports of this size."""
        return 1e6 * self.samples / self.reports / GOAL_RATE if self.reports else 0.0

    def add_pass(self, res: dict[str, Any]) -> None:
        complete = res.get("reports", 0) >= self.reports and res.get("seconds", 0) > 0
        self.passes.append(res["seconds"] if complete else float("inf"))
        self.cpu_passes.append(res.get("cpu_s", 0.0))
        if complete and (not self.seconds or res["seconds"] < self.seconds):
            self.seconds, self.cpu_s = res["seconds"], res["cpu_s"]
            self.other_cores = res.get("other_cores", 0.0)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line, no usage block
        self.exit(2, f"{self.prog}: {message}\n")


# --- one pass -----------------------------------------------------------------------------------------
def _command(kind: str, bootstrap: str, prefix: str, topic: str, partitions: int, reports: int,
             group: str) -> list[str]:
    if kind == "aiokafka":
        return [sys.executable, "-m", "benchmarks.rawconsume", bootstrap, topic, str(reports), "--passes", "1"]
    return [sys.executable, "-m", "benchmarks.floorconsume", kind, bootstrap, prefix, str(partitions),
            str(reports), group]


def one_pass(kind: str, bootstrap: str, prefix: str, topic: str, partitions: int, reports: int,
             workdir: Path, status: Status, label: str, timeout_s: float) -> dict[str, Any]:
    """Run one consumer process until it prints its result line; stop it; return that result."""
    group = unique_name(f"{prefix}-{kind}")
    log_path = workdir / f"{group}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(_command(kind, bootstrap, prefix, topic, partitions, reports, group), cwd=REPO,
                                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True)
    t_spawn = time.perf_counter()
    watchdog = threading.Timer(timeout_s, proc.kill)
    watchdog.start()
    meter = CpuMeter(proc.pid)
    result: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            msg = json.loads(line)
            if "progress" in msg:
                status.set(label, msg["progress"], reports)
            else:
                result = msg
                result["other_cores"] = meter.stop()["other_cores"]
                break
    finally:
        watchdog.cancel()
        if proc.poll() is None and kind != "aiokafka":
            proc.send_signal(signal.SIGTERM)  # Faust: a worker's graceful stop; quix has stopped itself
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    if not result:
        tail = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        raise RuntimeError(f"{kind} exited with {proc.returncode} without a result"
                           + (f": {tail[0][:300]}" if tail else ""))
    result["group"] = group
    result["process_s"] = time.perf_counter() - t_spawn  # spawn -> exit: start-up, group join, the pass, stop
    return result


# --- one broker --------------------------------------------------------------------------------------
def run_broker(kind: str, workloads: list[Workload], consumers: list[str], passes: int, partitions: int,
               workroot: Path, status: Status, timeout_s: float) -> list[Row]:
    status.title, status.phase = kind, "starting broker"
    try:
        b = broker(kind, workroot / kind)
    except (BrokerError, OSError) as exc:
        console.print(f"[red]{kind}: the broker did not start: {exc}[/]", highlight=False)
        return []
    console.log(f"{kind} broker on {b.bootstrap} (ready in {b.startup_s:.1f} s)")
    rows: list[Row] = []
    try:
        for wl in workloads:
            prefix = unique_name("floor")
            topics = Topics.from_settings(Settings(topic_prefix=prefix, app_id=prefix, partitions=partitions))
            asyncio.run(ensure_topics(b.bootstrap, topics, names=[topics.reports]))
            status.title = f"{kind} · {wl.name} ({wl.per_report:.1f} samples/report)"
            status.set("produce", 0, len(wl.reports))
            stats = asyncio.run(produce_reports(
                b.bootstrap, topics.reports, wl.reports, progress_every=5000,
                progress=lambda s: status.set("produce", s.reports, len(wl.reports))))
            console.log(f"{status.title}: produced {stats}")
            mine = {c: Row(kind, wl.name, c, len(wl.reports), wl.samples) for c in consumers}
            groups: list[str] = []
            for n in range(1, passes + 1):
                for c, row in mine.items():
                    if row.error:
                        continue
                    label = f"{CONSUMERS[c]} · pass {n}/{passes}"
                    try:
                        res = one_pass(c, b.bootstrap, prefix, topics.reports, partitions, len(wl.reports),
                                       workroot, status, label, timeout_s)
                    except Exception as exc:  # keep going with the others; say what happened
                        row.error = f"{type(exc).__name__}: {exc}"
                        console.log(f"[red]{status.title}: {CONSUMERS[c]}: {row.error}[/]")
                        continue
                    groups.append(res["group"])
                    row.add_pass(res)
                    console.log(f"{status.title}: {label}: {res['reports'] / res['seconds']:,.0f} reports/s "
                                f"({res['seconds']:.2f} s, {res['cpu_s']:.2f} CPU s, other load "
                                f"{res['other_cores']:.2f} cores; process {res['process_s']:.1f} s from spawn to exit)")
            rows += mine.values()
            asyncio.run(_delete_topics(b.bootstrap, [topics.reports] + [f"{g}-__assignor-__leader" for g in groups]))
    finally:
        b.stop()
    return rows


# --- output --------------------------------------------------------------------------------------
def floor_table(rows: list[Row]) -> Table:
    """One broker and workload: every consumer's best pass, against aiokafka's and the goal's budget.

    >>> r = [Row("tansu", "fleet", "aiokafka", 1000, 5000, seconds=0.01, cpu_s=0.01),
    ...      Row("tansu", "fleet", "faust-batch", 1000, 5000, seconds=0.04, cpu_s=0.03)]
    >>> import io
    >>> out = Console(width=150, record=True, file=io.StringIO())
    >>> out.print(floor_table(r))
    >>> [line.split("│")[3:6] for line in out.export_text().splitlines() if "faust" in line]
    [['   125,000 ', '   0.25 ', '         40.0 ']]
    """
    first = rows[0]
    t = Table(title=f"{first.broker} · {first.workload}: {first.reports:,} reports, {first.samples:,} samples "
                    f"({first.samples / first.reports:.1f} per report); goal's budget {first.budget_us:,.0f} µs "
                    f"per report ({GOAL_RATE:,} samples/s)", title_justify="left")
    for col in ("consumer", "reports/s", "samples/s", "× aiokafka", "µs/report", "CPU µs/report",
                "% of budget", "passes (s)", "other load"):
        t.add_column(col, justify="left" if col == "consumer" else "right")
    raw = next((r for r in rows if r.consumer == "aiokafka" and r.seconds), None)
    for r in rows:
        if r.error or not r.seconds:
            t.add_row(CONSUMERS[r.consumer], "[red]error[/]", *[""] * 6, r.error[:60] if r.error else "")
            continue
        t.add_row(CONSUMERS[r.consumer], f"{r.report_rate:,.0f}", f"{r.sample_rate:,.0f}",
                  f"{r.report_rate / raw.report_rate:.2f}" if raw else "-", f"{r.us_per_report:,.1f}",
                  f"{r.cpu_us_per_report:,.1f}", f"{100 * r.us_per_report / r.budget_us:.0f} %",
                  " ".join("-" if p == float("inf") else f"{p:.2f}" for p in r.passes), f"{r.other_cores:.2f}")
    return t


def verdict(rows: list[Row]) -> str:
    """What the best passes mean against the goal's budget, in one line per consumer."""
    out = []
    for r in rows:
        if r.error or not r.seconds:
            continue
        left = r.budget_us - r.us_per_report
        out.append(f"  {CONSUMERS[r.consumer]}: {r.us_per_report:.1f} µs/report = "
                   f"{100 * r.us_per_report / r.budget_us:.0f} % of the {r.budget_us:,.0f} µs budget; "
                   + (f"{left:,.1f} µs left for the pipeline's own work" if left > 0
                      else f"over budget by {-left:,.1f} µs before the pipeline does anything"))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="python -m benchmarks.floor", description=__doc__.splitlines()[0])
    ap.add_argument("--broker", choices=["tansu", "kafka", "both"], default="both")
    ap.add_argument("--workload", choices=["fleet", "big", "both"], default="both",
                    help="fleet: ~5 samples per report; big: 500 samples per report")
    ap.add_argument("--passes", type=int, default=3, help="passes per consumer (the fastest is reported)")
    ap.add_argument("--fleet-samples", type=int, default=DEFAULT_SAMPLES["fleet"],
                    help="samples of the fleet workload (whole intervals: a few more)")
    ap.add_argument("--big-samples", type=int, default=DEFAULT_SAMPLES["big"], help="samples of the big workload")
    ap.add_argument("--consumers", default=",".join(CONSUMERS),
                    help=f"comma-separated, of {', '.join(CONSUMERS)} (default: all)")
    ap.add_argument("--partitions", type=int, default=8, help="partitions of the reports topic")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds one pass may take")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args(argv)
    consumers = [c.strip() for c in a.consumers.split(",") if c.strip()]
    unknown = [c for c in consumers if c not in CONSUMERS]
    if unknown or not consumers:
        ap.error(f"--consumers: unknown {', '.join(unknown) or '(none given)'}; expected some of {', '.join(CONSUMERS)}")
    if a.passes < 1 or a.partitions < 1 or a.fleet_samples < 1 or a.big_samples < 1:
        ap.error("--passes, --partitions and the sample counts must be at least 1")
    if a.json is not None and not a.json.parent.is_dir():
        ap.error(f"--json: no directory {a.json.parent}")
    if "quix" in consumers and importlib.util.find_spec("quixstreams") is None:
        console.print(QUIX_MISSING, markup=False, highlight=False)
        consumers.remove("quix")
        if not consumers:
            return 1
    logging.getLogger("aiokafka").setLevel(logging.ERROR)

    kinds = ["tansu", "kafka"] if a.broker == "both" else [a.broker]
    names = ["fleet", "big"] if a.workload == "both" else [a.workload]
    load0 = os.getloadavg()
    started = dt.datetime.now().astimezone()
    console.log(f"{os.cpu_count()} cores, load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    workloads = []
    for n in names:
        wl = make_workload(n, a.fleet_samples if n == "fleet" else a.big_samples)
        workloads.append(wl)
        console.log(f"workload {n}: {len(wl.reports):,} reports, {wl.samples:,} samples ({wl.per_report:.1f} per "
                    f"report; {wl.gen_s:.1f} s to simulate)")
    workroot = Path(tempfile.mkdtemp(prefix="flowmon-floor-"))
    status = Status()
    rows: list[Row] = []
    try:
        with Live(status, console=console, refresh_per_second=4, transient=True):
            for kind in kinds:
                rows += run_broker(kind, workloads, consumers, a.passes, a.partitions, workroot, status, a.timeout)
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    load1 = os.getloadavg()
    for kind in kinds:
        for n in names:
            mine = [r for r in rows if r.broker == kind and r.workload == n]
            if mine:
                console.print(floor_table(mine))
                console.print(verdict(mine), highlight=False)
    console.print(f"{started:%Y-%m-%d %H:%M %Z}; {os.cpu_count()} cores; load average (1 min) before "
                  f"{load0[0]:.2f}, after {load1[0]:.2f}. µs/report: wall time of the fastest pass per report; "
                  f"budget: {GOAL_RATE:,} samples/s per worker process end to end.", highlight=False)
    if a.json:
        a.json.write_bytes(orjson.dumps({
            "date": started.isoformat(timespec="seconds"), "cores": os.cpu_count(),
            "loadavg_before": load0, "loadavg_after": load1,
            "rows": [dict(asdict(r), passes=[p if p != float("inf") else None for p in r.passes],
                          report_rate=r.report_rate, sample_rate=r.sample_rate, us_per_report=r.us_per_report,
                          cpu_us_per_report=r.cpu_us_per_report, budget_us=r.budget_us) for r in rows]},
            option=orjson.OPT_INDENT_2))
    return 1 if not rows or any(r.error for r in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
