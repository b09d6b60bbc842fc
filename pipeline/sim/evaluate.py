"""Scenario evaluation: run a scenario through the detection code in simulated time and score it.

``flowmon eval SCENARIO.yaml [--json]``. In-process, no broker: the simulator's reports
go through the very cores the Faust agents run (``ingest.step.Ingest`` → pairs messages →
``aggregate.step.PartitionStep``: windows → complete intervals → ``detect.Detection`` →
health → ``attribute.correlate.AttributionStage``), one source, a mark whenever the
largest report start rises, so the alerts are those the Kafka path emits
(``tests/integration/test_detection.py`` checks it on a scenario, on both brokers). The
scoring functions are in ``sim.score``.

Matching alerts to faults (the ground truth under ``faults:``):

* **Scope.** A fault touches a set of flows (the simulator records every
  sender/receiver pair it altered). Both ends report a flow, so the fault's *keys* are,
  for each touched flow a→b: the pair keys ``subnet(a)→subnet(b)`` and
  ``subnet(b)→subnet(a)`` and the instance keys ``a→subnet(b)`` and ``b→subnet(a)``. An
  alert can only match a fault whose keys include the alert's key: an alert on an
  unrelated pair never "finds" a fault.
* **Time.** The alert's ``first_seen`` (start of the first anomalous grid interval) lies in
  ``[fault start − 1 interval, fault end + 2 intervals)``: agents' own intervals straddle
  the grid, so the grid interval just before the onset holds reports that already cover
  part of the fault.
* **One fault per alert.** An alert that matches several faults (overlapping faults)
  is credited to the one with the latest onset before its ``first_seen``, so one wide
  alert cannot count as several detections. A fault is detected when at least one
  alert is credited to it; its delay is that of its earliest credited alert.

Scores: ``recall`` = detected faults / faults; ``precision`` = credited alerts / alerts
(each alert counted once, at ``opened``); ``delay_intervals`` = intervals from the
fault's onset to the end of the interval that opened the alert (1 = flagged from the
first faulty interval's reports; the Kafka path publishes it ``interval_lateness_s``
later); ``false_alarms_per_1000_pair_windows`` = uncredited alerts opened in fault-free
time per 1,000 (subnet pair, 10-minute window) with traffic in fault-free time (a
window is fault-free when it does not overlap any fault's ``[start − 1 interval, end + 2 intervals)``).
Alerts of both scopes (pair and instance) count, against pair-windows only: stricter
than counting instance-windows too.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pipeline.aggregate.step import PartitionStep, StepOutput
from pipeline.aggregate.windows import PartitionWindows
from pipeline.attribute.correlate import AttributionStage
from pipeline.detect.detection import Detection
from pipeline.ingest.step import Ingest
from pipeline.ingest.topology import load_topology
from pipeline.ingest.validate import Validator
from pipeline.sim.score import (
    confusion,
    credit,
    false_alarms,
    fault_free_windows,
    fault_outcomes,
    match,
    nhi_false_degraded_minutes,
    nhi_periods,
    window_totals,
)
from pipeline.sim.scenario import load_scenario
from pipeline.sim.simulator import Fault, Simulator
from pipeline.sim.totals import TotalsAccumulator
from pipeline.wire.records import SAMPLES, FlowWindow, ProgressMark, decode_pairs

__all__ = ["EPOCH", "EvalResult", "evaluate", "evaluate_many", "evaluate_stream", "suite_summary", "match"]

#: Simulated time of every scenario's start: 2025-11-25 00:00 UTC (a midnight, so ``diurnal`` peaks at 12:00).
EPOCH = 1764028800


@dataclass
class EvalResult:
    name: str
    source: str
    interval_s: int
    events: list[dict[str, Any]]
    faults: list[dict[str, Any]]
    alerts: int
    credited: int
    false_alarms: int
    fault_free_pair_windows: int
    intervals: int
    reports: int
    samples: int
    seconds: float
    state: dict[str, float] = field(default_factory=dict)
    attributions: list[dict[str, Any]] = field(default_factory=list)
    nhi: list[tuple[str, str, int, int]] = field(default_factory=list)
    nhi_false_degraded_minutes: float = 0.0
    realism: Any = "smooth"  # the realism the reports were simulated with (a label; "stream" callers set their own)
    totals: dict[str, int] = field(default_factory=dict)  # closed windows vs expected_totals (see evaluate_stream)
    start: int = EPOCH
    #: what the worker would have landed: closed windows by (src, dst, window_start), and the NHI records
    closed: dict[tuple[str, str, int], Any] = field(default_factory=dict, repr=False)
    nhi_records: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def attribution(self) -> dict[str, Any]:
        det = [f for f in self.faults if f["detected"]]
        right = [f for f in det if f["cause_given"] == f["cause_truth"]]
        nd = [f["nhi_delay_intervals"] for f in det if f["cause_truth"] == "infrastructure"
              and f["nhi_delay_intervals"] is not None]
        return {
            "accuracy": len(right) / len(det) if det else None,
            "detected_faults": len(det), "right": len(right),
            "confusion": confusion(det),
            "nhi_false_degraded_minutes": self.nhi_false_degraded_minutes,
            "nhi_degraded_periods": len(self.nhi),
            "nhi_delay_intervals_max": max(nd) if nd else None,
        }

    def detection(self) -> dict[str, Any]:
        n = len(self.faults)
        delays = [f["delay_intervals"] for f in self.faults if f["detected"]]
        return {
            "faults": n,
            "detected": sum(f["detected"] for f in self.faults),
            "recall": sum(f["detected"] for f in self.faults) / n if n else None,
            "alerts": self.alerts,
            "precision": self.credited / self.alerts if self.alerts else None,
            "median_delay_intervals": statistics.median(delays) if delays else None,
            "false_alarms": self.false_alarms,
            "fault_free_pair_windows": self.fault_free_pair_windows,
            "false_alarms_per_1000_pair_windows":
                1000.0 * self.false_alarms / self.fault_free_pair_windows if self.fault_free_pair_windows else 0.0,
        }

    def as_json(self) -> dict[str, Any]:
        return {"scenario": self.name, "source": self.source, "realism": self.realism, "detection": self.detection(),
                "attribution": self.attribution(), "faults": self.faults, "totals": self.totals,
                "nhi": [{"scope_kind": k, "scope": s, "start_s": a - self.start, "end_s": b - self.start}
                        for k, s, a, b in self.nhi],
                "run": {"intervals": self.intervals, "reports": self.reports, "samples": self.samples,
                        "seconds": round(self.seconds, 2), "detector_state_bytes": self.state}}


def _fault_keys(sim: Simulator, f: Fault) -> set[tuple[str, str, str]]:
    ids, t = sim.instance_ids, sim.topology
    sub = [t.instances[i].subnet for i in ids]
    keys: set[tuple[str, str, str]] = set()
    for a, b in f.touched:
        keys |= {("pair", sub[a], sub[b]), ("pair", sub[b], sub[a]),
                 ("instance", ids[a], sub[b]), ("instance", ids[b], sub[a])}
    return keys


def evaluate(source: str | Path | Mapping[str, Any], *, detector: str = "baseline",
             params: Mapping[str, float] | None = None, window_s: int = 600, lateness_s: int = 120,
             progress: Callable[[int, int], None] | None = None, realism: Any = None,
             instances: bool = True) -> EvalResult:
    """Run one scenario in simulated time; see the module docstring for the scores.

    ``realism``: None = the scenario's own ``realism:`` (default smooth), else ``smooth``,
    ``realistic`` or a mapping (:func:`pipeline.sim.simulator.parse_realism`). ``instances``: the
    worker's ``detect_instances`` (False: pair keys only, as ``FLOWMON_DETECT_INSTANCES=false``).
    """
    sc = load_scenario(source)
    if sc.duration_s is None:
        raise ValueError(f"scenario {sc.source}: 'duration:' is required for eval")
    name = str(sc.raw.get("name") or Path(str(sc.source)).stem)
    sim = Simulator.from_scenario(sc, start=EPOCH, realism=realism)
    iv_s = sim.interval_s
    end = EPOCH + -(-sc.duration_s // iv_s) * iv_s

    faults: list[dict[str, Any]] = []  # filled once the stream is over: the simulator records what it touched

    def stream() -> Iterator[tuple[float, dict[str, Any]]]:
        yield from sim.deliveries(sc.duration_s)
        faults.extend({"name": f.name, "kind": f.kind, "target": {f.target_kind: f.target}, "start": EPOCH + f.start,
                       "end": min(EPOCH + f.end, end), "cause": f.cause, "keys": _fault_keys(sim, f)}
                      for f in sim.faults)

    res = evaluate_stream(sim.topology, stream(), faults, name=name, source=str(sc.source), interval_s=iv_s,
                          start=EPOCH, duration_s=sc.duration_s, detector=detector, params=params,
                          window_s=window_s, lateness_s=lateness_s, progress=progress, instances=instances)
    res.realism = sim.realism_label
    return res


def evaluate_many(sources: list[str | Path], *, jobs: int = 1, done: Callable[[EvalResult], None] | None = None,
                  **options: Any) -> list[EvalResult]:
    """:func:`evaluate` of each source (``options``: its keyword arguments but ``progress``), in order.

    ``jobs`` > 1 runs that many scenarios at once, each in a process of its own (spawned: the caller
    may hold threads); the results are the same as one at a time (each run is seeded by its scenario),
    and ``done`` is called as each finishes. An error in one (a bad scenario file) is raised here, the
    scenario in its ``__notes__``.
    """
    jobs = min(jobs, len(sources))
    if jobs <= 1:
        out = []
        for src in sources:
            try:
                out.append(evaluate(src, **options))
            except Exception as exc:
                exc.add_note(str(src))
                raise
            if done is not None:
                done(out[-1])
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(evaluate, src, **options): src for src in sources}
        try:
            for f in as_completed(futures):
                exc = f.exception()
                if exc is not None:  # the first error, as it happens, with the scenario it came from
                    exc.add_note(str(futures[f]))
                    raise exc
                if done is not None:
                    done(f.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        return [f.result() for f in futures]


def _identity(r: Mapping[str, Any]) -> tuple[Any, ...]:
    """A report's identity: its ``report_id`` if it has one, else instance, start and content."""
    rid = r.get("report_id")
    if rid is not None:
        return ("id", str(r.get("instance")), str(rid))
    canon = orjson.dumps(r, option=orjson.OPT_SORT_KEYS)
    return ("content", hashlib.blake2b(canon, digest_size=16).digest())


def evaluate_stream(topology: Any, deliveries: Iterable[tuple[float, Mapping[str, Any] | bytes]],
                    faults: list[dict[str, Any]], *, name: str, source: str, interval_s: int, start: int,
                    duration_s: int, detector: str = "baseline", params: Mapping[str, float] | None = None,
                    window_s: int = 600, lateness_s: int = 120,
                    progress: Callable[[int, int], None] | None = None, instances: bool = True) -> EvalResult:
    """Run a stream of reports through the worker's cores and score it against ``faults``.

    ``deliveries``: ``(arrival time, report dict or its bytes)`` in arrival order, as one
    reports partition carries them. After each report, when the largest ``start`` processed
    so far rose, a progress mark ``ProgressMark(0, max_start)`` follows (what
    ``ingest.progress.SourceProgress`` promises); at the end an idle mark closes everything.
    ``faults``: dicts with ``name, kind, target, start, end`` (Unix s), ``cause`` and ``keys``
    (a set of ``("pair", src_subnet, dst_subnet)`` / ``("instance", instance, dst_subnet)``);
    read after the stream is exhausted. ``start``/``duration_s``: the simulated span
    (fault times are reported relative to ``start``).

    Besides the detection scores, every closed 10-minute window is compared with
    :func:`~pipeline.sim.simulator.expected_totals` over the *unique* delivered reports (a
    re-sent report counts once: same ``report_id``, or same instance, start and content):
    ``EvalResult.totals``.
    """
    topo = load_topology(topology)
    iv_s = int(interval_s)
    run = _Run(topo, iv_s, window_s, lateness_s, detector, params, instances)
    n_iv = -(-int(duration_s) // iv_s)
    t_start = time.perf_counter()
    max_start: int | None = None
    shown = 0
    for arrival, item in deliveries:
        t = run.report(arrival, item, name)
        if max_start is None or t > max_start:
            max_start = t
            run.feed(ProgressMark(0, max_start))
            if progress:
                done = min(n_iv, max(0, (max_start - start) // iv_s + 1))
                if done != shown:
                    shown = done
                    progress(done, n_iv)
    end = start + n_iv * iv_s
    last = max(end, max_start if max_start is not None else end)
    run.feed(ProgressMark(0, last, idle=last + window_s + lateness_s))  # the stream is over: close everything
    recs, changes = run.stage.finish()
    run.attributions.extend(recs)
    run.nhi.extend(changes)
    if progress:
        progress(n_iv, n_iv)
    seconds = time.perf_counter() - t_start
    return _score(run, faults, name=name, source=source, interval_s=iv_s, start=start, window_s=window_s,
                  intervals=n_iv, seconds=seconds)


class _Run:
    """One stream through the worker's cores: ingest, one pairs partition's step, attribution."""

    def __init__(self, topo: Any, iv_s: int, window_s: int, lateness_s: int, detector: str,
                 params: Mapping[str, float] | None, instances: bool = True) -> None:
        self.core = Ingest(Validator(topo, max_future_s=10**9, max_message_bytes=1 << 30), window_s, 1, grid_s=iv_s)
        self.step = PartitionStep(PartitionWindows(0, window_s, lateness_s, 1, grid_s=iv_s),
                                  Detection(interval_s=iv_s, window_s=window_s, model=detector, params=params,
                                            instances=instances))
        self.stage = AttributionStage(1, iv_s)
        self.events: list[dict[str, Any]] = []
        self.attributions: list[dict[str, Any]] = []
        self.nhi: list[dict[str, Any]] = []
        self.closed: dict[tuple[str, str, int], FlowWindow] = {}
        self.expected = TotalsAccumulator(window_s, topo)
        self.seen: set[tuple[Any, ...]] = set()
        self.late_samples = self.late_partials = self.duplicates = 0
        self.reports = self.samples = 0

    def report(self, arrival: float, item: Mapping[str, Any] | bytes, name: str) -> int:
        """Ingest one delivered report and feed its pairs messages; returns its start."""
        if isinstance(item, bytes | bytearray | memoryview):
            raw = bytes(item)
            r = orjson.loads(raw)
        else:
            r = item
            raw = orjson.dumps(r)
        res = self.core.process(raw, "sim", 0, self.reports, arrival)
        if res.deadletters:
            raise RuntimeError(f"stream {name}: report {self.reports} is invalid: {res.deadletters[0]}")
        ident = _identity(r)
        if ident in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(ident)
            self.expected.add(r)
        self.reports += 1
        self.samples += res.accepted
        for payload in res.messages.values():
            for msg in decode_pairs(payload):
                self.feed(msg)
        return res.start if res.start is not None else int(r["start"])

    def feed(self, msg: Any) -> None:
        """One pairs message through the step; its health to the attribution stage."""
        out: StepOutput = self.step.apply(msg)
        if out.detect_errors:
            raise RuntimeError("detection failed (see the log)")
        self.events.extend(e.to_wire() for e in out.alerts)
        update = self.step.take_health()
        if update is not None:
            recs, changes = self.stage.apply(update.message())
            self.attributions.extend(recs)
            self.nhi.extend(changes)
        for rec in out.closed:
            self.closed[(rec.src_subnet, rec.dst_subnet, rec.window_start)] = rec
        self.late_partials += len(out.late)
        self.late_samples += sum(lp.partial.counters[SAMPLES] for lp in out.late)


def _score(run: _Run, faults: list[dict[str, Any]], *, name: str, source: str, interval_s: int, start: int,
           window_s: int, intervals: int, seconds: float) -> EvalResult:
    """The run's ``EvalResult``: totals, then detection and attribution scores (``sim.score``)."""
    totals = window_totals(run.expected.result(), run.closed)
    totals.update(late_samples=run.late_samples, late_partials=run.late_partials,
                  unique_reports=len(run.seen), duplicate_reports=run.duplicates)
    opened = [e for e in run.events if e["event"] == "opened"]
    credited, per_fault = credit(opened, faults, interval_s)
    periods = nhi_periods(run.nhi)
    res = EvalResult(name, source, interval_s, run.events,
                     fault_outcomes(faults, per_fault, run.attributions, periods, interval_s, start),
                     len(opened), sum(len(c) for c in per_fault),
                     false_alarms(opened, credited, faults, interval_s, window_s),
                     fault_free_windows(run.closed, faults, interval_s, window_s), intervals, run.reports,
                     run.samples, seconds, run.step.detection.state_bytes() if run.step.detection else {})
    res.attributions = run.attributions
    res.nhi = periods
    res.nhi_false_degraded_minutes = nhi_false_degraded_minutes(periods, faults, interval_s)
    res.totals = totals
    res.start = start
    res.closed = run.closed
    res.nhi_records = run.nhi
    return res


def suite_summary(results: Iterable[EvalResult]) -> dict[str, Any]:
    """Pooled scores over several scenarios (faults, alerts and pair-windows summed)."""
    rs = list(results)
    faults = [f for r in rs for f in r.faults]
    delays = [f["delay_intervals"] for f in faults if f["detected"]]
    alerts = sum(r.alerts for r in rs)
    free = sum(r.fault_free_pair_windows for r in rs)
    fa = sum(r.false_alarms for r in rs)
    return {
        "scenarios": len(rs), "faults": len(faults), "detected": sum(f["detected"] for f in faults),
        "recall": sum(f["detected"] for f in faults) / len(faults) if faults else None,
        "alerts": alerts, "precision": sum(r.credited for r in rs) / alerts if alerts else None,
        "median_delay_intervals": statistics.median(delays) if delays else None,
        "false_alarms": fa, "fault_free_pair_windows": free,
        "false_alarms_per_1000_pair_windows": 1000.0 * fa / free if free else 0.0,
        "max_state_bytes_per_key": max((r.state.get("max", 0) for r in rs), default=0),
        "attribution_accuracy": (sum(f["cause_given"] == f["cause_truth"] for f in faults if f["detected"])
                                 / max(1, sum(f["detected"] for f in faults))),
        "confusion": confusion([f for f in faults if f["detected"]]),
        "nhi_false_degraded_minutes_workload_only": sum(
            r.nhi_false_degraded_minutes for r in rs if r.faults and all(f["cause_truth"] != "infrastructure"
                                                                         for f in r.faults)),
        "nhi_false_degraded_minutes": sum(r.nhi_false_degraded_minutes for r in rs),
        "seconds": round(sum(r.seconds for r in rs), 1),
        "totals": {k: sum(r.totals.get(k, 0) for r in rs) for k in _TOTALS_KEYS},
        "realism": sorted({str(r.realism) for r in rs}),
    }


_TOTALS_KEYS = ("windows", "exact", "wrong", "missing", "unexpected", "late_samples", "late_partials",
                "unique_reports", "duplicate_reports")
