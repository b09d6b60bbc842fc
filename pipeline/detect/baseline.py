"""The model the pipeline runs: EW baselines, deviation scores, and confirmation.

Chosen by measured precision/recall against river's ``anomaly.GaussianScorer``,
``anomaly.HalfSpaceTrees`` and ``drift.PageHinkley`` (``detect.candidates``; see
``flowmon eval --detector`` and the README). It learns with river's ``stats.EWMean`` /
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
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

from river import stats

from pipeline.detect.contract import METRICS, Detector, Verdict, params_dict
from pipeline.detect.observe import Observation

__all__ = ["BaselineParams", "Baseline", "DEFAULTS"]


@dataclass(frozen=True, slots=True)
class BaselineParams:
    """Parameters of :class:`Baseline` and of its alerts (``Detection(params=...)`` overrides them by name)."""

    z: float = 5.0
    """Score needed to flag."""
    fading: float = 0.02
    """EW learning rate per interval (~50 intervals of memory)."""
    warmup: int = 20
    """Intervals learned before a key may flag (10 minutes at 30 s)."""
    min_segments: int = 500
    """Fewer segments sent in an interval: retrans_rate not scored."""
    min_retrans: int = 5
    """Fewer retransmissions in an interval: not hot."""
    min_retrans_excess: float = 0.001
    """Observed - expected retransmissions, per segment, needed to be hot."""
    min_flows: int = 1
    """Fewer flows in an interval: timeout_rate not scored."""
    min_timeouts: int = 3
    """Fewer timeouts in an interval: not hot."""
    min_timeout_excess: float = 0.05
    """Observed - expected timeouts, per flow, needed to be hot."""
    min_rtt_ratio: float = 1.3
    """An RTT must be at least this many times its baseline to be hot."""
    min_rtt_count_p90: int = 10
    """Fewer RTT observations in an interval: no p90 (it would be the maximum)."""
    min_rtt_excess_us: float = 300.0
    """An RTT must exceed its baseline by at least this many µs to be hot."""
    rtt_sd_floor: float = 0.05
    """In log units: never trust a spread below 5 %."""
    rtt_count_cap: int = 16
    """RTT samples beyond this many per interval do not narrow the band further."""
    rate_floor_retrans: float = 1e-5
    """Baseline retransmission rate never assumed below this."""
    rate_floor_timeouts: float = 1e-3
    """Baseline timeout rate never assumed below this."""
    confirm_after: int = 3
    """Hot intervals in a row that flag a metric whose evidence is narrow (one connection, a tail): a burst
    or a spike may straddle two agent intervals; a third is a lasting problem."""
    confirm_wide_after: int = 2
    """... whose evidence is wide (many connections, but one reporter: a host's own problem)."""
    rtt_broad_samples: int = 3
    """Remote endpoints behind an interval's median RTT for it to be broad evidence on its own."""
    dispersion_cap: float = 25.0
    """One interval's squared residual counts at most this much in the learned dispersion."""
    trim_largest: int = 1
    """1: a count is broad evidence only if it stays hot with its largest sample set aside (0: always)."""
    learn_dispersion: int = 0
    """1: scale count scores by the key's learned overdispersion (0, measured better: Poisson)."""
    score_p90: int = 0
    """1: also alert on the RTT tail (p90); 0 (measured better): the median only."""
    rtt_clip: float = 2.0
    """An RTT deviation is learned clipped at this many spreads (a slow creep must not widen the band)."""
    resolve_after: int = 4
    """Alerts: calm intervals before an alert resolves."""
    silent_after: int = 20
    """Alerts: intervals without data before an open alert resolves as 'silent'."""


#: Today's defaults by name (read-only): what ``flowmon eval --param`` may override.
DEFAULTS: Mapping[str, float] = MappingProxyType(params_dict(BaselineParams()))


_RTT_METRICS = ("rtt_p50", "rtt_p90")
_COUNT_METRICS = ("retrans_rate", "timeout_rate")
_STATE_ATTRS = ("retr", "seg", "tmo", "flw", "disp", "rtt", "rtt0", "m0", "settle", "seen", "streak")


@functools.lru_cache(maxsize=64)
def _params_dict(params: BaselineParams) -> dict[str, Any]:
    """``params_dict``, once per parameter set (frozen, so hashable): every state carries it."""
    return params_dict(params)


def _ew(stat: Any, core: str, blob: bytes) -> Any:
    """A river EW statistic given the serialised state of its Rust core (what its pickle restores)."""
    getattr(stat, core).__setstate__(blob)
    return stat


def _var(ddof: int, n: float, mean: float, s: float) -> stats.Var:
    """A ``stats.Var`` with exactly these internals (``Var._from_state`` rescales the variance: not exact)."""
    v = stats.Var(ddof=ddof)
    v.mean = stats.Mean._from_state(n, mean)
    v._S = s
    return v


@functools.lru_cache(maxsize=16)
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


class Baseline(Detector):
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

    >>> from pipeline.detect import Baseline, BaselineParams    # pickled by the package's name (see its doc)
    >>> from pipeline.detect.observe import Observation
    >>> m = Baseline(BaselineParams())
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

    Params = BaselineParams
    params: BaselineParams

    def __init__(self, params: BaselineParams) -> None:
        super().__init__(params)
        a = params.fading
        # the order of the statistics in ``disp``, ``rtt``, ``rtt0`` and ``m0`` is the compact state's
        self.retr = stats.EWMean(a)
        self.seg = stats.EWMean(a)
        self.tmo = stats.EWMean(a)
        self.flw = stats.EWMean(a)
        self.disp: dict[str, stats.EWMean] = {}
        self.rtt: dict[str, tuple[stats.EWMean, stats.EWVar]] = {}
        # EW estimates lean towards their first values for ~1/fading intervals (EWVar starts at 0):
        # until then, the plain mean and variance of what was seen
        self.rtt0: dict[str, stats.Var] = {}
        self.m0: dict[str, stats.Mean] = {}
        self._add_missing()
        self.settle = int(math.ceil(1.0 / a)) if a > 0 else 0
        self.seen = dict.fromkeys(METRICS, 0)  # intervals learned per metric
        self.streak = dict.fromkeys(METRICS, 0)  # hot scored intervals in a row, up to the last one

    def learned(self, metric: str) -> int | None:
        return self.seen[metric]

    def _add_missing(self) -> None:
        """Fresh statistics for what the parameters use and this model lacks. Only what is used is kept
        (a key's memory and state): the dispersions with ``learn_dispersion``, the RTT tail with
        ``score_p90``; a state written under other parameters gets the missing ones here."""
        p, a = self.params, self.params.fading
        if p.learn_dispersion:
            for m in _COUNT_METRICS:
                if m not in self.disp:
                    self.disp[m] = stats.EWMean(a)
        for m in _RTT_METRICS if p.score_p90 else _RTT_METRICS[:1]:
            if m not in self.rtt:
                self.rtt[m] = (stats.EWMean(a), stats.EWVar(a))
                self.rtt0[m], self.m0[m] = stats.Var(), stats.Mean()

    # --- state (one per scored key and interval goes to the state topic) ------------------
    def __getstate__(self) -> dict[str, Any]:
        """The compact form: each statistic's own serialised state (river's Rust core as the bytes
        its pickle carries; a plain mean as its two numbers), not the statistics pickled as objects.
        About 1,050 bytes (half of them the parameters; only the statistics the parameters use, see
        ``_add_missing``) and 5 µs instead of 2,000 bytes and 26 µs: the worker writes one per key
        scored. Exact: a restored model scores as the original would (``tests/detect/test_contract.py``).
        A model restored from an older form and missing a statistic (``Detection.load`` then learns it
        again) is written in that form."""
        if not all(hasattr(self, a) for a in _STATE_ATTRS):
            return super().__getstate__()
        return {"p": _params_dict(self.params), "form": 2,
                "ew": [s._ewmean.__getstate__() for s in (self.retr, self.seg, self.tmo, self.flw, *self.disp.values())],
                "rtt": [(m._ewmean.__getstate__(), v._ewvar.__getstate__()) for m, v in self.rtt.values()],
                "rtt0": [(v.ddof, v.mean.n, v.mean._mean, v._S) for v in self.rtt0.values()],
                "m0": [(x.n, x._mean) for x in self.m0.values()],
                "settle": self.settle, "seen": self.seen, "streak": self.streak}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        if state.get("form") != 2:  # a state written before the compact form: the statistics as objects
            super().__setstate__(state)
            return
        names = {f.name for f in fields(BaselineParams)}
        p = self.params = BaselineParams(**{k: v for k, v in state["p"].items() if k in names})
        ew = [_ew(stats.EWMean(p.fading), "_ewmean", b) for b in state["ew"]]
        self.retr, self.seg, self.tmo, self.flw = ew[:4]
        self.disp = dict(zip(_COUNT_METRICS, ew[4:]))
        self.rtt = {m: (_ew(stats.EWMean(p.fading), "_ewmean", a), _ew(stats.EWVar(p.fading), "_ewvar", b))
                    for m, (a, b) in zip(_RTT_METRICS, state["rtt"])}
        self.rtt0 = {m: _var(*v) for m, v in zip(_RTT_METRICS, state["rtt0"])}
        self.m0 = {m: stats.Mean._from_state(n, mean) for m, (n, mean) in zip(_RTT_METRICS, state["m0"])}
        self.settle, self.seen, self.streak = state["settle"], dict(state["seen"]), dict(state["streak"])
        self._add_missing()

    def _dispersion(self, metric: str) -> float:
        if self.params.learn_dispersion and self.seen[metric] >= self.params.warmup:
            return max(self.disp[metric].get(), 1.0)
        return 1.0

    # --- scoring ---------------------------------------------------------------------------
    def score(self, o: Observation) -> dict[str, Verdict]:
        p = self.params
        out: dict[str, Verdict] = {}
        if o.segments >= p.min_segments:
            out["retrans_rate"] = self._count("retrans_rate", o.retrans, o.retrans_max, o.retrans_max_remote,
                                              o.segments, self.retr, self.seg, p.rate_floor_retrans, p.min_retrans,
                                              p.min_retrans_excess, o.one_reporter)
        if o.flows >= p.min_flows:
            out["timeout_rate"] = self._count("timeout_rate", o.timeouts, o.timeouts_max, o.timeouts_max_remote,
                                              o.flows, self.tmo, self.flw, p.rate_floor_timeouts, p.min_timeouts,
                                              p.min_timeout_excess, o.one_reporter)
        if o.rtt_count:
            out["rtt_p50"] = self._rtt("rtt_p50", o.rtt_p50, o)
            if p.score_p90 and o.rtt_count >= p.min_rtt_count_p90:
                out["rtt_p90"] = self._rtt("rtt_p90", o.rtt_p90, o)
        return out

    def _count(self, metric: str, k: int, kmax: int, kmax_remote: int, exposure: float, num: stats.EWMean,
               den: stats.EWMean, floor: float, min_k: float, min_excess: float, o_one: bool) -> Verdict:
        p = self.params
        seen = self.seen[metric]
        d = den.get() if seen else 0.0
        base = num.get() / d if d > 0 else floor
        rate = max(base, floor)
        mu = rate * exposure
        sd = math.sqrt(self._dispersion(metric)) if p.learn_dispersion else 1.0
        z, root_mu = p.z, math.sqrt(mu + 0.375)
        # the Anscombe deviation of the count (``_anscombe``); hot: it and the absolute change pass
        score = max(2.0 * (math.sqrt(k + 0.375) - root_mu), 0.0) / sd
        obs = k / exposure
        hot = score >= z and k >= min_k and obs - rate >= min_excess and obs >= 2 * rate
        streak = self.streak[metric] + 1 if hot else 0
        if not hot:  # the judgement is monotone in the count: with the whole count not hot, no part of it is
            return Verdict(False, score, obs, base, False, 0, False)
        trim = p.trim_largest

        def judge(kk: int) -> bool:
            sc = max(2.0 * (math.sqrt(kk + 0.375) - root_mu), 0.0) / sd
            ob = kk / exposure
            return sc >= z and kk >= min_k and ob - rate >= min_excess and ob >= 2 * rate

        broad = not o_one and (judge(k - kmax) if trim else True)
        wide = judge(k - kmax_remote) if trim else True
        ready = seen >= p.warmup
        flagged = ready and (broad or streak >= p.confirm_after or (wide and streak >= p.confirm_wide_after))
        return Verdict(flagged, score, obs, base, ready, streak, wide)

    def _rtt(self, metric: str, x: float, o: Observation) -> Verdict:
        p = self.params
        seen = self.seen[metric]
        if not seen:
            return Verdict(False, 0.0, x, x)
        if seen < self.settle:
            m, var = self.m0[metric].get(), self.rtt0[metric].get()
        else:
            mean, ewvar = self.rtt[metric]
            m, var = mean.get(), ewvar.get() / _winsorized_var(p.rtt_clip)
        # deviations are learned scaled by sqrt(observations): an interval with few RTT
        # samples is allowed a wider swing than one with many
        w = math.sqrt(min(o.rtt_samples if metric == "rtt_p50" else o.rtt_count, p.rtt_count_cap))
        sd = max(math.sqrt(max(var, 0.0)), p.rtt_sd_floor)
        z = max((math.log(max(x, 1.0)) - m) * w / sd, 0.0)
        wide = metric == "rtt_p50" and o.rtt_samples >= p.rtt_broad_samples
        if seen < p.warmup:  # not ready: never hot
            return Verdict(False, z, x, math.exp(m), False, 0, wide)
        exp_us = math.exp(m)
        # a spread estimated from few intervals is itself uncertain: a little more is asked early on
        z_needed = p.z * (1.0 + 2.0 / seen)
        min_ratio, min_excess = p.min_rtt_ratio, p.min_rtt_excess_us
        if not (z >= z_needed and x >= min_ratio * exp_us and x - exp_us >= min_excess):
            return Verdict(False, z, x, exp_us, False, 0, wide)
        streak = self.streak[metric] + 1
        # the median over >= rtt_broad_samples remotes of several reporters is not moved by one
        # flow's spike, nor by one host's hiccup (it stays hot with that reporter set aside); a tail is
        rest = o.rtt_p50_rest
        broad = (wide and not o.one_reporter
                 and max((math.log(max(rest, 1.0)) - m) * w / sd, 0.0) >= z_needed
                 and rest >= min_ratio * exp_us and rest - exp_us >= min_excess)
        confirmed = broad or streak >= p.confirm_after or (wide and streak >= p.confirm_wide_after)
        return Verdict(confirmed, z, x, exp_us, True, streak, wide)

    # --- learning --------------------------------------------------------------------------
    def learn(self, o: Observation, verdicts: Mapping[str, Verdict]) -> None:
        """Learn from the metrics that were scored and not hot (never from anomalies or bursts).

        A metric not scored in this interval (too few segments, flows or RTT samples: no evidence
        either way) keeps its hot streak, as an interval the key did not report in does. Heavy
        loss is what stalls a connection in retransmission timeouts: its worst intervals carry
        too few segments to score, and must not reset the count of hot ones around them."""
        for metric, v in verdicts.items():
            if v.hot:
                self.streak[metric] = v.streak
                continue
            self.streak[metric] = 0
            self.seen[metric] += 1
            if metric == "retrans_rate" or metric == "timeout_rate":
                self._learn_count(metric, o, v)
            else:
                self._learn_rtt(metric, o, v)

    def _learn_count(self, metric: str, o: Observation, v: Verdict) -> None:
        p = self.params
        k, n = (o.retrans, o.segments) if metric == "retrans_rate" else (o.timeouts, o.flows)
        if p.learn_dispersion and self.seen[metric] > 1:  # only read with learn_dispersion
            mu = max(v.expected, p.rate_floor_retrans if metric == "retrans_rate" else p.rate_floor_timeouts) * n
            self.disp[metric].update(min(_anscombe(k, mu) ** 2, p.dispersion_cap))
        num, den = (self.retr, self.seg) if metric == "retrans_rate" else (self.tmo, self.flw)
        num.update(k)
        den.update(n)

    def _learn_rtt(self, metric: str, o: Observation, v: Verdict) -> None:
        p = self.params
        mean, var = self.rtt[metric]
        lx = math.log(max(v.observed, 1.0))
        w = math.sqrt(min(o.n(metric), p.rtt_count_cap))
        if self.seen[metric] > 1:
            settled = self.seen[metric] > self.settle
            m = mean.get() if settled else self.m0[metric].get()
            d = (lx - m) * w
            if settled:  # Huber-style: a deviation counts at most rtt_clip spreads (drift, one odd interval)
                sd = math.sqrt(max(var.get(), 0.0) / _winsorized_var(p.rtt_clip))
                lim = p.rtt_clip * max(sd, p.rtt_sd_floor)
                d = max(-lim, min(lim, d))
                lx = m + d / w
            var.update(d)
            if not settled:
                self.rtt0[metric].update(d)
        mean.update(lx)
        self.m0[metric].update(lx)
