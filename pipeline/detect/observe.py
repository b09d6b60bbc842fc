"""One key over one interval: the inputs of the metrics, from preagg's summed counters.

Metrics (see :meth:`Observation.value`):

* ``retrans_rate``: retransmissions per segment sent, segments = ``bytes_sent / 1448``
  (one MSS). Per segment rather than per MB or per flow because it estimates the
  packet-loss fraction itself: it does not move when traffic surges or shrinks, and it
  reads the same as the ``loss`` magnitude of a fault.
* ``timeout_rate``: retransmission timeouts per flow-interval.
* ``rtt_p50`` and ``rtt_p90`` (µs, the median and p90 of the interval's RTT observations,
  from its log histogram): the median, not the mean, so one flow's spike does not move it.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

from collections.abc import Mapping

from pipeline.wire.records import BYTES_SENT, FLOWS, MAX_RETRANSMISSIONS, MAX_TIMEOUTS, RETRANSMISSIONS, RTT_COUNT, \
    RTT_SUM_US, TIMEOUTS
from pipeline.wire.rtt import quantile

__all__ = ["MSS", "Observation", "observe"]

#: Bytes per segment used to turn bytes_sent into segments (Ethernet MSS).
MSS = 1448

# counters layout of preagg partials


class Observation(NamedTuple):  # immutable like the frozen records, ~4x cheaper to build: one per key and interval
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


#: ``_observation((...every field...))``: an ``Observation`` without the Python-level ``__new__`` of a NamedTuple.
_observation = functools.partial(tuple.__new__, Observation)


def observe(c: list[int], h: Mapping[int, int], x: tuple[int, int] | list[int] = (0, 0),
            m: Mapping[int, int] | None = None, p90: bool = True, *, remote: list[int] | None = None,
            one_reporter: bool = True, rest: float = 0.0) -> Observation:
    """Observation from summed partial counters ``c``, RTT histogram ``h``, one-sample maxima ``x``
    and the histogram ``m`` of the samples' median RTTs. ``p90=False``: the model reads no
    ``rtt_p90``, which is then NaN (not computed: one quantile fewer per key and interval).
    A pair key's observation also has ``remote`` (the largest parts one remote endpoint explains,
    else ``x``), ``one_reporter`` and ``rest`` (``rtt_p50_rest``).

    >>> o = observe([14_480_000, 0, 20, 1, 4, 4, 4, 4000], {}, [12, 1])
    >>> o.segments, o.value("retrans_rate"), o.value("timeout_rate"), o.rtt_p50, o.retrans_max
    (10000.0, 0.002, 0.25, 1000.0, 12)
    """
    rc = c[RTT_COUNT]
    mean = c[RTT_SUM_US] / rc if rc else 0.0
    ns = sum(m.values()) if m else 0
    rx, tx = int(x[MAX_RETRANSMISSIONS]), int(x[MAX_TIMEOUTS])
    rr, rt = (rx, tx) if remote is None else remote
    return _observation((c[BYTES_SENT] / MSS, c[RETRANSMISSIONS], c[TIMEOUTS], c[FLOWS], rc,
                         quantile(m, 0.5) if ns else (quantile(h, 0.5) if rc and h else mean),
                         (quantile(h, 0.9) if rc and h else mean) if p90 else math.nan, rx, tx, rr, rt,
                         ns if ns else min(rc, 1), rest, one_reporter))
