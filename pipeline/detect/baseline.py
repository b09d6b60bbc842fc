"""The model the pipeline runs: EW baselines, deviation scores, and confirmation.

Chosen by measured precision/recall against river's ``anomaly.GaussianScorer``,
``anomaly.HalfSpaceTrees`` and ``drift.PageHinkley`` (``detect.candidates``; see
``flowmon eval --detector`` and the README). It learns with river's statistics
(``stats.EWMean``, ``stats.EWVar``, and ``stats.Mean`` / ``stats.Var`` while the EW ones
settle), kept as plain numbers: one list of floats per key, updated with river's own
arithmetic (``detect.statistics``; ``tests/detect/test_statistics.py`` holds every update
to river's objects, bit for bit). A river statistic is a Python object around a Rust core,
~165 bytes each and a call across the boundary per update; a fleet keeps tens of thousands
of keys, each with 10-14 of them:

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

import pipeline.detect.statistics as st
from pipeline.detect.contract import METRICS, Detector, Verdict, params_dict
from pipeline.detect.observe import Observation

__all__ = ["BaselineParams", "Baseline", "DEFAULTS", "STATE_FORM", "PLAIN_FORMS", "STATE_METRICS"]


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

# Where each statistic sits in ``Baseline.s`` (one list of floats per key; ``None``: an EW mean not yet updated).
# Counts: the EW means of retransmissions, segments, timeouts, flows, then the two dispersions (``None`` unless
# ``learn_dispersion``).
_RETR, _SEG, _TMO, _FLW = 0, 1, 2, 3
_DISP = {"retrans_rate": 4, "timeout_rate": 5}
#: Each RTT metric's block (the p90's only with ``score_p90``), at these offsets from its start:
#: the EW mean of log(rtt); the EW variance of its deviations (EW mean of d, of d²); their plain
#: variance (n, mean, S) and the plain mean of log(rtt) (n, mean), read until the EW ones settle.
_RTT_AT = {"rtt_p50": 6, "rtt_p90": 14}
_RTT_LEN = 8
_FRESH_RTT = [None, None, None, 0.0, 0.0, 0.0, 0.0, 0.0]
#: The form of the state :meth:`Baseline.__getstate__` writes: 4, plain JSON numbers, the parameters
#: other than their defaults, the counts as lists in ``STATE_METRICS`` order. Earlier forms load:
#: 3, the same with every parameter and the counts by name; 2, river's serialised cores, pickled;
#: 1 (no "form"), the statistics pickled as objects.
STATE_FORM = 4
#: The plain forms (``detection.load_model`` takes these as dicts).
PLAIN_FORMS = (3, 4)
#: The order of the counts (``seen``, ``streak``) in a form-4 state; a new metric needs a new form.
STATE_METRICS = ("retrans_rate", "timeout_rate", "rtt_p50", "rtt_p90")


@functools.lru_cache(maxsize=64)
def _params_diff(params: BaselineParams) -> dict[str, Any]:
    """The parameters that differ from their defaults, once per parameter set (frozen, so hashable):
    every state carries them (a copy: the state leaves the model as a plain dict). The defaults'
    names and values took ~500 of a state's ~1,000 bytes."""
    return {k: v for k, v in params_dict(params).items() if v != DEFAULTS[k]}


@functools.lru_cache(maxsize=16)
def _winsorized_var(c: float) -> float:
    """Variance of a standard normal clipped at ±c (a clipped-deviation variance divided by it is unbiased).

    >>> round(_winsorized_var(2.0), 3), round(_winsorized_var(10.0), 3)
    (0.92, 1.0)
    """
    phi = math.exp(-c * c / 2) / math.sqrt(2 * math.pi)
    tail = 0.5 * math.erfc(c / math.sqrt(2))
    return 1.0 - 2.0 * (c * phi + tail) + 2.0 * c * c * tail


#: ``_verdict((flagged, score, observed, expected, hot, streak, wide, single))``: a ``Verdict`` without the Python-level
#: ``__new__`` of a NamedTuple (one per metric, key and interval). Every field given: no defaults here.
_verdict = functools.partial(tuple.__new__, Verdict)


_sqrt, _log, _exp = math.sqrt, math.log, math.exp


#: ``_calm_count``'s answer for a count that is hot.
_HOT = -1


def _count_score(num: float | None, den: float | None, n: int, k: int, exposure: float, floor: float,
                 sd: float) -> tuple[float, float, float, float, float]:
    """A count against its baseline (``Baseline._count``): (score, observed, expected, rate, sqrt(mu + 3/8)),
    from the EW means of the count ``num`` and its exposure ``den`` after ``n`` learned intervals. The score is
    the Anscombe deviation of the count (``_anscombe``), over ``sd``."""
    d = (den or 0.0) if n else 0.0
    base = (num or 0.0) / d if d > 0 else floor
    rate = max(base, floor)
    root_mu = _sqrt(rate * exposure + 0.375)
    return max(2.0 * (_sqrt(k + 0.375) - root_mu), 0.0) / sd, k / exposure, base, rate, root_mu


def _calm_count(num: float | None, den: float | None, n: int, k: int, exposure: float, floor: float, min_k: int,
                min_excess: float, z: float, warmup: float, elevated: float) -> int | None:
    """``Baseline._count`` (without a learned dispersion) up to *hot*, for ``Baseline.calm``: :data:`_HOT`, or
    the health level (``None``: fewer than ``warmup`` intervals learned; 1: elevated; 0)."""
    sc, ob, base, rate, _ = _count_score(num, den, n, k, exposure, floor, 1.0)
    if sc >= z and k >= min_k and ob - rate >= min_excess and ob >= 2 * rate:
        return _HOT
    if n >= warmup:
        return 1 if sc >= elevated and ob > base else 0
    return None


def _anscombe(k: float, mu: float) -> float:
    return 2.0 * (math.sqrt(k + 0.375) - math.sqrt(mu + 0.375))


def _params_of(state: Mapping[str, Any]) -> BaselineParams:
    """The parameters a state carries; names a newer model has and the state lacks take their default."""
    names = {f.name for f in fields(BaselineParams)}
    return BaselineParams(**{k: v for k, v in state.get("p", {}).items() if k in names})


class Baseline(Detector):
    """EW baselines (river's ``stats.EWMean``/``EWVar`` arithmetic), deviation scores, and confirmation.

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

    Its statistics are one list of floats, ``s`` (see ``_RTT_AT``; :meth:`statistics` names them).

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
    >>> round(m.statistics()["rtt_p50"]["mean"], 3)     # EW mean of log(800 µs)
    6.685
    """

    Params = BaselineParams
    params: BaselineParams

    def __init__(self, params: BaselineParams) -> None:
        super().__init__(params)
        self.s: list[float | None] = [None, None, None, None, None, None]
        self._add_missing()
        a = params.fading
        # EW estimates lean towards their first values for ~1/fading intervals (EWVar starts at 0):
        # until then, the plain mean and variance of what was seen
        self.settle = int(math.ceil(1.0 / a)) if a > 0 else 0
        self.seen = dict.fromkeys(METRICS, 0)  # intervals learned per metric
        self.streak = dict.fromkeys(METRICS, 0)  # hot scored intervals in a row, up to the last one

    def learned(self, metric: str) -> int | None:
        return self.seen[metric]

    def _add_missing(self) -> None:
        """Room for what the parameters use and this model lacks. Only what is used is kept (a key's
        memory and state): the dispersions with ``learn_dispersion``, the RTT tail with ``score_p90``;
        a state written under other parameters gets the missing ones here, fresh."""
        p, s = self.params, self.s  # fresh dispersions are None (not yet updated): nothing to add for them
        want = _RTT_AT["rtt_p90" if p.score_p90 else "rtt_p50"] + _RTT_LEN
        while len(s) < want:
            s.extend(_FRESH_RTT)

    def statistics(self) -> dict[str, Any]:
        """The statistics by name (for reading; ``None``: an EW mean not yet updated)."""
        s = self.s
        out: dict[str, Any] = {"retr": s[_RETR], "seg": s[_SEG], "tmo": s[_TMO], "flw": s[_FLW]}
        if self.params.learn_dispersion:
            out["disp"] = {m: s[i] for m, i in _DISP.items()}
        for m, j in _RTT_AT.items():
            if j + _RTT_LEN <= len(s):
                out[m] = {"mean": s[j], "ew_var": st.ew_var(s[j + 1], s[j + 2]), "var0": st.var_get(s[j + 3], s[j + 5]),
                          "mean0": s[j + 7], "n0": s[j + 6]}
        return out

    # --- state (one per scored key and interval goes to the state topic) ------------------
    def __getstate__(self) -> dict[str, Any]:
        """The plain form (4): the parameters that differ from their defaults (``{}`` by default), the
        statistics as numbers (``None``: not yet updated), the counts. About 400 bytes of JSON, no pickle
        (form 3, with every parameter by name: ~1,000; river's serialised Rust cores, pickled and
        base64-encoded: 1,412). Exact: floats go through JSON and back unchanged
        (``tests/detect/test_contract.py``). A parameter the state leaves out takes the default of the
        flowmon that loads it: an upgrade that changes a default applies it to restored keys too."""
        try:  # (written once per scored key and batch: no generator for the check)
            s, settle, seen, streak = self.s, self.settle, self.seen, self.streak
        except AttributeError:
            return super().__getstate__()  # only a test's stand-in for an older version lacks one
        return {"p": _params_diff(self.params).copy(), "form": STATE_FORM, "s": s.copy(), "settle": settle,
                "seen": [seen[m] for m in STATE_METRICS], "streak": [streak[m] for m in STATE_METRICS]}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        form = state.get("form")
        if form in PLAIN_FORMS or form == 2:  # form 2: river's Rust cores, serialised
            self.params = _params_of(state)
            self.s = self._from_cores(state) if form == 2 else list(state["s"])
            self.settle = state["settle"]
            if form == STATE_FORM:
                self.seen, self.streak = dict(zip(STATE_METRICS, state["seen"])), dict(zip(STATE_METRICS, state["streak"]))
            else:
                self.seen, self.streak = dict(state["seen"]), dict(state["streak"])
        else:  # the first form: the model's attributes, river's statistics pickled as objects
            super().__setstate__(state)
            if hasattr(self, "retr"):
                self._from_objects(self.__dict__)
            else:
                self.s = [None] * 6
        self._add_missing()

    def _from_cores(self, state: Mapping[str, Any]) -> list[float | None]:
        ew = [st.ew_from_core(b) for b in state["ew"]]
        s: list[float | None] = ew[:4] + [None, None]
        if self.params.learn_dispersion:
            s[4:6] = (ew[4:] + [None, None])[:2]
        for (a, b), v0, m0 in zip(state["rtt"], state["rtt0"], state["m0"]):
            _ddof, n, mu, sq = v0  # a river stats.Var(ddof=1), as every Baseline made them
            s += [st.ew_from_core(a), *st.ew_var_from_core(b), n, mu, sq, m0[0], m0[1]]
        return s

    def _from_objects(self, d: dict[str, Any]) -> None:
        s: list[float | None] = [st.ew_from_river(d.pop(k)) for k in ("retr", "seg", "tmo", "flw")] + [None, None]
        disp = d.pop("disp", {})
        if self.params.learn_dispersion:
            s[4:6] = [st.ew_from_river(disp[m]) if m in disp else None for m in _COUNT_METRICS]
        rtt, rtt0, m0 = d.pop("rtt", {}), d.pop("rtt0", {}), d.pop("m0", {})
        for m in _RTT_METRICS:
            if m not in rtt or len(s) != _RTT_AT[m]:
                break
            v0, mm = rtt0[m], m0[m]
            s += [st.ew_from_river(rtt[m][0]), *st.ew_var_from_river(rtt[m][1]), v0.mean.n, v0.mean._mean, v0._S,
                  mm.n, mm._mean]
        self.s = s

    def _dispersion(self, metric: str) -> float:
        if self.params.learn_dispersion and self.seen[metric] >= self.params.warmup:
            return max(self.s[_DISP[metric]] or 0.0, 1.0)
        return 1.0

    # --- scoring ---------------------------------------------------------------------------
    def score(self, o: Observation) -> dict[str, Verdict]:
        p = self.params
        out: dict[str, Verdict] = {}
        if o.segments >= p.min_segments:
            out["retrans_rate"] = self._count("retrans_rate", o.retrans, o.retrans_max, o.retrans_max_remote,
                                              o.segments, _RETR, _SEG, p.rate_floor_retrans, p.min_retrans,
                                              p.min_retrans_excess, o.one_reporter)
        if o.flows >= p.min_flows:
            out["timeout_rate"] = self._count("timeout_rate", o.timeouts, o.timeouts_max, o.timeouts_max_remote,
                                              o.flows, _TMO, _FLW, p.rate_floor_timeouts, p.min_timeouts,
                                              p.min_timeout_excess, o.one_reporter)
        if o.rtt_count:
            out["rtt_p50"] = self._rtt("rtt_p50", o.rtt_p50, o)
            if p.score_p90 and o.rtt_count >= p.min_rtt_count_p90:
                out["rtt_p90"] = self._rtt("rtt_p90", o.rtt_p90, o)
        return out

    def _count(self, metric: str, k: int, kmax: int, kmax_remote: int, exposure: float, num: int, den: int,
               floor: float, min_k: float, min_excess: float, o_one: bool) -> Verdict:
        p = self.params
        seen = self.seen[metric]
        s = self.s
        sd = math.sqrt(self._dispersion(metric)) if p.learn_dispersion else 1.0
        z = p.z
        score, obs, base, rate, root_mu = _count_score(s[num], s[den], seen, k, exposure, floor, sd)
        # hot: the deviation and the absolute change pass
        hot = score >= z and k >= min_k and obs - rate >= min_excess and obs >= 2 * rate
        streak = self.streak[metric] + 1 if hot else 0
        if not hot:  # the judgement is monotone in the count: with the whole count not hot, no part of it is
            return _verdict((False, score, obs, base, False, 0, False, False))
        trim = p.trim_largest

        def judge(kk: int) -> bool:
            sc = max(2.0 * (math.sqrt(kk + 0.375) - root_mu), 0.0) / sd
            ob = kk / exposure
            return sc >= z and kk >= min_k and ob - rate >= min_excess and ob >= 2 * rate

        broad = not o_one and (judge(k - kmax) if trim else True)
        wide = judge(k - kmax_remote) if trim else True
        ready = seen >= p.warmup
        flagged = ready and (broad or streak >= p.confirm_after or (wide and streak >= p.confirm_wide_after))
        return _verdict((flagged, score, obs, base, ready, streak, wide, ready and not o_one and not broad))

    def _rtt(self, metric: str, x: float, o: Observation) -> Verdict:
        p = self.params
        seen = self.seen[metric]
        if not seen:
            return _verdict((False, 0.0, x, x, False, 0, False, False))
        # deviations are learned scaled by sqrt(observations): an interval with few RTT
        # samples is allowed a wider swing than one with many
        w = math.sqrt(min(o.rtt_samples if metric == "rtt_p50" else o.rtt_count, p.rtt_count_cap))
        z, m, sd = self._rtt_z(_RTT_AT[metric], seen, math.log(max(x, 1.0)), w)
        wide = metric == "rtt_p50" and o.rtt_samples >= p.rtt_broad_samples
        if seen < p.warmup:  # not ready: never hot
            return _verdict((False, z, x, math.exp(m), False, 0, wide, False))
        exp_us = math.exp(m)
        # a spread estimated from few intervals is itself uncertain: a little more is asked early on
        z_needed = p.z * (1.0 + 2.0 / seen)
        min_ratio, min_excess = p.min_rtt_ratio, p.min_rtt_excess_us
        if not (z >= z_needed and x >= min_ratio * exp_us and x - exp_us >= min_excess):
            return _verdict((False, z, x, exp_us, False, 0, wide, False))
        streak = self.streak[metric] + 1
        # the median over >= rtt_broad_samples remotes of several reporters is not moved by one
        # flow's spike, nor by one host's hiccup (it stays hot with that reporter set aside); a tail is
        rest = o.rtt_p50_rest
        rest_hot = (max((math.log(max(rest, 1.0)) - m) * w / sd, 0.0) >= z_needed
                    and rest >= min_ratio * exp_us and rest - exp_us >= min_excess)
        broad = wide and not o.one_reporter and rest_hot
        confirmed = broad or streak >= p.confirm_after or (wide and streak >= p.confirm_wide_after)
        return _verdict((confirmed, z, x, exp_us, True, streak, wide, not o.one_reporter and not rest_hot))

    # --- one calm interval, in one pass ---------------------------------------------------------
    def calm(self, o: Observation, warmup: float, elevated: float) -> tuple[int | None, int | None, int | None] | None:
        """:meth:`score` then :meth:`learn` of an interval none of whose metrics is hot (most keys, most
        intervals), in one pass: the same arithmetic on the same numbers, without the verdicts. Returns
        the key's health levels per family as ``detection._health`` reads them from the verdicts (``None``:
        not scored, or fewer than ``warmup`` intervals learned; 1: the score reaches ``elevated`` and the
        value is above its baseline; else 0). Returns ``None``, having changed nothing, when a metric is
        hot, or when the parameters learn a dispersion or score the p90: :meth:`score` and :meth:`learn`
        then do it (``tests/detect/test_calm.py`` holds the two paths to the same states and levels)."""
        p = self.params
        if p.learn_dispersion or p.score_p90:
            return None
        s, seen, z = self.s, self.seen, p.z
        segments, flows, rc = o.segments, o.flows, o.rtt_count
        lr = lt = ll = None
        score_r = segments >= p.min_segments
        if score_r:
            lr = _calm_count(s[_RETR], s[_SEG], seen["retrans_rate"], o.retrans, segments, p.rate_floor_retrans,
                             p.min_retrans, p.min_retrans_excess, z, warmup, elevated)
            if lr == _HOT:
                return None
        score_t = flows >= p.min_flows
        if score_t:
            lt = _calm_count(s[_TMO], s[_FLW], seen["timeout_rate"], o.timeouts, flows, p.rate_floor_timeouts,
                             p.min_timeouts, p.min_timeout_excess, z, warmup, elevated)
            if lt == _HOT:
                return None
        j = _RTT_AT["rtt_p50"]
        if rc:  # _rtt("rtt_p50", ...)
            n = seen["rtt_p50"]
            x = o.rtt_p50
            lx = _log(1.0 if 1.0 > x else x)
            ns, cap = o.rtt_samples, p.rtt_count_cap
            w = _sqrt(cap if cap < ns else ns)
            if not n:
                if n >= warmup:
                    ll = 0  # score 0, observed = expected
            else:
                zl, m, _ = self._rtt_z(j, n, lx, w)
                exp_us = _exp(m)
                if (n >= p.warmup and zl >= p.z * (1.0 + 2.0 / n) and x >= p.min_rtt_ratio * exp_us
                        and x - exp_us >= p.min_rtt_excess_us):
                    return None
                if n >= warmup:
                    ll = 1 if zl >= elevated and x > exp_us else 0
        # nothing hot: learn (``learn``: every metric scored, none hot)
        a = p.fading
        b = 1.0 - a
        streak = self.streak
        for scored, metric, num, k, exposure in ((score_r, "retrans_rate", _RETR, o.retrans, segments),
                                                 (score_t, "timeout_rate", _TMO, o.timeouts, flows)):
            if scored:  # _learn_count (no dispersion)
                streak[metric] = 0
                seen[metric] += 1
                s[num] = st.ew(s[num], k, a, b)
                s[num + 1] = st.ew(s[num + 1], exposure, a, b)
        if rc:  # _learn_rtt("rtt_p50", ...)
            streak["rtt_p50"] = 0
            seen["rtt_p50"] += 1
            self._learn_log(j, lx, w, seen["rtt_p50"])
        return lr, lt, ll

    def _rtt_z(self, j: int, seen: int, lx: float, w: float) -> tuple[float, float, float]:
        """(z, baseline, spread) of ``lx`` (a log RTT, weighted ``w``) against the RTT block at ``j``, after
        ``seen`` (>= 1) learned intervals: the plain mean and variance until they settle, then the EW ones."""
        p, s = self.params, self.s
        if seen < self.settle:
            m, var = s[j + 7], st.var_get(s[j + 3], s[j + 5])
        else:
            m, var = s[j], st.ew_var(s[j + 1], s[j + 2]) / _winsorized_var(p.rtt_clip)
        sd = max(_sqrt(max(var, 0.0)), p.rtt_sd_floor)
        return max((lx - m) * w / sd, 0.0), m, sd

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
        p, s = self.params, self.s
        a = p.fading
        b = 1.0 - a
        if metric == "retrans_rate":
            k, n, num, floor = o.retrans, o.segments, _RETR, p.rate_floor_retrans
        else:
            k, n, num, floor = o.timeouts, o.flows, _TMO, p.rate_floor_timeouts
        if p.learn_dispersion and self.seen[metric] > 1:  # only read with learn_dispersion
            i = _DISP[metric]
            s[i] = st.ew(s[i], min(_anscombe(k, max(v.expected, floor) * n) ** 2, p.dispersion_cap), a, b)
        s[num] = st.ew(s[num], k, a, b)
        s[num + 1] = st.ew(s[num + 1], n, a, b)

    def _learn_rtt(self, metric: str, o: Observation, v: Verdict) -> None:
        w = math.sqrt(min(o.n(metric), self.params.rtt_count_cap))
        self._learn_log(_RTT_AT[metric], math.log(max(v.observed, 1.0)), w, self.seen[metric])

    def _learn_log(self, j: int, lx: float, w: float, seen: int) -> None:
        """Learn a log RTT ``lx`` (weighted ``w``) into the RTT block at ``j``, ``seen`` counting this interval."""
        p, s = self.params, self.s
        a = p.fading
        b = 1.0 - a
        if seen > 1:
            settled = seen > self.settle
            m = s[j] if settled else s[j + 7]
            d = (lx - m) * w
            if settled:  # Huber-style: a deviation counts at most rtt_clip spreads (drift, one odd interval)
                sd = math.sqrt(max(st.ew_var(s[j + 1], s[j + 2]), 0.0) / _winsorized_var(p.rtt_clip))
                lim = p.rtt_clip * max(sd, p.rtt_sd_floor)
                d = max(-lim, min(lim, d))
                lx = m + d / w
            s[j + 1] = st.ew(s[j + 1], d, a, b)  # EWVar.update(d): its two EW means
            s[j + 2] = st.ew(s[j + 2], d * d, a, b)
            if not settled:
                s[j + 3], s[j + 4], s[j + 5] = st.var(s[j + 3], s[j + 4], s[j + 5], d)
        s[j] = st.ew(s[j], lx, a, b)
        s[j + 6], s[j + 7] = st.mean(s[j + 6], s[j + 7], lx)
