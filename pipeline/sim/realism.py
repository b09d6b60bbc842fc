"""The realism model: what real telemetry does that a smooth simulation does not.

Overdispersed retransmissions, microbursts, agents with their own clocks, late and re-sent
reports (the parameters and their sources are described in :mod:`pipeline.sim.simulator`).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

__all__ = ["REALISM_PRESETS", "Realism", "parse_realism"]

# ------------------------------------------------------------------------------------
# realism model
# ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Realism:
    """Parameters of the realism model (see the module docstring for each one's source).

    The defaults are the ``realistic`` preset. A scenario's ``realism:`` mapping overrides
    single fields, e.g. ``{preset: realistic, microburst_prob: 0}``.
    """

    retrans_shape: float = 0.5
    microburst_prob: float = 0.001
    microburst_min: int = 20
    microburst_alpha: float = 1.2
    microburst_max: int = 1000
    microburst_timeout_frac: float = 0.02
    rtt_spike_prob: float = 0.002
    rtt_spike_min: float = 3.0
    rtt_spike_max: float = 50.0
    rtt_obs_max: int = 4
    rtt_obs_jitter: float = 0.1
    phase_s: int = 15
    clock_offset_s: float = 2.0
    slow_agent_frac: float = 0.05
    publish_jitter_s: float = 2.0
    late_frac: float = 0.02
    late_min_s: float = 10.0
    late_max_s: float = 60.0
    duplicate_frac: float = 0.01
    duplicate_delay_s: float = 30.0
    gap_agent_frac: float = 0.05
    gap_intervals: int = 3
    churn_frac: float = 0.05

    def __post_init__(self) -> None:
        for f in ("microburst_prob", "microburst_timeout_frac", "rtt_spike_prob", "slow_agent_frac", "late_frac",
                  "duplicate_frac", "gap_agent_frac", "churn_frac"):
            if not 0.0 <= getattr(self, f) <= 1.0:
                raise ValueError(f"realism: {f} must be a fraction in [0, 1], got {getattr(self, f)!r}")
        for f in ("retrans_shape", "rtt_obs_jitter", "clock_offset_s", "publish_jitter_s", "phase_s", "gap_intervals"):
            if getattr(self, f) < 0:
                raise ValueError(f"realism: {f} must be >= 0, got {getattr(self, f)!r}")
        if not 1 <= self.microburst_min <= self.microburst_max or self.microburst_alpha <= 0:
            raise ValueError("realism: need 1 <= microburst_min <= microburst_max and microburst_alpha > 0")
        if not 1.0 <= self.rtt_spike_min <= self.rtt_spike_max:
            raise ValueError("realism: need 1 <= rtt_spike_min <= rtt_spike_max")
        if self.rtt_obs_max < 1:
            raise ValueError("realism: rtt_obs_max must be >= 1")
        if not 0 <= self.late_min_s <= self.late_max_s or self.duplicate_delay_s < 1:
            raise ValueError("realism: need 0 <= late_min_s <= late_max_s and duplicate_delay_s >= 1")


_REALISM_FIELDS = {f.name: f.type for f in Realism.__dataclass_fields__.values()}
_INT_FIELDS = {"microburst_min", "microburst_max", "rtt_obs_max", "phase_s", "gap_intervals"}
REALISM_PRESETS = ("smooth", "realistic")


def parse_realism(value: Any) -> tuple[Realism | None, str | dict[str, Any]]:
    """``(model, label)`` from a scenario's ``realism:`` value; the model is None for ``smooth``.

    ``value``: None or ``"smooth"`` (the default), ``"realistic"``, a :class:`Realism`, or a
    mapping ``{preset: realistic, <param>: value, ...}``. The label is what ``flowmon eval``
    shows (the string, or the normalised mapping).

    >>> parse_realism(None)
    (None, 'smooth')
    >>> m, label = parse_realism({"microburst_prob": 0})
    >>> m.microburst_prob, m.retrans_shape, label
    (0.0, 0.5, {'preset': 'realistic', 'microburst_prob': 0.0})
    >>> parse_realism({"burst": 1})
    Traceback (most recent call last):
    ...
    ValueError: realism: unknown key(s) ['burst']; allowed: preset, retrans_shape, microburst_prob, microburst_min, microburst_alpha, microburst_max, microburst_timeout_frac, rtt_spike_prob, rtt_spike_min, rtt_spike_max, rtt_obs_max, rtt_obs_jitter, phase_s, clock_offset_s, slow_agent_frac, publish_jitter_s, late_frac, late_min_s, late_max_s, duplicate_frac, duplicate_delay_s, gap_agent_frac, gap_intervals, churn_frac
    """
    if value is None or value == "smooth":
        return None, "smooth"
    if value == "realistic":
        return Realism(), "realistic"
    if isinstance(value, Realism):
        return value, {"preset": "realistic", **{k: getattr(value, k) for k in _REALISM_FIELDS
                                                 if getattr(value, k) != getattr(Realism(), k)}}
    if isinstance(value, Mapping):
        unknown = [str(k) for k in value if k != "preset" and k not in _REALISM_FIELDS]
        if unknown:
            raise ValueError(f"realism: unknown key(s) {unknown}; allowed: preset, {', '.join(_REALISM_FIELDS)}")
        preset = value.get("preset", "realistic")
        if preset != "realistic":
            raise ValueError(f"realism: preset: {preset!r}: a mapping overrides the 'realistic' preset "
                             "(use realism: smooth for none)")
        kw: dict[str, Any] = {}
        for k, v in value.items():
            if k == "preset":
                continue
            try:
                if isinstance(v, bool):
                    raise TypeError
                kw[k] = int(v) if k in _INT_FIELDS else float(v)
                if k in _INT_FIELDS and kw[k] != v:
                    raise TypeError
            except (TypeError, ValueError):
                raise ValueError(f"realism: {k}: expected a {'whole ' if k in _INT_FIELDS else ''}number, got {v!r}") from None
        return Realism(**kw), {"preset": "realistic", **kw}
    raise ValueError(f"realism: {value!r}: one of smooth, realistic or a mapping {{preset: realistic, <param>: value}}")
