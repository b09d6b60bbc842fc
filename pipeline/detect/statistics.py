"""River's running statistics as plain numbers: the same arithmetic, without an object per statistic.

``detect.baseline`` keeps every statistic of a key in one list of floats and updates it with
these functions. Each is river's (0.26) update or read, operation for operation, so the
results are bit-identical: ``tests/detect/test_statistics.py`` feeds random sequences to both
and compares with ``==``. What it saves: a river statistic is a Python object with a
``__dict__`` around a Rust core (~165 bytes, and a call across the boundary per update); a
fleet keeps tens of thousands of keys with 10-14 statistics each.

* :func:`ew`: ``stats.EWMean.update``. ``None`` is a mean not yet updated (river keeps a flag:
  its first value is taken as it is, and a mean may be 0.0 and set).
* :func:`ew_var`: ``stats.EWVar.get`` from its two EW means (of ``x`` and of ``x²``).
* :func:`mean`: ``stats.Mean.update`` (weight 1); :func:`var` / :func:`var_get`:
  ``stats.Var.update`` / ``get`` (``ddof`` 1, river's default).

Decoding what states of earlier versions carry (river's own serialised state):
:func:`ew_from_core` and :func:`ew_var_from_core` read the Rust cores' bytes (their pickle),
:func:`ew_from_river` and :func:`ew_var_from_river` the statistics as objects.

>>> m = None
>>> for x in (1, 3, 5, 4, 6, 8, 7, 9, 11):     # river's EWMean docstring, fading_factor=0.5
...     m = ew(m, x, 0.5, 0.5)
>>> m
9.4296875
>>> n, mu, s = 0.0, 0.0, 0.0
>>> for x in (1.0, 3.0, 5.0):
...     n, mu, s = var(n, mu, s, x)
>>> var_get(n, s)
4.0
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["ew", "ew_var", "mean", "var", "var_get", "ew_from_core", "ew_var_from_core", "ew_from_river",
           "ew_var_from_river"]


def ew(v: float | None, x: float, a: float, b: float) -> float:
    """``EWMean.update``: the new mean, from the current ``v`` (None: not yet updated), fading ``a`` and ``b = 1 - a``."""
    return float(x) if v is None else a * x + b * v


def ew_var(m: float | None, sq: float | None) -> float:
    """``EWVar.get``: EW mean of the squares minus the square of the EW mean (0 when not yet updated)."""
    m = m or 0.0
    return (sq or 0.0) - m * m


def mean(n: float, mu: float, x: float) -> tuple[float, float]:
    """``Mean.update(x)``: the new count and mean."""
    n += 1.0
    return n, mu + (1.0 / n) * (x - mu)


def var(n: float, mu: float, s: float, x: float) -> tuple[float, float, float]:
    """``Var.update(x)`` (Welford): the new count, mean and sum of squared deviations."""
    n, new = mean(n, mu, x)
    return n, new, s + (x - mu) * (x - new)


def var_get(n: float, s: float, ddof: int = 1) -> float:
    """``Var.get``."""
    return s / (n - ddof) if n > ddof else 0.0


# ------------------------------------------------------------------------------------
# river's serialised states (what the state topic carried before the plain form)
# ------------------------------------------------------------------------------------
_EWMEAN = struct.Struct("<dddB")  # mean, alpha, 1 - alpha, set (then the wrapper's fading factor)


def ew_from_core(blob: bytes) -> float | None:
    """The mean an ``RsEWMean``'s pickled bytes hold (None: never updated).

    >>> from river import stats
    >>> m = stats.EWMean(0.02); m.update(0.0)
    >>> ew_from_core(m._ewmean.__getstate__()), ew_from_core(stats.EWMean(0.02)._ewmean.__getstate__())
    (0.0, None)
    """
    m, _a, _b, is_set = _EWMEAN.unpack_from(blob, 0)
    return m if is_set else None


def ew_var_from_core(blob: bytes) -> tuple[float | None, float | None]:
    """The EW mean and EW mean of squares an ``RsEWVar``'s pickled bytes hold (two ``RsEWMean`` cores, then alpha)."""
    m, _a, _b, m_set = _EWMEAN.unpack_from(blob, 0)
    sq, _a, _b, sq_set = _EWMEAN.unpack_from(blob, _EWMEAN.size)
    return (m if m_set else None), (sq if sq_set else None)


def ew_from_river(stat: Any) -> float | None:
    """:func:`ew_from_core` of a ``stats.EWMean`` object."""
    return ew_from_core(stat._ewmean.__getstate__())


def ew_var_from_river(stat: Any) -> tuple[float | None, float | None]:
    """:func:`ew_var_from_core` of a ``stats.EWVar`` object."""
    return ew_var_from_core(stat._ewvar.__getstate__())
