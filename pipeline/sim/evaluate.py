"""Scenario evaluation: run a scenario through the detection code in simulated time and score it.

``flowmon eval SCENARIO.yaml [--json]``. In-process, no broker: the simulator's reports
go through the very cores the Faust agents run (``ingest.Ingest`` → pairs messages →
``windows.PartitionWindows`` → complete intervals → ``detect.Detection``), one source,
marks after every interval, so the alerts are those the Kafka path emits
(``tests/integration/test_detection.py`` checks it on a scenario, on both brokers).

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

from pipeline.attribute.correlate import AttributionStage
from pipeline.detect.detection import Detection
from pipeline.ingest.step import Ingest
from pipeline.ingest.preagg import PARTIAL_COUNTERS
from pipeline.sim.scenario import load_scenario
from pipeline.sim.simulator import Fault, Simulator
from pipeline.sim.totals import TOTAL_FIELDS as _TOTAL_FIELDS, TotalsAccumulator
from pipeline.ingest.topology import load_topology
from pipeline.ingest.validate import Validator
from pipeline.aggregate.windows import PartitionWindows

__all__ = ["EPOCH", "EvalResult", "evaluate", "evaluate_stream", "suite_summary", "match"]

#: Simulated time of every scenario's start: 2025-11-25 00:00 UTC (a midnight, so ``diurnal`` peaks at 12:00).
EPOCH = 1764028800

_SAMPLES = PARTIAL_COUNTERS.index("samples")


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

    def attribution(self) -> dict[str, Any]:
        det = [f for f in self.faults if f["detected"]]
        right = [f for f in det if f["cause_given"] == f["cause_truth"]]
        nd = [f["nhi_delay_intervals"] for f in det if f["cause_truth"] == "infrastructure"
              and f["nhi_delay_intervals"] is not None]
        return {
            "accuracy": len(right) / len(det) if det else None,
            "detected_faults": len(det), "right": len(right),
            "confusion": _confusion(det),
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
    ids, t = sim._ids, sim.topology
    sub = [t.instances[i].subnet for i in ids]
    keys: set[tuple[str, str, str]] = set()
    for a, b in f.touched:
        keys |= {("pair", sub[a], sub[b]), ("pair", sub[b], sub[a]),
                 ("instance", ids[a], sub[b]), ("instance", ids[b], sub[a])}
    return keys


def _key(e: Mapping[str, Any]) -> tuple[str, str, str]:
    if e["scope"] == "pair":
        return ("pair", e["src_subnet"], e["dst_subnet"])
    return ("instance", e["instance"], e["dst_subnet"])


def match(alerts: list[Mapping[str, Any]], faults: list[dict[str, Any]], interval_s: int) -> dict[str, int | None]:
    """``alert_id -> index of the credited fault (or None)``; ``faults`` items need start/end (Unix s) and keys.

    >>> f = [{"start": 100, "end": 200, "keys": {("pair", "a", "b")}},
    ...      {"start": 150, "end": 300, "keys": {("pair", "a", "b"), ("pair", "c", "d")}}]
    >>> al = [{"alert_id": "x", "scope": "pair", "src_subnet": "a", "dst_subnet": "b", "first_seen": 160},
    ...       {"alert_id": "y", "scope": "pair", "src_subnet": "c", "dst_subnet": "d", "first_seen": 110},
    ...       {"alert_id": "z", "scope": "pair", "src_subnet": "e", "dst_subnet": "f", "first_seen": 160}]
    >>> match(al, f, 30)
    {'x': 1, 'y': None, 'z': None}
    """
    out: dict[str, int | None] = {}
    for a in alerts:
        k, t = _key(a), a["first_seen"]
        best = None
        for i, f in enumerate(faults):
            if k in f["keys"] and f["start"] - interval_s <= t < f["end"] + 2 * interval_s:
                if best is None or f["start"] > faults[best]["start"]:
                    best = i
        out[a["alert_id"]] = best
    return out


def evaluate(source: str | Path | Mapping[str, Any], *, detector: str = "baseline",
             params: Mapping[str, float] | None = None, window_s: int = 600, lateness_s: int = 120,
             progress: Callable[[int, int], None] | None = None, realism: Any = None) -> EvalResult:
    """Run one scenario in simulated time; see the module docstring for the scores.

    ``realism``: None = the scenario's own ``realism:`` (default smooth), else ``smooth``,
    ``realistic`` or a mapping (:func:`pipeline.sim.simulator.parse_realism`).
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
                          window_s=window_s, lateness_s=lateness_s, progress=progress)
    res.realism = sim.realism_label
    return res


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
                    progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Run a stream of reports through the worker's cores and score it against ``faults``.

    ``deliveries``: ``(arrival time, report dict or its bytes)`` in arrival order, as one
    reports partition carries them. After each report, when the largest ``start`` processed
    so far rose, a progress mark ``{"mark": [0, max_start]}`` follows (what
    ``ingest.SourceProgress`` promises); at the end an idle mark closes everything.
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
    core = Ingest(Validator(topo, max_future_s=10**9, max_message_bytes=1 << 30), window_s, 1, grid_s=iv_s)
    pw = PartitionWindows(0, window_s, lateness_s, 1, grid_s=iv_s)
    det = Detection(interval_s=iv_s, window_s=window_s, model=detector, params=params)
    stage = AttributionStage(1, iv_s)
    events: list[dict[str, Any]] = []
    attributions: list[dict[str, Any]] = []
    nhi: list[dict[str, Any]] = []
    pair_windows: set[tuple[str, str, int]] = set()
    closed: dict[tuple[str, str, int], dict[str, Any]] = {}
    expected = TotalsAccumulator(window_s, topo)
    seen: set[tuple[Any, ...]] = set()
    late_samples = late_partials = duplicates = 0
    n_iv = -(-int(duration_s) // iv_s)
    t_start = time.perf_counter()
    reports = samples = 0

    def feed(msg: dict) -> None:
        nonlocal late_samples, late_partials
        out = pw.apply(msg)
        new: list[dict[str, Any]] = []
        for iv in out.intervals:
            new.extend(det.interval(iv))
        events.extend(new)
        if out.intervals:
            recs, changes = stage.apply({"p": 0, "upto": max(iv["t"] for iv in out.intervals),
                                         "health": det.take_health(),
                                         "opened": [e for e in new if e["event"] == "opened"]})
            attributions.extend(recs)
            nhi.extend(changes)
        for rec in out.closed:
            pair_windows.add((rec["src_subnet"], rec["dst_subnet"], rec["window_start"]))
            closed[(rec["src_subnet"], rec["dst_subnet"], rec["window_start"])] = rec
        late_partials += len(out.late)
        late_samples += sum(part["c"][_SAMPLES] for part, _ in out.late)

    max_start: int | None = None
    shown = 0
    for arrival, item in deliveries:
        if isinstance(item, bytes | bytearray | memoryview):
            raw = bytes(item)
            r = orjson.loads(raw)
        else:
            r = item
            raw = orjson.dumps(r)
        res = core.process(raw, "sim", 0, reports, arrival)
        if res.deadletters:
            raise RuntimeError(f"stream {name}: report {reports} is invalid: {res.deadletters[0]}")
        ident = _identity(r)
        if ident in seen:
            duplicates += 1
        else:
            seen.add(ident)
            expected.add(r)
        reports += 1
        samples += res.accepted
        for payload in res.messages.values():
            feed(orjson.loads(payload))
        t = res.start if res.start is not None else int(r["start"])
        if max_start is None or t > max_start:
            max_start = t
            feed({"mark": [0, max_start]})
            if progress:
                done = min(n_iv, max(0, (max_start - start) // iv_s + 1))
                if done != shown:
                    shown = done
                    progress(done, n_iv)
    end = start + n_iv * iv_s
    last = max(end, max_start if max_start is not None else end)
    feed({"mark": [0, last], "idle": last + window_s + lateness_s})  # the stream is over: close everything
    recs, changes = stage.finish()
    attributions.extend(recs)
    nhi.extend(changes)
    if progress:
        progress(n_iv, n_iv)
    seconds = time.perf_counter() - t_start

    # --- totals: closed windows against the unique reports ------------------------------
    want = expected.result()
    keys = want.keys() | closed.keys()
    exact = sum(1 for k in keys if k in want and k in closed
                and all(closed[k][f] == want[k][f] for f in _TOTAL_FIELDS))
    totals = {"windows": len(keys), "exact": exact, "wrong": len(keys) - exact,
              "missing": len(want.keys() - closed.keys()), "unexpected": len(closed.keys() - want.keys()),
              "late_samples": late_samples, "late_partials": late_partials,
              "unique_reports": len(seen), "duplicate_reports": duplicates}

    # --- score -----------------------------------------------------------------------
    opened = [e for e in events if e["event"] == "opened"]
    credit = match(opened, faults, iv_s)
    per_fault: list[list[dict]] = [[] for _ in faults]
    for a in opened:
        i = credit[a["alert_id"]]
        if i is not None:
            per_fault[i].append(a)
    busy = [(f["start"] - iv_s, f["end"] + 2 * iv_s) for f in faults]

    def fault_free(ws: int) -> bool:
        return all(ws + window_s <= s or ws >= e for s, e in busy)

    free_windows = sum(1 for (_, _, ws) in pair_windows if fault_free(ws))
    false_alarms = sum(1 for a in opened if credit[a["alert_id"]] is None
                       and fault_free(a["first_seen"] // window_s * window_s))
    cause_of = {a["alert_id"]: a for a in attributions}
    periods = _nhi_periods(nhi)
    infra = [(f["start"], f["end"] + 2 * iv_s + 4 * iv_s) for f in faults if f["cause"] == "infrastructure"]
    false_min = sum(_outside(s0, e0, infra) for _, _, s0, e0 in periods) / 60.0
    fault_out = []
    for f, credited in zip(faults, per_fault):
        first = min((a["at"] for a in credited), default=None)  # when it was flagged (first_seen may be earlier)
        causes = [cause_of[a["alert_id"]]["cause"] for a in credited if a["alert_id"] in cause_of]
        given = _majority_cause(causes) if credited else None
        nhi_first = min((s0 for _, _, s0, e0 in periods if f["start"] <= s0 < f["end"] + 2 * iv_s), default=None)
        fault_out.append({
            "name": f["name"], "kind": f["kind"], "target": f["target"], "start_s": f["start"] - start,
            "end_s": f["end"] - start, "detected": bool(credited),
            "delay_intervals": None if first is None else max(1, (first - f["start"]) // iv_s + 1),
            "alerts": len(credited), "metrics": sorted({a["metric"] for a in credited}),
            "cause_truth": f["cause"], "cause_given": given,
            "causes_of_alerts": {c: causes.count(c) for c in sorted(set(causes))},
            "nhi_delay_intervals": None if nhi_first is None or first is None else (nhi_first - first) // iv_s,
        })
    res = EvalResult(name, source, iv_s, events, fault_out, len(opened), sum(len(c) for c in per_fault),
                     false_alarms, free_windows, n_iv, reports, samples, seconds, det.state_bytes())
    res.attributions = attributions
    res.nhi = periods
    res.nhi_false_degraded_minutes = false_min
    res.totals = totals
    res.start = start
    return res


def _majority_cause(causes: list[str]) -> str:
    """The cause most credited alerts got, undetermined ones aside unless they are all there is."""
    determined = [c for c in causes if c != "undetermined"] or causes
    if not determined:
        return "undetermined"
    order = {"infrastructure": 0, "workload": 1, "undetermined": 2}
    return min(set(determined), key=lambda c: (-determined.count(c), order[c]))


def _nhi_periods(records: list[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    """Final (scope_kind, scope, start, end) of every degraded period (the latest record of each wins)."""
    last: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in records:
        last[(r["scope_kind"], r["scope"], r["start"])] = r
    return sorted((k, s, st, r["end"] if r["end"] is not None else st) for (k, s, st), r in last.items())


def _outside(start: int, end: int, spans: list[tuple[int, int]]) -> int:
    """Seconds of [start, end) not covered by any span."""
    cuts = sorted((max(a, start), min(b, end)) for a, b in spans if b > start and a < end)
    covered, cur = 0, start
    for a, b in cuts:
        if b > cur:
            covered += b - max(a, cur)
            cur = b
    return (end - start) - covered


def _confusion(faults: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """truth -> given -> count, over detected faults."""
    out: dict[str, dict[str, int]] = {}
    for f in faults:
        row = out.setdefault(str(f["cause_truth"]), {})
        row[str(f["cause_given"])] = row.get(str(f["cause_given"]), 0) + 1
    return out


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
        "confusion": _confusion([f for f in faults if f["detected"]]),
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
