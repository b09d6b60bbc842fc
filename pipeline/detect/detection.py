"""Online anomaly detection per key and agent interval, with river.

Pure, no Kafka. ``windows.PartitionWindows`` hands over every complete agent interval
of a pair (``Outcome.intervals``: per-host counters); :class:`Detection` turns each into
one observation per *key* and scores it against what the key has learned so far:

* a ``pair`` key: all reporters of ``src_subnet`` towards ``dst_subnet``;
* an ``instance`` key: one reporter towards ``dst_subnet`` (attribution needs these).

Metrics (see :func:`observe`):

* ``retrans_rate``: retransmissions per segment sent, segments = ``bytes_sent / 1448``
  (one MSS). Per segment rather than per MB or per flow because it estimates the
  packet-loss fraction itself: it does not move when traffic surges or shrinks, and it
  reads the same as the ``loss`` magnitude of a fault.
* ``timeout_rate``: retransmission timeouts per flow-interval.
* ``rtt_p50`` and ``rtt_p90`` (µs, the median and p90 of the interval's RTT observations,
  from its log histogram): the median, not the mean, so one flow's spike does not move it.

The model (:class:`Baseline`, chosen by measured precision/recall against river's
``anomaly.GaussianScorer``, ``anomaly.HalfSpaceTrees`` and ``drift.PageHinkley``; see
``flowmon eval --detector`` and the README) learns with river's ``stats.EWMean`` /
``stats.EWVar``:

* counts (retransmissions vs segments, timeouts vs flows): exponentially weighted
  means of the count and of its exposure, whose ratio is a volume-weighted baseline
  rate; the score is the Anscombe-transformed Poisson deviation
  ``2 (sqrt(k + 3/8) - sqrt(mu + 3/8))`` of the observed count ``k`` from
  ``mu = rate x exposure``. So a surge raises ``k`` and ``mu`` together: no alarm.
* RTT: exponentially weighted mean and variance of ``log(rtt)``; the score is the
  z-score of this interval's ``log(rtt)``.

A metric is *anomalous* when its score reaches ``z`` (default 5) and the deviation is
also large in absolute terms (``min_*`` parameters: 0.1 % of segments, 0.05 timeouts per
flow, RTT x 1.3 and +300 µs), after ``warmup`` learned intervals. As river's
``AnomalyFilter`` does, a model never learns from an interval it flagged, so a long
fault (or a slow degradation, once flagged) does not become the new normal.

Alerts (``alerts.AlertBook``) turn flags into ``opened`` / ``updated`` / ``resolved``
events (``schemas/wire/flow_anomaly.v1.json``).

Examples
--------
Two hosts of ``s1`` talk to ``s2``; both start losing packets on all their connections. The
pair key sees it at once (no single reporter or remote explains it); each instance key, one
host's evidence spread over its connections, once it has lasted ``confirm_wide_after`` (2)
intervals, dated from the first (one connection's evidence would need ``confirm_after``, 3):

>>> d = Detection(interval_s=30, window_s=600)
>>> def iv(t, rtt_us, retrans=0):
...     c = [15_000_000, 150_000, retrans, 0, 3, 3, 3, 3 * rtt_us]   # preagg.PARTIAL_COUNTERS
...     x = [retrans // 3, 0]                                           # the largest one-sample counts
...     host = lambda i: [c, {}, x, [f"10.0.1.{i}", None, None], f"10.0.0.{i}", {}]
...     return {"t": t, "src": ["s1", "a1", "v"], "dst": ["s2", "a2", "v"], "hosts": {"s1/0": host(4), "s1/1": host(5)}}
>>> events = [e for k in range(40) for e in d.interval(iv(30 * k, 800 + 10 * (k % 3)))]
>>> events
[]
>>> [(e["event"], e["scope"], e["metric"]) for e in d.interval(iv(1200, 800, retrans=400))]
[('opened', 'pair', 'retrans_rate')]
>>> [(e["event"], e["scope"], e["instance"], e["first_seen"], e["severity"])
...  for e in d.interval(iv(1230, 800, retrans=400))]
[('updated', 'pair', None, 1200, 'critical'), ('opened', 'instance', 's1/0', 1200, 'critical'), ('opened', 'instance', 's1/1', 1200, 'critical')]
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from river import anomaly, drift, preprocessing, stats

from pipeline.detect.lifecycle import AlertBook
from pipeline.wire.rtt import merge_into, quantile

__all__ = ["METRICS", "MSS", "Observation", "observe", "Baseline", "MODELS", "Detection", "DEFAULTS"]

#: Bytes per segment used to turn bytes_sent into segments (Ethernet MSS).
MSS = 1448

METRICS = ("retrans_rate", "timeout_rate", "rtt_p50", "rtt_p90")

#: Detection parameters (``Detection(params=...)`` overrides; every model reads what it needs).
DEFAULTS: dict[str, float] = {
    "z": 5.0,  # score needed to flag
    "fading": 0.02,  # EW learning rate per interval (~50 intervals of memory)
    "warmup": 20,  # intervals learned before a key may flag (10 minutes at 30 s)
    "min_segments": 500,  # fewer segments sent in an interval: retrans_rate not scored
    "min_retrans": 5,
    "min_retrans_excess": 0.001,  # observed - expected, per segment
    "min_flows": 1,
    "min_timeouts": 3,
    "min_timeout_excess": 0.05,  # per flow
    "min_rtt_ratio": 1.3,
    "min_rtt_count_p90": 10,  # fewer RTT observations in an interval: no p90 (it would be the maximum)
    "min_rtt_excess_us": 300.0,
    "rtt_sd_floor": 0.05,
    "rtt_count_cap": 16,  # RTT samples beyond this many per interval do not narrow the band further  # in log units: never trust a spread below 5 %
    "rate_floor_retrans": 1e-5,
    "rate_floor_timeouts": 1e-3,
    "confirm_after": 3,  # hot intervals in a row that flag a metric whose evidence is narrow (one connection, a tail):
    # a burst or a spike may straddle two agent intervals; a third is a lasting problem
    "confirm_wide_after": 2,  # ... whose evidence is wide (many connections, but one reporter: a host's own problem)
    "rtt_broad_samples": 3,  # remote endpoints behind an interval's median RTT for it to be broad evidence on its own
    "dispersion_cap": 25.0,  # one interval's squared residual counts at most this much in the learned dispersion
    "trim_largest": 1,  # 1: a count is broad evidence only if it stays hot with its largest sample set aside (0: always)
    "learn_dispersion": 0,  # 1: scale count scores by the key's learned overdispersion (0, measured better: Poisson)
    "score_p90": 0,  # 1: also alert on the RTT tail (p90); 0 (measured better): the median only
    "rtt_clip": 2.0,  # an RTT deviation is learned clipped at this many spreads (a slow creep must not widen the band)
    "resolve_after": 4,  # normal intervals before an alert resolves
    "silent_after": 20,  # intervals without data before an open alert resolves as 'silent'
}

# counters layout of preagg partials
_BS, _BR, _RT, _TO, _FL, _NS, _RC, _RSUM = range(8)


@dataclass(slots=True)
class Observation:
    """One key over one interval (inputs of the metrics).

    ``retrans_max`` / ``timeouts_max``: the largest part of the count that *one unit* explains
    — one sample (a connection's burst) for an instance key; one reporter (a host's own
    hiccup) or one remote endpoint (an incast at one receiver) for a pair key.
    ``rtt_p50`` is the median over samples of each sample's own median RTT (every remote
    endpoint counts once, however many observations one flow contributed), over
    ``rtt_samples`` samples; ``rtt_p50_rest`` the same with the reporter of the highest
    median set aside (0: not computed); ``rtt_p90`` is over all ``rtt_count`` observations.
    ``one_reporter``: the key is one reporter's (an instance key), whose evidence is never
    broad — a host-local transient can touch all its connections at once.
    ``*_max_remote``: the largest part one remote endpoint explains: evidence that survives
    setting it aside is *wide* (several connections), which confirms in two intervals.
    """

    segments: float
    retrans: int
    timeouts: int
    flows: int
    rtt_count: int
    rtt_p50: float  # µs, from the interval's log histogram (0 when rtt_count is 0)
    rtt_p90: float  # µs
    retrans_max: int = 0
    timeouts_max: int = 0
    retrans_max_remote: int = 0  # the largest part one remote endpoint explains (one sample, for an instance key)
    timeouts_max_remote: int = 0
    rtt_samples: int = 0
    rtt_p50_rest: float = 0.0
    one_reporter: bool = True

    def n(self, metric: str) -> int:
        """How many observations an RTT metric rests on."""
        return self.rtt_samples if metric == "rtt_p50" else self.rtt_count

    def value(self, metric: str) -> float | None:
        """The metric's value, or None when the interval carries no evidence for it."""
        if metric == "retrans_rate":
            return self.retrans / self.segments if self.segments > 0 else None
        if metric == "timeout_rate":
            return self.timeouts / self.flows if self.flows > 0 else None
        if self.rtt_count == 0:
            return None
        return self.rtt_p50 if metric == "rtt_p50" else self.rtt_p90


def observe(c: list[int], h: Mapping[int, int], x: tuple[int, int] | list[int] = (0, 0),
            m: Mapping[int, int] | None = None) -> Observation:
    """Observation from summed partial counters ``c``, RTT histogram ``h``, one-sample maxima ``x``
    and the histogram ``m`` of the samples' median RTTs.

    >>> o = observe([14_480_000, 0, 20, 1, 4, 4, 4, 4000], {}, [12, 1])
    >>> o.segments, o.value("retrans_rate"), o.value("timeout_rate"), o.rtt_p50, o.retrans_max
    (10000.0, 0.002, 0.25, 1000.0, 12)
    """
    rc = c[_RC]
    mean = c[_RSUM] / rc if rc else 0.0
    ns = sum(m.values()) if m else 0
    return Observation(c[_BS] / MSS, c[_RT], c[_TO], c[_FL], rc,
                       quantile(m, 0.5) if ns else (quantile(h, 0.5) if rc and h else mean),
                       quantile(h, 0.9) if rc and h else mean, int(x[0]), int(x[1]), int(x[0]), int(x[1]),
                       ns if ns else min(rc, 1))


@dataclass(slots=True)
class Verdict:
    """A model's judgement of one metric in one interval.

    ``hot``: the deviation passes the score and the absolute thresholds in this interval;
    ``flagged``: it is also confirmed — broad (not explained by one connection or a few
    flows) or hot ``confirm_after`` intervals in a row; ``streak``: hot intervals in a row
    up to this one; ``wide``: the evidence is spread over connections (not one connection's
    burst or one flow's spike), though it may still be one host's.
    """

    flagged: bool
    score: float
    observed: float
    expected: float
    hot: bool = False
    streak: int = 0
    wide: bool = False


def _winsorized_var(c: float) -> float:
    """Variance of a standard normal clipped at ±c (a clipped-deviation variance divided by it is unbiased).

    >>> round(_winsorized_var(2.0), 3), round(_winsorized_var(10.0), 3)
    (0.92, 1.0)
    """
    phi = math.exp(-c * c / 2) / math.sqrt(2 * math.pi)
    tail = 0.5 * math.erfc(c / math.sqrt(2))
    return 1.0 - 2.0 * (c * phi + tail) + 2.0 * c * c * tail


def _anscombe(k: float, mu: float) -> float:
    return 2.0 * (math.sqrt(k + 0.375) - math.sqrt(mu + 0.375))


def _severity(metric: str, v: Verdict) -> str:
    """'critical' when the deviation hurts any application *and* has lasted two intervals or more,
    so a one-interval burst never is.

    >>> _severity("retrans_rate", Verdict(True, 9.0, 0.05, 0.0001, True, 1))
    'warning'
    >>> _severity("retrans_rate", Verdict(True, 9.0, 0.05, 0.0001, True, 2))
    'critical'
    >>> _severity("rtt_p50", Verdict(True, 9.0, 5000.0, 1000.0, True, 3))
    'critical'
    """
    if v.streak < 2:
        return "warning"
    x, e = v.observed, v.expected
    if metric == "retrans_rate":
        return "critical" if x - e >= 0.01 else "warning"
    if metric == "timeout_rate":
        return "critical" if x - e >= 0.5 else "warning"
    return "critical" if e > 0 and x >= 3 * e else "warning"


# ------------------------------------------------------------------------------------
# models: one object per key; score() then learn() each interval
# ------------------------------------------------------------------------------------
class Baseline:
    """EW baselines (river ``stats.EWMean``/``EWVar``), deviation scores, and confirmation.

    Counts (retransmissions vs segments, timeouts vs flows): the ratio of two EW means is
    the baseline rate; the score is the Anscombe deviation ``2(√(k+3/8) − √(μ+3/8))`` of
    the count ``k`` from ``μ = rate × exposure`` (with ``learn_dispersion``, divided by the
    key's learned dispersion: √ of the EW mean of past squared deviations, at least 1;
    measured and off by default). RTT: EW mean and variance of
    log(median RTT), deviations scaled by √(observations, capped). A metric is *hot* when
    its score and absolute change pass the thresholds; it is *flagged* when hot and
    either broad — a pair key's count stays hot with the largest part one reporter or one
    remote endpoint explains set aside, or its median RTT rests on ≥ ``rtt_broad_samples``
    remotes and stays hot with the worst reporter set aside — or lasting: hot
    ``confirm_wide_after`` (2) intervals in a row when the evidence is *wide* (spread over
    the connections: one host's own problem), ``confirm_after`` (3) when it is one
    connection's or one flow's (an instance key's evidence, one reporter's, is never broad).
    A model never learns from a hot interval.

    >>> m, p = Baseline(DEFAULTS), DEFAULTS
    >>> ok = Observation(10_000, 1, 0, 3, 3, 800.0, 900.0, 1, 0)
    >>> for _ in range(20):
    ...     m.learn(ok, m.score(ok))
    >>> burst = Observation(10_000, 60, 0, 3, 3, 800.0, 900.0, 58, 0)    # one connection
    >>> v = m.score(burst)["retrans_rate"]
    >>> v.hot, v.flagged
    (True, False)
    >>> m.learn(burst, {"retrans_rate": v})
    >>> broad = Observation(10_000, 60, 0, 3, 3, 800.0, 900.0, 21, 0, one_reporter=False)   # spread out
    >>> v = m.score(broad)
    >>> v["retrans_rate"].flagged, round(v["retrans_rate"].expected, 4), v["rtt_p50"].flagged
    (True, 0.0001, False)
    """

    def __init__(self, p: Mapping[str, float]) -> None:
        a = p["fading"]
        self.p = p
        self.retr = stats.EWMean(a)
        self.seg = stats.EWMean(a)
        self.tmo = stats.EWMean(a)
        self.flw = stats.EWMean(a)
        self.disp = {m: stats.EWMean(a) for m in ("retrans_rate", "timeout_rate")}
        self.rtt = {m: (stats.EWMean(a), stats.EWVar(a)) for m in ("rtt_p50", "rtt_p90")}
        # EW estimates lean towards their first values for ~1/fading intervals (EWVar starts at 0):
        # until then, the plain mean and variance of what was seen
        self.rtt0 = {m: stats.Var() for m in ("rtt_p50", "rtt_p90")}
        self.m0 = {m: stats.Mean() for m in ("rtt_p50", "rtt_p90")}
        self.settle = int(math.ceil(1.0 / a)) if a > 0 else 0
        self.seen = dict.fromkeys(METRICS, 0)  # intervals learned per metric
        self.streak = dict.fromkeys(METRICS, 0)  # hot scored intervals in a row, up to the last one

    def _dispersion(self, metric: str) -> float:
        d = self.disp[metric]
        return max(d.get(), 1.0) if self.p["learn_dispersion"] and self.seen[metric] >= self.p["warmup"] else 1.0

    def _count(self, metric: str, k: int, kmax: int, kmax_remote: int, exposure: float, num: stats.EWMean,
               den: stats.EWMean, floor: float, min_k: float, min_excess: float, o_one: bool) -> Verdict:
        p = self.p
        base = num.get() / den.get() if self.seen[metric] and den.get() > 0 else floor
        rate = max(base, floor)
        mu = rate * exposure
        sd = math.sqrt(self._dispersion(metric))

        def judge(kk: int) -> tuple[float, float, bool]:
            score = max(_anscombe(kk, mu), 0.0) / sd
            obs = kk / exposure
            return score, obs, (score >= p["z"] and kk >= min_k and obs - rate >= min_excess and obs >= 2 * rate)

        score, obs, hot = judge(k)
        broad = not o_one and (judge(k - kmax)[2] if p["trim_largest"] else hot)
        wide = judge(k - kmax_remote)[2] if p["trim_largest"] else hot
        ready = self.seen[metric] >= p["warmup"]
        streak = self.streak[metric] + 1 if hot else 0
        flagged = ready and hot and (broad or streak >= p["confirm_after"] or (wide and streak >= p["confirm_wide_after"]))
        return Verdict(flagged, score, obs, base, hot and ready, streak, wide)

    def score(self, o: Observation) -> dict[str, Verdict]:
        p = self.p
        out: dict[str, Verdict] = {}
        if o.segments >= p["min_segments"]:
            out["retrans_rate"] = self._count("retrans_rate", o.retrans, o.retrans_max, o.retrans_max_remote, o.segments, self.retr,
                                              self.seg, p["rate_floor_retrans"], p["min_retrans"],
                                              p["min_retrans_excess"], o.one_reporter)
        if o.flows >= p["min_flows"]:
            out["timeout_rate"] = self._count("timeout_rate", o.timeouts, o.timeouts_max, o.timeouts_max_remote, o.flows, self.tmo,
                                              self.flw, p["rate_floor_timeouts"], p["min_timeouts"],
                                              p["min_timeout_excess"], o.one_reporter)
        if o.rtt_count:
            for metric, x in (("rtt_p50", o.rtt_p50), ("rtt_p90", o.rtt_p90)):
                if metric == "rtt_p90" and (o.rtt_count < p["min_rtt_count_p90"] or not p["score_p90"]):
                    continue
                if not self.seen[metric]:
                    out[metric] = Verdict(False, 0.0, x, x)
                    continue
                if self.seen[metric] < self.settle:
                    m, var = self.m0[metric].get(), self.rtt0[metric].get()
                else:
                    mean, ewvar = self.rtt[metric]
                    m, var = mean.get(), ewvar.get() / _winsorized_var(p["rtt_clip"])
                # deviations are learned scaled by sqrt(observations): an interval with few RTT
                # samples is allowed a wider swing than one with many
                w = math.sqrt(min(o.n(metric), p["rtt_count_cap"]))
                sd = max(math.sqrt(max(var, 0.0)), p["rtt_sd_floor"])
                lx = math.log(max(x, 1.0))
                z = max((lx - m) * w / sd, 0.0)
                exp_us = math.exp(m)
                # a spread estimated from few intervals is itself uncertain: a little more is asked early on
                z_needed = p["z"] * (1.0 + 2.0 / self.seen[metric])
                ready = self.seen[metric] >= p["warmup"]
                def passes(v: float) -> bool:
                    zz = max((math.log(max(v, 1.0)) - m) * w / sd, 0.0)
                    return zz >= z_needed and v >= p["min_rtt_ratio"] * exp_us and v - exp_us >= p["min_rtt_excess_us"]

                hot = ready and passes(x)
                streak = self.streak[metric] + 1 if hot else 0
                # the median over >= rtt_broad_samples remotes of several reporters is not moved by one
                # flow's spike, nor by one host's hiccup (it stays hot with that reporter set aside); a tail is
                broad = (metric == "rtt_p50" and not o.one_reporter and o.rtt_samples >= p["rtt_broad_samples"]
                         and passes(o.rtt_p50_rest))
                wide = metric == "rtt_p50" and o.rtt_samples >= p["rtt_broad_samples"]
                confirmed = broad or streak >= p["confirm_after"] or (wide and streak >= p["confirm_wide_after"])
                out[metric] = Verdict(hot and confirmed, z, x, exp_us, hot, streak, wide)
        return out

    def learn(self, o: Observation, verdicts: Mapping[str, Verdict]) -> None:
        """Learn from the metrics that were scored and not hot (never from anomalies or bursts)."""
        for metric in METRICS:
            if metric not in verdicts:  # reported, but not enough evidence for it: the streak is broken
                self.streak[metric] = 0
        for metric, v in verdicts.items():
            if v.hot:
                self.streak[metric] = v.streak
                continue
            self.streak[metric] = 0
            self.seen[metric] += 1
            if metric == "retrans_rate" or metric == "timeout_rate":
                k, n = (o.retrans, o.segments) if metric == "retrans_rate" else (o.timeouts, o.flows)
                if self.seen[metric] > 1:
                    mu = max(v.expected, self.p["rate_floor_retrans" if metric == "retrans_rate"
                                                 else "rate_floor_timeouts"]) * n
                    self.disp[metric].update(min(_anscombe(k, mu) ** 2, self.p["dispersion_cap"]))
                num, den = (self.retr, self.seg) if metric == "retrans_rate" else (self.tmo, self.flw)
                num.update(k)
                den.update(n)
            else:
                mean, var = self.rtt[metric]
                lx = math.log(max(v.observed, 1.0))
                w = math.sqrt(min(o.n(metric), self.p["rtt_count_cap"]))
                if self.seen[metric] > 1:
                    settled = self.seen[metric] > self.settle
                    m = mean.get() if settled else self.m0[metric].get()
                    d = (lx - m) * w
                    if settled:  # Huber-style: a deviation counts at most rtt_clip spreads (drift, one odd interval)
                        sd = math.sqrt(max(var.get(), 0.0) / _winsorized_var(self.p["rtt_clip"]))
                        lim = self.p["rtt_clip"] * max(sd, self.p["rtt_sd_floor"])
                        d = max(-lim, min(lim, d))
                        lx = m + d / w
                    var.update(d)
                    if not settled:
                        self.rtt0[metric].update(d)
                mean.update(lx)
                self.m0[metric].update(lx)


def _scorable(o: Observation, p: Mapping[str, float]) -> list[tuple[str, float]]:
    """(metric, value) pairs a generic candidate scores: those with evidence (enough segments for retransmissions)."""
    return [(m, x) for m in METRICS if (x := o.value(m)) is not None
            and not (m == "retrans_rate" and o.segments < p["min_segments"])]


class GaussianCandidate:
    """river ``anomaly.GaussianScorer`` per metric (window 60), flag when the score >= 1 - 2 Phi(-z) on the high side."""

    def __init__(self, p: Mapping[str, float]) -> None:
        self.p = p
        self.g = {m: anomaly.GaussianScorer(window_size=60, grace_period=int(p["warmup"])) for m in METRICS}
        self.mean = {m: stats.Mean() for m in METRICS}
        self.cut = 1.0 - math.erfc(p["z"] / math.sqrt(2))  # two-sided tail of z

    def score(self, o: Observation) -> dict[str, Verdict]:
        out = {}
        for metric, x in _scorable(o, self.p):
            mean = self.mean[metric].get()
            try:
                s = self.g[metric].score_one(None, x)
            except TypeError:  # river 0.26: a constant window gives a complex sigma; any rise is then extreme
                s = 1.0 if x > mean else 0.0
            out[metric] = Verdict(s >= self.cut and x > mean, s, x, mean)
        return out

    def learn(self, o: Observation, verdicts: Mapping[str, Verdict]) -> None:
        for metric, v in verdicts.items():
            if not v.flagged:
                self.g[metric].learn_one(None, v.observed)
                self.mean[metric].update(v.observed)


class HalfSpaceCandidate:
    """river ``anomaly.HalfSpaceTrees`` on the four metrics (min-max scaled); flags every metric above its mean."""

    def __init__(self, p: Mapping[str, float]) -> None:
        self.p = p
        self.scaler = preprocessing.MinMaxScaler()
        self.hst = anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=50, seed=1)
        self.mean = {m: stats.Mean() for m in METRICS}
        self.n = 0

    def _x(self, o: Observation) -> dict[str, float]:
        return {m: math.log1p(v * 1e4 if m in ("retrans_rate", "timeout_rate") else v)
                for m in METRICS if (v := o.value(m)) is not None}

    def score(self, o: Observation) -> dict[str, Verdict]:
        x = self._x(o)
        s = self.hst.score_one(self.scaler.transform_one(x)) if self.n >= self.p["warmup"] else 0.0
        out = {}
        for metric in x:
            v = o.value(metric)
            mean = self.mean[metric].get()
            out[metric] = Verdict(s >= 0.95 and v > 1.3 * mean, s, v, mean)
        return out

    def learn(self, o: Observation, verdicts: Mapping[str, Verdict]) -> None:
        if any(v.flagged for v in verdicts.values()):
            return
        x = self._x(o)
        self.scaler.learn_one(x)
        self.hst.learn_one(self.scaler.transform_one(x))
        for metric in x:
            self.mean[metric].update(o.value(metric))
        self.n += 1


class PageHinkleyCandidate:
    """river ``drift.PageHinkley`` (mode 'up') per metric on log values; flags while a drift is detected."""

    def __init__(self, p: Mapping[str, float]) -> None:
        self.p = p
        self.ph = {m: drift.PageHinkley(min_instances=int(p["warmup"]), delta=0.05, threshold=20.0, mode="up")
                   for m in METRICS}
        self.mean = {m: stats.Mean() for m in METRICS}

    def score(self, o: Observation) -> dict[str, Verdict]:
        out = {}
        for metric, x in _scorable(o, self.p):
            ph = self.ph[metric]
            ph.update(math.log1p(x * 1e4) if metric in ("retrans_rate", "timeout_rate") else math.log(max(x, 1.0)))
            out[metric] = Verdict(ph.drift_detected, float(ph.drift_detected), x, self.mean[metric].get())
        return out

    def learn(self, o: Observation, verdicts: Mapping[str, Verdict]) -> None:
        for metric, v in verdicts.items():
            if not v.flagged:
                self.mean[metric].update(v.observed)


#: Models ``flowmon eval --detector`` can compare; ``baseline`` is the one the pipeline runs.
MODELS: dict[str, type] = {"baseline": Baseline, "gaussian": GaussianCandidate, "hst": HalfSpaceCandidate,
                           "page_hinkley": PageHinkleyCandidate}


# ------------------------------------------------------------------------------------
# state of a key: its model and its alerts, serialisable
# ------------------------------------------------------------------------------------
class _RiverUnpickler(pickle.Unpickler):
    """Loads only flowmon models and river statistics (the state topic is not trusted with code)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name in {c.__name__ for c in MODELS.values()}:
            return super().find_class(module, name)
        if module.startswith(("river.stats", "river._river_rust.stats", "river.anomaly", "river.drift",
                              "river.preprocessing", "river.utils", "collections", "river.compose", "river.proba", "river.tree")):
            return super().find_class(module, name)
        if module == "functools" and name == "partial":  # HalfSpaceTrees keeps a partial of its own code
            return super().find_class(module, name)
        if (module, name) == ("random", "Random"):
            return super().find_class(module, name)
        if module == "builtins" and name in ("dict", "list", "set", "tuple", "float", "int"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"state may not load {module}.{name}")


def dump_model(model: Any) -> str:
    return base64.b64encode(pickle.dumps(model, protocol=5)).decode()


def load_model(blob: str) -> Any:
    return _RiverUnpickler(io.BytesIO(base64.b64decode(blob))).load()


@dataclass
class KeyState:
    """Everything one key carries between intervals."""

    scope: str  # 'pair' | 'instance'
    instance: str | None
    src: list[str]
    dst: list[str]
    model: Any
    last_t: int = 0
    alerts: AlertBook = field(default_factory=AlertBook)
    hot_since: dict[str, int] = field(default_factory=dict)  # metric -> first interval of its current hot streak

    def state(self) -> dict[str, Any]:
        return {"scope": self.scope, "instance": self.instance, "src": self.src, "dst": self.dst,
                "model": dump_model(self.model), "last_t": self.last_t, "alerts": self.alerts.state(),
                "hot_since": self.hot_since}

    @classmethod
    def from_state(cls, s: Mapping[str, Any]) -> KeyState:
        return cls(s["scope"], s["instance"], list(s["src"]), list(s["dst"]), load_model(s["model"]), s["last_t"],
                   AlertBook.from_state(s["alerts"]), dict(s.get("hot_since", {})))


_FAMILY_METRICS = {"retrans": ("retrans_rate",), "timeouts": ("timeout_rate",), "lat": ("rtt_p50", "rtt_p90")}

#: Attribution counts a key as degraded from this fraction of the alert threshold on (and above its
#: baseline): correlation across the fleet wants the weaker signals too, alerting does not.
ELEVATED_FRACTION = 0.6


def _health(t: int, instance: str | None, src: list[str], dst: list[str], verdicts: Mapping[str, Verdict],
            model: Any, warmup: float, z: float) -> dict[str, Any]:
    """One instance key's interval for attribution: per family 1 (flagged or elevated), 0 (scored,
    normal) or None (no evidence, or the key is still learning); ``"weak"``, only when not empty:
    the degraded families none of whose metrics is strong (merely elevated: weaker evidence).
    Strong: flagged, or hot and spread over the key's connections — a host's own evidence is
    confirmed for *alerting* only once it lasts, but across the fleet, several hosts hot at once
    on many connections each are what correlation is for."""
    seen = getattr(model, "seen", None)
    out: dict[str, Any] = {"t": t, "r": instance, "src": src, "dst": dst}
    weak = []
    for fam, metrics in _FAMILY_METRICS.items():
        ms = [m for m in metrics if m in verdicts and (seen is None or seen[m] >= warmup)]
        flagged = any(verdicts[m].flagged or (verdicts[m].hot and verdicts[m].wide) for m in ms)
        out[fam] = None if not ms else int(flagged or any(
            verdicts[m].score >= ELEVATED_FRACTION * z and verdicts[m].observed > verdicts[m].expected for m in ms))
        if out[fam] and not flagged:
            weak.append(fam)
    if weak:
        out["weak"] = weak
    return out


class Detection:
    """Per-key models and alert lifecycles of one pairs partition (or of a whole in-process run).

    Parameters
    ----------
    interval_s
        The agents' sample interval (for 'silent' resolution and the events' ``interval_s``).
    window_s
        Reporting window: ``updated`` events are sent at most once per window.
    model
        A :data:`MODELS` name.
    params
        Overrides of :data:`DEFAULTS`.
    instances
        Also keep ``instance`` keys (one per reporter and remote subnet), which attribution needs.
    """

    def __init__(self, interval_s: int = 30, window_s: int = 600, model: str = "baseline",
                 params: Mapping[str, float] | None = None, instances: bool = True) -> None:
        if model not in MODELS:
            raise ValueError(f"unknown detector model {model!r}; one of {sorted(MODELS)}")
        unknown = set(params or {}) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown detection parameter(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        self.interval_s = interval_s
        self.window_s = window_s
        self.model_name = model
        self.p = {**DEFAULTS, **(params or {})}
        self.instances = instances
        self.keys: dict[tuple[str, str, str], KeyState] = {}
        self.dirty: set[tuple[str, str, str]] = set()
        self.open_keys: set[tuple[str, str, str]] = set()
        self.health: list[dict[str, Any]] = []  # per scored key and interval, for attribution

    def _key(self, key: tuple[str, str, str], scope: str, instance: str | None, src: list[str],
             dst: list[str]) -> KeyState:
        ks = self.keys.get(key)
        if ks is None:
            ks = self.keys[key] = KeyState(scope, instance, list(src), list(dst), MODELS[self.model_name](self.p))
        return ks

    def interval(self, iv: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Score one complete interval of one pair (``windows.Outcome.intervals`` item); alert events out."""
        t = int(iv["t"])
        src, dst = iv["src"], iv["dst"]
        hosts: Mapping[str, list] = iv["hosts"]
        events: list[dict[str, Any]] = []
        total = [0] * 8
        hist: dict[int, int] = {}
        meds: dict[int, int] = {}
        by_remote: list[dict[str, int]] = [{}, {}]  # retransmissions / timeouts of each host's top remote, summed
        by_host = [0, 0]
        worst_med, worst = -1.0, None
        for host, (c, h, x, top, _ip, m) in hosts.items():
            for i, v in enumerate(c):
                total[i] += v
            merge_into(hist, h)
            merge_into(meds, m)
            for j in range(2):
                by_host[j] = max(by_host[j], c[_RT + j])
                if top[j] is not None:
                    by_remote[j][top[j]] = by_remote[j].get(top[j], 0) + x[j]
            if m and (q := quantile(m, 0.5)) > worst_med:
                worst_med, worst = q, m
        # what one reporter, or one remote endpoint, can explain
        remote_max = [max(by_remote[j].values(), default=0) for j in range(2)]
        o = observe(total, hist, [max(by_host[j], remote_max[j]) for j in range(2)], meds)
        o.retrans_max_remote, o.timeouts_max_remote = remote_max
        o.one_reporter = len(hosts) < 2
        if worst is not None:
            rest = {b: n - worst.get(b, 0) for b, n in meds.items() if n > worst.get(b, 0)}
            o.rtt_p50_rest = quantile(rest, 0.5) if rest else 0.0
        events += self._score(("pair", src[0], dst[0]), "pair", None, src, dst, t, o)
        if self.instances:
            for host in sorted(hosts):
                c, h, x, top, ip, m = hosts[host]
                events += self._score(("instance", host, dst[0]), "instance", host, src, dst, t,
                                      observe(c, h, x, m), top, ip)
        events += self.sweep(t)
        return events

    def _score(self, key: tuple[str, str, str], scope: str, instance: str | None, src: list[str],
               dst: list[str], t: int, o: Observation, top: list | None = None,
               ip: str | None = None) -> list[dict[str, Any]]:
        ks = self._key(key, scope, instance, src, dst)
        if ks.last_t and t <= ks.last_t:
            return []  # scored before a restart, whose window state was not written yet: once only
        verdicts = ks.model.score(o)
        # the health of every scored key goes to attribution (pair keys: its fallback when reporters are too weak)
        h = _health(t, instance, src, dst, verdicts, ks.model, self.p["warmup"], self.p["z"])
        if scope == "pair":
            h["r"], h["pair"] = f"{src[0]}>{dst[0]}", True
        else:  # which remote contributed most, per family, and the reporter's own address
            h["top"] = dict(zip(_FAMILY_METRICS, top or (None, None, None)))
            h["ip"] = ip
        self.health.append(h)
        ks.model.learn(o, verdicts)
        ks.last_t = max(ks.last_t, t)
        self.dirty.add(key)
        since = ks.hot_since
        for m, v in verdicts.items():
            if v.hot or v.flagged:
                since.setdefault(m, t)
            else:
                since.pop(m, None)
        events = ks.alerts.step(t, {m: (v.flagged, v.score, v.observed, v.expected, _severity(m, v), since.get(m, t))
                                    for m, v in verdicts.items()},
                                self.p["z"], int(self.p["resolve_after"]), self.window_s)
        if ks.alerts.open:
            self.open_keys.add(key)
        else:
            self.open_keys.discard(key)
        return [self._event(ks, e) for e in events]

    def take_health(self) -> list[dict[str, Any]]:
        """Health of the keys scored since the last call (``attribute.Attributor`` input); pair keys
        carry ``"pair": true`` and ``r`` = ``"src>dst"``."""
        out, self.health = self.health, []
        return out

    def sweep(self, t: int) -> list[dict[str, Any]]:
        """Resolve the open alerts of keys silent for ``silent_after`` intervals before ``t``."""
        out = []
        limit = t - int(self.p["silent_after"]) * self.interval_s
        for key in [k for k in self.open_keys if self.keys[k].last_t < limit]:
            ks = self.keys[key]
            out += [self._event(ks, e) for e in ks.alerts.silence(t)]
            self.open_keys.discard(key)
            self.dirty.add(key)
        return out

    def _event(self, ks: KeyState, e: dict[str, Any]) -> dict[str, Any]:
        ident = f"{ks.scope}|{ks.instance}|{ks.src[0]}|{ks.dst[0]}|{e['metric']}|{e['first_seen']}"
        alert_id = hashlib.blake2b(ident.encode(), digest_size=8).hexdigest()
        return {"version": 1, "alert_id": alert_id, "event": e["event"], "seq": e["seq"], "scope": ks.scope,
                "instance": ks.instance, "src_subnet": ks.src[0], "src_az": ks.src[1], "src_vpc": ks.src[2],
                "dst_subnet": ks.dst[0], "dst_az": ks.dst[1], "dst_vpc": ks.dst[2], "metric": e["metric"],
                "observed": e["observed"], "expected": e["expected"], "score": e["score"], "severity": e["severity"],
                "first_seen": e["first_seen"], "last_seen": e["last_seen"], "at": e["at"],
                "interval_s": self.interval_s, "window_start": e["at"] // self.window_s * self.window_s,
                "reason": e.get("reason"), "emitted_at": 0.0}

    # --- persistence -------------------------------------------------------------------
    def take_dirty(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        out = {k: self.keys[k].state() for k in self.dirty}
        self.dirty.clear()
        return out

    def load(self, key: Iterable[str], val: Mapping[str, Any]) -> None:
        k = tuple(key)
        ks = self.keys[k] = KeyState.from_state(val)  # type: ignore[index]
        if isinstance(ks.model, Baseline) and set(getattr(ks.model, "streak", ())) != set(METRICS):
            ks.model = Baseline(self.p)  # learned by an older flowmon, on other metrics: learn again
        if ks.alerts.open:
            self.open_keys.add(k)  # type: ignore[arg-type]

    def state_bytes(self) -> dict[str, float]:
        """Serialised state per key: mean and max bytes (the memory bound the README reports)."""
        import orjson
        sizes = [len(orjson.dumps(ks.state())) for ks in self.keys.values()]
        return {"keys": len(sizes), "mean": sum(sizes) / len(sizes) if sizes else 0.0, "max": max(sizes, default=0)}
