"""The models ``baseline`` was measured against (``flowmon eval --detector``); the pipeline never runs them.

Each wraps a river detector per key behind the same contract (``detect.contract``):
``anomaly.GaussianScorer``, ``anomaly.HalfSpaceTrees`` and ``drift.PageHinkley``.

>>> from pipeline.detect.observe import Observation
>>> m = GaussianCandidate(CandidateParams(warmup=2))
>>> for k in range(5):
...     m.learn(o := Observation(10_000, 1 + k % 2, 0, 3, 3, 800.0, 900.0), m.score(o))
>>> sorted(m.score(Observation(10_000, 90, 0, 3, 3, 800.0, 900.0)))
['retrans_rate', 'rtt_p50', 'rtt_p90', 'timeout_rate']
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from river import stats

from pipeline.detect.baseline import BaselineParams
from pipeline.detect.contract import METRICS, Detector, Verdict
from pipeline.detect.observe import Observation

__all__ = ["CandidateParams", "GaussianCandidate", "HalfSpaceCandidate", "PageHinkleyCandidate"]


_B = BaselineParams()  # the candidates' shared parameters default to the baseline's


@dataclass(frozen=True, slots=True)
class CandidateParams:
    """What the candidates read (the baseline's names and defaults)."""

    z: float = _B.z
    """Score needed to flag (GaussianCandidate: its two-sided tail)."""
    warmup: int = _B.warmup
    """Intervals learned before a key may flag."""
    min_segments: int = _B.min_segments
    """Fewer segments sent in an interval: retrans_rate not scored."""
    resolve_after: int = _B.resolve_after
    """Alerts: calm intervals before an alert resolves."""
    silent_after: int = _B.silent_after
    """Alerts: intervals without data before an open alert resolves as 'silent'."""


def _scorable(o: Observation, p: CandidateParams) -> list[tuple[str, float]]:
    """(metric, value) pairs a generic candidate scores: those with evidence (enough segments for retransmissions)."""
    return [(m, x) for m in METRICS if (x := o.value(m)) is not None
            and not (m == "retrans_rate" and o.segments < p.min_segments)]


class GaussianCandidate(Detector):
    """river ``anomaly.GaussianScorer`` per metric (window 60); flags when the score >= 1 - 2 Phi(-z), on the
    high side."""

    Params = CandidateParams
    params: CandidateParams

    def __init__(self, params: CandidateParams) -> None:
        super().__init__(params)
        from river import anomaly  # (its import is a second of scipy: a worker never needs it)

        self.g = {m: anomaly.GaussianScorer(window_size=60, grace_period=int(params.warmup)) for m in METRICS}
        self.mean = {m: stats.Mean() for m in METRICS}
        self.cut = 1.0 - math.erfc(params.z / math.sqrt(2))  # two-sided tail of z

    def score(self, o: Observation) -> dict[str, Verdict]:
        out = {}
        for metric, x in _scorable(o, self.params):
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


class HalfSpaceCandidate(Detector):
    """river ``anomaly.HalfSpaceTrees`` on the four metrics (min-max scaled); flags every metric above its mean."""

    Params = CandidateParams
    params: CandidateParams

    def __init__(self, params: CandidateParams) -> None:
        super().__init__(params)
        from river import anomaly, preprocessing

        self.scaler = preprocessing.MinMaxScaler()
        self.hst = anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=50, seed=1)
        self.mean = {m: stats.Mean() for m in METRICS}
        self.n = 0

    def _x(self, o: Observation) -> dict[str, float]:
        return {m: math.log1p(v * 1e4 if m in ("retrans_rate", "timeout_rate") else v)
                for m in METRICS if (v := o.value(m)) is not None}

    def score(self, o: Observation) -> dict[str, Verdict]:
        x = self._x(o)
        s = self.hst.score_one(self.scaler.transform_one(x)) if self.n >= self.params.warmup else 0.0
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


class PageHinkleyCandidate(Detector):
    """river ``drift.PageHinkley`` (mode 'up') per metric on log values; flags while a drift is detected."""

    Params = CandidateParams
    params: CandidateParams

    def __init__(self, params: CandidateParams) -> None:
        super().__init__(params)
        from river import drift

        self.ph = {m: drift.PageHinkley(min_instances=int(params.warmup), delta=0.05, threshold=20.0, mode="up")
                   for m in METRICS}
        self.mean = {m: stats.Mean() for m in METRICS}

    def score(self, o: Observation) -> dict[str, Verdict]:
        out = {}
        for metric, x in _scorable(o, self.params):
            ph = self.ph[metric]
            ph.update(math.log1p(x * 1e4) if metric in ("retrans_rate", "timeout_rate") else math.log(max(x, 1.0)))
            out[metric] = Verdict(ph.drift_detected, float(ph.drift_detected), x, self.mean[metric].get())
        return out

    def learn(self, o: Observation, verdicts: Mapping[str, Verdict]) -> None:
        for metric, v in verdicts.items():
            if not v.flagged:
                self.mean[metric].update(v.observed)
