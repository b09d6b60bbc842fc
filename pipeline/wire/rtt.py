"""RTT sketch: a fixed logarithmic histogram, mergeable across samples, pairs and windows.

Bucket ``b = floor(16 * log2(rtt_us))``: 16 buckets per doubling, so a bucket spans a
ratio of 2**(1/16) = 1.044 and reporting its geometric midpoint is off by at most 2.2 %.
RTTs from 1 us to 60 s fit in buckets 0..414. The histogram is kept sparse
(``{bucket: count}``); it is exact to merge (add counts), unlike averaged percentiles.

Examples
--------
>>> import numpy as np
>>> b = bucket(np.array([1000, 1000, 2000]))
>>> b.tolist()
[159, 159, 175]
>>> h = {159: 2, 175: 1}
>>> round(quantile(h, 0.5))
1002
>>> round(quantile(h, 0.99))
2004
>>> quantile({}, 0.5)
0.0
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["BUCKETS_PER_DOUBLING", "bucket", "bucket_value", "quantile", "merge_into"]

BUCKETS_PER_DOUBLING = 16


def bucket(rtt_us: np.ndarray) -> np.ndarray:
    """Bucket index of each RTT (microseconds, >= 1)."""
    return np.floor(np.log2(np.maximum(rtt_us, 1)) * BUCKETS_PER_DOUBLING).astype(np.int64)


def _midpoint(b: int) -> float:
    return float(2.0 ** ((b + 0.5) / BUCKETS_PER_DOUBLING))


#: The midpoints of buckets 0..1023 (RTTs up to 2**64 µs), computed once: a quantile is taken per key and
#: interval, often of a one-bucket histogram (one sample's median).
_MIDPOINTS = tuple(_midpoint(b) for b in range(1024))


def bucket_value(b: int) -> float:
    """Geometric midpoint of bucket ``b``, in microseconds.

    >>> bucket_value(159) == float(2.0 ** (159.5 / 16)), bucket_value(5000) == float(2.0 ** (5000.5 / 16))
    (True, True)
    """
    return _MIDPOINTS[b] if 0 <= b < 1024 else _midpoint(b)


def quantile(hist: Mapping[int, int], q: float) -> float:
    """The ``q`` quantile (0..1) of a sparse histogram: midpoint of the bucket holding rank ``q*n``.

    >>> quantile({159: 3}, 0.9) == quantile({159: 3, 175: 0}, 0.9) == bucket_value(159), quantile({159: 0}, 0.5)
    (True, 0.0)
    """
    if len(hist) == 1:  # one bucket: its midpoint, unless it is empty
        for b, n in hist.items():
            return bucket_value(b) if n else 0.0
    total = sum(hist.values())
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return bucket_value(b)
    return bucket_value(max(hist))  # pragma: no cover  (q > 1)


def merge_into(into: dict[int, int], other: Mapping[int, int]) -> dict[int, int]:
    """Add ``other``'s counts to ``into`` (in place) and return it."""
    for b, c in other.items():
        into[b] = into.get(b, 0) + c
    return into
